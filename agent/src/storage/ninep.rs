//! `9p`: a directory the VMM exports over virtio-9p (QEMU's `-fsdev` with
//! `virtio-9p-pci`), for hypervisors or setups without virtio-fs. `source`
//! is the mount tag; the options go to the filesystem (`trans=virtio` is
//! added when no transport is named, `version=9p2000.L` when no version is).

use protocols::agent::Storage;

use super::options::filesystem_options;
use super::{Ctx, MountOptions, StorageError, Undo};

const FSTYPE: &str = "9p";
/// Longest tag virtio-9p carries (`VIRTIO_9P_TAG_MAX` rounded, 9p spec).
const MAX_TAG: usize = 255;

pub(super) struct Plan {
    tag: String,
    options: MountOptions,
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    if s.source.is_empty() {
        return Err(ctx.invalid("no 9p mount tag in source"));
    }
    if s.source.len() > MAX_TAG || s.source.contains(['\0', ',', '/']) {
        return Err(ctx.invalid(format!("9p mount tag {:?} is not a tag", s.source)));
    }
    if !s.fstype.is_empty() && s.fstype != FSTYPE {
        return Err(ctx.invalid(format!(
            "fstype \"{}\" is not supported (only {FSTYPE})",
            s.fstype
        )));
    }
    let mut options = filesystem_options(&s.options);
    let has = |key: &str| {
        options
            .data
            .split(',')
            .any(|o| o.split('=').next() == Some(key))
    };
    let mut extra = Vec::new();
    if !has("trans") {
        extra.push("trans=virtio");
    }
    if !has("version") {
        extra.push("version=9p2000.L");
    }
    for e in extra {
        if !options.data.is_empty() {
            options.data.push(',');
        }
        options.data.push_str(e);
    }
    Ok(Plan {
        tag: s.source.clone(),
        options,
    })
}

impl Plan {
    #[cfg(test)]
    pub(super) fn data(&self) -> &str {
        &self.options.data
    }
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    ctx.mount_new(
        &format!("mount 9p tag \"{}\"", plan.tag),
        &plan.tag,
        FSTYPE,
        &plan.options,
    )
}
