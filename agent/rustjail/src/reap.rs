//! Who waits for the caller's children. rustjail starts processes in the
//! caller (re-exec'd init helpers, prestart/createRuntime/poststart/poststop
//! hooks) and kills container processes that a failed call left; a caller
//! with its own reaper (the agent) passes a [`Reap`] so those children are
//! registered with it and rustjail never calls `waitpid` behind its back.
//! [`DirectReap`], the default, waits for them directly.

use std::fmt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child started through [`Reap::spawn`]: its pid, the pipes `cmd` asked
/// for, and where its exit arrives.
pub struct ChildProc {
    pub pid: i32,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    pub exit: Box<dyn ChildExit>,
}

impl ChildProc {
    /// Splits a just-spawned `Child` into its pipes and `exit`.
    pub fn new(child: &mut Child, exit: Box<dyn ChildExit>) -> ChildProc {
        ChildProc {
            pid: child.id() as i32,
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            exit,
        }
    }

    /// SIGKILL; a process that has exited already is fine.
    pub fn kill(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Starts and collects the caller's children.
pub trait Reap: Send + Sync + fmt::Debug {
    /// Starts `cmd` as a child whose exit the reaper collects.
    fn spawn(&self, cmd: &mut Command) -> std::io::Result<ChildProc>;

    /// `pid`, a child of the caller that rustjail killed and will not
    /// report on, is the reaper's to collect.
    fn collect(&self, pid: i32);
}

/// The exit of a child started through [`Reap::spawn`].
pub trait ChildExit: Send {
    /// Waits at most `limit` (`None`: no limit); `None` if it still runs.
    fn wait_timeout(&mut self, limit: Option<Duration>) -> Option<ExitStatus>;
}

/// Waits for children with `waitpid`: for callers that reap nothing else.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectReap;

struct DirectExit(Child);

/// A placeholder while a [`ChildProc`] is put together.
struct NoExit;

impl ChildExit for NoExit {
    fn wait_timeout(&mut self, _limit: Option<Duration>) -> Option<ExitStatus> {
        None
    }
}

impl ChildExit for DirectExit {
    fn wait_timeout(&mut self, limit: Option<Duration>) -> Option<ExitStatus> {
        // No limit, or one past what the clock can hold: wait for the exit.
        let Some(deadline) = limit.and_then(|l| Instant::now().checked_add(l)) else {
            return self.0.wait().ok();
        };
        let mut pause = Duration::from_micros(200);
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

impl Reap for DirectReap {
    fn spawn(&self, cmd: &mut Command) -> std::io::Result<ChildProc> {
        let mut child = cmd.spawn()?;
        let mut proc = ChildProc::new(&mut child, Box::new(NoExit));
        proc.exit = Box::new(DirectExit(child));
        Ok(proc)
    }

    fn collect(&self, pid: i32) {
        // ECHILD (not ours, or reaped already) is fine.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    }
}
