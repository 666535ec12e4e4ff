//! One place reaps child processes.
//!
//! The agent is PID 1 (or a child subreaper), so every process that loses
//! its parent becomes ours: container inits once their launcher exits, and
//! orphans of containers without their own pid namespace. On SIGCHLD the
//! reaper peeks at the next zombie (`waitid` with `WNOWAIT`) and:
//! - reaps it and hands the status to whoever registered its pid;
//! - reaps it and keeps the status for a while if nobody registered it yet
//!   (a process may exit before the code that started it registers it);
//! - leaves it alone while a synchronous spawn-and-wait is running under a
//!   [`SpawnGuard`] and the zombie is not registered: that child belongs to
//!   code that waits for it by pid (rustjail's launcher, hooks), and stealing
//!   its status would break that code. The reaper retries shortly after.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How many statuses of unregistered pids are kept.
const UNCLAIMED_MAX: usize = 4096;
/// Pause before looking again at a zombie owned by a guarded waiter.
const DEFER: Duration = Duration::from_millis(5);

/// A raw wait status as waitpid(2) reports it.
pub type RawStatus = i32;

#[derive(Default)]
struct State {
    waiters: HashMap<i32, watch::Sender<Option<RawStatus>>>,
    unclaimed: HashMap<i32, RawStatus>,
    unclaimed_order: VecDeque<i32>,
}

/// The reaper. Cheap to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
    spawns: Arc<RwLock<()>>,
}

/// Held while synchronous code spawns a child and waits for it by pid.
pub struct SpawnGuard<'a> {
    _guard: RwLockReadGuard<'a, ()>,
}

impl Reaper {
    pub fn new() -> Reaper {
        Reaper::default()
    }

    /// Marks a stretch of code that spawns children and waits for them itself.
    pub fn spawn_guard(&self) -> SpawnGuard<'_> {
        let guard = match self.spawns.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        SpawnGuard { _guard: guard }
    }

    /// Registers interest in `pid`'s exit. The receiver holds `Some(status)`
    /// once it exited, immediately if it already has.
    pub fn register(&self, pid: i32) -> watch::Receiver<Option<RawStatus>> {
        let mut st = self.lock();
        if let Some(status) = st.unclaimed.remove(&pid) {
            st.unclaimed_order.retain(|p| *p != pid);
            let (_tx, rx) = watch::channel(Some(status));
            return rx;
        }
        match st.waiters.get(&pid) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                st.waiters.insert(pid, tx);
                rx
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock::lock(&self.state)
    }

    fn deliver(&self, pid: i32, status: RawStatus) {
        let mut st = self.lock();
        match st.waiters.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(Some(status));
            }
            None => {
                if st.unclaimed.len() >= UNCLAIMED_MAX {
                    if let Some(old) = st.unclaimed_order.pop_front() {
                        st.unclaimed.remove(&old);
                    }
                }
                st.unclaimed.insert(pid, status);
                st.unclaimed_order.push_back(pid);
                log::debug!("reaped pid {pid} (status {status:#x}), nobody waiting yet");
            }
        }
    }

    fn is_registered(&self, pid: i32) -> bool {
        self.lock().waiters.contains_key(&pid)
    }

    /// Reaps every zombie it may. Returns true when one had to be left for
    /// a guarded waiter, so the caller should look again soon.
    fn reap_all(&self) -> bool {
        loop {
            let pid = match peek_zombie() {
                Some(pid) => pid,
                None => return false,
            };
            if !self.is_registered(pid) && self.spawns.try_write().is_err() {
                // A guarded spawn is in progress; this zombie may be its.
                // It hides the zombies behind it from the peek, so collect
                // the registered ones by pid meanwhile.
                self.reap_registered();
                return true;
            }
            match reap(pid) {
                Some(status) => self.deliver(pid, status),
                // Someone else reaped it between the peek and here.
                None => continue,
            }
        }
    }

    /// Reaps registered pids one by one, whatever order the kernel's child
    /// list is in.
    fn reap_registered(&self) {
        let pids: Vec<i32> = self.lock().waiters.keys().copied().collect();
        for pid in pids {
            if let Some(status) = reap(pid) {
                self.deliver(pid, status);
            }
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
            let deferred = self.reap_all();
            if deferred {
                // Look again soon for the zombie left to its waiter, but
                // never let that delay the next SIGCHLD.
                tokio::select! {
                    _ = tokio::time::sleep(DEFER) => {}
                    s = sigchld.recv() => if s.is_none() { return },
                }
            } else if sigchld.recv().await.is_none() {
                return;
            }
        }
    }
}

/// The pid of a child that has exited and not been reaped, if any.
fn peek_zombie() -> Option<i32> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid initial value and
    // waitid only writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: P_ALL with a valid pointer to a siginfo_t we own.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: waitid succeeded, so si_pid is valid (0 when no child changed state).
    let pid = unsafe { info.si_pid() };
    (pid > 0).then_some(pid)
}

/// Reaps `pid`; `None` if it was not a zombie child any more.
fn reap(pid: i32) -> Option<RawStatus> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid on a specific pid with a valid status pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (rc == pid).then_some(status)
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
    use std::process::Command;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
        assert_eq!(exit_code(15), 143);
    }

    #[test]
    fn early_exit_is_kept_for_late_registration() {
        let r = Reaper::new();
        r.deliver(4242, 7 << 8);
        let rx = r.register(4242);
        assert_eq!(*rx.borrow(), Some(7 << 8));
    }

    #[test]
    fn registered_waiter_gets_the_status() {
        let r = Reaper::new();
        let rx = r.register(777);
        assert_eq!(*rx.borrow(), None);
        r.deliver(777, 9);
        assert_eq!(*rx.borrow(), Some(9));
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

    #[test]
    fn guarded_children_are_not_stolen() {
        let r = Reaper::new();
        let guard = r.spawn_guard();
        let mut child = Command::new("true").spawn().unwrap();
        // Wait until it is a zombie without reaping it.
        while peek_zombie() != Some(child.id() as i32) {
            std::thread::yield_now();
        }
        // A registered child behind it is still collected.
        // Reaped through the reaper, not through `Child::wait`.
        #[allow(clippy::zombie_processes)]
        let late = Command::new("true").spawn().unwrap();
        let late_pid = late.id() as i32;
        let rx = r.register(late_pid);
        while rx.borrow().is_none() {
            assert!(r.reap_all(), "reaper should defer while guarded");
            std::thread::yield_now();
        }
        assert!(child.wait().unwrap().success());
        drop(guard);
    }
}
