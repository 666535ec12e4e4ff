//! `local`: a directory in the guest shared by the containers of a pod
//! (Kubernetes `emptyDir` on the guest's disk). Nothing is mounted; the
//! options give its `mode=` (octal) and `fsgid=` (group, adds setgid).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use protocols::agent::Storage;

use super::options::option_value;
use super::{Ctx, StorageError, Undo};

const MODE_SETGID: u32 = 0o2000;

pub(super) struct Plan {
    mode: Option<u32>,
    fsgid: Option<u32>,
}

/// Parses `fsgid=`, shared with the `ephemeral` driver.
pub(super) fn parse_fsgid(ctx: &Ctx<'_>, options: &[String]) -> Result<Option<u32>, StorageError> {
    option_value(options, "fsgid")
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| ctx.invalid(format!("option fsgid={v}: not a group id")))
        })
        .transpose()
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    let mode = option_value(&s.options, "mode")
        .map(|v| match u32::from_str_radix(v, 8) {
            Ok(m) if m <= 0o7777 => Ok(m),
            _ => Err(ctx.invalid(format!("option mode={v}: not an octal mode"))),
        })
        .transpose()?;
    let fsgid = parse_fsgid(ctx, &s.options)?;
    Ok(Plan { mode, fsgid })
}

/// Gives the mount point the group `gid` and the setgid bit, so files
/// created inside inherit the group.
pub(super) fn apply_fsgid(ctx: &Ctx<'_>, gid: u32) -> Result<(), StorageError> {
    let real = ctx.real();
    std::os::unix::fs::chown(real, None, Some(gid))
        .map_err(|e| ctx.io(format!("set group {gid}"), e))?;
    let md = fs::metadata(real).map_err(|e| ctx.io("stat", e))?;
    let mode = md.permissions().mode() & 0o7777;
    fs::set_permissions(real, fs::Permissions::from_mode(mode | MODE_SETGID))
        .map_err(|e| ctx.io("set setgid bit", e))
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    let created = ctx.create_dir()?;
    let result = (|| {
        if let Some(mode) = plan.mode {
            let mode = if plan.fsgid.is_some() {
                mode | MODE_SETGID
            } else {
                mode
            };
            fs::set_permissions(ctx.real(), fs::Permissions::from_mode(mode))
                .map_err(|e| ctx.io(format!("set mode {mode:o}"), e))?;
        }
        if let Some(gid) = plan.fsgid {
            apply_fsgid(ctx, gid)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        ctx.remove_created(&created);
        return Err(e);
    }
    let remove_tree = !created.is_empty();
    Ok(Undo {
        unmount: None,
        created,
        remove_tree,
        ..Undo::default()
    })
}
