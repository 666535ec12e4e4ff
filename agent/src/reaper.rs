//! The one owner of child processes.
//!
//! The agent is PID 1 (or a child subreaper), so every process that loses
//! its parent becomes ours: container inits once their helper exits, and
//! orphans of containers without their own pid namespace. Every child the
//! agent starts itself (the namespace holder, iptables tools, the debug
//! console's shell, rustjail's helpers and hooks) is started through
//! [`Reaper::spawn`], which registers it before the reaper can see its
//! exit; a process re-parented to us is taken over with [`Reaper::adopt`].
//! Nobody else calls `waitpid`: on SIGCHLD the reaper reaps every zombie and
//! hands each status to the [`ExitWatch`] of its pid, or keeps it for a
//! while for a pid not adopted yet (a container init may exit before the
//! code that started it learns its pid).

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::lock::lock;

/// How many statuses of unadopted pids are kept.
const UNCLAIMED_MAX: usize = 4096;

/// A raw wait status as waitpid(2) reports it.
pub type RawStatus = i32;

/// The count of reaps so far: a status reaped before a process was started
/// belongs to an earlier process with the same pid.
pub type Epoch = u64;

/// One child's exit, for async and blocking waiters alike.
struct Exit {
    tx: watch::Sender<Option<RawStatus>>,
    done: Mutex<Option<RawStatus>>,
    cv: Condvar,
}

impl Exit {
    fn new(status: Option<RawStatus>) -> Arc<Exit> {
        Arc::new(Exit {
            tx: watch::channel(status).0,
            done: Mutex::new(status),
            cv: Condvar::new(),
        })
    }

    fn set(&self, status: RawStatus) {
        *lock(&self.done) = Some(status);
        self.cv.notify_all();
        self.tx.send_replace(Some(status));
    }
}

/// Where a child's exit status arrives. Cheap to clone.
#[derive(Clone)]
pub struct ExitWatch {
    exit: Arc<Exit>,
}

impl std::fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitWatch")
            .field("status", &self.status())
            .finish()
    }
}

impl ExitWatch {
    /// The raw status once the process has exited.
    pub fn status(&self) -> Option<RawStatus> {
        *lock(&self.exit.done)
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> RawStatus {
        let mut rx = self.exit.tx.subscribe();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            // The sender lives in `self.exit`: it cannot be dropped.
            let _ = rx.changed().await;
        }
    }

    /// Waits from blocking code, at most `limit` (`None`, or a limit past
    /// what the clock can hold: no limit).
    pub fn wait_blocking(&self, limit: Option<Duration>) -> Option<RawStatus> {
        let deadline = limit.and_then(|l| std::time::Instant::now().checked_add(l));
        let mut done = lock(&self.exit.done);
        loop {
            if let Some(s) = *done {
                return Some(s);
            }
            done = match deadline {
                None => match self.exit.cv.wait(done) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                },
                Some(d) => {
                    let left = d.checked_duration_since(std::time::Instant::now())?;
                    match self.exit.cv.wait_timeout(done, left) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    }
                }
            };
        }
    }
}

#[derive(Default)]
struct State {
    waiters: HashMap<i32, Arc<Exit>>,
    unclaimed: HashMap<i32, (RawStatus, Epoch)>,
    unclaimed_order: VecDeque<i32>,
    epoch: Epoch,
}

/// The reaper. Cheap to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reaper")
    }
}

impl Reaper {
    pub fn new() -> Reaper {
        Reaper::default()
    }

    /// Now, in reaps: take it before starting what will produce a process
    /// to [`adopt`](Reaper::adopt).
    pub fn epoch(&self) -> Epoch {
        self.lock().epoch
    }

    /// Starts `cmd` as our child. It is registered before the reaper can
    /// see its exit; the returned `Child` is for its pipes and pid only:
    /// never wait on it.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, ExitWatch)> {
        let mut st = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // The pid is new: a status kept for it is an earlier process's.
        if st.unclaimed.remove(&pid).is_some() {
            st.unclaimed_order.retain(|p| *p != pid);
        }
        let exit = Exit::new(None);
        st.waiters.insert(pid, exit.clone());
        Ok((child, ExitWatch { exit }))
    }

    /// Takes over `pid`, a process re-parented to us that was started after
    /// `since`. Its watch holds the status at once if it already exited.
    pub fn adopt(&self, pid: i32, since: Epoch) -> ExitWatch {
        let mut st = self.lock();
        if let Some((status, at)) = st.unclaimed.remove(&pid) {
            st.unclaimed_order.retain(|p| *p != pid);
            if at >= since {
                return ExitWatch {
                    exit: Exit::new(Some(status)),
                };
            }
        }
        let exit = st
            .waiters
            .entry(pid)
            .or_insert_with(|| Exit::new(None))
            .clone();
        ExitWatch { exit }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    #[cfg(test)]
    fn deliver(&self, pid: i32, status: RawStatus) {
        deliver(&mut self.lock(), pid, status);
    }

    /// Reaps every zombie child. Under the lock [`Reaper::spawn`] holds
    /// across the fork and exec: std's spawn waits itself for a child
    /// whose exec failed, and a reap here in between would make that wait
    /// fail, which std answers with a panic.
    fn reap_all(&self) {
        let mut st = self.lock();
        while let Some((pid, status)) = reap_any() {
            deliver(&mut st, pid, status);
        }
    }

    /// Runs until the runtime stops: reaps on every SIGCHLD.
    pub async fn run(self) {
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("install SIGCHLD handler: {e}; children will not be reaped");
                return;
            }
        };
        loop {
            self.reap_all();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    }
}

/// rustjail's children (its re-exec'd helpers and the hooks it runs) go
/// through the same reaper.
impl rustjail::Reap for Reaper {
    fn spawn(&self, cmd: &mut Command) -> std::io::Result<rustjail::ChildProc> {
        let (mut child, exit) = Reaper::spawn(self, cmd)?;
        Ok(rustjail::ChildProc::new(&mut child, Box::new(exit)))
    }

    fn collect(&self, pid: i32) {
        // The status is unwanted; adopting keeps it out of the unclaimed
        // table.
        let _ = self.adopt(pid, 0);
    }
}

impl rustjail::ChildExit for ExitWatch {
    fn wait_timeout(&mut self, limit: Option<Duration>) -> Option<ExitStatus> {
        self.wait_blocking(limit).map(ExitStatus::from_raw)
    }
}

/// Hands `status` to the watch of `pid`, or keeps it for a later adopt.
fn deliver(st: &mut State, pid: i32, status: RawStatus) {
    // Reaped at `at`: after any start whose epoch() is `at` or less.
    let at = st.epoch;
    st.epoch += 1;
    match st.waiters.remove(&pid) {
        Some(exit) => exit.set(status),
        None => {
            if st.unclaimed.len() >= UNCLAIMED_MAX {
                if let Some(old) = st.unclaimed_order.pop_front() {
                    st.unclaimed.remove(&old);
                }
            }
            st.unclaimed.insert(pid, (status, at));
            st.unclaimed_order.push_back(pid);
            log::debug!("reaped pid {pid} (status {status:#x}), nobody waiting yet");
        }
    }
}

/// Reaps any zombie child: its pid and raw status.
fn reap_any() -> Option<(i32, RawStatus)> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid for any child with a valid status pointer; WNOHANG
    // never blocks.
    let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (rc > 0).then_some((rc, status))
}

/// Exit code as Kata reports it: the exit status, or 128 + signal
/// (rustjail's mapping); 255 for a status that is neither.
pub fn exit_code(status: RawStatus) -> i32 {
    nix::sys::wait::WaitStatus::from_raw(nix::unistd::Pid::from_raw(0), status)
        .ok()
        .and_then(rustjail::wait_status_to_code)
        .unwrap_or(255)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
        assert_eq!(exit_code(15), 143);
    }

    #[test]
    fn early_exit_is_kept_for_late_adoption() {
        let r = Reaper::new();
        let since = r.epoch();
        r.deliver(4242, 7 << 8);
        assert_eq!(r.adopt(4242, since).status(), Some(7 << 8));
    }

    #[test]
    fn a_status_from_before_the_start_is_not_taken() {
        let r = Reaper::new();
        r.deliver(4243, 1 << 8);
        let since = r.epoch();
        let w = r.adopt(4243, since);
        assert_eq!(w.status(), None);
        r.deliver(4243, 2 << 8);
        assert_eq!(w.wait_blocking(Some(Duration::ZERO)), Some(2 << 8));
    }

    /// A limit past what the clock can hold (a hook timeout from the host,
    /// say) is no limit, not a panic.
    #[test]
    fn a_limit_past_the_clock_is_no_limit() {
        let r = Reaper::new();
        let w = r.adopt(4244, r.epoch());
        r.deliver(4244, 5 << 8);
        assert_eq!(w.wait_blocking(Some(Duration::MAX)), Some(5 << 8));
    }

    /// Env var that makes [`spawn_race_in_own_process`] run the race: it
    /// reaps every child of its process, so it runs alone, re-executed.
    const RACE_CHILD: &str = "KATA_AGENT_REAPER_RACE_CHILD";

    /// A program that cannot be executed, spawned while the reaper reaps
    /// all the time (as on a SIGCHLD storm): an error, never a panic in
    /// std's spawn (found by the `requests` fuzz target: SetIPTables in a
    /// guest without iptables-restore).
    #[test]
    fn a_failed_exec_is_an_error_while_the_reaper_runs() {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args([
                "--exact",
                "reaper::tests::spawn_race_in_own_process",
                "--ignored",
                "--nocapture",
            ])
            .env(RACE_CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }

    #[test]
    #[ignore = "run by a_failed_exec_is_an_error_while_the_reaper_runs"]
    fn spawn_race_in_own_process() {
        if std::env::var_os(RACE_CHILD).is_none() {
            return;
        }
        let r = Reaper::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reaper = {
            let (r, stop) = (r.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    r.reap_all();
                }
            })
        };
        for _ in 0..300 {
            // A PATH of our own makes std fork and exec (not posix_spawn).
            let mut cmd = Command::new("no-such-tool-for-the-reaper-test");
            cmd.env_clear().env("PATH", "/nonexistent:/proc/self");
            let e = r.spawn(&mut cmd).err().unwrap();
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reaper.join().unwrap();
    }

    #[test]
    fn adopted_waiter_gets_the_status() {
        let r = Reaper::new();
        let w = r.adopt(777, 0);
        assert_eq!(w.status(), None);
        r.deliver(777, 9);
        assert_eq!(w.status(), Some(9));
    }

    #[test]
    fn unclaimed_statuses_are_bounded() {
        let r = Reaper::new();
        for pid in 1..=(UNCLAIMED_MAX as i32 + 10) {
            r.deliver(pid, 0);
        }
        assert_eq!(r.lock().unclaimed.len(), UNCLAIMED_MAX);
        assert!(!r.lock().unclaimed.contains_key(&1));
    }
}
