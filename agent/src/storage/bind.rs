//! `bind`: bind-mounts `source`, an existing guest path, onto the mount
//! point (a directory or an empty file, matching the source). `rbind`
//! takes the mounts below the source along; `ro`, `nosuid`, `nodev` and
//! `noexec` are applied by the remount a bind mount needs for them.

use std::fs;
use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags};
use protocols::agent::Storage;

use super::options::{parse_mount_options, BIND_REMOUNT_FLAGS};
use super::{describe_io, path, Ctx, MountOptions, StorageError, Undo};

pub(super) struct Plan {
    source: PathBuf,
    /// `source` as mount(2) gets it (it came from a string: valid UTF-8).
    source_str: String,
    is_dir: bool,
    options: MountOptions,
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    let source = path::normalize(&s.source)
        .map_err(|reason| ctx.invalid(format!("source \"{}\": {reason}", s.source)))?;
    let md = fs::metadata(&source).map_err(|e| {
        ctx.invalid(format!(
            "source \"{}\": {}",
            source.display(),
            describe_io(&e)
        ))
    })?;
    let options = parse_mount_options(&s.options);
    Ok(Plan {
        source_str: source.to_string_lossy().into_owned(),
        source,
        is_dir: md.is_dir(),
        options,
    })
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    let created = if plan.is_dir {
        ctx.create_dir()?
    } else {
        ctx.create_file()?
    };
    let recursive = plan.options.flags.contains(MsFlags::MS_REC);
    let op = format!("bind mount {}", plan.source.display());
    let flags = MsFlags::MS_BIND | (plan.options.flags & MsFlags::MS_REC);
    if let Err(e) = ctx.mount(&op, Some(&plan.source_str), None, flags, None) {
        ctx.remove_created(&created);
        return Err(e);
    }
    let after = (|| {
        let remount = plan.options.flags & BIND_REMOUNT_FLAGS;
        if !remount.is_empty() {
            ctx.mount(
                "remount bind mount",
                None,
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | remount,
                None,
            )?;
        }
        if !plan.options.propagation.is_empty() {
            ctx.mount(
                "set propagation",
                None,
                None,
                plan.options.propagation,
                None,
            )?;
        }
        Ok(())
    })();
    if let Err(e) = after {
        ctx.unmount_after_failure();
        ctx.remove_created(&created);
        return Err(e);
    }
    Ok(Undo {
        // A recursive bind carries submounts: detach takes them all.
        unmount: Some(if recursive {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        }),
        created,
        remove_tree: false,
        ..Undo::default()
    })
}
