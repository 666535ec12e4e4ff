//! `ephemeral`: a tmpfs at the mount point (Kubernetes `emptyDir` with
//! medium `Memory`, the sandbox's `/dev/shm`). Options are tmpfs options
//! and flags (`size=`, `mode=`, `nosuid`, ...); `fsgid=` sets the group.

use nix::mount::{MntFlags, MsFlags};
use protocols::agent::Storage;

use super::local::{apply_fsgid, parse_fsgid};
use super::options::{parse_mount_options, without_keys};
use super::{Ctx, MountOptions, StorageError, Undo};

const FSTYPE: &str = "tmpfs";

/// Flags that would turn the tmpfs mount into something else: dropped.
const IGNORED: MsFlags = MsFlags::MS_BIND
    .union(MsFlags::MS_REC)
    .union(MsFlags::MS_REMOUNT);

pub(super) struct Plan {
    source: String,
    options: MountOptions,
    fsgid: Option<u32>,
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    if !s.fstype.is_empty() && s.fstype != FSTYPE {
        return Err(ctx.invalid(format!(
            "fstype \"{}\" is not supported (only {FSTYPE})",
            s.fstype
        )));
    }
    if s.source.contains('\0') {
        return Err(ctx.invalid("source contains a nul byte"));
    }
    let fsgid = parse_fsgid(ctx, &s.options)?;
    let mut options = parse_mount_options(&without_keys(&s.options, &["fsgid"]));
    options.flags.remove(IGNORED);
    if options.data.contains('\0') {
        return Err(ctx.invalid("options contain a nul byte"));
    }
    let source = if s.source.is_empty() {
        FSTYPE.to_owned()
    } else {
        s.source.clone()
    };
    Ok(Plan {
        source,
        options,
        fsgid,
    })
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    let created = ctx.create_dir()?;
    if let Err(e) = ctx.mount(
        "mount tmpfs",
        Some(&plan.source),
        Some(FSTYPE),
        plan.options.flags,
        plan.options.data(),
    ) {
        ctx.remove_created(&created);
        return Err(e);
    }
    let after = (|| {
        if !plan.options.propagation.is_empty() {
            ctx.mount(
                "set propagation",
                None,
                None,
                plan.options.propagation,
                None,
            )?;
        }
        if let Some(gid) = plan.fsgid {
            apply_fsgid(ctx, gid)?;
        }
        Ok(())
    })();
    if let Err(e) = after {
        ctx.unmount_after_failure();
        ctx.remove_created(&created);
        return Err(e);
    }
    Ok(Undo {
        unmount: Some(MntFlags::empty()),
        created,
        remove_tree: false,
    })
}
