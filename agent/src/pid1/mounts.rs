//! The kernel filesystems every guest needs, and the console.

use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::InitError;

/// One mount PID 1 makes at boot.
pub(super) struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In order: each target lies on a filesystem mounted before it.
pub(super) const KERNEL_MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "dev",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
    },
    Mount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
    },
];

/// Symlinks a shell in the guest expects under `/dev` (devtmpfs has none).
const DEV_LINKS: &[(&str, &str)] = &[
    ("/dev/ptmx", "pts/ptmx"),
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

/// True when `path` is the root of a mount: it lies on another device than
/// its parent, or it is `/`.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let Ok(parent) = std::fs::metadata(path.join("..")) else {
        return false;
    };
    meta.dev() != parent.dev() || meta.ino() == parent.ino()
}

/// `mkdir -p` with `mode` for the directories it creates.
pub(super) fn mkdir_p(path: &Path, mode: u32) -> Result<(), InitError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| InitError::Create {
            path: path.to_path_buf(),
            source,
        })
}

/// Mounts `fstype` at `target` unless something is mounted there already.
pub(super) fn mount_once(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), InitError> {
    if is_mountpoint(target) {
        return Ok(());
    }
    mkdir_p(target, 0o755)?;
    let data = (!data.is_empty()).then_some(data);
    match nix::mount::mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(source) => Err(InitError::Mount {
            target: target.to_path_buf(),
            fstype: fstype.to_string(),
            source,
        }),
    }
}

/// `/proc`, `/sys`, `/dev` and what lives in them, then `/run`.
pub(super) fn mount_kernel_filesystems() -> Result<(), InitError> {
    for m in KERNEL_MOUNTS {
        mount_once(m.source, Path::new(m.target), m.fstype, m.flags, m.data)?;
    }
    for (link, target) in DEV_LINKS {
        match std::os::unix::fs::symlink(target, link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(InitError::Create {
                    path: Path::new(link).to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Without a console: stdin from `/dev/null`, stdout and stderr into the
/// kernel log (`/dev/kmsg`), which reaches the console once one comes
/// (the kernel replays its log to a console that registers late).
pub(super) fn use_kmsg() -> Result<(), InitError> {
    let open = |path: &str, write: bool| {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path)
            .map_err(|e| InitError::Console {
                path: path.into(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
    };
    let null = open("/dev/null", false)?;
    let kmsg = open("/dev/kmsg", true)?;
    for (file, targets) in [(&null, &[0][..]), (&kmsg, &[1, 2][..])] {
        for &t in targets {
            nix::unistd::dup2(file.as_raw_fd(), t).map_err(|source| InitError::Console {
                path: "/dev/kmsg".into(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Puts stdin, stdout and stderr on `/dev/console`, whatever the kernel
/// gave PID 1 (nothing at all when the initrd had no `/dev/console`).
pub(super) fn reopen_console() -> Result<(), InitError> {
    let path = Path::new("/dev/console");
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| InitError::Console {
            path: path.to_path_buf(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    let fd = console.as_raw_fd();
    for target in 0..=2 {
        if fd != target {
            nix::unistd::dup2(fd, target).map_err(|source| InitError::Console {
                path: path.to_path_buf(),
                source,
            })?;
        }
    }
    // The console may itself have landed on 0, 1 or 2: keep that one open.
    let fd = console.into_raw_fd();
    if fd > 2 {
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_proc_are_mountpoints_tmp_subdir_is_not() {
        assert!(is_mountpoint(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mountpoint(&sub));
        assert!(!is_mountpoint(&dir.path().join("missing")));
        if Path::new("/proc/self").exists() {
            assert!(is_mountpoint(Path::new("/proc")));
        }
    }

    #[test]
    fn kernel_mounts_come_after_their_parents() {
        for (i, m) in KERNEL_MOUNTS.iter().enumerate() {
            let parent = Path::new(m.target).parent().unwrap();
            if parent != Path::new("/") {
                assert!(
                    KERNEL_MOUNTS[..i]
                        .iter()
                        .any(|p| Path::new(p.target) == parent),
                    "{} is mounted before its parent",
                    m.target
                );
            }
        }
    }

    #[test]
    fn mkdir_p_creates_nested_and_accepts_existing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c");
        mkdir_p(&p, 0o755).unwrap();
        mkdir_p(&p, 0o755).unwrap();
        assert!(p.is_dir());
    }
}
