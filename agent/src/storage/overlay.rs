//! `overlayfs`: an overlay of guest directories, as upstream's driver
//! takes it: `lowerdir=`, `upperdir=` and `workdir=` in the options (a
//! read-only overlay has only lower layers). With the option
//! `io.katacontainers.fs-opt.overlay-rw`, the upper and work directories
//! are made for the container under `/run/kata-containers/<id>/`.
//!
//! Every layer must be an absolute path without `..` under one of the
//! manager's roots, so that the host cannot overlay what the guest keeps
//! elsewhere. Options Kata adds for itself (`io.katacontainers.*`) are
//! not passed to the kernel.

use std::path::{Path, PathBuf};

use protocols::agent::Storage;

use super::options::filesystem_options;
use super::{path, Ctx, MountOptions, StorageError, Undo};

const FSTYPE: &str = "overlay";
/// Upstream's marker: make upper and work directories for the container.
pub const OVERLAY_RW: &str = "io.katacontainers.fs-opt.overlay-rw";
const KATA_OPTION: &str = "io.katacontainers.";

pub(super) struct Plan {
    options: MountOptions,
    /// Upper and work directories to make first (overlay-rw).
    make: Vec<PathBuf>,
}

fn check_layer(ctx: &Ctx<'_>, key: &str, p: &str) -> Result<(), StorageError> {
    if p.is_empty() || !Path::new(p).is_absolute() {
        return Err(ctx.invalid(format!("{key}: {p:?} is not an absolute path")));
    }
    path::check(p, ctx.roots)
        .map(drop)
        .map_err(|reason| ctx.invalid(format!("{key}: {p:?}: {reason}")))
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    if !s.fstype.is_empty() && s.fstype != FSTYPE {
        return Err(ctx.invalid(format!(
            "fstype \"{}\" is not supported (only {FSTYPE})",
            s.fstype
        )));
    }
    let rw = s.options.iter().any(|o| o == OVERLAY_RW);
    let kept: Vec<String> = s
        .options
        .iter()
        .filter(|o| !o.starts_with(KATA_OPTION))
        .cloned()
        .collect();
    let mut options = filesystem_options(&kept);
    let mut make = Vec::new();
    if rw {
        if ctx.owner == crate::sandbox::SANDBOX_OWNER {
            return Err(ctx.invalid(format!("{OVERLAY_RW} needs a container")));
        }
        let base = ctx.run_dir.join(ctx.owner);
        let (upper, work) = (base.join("upper"), base.join("work"));
        for (k, d) in [("upperdir", &upper), ("workdir", &work)] {
            if !options.data.is_empty() {
                options.data.push(',');
            }
            options.data.push_str(&format!("{k}={}", d.display()));
        }
        make = vec![upper, work];
    }
    let mut lower = false;
    for o in options.data.split(',').filter(|o| !o.is_empty()) {
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        match k {
            "lowerdir" => {
                lower = true;
                for layer in v.split(':') {
                    check_layer(ctx, k, layer)?;
                }
            }
            "upperdir" | "workdir" => check_layer(ctx, k, v)?,
            _ => {}
        }
    }
    if !lower {
        return Err(ctx.invalid("no lowerdir= in the options"));
    }
    Ok(Plan { options, make })
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    let mut made = Vec::new();
    for d in &plan.make {
        match ctx.create_dirs(d) {
            Ok(mut c) => made.append(&mut c),
            Err(e) => {
                ctx.remove_created(&made);
                return Err(e);
            }
        }
    }
    match ctx.mount_new("mount overlay", FSTYPE, FSTYPE, &plan.options) {
        Ok(mut undo) => {
            // Upper and work (the container's writable layer) go with
            // their contents; then the parents made for them, if empty.
            undo.trees = plan.make.clone();
            made.retain(|p| !plan.make.contains(p));
            made.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            undo.created.extend(made);
            Ok(undo)
        }
        Err(e) => {
            ctx.remove_created(&made);
            Err(e)
        }
    }
}
