//! SignalProcess as Kubernetes' stop needs it: SIGTERM to a container's
//! init that has no handler for it becomes SIGKILL (a pid namespace's init
//! ignores signals it does not handle, and the kubelet would wait out the
//! grace period), SIGKILL to the init reaches every process of the
//! container, and a process that has already exited is no error (the Go
//! runtime's stop races the exit; upstream ignores ESRCH).

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{Ctr, Error, Proc};
use crate::lock::lock;

/// Whether process `pid` has a handler for `sig` (`SigCgt` in its status).
fn catches(pid: i32, sig: Signal) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig as i32 - 1)) != 0)
}

/// Sends `sig` to process `p` of `ctr`; runs blocking.
pub fn signal(ctr: &Ctr, p: &Proc, sig: Signal) -> Result<(), Error> {
    let cid = ctr.id.as_str();
    let init = p.exec_id == ctr.init_exec_id;
    let sig = if init && sig == Signal::SIGTERM && !catches(p.pid, sig) {
        log::info!("container {cid:?}: init has no SIGTERM handler: SIGKILL instead");
        Signal::SIGKILL
    } else {
        sig
    };
    if init && sig == Signal::SIGKILL {
        // Every process of the container, wherever it forked to.
        return lock(&ctr.jail)
            .kill(Signal::SIGKILL, true)
            .map_err(Error::from);
    }
    if p.exited().is_some() {
        log::debug!(
            "container {cid:?}: process {:?}: signal {sig}: already exited",
            p.exec_id
        );
        return Ok(());
    }
    match nix::sys::signal::kill(Pid::from_raw(p.pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::io(
            cid,
            format!("process {:?}: signal {sig}", p.exec_id),
        )(std::io::Error::from(e))),
    }
}
