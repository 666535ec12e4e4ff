//! The sandbox's namespace holder: a process that owns the IPC and UTS
//! namespaces every container of the pod shares (and the pid namespace
//! when CreateSandbox asks for `sandbox_pidns`), and does nothing else.
//!
//! It is this binary re-executed with [`PAUSE_ARG`], so no Rust code runs
//! after a fork of the multi-threaded agent: the fresh process unshares,
//! forks the holder (PID 1 of the new pid namespace, if any), prints its
//! pid and exits. The holder is re-parented to the agent, which reaps it.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, sethostname, ForkResult};

use super::Holder;
use crate::reaper::Reaper;

/// Why the holder could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("namespace holder: {0}")]
    Blocking(String),
    #[error("namespace holder: spawn: {0}")]
    Spawn(std::io::Error),
    #[error("namespace holder: {stderr} ({status})")]
    Failed {
        stderr: String,
        status: std::process::ExitStatus,
    },
    #[error("namespace holder: no pid reported")]
    NoPid,
}

/// Starts the holder through the reaper and adopts the holding process
/// (re-parented to us when its starter exits). Blocking.
pub fn spawn(
    reaper: &Reaper,
    exe: &Path,
    pidns: bool,
    hostname: &str,
) -> Result<Holder, HolderError> {
    use std::os::unix::process::ExitStatusExt;
    let since = reaper.epoch();
    let (mut child, exit) = reaper
        .spawn(
            Command::new(exe)
                .arg(PAUSE_ARG)
                .arg(if pidns { "pidns" } else { "-" })
                .arg(hostname)
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(HolderError::Spawn)?;
    // The starter writes a line at most: reading one pipe, then the other,
    // cannot fill either.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    drop(child);
    let raw = exit.wait_blocking(None).unwrap_or(0);
    let status = std::process::ExitStatus::from_raw(raw);
    if !status.success() {
        return Err(HolderError::Failed {
            stderr: err.trim().to_string(),
            status,
        });
    }
    let pid: i32 = out.trim().parse().map_err(|_| HolderError::NoPid)?;
    let exit = reaper.adopt(pid, since);
    Ok(Holder { pid, pidns, exit })
}

/// First argument that selects the holder.
pub const PAUSE_ARG: &str = "sandbox-ns-holder";

/// Runs the holder and exits if the first argument is [`PAUSE_ARG`].
/// Must be called before any thread starts.
pub fn run_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(PAUSE_ARG)) {
        return;
    }
    let pidns = args.next().as_deref() == Some(OsStr::new("pidns"));
    let hostname = args.next().unwrap_or_default();
    let code = match holder(pidns, &hostname) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kata-agent {PAUSE_ARG}: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// A failed step of the holder's setup, with the kernel's answer.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("unshare: {}", .0.desc())]
    Unshare(nix::Error),
    #[error("sethostname: {}", .0.desc())]
    Hostname(nix::Error),
    #[error("fork: {}", .0.desc())]
    Fork(nix::Error),
    #[error("report pid: {0}")]
    Report(std::io::Error),
}

fn holder(pidns: bool, hostname: &OsStr) -> Result<(), SetupError> {
    let mut flags = CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if pidns {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    unshare(flags).map_err(SetupError::Unshare)?;
    if !hostname.is_empty() {
        sethostname(hostname).map_err(SetupError::Hostname)?;
    }
    // SAFETY: this process is single-threaded (a fresh exec that started
    // no thread), so the child may run any code.
    match unsafe { fork() }.map_err(SetupError::Fork)? {
        ForkResult::Child => {
            // Let go of the pipes the agent reads, so it sees their end.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..=2 {
                    // SAFETY: dup2 onto the standard descriptors of this
                    // single-threaded process; `null` stays open meanwhile.
                    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
                }
            }
            loop {
                // As a pid namespace's init it ignores every signal it has
                // no handler for; the agent ends it with SIGKILL.
                nix::unistd::pause();
            }
        }
        ForkResult::Parent { child } => {
            let mut out = std::io::stdout();
            writeln!(out, "{child}").map_err(SetupError::Report)?;
            out.flush().map_err(SetupError::Report)?;
            Ok(())
        }
    }
}
