//! `CreateContainerRequest.devices`: each device the host plugged for a
//! container is waited for, its node's numbers read in the guest (the
//! host's are meaningless here), and the container's spec updated: the
//! `linux.devices` entry at `container_path` gets the guest's major and
//! minor (or is added), and the device cgroup rules that named the
//! host's numbers name the guest's (or an allow rule is added).
//!
//! Device types, as Kata's runtime sends them:
//! - `blk`: virtio-blk, PCI path in `id` (`vm_path` is the host's guess of
//!   the name and is not trusted; without a PCI path, the name in `id` or
//!   `vm_path` is waited for);
//! - `mmioblk`: virtio-mmio disk, `/dev/vdX` in `vm_path`;
//! - `scsi`: `target:lun` in `id`;
//! - `nvdimm`: `/dev/pmemN` in `vm_path`;
//! - `vfio-pci` (and `vfio`): passthrough; each option is
//!   `<host BDF>=<guest PCI path>`; the devices are waited for, bound to
//!   `vfio-pci` if another driver holds them, and `container_path`
//!   (`/dev/vfio/<host group>`) becomes the guest's group node;
//! - `vfio-pci-gk`: the guest kernel drives the devices: waited for, the
//!   spec is left alone.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use protocols::agent::Device;
use rustjail::oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Spec};

use super::pci::PciPath;
use super::target::{dev_name, scsi_address, Target};
use super::{DeviceError, Devices};

/// The types [`apply`] understands.
pub const DEVICE_TYPES: &[&str] = &[
    "blk",
    "mmioblk",
    "scsi",
    "nvdimm",
    "vfio-pci",
    "vfio",
    "vfio-pci-gk",
];

/// A device node in the guest, as the spec needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: PathBuf,
    pub typ: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
}

/// Reads a node's type and numbers.
pub fn read_node(path: &Path) -> Result<Node, String> {
    let md = fs::metadata(path)
        .map_err(|e| format!("stat {}: {}", path.display(), crate::error::describe_io(&e)))?;
    let ft = md.file_type();
    let typ = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else {
        return Err(format!("{} is not a device node", path.display()));
    };
    let rdev = md.rdev();
    Ok(Node {
        path: path.to_path_buf(),
        typ,
        major: i64::from(nix::sys::stat::major(rdev) as u32),
        minor: i64::from(nix::sys::stat::minor(rdev) as u32),
        mode: md.mode() & 0o7777,
    })
}

fn check_container_path(d: &Device) -> Result<(), DeviceError> {
    let p = Path::new(&d.container_path);
    let ok = p.is_absolute()
        && !d.container_path.contains('\0')
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(DeviceError::invalid(
            &d.id,
            format!(
                "container_path {:?} is not an absolute path without ..",
                d.container_path
            ),
        ))
    }
}

/// Where a block device's node is, after waiting for it.
fn block_node(devices: &Devices, d: &Device) -> Result<Option<Node>, DeviceError> {
    let object = if d.id.is_empty() { &d.vm_path } else { &d.id };
    let target = match d.type_.as_str() {
        // Without a PCI path (runtime-rs then sends the node's name in
        // `id` too), only the name the host expects is left.
        "blk" if d.id.is_empty() || d.id.starts_with("/dev/") => {
            let name = if d.id.is_empty() { &d.vm_path } else { &d.id };
            Target::BlkMmio(dev_name(name).map_err(|e| DeviceError::invalid(object, e))?)
        }
        "blk" => Target::BlkPci(
            d.id.parse::<PciPath>()
                .map_err(|e| DeviceError::invalid(object, e))?,
        ),
        "mmioblk" => {
            Target::BlkMmio(dev_name(&d.vm_path).map_err(|e| DeviceError::invalid(object, e))?)
        }
        "nvdimm" => {
            Target::Pmem(dev_name(&d.vm_path).map_err(|e| DeviceError::invalid(object, e))?)
        }
        "scsi" => {
            let (target, lun) = scsi_address(&d.id).map_err(|e| DeviceError::invalid(object, e))?;
            Target::Scsi { target, lun }
        }
        _ => return Ok(None),
    };
    let found = devices.wait(&target)?;
    let node = devices.node(&found.name);
    read_node(&node)
        .map(Some)
        .map_err(|reason| DeviceError::Io {
            target: target.to_string(),
            op: "read its node".into(),
            reason,
        })
}

/// The VFIO group node for passthrough devices; binds each to `vfio-pci`.
fn vfio_node(devices: &Devices, d: &Device, bind: bool) -> Result<Option<Node>, DeviceError> {
    if d.options.is_empty() {
        return Err(DeviceError::invalid(
            &d.id,
            "no devices in options (expected <host BDF>=<guest PCI path>)",
        ));
    }
    let mut group: Option<String> = None;
    for opt in &d.options {
        let (_, path) = opt.split_once('=').ok_or_else(|| {
            DeviceError::invalid(
                &d.id,
                format!("option {opt:?} is not <host BDF>=<guest PCI path>"),
            )
        })?;
        let path: PciPath = path.parse().map_err(|e| DeviceError::invalid(&d.id, e))?;
        let target = Target::VfioPci(path.clone());
        devices.wait(&target)?;
        let dir = path.resolve(devices.sysfs()).map_err(|e| DeviceError::Io {
            target: target.to_string(),
            op: "resolve".into(),
            reason: e.to_string(),
        })?;
        if !bind {
            continue;
        }
        bind_vfio(&dir).map_err(|reason| DeviceError::Io {
            target: target.to_string(),
            op: "bind to vfio-pci".into(),
            reason,
        })?;
        let g = fs::read_link(dir.join("iommu_group"))
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| DeviceError::Io {
                target: target.to_string(),
                op: "read its IOMMU group".into(),
                reason: format!("{} has no iommu_group", dir.display()),
            })?;
        match &group {
            Some(prev) if *prev != g => {
                return Err(DeviceError::invalid(
                    &d.id,
                    format!("devices in different IOMMU groups ({prev} and {g})"),
                ))
            }
            _ => group = Some(g),
        }
    }
    let Some(g) = group else { return Ok(None) };
    // A group node without an IOMMU is `noiommu-<n>`.
    let dev = devices.node("vfio");
    let path = [dev.join(&g), dev.join(format!("noiommu-{g}"))]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| dev.join(&g));
    read_node(&path)
        .map(Some)
        .map_err(|reason| DeviceError::Io {
            target: format!("VFIO group {g}"),
            op: "read its node".into(),
            reason,
        })
}

/// Binds a PCI device to `vfio-pci` unless it already is.
fn bind_vfio(dir: &Path) -> Result<(), String> {
    let current = fs::read_link(dir.join("driver"))
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
    if current.as_deref() == Some("vfio-pci") {
        return Ok(());
    }
    let io = |what: &str, e: std::io::Error| format!("{what}: {}", crate::error::describe_io(&e));
    let bdf = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fs::write(dir.join("driver_override"), b"vfio-pci").map_err(|e| io("driver_override", e))?;
    if current.is_some() {
        fs::write(dir.join("driver/unbind"), bdf.as_bytes()).map_err(|e| io("unbind", e))?;
    }
    let probe = dir
        .ancestors()
        .find(|a| a.join("bus/pci/drivers_probe").exists())
        .map(|a| a.join("bus/pci/drivers_probe"));
    match probe {
        Some(p) => fs::write(p, bdf.as_bytes()).map_err(|e| io("drivers_probe", e)),
        None => Err("no bus/pci/drivers_probe".into()),
    }
}

/// Resolves every device and updates `spec`; nothing is changed when a
/// device fails.
pub fn apply(devices: &Devices, list: &[Device], spec: &mut Spec) -> Result<(), DeviceError> {
    let mut updates = Vec::new();
    for d in list {
        if !DEVICE_TYPES.contains(&d.type_.as_str()) {
            return Err(DeviceError::invalid(
                if d.id.is_empty() { &d.vm_path } else { &d.id },
                format!(
                    "device type {:?} is not supported (supported: {})",
                    d.type_,
                    DEVICE_TYPES.join(", ")
                ),
            ));
        }
        // The request is checked before anything is waited for.
        if d.type_ != "vfio-pci-gk" {
            check_container_path(d)?;
        }
        let node = match d.type_.as_str() {
            "vfio-pci" | "vfio" => vfio_node(devices, d, true)?,
            "vfio-pci-gk" => vfio_node(devices, d, false)?,
            _ => block_node(devices, d)?,
        };
        if let Some(node) = node {
            updates.push((PathBuf::from(&d.container_path), node));
        }
    }
    for (container_path, node) in updates {
        update_spec(spec, &container_path, &node);
    }
    Ok(())
}

/// Points the spec's entry for `container_path` at `node`, and the
/// cgroup rules that allowed the host's numbers at the guest's.
pub fn update_spec(spec: &mut Spec, container_path: &Path, node: &Node) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut list = linux.devices().clone().unwrap_or_default();
    let mut old = None;
    for dev in list.iter_mut().filter(|d| d.path() == container_path) {
        old = Some((dev.typ(), dev.major(), dev.minor()));
        dev.set_typ(node.typ);
        dev.set_major(node.major);
        dev.set_minor(node.minor);
    }
    if old.is_none() {
        let mut dev = LinuxDevice::default();
        dev.set_path(container_path.to_path_buf());
        dev.set_typ(node.typ);
        dev.set_major(node.major);
        dev.set_minor(node.minor);
        dev.set_file_mode(Some(node.mode & 0o777));
        dev.set_uid(Some(0));
        dev.set_gid(Some(0));
        list.push(dev);
    }
    linux.set_devices(Some(list));

    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    let mut rewrote = false;
    if let Some((typ, major, minor)) = old {
        for r in rules.iter_mut() {
            if r.typ() == Some(typ) && r.major() == Some(major) && r.minor() == Some(minor) {
                r.set_typ(Some(node.typ));
                r.set_major(Some(node.major));
                r.set_minor(Some(node.minor));
                rewrote = true;
            }
        }
    }
    if !rewrote {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(node.typ));
        rule.set_major(Some(node.major));
        rule.set_minor(Some(node.minor));
        rule.set_access(Some("rwm".into()));
        rules.push(rule);
    }
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
}
