//! `virtio-fs`: mounts the shared directory the VMM exports under a tag
//! (`source`, `kataShared` from Kata's shim) with filesystem `virtiofs`.

use protocols::agent::Storage;

use super::options::filesystem_options;
use super::{mounted_at, Ctx, MountInfo, MountOptions, StorageError, Undo};

const FSTYPE: &str = "virtiofs";

pub(super) struct Plan {
    tag: String,
    options: MountOptions,
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    if s.source.is_empty() {
        return Err(ctx.invalid("no virtio-fs tag in source"));
    }
    if s.source.contains('\0') {
        return Err(ctx.invalid("virtio-fs tag contains a nul byte"));
    }
    if !s.fstype.is_empty() && s.fstype != FSTYPE {
        return Err(ctx.invalid(format!(
            "fstype \"{}\" is not supported (only {FSTYPE})",
            s.fstype
        )));
    }
    let options = filesystem_options(&s.options);
    Ok(Plan {
        tag: s.source.clone(),
        options,
    })
}

/// Whether the mount already at the mount point is this tag.
fn is_premount(m: &MountInfo, tag: &str) -> bool {
    m.fstype == FSTYPE && m.source == tag
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    // The guest may mount the tag before the agent starts (upstream Kata
    // accepts that too): adopt it, and leave it mounted on release.
    if let Ok(Some(m)) = mounted_at(ctx.real()) {
        if is_premount(&m, &plan.tag) {
            log::info!(
                "virtio-fs tag \"{}\" already mounted at {}",
                plan.tag,
                ctx.real().display()
            );
            return Ok(Undo::default());
        }
    }
    ctx.mount_new(
        &format!("mount {FSTYPE} tag \"{}\"", plan.tag),
        &plan.tag,
        FSTYPE,
        &plan.options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn premount_matches_tag_and_fstype() {
        let m = |fstype: &str, source: &str| MountInfo {
            mount_point: PathBuf::from("/run/kata-containers/shared/containers"),
            fstype: fstype.to_owned(),
            source: source.to_owned(),
        };
        assert!(is_premount(&m("virtiofs", "kataShared"), "kataShared"));
        assert!(!is_premount(&m("virtiofs", "other"), "kataShared"));
        assert!(!is_premount(&m("tmpfs", "kataShared"), "kataShared"));
    }
}
