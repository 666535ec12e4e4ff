//! DestroySandbox (and the agent's own shutdown): remove every container,
//! end the namespace holder, tear down the storages and the DNS setup.
//! Every step is tried even when an earlier one fails; the failures are
//! reported together, and a DNS setup that could not be undone is kept so
//! that a later DestroySandbox or the shutdown tries again.

use super::error::Error;
use super::{guest_files, stop_holder, Sandbox};
use crate::containers;
use crate::lock::lock;

/// How long each container's processes may take to exit.
const REMOVE_TIMEOUT_SECS: u32 = 10;

/// Destroys the sandbox; runs blocking, in one call. The sandbox is no
/// longer created afterwards, whatever failed.
pub fn destroy(sandbox: &Sandbox) -> Result<(), Error> {
    let mut errors = Vec::new();
    for ctr in sandbox.all() {
        if let Err(e) = containers::remove(sandbox, &ctr.id, REMOVE_TIMEOUT_SECS) {
            errors.push(e.to_string());
        }
    }
    let holder = lock(&sandbox.state).holder.take();
    if let Some(h) = holder {
        stop_holder(h);
    }
    errors.extend(sandbox.storage.release_all().iter().map(|e| e.to_string()));
    let dns = lock(&sandbox.state).dns.take();
    if let Some(dns) = dns {
        if let Err(e) = guest_files::teardown_dns(&dns) {
            errors.push(e.to_string());
            lock(&sandbox.state).dns = Some(dns);
        }
    }
    let id = {
        let mut st = lock(&sandbox.state);
        st.created = false;
        st.guest_hooks = None;
        st.pause_pidns = None;
        std::mem::take(&mut st.id)
    };
    if !errors.is_empty() {
        return Err(Error::Destroy { id, errors });
    }
    log::info!("sandbox {id:?} destroyed");
    Ok(())
}
