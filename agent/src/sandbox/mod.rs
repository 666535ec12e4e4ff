//! Sandbox state: the settings, the sandbox-wide facts CreateSandbox set,
//! the reaper, the storages and the map of containers ([`crate::containers`]).
//!
//! The operations on the sandbox, [`create()`] and [`destroy()`], are
//! synchronous and run inside one blocking call, as the container layer's
//! do; create is a transaction that undoes its earlier steps through a
//! [`crate::containers::undo::Rollback`] when a later one fails. Errors are
//! [`Error`], with one mapping to a ttrpc status.
//!
//! Submodules: [`ns_holder`], the process holding the namespaces the pod's
//! containers share; [`guest_files`], the guest files a sandbox sets
//! (hostname, DNS); [`guest_hooks`], the OCI hooks the guest image adds to
//! every container.
//!
//! Locks are short: the containers map and each container's process map are
//! std mutexes held only for lookups and inserts. The one lock held across a
//! blocking call is a container's own `jail` mutex, inside `spawn_blocking`,
//! so a slow container never delays requests for another.

mod create;
mod destroy;
mod error;
pub mod guest_files;
pub mod guest_hooks;
pub mod ns_holder;

pub use create::{create, CreateParams, KernelModule, SANDBOX_OWNER};
pub use destroy::destroy;
pub use error::Error;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::containers::oom_events::OomEvents;
use crate::containers::Ctr;
use crate::device::Devices;
use crate::lock::lock;
use crate::reaper::{ExitWatch, Reaper};
use crate::storage::StorageManager;

/// Guest directory holding container bundles (`<run>/<cid>/`).
pub const RUN_DIR: &str = "/run/kata-containers";

/// Settings the container code needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The executable rustjail re-executes as its init helper.
    pub launcher: PathBuf,
    /// Where bundles go.
    pub run_dir: PathBuf,
    /// F_SETPIPE_SZ for container stdout and stderr; 0 means
    /// [`crate::containers::stdio::DEFAULT_OUTPUT_PIPE`].
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
    /// The namespace holder (see [`ns_holder`]): its pid, its exit, and
    /// whether it owns a pid namespace for `sandbox_pidns` containers.
    pub holder: Option<Holder>,
    /// The DNS file and bind mount CreateSandbox set up, if it set one up:
    /// DestroySandbox undoes exactly this.
    pub dns: Option<guest_files::DnsSetup>,
    /// The guest hooks found under CreateSandbox's `guest_hook_path`,
    /// appended to every container's hooks.
    pub guest_hooks: Option<rustjail::oci_spec::runtime::Hooks>,
    /// When the holder owns no pid namespace: the sandbox's first container
    /// (the pause container) and its init's pid, whose pid namespace the
    /// `sandbox_pidns` containers join, as upstream does. Cleared when that
    /// container is removed.
    pub pause_pidns: Option<(String, i32)>,
}

#[derive(Debug)]
pub struct Holder {
    pub pid: i32,
    pub pidns: bool,
    pub exit: ExitWatch,
}

pub struct Sandbox {
    pub settings: Settings,
    pub reaper: Reaper,
    pub oom: OomEvents,
    pub storage: StorageManager,
    /// Hot-plugged devices: the uevent hub and the waits.
    pub devices: Arc<Devices>,
    pub state: Mutex<SandboxState>,
    containers: Mutex<Containers>,
}

/// Ends the namespace holder and waits (bounded) until it is reaped.
fn stop_holder(h: Holder) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    if h.exit
        .wait_blocking(Some(std::time::Duration::from_secs(10)))
        .is_none()
    {
        log::warn!("namespace holder {} did not exit after SIGKILL", h.pid);
    }
}

/// Why an id could not be reserved.
pub enum Reserve {
    Exists,
    Busy,
}

impl Sandbox {
    pub fn new(settings: Settings, reaper: Reaper) -> Sandbox {
        let devices = Arc::new(Devices::new(settings.hotplug_timeout));
        Sandbox {
            settings,
            reaper,
            oom: OomEvents::default(),
            storage: StorageManager::default().with_devices(devices.clone()),
            devices,
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
