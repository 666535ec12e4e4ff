//! Root filesystem setup, run by the container init inside its new mount
//! namespace: spec mounts, devices, `pivot_root` (or `MS_MOVE` + chroot on
//! an initramfs root), masked and readonly paths, readonly root.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, chown, chroot, pivot_root, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::error::{Context, SetupError, SetupResult};
use crate::utils::secure_join;

const NONE: Option<&str> = None;

/// Parsed mount options: flags to set, propagation flags to apply after the
/// mount, and the filesystem-specific data.
#[derive(Debug, PartialEq)]
pub(crate) struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
}

/// Splits OCI mount options into flags and data, as mount(8) reads them.
pub(crate) fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
    };
    for opt in options {
        let (clear, flag) = match opt.as_str() {
            "defaults" => (false, MsFlags::empty()),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "suid" => (true, MsFlags::MS_NOSUID),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "dev" => (true, MsFlags::MS_NODEV),
            "nodev" => (false, MsFlags::MS_NODEV),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "atime" => (true, MsFlags::MS_NOATIME),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "lazytime" => (false, MsFlags::MS_LAZYTIME),
            "nolazytime" => (true, MsFlags::MS_LAZYTIME),
            "silent" => (false, MsFlags::MS_SILENT),
            "loud" => (true, MsFlags::MS_SILENT),
            other => {
                if let Some(p) = propagation_flags(other) {
                    out.propagation.push(p);
                } else {
                    out.data.push(other.to_string());
                }
                continue;
            }
        };
        if clear {
            out.flags.remove(flag);
        } else {
            out.flags.insert(flag);
        }
    }
    out
}

/// Propagation flags for `shared`, `rslave`, ... (also `rootfsPropagation`).
pub(crate) fn propagation_flags(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Everything from the spec that the rootfs setup needs.
pub(crate) struct RootfsConfig<'a> {
    pub rootfs: &'a Path,
    pub spec: &'a Spec,
    /// In a new user namespace: no mknod, bind devices from the host.
    pub in_userns: bool,
    /// Also a new cgroup namespace: cgroup mounts show the container's root.
    pub cgroupns: bool,
    /// Skip `pivot_root`, use `MS_MOVE` + chroot (as on an initramfs).
    pub no_pivot: bool,
    /// Runs after the mounts, before `pivot_root` (createRuntime and
    /// createContainer hooks).
    pub before_pivot: &'a dyn Fn() -> SetupResult<()>,
}

/// Sets up the whole root filesystem and leaves the process in it, at `/`.
pub(crate) fn setup(cfg: &RootfsConfig) -> SetupResult<()> {
    let linux = cfg.spec.linux().as_ref();
    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some(p) if !p.is_empty() => Some(propagation_flags(p).ok_or_else(|| {
            SetupError::new(format!("rootfs propagation {p:?}"), "unknown value")
        })?),
        _ => None,
    };
    // Our mounts must not reach the parent namespace.
    mount(NONE, "/", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE).ctx(|| "make / rslave")?;
    let rootfs = cfg.rootfs;
    mount(
        Some(rootfs),
        rootfs,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .ctx(|| format!("bind rootfs {}", rootfs.display()))?;

    let mounts = cfg.spec.mounts().as_deref().unwrap_or_default();
    let mut dev_is_bind = false;
    for m in mounts {
        if m.destination() == Path::new("/dev") && is_bind(m) {
            dev_is_bind = true;
        }
        mount_entry(cfg, m)?;
    }
    if !dev_is_bind {
        create_default_devices(cfg)?;
        create_dev_symlinks(rootfs)?;
    }
    if let Some(devices) = linux.and_then(|l| l.devices().as_ref()) {
        for d in devices {
            create_device(cfg, d)?;
        }
    }

    (cfg.before_pivot)()?;
    enter_root(rootfs, cfg.no_pivot)?;

    if let Some(flags) = propagation {
        mount(NONE, "/", NONE, flags, NONE).ctx(|| "set rootfs propagation")?;
    }
    if let Some(l) = linux {
        for p in l.masked_paths().as_deref().unwrap_or_default() {
            mask_path(p)?;
        }
        for p in l.readonly_paths().as_deref().unwrap_or_default() {
            readonly_path(p)?;
        }
    }
    if cfg.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_readonly(Path::new("/"), MsFlags::empty()).ctx(|| "remount / readonly")?;
    }
    Ok(())
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o == "bind" || o == "rbind")
}

/// Creates the mount point: a directory, or a file when binding a file.
fn create_mount_point(dest: &Path, file: bool) -> std::io::Result<()> {
    if file {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        if dest.symlink_metadata().is_err() {
            fs::File::create(dest)?;
        }
        Ok(())
    } else {
        fs::create_dir_all(dest)
    }
}

fn mount_entry(cfg: &RootfsConfig, m: &Mount) -> SetupResult<()> {
    let dest_in = m.destination();
    let dest = secure_join(cfg.rootfs, dest_in)
        .ctx(|| format!("mount destination {}", dest_in.display()))?;
    let options = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let what = |step: &str| format!("mount {} on {}: {step}", typ, dest_in.display());

    if is_bind(m) {
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| SetupError::new(what("bind"), "no source"))?;
        let meta = fs::metadata(src).ctx(|| format!("bind source {}", src.display()))?;
        create_mount_point(&dest, !meta.is_dir()).ctx(|| what("create mount point"))?;
        let rec = options.flags & MsFlags::MS_REC;
        mount(Some(src), &dest, NONE, MsFlags::MS_BIND | rec, NONE)
            .ctx(|| format!("bind {} on {}", src.display(), dest_in.display()))?;
        let extra = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            remount_bind(&dest, extra).ctx(|| what("remount with options"))?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        create_mount_point(&dest, false).ctx(|| what("create mount point"))?;
        mount_cgroup(cfg, &dest, &options).map_err(|e| SetupError::new(what(&e.what), e.cause))?;
    } else {
        create_mount_point(&dest, false).ctx(|| what("create mount point"))?;
        let source = m
            .source()
            .as_ref()
            .map(|s| s.as_os_str().to_owned())
            .unwrap_or_else(|| typ.into());
        let data = options.data.join(",");
        let data = (!data.is_empty()).then_some(data.as_str());
        let flags = options.flags & !MsFlags::MS_REMOUNT;
        mount(Some(source.as_os_str()), &dest, Some(typ), flags, data).ctx(|| what("mount"))?;
    }
    for p in &options.propagation {
        mount(NONE, &dest, NONE, *p, NONE).ctx(|| what("set propagation"))?;
    }
    Ok(())
}

/// Remounts a bind mount with `flags`, keeping the flags the kernel locks
/// (nosuid, nodev, noexec, atime) when we are in a user namespace.
fn remount_bind(dest: &Path, flags: MsFlags) -> nix::Result<()> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(NONE, dest, NONE, base | flags, NONE) {
        Err(Errno::EPERM) => {
            let locked = locked_flags(dest)?;
            mount(NONE, dest, NONE, base | flags | locked, NONE)
        }
        r => r,
    }
}

fn locked_flags(path: &Path) -> nix::Result<MsFlags> {
    let st = statvfs(path)?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs_flag) {
            out |= ms_flag;
        }
    }
    Ok(out)
}

fn remount_readonly(path: &Path, extra: MsFlags) -> nix::Result<()> {
    remount_bind(path, MsFlags::MS_RDONLY | extra)
}

/// Mounts the cgroup filesystem: cgroup2 on a unified host; on v1 a tmpfs
/// with one cgroup mount per controller hierarchy of the host.
fn mount_cgroup(cfg: &RootfsConfig, dest: &Path, options: &MountOptions) -> SetupResult<()> {
    let flags = options.flags & !(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_REC);
    if crate::cgroups::layout() == crate::cgroups::Layout::V2 {
        return mount(Some("cgroup2"), dest, Some("cgroup2"), flags, NONE)
            .map_err(|e| SetupError::new("mount cgroup2", crate::utils::errno_text(e)));
    }
    let tmpfs_flags = flags & !MsFlags::MS_RDONLY;
    mount(
        Some("tmpfs"),
        dest,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )
    .ctx(|| "mount tmpfs")?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ctx(|| "read mountinfo")?;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        if post.next() != Some("cgroup") {
            continue;
        }
        let Some(point) = pre.split(' ').nth(4) else {
            continue;
        };
        // Only the host's hierarchies, not mounts made under a rootfs.
        let point = Path::new(point);
        if point.parent() != Some(Path::new("/sys/fs/cgroup")) {
            continue;
        }
        let Some(name) = point.file_name() else {
            continue;
        };
        let super_opts = post.nth(1).unwrap_or_default();
        let subsystems: Vec<&str> = super_opts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro"))
            .collect();
        let target = dest.join(name);
        fs::create_dir_all(&target).ctx(|| format!("create {}", target.display()))?;
        if cfg.cgroupns {
            mount(
                Some("cgroup"),
                &target,
                Some("cgroup"),
                flags,
                Some(subsystems.join(",").as_str()),
            )
            .ctx(|| format!("mount cgroup {}", name.to_string_lossy()))?;
        } else {
            mount(Some(point), &target, NONE, MsFlags::MS_BIND, NONE)
                .ctx(|| format!("bind cgroup {}", name.to_string_lossy()))?;
            if flags.contains(MsFlags::MS_RDONLY) {
                remount_readonly(&target, MsFlags::empty())
                    .ctx(|| format!("remount cgroup {} readonly", name.to_string_lossy()))?;
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        remount_readonly(dest, flags & !MsFlags::MS_RDONLY).ctx(|| "remount readonly")?;
    }
    Ok(())
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn create_default_devices(cfg: &RootfsConfig) -> SetupResult<()> {
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = PathBuf::from("/dev").join(name);
        make_device(cfg, &path, SFlag::S_IFCHR, major, minor, 0o666, None, None)?;
    }
    Ok(())
}

fn create_device(cfg: &RootfsConfig, d: &LinuxDevice) -> SetupResult<()> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(SetupError::new(
                format!("device {}", d.path().display()),
                "type 'a' is only valid in cgroup rules",
            ))
        }
    };
    make_device(
        cfg,
        d.path(),
        kind,
        d.major() as u64,
        d.minor() as u64,
        d.file_mode().unwrap_or(0o666),
        d.uid(),
        d.gid(),
    )
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    cfg: &RootfsConfig,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> SetupResult<()> {
    let what = || format!("device {}", path.display());
    let dest = secure_join(cfg.rootfs, path).ctx(what)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).ctx(what)?;
    }
    if cfg.in_userns {
        // mknod is refused in a user namespace: bind the host's node.
        create_mount_point(&dest, true).ctx(what)?;
        mount(Some(path), &dest, NONE, MsFlags::MS_BIND, NONE).ctx(what)?;
        return Ok(());
    }
    match fs::remove_file(&dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx(what),
    }
    mknod(
        &dest,
        kind,
        Mode::from_bits_truncate(mode & 0o7777),
        makedev(major, minor),
    )
    .ctx(what)?;
    if uid.is_some() || gid.is_some() {
        chown(&dest, uid.map(Uid::from_raw), gid.map(Gid::from_raw)).ctx(what)?;
    }
    Ok(())
}

fn create_dev_symlinks(rootfs: &Path) -> SetupResult<()> {
    let links = [
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
        ("pts/ptmx", "dev/ptmx"),
    ];
    for (target, link) in links {
        let path = rootfs.join(link);
        match symlink(target, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("symlink /{link}")),
        }
    }
    Ok(())
}

/// Makes `rootfs` the root: `pivot_root`, or `MS_MOVE` + chroot when the
/// current root cannot be pivoted (initramfs).
fn enter_root(rootfs: &Path, no_pivot: bool) -> SetupResult<()> {
    chdir(rootfs).ctx(|| format!("chdir to rootfs {}", rootfs.display()))?;
    let pivot = if no_pivot {
        Err(Errno::EINVAL)
    } else {
        pivot_root(".", ".")
    };
    match pivot {
        Ok(()) => {
            // The old root is stacked on "."; detach it without propagating.
            mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
                .ctx(|| "make old root rslave")?;
            umount2(".", MntFlags::MNT_DETACH).ctx(|| "unmount old root")?;
        }
        Err(Errno::EINVAL) => {
            mount(Some(rootfs), "/", NONE, MsFlags::MS_MOVE, NONE)
                .ctx(|| format!("move rootfs {} to /", rootfs.display()))?;
            chroot(".").ctx(|| "chroot to rootfs")?;
        }
        Err(e) => return Err(e).ctx(|| format!("pivot_root to {}", rootfs.display())),
    }
    chdir("/").ctx(|| "chdir to /")?;
    Ok(())
}

fn mask_path(path: &str) -> SetupResult<()> {
    let what = || format!("mask {path}");
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(what),
    };
    if meta.is_dir() {
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, NONE).ctx(what)
    } else {
        mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE).ctx(what)
    }
}

fn readonly_path(path: &str) -> SetupResult<()> {
    let what = || format!("readonly path {path}");
    match fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(what),
    }
    mount(
        Some(path),
        path,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .ctx(what)?;
    remount_readonly(
        Path::new(path),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )
    .ctx(what)
}

/// Device number of a path, for tests and checks.
#[allow(dead_code)]
pub(crate) fn rdev(path: &Path) -> std::io::Result<u64> {
    fs::metadata(path).map(|m| m.rdev())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> MountOptions {
        parse_options(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let o = opts(&["nosuid", "noexec", "ro", "mode=755", "size=65536k"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        let o = opts(&["rbind", "rprivate", "ro", "rw"]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
    }

    #[test]
    fn propagation() {
        assert_eq!(
            propagation_flags("rslave"),
            Some(MsFlags::MS_SLAVE | MsFlags::MS_REC)
        );
        assert_eq!(propagation_flags("bogus"), None);
    }
}
