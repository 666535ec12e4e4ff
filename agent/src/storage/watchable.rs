//! `watchable-bind`: a Kubernetes ConfigMap or Secret volume. The source is
//! in the shared directory (virtio-fs, which carries no inotify events);
//! the mount point is `<shared>/watchable/<name>` (Go runtime) or
//! `<shared>/passthrough/watchable/<name>` (runtime-rs), and the container
//! bind-mounts it. As upstream Kata, the source is copied there and
//! polled, so that the kubelet's updates reach the container
//! ([`super::watcher`]); a source past the watch limits is bind-mounted
//! instead, as upstream does.
//!
//! The `watchable` directory gets a tmpfs of its own while any watchable
//! storage lives in it (the shared directory is read-only from the guest),
//! and the source must lie in the directory that holds `watchable/`,
//! outside it, after symlinks are resolved.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use protocols::agent::Storage;

use super::options::parse_mount_options;
use super::watcher::{bind_fallback, Mirror, SyncError, Watcher};
use super::{describe_io, path, remove_paths, Ctx, StorageError, Undo};

/// The directory the mount points live in, directly.
const WATCH_DIR: &str = "watchable";

pub(super) struct Plan {
    source: PathBuf,
    is_dir: bool,
    /// The `watchable` directory (resolved): where the tmpfs goes.
    root: PathBuf,
    read_only: bool,
}

/// The watcher and the tmpfs mounts of the `watchable` directories.
#[derive(Default)]
pub(super) struct Watch {
    pub(super) watcher: Watcher,
    roots: Mutex<HashMap<PathBuf, Root>>,
}

struct Root {
    users: usize,
    created: Vec<PathBuf>,
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Root>> {
        crate::lock::lock(&self.roots)
    }

    /// Counts one more storage in `root`, mounting its tmpfs for the first.
    fn acquire(&self, ctx: &Ctx<'_>, root: &Path) -> Result<(), StorageError> {
        let mut roots = self.lock();
        if let Some(r) = roots.get_mut(root) {
            r.users += 1;
            return Ok(());
        }
        let created = {
            let _guard = ctx.lock_dirs();
            ctx.create_dirs_locked(root)?
        };
        let mounted = nix::mount::mount(
            Some("tmpfs"),
            root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        );
        if let Err(e) = mounted {
            ctx.remove_created(&created);
            return Err(ctx.io(format!("mount tmpfs on {}", root.display()), e));
        }
        roots.insert(root.to_path_buf(), Root { users: 1, created });
        Ok(())
    }

    /// Counts one storage less in `root`; the last unmounts its tmpfs.
    pub(super) fn release(&self, ctx: &Ctx<'_>, root: &Path) -> Result<(), StorageError> {
        let mut roots = self.lock();
        let Some(r) = roots.get_mut(root) else {
            return Ok(());
        };
        r.users -= 1;
        if r.users > 0 {
            return Ok(());
        }
        match nix::mount::umount2(root, MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(Errno::EBUSY) => {
                log::warn!(
                    "storage \"{}\": {} busy, detaching it",
                    ctx.mount_point,
                    root.display()
                );
                nix::mount::umount2(root, MntFlags::MNT_DETACH)
                    .map_err(|e| ctx.io(format!("unmount {}", root.display()), e))?;
            }
            Err(e) => {
                r.users += 1;
                return Err(ctx.io(format!("unmount {}", root.display()), e));
            }
        }
        if let Some(r) = roots.remove(root) {
            let _guard = ctx.lock_dirs();
            remove_paths(&r.created);
        }
        Ok(())
    }
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    if !s.fstype.is_empty() && s.fstype != "bind" {
        return Err(ctx.invalid(format!(
            "fstype \"{}\" is not supported (only bind)",
            s.fstype
        )));
    }
    let real = ctx.real();
    let root = match real.parent() {
        Some(p) if p.file_name().is_some_and(|n| n == WATCH_DIR) => p.to_path_buf(),
        _ => {
            return Err(ctx.invalid(format!(
                "mount point must be directly in a \"{WATCH_DIR}\" directory"
            )))
        }
    };
    let Some(shared) = root.parent() else {
        return Err(ctx.invalid("no shared directory above the mount point"));
    };
    let source = path::normalize(&s.source)
        .map_err(|reason| ctx.invalid(format!("source \"{}\": {reason}", s.source)))?;
    let resolved = fs::canonicalize(&source).map_err(|e| {
        ctx.invalid(format!(
            "source \"{}\": {}",
            source.display(),
            describe_io(&e)
        ))
    })?;
    let shared_real = fs::canonicalize(shared).unwrap_or_else(|_| shared.to_path_buf());
    if !resolved.starts_with(&shared_real) || resolved == shared_real || resolved.starts_with(&root)
    {
        return Err(ctx.invalid(format!(
            "source \"{}\" is not in the shared directory {} (resolved: {})",
            s.source,
            shared.display(),
            resolved.display()
        )));
    }
    let md = fs::metadata(&resolved).map_err(|e| {
        ctx.invalid(format!(
            "source \"{}\": {}",
            resolved.display(),
            describe_io(&e)
        ))
    })?;
    if !md.is_dir() && !md.is_file() {
        return Err(ctx.invalid(format!(
            "source \"{}\" is neither a directory nor a file",
            s.source
        )));
    }
    Ok(Plan {
        source: resolved,
        is_dir: md.is_dir(),
        root,
        read_only: parse_mount_options(&s.options)
            .flags
            .contains(MsFlags::MS_RDONLY),
    })
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    ctx.watch.acquire(ctx, &plan.root)?;
    let release_root = || {
        if let Err(e) = ctx.watch.release(ctx, &plan.root) {
            log::warn!("{e}");
        }
    };
    let created = match if plan.is_dir {
        ctx.create_dir()
    } else {
        ctx.create_file()
    } {
        Ok(c) => c,
        Err(e) => {
            release_root();
            return Err(e);
        }
    };
    let undo_target = || {
        if plan.is_dir {
            if let Err(e) = fs::remove_dir_all(ctx.real()) {
                log::debug!("remove {}: {}", ctx.real().display(), describe_io(&e));
            }
        }
        ctx.remove_created(&created);
        release_root();
    };
    let real = ctx.real().to_path_buf();
    let mut mirror = Mirror::new(plan.source.clone(), real.clone(), plan.is_dir);
    let unmount = match mirror.sync() {
        Ok(_) => {
            if let Err(e) =
                ctx.watch
                    .watcher
                    .watch(real.clone(), mirror, ctx.mount_point, plan.read_only)
            {
                undo_target();
                return Err(ctx.io("start the watch thread", e));
            }
            None
        }
        Err(SyncError::Limit(why)) => {
            // As upstream: past the limits, a bind mount of the source.
            log::warn!(
                "storage \"{}\": {why}: not watched, source bind-mounted",
                ctx.mount_point
            );
            if let Err(e) = bind_fallback(&plan.source, &real, plan.read_only) {
                undo_target();
                return Err(ctx.io(
                    format!("{why}; bind mount {} instead", plan.source.display()),
                    e,
                ));
            }
            Some(MntFlags::empty())
        }
        Err(SyncError::Io { op, path, cause }) => {
            undo_target();
            return Err(ctx.io(format!("copy into the mount point: {op} {path}"), cause));
        }
    };
    Ok(Undo {
        unmount,
        created,
        remove_tree: plan.is_dir,
        watched: unmount.is_none(),
        watch_root: Some(plan.root.clone()),
        ..Undo::default()
    })
}
