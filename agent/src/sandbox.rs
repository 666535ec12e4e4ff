//! Sandbox state: the containers, their processes and stdio.
//!
//! Locks are short: the containers map and each container's process map are
//! std mutexes held only for lookups and inserts. The one lock held across a
//! blocking call is a container's own `jail` mutex, inside `spawn_blocking`,
//! so a slow container never delays requests for another.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::oom::OomEvents;
use crate::reaper::{RawStatus, Reaper};
use crate::storage::StorageManager;
use crate::stream::FdStream;

/// Output pipe size when none is configured: a ReadStdout of 1 MiB can be
/// answered in one go, which more than doubles throughput over the
/// kernel's 64 KiB. Pages are only allocated as data waits in the pipe.
pub const DEFAULT_OUTPUT_PIPE: u32 = 1 << 20;

/// Guest directory holding container bundles (`<run>/<cid>/`).
pub const RUN_DIR: &str = "/run/kata-containers";

/// Locks a std mutex, recovering from poisoning: a panicked request must
/// not wedge the agent.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Settings the container code needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The executable rustjail re-executes as its init helper.
    pub launcher: PathBuf,
    /// Where bundles go.
    pub run_dir: PathBuf,
    /// F_SETPIPE_SZ for container stdout and stderr; 0 means
    /// [`DEFAULT_OUTPUT_PIPE`].
    pub pipe_size: u32,
    /// The pre-forked launcher containers are forked from, if running.
    pub zygote: Option<Arc<rustjail::zygote::Zygote>>,
    /// How long to wait for a hot-plugged device (agent.hotplug_timeout).
    pub hotplug_timeout: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            launcher: PathBuf::from("/proc/self/exe"),
            run_dir: PathBuf::from(RUN_DIR),
            pipe_size: 0,
            zygote: None,
            hotplug_timeout: crate::config::DEFAULT_HOTPLUG_TIMEOUT,
        }
    }
}

/// One process of a container: the init or an exec'd one.
pub struct Proc {
    pub exec_id: String,
    pub pid: i32,
    exit: watch::Receiver<Option<RawStatus>>,
    pub stdin: tokio::sync::Mutex<Option<FdStream>>,
    pub stdout: tokio::sync::Mutex<Option<FdStream>>,
    pub stderr: tokio::sync::Mutex<Option<FdStream>>,
    /// The PTY master, for TtyWinResize, when the process has a terminal.
    pub tty: Option<OwnedFd>,
}

/// Our ends of a process's stdio, before the process exists.
pub struct ProcIo {
    pub stdin: Option<FdStream>,
    pub stdout: Option<FdStream>,
    pub stderr: Option<FdStream>,
    pub tty: Option<OwnedFd>,
}

impl ProcIo {
    /// Our side of a PTY: the master serves as stdin and stdout; a terminal
    /// has no separate stderr.
    pub fn pty(master: OwnedFd) -> std::io::Result<ProcIo> {
        let reader = master.try_clone()?;
        let tty = master.try_clone()?;
        Ok(ProcIo {
            stdin: Some(FdStream::new(master, true)?),
            stdout: Some(FdStream::new(reader, true)?),
            stderr: None,
            tty: Some(tty),
        })
    }
}

impl Proc {
    pub fn new(
        exec_id: &str,
        pid: i32,
        exit: watch::Receiver<Option<RawStatus>>,
        io: ProcIo,
    ) -> Proc {
        Proc {
            exec_id: exec_id.to_string(),
            pid,
            exit,
            stdin: tokio::sync::Mutex::new(io.stdin),
            stdout: tokio::sync::Mutex::new(io.stdout),
            stderr: tokio::sync::Mutex::new(io.stderr),
            tty: io.tty,
        }
    }

    /// The raw wait status once the process has exited.
    pub fn exited(&self) -> Option<RawStatus> {
        *self.exit.borrow()
    }

    /// Waits for the exit; `None` if the reaper went away.
    pub async fn wait(&self) -> Option<RawStatus> {
        let mut rx = self.exit.clone();
        let status = rx.wait_for(Option::is_some).await.ok()?;
        *status
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

    pub fn init(&self) -> Option<Arc<Proc>> {
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

    pub fn has_exec_id(&self, exec_id: &str) -> bool {
        lock(&self.procs).contains_key(exec_id)
    }

    pub fn procs(&self) -> Vec<Arc<Proc>> {
        lock(&self.procs).values().cloned().collect()
    }
}

#[derive(Default)]
struct Containers {
    ready: HashMap<String, Arc<Ctr>>,
    /// Ids being created or removed: a second request for them is refused.
    busy: HashSet<String>,
}

/// The sandbox: every container of the pod.
/// Sandbox-wide facts set by CreateSandbox.
#[derive(Debug, Default)]
pub struct SandboxState {
    pub created: bool,
    pub id: String,
    /// The namespace holder (see `pause.rs`): its pid, its exit, and
    /// whether it owns a pid namespace for `sandbox_pidns` containers.
    pub holder: Option<Holder>,
    /// The DNS file and bind mount CreateSandbox set up, if it set one up:
    /// DestroySandbox undoes exactly this.
    pub dns: Option<crate::sandbox_files::DnsSetup>,
}

#[derive(Debug)]
pub struct Holder {
    pub pid: i32,
    pub pidns: bool,
    pub exit: watch::Receiver<Option<RawStatus>>,
}

pub struct Sandbox {
    pub settings: Settings,
    pub reaper: Reaper,
    pub oom: OomEvents,
    pub storage: StorageManager,
    pub state: Mutex<SandboxState>,
    containers: Mutex<Containers>,
}

/// Why an id could not be reserved.
pub enum Reserve {
    Exists,
    Busy,
}

impl Sandbox {
    pub fn new(settings: Settings, reaper: Reaper) -> Sandbox {
        Sandbox {
            settings,
            reaper,
            oom: OomEvents::default(),
            storage: StorageManager::default(),
            state: Mutex::new(SandboxState::default()),
            containers: Mutex::new(Containers::default()),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Ctr>> {
        lock(&self.containers).ready.get(id).cloned()
    }

    /// Reserves an id for a create in progress.
    pub fn reserve(&self, id: &str) -> Result<(), Reserve> {
        let mut c = lock(&self.containers);
        if c.ready.contains_key(id) {
            return Err(Reserve::Exists);
        }
        if !c.busy.insert(id.to_string()) {
            return Err(Reserve::Busy);
        }
        Ok(())
    }

    /// Ends a reservation, publishing the container if there is one.
    pub fn finish(&self, id: &str, ctr: Option<Arc<Ctr>>) {
        let mut c = lock(&self.containers);
        c.busy.remove(id);
        if let Some(ctr) = ctr {
            c.ready.insert(id.to_string(), ctr);
        }
    }

    /// Takes a container out of the map for removal; it is marked busy so
    /// that no create reuses the id before the removal is done.
    pub fn take(&self, id: &str) -> Option<Arc<Ctr>> {
        let mut c = lock(&self.containers);
        let ctr = c.ready.remove(id)?;
        c.busy.insert(id.to_string());
        Some(ctr)
    }

    /// Puts back a container whose removal failed.
    pub fn restore(&self, ctr: Arc<Ctr>) {
        let mut c = lock(&self.containers);
        c.busy.remove(&ctr.id);
        c.ready.insert(ctr.id.clone(), ctr);
    }

    pub fn all(&self) -> Vec<Arc<Ctr>> {
        lock(&self.containers).ready.values().cloned().collect()
    }
}

/// A pipe: (our end, the process's end).
pub struct PipePair<T> {
    pub ours: T,
    pub theirs: OwnedFd,
}

fn raw_pipe(size: u32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    if size > 0 {
        // The size is a hint: a smaller system maximum is not an error.
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&r),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as libc::c_int),
        );
    }
    Ok((r, w))
}

/// A pipe the process writes and we read (stdout, stderr).
pub fn output_pipe(size: u32) -> std::io::Result<PipePair<FdStream>> {
    let size = if size == 0 { DEFAULT_OUTPUT_PIPE } else { size };
    let (r, w) = raw_pipe(size)?;
    Ok(PipePair {
        ours: FdStream::new(r, false)?,
        theirs: w,
    })
}

/// A pipe we write and the process reads (stdin); kernel default size
/// unless one is configured.
pub fn input_pipe(size: u32) -> std::io::Result<PipePair<FdStream>> {
    let (r, w) = raw_pipe(size)?;
    Ok(PipePair {
        ours: FdStream::new(w, false)?,
        theirs: r,
    })
}
