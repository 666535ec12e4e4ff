//! Block devices the host plugged, mounted with the filesystem in
//! `fstype`: upstream's drivers
//! - `blk`: virtio-blk; `source` is the PCI path (`05/00`), or a node
//!   under `/dev/` that must already be a block device;
//! - `mmioblk`: virtio-mmio; `source` is `/dev/vdX`;
//! - `scsi`: virtio-scsi; `source` is `target:lun`;
//! - `nvdimm`: persistent memory; `source` is `/dev/pmemN` (`dax` in the
//!   options maps it without the page cache where the kernel can).
//!
//! The device is waited for ([`crate::device::Devices::wait`]) when the
//! storage is applied, not planned: planning only checks the request.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use protocols::agent::Storage;

use super::options::filesystem_options;
use super::{Ctx, MountOptions, StorageError, Undo};
use crate::device::pci::PciPath;
use crate::device::target::{dev_name, scsi_address};
use crate::device::Target;

enum Source {
    /// Wait for the device, then mount `/dev/<name>`.
    Wait(Target),
    /// A node the host named; it must be a block device.
    Node(PathBuf),
}

pub(super) struct Plan {
    source: Source,
    fstype: String,
    options: MountOptions,
}

/// The filesystem type, which a block storage must name.
pub(super) fn fstype(ctx: &Ctx<'_>, s: &Storage) -> Result<String, StorageError> {
    let t = s.fstype.as_str();
    if t.is_empty() {
        return Err(ctx.invalid("no fstype: a block device needs its filesystem named"));
    }
    if t.len() > 32
        || !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(ctx.invalid(format!("fstype {t:?} is not a filesystem name")));
    }
    Ok(t.to_owned())
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    let bad = |e: String| ctx.invalid(format!("source: {e}"));
    let source = match s.driver.as_str() {
        super::DRIVER_BLK_TYPE if s.source.starts_with("/dev/") => {
            dev_name(&s.source).map_err(bad)?;
            Source::Node(PathBuf::from(&s.source))
        }
        super::DRIVER_BLK_TYPE => {
            Source::Wait(Target::BlkPci(s.source.parse::<PciPath>().map_err(bad)?))
        }
        super::DRIVER_MMIO_BLK_TYPE => {
            Source::Wait(Target::BlkMmio(dev_name(&s.source).map_err(bad)?))
        }
        super::DRIVER_SCSI_TYPE => {
            let (target, lun) = scsi_address(&s.source).map_err(bad)?;
            Source::Wait(Target::Scsi { target, lun })
        }
        super::DRIVER_NVDIMM_TYPE => Source::Wait(Target::Pmem(dev_name(&s.source).map_err(bad)?)),
        other => return Err(ctx.invalid(format!("not a block driver: {other}"))),
    };
    let options = filesystem_options(&s.options);
    Ok(Plan {
        source,
        fstype: fstype(ctx, s)?,
        options,
    })
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    let node = match &plan.source {
        Source::Node(p) => p.clone(),
        Source::Wait(target) => {
            let devices = ctx
                .devices
                .ok_or_else(|| ctx.invalid("this agent has no device support"))?;
            let found = devices.wait(target).map_err(|e| ctx.device(e))?;
            devices.node(&found.name)
        }
    };
    let md = fs::metadata(&node).map_err(|e| ctx.io(format!("stat {}", node.display()), e))?;
    if !md.file_type().is_block_device() {
        return Err(ctx.invalid(format!("{} is not a block device", node.display())));
    }
    let src = node.to_string_lossy();
    let undo = ctx.mount_new(
        &format!("mount {} ({})", node.display(), plan.fstype),
        &src,
        &plan.fstype,
        &plan.options,
    )?;
    log::info!(
        "storage \"{}\": {} mounted ({})",
        ctx.mount_point,
        node.display(),
        plan.fstype
    );
    Ok(undo)
}
