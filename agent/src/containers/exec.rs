//! ExecProcess as one transaction: pipes, the process forked into the
//! container's namespaces and cgroup, its stdio, its entry in the
//! container; a later failure kills the process again.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rustjail::oci_spec::runtime::Process;

use super::error::{validate_id, Error};
use super::stdio::{input_pipe, output_pipe, ProcIo};
use super::{Ctr, Proc};
use crate::lock::lock;
use crate::sandbox::Sandbox;

/// What ExecProcess asks for, in OCI terms.
pub struct ExecParams {
    pub exec_id: String,
    pub process: Process,
}

/// Runs another process in a container; runs blocking, in one call.
pub fn exec(sandbox: &Sandbox, ctr: &Ctr, p: ExecParams) -> Result<(), Error> {
    let (cid, eid) = (ctr.id.as_str(), p.exec_id.as_str());
    validate_id("exec", eid)?;
    if ctr.has_exec_id(eid) {
        return Err(Error::ProcExists {
            id: cid.to_string(),
            exec_id: eid.to_string(),
        });
    }
    if ctr.init_proc().and_then(|p| p.exited()).is_some() {
        return Err(Error::Stopped {
            id: cid.to_string(),
            exec_id: eid.to_string(),
        });
    }
    if p.process.args().as_deref().unwrap_or_default().is_empty() {
        return Err(Error::Invalid {
            id: cid.to_string(),
            reason: format!("exec {eid:?}: process.args is empty"),
        });
    }
    let size = sandbox.settings.pipe_size;
    let what = format!("exec {eid:?}: create stdio pipes");
    let stdin = input_pipe(size).map_err(Error::io(cid, what.clone()))?;
    let stdout = output_pipe(size).map_err(Error::io(cid, what.clone()))?;
    let stderr = output_pipe(size).map_err(Error::io(cid, what))?;
    let stdio = rustjail::Stdio {
        stdin: Some(stdin.theirs),
        stdout: Some(stdout.theirs),
        stderr: Some(stderr.theirs),
    };
    // The process is re-parented to us when its helper exits.
    let since = sandbox.reaper.epoch();
    let spawned = lock(&ctr.jail).exec(&p.process, stdio)?;
    let pid = spawned.pid;
    let exit = sandbox.reaper.adopt(pid, since);
    let undo = || {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    };
    let io = match spawned.console {
        Some(master) => ProcIo::pty(master),
        None => Ok(ProcIo {
            stdin: Some(stdin.ours),
            stdout: Some(stdout.ours),
            stderr: Some(stderr.ours),
            tty: None,
        }),
    };
    let io = io.map_err(|e| {
        undo();
        Error::io(cid, format!("exec {eid:?}: set up the terminal"))(e)
    })?;
    if !ctr.add_proc(Proc::new(eid, pid, exit, io)) {
        // Two execs raced for the id: the later one is undone.
        undo();
        return Err(Error::ProcExists {
            id: cid.to_string(),
            exec_id: eid.to_string(),
        });
    }
    log::debug!("container {cid:?}: exec {eid:?} pid {pid}");
    Ok(())
}
