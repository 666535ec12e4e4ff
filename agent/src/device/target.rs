//! What a wait looks for, how an event or sysfs says it has come, and
//! what to report when it has not.
//!
//! Every target has two ways of being found, kept consistent here: a
//! matcher for the kernel's `add` event ([`Target::matches`]) and a sysfs
//! scan for a device that was there before the wait began
//! ([`Target::scan`]). Devpaths in events start with `/devices/`; the
//! sysfs root is a parameter so that tests can lay out a fake one.

use std::fmt;
use std::fs;
use std::path::Path;

use super::pci::PciPath;

/// A device the host has plugged, or is about to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A virtio-blk disk at a PCI path.
    BlkPci(PciPath),
    /// A virtio-mmio disk, by its name under `/dev` (`vdb`).
    BlkMmio(String),
    /// A SCSI disk by `target:lun`, on any host adapter, channel 0.
    Scsi { target: u32, lun: u32 },
    /// A persistent-memory disk, by its name under `/dev` (`pmem0`).
    Pmem(String),
    /// A network interface at a PCI path.
    NetPci(PciPath),
    /// A PCI device for passthrough (VFIO) at a PCI path.
    VfioPci(PciPath),
}

/// A device that has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its name: below `/dev` for disks, the interface name for NICs, the
    /// PCI address (`0000:01:00.0`) for a PCI device.
    pub name: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::BlkPci(p) => write!(f, "virtio-blk device at PCI path {p}"),
            Target::BlkMmio(n) => write!(f, "virtio-mmio block device /dev/{n}"),
            Target::Scsi { target, lun } => write!(f, "SCSI device {target}:{lun}"),
            Target::Pmem(n) => write!(f, "pmem device /dev/{n}"),
            Target::NetPci(p) => write!(f, "network device at PCI path {p}"),
            Target::VfioPci(p) => write!(f, "PCI device at PCI path {p}"),
        }
    }
}

/// The name under `/dev/` of a block device source (`/dev/vdb` -> `vdb`);
/// only plain names, no directories.
pub fn dev_name(source: &str) -> Result<String, String> {
    let name = source
        .strip_prefix("/dev/")
        .ok_or_else(|| format!("device {source:?} is not under /dev/"))?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("device {source:?}: not a plain device name"));
    }
    Ok(name.to_owned())
}

/// Parses a SCSI address as Kata sends it: `target:lun`.
pub fn scsi_address(s: &str) -> Result<(u32, u32), String> {
    let (t, l) = s
        .split_once(':')
        .ok_or_else(|| format!("SCSI address {s:?} is not target:lun"))?;
    let num = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("SCSI address {s:?} is not target:lun"))
    };
    Ok((num(t)?, num(l)?))
}

/// The PCI device directory as a devpath (`/devices/pci0000:00/...`).
fn pci_devpath(p: &PciPath, sysfs: &Path) -> Option<String> {
    let dir = p.expected(sysfs).ok()?;
    let rel = dir.strip_prefix(sysfs).ok()?;
    Some(format!("/{}", rel.to_string_lossy()))
}

/// `<dir>/virtio<N>/<class>/<name>` or `<dir>/<class>/<name>`: the first
/// name found.
fn class_child(dir: &Path, class: &str) -> Option<String> {
    let direct = first_entry(&dir.join(class));
    if direct.is_some() {
        return direct;
    }
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .find_map(|e| first_entry(&e.path().join(class)))
}

fn first_entry(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Whether the rest of a devpath below a PCI device is
/// `virtio<N>/<class>/<name>` (or `<class>/<name>`), and the name.
fn below_pci<'a>(rest: &'a str, class: &str) -> Option<&'a str> {
    let rest = match rest.split_once('/') {
        Some((first, tail)) if first.starts_with("virtio") && first.len() > 6 => {
            if !first[6..].bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            tail
        }
        _ => rest,
    };
    let name = rest.strip_prefix(class)?.strip_prefix('/')?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

impl Target {
    /// Whether the device is a disk (has a node to open).
    pub fn is_disk(&self) -> bool {
        matches!(
            self,
            Target::BlkPci(_) | Target::BlkMmio(_) | Target::Scsi { .. } | Target::Pmem(_)
        )
    }

    /// The device this event announces, if it is the one awaited.
    pub fn matches(&self, ev: &super::uevent::Uevent, sysfs: &Path) -> Option<Found> {
        if ev.action != "add" && !(ev.action == "bind" && matches!(self, Target::VfioPci(_))) {
            return None;
        }
        let found = |name: &str| {
            Some(Found {
                name: name.to_owned(),
            })
        };
        match self {
            Target::BlkPci(p) => {
                if ev.subsystem != "block" || ev.devtype != "disk" || ev.devname.is_empty() {
                    return None;
                }
                let prefix = pci_devpath(p, sysfs)?;
                let rest = ev.devpath.strip_prefix(&prefix)?.strip_prefix('/')?;
                below_pci(rest, "block").filter(|n| *n == ev.devname)?;
                found(&ev.devname)
            }
            Target::BlkMmio(name) | Target::Pmem(name) => {
                if ev.subsystem != "block" || ev.devname != *name {
                    return None;
                }
                // A disk (`.../block/vdb`) or one of its partitions
                // (`.../block/pmem0/pmem0p1`).
                if !ev.devpath.ends_with(&format!("/{name}")) || !ev.devpath.contains("/block/") {
                    return None;
                }
                if matches!(self, Target::Pmem(_)) && !ev.devpath.contains("/ndbus") {
                    return None;
                }
                found(name)
            }
            Target::Scsi { target, lun } => {
                if ev.subsystem != "block" || ev.devtype != "disk" || ev.devname.is_empty() {
                    return None;
                }
                let tail = format!(":0:{target}:{lun}/block/{}", ev.devname);
                let head = ev.devpath.strip_suffix(&tail)?;
                // The host number just before: `.../target0:0:1/0:0:1:0`.
                let host = head.rsplit('/').next()?;
                (!host.is_empty() && host.bytes().all(|b| b.is_ascii_digit())).then(|| Found {
                    name: ev.devname.clone(),
                })
            }
            Target::NetPci(p) => {
                if ev.subsystem != "net" || ev.interface.is_empty() {
                    return None;
                }
                let prefix = pci_devpath(p, sysfs)?;
                let rest = ev.devpath.strip_prefix(&prefix)?.strip_prefix('/')?;
                below_pci(rest, "net").filter(|n| *n == ev.interface)?;
                found(&ev.interface)
            }
            Target::VfioPci(p) => {
                if ev.subsystem != "pci" {
                    return None;
                }
                let prefix = pci_devpath(p, sysfs)?;
                if ev.devpath != prefix {
                    return None;
                }
                found(prefix.rsplit('/').next()?)
            }
        }
    }

    /// The device, if sysfs already has it.
    pub fn scan(&self, sysfs: &Path) -> Option<Found> {
        let found = |name: String| Some(Found { name });
        match self {
            Target::BlkPci(p) => found(class_child(&p.resolve(sysfs).ok()?, "block")?),
            Target::NetPci(p) => found(class_child(&p.resolve(sysfs).ok()?, "net")?),
            Target::VfioPci(p) => {
                let dir = p.resolve(sysfs).ok()?;
                found(dir.file_name()?.to_string_lossy().into_owned())
            }
            Target::BlkMmio(name) => sysfs
                .join("class/block")
                .join(name)
                .exists()
                .then(|| Found { name: name.clone() }),
            Target::Pmem(name) => {
                let real = fs::canonicalize(sysfs.join("class/block").join(name)).ok()?;
                real.to_string_lossy()
                    .contains("/ndbus")
                    .then(|| Found { name: name.clone() })
            }
            Target::Scsi { target, lun } => {
                let suffix = format!(":0:{target}:{lun}");
                fs::read_dir(sysfs.join("bus/scsi/devices"))
                    .ok()?
                    .filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_suffix(&suffix)
                            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .find_map(|e| first_entry(&e.path().join("block")))
                    .map(|name| Found { name })
            }
        }
    }

    /// Where the device was looked for and what is there instead, for
    /// the error when it never came.
    pub fn report(&self, sysfs: &Path) -> (String, String) {
        let listing = |dir: &Path| {
            let mut names: Vec<String> = fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        match self {
            Target::BlkPci(p) | Target::NetPci(p) | Target::VfioPci(p) => {
                let class = match self {
                    Target::BlkPci(_) => "block",
                    Target::NetPci(_) => "net",
                    _ => "",
                };
                match p.resolve(sysfs) {
                    Ok(dir) => (
                        dir.display().to_string(),
                        format!(
                            "a PCI device with no {class} device (driver: {})",
                            driver(&dir)
                        ),
                    ),
                    Err(e) => {
                        let looked = p
                            .expected(sysfs)
                            .map(|d| d.display().to_string())
                            .unwrap_or_else(|_| format!("PCI path {p} below {}", sysfs.display()));
                        let mut instead = e.to_string();
                        if !class.is_empty() {
                            instead.push_str(&format!(
                                "; {class} devices present: {}",
                                listing(&sysfs.join("class").join(class))
                            ));
                        }
                        (looked, instead)
                    }
                }
            }
            Target::BlkMmio(n) | Target::Pmem(n) => (
                sysfs.join("class/block").join(n).display().to_string(),
                format!(
                    "block devices present: {}",
                    listing(&sysfs.join("class/block"))
                ),
            ),
            Target::Scsi { target, lun } => (
                format!(
                    "{} (any host, channel 0, target {target}, lun {lun})",
                    sysfs.join("bus/scsi/devices").display()
                ),
                format!(
                    "SCSI devices present: {}",
                    listing(&sysfs.join("bus/scsi/devices"))
                ),
            ),
        }
    }
}

/// The driver bound to a sysfs device, or `none`.
fn driver(dir: &Path) -> String {
    fs::read_link(dir.join("driver"))
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "none".to_owned())
}
