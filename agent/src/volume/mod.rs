//! Volumes and swap areas the host adds to a running sandbox.
//!
//! - [`swap`]: AddSwap (a hot-plugged virtio-blk disk by PCI path, as the
//!   Go runtime and runtime-rs plug one) and AddSwapPath (a node under
//!   `/dev/`, as runtime-rs names a virtio-mmio disk, or a swap file
//!   below `/run/kata-containers/`), switched on with `swapon(2)`. The
//!   host writes the swap signature (mkswap) before it plugs the disk;
//!   the agent checks it is there before asking the kernel.
//! - [`resize`]: ResizeVolume, an ext4 filesystem mounted from a block
//!   device grown online (`EXT4_IOC_RESIZE_FS`) to the requested size or
//!   the device's, whichever is smaller; shrinking is refused.
//!
//! Paths from the host pass one check ([`confine`]) before anything is
//! opened: absolute, no `..`, no NUL, strictly under the root the request
//! may use, and still there once symlinks are resolved. Whatever is then
//! opened is opened once, with `O_NOFOLLOW`, and the descriptor (not the
//! path, which the host may change meanwhile on a shared filesystem) is
//! what the checks read and what the system calls act on.

pub mod resize;
pub mod swap;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::describe_io;
use crate::storage::normalize_path;

/// Why a volume or swap request failed. Every message names the object
/// (the volume's guest path, the swap device or file) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The request is unusable (a path or PCI path failing the checks, a
    /// shrink); nothing was touched.
    #[error("{object}: {reason}")]
    Invalid { object: String, reason: String },
    /// Nothing there: no such file, no volume mounted.
    #[error("{object}: {reason}")]
    NotFound { object: String, reason: String },
    /// There, but not usable as asked: no swap signature, a filesystem
    /// that cannot be grown online, a disk that was not enlarged.
    #[error("{object}: {reason}")]
    Precondition { object: String, reason: String },
    /// The hot-plugged disk did not come.
    #[error("{object}: {cause}")]
    Device {
        object: String,
        cause: Box<crate::device::DeviceError>,
    },
    /// A system call failed; `hint` says what that errno means here.
    #[error("{object}: {op}: {}{hint}", describe_io(.cause))]
    Io {
        object: String,
        op: String,
        cause: io::Error,
        hint: &'static str,
    },
}

impl VolumeError {
    /// The status this error answers with. A failed system call is the
    /// kernel's fault, except where its errno says the object's state
    /// forbids the call.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            VolumeError::Invalid { .. } => ttrpc::Code::INVALID_ARGUMENT,
            VolumeError::NotFound { .. } => ttrpc::Code::NOT_FOUND,
            VolumeError::Precondition { .. } => ttrpc::Code::FAILED_PRECONDITION,
            VolumeError::Device { cause, .. } => cause.code(),
            VolumeError::Io { cause, .. } => match cause.raw_os_error() {
                Some(libc::ENOENT) => ttrpc::Code::NOT_FOUND,
                Some(
                    libc::EINVAL | libc::EBUSY | libc::ENOSYS | libc::EROFS | libc::EOPNOTSUPP,
                ) => ttrpc::Code::FAILED_PRECONDITION,
                _ => ttrpc::Code::INTERNAL,
            },
        }
    }

    fn invalid(object: &str, reason: impl Into<String>) -> Self {
        VolumeError::Invalid {
            object: object.to_owned(),
            reason: reason.into(),
        }
    }

    fn precondition(object: &str, reason: impl Into<String>) -> Self {
        VolumeError::Precondition {
            object: object.to_owned(),
            reason: reason.into(),
        }
    }

    fn io(object: &str, op: impl Into<String>, cause: io::Error) -> Self {
        VolumeError::Io {
            object: object.to_owned(),
            op: op.into(),
            cause,
            hint: "",
        }
    }
}

crate::error::into_status!(VolumeError);

/// Where volumes are mounted and swap files may lie.
pub const VOLUME_ROOT: &str = crate::storage::DEFAULT_ROOT;
/// Where swap devices are.
pub const DEVICE_ROOT: &str = "/dev";

/// Checks a path from the host against `root` and resolves it: absolute,
/// no `..`, no NUL, strictly under `root` as written, and strictly under
/// `root` once its symlinks are resolved (the returned path). `object`
/// names it in errors.
pub fn confine(path: &str, root: &Path, object: &str) -> Result<PathBuf, VolumeError> {
    let key = normalize_path(path).map_err(|e| VolumeError::invalid(object, e.to_string()))?;
    if !key.starts_with(root) || key == root {
        return Err(VolumeError::invalid(
            object,
            format!("not under {}/", root.display()),
        ));
    }
    let real_root = std::fs::canonicalize(root)
        .map_err(|e| VolumeError::io(object, format!("resolve {}", root.display()), e))?;
    let real = std::fs::canonicalize(&key).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            VolumeError::NotFound {
                object: object.to_owned(),
                reason: "no such file or directory".into(),
            }
        } else {
            VolumeError::io(object, "resolve", e)
        }
    })?;
    if !real.starts_with(&real_root) || real == real_root {
        return Err(VolumeError::invalid(
            object,
            format!(
                "resolves to {} through a symlink, outside {}/",
                real.display(),
                root.display()
            ),
        ));
    }
    Ok(real)
}

/// What a confined path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Block,
    Regular,
    Directory,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Block => "a block device",
            Kind::Regular => "a regular file",
            Kind::Directory => "a directory",
        }
    }
}

/// Opens `real` (a path [`confine`] returned) read-only without following
/// a symlink and without blocking on a FIFO, and checks that the
/// descriptor is of `kind` and still at `real` (a component swapped for a
/// symlink since the check would show here).
pub fn open_checked(real: &Path, kind: Kind, object: &str) -> Result<File, VolumeError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    if kind == Kind::Directory {
        flags |= libc::O_DIRECTORY;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(real)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => VolumeError::invalid(object, "is a symlink"),
            Some(libc::ENOTDIR) if kind == Kind::Directory => {
                VolumeError::invalid(object, "not a directory")
            }
            _ => VolumeError::io(object, format!("open {}", real.display()), e),
        })?;
    let ft = file
        .metadata()
        .map_err(|e| VolumeError::io(object, "fstat", e))?
        .file_type();
    let is = match kind {
        Kind::Block => ft.is_block_device(),
        Kind::Regular => ft.is_file(),
        Kind::Directory => ft.is_dir(),
    };
    if !is {
        return Err(VolumeError::invalid(
            object,
            format!("{} is not {}", real.display(), kind.name()),
        ));
    }
    let at = fd_path(&file).map_err(|e| VolumeError::io(object, "read /proc/self/fd", e))?;
    if at != real {
        return Err(VolumeError::invalid(
            object,
            format!(
                "{} changed while it was checked (now {})",
                real.display(),
                at.display()
            ),
        ));
    }
    Ok(file)
}

/// `/proc/self/fd/<n>`: a path for system calls that take one, naming
/// exactly the open file.
fn proc_fd(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Where the open file is.
fn fd_path(file: &File) -> io::Result<PathBuf> {
    std::fs::read_link(proc_fd(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn reason(r: Result<impl std::fmt::Debug, VolumeError>) -> (ttrpc::Code, String) {
        match r {
            Ok(v) => panic!("accepted: {v:?}"),
            Err(e) => (e.code(), e.to_string()),
        }
    }

    #[test]
    fn confine_refuses_what_is_not_under_the_root() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = std::fs::canonicalize(dir.path())?;
        std::fs::write(root.join("f"), b"x")?;
        let rs = root.display().to_string();
        for (p, why) in [
            (String::new(), "empty path"),
            ("relative/f".to_owned(), "not an absolute path"),
            (format!("{rs}/../etc/passwd"), "\"..\""),
            (format!("{rs}/a\0b"), "nul byte"),
            ("/etc/passwd".to_owned(), "not under"),
            (rs.clone(), "not under"),
            (format!("{rs}x/f"), "not under"),
        ] {
            let (code, msg) = reason(confine(&p, &root, "swap \"x\""));
            assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{p:?}: {msg}");
            assert!(msg.contains(why), "{p:?}: {msg}");
            assert!(msg.starts_with("swap \"x\": "), "{msg}");
        }
        assert_eq!(confine(&format!("{rs}//./f"), &root, "o")?, root.join("f"));
        let (code, msg) = reason(confine(&format!("{rs}/missing"), &root, "o"));
        assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
        Ok(())
    }

    #[test]
    fn confine_follows_symlinks_only_inside_the_root() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let root = std::fs::canonicalize(dir.path())?;
        std::fs::write(outside.path().join("swap"), b"x")?;
        std::fs::write(root.join("real"), b"x")?;
        symlink(outside.path().join("swap"), root.join("out"))?;
        symlink(root.join("real"), root.join("in"))?;
        symlink(&root, root.join("self"))?;
        let (code, msg) = reason(confine(&root.join("out").to_string_lossy(), &root, "o"));
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(msg.contains("through a symlink, outside"), "{msg}");
        // A symlink to the root itself resolves to the root: refused.
        assert!(confine(&root.join("self").to_string_lossy(), &root, "o").is_err());
        assert_eq!(
            confine(&root.join("in").to_string_lossy(), &root, "o")?,
            root.join("real")
        );
        Ok(())
    }

    #[test]
    fn open_checked_wants_the_kind_asked_for() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = std::fs::canonicalize(dir.path())?;
        std::fs::write(root.join("f"), b"x")?;
        std::fs::create_dir(root.join("d"))?;
        symlink(root.join("f"), root.join("l"))?;
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU)?;
        assert!(open_checked(&root.join("f"), Kind::Regular, "o").is_ok());
        assert!(open_checked(&root.join("d"), Kind::Directory, "o").is_ok());
        for (p, kind, why) in [
            ("f", Kind::Block, "is not a block device"),
            ("d", Kind::Regular, "is not a regular file"),
            ("f", Kind::Directory, "not a directory"),
            ("l", Kind::Regular, "is a symlink"),
            // Not opened for reading and left waiting for a writer.
            ("fifo", Kind::Regular, "is not a regular file"),
        ] {
            let (code, msg) = reason(open_checked(&root.join(p), kind, "o"));
            assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{p}: {msg}");
            assert!(msg.contains(why), "{p}: {msg}");
        }
        Ok(())
    }

    #[test]
    fn codes_follow_the_errno() {
        let io = |n| VolumeError::io("o", "op", io::Error::from_raw_os_error(n));
        assert_eq!(io(libc::EINVAL).code(), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(io(libc::EBUSY).code(), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(io(libc::ENOENT).code(), ttrpc::Code::NOT_FOUND);
        assert_eq!(io(libc::ENOMEM).code(), ttrpc::Code::INTERNAL);
        assert_eq!(
            io(libc::ENOMEM).to_string(),
            "o: op: out of memory",
            "lower case, no errno number"
        );
    }
}
