//! CreateSandbox as one transaction: claim the sandbox, load the kernel
//! modules it names, set the hostname, write and bind-mount the DNS file,
//! set up the sandbox's storages, read the guest hooks, start the namespace
//! holder. A failing step unwinds every earlier one, so a
//! refused request leaves no hostname, DNS mount, storage or process, and
//! the next CreateSandbox starts from a clean guest.

use std::path::Path;
use std::sync::Arc;

use protocols::agent::Storage;

use super::error::Error;
use super::guest_files::{self, ETC_RESOLV, SANDBOX_DIR};
use super::{guest_hooks, ns_holder, Sandbox};
use crate::containers::undo::Rollback;
use crate::lock::lock;
use crate::pid1::modules;

/// Owner name of the sandbox's own storages.
pub const SANDBOX_OWNER: &str = "sandbox";

/// What CreateSandbox asks for.
#[derive(Debug, Default)]
pub struct CreateParams {
    pub id: String,
    /// Empty: the hostname stays as it is.
    pub hostname: String,
    /// resolv.conf lines; empty: `/etc/resolv.conf` stays as it is.
    pub dns: Vec<String>,
    pub storages: Vec<Storage>,
    /// The holder owns a pid namespace the containers may share.
    pub sandbox_pidns: bool,
    /// Loaded first, in order (storages may need them).
    pub kernel_modules: Vec<KernelModule>,
    /// Folder of the guest's OCI hooks; empty: none.
    pub guest_hook_path: String,
}

/// A kernel module to load, with its `key=value` parameters.
#[derive(Debug, Default, Clone)]
pub struct KernelModule {
    pub name: String,
    pub parameters: Vec<String>,
}

/// Creates the sandbox; runs blocking, in one call.
pub fn create(sandbox: &Arc<Sandbox>, p: CreateParams) -> Result<(), Error> {
    let id = p.id;
    let hook_dir = if p.guest_hook_path.is_empty() {
        None
    } else {
        guest_hooks::check_dir(&p.guest_hook_path, &sandbox.settings.run_dir).map_err(|reason| {
            Error::HookPath {
                id: id.clone(),
                path: p.guest_hook_path.clone(),
                reason,
            }
        })?
    };
    {
        let mut st = lock(&sandbox.state);
        if st.created {
            return Err(Error::Exists { id: st.id.clone() });
        }
        st.created = true;
        st.id = id.clone();
    }
    let mut undo = Rollback::new();
    let s = sandbox.clone();
    undo.push(move || {
        let mut st = lock(&s.state);
        st.created = false;
        st.id.clear();
    });
    let files = |source| Error::Files {
        id: id.clone(),
        source,
    };

    for m in &p.kernel_modules {
        let loaded =
            modules::load_named(&m.name, &m.parameters).map_err(|source| Error::Module {
                id: id.clone(),
                source,
            })?;
        undo.push(move || {
            for m in loaded.iter().rev() {
                modules::unload(m);
            }
        });
    }

    if !p.hostname.is_empty() {
        guest_files::validate_hostname(&p.hostname).map_err(files)?;
        let before = nix::unistd::gethostname().ok();
        guest_files::set_hostname(&p.hostname).map_err(files)?;
        if let Some(before) = before {
            let sid = id.clone();
            undo.push(move || {
                if let Err(e) = nix::unistd::sethostname(&before) {
                    log::warn!("sandbox {sid:?}: undo hostname: {}", e.desc());
                }
            });
        }
    }

    let dns = guest_files::setup_dns(Path::new(SANDBOX_DIR), &p.dns, Path::new(ETC_RESOLV))
        .map_err(files)?;
    if let Some(dns) = dns.clone() {
        let sid = id.clone();
        undo.push(move || {
            if let Err(e) = guest_files::teardown_dns(&dns) {
                log::warn!("sandbox {sid:?}: undo dns: {e}");
            }
        });
    }

    if !p.storages.is_empty() {
        let (s, sid) = (sandbox.clone(), id.clone());
        undo.push(move || {
            for e in s.storage.rollback(SANDBOX_OWNER) {
                log::warn!("sandbox {sid:?}: undo storage: {e}");
            }
        });
        for st in &p.storages {
            sandbox
                .storage
                .add(SANDBOX_OWNER, st)
                .map_err(|source| Error::Storage {
                    id: id.clone(),
                    source,
                })?;
        }
    }

    let hooks = hook_dir.as_deref().and_then(guest_hooks::find);

    // The namespaces the pod's containers share.
    let holder = ns_holder::spawn(
        &sandbox.reaper,
        &sandbox.settings.launcher,
        p.sandbox_pidns,
        &p.hostname,
    )
    .map_err(|source| Error::Holder {
        id: id.clone(),
        source,
    })?;

    undo.commit();
    {
        let mut st = lock(&sandbox.state);
        st.dns = dns;
        st.holder = Some(holder);
        st.guest_hooks = hooks;
    }
    log::info!(
        "sandbox {id:?} created ({} storages, shared pid namespace: {})",
        p.storages.len(),
        p.sandbox_pidns
    );
    Ok(())
}
