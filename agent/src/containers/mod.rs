//! The container layer, below the rpc and above rustjail: the containers
//! of the sandbox and their processes, and the operations on them.
//!
//! Each operation ([`create()`], [`start()`], [`exec()`], [`remove()`]) is
//! synchronous and runs inside one blocking call (the rpc's
//! `spawn_blocking`): namespace, mount, fork and file work never runs on the
//! async thread. Each is a transaction: a step registers its undo
//! ([`undo::Rollback`]) and a failure unwinds what was done. Errors are
//! [`Error`], with one mapping to a ttrpc status.

mod create;
mod error;
mod exec;
pub mod oom_events;
pub mod output;
mod remove;
mod signal;
mod start;
pub mod stdio;
pub mod undo;

pub use create::{create, CreateParams};
pub use error::{validate_id, Error};
pub use exec::{exec, ExecParams};
pub use remove::remove;
pub use signal::signal;
pub use start::start;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::lock::lock;
use crate::reaper::{ExitWatch, RawStatus};
use crate::stream::FdStream;
use stdio::ProcIo;

/// One process of a container: the init or an exec'd one.
pub struct Proc {
    pub exec_id: String,
    pub pid: i32,
    exit: ExitWatch,
    pub stdin: tokio::sync::Mutex<Option<FdStream>>,
    pub stdout: tokio::sync::Mutex<Option<FdStream>>,
    pub stderr: tokio::sync::Mutex<Option<FdStream>>,
    /// The PTY master, for TtyWinResize, when the process has a terminal.
    pub tty: Option<OwnedFd>,
    /// When a reader first saw the process exited: output still arriving
    /// after [`DRAIN_AFTER_EXIT`] from then (a background child holding the
    /// pipe or the terminal) no longer keeps the stream open.
    exited_at: OnceLock<Instant>,
    /// WaitProcess has answered for it.
    waited: AtomicBool,
    /// stdout and stderr have reached their end (or were never there).
    stdout_done: AtomicBool,
    stderr_done: AtomicBool,
}

/// How long output is still read after the process exited, while a child
/// of it keeps its pipe or terminal open: then the reader gets EOF, as
/// with upstream Kata, so that `kubectl exec` and exec probes return.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);

/// Which output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

impl Output {
    pub fn name(self) -> &'static str {
        match self {
            Output::Stdout => "stdout",
            Output::Stderr => "stderr",
        }
    }
}

impl Proc {
    pub fn new(exec_id: &str, pid: i32, exit: ExitWatch, io: ProcIo) -> Proc {
        Proc {
            exec_id: exec_id.to_string(),
            pid,
            exit,
            stdout_done: AtomicBool::new(io.stdout.is_none()),
            stderr_done: AtomicBool::new(io.stderr.is_none()),
            stdin: tokio::sync::Mutex::new(io.stdin),
            stdout: tokio::sync::Mutex::new(io.stdout),
            stderr: tokio::sync::Mutex::new(io.stderr),
            tty: io.tty,
            exited_at: OnceLock::new(),
            waited: AtomicBool::new(false),
        }
    }

    /// Once the process has exited: until when its output is still read.
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.exited()?;
        Some(*self.exited_at.get_or_init(Instant::now) + DRAIN_AFTER_EXIT)
    }

    /// Notes that a stream reached its end.
    pub fn output_done(&self, which: Output) {
        match which {
            Output::Stdout => self.stdout_done.store(true, Ordering::SeqCst),
            Output::Stderr => self.stderr_done.store(true, Ordering::SeqCst),
        }
    }

    /// Notes that WaitProcess answered.
    pub fn set_waited(&self) {
        self.waited.store(true, Ordering::SeqCst);
    }

    /// Waited for, and nothing left to read: the host is done with it.
    fn finished(&self) -> bool {
        self.waited.load(Ordering::SeqCst)
            && self.stdout_done.load(Ordering::SeqCst)
            && self.stderr_done.load(Ordering::SeqCst)
    }

    /// The raw wait status once the process has exited.
    pub fn exited(&self) -> Option<RawStatus> {
        self.exit.status()
    }

    /// Waits, from blocking code, at most `limit` for the exit; false if
    /// the process still runs then.
    pub fn wait_blocking(&self, limit: std::time::Duration) -> bool {
        self.exit.wait_blocking(Some(limit)).is_some()
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> RawStatus {
        self.exit.wait().await
    }
}

/// A container the agent manages.
pub struct Ctr {
    pub id: String,
    pub init_exec_id: String,
    pub bundle: PathBuf,
    /// Where the container writes its termination message, and the guest
    /// file mounted there if the spec mounts one (GetDiagnosticData).
    pub termination_log: TerminationLog,
    pub jail: Mutex<rustjail::Container>,
    procs: Mutex<HashMap<String, Arc<Proc>>>,
    /// Stops the OOM watch when the container goes away.
    pub oom_watch: Option<tokio::task::AbortHandle>,
    /// A reference to the container's mount namespace. Without it the last
    /// process to exit tears the namespace down before its parent is told
    /// (exit_task_namespaces runs before exit_notify), and unmounting waits
    /// for RCU grace periods: milliseconds on every WaitProcess. Holding it
    /// moves that cost to RemoveContainer, off the exit path.
    pub mnt_ns: Mutex<Option<OwnedFd>>,
}

/// The termination message file of a container.
#[derive(Debug, Clone, Default)]
pub struct TerminationLog {
    /// Path inside the container.
    pub path: String,
    /// The guest file a spec mount puts at that path, if any.
    pub source: Option<PathBuf>,
}

impl Drop for Ctr {
    fn drop(&mut self) {
        if let Some(w) = &self.oom_watch {
            w.abort();
        }
    }
}

/// What a new container is made of.
pub struct CtrParts {
    pub id: String,
    pub init_exec_id: String,
    pub bundle: PathBuf,
    pub termination_log: TerminationLog,
    pub jail: rustjail::Container,
    pub init: Proc,
    pub oom_watch: Option<tokio::task::AbortHandle>,
    pub mnt_ns: Option<OwnedFd>,
}

impl Ctr {
    pub fn new(p: CtrParts) -> Ctr {
        let mut procs = HashMap::new();
        procs.insert(p.init_exec_id.clone(), Arc::new(p.init));
        Ctr {
            id: p.id,
            init_exec_id: p.init_exec_id,
            bundle: p.bundle,
            termination_log: p.termination_log,
            jail: Mutex::new(p.jail),
            procs: Mutex::new(procs),
            oom_watch: p.oom_watch,
            mnt_ns: Mutex::new(p.mnt_ns),
        }
    }

    pub fn proc(&self, exec_id: &str) -> Option<Arc<Proc>> {
        lock(&self.procs).get(exec_id).cloned()
    }

    /// The container's first process (its init).
    pub fn init_proc(&self) -> Option<Arc<Proc>> {
        self.proc(&self.init_exec_id)
    }

    /// Adds an exec'd process; false if the exec id is taken.
    pub fn add_proc(&self, p: Proc) -> bool {
        let mut procs = lock(&self.procs);
        if procs.contains_key(&p.exec_id) {
            return false;
        }
        procs.insert(p.exec_id.clone(), Arc::new(p));
        true
    }

    /// Drops an exec'd process the host is done with (see
    /// `Proc::finished`): its pipes and table entry go, so that exec
    /// probes every few seconds do not pile up fds. The init stays until
    /// the container is removed. True if it was dropped.
    pub fn release_if_finished(&self, exec_id: &str) -> bool {
        if exec_id == self.init_exec_id {
            return false;
        }
        let mut procs = lock(&self.procs);
        if procs.get(exec_id).is_some_and(|p| p.finished()) {
            procs.remove(exec_id);
            return true;
        }
        false
    }

    pub fn has_exec_id(&self, exec_id: &str) -> bool {
        lock(&self.procs).contains_key(exec_id)
    }

    pub fn procs(&self) -> Vec<Arc<Proc>> {
        lock(&self.procs).values().cloned().collect()
    }
}
