//! CreateContainer as one transaction: adapt the spec to the sandbox
//! (shared namespaces, guest hooks), reserve the id, set up the storages,
//! write the bundle, create the container in rustjail, wire its
//! stdio and OOM watch. A failing step unwinds every earlier one, so a
//! refused request leaves no id, storage, bundle, process or cgroup.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocols::agent::Storage;
use rustjail::oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use super::error::{validate_id, Error};
use super::stdio::{input_pipe, output_pipe, ProcIo};
use super::undo::Rollback;
use super::{Ctr, CtrParts, Proc, TerminationLog};
use crate::lock::lock;
use crate::sandbox::{Reserve, Sandbox};

/// Kubernetes' annotation naming the termination message path.
const TERMINATION_PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
/// Kubernetes' default termination message path.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";
/// Limit for each step of creating a container.
const CREATE_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What CreateContainer asks for, in OCI terms.
pub struct CreateParams {
    pub id: String,
    /// The init's exec id; empty means the container id.
    pub exec_id: String,
    pub spec: Spec,
    /// Join the sandbox's pid namespace instead of a new one.
    pub sandbox_pidns: bool,
    /// The container's volumes.
    pub storages: Vec<Storage>,
    /// Devices the host plugged for it (block, VFIO).
    pub devices: Vec<protocols::agent::Device>,
}

/// Creates a container; runs blocking, in one call.
pub fn create(sandbox: &Arc<Sandbox>, p: CreateParams) -> Result<Arc<Ctr>, Error> {
    let id = p.id;
    validate_id("container", &id)?;
    let exec_id = if p.exec_id.is_empty() {
        id.clone()
    } else {
        p.exec_id
    };
    validate_id("exec", &exec_id)?;
    let mut spec = p.spec;
    let (holder, shared_pid, guest_hooks) = {
        let st = lock(&sandbox.state);
        let holder = st.holder.as_ref().map(|h| h.pid);
        // The pod's shared pid namespace: the holder's, or else the pause
        // container's (the Go runtime's shareProcessNamespace pods).
        let shared_pid = match &st.holder {
            Some(h) if h.pidns => Some(h.pid),
            _ => st.pause_pidns.as_ref().map(|(_, pid)| *pid),
        };
        (holder, shared_pid, st.guest_hooks.clone())
    };
    let first = sandbox.all().is_empty();
    adapt_namespaces(&mut spec, holder, shared_pid, p.sandbox_pidns, &id);
    if let Some(hooks) = &guest_hooks {
        crate::sandbox::guest_hooks::append(&mut spec, hooks);
    }
    let mut undo = Rollback::new();
    match sandbox.reserve(&id) {
        Ok(()) => {}
        Err(Reserve::Exists) => return Err(Error::Exists { id }),
        Err(Reserve::Busy) => return Err(Error::Busy { id }),
    }
    let (s, cid) = (sandbox.clone(), id.clone());
    undo.push(move || s.finish(&cid, None));

    // The guest's numbers for the devices, before anything is set up.
    crate::device::spec::apply(&sandbox.devices, &p.devices, &mut spec).map_err(|source| {
        Error::Device {
            id: id.clone(),
            source: Box::new(source),
        }
    })?;

    if !p.storages.is_empty() {
        let (s, cid) = (sandbox.clone(), id.clone());
        undo.push(move || {
            for e in s.storage.rollback(&cid) {
                log::warn!("container {cid:?}: release storage: {e}");
            }
        });
        for st in &p.storages {
            sandbox
                .storage
                .add(&id, st)
                .map_err(|source| Error::Storage {
                    id: id.clone(),
                    source,
                })?;
        }
    }

    let settings = &sandbox.settings;
    let bundle = settings.run_dir.join(&id);
    let termination_log = termination_log_of(&spec);
    let spec_json = serde_json::to_vec_pretty(&spec).map_err(|e| Error::Io {
        id: id.clone(),
        what: "encode spec".into(),
        source: e.into(),
    })?;
    std::fs::create_dir_all(&bundle).map_err(Error::io(&id, "create bundle"))?;
    let b = bundle.clone();
    undo.push(move || {
        let _ = std::fs::remove_dir_all(&b);
    });
    std::fs::write(bundle.join("config.json"), spec_json)
        .map_err(Error::io(&id, "write config.json"))?;

    let size = settings.pipe_size;
    let stdin = input_pipe(size).map_err(Error::io(&id, "create stdio pipes"))?;
    let stdout = output_pipe(size).map_err(Error::io(&id, "create stdio pipes"))?;
    let stderr = output_pipe(size).map_err(Error::io(&id, "create stdio pipes"))?;
    let opts = rustjail::CreateOpts {
        launcher: settings.launcher.clone(),
        stdio: rustjail::Stdio {
            stdin: Some(stdin.theirs),
            stdout: Some(stdout.theirs),
            stderr: Some(stderr.theirs),
        },
        // A container whose setup hangs (a FIFO for /etc/passwd, a stuck
        // mount) fails instead of holding its slot forever.
        timeout: Some(CREATE_STEP_TIMEOUT),
        zygote: settings.zygote.clone(),
        reap: Some(Arc::new(sandbox.reaper.clone())),
        ..rustjail::CreateOpts::default()
    };
    // The init is re-parented to us when its helper exits.
    let since = sandbox.reaper.epoch();
    let mut jail = rustjail::Container::create(&id, &spec, &bundle, opts)?;
    let pid = jail.pid();
    let exit = sandbox.reaper.adopt(pid, since);
    // With a terminal the PTY master replaces the pipes.
    let io = match jail.take_console() {
        Some(master) => ProcIo::pty(master).map_err(Error::io(&id, "set up the terminal")),
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
            return Err(e);
        }
    };
    let oom_watch = watch_oom(sandbox, &id, &jail);
    let mnt_ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map(OwnedFd::from)
        .map_err(|e| log::debug!("container {id:?}: keep mount namespace: {e}"))
        .ok();
    let ctr = Arc::new(Ctr::new(CtrParts {
        id: id.clone(),
        init_exec_id: exec_id.clone(),
        bundle,
        termination_log,
        init: Proc::new(&exec_id, pid, exit, io),
        jail,
        oom_watch,
        mnt_ns,
    }));
    undo.commit();
    if first && shared_pid.is_none() {
        let mut st = lock(&sandbox.state);
        if !st.holder.as_ref().is_some_and(|h| h.pidns) && st.pause_pidns.is_none() {
            st.pause_pidns = Some((id.clone(), pid));
        }
    }
    sandbox.finish(&id, Some(ctr.clone()));
    Ok(ctr)
}

/// Starts the OOM watch; a container without one still runs.
fn watch_oom(
    sandbox: &Sandbox,
    id: &str,
    jail: &rustjail::Container,
) -> Option<tokio::task::AbortHandle> {
    let memory_dir = jail.cgroup().file(Some("memory"), "");
    let watched = match jail.oom_events() {
        Ok(ev) => sandbox
            .oom
            .watch(id, ev, memory_dir)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    watched
        .map_err(|e| log::warn!("container {id:?}: no OOM notifications: {e}"))
        .ok()
}

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

/// Rewrites the spec's namespaces for the guest, as Kata's agent does:
/// - a network namespace path names the host's namespace, meaningless here,
///   so the container shares the guest's network;
/// - new IPC and UTS namespaces become the sandbox's shared ones (those of
///   the `holder` pid), so the pod's containers share hostname and IPC;
/// - the pid namespace is the sandbox's shared one (that of the
///   `shared_pid` process) with `sandbox_pidns`, else a new one, as
///   upstream; exactly one pid entry remains, whether or not the spec had
///   one.
fn adapt_namespaces(
    spec: &mut Spec,
    holder: Option<i32>,
    shared_pid: Option<i32>,
    sandbox_pidns: bool,
    id: &str,
) {
    let pid_path = match (sandbox_pidns, shared_pid) {
        (true, Some(pid)) => Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
        (true, None) => {
            log::info!("container {id:?}: sandbox_pidns: no shared pid namespace yet, a new one");
            None
        }
        (false, _) => None,
    };
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let mut ns = linux.namespaces().clone().unwrap_or_default();
    ns.retain(|n| !(n.typ() == LinuxNamespaceType::Network && n.path().is_some()));
    if let Some(hpid) = holder {
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
    if !explicit_pid || pid_path.is_some() {
        ns.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        let mut pid_ns = LinuxNamespace::default();
        pid_ns.set_typ(LinuxNamespaceType::Pid);
        pid_ns.set_path(pid_path);
        ns.push(pid_ns);
    }
    linux.set_namespaces(Some(ns));
}
