//! Root-only tests run in a child process inside private mount (and, when
//! asked, UTS) namespaces, so nothing they mount or set reaches the host.
//!
//! A test calls [`enter`] first: outside the namespaces it re-runs itself
//! under `unshare` and returns `false` (the child's result is asserted);
//! inside, it returns `true` and the body runs. Without root it says
//! that the test is skipped and returns `false`; under CI (`CI` set) a
//! skip fails the test instead (see [`skip`]).

use std::os::unix::fs::MetadataExt;
use std::process::Command;

const INNER: &str = "KATA_AGENT_TEST_NS_INNER";
const OUTER_NS: &str = "KATA_AGENT_TEST_NS_OUTER";

/// The libtest name of a test function in the calling module.
macro_rules! test_name {
    ($f:ident) => {{
        let path = concat!(module_path!(), "::", stringify!($f));
        // Drop the crate name: libtest names start below it.
        path.split_once("::").map_or(path, |(_, rest)| rest)
    }};
}
pub(crate) use test_name;

fn mount_ns() -> String {
    std::fs::read_link("/proc/self/ns/mnt")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Says why a test cannot run here; under CI (`CI` set and not `0` or
/// `false`), where everything a test needs is installed and the tests run
/// as root, that is a failure: a skip there would hide untested code.
pub(crate) fn skip(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!ci, "{why}: CI is set, so this test must run here");
    eprintln!("skipped: {why}");
}

/// See the module docs. `uts` adds a private UTS namespace.
pub(crate) fn enter(test: &str, uts: bool) -> bool {
    if std::env::var(INNER).as_deref() == Ok(test) {
        let outer = std::env::var(OUTER_NS).unwrap_or_default();
        assert!(
            !outer.is_empty() && outer != mount_ns(),
            "{test}: inner run is not in a private mount namespace"
        );
        return true;
    }
    if !is_root() {
        skip(&format!("{test} needs root"));
        return false;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("{test}: current_exe: {e}"),
    };
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private"]);
    if uts {
        cmd.arg("--uts");
    }
    cmd.arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER, test)
        .env(OUTER_NS, mount_ns());
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("{test}: run unshare: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {test} (in private namespaces) ---\n{stdout}{stderr}---");
    assert!(
        out.status.success(),
        "{test}: inner run failed: {}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "{test}: inner run did not run exactly this test"
    );
    false
}
