//! The `kata-agent` binary: everything lives in the library
//! ([`kata_agent`]); this is the entry point that must run first (the
//! re-exec'd helpers) and PID 1's last word (power off, never exit).

use std::process::ExitCode;

use kata_agent::pid1;
use kata_agent::sandbox::ns_holder;

/// A line on stderr that never fails: a panic while printing a panic
/// aborts, and PID 1 aborting is a kernel panic.
fn say(msg: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "kata-agent: {msg}");
}

fn main() -> ExitCode {
    // A re-exec of this binary as rustjail's container launcher never
    // returns from here; it must run before any thread exists.
    rustjail::helper::run_if_requested();
    if !pid1::is_pid1() {
        ns_holder::run_if_requested();
    }
    kata_agent::limit_malloc_arenas();
    // As PID 1 the kernel passes leftover command-line words as argv: they
    // are not flags for us.
    let args: Vec<String> = if pid1::is_pid1() {
        Vec::new()
    } else {
        std::env::args().skip(1).collect()
    };
    // A panic is a bug, but it must end in the logs and, as PID 1, in an
    // orderly power-off rather than a kernel panic.
    std::panic::set_hook(Box::new(|info| {
        say(info);
        log::error!("panic: {info}");
    }));
    let result = match std::panic::catch_unwind(|| kata_agent::run(args)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("panicked".to_string()),
    };
    if let Err(e) = &result {
        say(e);
        log::error!("{e}");
    }
    if pid1::is_pid1() {
        // PID 1 must never exit: the kernel would panic.
        pid1::poweroff();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
