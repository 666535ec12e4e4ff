//! Container lifecycle: CreateContainer, StartContainer, RemoveContainer,
//! PauseContainer, ResumeContainer, UpdateContainer, StatsContainer.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocols::agent::*;
use protocols::empty::Empty;
use rustjail::oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, LinuxResources, Spec};
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::oci;
use super::{blocking, jail_error, status, AgentImpl};
use crate::containers::stdio::{input_pipe, output_pipe, ProcIo};
use crate::containers::{Ctr, CtrParts, Proc, TerminationLog};
use crate::lock::lock;
use crate::sandbox::Reserve;

/// Kubernetes' annotation naming the termination message path.
const TERMINATION_PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
/// Kubernetes' default termination message path.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

fn termination_log_of(spec: &Spec) -> TerminationLog {
    let path = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(TERMINATION_PATH_ANNOTATION))
        .filter(|p| !p.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_TERMINATION_PATH.to_string());
    let source = spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|m| m.destination().as_os_str() == path.as_str())
        .and_then(|m| m.source().clone());
    TerminationLog { path, source }
}

/// Limit for each step of creating a container.
const CREATE_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Container and exec ids name directories and cgroups: rustjail's rule
/// (letters, digits, `-`, `_`, `.`, no `..`, at most 256 bytes).
pub fn validate_id(kind: &str, id: &str) -> ttrpc::Result<()> {
    rustjail::validate_id(id).map_err(|why| {
        status(
            Code::INVALID_ARGUMENT,
            format!("{kind} {id:?}: invalid id: {why}"),
        )
    })
}

/// Rewrites the spec's namespaces for the guest, as Kata's agent does:
/// - a network namespace path names the host's namespace, meaningless here,
///   so the container shares the guest's network;
/// - new IPC and UTS namespaces become the sandbox's shared ones, so the
///   pod's containers share hostname and IPC;
/// - the pid namespace is the sandbox's with `sandbox_pidns`, else a new
///   one; exactly one pid entry remains, whether or not the spec had one.
fn adapt_namespaces(
    spec: &mut Spec,
    holder: Option<(i32, bool)>,
    sandbox_pidns: bool,
) -> Result<(), String> {
    let pid_path = if sandbox_pidns {
        match holder {
            Some((pid, true)) => Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
            _ => return Err("sandbox_pidns: the sandbox has no shared pid namespace".into()),
        }
    } else {
        None
    };
    let Some(linux) = spec.linux_mut() else {
        return Ok(());
    };
    let mut ns = linux.namespaces().clone().unwrap_or_default();
    ns.retain(|n| !(n.typ() == LinuxNamespaceType::Network && n.path().is_some()));
    if let Some((hpid, _)) = holder {
        for n in ns.iter_mut() {
            let name = match n.typ() {
                LinuxNamespaceType::Ipc => "ipc",
                LinuxNamespaceType::Uts => "uts",
                _ => continue,
            };
            if n.path().is_none() {
                n.set_path(Some(PathBuf::from(format!("/proc/{hpid}/ns/{name}"))));
            }
        }
    }
    let explicit_pid = ns
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_some());
    if !explicit_pid || sandbox_pidns {
        ns.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        let mut pid_ns = LinuxNamespace::default();
        pid_ns.set_typ(LinuxNamespaceType::Pid);
        pid_ns.set_path(pid_path);
        ns.push(pid_ns);
    }
    linux.set_namespaces(Some(ns));
    Ok(())
}

impl AgentImpl {
    pub(super) async fn do_create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let id = req.container_id.clone();
        validate_id("container", &id)?;
        let exec_id = if req.exec_id.is_empty() {
            id.clone()
        } else {
            req.exec_id.clone()
        };
        validate_id("exec", &exec_id)?;
        let spec_pb = req.OCI.as_ref().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                format!("container {id:?}: the request has no OCI spec"),
            )
        })?;
        let mut spec = oci::spec_from_proto(spec_pb)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("container {id:?}: {e}")))?;
        let holder = lock(&self.sandbox.state)
            .holder
            .as_ref()
            .map(|h| (h.pid, h.pidns));
        adapt_namespaces(&mut spec, holder, req.sandbox_pidns)
            .map_err(|e| status(Code::FAILED_PRECONDITION, format!("container {id:?}: {e}")))?;
        match self.sandbox.reserve(&id) {
            Ok(()) => {}
            Err(Reserve::Exists) => {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("container {id:?}: already exists"),
                ))
            }
            Err(Reserve::Busy) => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("container {id:?}: another create or remove is in progress"),
                ))
            }
        }
        let result = match self.add_storages(&id, req.storages.clone()).await {
            Ok(()) => self.create_reserved(&id, &exec_id, spec).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.release_storages(&id).await;
        }
        match result {
            Ok(ctr) => {
                self.sandbox.finish(&id, Some(ctr));
                log::info!("container {id:?} created");
                Ok(Empty::new())
            }
            Err(e) => {
                self.sandbox.finish(&id, None);
                Err(e)
            }
        }
    }

    async fn create_reserved(
        &self,
        id: &str,
        exec_id: &str,
        spec: Spec,
    ) -> ttrpc::Result<Arc<Ctr>> {
        let settings = &self.sandbox.settings;
        let bundle = settings.run_dir.join(id);
        let internal = |what: &str, e: std::io::Error| {
            status(Code::INTERNAL, format!("container {id:?}: {what}: {e}"))
        };
        let termination_log = termination_log_of(&spec);
        let spec_json = serde_json::to_vec_pretty(&spec).map_err(|e| {
            status(
                Code::INTERNAL,
                format!("container {id:?}: encode spec: {e}"),
            )
        })?;
        std::fs::create_dir_all(&bundle).map_err(|e| internal("create bundle", e))?;
        let cleanup_bundle = || {
            let _ = std::fs::remove_dir_all(&bundle);
        };
        if let Err(e) = std::fs::write(bundle.join("config.json"), spec_json) {
            cleanup_bundle();
            return Err(internal("write config.json", e));
        }

        let pipes = (|| {
            Ok::<_, std::io::Error>((
                input_pipe(settings.pipe_size)?,
                output_pipe(settings.pipe_size)?,
                output_pipe(settings.pipe_size)?,
            ))
        })();
        let (stdin, stdout, stderr) = match pipes {
            Ok(p) => p,
            Err(e) => {
                cleanup_bundle();
                return Err(internal("create stdio pipes", e));
            }
        };
        let opts = rustjail::CreateOpts {
            launcher: settings.launcher.clone(),
            stdio: rustjail::Stdio {
                stdin: Some(stdin.theirs),
                stdout: Some(stdout.theirs),
                stderr: Some(stderr.theirs),
            },
            // A container whose setup hangs (a FIFO for /etc/passwd, a
            // stuck mount) fails instead of holding its slot forever.
            timeout: Some(CREATE_STEP_TIMEOUT),
            zygote: settings.zygote.clone(),
            ..rustjail::CreateOpts::default()
        };
        let reaper = self.sandbox.reaper.clone();
        let (cid, b) = (id.to_string(), bundle.clone());
        let created = blocking(move || {
            let _guard = reaper.spawn_guard();
            rustjail::Container::create(&cid, &spec, &b, opts)
        })
        .await;
        let mut jail = match created {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => {
                cleanup_bundle();
                return Err(jail_error(e));
            }
            Err(e) => {
                cleanup_bundle();
                return Err(e);
            }
        };
        let pid = jail.pid();
        let exit = self.sandbox.reaper.register(pid);
        // With a terminal the PTY master replaces the pipes.
        let io = match jail.take_console() {
            Some(master) => ProcIo::pty(master).map_err(|e| internal("set up the terminal", e)),
            None => Ok(ProcIo {
                stdin: Some(stdin.ours),
                stdout: Some(stdout.ours),
                stderr: Some(stderr.ours),
                tty: None,
            }),
        };
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                let _ = jail.destroy(Duration::from_secs(10));
                cleanup_bundle();
                return Err(e);
            }
        };
        let memory_dir = jail.cgroup().file(Some("memory"), "");
        let oom_watch = match jail.oom_events().map_err(|e| e.to_string()).and_then(|ev| {
            self.sandbox
                .oom
                .watch(id, ev, memory_dir.clone())
                .map_err(|e| e.to_string())
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!("container {id:?}: no OOM notifications: {e}");
                None
            }
        };
        let init = Proc::new(exec_id, pid, exit, io);
        let mnt_ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .map(OwnedFd::from)
            .map_err(|e| log::debug!("container {id:?}: keep mount namespace: {e}"))
            .ok();
        Ok(Arc::new(Ctr::new(CtrParts {
            id: id.to_string(),
            init_exec_id: exec_id.to_string(),
            bundle,
            termination_log,
            jail,
            init,
            oom_watch,
            mnt_ns,
        })))
    }

    /// Sets up a container's storages (volumes); the caller releases them
    /// on failure.
    async fn add_storages(&self, id: &str, storages: Vec<Storage>) -> ttrpc::Result<()> {
        if storages.is_empty() {
            return Ok(());
        }
        let sandbox = self.sandbox.clone();
        let owner = id.to_string();
        blocking(move || {
            for s in &storages {
                sandbox.storage.add(&owner, s).map_err(|e| {
                    status(Code::INVALID_ARGUMENT, format!("container {owner:?}: {e}"))
                })?;
            }
            Ok(())
        })
        .await?
    }

    async fn release_storages(&self, id: &str) {
        let sandbox = self.sandbox.clone();
        let owner = id.to_string();
        let errors = blocking(move || sandbox.storage.release(&owner)).await;
        for e in errors.unwrap_or_default() {
            log::warn!("container {id:?}: release storage: {e}");
        }
    }

    /// Looks a container up or answers NOT_FOUND naming it.
    pub(super) fn ctr(&self, id: &str) -> ttrpc::Result<Arc<Ctr>> {
        self.sandbox
            .get(id)
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {id:?}: not found")))
    }

    pub(super) async fn do_start_container(
        &self,
        _ctx: &TtrpcContext,
        req: StartContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.container_id)?;
        let c = ctr.clone();
        blocking(move || lock(&c.jail).start())
            .await?
            .map_err(jail_error)?;
        log::info!("container {:?} started", ctr.id);
        Ok(Empty::new())
    }

    pub(super) async fn do_remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.remove(req).await
    }

    async fn remove(&self, req: RemoveContainerRequest) -> ttrpc::Result<Empty> {
        let id = req.container_id.clone();
        let ctr = self
            .sandbox
            .take(&id)
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {id:?}: not found")))?;
        // 0 means no limit, as Kata defines it.
        let limit = match req.timeout {
            0 => Duration::from_secs(365 * 24 * 3600),
            s => Duration::from_secs(u64::from(s)),
        };
        // Stop watching first: removing a v1 cgroup signals its eventfd.
        if let Some(w) = &ctr.oom_watch {
            w.abort();
        }
        let c = ctr.clone();
        let destroyed = blocking(move || lock(&c.jail).destroy(limit)).await;
        let destroyed = match destroyed {
            Ok(r) => r.map_err(jail_error),
            Err(e) => Err(e),
        };
        if let Err(e) = destroyed {
            self.sandbox.restore(ctr);
            return Err(e);
        }
        // Every process is dead; wait until the reaper has collected them so
        // no zombie outlives the container.
        for p in ctr.procs() {
            if tokio::time::timeout(limit, p.wait()).await.is_err() {
                self.sandbox.restore(ctr);
                return Err(status(
                    Code::DEADLINE_EXCEEDED,
                    format!(
                        "container {id:?}: process {:?} (pid {}) did not exit within {}s",
                        p.exec_id, p.pid, req.timeout
                    ),
                ));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&ctr.bundle) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!(
                    "container {id:?}: remove bundle {}: {e}",
                    ctr.bundle.display()
                );
            }
        }
        self.release_storages(&id).await;
        // The namespace teardown (RCU waits) need not delay the answer.
        if let Some(ns) = lock(&ctr.mnt_ns).take() {
            tokio::task::spawn_blocking(move || drop(ns));
        }
        self.sandbox.finish(&id, None);
        log::info!("container {id:?} removed");
        Ok(Empty::new())
    }

    /// Kills and removes every container: what the agent leaves behind
    /// when it stops. Errors are logged; every container is tried.
    pub async fn destroy_all(&self) {
        for ctr in self.sandbox.all() {
            let id = ctr.id.clone();
            let mut req = RemoveContainerRequest::new();
            req.container_id = id.clone();
            req.timeout = 10;
            let ctx_free = self.remove(req).await;
            if let Err(e) = ctx_free {
                log::warn!("container {id:?}: remove at shutdown: {e:?}");
            }
        }
    }

    pub(super) async fn do_pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: PauseContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.container_id)?;
        blocking(move || lock(&ctr.jail).pause())
            .await?
            .map_err(jail_error)?;
        Ok(Empty::new())
    }

    pub(super) async fn do_resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: ResumeContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.container_id)?;
        blocking(move || lock(&ctr.jail).resume())
            .await?
            .map_err(jail_error)?;
        Ok(Empty::new())
    }

    pub(super) async fn do_update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let id = req.container_id.clone();
        let ctr = self.ctr(&id)?;
        let res_pb = req.resources.as_ref().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                format!("container {id:?}: update: no resources given"),
            )
        })?;
        let resources: LinuxResources =
            serde_json::from_value(oci::resources(res_pb)).map_err(|e| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("container {id:?}: invalid resources: {e}"),
                )
            })?;
        blocking(move || lock(&ctr.jail).update(&resources))
            .await?
            .map_err(jail_error)?;
        Ok(Empty::new())
    }

    pub(super) async fn do_stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        let ctr = self.ctr(&req.container_id)?;
        let stats = blocking(move || lock(&ctr.jail).stats()).await?;
        let mut resp = StatsContainerResponse::new();
        resp.cgroup_stats = Some(super::stats::convert(&stats)).into();
        Ok(resp)
    }
}
