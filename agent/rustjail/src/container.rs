//! The caller's side: [`Container`] creates, starts, execs into, signals,
//! measures and destroys one container. Every call is synchronous and
//! spawns no thread; the caller reaps the container's processes (see
//! [`crate::wait_status_to_code`]).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as StdStdio};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{
    Hooks, LinuxDeviceCgroup, LinuxNamespaceType, LinuxResources, LinuxSeccomp, Process, Spec,
};

use crate::cgroups::{self, CgroupManager, CgroupStats};
use crate::helper::INIT_ARG;
use crate::hooks;
use crate::oom::OomEvents;
use crate::protocol::{self, CreateRequest, ExecRequest, Msg, Request};
use crate::reap::{ChildProc, DirectReap, Reap};
use crate::utils::{errno_text, io_text, validate_id};
use crate::zygote::Zygote;

/// Errors of container operations; each names the container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {id:?}: invalid id: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container {id:?}: invalid spec: {reason}")]
    InvalidSpec { id: String, reason: String },
    #[error("container {id:?}: rootfs {path}: {cause}")]
    Rootfs {
        id: String,
        path: PathBuf,
        cause: String,
    },
    /// A step on the caller's side failed.
    #[error("container {id:?}: {what}: {cause}")]
    Op {
        id: String,
        what: String,
        cause: String,
    },
    /// The init helper or the container process reported a failure.
    #[error("container {id:?}: {msg}")]
    Setup { id: String, msg: String },
    #[error("container {id:?}: {source}")]
    Cgroup {
        id: String,
        #[source]
        source: cgroups::Error,
    },
    #[error("container {id:?}: {what}: the container is {state}")]
    State {
        id: String,
        what: &'static str,
        state: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Standard streams for a container process. `None` means /dev/null.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Options of [`Container::create`].
#[derive(Debug)]
pub struct CreateOpts {
    /// Executable that runs [`crate::helper::run_if_requested`] first thing:
    /// the agent's own binary, `/proc/self/exe` by default.
    pub launcher: PathBuf,
    /// Streams of the container's init process.
    pub stdio: Stdio,
    /// Cgroup path used when the spec has no `linux.cgroupsPath`;
    /// `None` means `/rustjail/<id>`.
    pub default_cgroup_path: Option<String>,
    /// Longest wait for the container side between two steps of create
    /// (namespaces, mounts, hooks run by the init); `None`: no limit. On
    /// expiry everything is killed and removed.
    pub timeout: Option<Duration>,
    /// Enter the rootfs with `MS_MOVE` + chroot instead of `pivot_root`
    /// (which is also the automatic fallback where pivot_root fails).
    pub no_pivot: bool,
    /// Fork init helpers from this pre-forked launcher instead of
    /// re-executing `launcher`.
    pub zygote: Option<Arc<Zygote>>,
    /// Who starts and collects the children rustjail runs in the caller
    /// (re-exec'd helpers, hooks); [`DirectReap`] when `None`.
    pub reap: Option<Arc<dyn Reap>>,
}

impl Default for CreateOpts {
    fn default() -> Self {
        CreateOpts {
            launcher: PathBuf::from("/proc/self/exe"),
            stdio: Stdio::default(),
            default_cgroup_path: None,
            timeout: None,
            no_pivot: false,
            zygote: None,
            reap: None,
        }
    }
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Set up; the init waits for [`Container::start`].
    Created,
    /// The init has exec'd the container process.
    Running,
    /// The container's processes are frozen.
    Paused,
    /// [`Container::destroy`] has run.
    Destroyed,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Destroyed => "destroyed",
        }
    }
}

/// A process started by [`Container::exec`].
#[derive(Debug)]
pub struct Spawned {
    /// Host pid; the caller reaps it.
    pub pid: i32,
    /// PTY master when the process asked for a terminal.
    pub console: Option<OwnedFd>,
}

/// A container: its init process, its cgroup and its namespaces.
#[derive(Debug)]
pub struct Container {
    id: String,
    launcher: PathBuf,
    zygote: Option<Arc<Zygote>>,
    reap: Arc<dyn Reap>,
    init_pid: Pid,
    namespaces: Vec<LinuxNamespaceType>,
    cgroup: CgroupManager,
    /// `linux.devices`: the device cgroup allows them (see `devices`).
    devices: Vec<oci_spec::runtime::LinuxDevice>,
    /// The init's capabilities: an exec that names none gets these.
    init_capabilities: Option<oci_spec::runtime::LinuxCapabilities>,
    bundle: PathBuf,
    hooks: Option<Hooks>,
    seccomp: Option<LinuxSeccomp>,
    annotations: Option<HashMap<String, String>>,
    /// PTY master of the init when its process has `terminal: true`.
    console: Option<OwnedFd>,
    /// Socket to the init until it exec's.
    sync: Option<UnixStream>,
    status: Status,
}

/// A spawned init helper and our end of its socket.
struct Helper {
    proc: HelperProc,
    sock: UnixStream,
}

/// How the helper was started, which decides who reaps it.
enum HelperProc {
    /// Re-executed launcher: our child, collected by the caller's reaper.
    Child(ChildProc),
    /// Forked by the zygote, which reaps it.
    Forked(Pid),
}

impl HelperProc {
    fn id(&self) -> i32 {
        match self {
            HelperProc::Child(c) => c.pid,
            HelperProc::Forked(p) => p.as_raw(),
        }
    }

    fn kill(&mut self) {
        match self {
            HelperProc::Child(c) => c.kill(),
            HelperProc::Forked(p) => {
                let _ = kill(*p, Signal::SIGKILL);
            }
        }
    }

    /// Waits for the exit where we can; returns how it ended if known.
    fn wait(&mut self) -> Option<String> {
        match self {
            HelperProc::Child(c) => c.exit.wait_timeout(None).map(|s| s.to_string()),
            HelperProc::Forked(_) => None,
        }
    }
}

impl Container {
    /// Creates the container: cgroup with `linux.resources`, namespaces,
    /// rootfs, process setup. The init then waits for [`Container::start`].
    /// On error nothing is left: no process, no cgroup.
    pub fn create(id: &str, spec: &Spec, bundle: &Path, opts: CreateOpts) -> Result<Container> {
        validate_id(id).map_err(|reason| Error::InvalidId {
            id: id.to_string(),
            reason,
        })?;
        let invalid = |reason: &str| Error::InvalidSpec {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        let root = spec.root().as_ref().ok_or_else(|| invalid("no root"))?;
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| invalid("no process"))?;
        if process.args().as_deref().unwrap_or_default().is_empty() {
            return Err(invalid("process.args is empty"));
        }
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| invalid("no linux section"))?;
        let namespaces: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|n| n.typ())
            .collect();
        if !linux
            .namespaces()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none())
        {
            return Err(invalid("a new mount namespace is required"));
        }
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        let rootfs = match rootfs.canonicalize() {
            Ok(p) if p.is_dir() => p,
            Ok(_) => {
                return Err(Error::Rootfs {
                    id: id.to_string(),
                    path: rootfs,
                    cause: "not a directory".into(),
                })
            }
            Err(e) => {
                return Err(Error::Rootfs {
                    id: id.to_string(),
                    path: rootfs,
                    cause: io_text(&e),
                })
            }
        };

        let cg_path = match linux.cgroups_path() {
            Some(p) => p.to_string_lossy().into_owned(),
            None => opts
                .default_cgroup_path
                .clone()
                .unwrap_or_else(|| format!("/rustjail/{id}")),
        };
        // Device rules go in once the init has made its device nodes.
        let (resources, spec_rules) = split_device_rules(linux.resources().as_ref());
        let cgroup =
            CgroupManager::create(&cg_path, resources.as_ref()).map_err(|e| Error::Cgroup {
                id: id.to_string(),
                source: e,
            })?;
        let mut c = Container {
            id: id.to_string(),
            launcher: opts.launcher,
            zygote: opts.zygote,
            reap: opts.reap.unwrap_or_else(|| Arc::new(DirectReap)),
            init_pid: Pid::from_raw(0),
            namespaces,
            cgroup,
            devices: linux.devices().clone().unwrap_or_default(),
            init_capabilities: spec
                .process()
                .as_ref()
                .and_then(|p| p.capabilities().clone()),
            bundle: bundle.to_path_buf(),
            hooks: spec.hooks().clone(),
            seccomp: linux.seccomp().clone(),
            annotations: spec.annotations().clone(),
            console: None,
            sync: None,
            status: Status::Created,
        };
        let req = Request::Create(Box::new(CreateRequest {
            spec: spec.clone(),
            rootfs,
            no_pivot: opts.no_pivot,
        }));
        let created = c
            .run_create(req, opts.stdio, opts.timeout)
            .and_then(|()| c.set_device_rules(&spec_rules));
        match created {
            Ok(()) => Ok(c),
            Err(e) => {
                c.cleanup_failed();
                Err(e)
            }
        }
    }

    fn op_err(&self, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error + '_ {
        let what = what.into();
        move |e| Error::Op {
            id: self.id.clone(),
            what,
            cause: io_text(&e),
        }
    }

    /// Spawns the helper inside our cgroup and sends it the stdio and the
    /// request.
    fn spawn_helper(&mut self, req: &Request, stdio: Stdio) -> Result<Helper> {
        let fds = self.stdio_fds(stdio)?;
        let (ours, theirs) = UnixStream::pair().map_err(self.op_err("create socket pair"))?;
        let proc = match &self.zygote {
            Some(z) => HelperProc::Forked(Pid::from_raw(
                z.spawn(OwnedFd::from(theirs))
                    .map_err(self.op_err("fork init helper from the zygote"))?,
            )),
            None => HelperProc::Child(
                self.reap
                    .spawn(
                        Command::new(&self.launcher)
                            .arg(INIT_ARG)
                            .env_clear()
                            .stdin(StdStdio::from(OwnedFd::from(theirs)))
                            .stdout(StdStdio::null())
                            .stderr(StdStdio::inherit()),
                    )
                    .map_err(
                        self.op_err(format!("spawn init helper {}", self.launcher.display())),
                    )?,
            ),
        };
        let mut helper = Helper { proc, sock: ours };
        let result = (|| {
            self.cgroup
                .add_process(helper.proc.id())
                .map_err(|e| Error::Cgroup {
                    id: self.id.clone(),
                    source: e,
                })?;
            let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
            protocol::send_fds(&helper.sock, &raw)
                .map_err(self.op_err("send stdio to init helper"))?;
            protocol::send(&helper.sock, req).map_err(self.op_err("send request to init helper"))
        })();
        if let Err(e) = result {
            helper.proc.kill();
            helper.proc.wait();
            return Err(e);
        }
        Ok(helper)
    }

    fn stdio_fds(&self, stdio: Stdio) -> Result<[OwnedFd; 3]> {
        let null = || -> Result<OwnedFd> {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(self.op_err("open /dev/null"))
        };
        Ok([
            stdio.stdin.map_or_else(null, Ok)?,
            stdio.stdout.map_or_else(null, Ok)?,
            stdio.stderr.map_or_else(null, Ok)?,
        ])
    }

    fn setup_err(&self, msg: String) -> Error {
        Error::Setup {
            id: self.id.clone(),
            msg,
        }
    }

    fn run_create(&mut self, req: Request, stdio: Stdio, timeout: Option<Duration>) -> Result<()> {
        let mut helper = self.spawn_helper(&req, stdio)?;
        if let Err(e) = helper.sock.set_read_timeout(timeout) {
            helper.proc.kill();
            helper.proc.wait();
            return Err(self.op_err("set timeout")(e));
        }
        let result = loop {
            match protocol::recv::<Msg>(&helper.sock) {
                Ok(Some(Msg::Pid(pid))) => self.init_pid = Pid::from_raw(pid),
                Ok(Some(Msg::Created)) => break Ok(()),
                Ok(Some(Msg::Console)) => match protocol::recv_fds(&helper.sock) {
                    Ok(fds) => self.console = fds.into_iter().next(),
                    Err(e) => break Err(self.op_err("receive console")(e)),
                },
                Ok(Some(Msg::CreateRuntime)) => {
                    if let Err(e) = self.create_runtime_hooks(&helper.sock) {
                        break Err(e);
                    }
                }
                Ok(Some(Msg::Error(msg))) => break Err(self.setup_err(msg)),
                Ok(Some(other)) => {
                    break Err(self.setup_err(format!("init: unexpected message {other:?}")))
                }
                Ok(None) => break Err(self.helper_died(&mut helper)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    let secs = timeout.unwrap_or_default().as_secs_f64();
                    break Err(self.setup_err(format!("create timed out after {secs} s")));
                }
                Err(e) => break Err(self.op_err("read from init helper")(e)),
            }
        };
        if result.is_err() {
            // A stuck helper (e.g. joining a namespace) would block the wait.
            helper.proc.kill();
        }
        // The helper exits once it has reported the pid.
        helper.proc.wait();
        result?;
        let _ = helper.sock.set_read_timeout(None);
        self.sync = Some(helper.sock);
        Ok(())
    }

    fn state(&self, status: &str) -> String {
        hooks::state_json(
            &self.id,
            status,
            self.init_pid.as_raw(),
            &self.bundle,
            self.annotations.as_ref(),
        )
    }

    #[allow(deprecated)]
    fn create_runtime_hooks(&self, sock: &UnixStream) -> Result<()> {
        let state = self.state("creating");
        let h = self.hooks.as_ref();
        hooks::run(
            &*self.reap,
            "prestart",
            h.and_then(|h| h.prestart().as_ref()),
            &state,
        )
        .and_then(|()| {
            hooks::run(
                &*self.reap,
                "createRuntime",
                h.and_then(|h| h.create_runtime().as_ref()),
                &state,
            )
        })
        .map_err(|e| self.setup_err(e.to_string()))?;
        protocol::send(sock, &Msg::Continue(state)).map_err(self.op_err("resume init"))
    }

    fn helper_died(&self, helper: &mut Helper) -> Error {
        match helper.proc.wait() {
            Some(status) => self.setup_err(format!("init helper exited early ({status})")),
            None => self.setup_err("init helper exited early".into()),
        }
    }

    /// Kills whatever a failed create left and removes the cgroup.
    fn cleanup_failed(&mut self) {
        let _ = self.kill_all(Signal::SIGKILL);
        let _ = self.cgroup.destroy(Duration::from_secs(5));
        if self.init_pid.as_raw() > 0 {
            let _ = kill(self.init_pid, Signal::SIGKILL);
            self.reap.collect(self.init_pid.as_raw());
        }
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of the container's init process.
    pub fn pid(&self) -> i32 {
        self.init_pid.as_raw()
    }

    /// Current status as rustjail last set it (process exits are seen by
    /// the caller, which reaps).
    pub fn status(&self) -> Status {
        self.status
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> &CgroupManager {
        &self.cgroup
    }

    /// Lets the init exec the container process. Returns once it has
    /// exec'd, or with the exec error (`exec /bin/x: permission denied`).
    pub fn start(&mut self) -> Result<()> {
        let sock = match (&self.status, self.sync.take()) {
            (Status::Created, Some(sock)) => sock,
            (s, _) => {
                return Err(Error::State {
                    id: self.id.clone(),
                    what: "start",
                    state: s.name(),
                })
            }
        };
        protocol::send(&sock, &Msg::Start(self.state("created"))).map_err(self.op_err("start"))?;
        match protocol::recv::<Msg>(&sock) {
            Ok(None) => {
                self.status = Status::Running;
                let state = self.state("running");
                let h = self.hooks.as_ref().and_then(|h| h.poststart().as_ref());
                hooks::run(&*self.reap, "poststart", h, &state)
                    .map_err(|e| self.setup_err(e.to_string()))
            }
            Ok(Some(Msg::Error(msg))) => Err(self.setup_err(msg)),
            Ok(Some(other)) => Err(self.setup_err(format!("start: unexpected message {other:?}"))),
            Err(e) => Err(self.op_err("start")(e)),
        }
    }

    /// The PTY master of the init's terminal (`process.terminal: true`);
    /// the first call takes it.
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Runs another process in the container's namespaces and cgroup;
    /// returns once it has exec'd. With `process.terminal`, `stdio` is
    /// ignored and the process gets a PTY whose master is returned.
    pub fn exec(&mut self, process: &Process, stdio: Stdio) -> Result<Spawned> {
        if !matches!(self.status, Status::Created | Status::Running) {
            return Err(Error::State {
                id: self.id.clone(),
                what: "exec",
                state: self.status.name(),
            });
        }
        if !process_alive(self.init_pid) {
            return Err(Error::State {
                id: self.id.clone(),
                what: "exec",
                state: "stopped",
            });
        }
        // An exec without capabilities (`kubectl exec` through the Go
        // runtime) gets the init's, as runc and upstream Kata do.
        let mut process = process.clone();
        if process.capabilities().is_none() {
            process.set_capabilities(self.init_capabilities.clone());
        }
        let req = Request::Exec(Box::new(ExecRequest {
            init_pid: self.init_pid.as_raw(),
            namespaces: self.namespaces.clone(),
            process,
            seccomp: self.seccomp.clone(),
        }));
        let mut helper = self.spawn_helper(&req, stdio)?;
        let mut pid = None;
        let mut console = None;
        let result = loop {
            match protocol::recv::<Msg>(&helper.sock) {
                Ok(Some(Msg::Pid(p))) => pid = Some(p),
                Ok(Some(Msg::Console)) => match protocol::recv_fds(&helper.sock) {
                    Ok(fds) => console = fds.into_iter().next(),
                    Err(e) => break Err(self.op_err("receive console")(e)),
                },
                Ok(Some(Msg::Error(msg))) => {
                    // The process can report its failure before the helper
                    // has reported its pid: read to the end for the pid, or
                    // the failed process stays a zombie of ours, and as a
                    // member of the container's pid namespace it keeps the
                    // init from ever finishing its exit.
                    while pid.is_none() {
                        match protocol::recv::<Msg>(&helper.sock) {
                            Ok(Some(Msg::Pid(p))) => pid = Some(p),
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break,
                        }
                    }
                    break Err(self.setup_err(msg));
                }
                Ok(Some(other)) => {
                    break Err(self.setup_err(format!("exec: unexpected message {other:?}")))
                }
                Ok(None) => match pid {
                    Some(pid) => {
                        break Ok(Spawned {
                            pid,
                            console: console.take(),
                        })
                    }
                    None => break Err(self.helper_died(&mut helper)),
                },
                Err(e) => break Err(self.op_err("read from init helper")(e)),
            }
        };
        helper.proc.wait();
        if let (Err(_), Some(p)) = (&result, pid) {
            // The process reported its error and exits; it was re-parented
            // to us when the helper exited.
            self.reap.collect(p);
        }
        result
    }

    /// Sends `sig` to the init, or with `all` to every process of the
    /// container (frozen first, so none escapes by forking).
    pub fn kill(&self, sig: Signal, all: bool) -> Result<()> {
        if all {
            return self.kill_all(sig);
        }
        kill(self.init_pid, sig).map_err(|e| Error::Op {
            id: self.id.clone(),
            what: format!("signal {sig} to init {}", self.init_pid),
            cause: errno_text(e),
        })
    }

    fn kill_all(&self, sig: Signal) -> Result<()> {
        let cg_err = |e| Error::Cgroup {
            id: self.id.clone(),
            source: e,
        };
        let frozen = self.status != Status::Paused && self.cgroup.freeze().is_ok();
        let result = self.cgroup.pids().map_err(cg_err).map(|pids| {
            for pid in pids {
                // A process may exit meanwhile: ESRCH is fine.
                let _ = kill(Pid::from_raw(pid), sig);
            }
        });
        if frozen || self.status == Status::Paused && sig == Signal::SIGKILL {
            self.cgroup.thaw().map_err(cg_err)?;
        }
        result
    }

    /// Resource usage of the container's cgroup.
    pub fn stats(&self) -> CgroupStats {
        self.cgroup.stats()
    }

    /// Starts watching the container's cgroup for OOM kills.
    pub fn oom_events(&self) -> Result<OomEvents> {
        let dir = self.cgroup.file(Some("memory"), "");
        let watch = if self.cgroup.is_v2() {
            OomEvents::v2
        } else {
            OomEvents::v1
        };
        watch(&dir).map_err(self.op_err(format!("watch oom events in {}", dir.display())))
    }

    /// Freezes every process of the container.
    pub fn pause(&mut self) -> Result<()> {
        if self.status != Status::Running {
            return Err(Error::State {
                id: self.id.clone(),
                what: "pause",
                state: self.status.name(),
            });
        }
        self.cgroup.freeze().map_err(|e| Error::Cgroup {
            id: self.id.clone(),
            source: e,
        })?;
        self.status = Status::Paused;
        Ok(())
    }

    /// Thaws a paused container.
    pub fn resume(&mut self) -> Result<()> {
        if self.status != Status::Paused {
            return Err(Error::State {
                id: self.id.clone(),
                what: "resume",
                state: self.status.name(),
            });
        }
        self.cgroup.thaw().map_err(|e| Error::Cgroup {
            id: self.id.clone(),
            source: e,
        })?;
        self.status = Status::Running;
        Ok(())
    }

    /// Applies new resource limits; new device rules replace the spec's,
    /// with the default allow-list and `linux.devices` after them.
    pub fn update(&mut self, resources: &LinuxResources) -> Result<()> {
        let (rest, rules) = split_device_rules(Some(resources));
        if let Some(res) = rest {
            let id = self.id.clone();
            self.cgroup
                .update(&res)
                .map_err(|e| Error::Cgroup { id, source: e })?;
        }
        if !rules.is_empty() {
            self.set_device_rules(&rules)?;
        }
        Ok(())
    }

    /// The device cgroup: `spec_rules`, then the default allow-list and
    /// `linux.devices`.
    fn set_device_rules(&mut self, spec_rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let rules = crate::devices::container_rules(spec_rules, &self.devices);
        let id = self.id.clone();
        self.cgroup
            .set_device_rules(&rules)
            .map_err(|e| Error::Cgroup { id, source: e })
    }

    /// Kills every process and removes the cgroup. The mounts live in the
    /// container's mount namespace and go with its last process. Waits up
    /// to `timeout` for the processes to leave the cgroup; the caller
    /// still reaps them.
    pub fn destroy(&mut self, timeout: Duration) -> Result<()> {
        if self.status == Status::Destroyed {
            return Ok(());
        }
        if self.cgroup.exists() {
            self.kill_all(Signal::SIGKILL)?;
            let id = self.id.clone();
            self.cgroup
                .destroy(timeout)
                .map_err(|e| Error::Cgroup { id, source: e })?;
        } else if let Err(e) = kill(self.init_pid, Signal::SIGKILL) {
            if e != Errno::ESRCH {
                return Err(Error::Op {
                    id: self.id.clone(),
                    what: "kill init".into(),
                    cause: errno_text(e),
                });
            }
        }
        // Closed only now: an init waiting for start would exit on its own.
        self.sync = None;
        self.status = Status::Destroyed;
        let state = self.state("stopped");
        let h = self.hooks.as_ref().and_then(|h| h.poststop().as_ref());
        hooks::run(&*self.reap, "poststop", h, &state).map_err(|e| self.setup_err(e.to_string()))
    }
}

/// Splits `linux.resources` into everything but the device rules, and the
/// device rules alone.
fn split_device_rules(
    resources: Option<&LinuxResources>,
) -> (Option<LinuxResources>, Vec<LinuxDeviceCgroup>) {
    let Some(res) = resources else {
        return (None, Vec::new());
    };
    let mut rest = res.clone();
    let rules = rest.devices_mut().take().unwrap_or_default();
    (Some(rest), rules)
}

/// Whether `pid` runs (exists and is not a zombie).
fn process_alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which ends with the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Makes the calling process a child subreaper, so that container inits
/// (whose helper parent exits) are re-parented to it. The agent as PID 1
/// needs no such call; tests and non-init callers do.
pub fn set_child_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<Container>();
        is_send::<Spawned>();
    }

    #[test]
    fn alive_check() {
        assert!(process_alive(Pid::this()));
        assert!(!process_alive(Pid::from_raw(i32::MAX)));
    }
}
