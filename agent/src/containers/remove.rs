//! RemoveContainer: kill every process, remove the cgroup, wait until the
//! reaper has collected the processes, then the bundle and the storages.
//! A removal that fails puts the container back as it was found.

use std::sync::Arc;
use std::time::Duration;

use super::error::Error;
use super::Ctr;
use crate::lock::lock;
use crate::sandbox::Sandbox;

/// Removes container `id`, waiting at most `timeout_secs` (0: no limit, as
/// Kata defines it) for its processes; runs blocking, in one call.
pub fn remove(sandbox: &Sandbox, id: &str, timeout_secs: u32) -> Result<(), Error> {
    let ctr = sandbox
        .take(id)
        .ok_or_else(|| Error::NotFound { id: id.into() })?;
    match teardown(&ctr, timeout_secs) {
        Ok(()) => {}
        Err(e) => {
            sandbox.restore(ctr);
            return Err(e);
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
    for e in sandbox.storage.release(id) {
        log::warn!("container {id:?}: release storage: {e}");
    }
    // The namespace teardown (RCU waits) need not delay the answer.
    if let Some(ns) = lock(&ctr.mnt_ns).take() {
        tokio::task::spawn_blocking(move || drop(ns));
    }
    {
        // The pause container's pid namespace is gone with it.
        let mut st = lock(&sandbox.state);
        if st.pause_pidns.as_ref().is_some_and(|(c, _)| c == id) {
            st.pause_pidns = None;
        }
    }
    sandbox.finish(id, None);
    Ok(())
}

/// Kills the processes and waits for them; the part that can fail.
fn teardown(ctr: &Arc<Ctr>, timeout_secs: u32) -> Result<(), Error> {
    let limit = match timeout_secs {
        0 => Duration::from_secs(365 * 24 * 3600),
        s => Duration::from_secs(u64::from(s)),
    };
    // Stop watching first: removing a v1 cgroup signals its eventfd.
    if let Some(w) = &ctr.oom_watch {
        w.abort();
    }
    lock(&ctr.jail).destroy(limit)?;
    // Every process is dead; wait until the reaper has collected them so
    // no zombie outlives the container.
    for p in ctr.procs() {
        if !p.wait_blocking(limit) {
            return Err(Error::NotExited {
                id: ctr.id.clone(),
                exec_id: p.exec_id.clone(),
                pid: p.pid,
                secs: timeout_secs,
            });
        }
    }
    Ok(())
}
