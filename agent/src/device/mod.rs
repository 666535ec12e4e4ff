//! Devices the hypervisor adds to a running VM.
//!
//! - [`uevent`]: the kernel's device events, read by one task and handed
//!   to the registered waits ([`uevent::Hub`]); started before the server
//!   accepts requests.
//! - [`target`]: what a wait looks for (a virtio-blk disk by PCI path, a
//!   virtio-mmio disk by name, a SCSI disk by `target:lun`, a pmem disk, a
//!   NIC or a passthrough device by PCI path), its event matcher and its
//!   sysfs scan.
//! - [`pci`]: Kata's PCI paths and their resolution in sysfs.
//! - [`spec`]: `CreateContainerRequest.devices` resolved to the guest's
//!   device nodes and written into the container's spec.
//! - [`cpu_mem`]: hot-added CPUs and memory blocks brought online
//!   (OnlineCPUMem), and the containers' cpusets widened to match.
//!
//! [`Devices::wait`] is the one way to wait for a device: subscribe first,
//! then look in sysfs (a device that came before the request is found
//! without an event, and one that comes in between is not missed), then
//! wait for the event up to `agent.hotplug_timeout`; before giving up,
//! ask the kernel to rescan the PCI buses (and SCSI hosts) and look once
//! more. The error names the device, where it was looked for and what was
//! there instead.

pub mod cpu_mem;
pub mod pci;
pub mod spec;
pub mod target;
pub mod uevent;

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use target::{Found, Target};

/// How often a wait looks in sysfs when no events arrive (no uevent
/// socket).
const POLL_WITHOUT_EVENTS: Duration = Duration::from_millis(50);
/// How long events may take to follow a rescan that found the device.
const AFTER_RESCAN: Duration = Duration::from_millis(500);

/// Why a device could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The request does not name a device we can look for.
    #[error("device {device:?}: {reason}")]
    Invalid { device: String, reason: String },
    /// It did not come in time.
    #[error("{target}: not found within {} ms (looked for {looked_for}; found instead: {found})", .waited.as_millis())]
    Timeout {
        target: String,
        waited: Duration,
        looked_for: String,
        found: String,
    },
    /// It came, but using it failed.
    #[error("{target}: {op}: {reason}")]
    Io {
        target: String,
        op: String,
        reason: String,
    },
}

impl DeviceError {
    pub fn code(&self) -> ttrpc::Code {
        match self {
            DeviceError::Invalid { .. } => ttrpc::Code::INVALID_ARGUMENT,
            DeviceError::Timeout { .. } => ttrpc::Code::DEADLINE_EXCEEDED,
            DeviceError::Io { .. } => ttrpc::Code::INTERNAL,
        }
    }

    pub(crate) fn invalid(device: &str, reason: impl Into<String>) -> Self {
        DeviceError::Invalid {
            device: device.to_owned(),
            reason: reason.into(),
        }
    }
}

crate::error::into_status!(DeviceError);

/// The guest's devices: where sysfs and `/dev` are, how long to wait, and
/// the hub the event task feeds.
pub struct Devices {
    sysfs: PathBuf,
    dev: PathBuf,
    timeout: Duration,
    hub: Arc<uevent::Hub>,
    /// Whether waits may ask the kernel to rescan its buses: in a guest
    /// (PID 1) or a test's own sysfs; never on a host the agent merely
    /// runs on as a process.
    rescans: bool,
}

impl Devices {
    /// The real guest: `/sys`, `/dev`. Outside PID 1 (an agent run as a
    /// process on a host, as test tooling does) waits never rescan the
    /// host's PCI buses or SCSI hosts.
    pub fn new(timeout: Duration) -> Self {
        let mut d = Self::with_roots(PathBuf::from("/sys"), PathBuf::from("/dev"), timeout);
        d.rescans = crate::pid1::is_pid1();
        d
    }

    /// Another sysfs and `/dev` (tests).
    pub fn with_roots(sysfs: PathBuf, dev: PathBuf, timeout: Duration) -> Self {
        Devices {
            hub: uevent::Hub::new(sysfs.clone()),
            sysfs,
            dev,
            timeout,
            rescans: true,
        }
    }

    /// Asks the kernel to rescan the PCI buses (where that is ours to do).
    pub fn rescan_pci(&self) {
        if !self.rescans {
            return;
        }
        if let Err(e) = pci::rescan(&self.sysfs) {
            log::warn!("PCI rescan: {}", crate::error::describe_io(&e));
        }
    }

    /// Starts reading the kernel's events (on the current runtime).
    pub fn listen(&self) {
        self.hub.listen();
    }

    pub fn hub(&self) -> &Arc<uevent::Hub> {
        &self.hub
    }

    pub fn sysfs(&self) -> &Path {
        &self.sysfs
    }

    /// The node of a block device name (`vdb` -> `/dev/vdb`).
    pub fn node(&self, name: &str) -> PathBuf {
        self.dev.join(name)
    }

    /// Waits for `target`; blocking (call it from a blocking context).
    pub fn wait(&self, target: &Target) -> Result<Found, DeviceError> {
        let started = Instant::now();
        let sub = self.hub.subscribe(target.clone());
        if let Target::Scsi { target: t, lun } = target {
            // Kata boots guests with scsi_mod.scan=none: disks appear
            // only when asked for.
            self.scan_scsi(*t, *lun);
        }
        if let Some(found) = self.scan_ready(target) {
            return Ok(found);
        }
        let deadline = started + self.timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let step = if self.hub.listening() {
                deadline - now
            } else {
                POLL_WITHOUT_EVENTS.min(deadline - now)
            };
            match sub.rx.recv_timeout(step) {
                Ok(found) => return Ok(found),
                Err(RecvTimeoutError::Timeout) => {
                    if !self.hub.listening() {
                        if let Some(found) = self.scan_ready(target) {
                            return Ok(found);
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Before giving up: a hot-plug notification may have been lost.
        log::warn!(
            "{target}: not seen within {} ms{}",
            self.timeout.as_millis(),
            if self.rescans { ", rescanning" } else { "" }
        );
        self.rescan_pci();
        if let Target::Scsi { target: t, lun } = target {
            self.scan_scsi(*t, *lun);
        }
        if let Some(found) = self.scan_ready(target) {
            log::info!("{target}: found after the rescan");
            return Ok(found);
        }
        if let Ok(found) = sub.rx.recv_timeout(AFTER_RESCAN) {
            log::info!("{target}: came after the rescan");
            return Ok(found);
        }
        let (looked_for, found) = target.report(&self.sysfs);
        Err(DeviceError::Timeout {
            target: target.to_string(),
            waited: started.elapsed(),
            looked_for,
            found,
        })
    }

    /// The device, if sysfs has it and, for a disk, its node opens. A
    /// disk is in sysfs (and `/dev`) a moment before it can be opened:
    /// the kernel announces it, with its `add` event, only once its
    /// partitions are read; a scan in between would mount too early
    /// (`ENXIO`). The event itself is trusted.
    fn scan_ready(&self, target: &Target) -> Option<Found> {
        let found = target.scan(&self.sysfs)?;
        if !target.is_disk() {
            return Some(found);
        }
        let node = self.node(&found.name);
        match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&node)
        {
            Ok(_) => Some(found),
            Err(e) => {
                log::debug!(
                    "{target}: {} in sysfs, not open yet: {}",
                    node.display(),
                    crate::error::describe_io(&e)
                );
                None
            }
        }
    }

    /// Asks every SCSI host to probe channel 0, `target`, `lun`.
    fn scan_scsi(&self, target: u32, lun: u32) {
        if !self.rescans {
            return;
        }
        let hosts = match fs::read_dir(self.sysfs.join("class/scsi_host")) {
            Ok(rd) => rd,
            Err(_) => return,
        };
        for h in hosts.filter_map(|e| e.ok()) {
            let scan = h.path().join("scan");
            if let Err(e) = fs::write(&scan, format!("0 {target} {lun}")) {
                log::debug!("{}: {}", scan.display(), crate::error::describe_io(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests;
