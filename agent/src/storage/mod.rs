//! The storages Kata's shim sends in `CreateSandboxRequest.storages` and
//! `CreateContainerRequest.storages`: one file per driver, one manager that
//! sets them up, counts who uses them and tears them down.
//!
//! Drivers, with upstream Kata's names:
//!
//! - `virtio-fs` (`virtio_fs.rs`): mounts the virtio-fs tag in `source`
//!   (`kataShared`) at the mount point, normally
//!   `/run/kata-containers/shared/containers/`. A tag the guest mounted
//!   before the agent started is adopted and left mounted on release.
//! - `local` (`local.rs`): a directory, `mode=` and `fsgid=` from the options;
//!   nothing is mounted.
//! - `ephemeral` (`ephemeral.rs`): a tmpfs with the options (`size=`,
//!   `mode=`, flags); `fsgid=` sets the group. With fstype `hugetlbfs`
//!   (`pagesize=`, `size=`), a hugetlbfs once the pool holds the pages.
//! - `bind` (`bind.rs`): `source`, which must exist, bind-mounted onto the
//!   mount point (ours: upstream has no plain bind driver).
//! - `watchable-bind` (`watchable.rs`, `watcher.rs`): a ConfigMap or Secret
//!   volume, copied from the shared directory and kept current by polling.
//!
//! - `blk`, `mmioblk`, `scsi`, `nvdimm` (`block.rs`): a hot-plugged disk,
//!   waited for by PCI path, name or SCSI address, mounted with `fstype`.
//! - `9p` (`ninep.rs`): a virtio-9p share by mount tag.
//! - `overlayfs` (`overlay.rs`): an overlay of guest directories from the
//!   `lowerdir=`/`upperdir=`/`workdir=` options.
//!
//! Any other driver is refused with [`StorageError::UnsupportedDriver`].
//!
//! Storages are keyed by mount point. The first [`StorageManager::add`] sets
//! one up; later adds of the same mount point, by the same or another owner
//! (`"sandbox"`, a container id), only count a reference once the request is
//! found compatible. [`StorageManager::release`] drops an owner's
//! references and tears down what nobody uses any more, except the
//! sandbox-scoped storages (`ephemeral`, `local`: see [`sandbox_scoped`]),
//! which stay until [`StorageManager::release_all`] (DestroySandbox) as
//! upstream keeps them; [`StorageManager::rollback`] undoes a failed
//! request's own setups, those included. The manager's lock
//! covers bookkeeping only: mounts, unmounts and directory work run without
//! it, and a second request for a mount point being set up or torn down
//! waits for that to finish.
//!
//! Mount points from the host are checked before anything is created: an
//! absolute path without `..`, strictly under an allowed root
//! ([`DEFAULT_ROOT`] unless the manager was given others), whose existing
//! part does not lead out of that root through a symlink.

mod bind;
mod block;
mod ephemeral;
mod local;
mod mountinfo;
mod ninep;
mod options;
mod overlay;
mod path;
#[cfg(test)]
pub(crate) mod testns;
mod virtio_fs;
mod watchable;
mod watcher;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use protocols::agent::Storage;
use protocols::types::FSGroupChangePolicy;

#[cfg(test)]
use mountinfo::unescape;
pub(crate) use mountinfo::{mounted_at, mounts, unescape as unescape_octal, MountInfo};
pub use options::{parse_mount_options, MountOptions};
pub(crate) use path::normalize as normalize_path;
pub(crate) use path::{NAME_MAX, PATH_MAX};

/// Driver of the virtio-fs shared directory.
pub const DRIVER_VIRTIOFS_TYPE: &str = "virtio-fs";
/// Driver of a plain directory in the guest.
pub const DRIVER_LOCAL_TYPE: &str = "local";
/// Driver of a tmpfs (Kubernetes `emptyDir` with medium `Memory`, `/dev/shm`).
pub const DRIVER_EPHEMERAL_TYPE: &str = "ephemeral";
/// Driver of a bind mount of a guest path.
pub const DRIVER_BIND_TYPE: &str = "bind";
/// Driver of a ConfigMap or Secret volume: copied in and watched.
pub const DRIVER_WATCHABLE_BIND_TYPE: &str = "watchable-bind";
/// Driver of a virtio-blk disk by PCI path.
pub const DRIVER_BLK_TYPE: &str = "blk";
/// Driver of a virtio-mmio disk by name.
pub const DRIVER_MMIO_BLK_TYPE: &str = "mmioblk";
/// Driver of a virtio-scsi disk by `target:lun`.
pub const DRIVER_SCSI_TYPE: &str = "scsi";
/// Driver of a persistent-memory disk.
pub const DRIVER_NVDIMM_TYPE: &str = "nvdimm";
/// Driver of a virtio-9p share.
pub const DRIVER_9P_TYPE: &str = "9p";
/// Driver of an overlay of guest directories.
pub const DRIVER_OVERLAYFS_TYPE: &str = "overlayfs";
/// The drivers [`StorageManager::add`] accepts.
pub const SUPPORTED_DRIVERS: &[&str] = &[
    DRIVER_VIRTIOFS_TYPE,
    DRIVER_LOCAL_TYPE,
    DRIVER_EPHEMERAL_TYPE,
    DRIVER_BIND_TYPE,
    DRIVER_WATCHABLE_BIND_TYPE,
    DRIVER_BLK_TYPE,
    DRIVER_MMIO_BLK_TYPE,
    DRIVER_SCSI_TYPE,
    DRIVER_NVDIMM_TYPE,
    DRIVER_9P_TYPE,
    DRIVER_OVERLAYFS_TYPE,
];
/// Whether storages of `driver` live as long as the sandbox, as upstream
/// Kata keeps them: memory emptyDirs, `/dev/shm`, hugepages (`ephemeral`)
/// and disk emptyDirs (`local`) outlive the containers that use them, so
/// what an init container wrote is there for the app container.
pub fn sandbox_scoped(driver: &str) -> bool {
    driver == DRIVER_EPHEMERAL_TYPE || driver == DRIVER_LOCAL_TYPE
}

/// Where the shim's virtio-fs share is mounted in the guest.
pub const SHARED_DIR: &str = "/run/kata-containers/shared/containers";

/// RemoveStaleVirtiofsShareMounts as upstream Kata does it: a stat of every
/// mount point below `shared` (not `shared` itself), which makes virtiofsd
/// drop its cached entries and fds for what no longer exists on the host
/// (kata-containers#6455). Nothing is unmounted. Returns the mount points
/// and what their stat said.
pub fn refresh_share_mounts(shared: &Path) -> io::Result<Vec<(PathBuf, io::Result<()>)>> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(shared) && m.mount_point != shared)
        .map(|m| {
            let r = fs::metadata(&m.mount_point).map(drop);
            (m.mount_point, r)
        })
        .collect())
}

/// Where mount points may lie unless the manager is told otherwise.
pub const DEFAULT_ROOT: &str = "/run/kata-containers";

/// Why a storage could not be set up or torn down. Every message names the
/// storage (mount point as the host sent it, and driver) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The driver is not one of [`SUPPORTED_DRIVERS`].
    #[error("storage \"{mount_point}\" (driver \"{driver}\"): unsupported driver (supported: {})", SUPPORTED_DRIVERS.join(", "))]
    UnsupportedDriver { mount_point: String, driver: String },
    /// The mount point failed the path checks; nothing was touched.
    #[error("storage \"{mount_point}\" (driver \"{driver}\"): invalid mount point: {reason}")]
    InvalidMountPoint {
        mount_point: String,
        driver: String,
        reason: String,
    },
    /// Another field of the request is unusable; nothing was touched.
    #[error("storage \"{mount_point}\" (driver \"{driver}\"): {reason}")]
    Invalid {
        mount_point: String,
        driver: String,
        reason: String,
    },
    /// The mount point is in use by a storage set up differently.
    #[error(
        "storage \"{mount_point}\" (driver \"{driver}\"): mount point already in use by {existing}"
    )]
    Conflict {
        mount_point: String,
        driver: String,
        existing: String,
    },
    /// The device behind the storage did not come or could not be used.
    #[error("storage \"{mount_point}\" (driver \"{driver}\"): {cause}")]
    Device {
        mount_point: String,
        driver: String,
        cause: Box<crate::device::DeviceError>,
    },
    /// A system call failed.
    #[error("storage \"{mount_point}\" (driver \"{driver}\"): {op}: {}", describe_io(.cause))]
    Io {
        mount_point: String,
        driver: String,
        op: String,
        cause: io::Error,
    },
}

impl StorageError {
    /// The status this error answers with: the request's fault, a
    /// conflict with a storage set up differently, or the kernel's.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            StorageError::UnsupportedDriver { .. }
            | StorageError::InvalidMountPoint { .. }
            | StorageError::Invalid { .. } => ttrpc::Code::INVALID_ARGUMENT,
            StorageError::Conflict { .. } => ttrpc::Code::FAILED_PRECONDITION,
            StorageError::Device { cause, .. } => cause.code(),
            StorageError::Io { .. } => ttrpc::Code::INTERNAL,
        }
    }
}

crate::error::into_status!(StorageError);

pub(crate) use crate::error::{describe_io, lower_first};

/// What a driver did, so that it can be undone.
#[derive(Debug, Clone, Default)]
struct Undo {
    /// Unmount the mount point (with `MNT_DETACH` when set).
    unmount: Option<MntFlags>,
    /// Paths created, deepest first; removed on teardown.
    created: Vec<PathBuf>,
    /// The created mount point is a directory whose contents go with it.
    remove_tree: bool,
    /// The mount point is a watched copy: stop watching first.
    watched: bool,
    /// The `watchable` directory whose tmpfs this storage counts in.
    watch_root: Option<PathBuf>,
    /// Directories removed with their contents after the unmount (an
    /// overlay's upper and work directories).
    trees: Vec<PathBuf>,
}

/// One storage request being handled: names for errors, the resolved mount
/// point, and the lock that orders directory creation against removal.
struct Ctx<'a> {
    mount_point: &'a str,
    driver: &'a str,
    real: &'a Path,
    dirs: &'a Mutex<()>,
    /// `/sys/kernel/mm/hugepages` unless a test says otherwise.
    hugepages: &'a Path,
    watch: &'a watchable::Watch,
    /// Who asks: `"sandbox"` or a container id.
    owner: &'a str,
    /// Where mount points and overlay layers may lie.
    roots: &'a [PathBuf],
    /// Where per-container directories go (`/run/kata-containers`).
    run_dir: &'a Path,
    /// Hot-plugged devices, for the block drivers.
    devices: Option<&'a crate::device::Devices>,
}

impl Ctx<'_> {
    fn real(&self) -> &Path {
        self.real
    }

    fn invalid(&self, reason: impl Into<String>) -> StorageError {
        StorageError::Invalid {
            mount_point: self.mount_point.to_owned(),
            driver: self.driver.to_owned(),
            reason: reason.into(),
        }
    }

    fn io(&self, op: impl Into<String>, cause: impl Into<io::Error>) -> StorageError {
        StorageError::Io {
            mount_point: self.mount_point.to_owned(),
            driver: self.driver.to_owned(),
            op: op.into(),
            cause: cause.into(),
        }
    }

    fn lock_dirs(&self) -> MutexGuard<'_, ()> {
        crate::lock::lock(self.dirs)
    }

    /// Creates the missing directories of `dir`, returning them deepest
    /// first; on error removes what it created.
    fn create_dirs_locked(&self, dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
        let mut missing = Vec::new();
        let mut p = dir;
        while let Err(e) = fs::symlink_metadata(p) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(self.io(format!("stat {}", p.display()), e));
            }
            missing.push(p.to_path_buf());
            p = match p.parent() {
                Some(parent) => parent,
                None => break,
            };
        }
        let mut created = Vec::new();
        for d in missing.iter().rev() {
            if let Err(e) = fs::DirBuilder::new().mode(0o755).create(d) {
                created.reverse();
                remove_paths(&created);
                return Err(self.io(format!("create directory {}", d.display()), e));
            }
            created.push(d.clone());
        }
        created.reverse();
        Ok(created)
    }

    /// Makes the mount point a directory; returns what was created.
    fn create_dir(&self) -> Result<Vec<PathBuf>, StorageError> {
        let _guard = self.lock_dirs();
        let created = self.create_dirs_locked(self.real)?;
        if created.is_empty() {
            let md = fs::metadata(self.real)
                .map_err(|e| self.io(format!("stat {}", self.real.display()), e))?;
            if !md.is_dir() {
                return Err(self.invalid(format!(
                    "{} exists and is not a directory",
                    self.real.display()
                )));
            }
        }
        Ok(created)
    }

    /// Makes the missing directories of `dir` (not the mount point);
    /// returns them deepest first.
    fn create_dirs(&self, dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
        let _guard = self.lock_dirs();
        self.create_dirs_locked(dir)
    }

    /// Makes the mount point a file (for a bind mount of a file).
    fn create_file(&self) -> Result<Vec<PathBuf>, StorageError> {
        let _guard = self.lock_dirs();
        let mut created = match self.real.parent() {
            Some(parent) => self.create_dirs_locked(parent)?,
            None => Vec::new(),
        };
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(self.real)
        {
            Ok(_) => created.insert(0, self.real.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fs::metadata(self.real).is_ok_and(|m| m.is_dir()) {
                    remove_paths(&created);
                    return Err(self.invalid(format!(
                        "{} is a directory, the bind source is a file",
                        self.real.display()
                    )));
                }
            }
            Err(e) => {
                remove_paths(&created);
                return Err(self.io(format!("create file {}", self.real.display()), e));
            }
        }
        Ok(created)
    }

    /// Removes what a failed setup created (best effort: the setup error
    /// is the one worth reporting).
    fn remove_created(&self, created: &[PathBuf]) {
        let _guard = self.lock_dirs();
        remove_paths(created);
    }

    /// mount(2) on the mount point.
    fn mount(
        &self,
        op: &str,
        source: Option<&str>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), StorageError> {
        nix::mount::mount(source, self.real, fstype, flags, data).map_err(|e| self.io(op, e))
    }

    /// Makes the mount point a directory and mounts `source` there with
    /// `options` (the propagation change by a second call); on error
    /// leaves nothing behind. The undo unmounts and removes what was
    /// created.
    fn mount_new(
        &self,
        op: &str,
        source: &str,
        fstype: &str,
        options: &MountOptions,
    ) -> Result<Undo, StorageError> {
        let created = self.create_dir()?;
        if let Err(e) = self.mount(
            op,
            Some(source),
            Some(fstype),
            options.flags,
            options.data(),
        ) {
            self.remove_created(&created);
            return Err(e);
        }
        if !options.propagation.is_empty() {
            if let Err(e) = self.mount("set propagation", None, None, options.propagation, None) {
                self.unmount_after_failure();
                self.remove_created(&created);
                return Err(e);
            }
        }
        Ok(Undo {
            unmount: Some(MntFlags::empty()),
            created,
            ..Undo::default()
        })
    }

    /// A device wait that failed, as this storage's error.
    fn device(&self, cause: crate::device::DeviceError) -> StorageError {
        StorageError::Device {
            mount_point: self.mount_point.to_owned(),
            driver: self.driver.to_owned(),
            cause: Box::new(cause),
        }
    }

    /// Undoes a mount made by a setup that then failed.
    fn unmount_after_failure(&self) {
        if let Err(e) = nix::mount::umount2(self.real, MntFlags::MNT_DETACH) {
            log::warn!(
                "storage \"{}\": unmount after failed setup: {}",
                self.mount_point,
                lower_first(e.desc())
            );
        }
    }
}

/// Removes created paths, deepest first, ignoring errors.
fn remove_paths(paths: &[PathBuf]) {
    for p in paths {
        let r = match fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => fs::remove_dir(p),
            Ok(_) => fs::remove_file(p),
            Err(_) => continue,
        };
        if let Err(e) = r {
            log::debug!("remove {}: {}", p.display(), describe_io(&e));
        }
    }
}

/// Applies `fs_group` as upstream Kata does: group ownership and group
/// permissions on the whole tree (symlinks skipped), setgid on directories.
fn set_ownership(ctx: &Ctx<'_>, s: &Storage) -> Result<(), StorageError> {
    const RW_MASK: u32 = 0o660;
    const RO_MASK: u32 = 0o440;
    const EXEC_MASK: u32 = 0o110;
    const MODE_SETGID: u32 = 0o2000;

    let Some(group) = s.fs_group.as_ref() else {
        return Ok(());
    };
    let gid = group.group_id;
    let read_only = parse_mount_options(&s.options)
        .flags
        .contains(MsFlags::MS_RDONLY);
    let base = if read_only { RO_MASK } else { RW_MASK };
    let root = ctx.real();
    let md = fs::metadata(root).map_err(|e| ctx.io(format!("stat {}", root.display()), e))?;
    if group.group_change_policy.enum_value() == Ok(FSGroupChangePolicy::OnRootMismatch)
        && md.gid() == gid
    {
        let mask = base | EXEC_MASK;
        let mode = md.permissions().mode();
        if mode & mask == mask && mode & MODE_SETGID != 0 {
            return Ok(());
        }
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md =
            fs::symlink_metadata(&p).map_err(|e| ctx.io(format!("stat {}", p.display()), e))?;
        if md.file_type().is_symlink() {
            continue;
        }
        let mut mask = base;
        if md.is_dir() {
            mask |= EXEC_MASK | MODE_SETGID;
            let entries =
                fs::read_dir(&p).map_err(|e| ctx.io(format!("read {}", p.display()), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ctx.io(format!("read {}", p.display()), e))?;
                stack.push(entry.path());
            }
        }
        std::os::unix::fs::lchown(&p, None, Some(gid))
            .map_err(|e| ctx.io(format!("set fs group {gid} on {}", p.display()), e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(md.mode() | mask))
            .map_err(|e| ctx.io(format!("set mode on {}", p.display()), e))?;
    }
    Ok(())
}

/// A validated request, ready to be applied.
enum Plan {
    VirtioFs(virtio_fs::Plan),
    Local(local::Plan),
    Ephemeral(ephemeral::Plan),
    Bind(bind::Plan),
    Watchable(watchable::Plan),
    Block(block::Plan),
    NineP(ninep::Plan),
    Overlay(overlay::Plan),
}

impl Plan {
    fn new(ctx: &Ctx<'_>, s: &Storage) -> Result<Self, StorageError> {
        Ok(match s.driver.as_str() {
            DRIVER_VIRTIOFS_TYPE => Self::VirtioFs(virtio_fs::plan(ctx, s)?),
            DRIVER_LOCAL_TYPE => Self::Local(local::plan(ctx, s)?),
            DRIVER_EPHEMERAL_TYPE => Self::Ephemeral(ephemeral::plan(ctx, s)?),
            DRIVER_BIND_TYPE => Self::Bind(bind::plan(ctx, s)?),
            DRIVER_WATCHABLE_BIND_TYPE => Self::Watchable(watchable::plan(ctx, s)?),
            DRIVER_BLK_TYPE | DRIVER_MMIO_BLK_TYPE | DRIVER_SCSI_TYPE | DRIVER_NVDIMM_TYPE => {
                Self::Block(block::plan(ctx, s)?)
            }
            DRIVER_9P_TYPE => Self::NineP(ninep::plan(ctx, s)?),
            DRIVER_OVERLAYFS_TYPE => Self::Overlay(overlay::plan(ctx, s)?),
            _ => {
                return Err(StorageError::UnsupportedDriver {
                    mount_point: s.mount_point.clone(),
                    driver: s.driver.clone(),
                })
            }
        })
    }

    fn apply(&self, ctx: &Ctx<'_>) -> Result<Undo, StorageError> {
        match self {
            Self::VirtioFs(p) => virtio_fs::apply(ctx, p),
            Self::Local(p) => local::apply(ctx, p),
            Self::Ephemeral(p) => ephemeral::apply(ctx, p),
            Self::Bind(p) => bind::apply(ctx, p),
            Self::Watchable(p) => watchable::apply(ctx, p),
            Self::Block(p) => block::apply(ctx, p),
            Self::NineP(p) => ninep::apply(ctx, p),
            Self::Overlay(p) => overlay::apply(ctx, p),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Being set up by the first add; others wait.
    Pending,
    Ready,
    /// Being torn down; adds wait.
    Releasing,
}

struct Entry {
    driver: String,
    source: String,
    fstype: String,
    options: Vec<String>,
    real: PathBuf,
    refs: BTreeMap<String, usize>,
    /// The owner whose add set it up, until a release keeps it without
    /// users: [`StorageManager::rollback`] by that owner undoes the setup.
    creator: Option<String>,
    phase: Phase,
    /// Setup order: teardown runs newest first, so nested mounts go first.
    seq: u64,
    undo: Undo,
}

impl Entry {
    #[cfg_attr(not(test), allow(dead_code))] // only `list` reads it
    fn count(&self) -> usize {
        self.refs.values().sum()
    }

    fn describe(&self) -> String {
        format!(
            "driver \"{}\", source \"{}\", fstype \"{}\", options [{}]",
            self.driver,
            self.source,
            self.fstype,
            self.options.join(",")
        )
    }

    fn compatible(&self, s: &Storage) -> bool {
        let mut a = self.options.clone();
        let mut b = s.options.clone();
        a.sort();
        b.sort();
        self.driver == s.driver && self.source == s.source && self.fstype == s.fstype && a == b
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<PathBuf, Entry>,
    next_seq: u64,
}

/// One storage to tear down, taken out of the bookkeeping.
struct Teardown {
    key: PathBuf,
    seq: u64,
    driver: String,
    real: PathBuf,
    undo: Undo,
}

/// Sets up, counts and tears down storages; see the module docs.
pub struct StorageManager {
    roots: Vec<PathBuf>,
    hugepages: PathBuf,
    watch: watchable::Watch,
    state: Mutex<State>,
    changed: Condvar,
    dirs: Mutex<()>,
    devices: Option<std::sync::Arc<crate::device::Devices>>,
}

impl Default for StorageManager {
    fn default() -> Self {
        Self::new([PathBuf::from(DEFAULT_ROOT)])
    }
}

impl StorageManager {
    /// A manager that accepts mount points strictly under one of `roots`.
    /// Roots that are not absolute, normalized paths are ignored.
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        let roots = roots
            .into_iter()
            .filter_map(|r| path::normalize(&r.to_string_lossy()).ok())
            .collect();
        Self {
            roots,
            hugepages: PathBuf::from(ephemeral::SYS_HUGEPAGES),
            watch: watchable::Watch::default(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            dirs: Mutex::new(()),
            devices: None,
        }
    }

    /// The devices the block drivers wait for.
    pub fn with_devices(mut self, devices: std::sync::Arc<crate::device::Devices>) -> Self {
        self.devices = Some(devices);
        self
    }

    /// Where per-container directories go: the first root.
    fn run_dir(&self) -> &Path {
        self.roots
            .first()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new(DEFAULT_ROOT))
    }

    /// Where the hugepage pools are sized (`nr_hugepages`): a directory
    /// laid out as `/sys/kernel/mm/hugepages`, for tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_hugepages_dir(mut self, dir: PathBuf) -> Self {
        self.hugepages = dir;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock::lock(&self.state)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets up `s` for `owner`, or counts one more reference if its mount
    /// point is already set up compatibly. Returns the normalized mount
    /// point. On error nothing is left behind and no reference is counted.
    pub fn add(&self, owner: &str, s: &Storage) -> Result<PathBuf, StorageError> {
        if !SUPPORTED_DRIVERS.contains(&s.driver.as_str()) {
            return Err(StorageError::UnsupportedDriver {
                mount_point: s.mount_point.clone(),
                driver: s.driver.clone(),
            });
        }
        let checked = path::check(&s.mount_point, &self.roots).map_err(|reason| {
            StorageError::InvalidMountPoint {
                mount_point: s.mount_point.clone(),
                driver: s.driver.clone(),
                reason: reason.to_string(),
            }
        })?;
        let ctx = Ctx {
            mount_point: &s.mount_point,
            driver: &s.driver,
            real: &checked.real,
            dirs: &self.dirs,
            hugepages: &self.hugepages,
            watch: &self.watch,
            owner,
            roots: &self.roots,
            run_dir: self.run_dir(),
            devices: self.devices.as_deref(),
        };
        let plan = Plan::new(&ctx, s)?;
        let key = checked.key;

        let mut state = self.lock();
        loop {
            match state.entries.get_mut(&key) {
                None => break,
                Some(e) if e.phase == Phase::Ready => {
                    if !e.compatible(s) {
                        return Err(StorageError::Conflict {
                            mount_point: s.mount_point.clone(),
                            driver: s.driver.clone(),
                            existing: e.describe(),
                        });
                    }
                    *e.refs.entry(owner.to_owned()).or_default() += 1;
                    return Ok(key);
                }
                Some(_) => state = self.wait(state),
            }
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.entries.insert(
            key.clone(),
            Entry {
                driver: s.driver.clone(),
                source: s.source.clone(),
                fstype: s.fstype.clone(),
                options: s.options.clone(),
                real: checked.real.clone(),
                refs: BTreeMap::from([(owner.to_owned(), 1)]),
                creator: Some(owner.to_owned()),
                phase: Phase::Pending,
                seq,
                undo: Undo::default(),
            },
        );
        drop(state);

        let result = plan.apply(&ctx).and_then(|undo| {
            if undo.unmount.is_some() {
                if let Err(e) = set_ownership(&ctx, s) {
                    if let Err(te) = self.teardown_one(&s.driver, &checked.real, &undo) {
                        log::warn!("{}", te.error());
                    }
                    return Err(e);
                }
            }
            Ok(undo)
        });

        let mut state = self.lock();
        let out = match result {
            Ok(undo) => {
                if let Some(e) = state.entries.get_mut(&key) {
                    e.undo = undo;
                    e.phase = Phase::Ready;
                }
                Ok(key)
            }
            Err(err) => {
                state.entries.remove(&key);
                Err(err)
            }
        };
        drop(state);
        self.changed.notify_all();
        out
    }

    /// Drops every reference `owner` holds and tears down the storages
    /// nobody uses any more, newest first, except the sandbox-scoped ones
    /// (see [`sandbox_scoped`]), which stay until [`Self::release_all`].
    /// Keeps going past errors and returns them. A storage that could not
    /// be unmounted stays listed with no references, for
    /// [`Self::release_all`] to retry.
    pub fn release(&self, owner: &str) -> Vec<StorageError> {
        self.drop_refs(owner, false)
    }

    /// Undoes the adds of a request that failed (`owner` is its container
    /// or `"sandbox"`): as [`Self::release`], but a sandbox-scoped storage
    /// that this owner set up and nobody else used goes too, so that a
    /// refused request leaves nothing behind.
    pub fn rollback(&self, owner: &str) -> Vec<StorageError> {
        self.drop_refs(owner, true)
    }

    fn drop_refs(&self, owner: &str, rollback: bool) -> Vec<StorageError> {
        let mut state = self.lock();
        while state
            .entries
            .values()
            .any(|e| e.phase == Phase::Pending && e.refs.contains_key(owner))
        {
            state = self.wait(state);
        }
        let mut work = Vec::new();
        for (key, e) in state.entries.iter_mut() {
            if e.phase != Phase::Ready || e.refs.remove(owner).is_none() {
                continue;
            }
            if e.refs.is_empty() {
                let own_setup = rollback && e.creator.as_deref() == Some(owner);
                if sandbox_scoped(&e.driver) && !own_setup {
                    // Kept for the pod's next container (an init
                    // container's output is the app container's input).
                    e.creator = None;
                    continue;
                }
                e.phase = Phase::Releasing;
                work.push(Teardown {
                    key: key.clone(),
                    seq: e.seq,
                    driver: e.driver.clone(),
                    real: e.real.clone(),
                    undo: e.undo.clone(),
                });
            }
        }
        drop(state);
        self.run_teardowns(work)
    }

    /// Tears down every storage, whoever holds it (DestroySandbox, agent
    /// shutdown). Returns the errors; what could not be unmounted stays
    /// listed with no references.
    pub fn release_all(&self) -> Vec<StorageError> {
        let mut state = self.lock();
        while state.entries.values().any(|e| e.phase != Phase::Ready) {
            state = self.wait(state);
        }
        let mut work = Vec::new();
        for (key, e) in state.entries.iter_mut() {
            e.refs.clear();
            e.phase = Phase::Releasing;
            work.push(Teardown {
                key: key.clone(),
                seq: e.seq,
                driver: e.driver.clone(),
                real: e.real.clone(),
                undo: e.undo.clone(),
            });
        }
        drop(state);
        self.run_teardowns(work)
    }

    /// Remounts an ephemeral storage set up earlier with the options of `s`
    /// (UpdateEphemeralMounts: `["remount", "size=<n>M"]` from the Go
    /// runtime). Only ephemeral mount points this manager set up are
    /// accepted; an empty option list changes nothing, as upstream. The
    /// options the storage was set up with stay its identity: later adds
    /// with them are still compatible. Flags set up then and not named now
    /// are kept (a bare remount would clear `nosuid`, `nodev`, ...).
    pub fn update_ephemeral(&self, s: &Storage) -> Result<(), StorageError> {
        let invalid = |reason: String| StorageError::Invalid {
            mount_point: s.mount_point.clone(),
            driver: s.driver.clone(),
            reason,
        };
        if s.driver != DRIVER_EPHEMERAL_TYPE {
            return Err(invalid(format!(
                "only \"{DRIVER_EPHEMERAL_TYPE}\" storages can be updated"
            )));
        }
        let checked = path::check(&s.mount_point, &self.roots).map_err(|reason| {
            StorageError::InvalidMountPoint {
                mount_point: s.mount_point.clone(),
                driver: s.driver.clone(),
                reason: reason.to_string(),
            }
        })?;
        let (real, fstype, set_up_with) = match self.lock().entries.get(&checked.key) {
            Some(e) if e.phase == Phase::Ready && e.driver == DRIVER_EPHEMERAL_TYPE => {
                (e.real.clone(), e.fstype.clone(), e.options.clone())
            }
            _ => return Err(invalid("no ephemeral storage is set up there".into())),
        };
        if s.options.is_empty() {
            return Ok(());
        }
        let fstype = if fstype.is_empty() {
            "tmpfs".to_owned()
        } else {
            fstype
        };
        let requested = parse_mount_options(&options::without_keys(&s.options, &["fsgid"]));
        // Later options win: the request's over those of the setup.
        let both: Vec<String> = set_up_with.iter().chain(&s.options).cloned().collect();
        let mut flags = parse_mount_options(&options::without_keys(&both, &["fsgid"])).flags;
        flags.remove(MsFlags::MS_BIND | MsFlags::MS_REC);
        if requested.data.contains('\0') {
            return Err(invalid("options contain a nul byte".into()));
        }
        nix::mount::mount(
            Some(fstype.as_str()),
            &real,
            Some(fstype.as_str()),
            flags | MsFlags::MS_REMOUNT,
            requested.data(),
        )
        .map_err(|e| StorageError::Io {
            mount_point: s.mount_point.clone(),
            driver: s.driver.clone(),
            op: format!("remount {fstype}"),
            cause: io::Error::from(e),
        })
    }

    /// Mount points and their reference counts, sorted by path (for tests
    /// and diagnostics: the agent need not call it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn list(&self) -> Vec<(PathBuf, usize)> {
        let state = self.lock();
        let mut out: Vec<(PathBuf, usize)> = state
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.count()))
            .collect();
        out.sort();
        out
    }

    fn run_teardowns(&self, mut work: Vec<Teardown>) -> Vec<StorageError> {
        work.sort_by_key(|t| std::cmp::Reverse(t.seq));
        let mut errors = Vec::new();
        for t in work {
            let result = self.teardown_one(&t.driver, &t.real, &t.undo);
            let mut state = self.lock();
            match result {
                Ok(()) => {
                    state.entries.remove(&t.key);
                }
                Err(TeardownError::Leftover(e)) => {
                    state.entries.remove(&t.key);
                    errors.push(e);
                }
                Err(TeardownError::StillMounted(e)) => {
                    if let Some(entry) = state.entries.get_mut(&t.key) {
                        entry.phase = Phase::Ready;
                    }
                    errors.push(e);
                }
            }
            drop(state);
            self.changed.notify_all();
        }
        errors
    }

    /// Unmounts and removes what a setup made.
    fn teardown_one(&self, driver: &str, real: &Path, undo: &Undo) -> Result<(), TeardownError> {
        let shown = real.to_string_lossy();
        let ctx = Ctx {
            mount_point: &shown,
            driver,
            real,
            dirs: &self.dirs,
            hugepages: &self.hugepages,
            watch: &self.watch,
            owner: "",
            roots: &self.roots,
            run_dir: self.run_dir(),
            devices: self.devices.as_deref(),
        };
        // A watched copy the poll thread had to replace by a bind mount.
        let fell_back = undo.watched && self.watch.watcher.unwatch(real);
        let unmount = undo.unmount.or(fell_back.then_some(MntFlags::MNT_DETACH));
        if let Some(flags) = unmount {
            match nix::mount::umount2(real, flags) {
                Ok(()) => {}
                Err(Errno::EBUSY) if !flags.contains(MntFlags::MNT_DETACH) => {
                    log::warn!("storage \"{shown}\": busy, detaching it");
                    nix::mount::umount2(real, MntFlags::MNT_DETACH)
                        .map_err(|e| TeardownError::StillMounted(ctx.io("unmount", e)))?;
                }
                // Already gone: someone else unmounted it; still remove
                // what we created.
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => {
                    log::warn!("storage \"{shown}\": was not mounted any more");
                }
                Err(e) => return Err(TeardownError::StillMounted(ctx.io("unmount", e))),
            }
        }
        let mut created = undo.created.as_slice();
        if let Some((first, rest)) = created.split_first() {
            if first == real {
                created = rest;
                // The tree of a `local` volume can be large: removed without
                // the directory lock (nobody else creates inside it).
                let removed = if undo.remove_tree {
                    remove_tree(&ctx, real)
                } else {
                    let _guard = ctx.lock_dirs();
                    match fs::symlink_metadata(real) {
                        Ok(md) if md.is_dir() => fs::remove_dir(real),
                        Ok(_) => fs::remove_file(real),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(e),
                    }
                    .map_err(|e| ctx.io(format!("remove {}", real.display()), e))
                };
                if let Err(e) = removed {
                    return Err(TeardownError::Leftover(e));
                }
            }
        }
        for t in &undo.trees {
            remove_tree(&ctx, t).map_err(TeardownError::Leftover)?;
        }
        // Parents we created may be shared with other storages by now:
        // remove them only if empty.
        {
            let _guard = ctx.lock_dirs();
            remove_paths(created);
        }
        if let Some(root) = &undo.watch_root {
            self.watch
                .release(&ctx, root)
                .map_err(TeardownError::Leftover)?;
        }
        Ok(())
    }

    /// Whether a poll thread watches sources (for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn watching(&self) -> bool {
        self.watch.watcher.polling()
    }
}

/// Removes a directory and its contents, refusing if anything is mounted
/// inside it (removing files there would reach into the mount).
fn remove_tree(ctx: &Ctx<'_>, dir: &Path) -> Result<(), StorageError> {
    let inside = mounts()
        .map_err(|e| ctx.io("read /proc/self/mountinfo", e))?
        .into_iter()
        .find(|m| m.mount_point.starts_with(dir));
    if let Some(m) = inside {
        return Err(ctx.invalid(format!(
            "not removing {}: {} is mounted inside it",
            dir.display(),
            m.mount_point.display()
        )));
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(ctx.io(format!("remove {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

enum TeardownError {
    /// The unmount failed: the storage is still in place.
    StillMounted(StorageError),
    /// Unmounted, but something it created could not be removed.
    Leftover(StorageError),
}

impl TeardownError {
    fn error(&self) -> &StorageError {
        match self {
            Self::StillMounted(e) | Self::Leftover(e) => e,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod block_tests;
