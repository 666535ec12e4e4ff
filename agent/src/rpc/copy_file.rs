//! CopyFile: the shim copies files into the guest in chunks (when it has no
//! shared filesystem, and for files such as a container's /etc/hosts).
//!
//! Targets stay under `/run/kata-containers/shared/containers/`, where the
//! shim puts what containers see, as upstream Kata confines them: the path
//! must be absolute and free of `..`, and it is walked one component at a
//! time from that directory with `O_NOFOLLOW`, so no symlink (not even one created by an
//! earlier CopyFile) can lead a write elsewhere. A regular file is written
//! to `<name>.tmp` at the given offset and renamed into place, with its
//! mode and owner, once it holds `file_size` bytes.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path};

use protocols::agent::CopyFileRequest;
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};
use crate::storage::{NAME_MAX, PATH_MAX};

/// What a regular file is written under until it is complete.
const TMP_SUFFIX: &str = ".tmp";

/// Where copied files may go (the shared directory's mount point).
pub const COPY_BASE: &str = "/run/kata-containers/shared/containers";

fn cstr(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

fn last_err<T>(rc: T) -> std::io::Result<T>
where
    T: Copy + PartialOrd + Default,
{
    if rc < T::default() {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Why a CopyFile request failed; the handler adds the path.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("not an absolute path")]
    NotAbsolute,
    #[error("not under {COPY_BASE}/")]
    NotUnderBase,
    #[error("not valid utf-8")]
    NotUtf8,
    #[error("contains \"..\"")]
    DotDot,
    #[error("contains a NUL byte")]
    Nul,
    #[error("longer than {} bytes", PATH_MAX - 1)]
    TooLong,
    /// A name over NAME_MAX; for the last one, NAME_MAX less the `.tmp`
    /// suffix a regular file is written under first.
    #[error("a name longer than {0} bytes")]
    NameTooLong(usize),
    #[error("names {COPY_BASE} itself")]
    IsBase,
    #[error("link target has a NUL byte")]
    NulInTarget,
    #[error("file mode {0:#o}: unsupported file type")]
    FileType(u32),
    #[error("negative offset or size")]
    Negative,
    /// A step on the way failed: `what` names it (`directory "a"`, `write`).
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl CopyError {
    /// A bad path or request is the caller's fault; something in the way
    /// (a symlink, a file where a directory should be) is a conflict with
    /// what the guest holds; any other I/O failure is ours.
    pub fn code(&self) -> Code {
        match self {
            CopyError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ELOOP | libc::ENOTDIR | libc::EEXIST | libc::EISDIR) => {
                    Code::FAILED_PRECONDITION
                }
                _ => Code::INTERNAL,
            },
            _ => Code::INVALID_ARGUMENT,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CopyError {
    let what = what.into();
    move |source| CopyError::Io { what, source }
}

/// The path's components below [`COPY_BASE`], or why it is refused.
pub fn components_below_base(path: &str) -> Result<Vec<String>, CopyError> {
    if path.contains('\0') {
        return Err(CopyError::Nul);
    }
    if path.len() >= PATH_MAX {
        return Err(CopyError::TooLong);
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(CopyError::NotAbsolute);
    }
    let rel = p
        .strip_prefix(COPY_BASE)
        .map_err(|_| CopyError::NotUnderBase)?;
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) if s.len() > NAME_MAX => {
                return Err(CopyError::NameTooLong(NAME_MAX))
            }
            Component::Normal(s) => out.push(s.to_str().ok_or(CopyError::NotUtf8)?.to_string()),
            Component::CurDir => {}
            _ => return Err(CopyError::DotDot),
        }
    }
    match out.last() {
        None => Err(CopyError::IsBase),
        Some(last) if last.len() > NAME_MAX - TMP_SUFFIX.len() => {
            Err(CopyError::NameTooLong(NAME_MAX - TMP_SUFFIX.len()))
        }
        Some(_) => Ok(out),
    }
}

/// Opens (creating if missing) directory `name` in `dir`, refusing links.
fn open_dir_at(dir: &OwnedFd, name: &str, mode: u32) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY;
    // SAFETY: openat with a valid dir fd and a NUL-terminated name.
    let mut fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
        // SAFETY: as above; mkdirat creates nothing but the directory.
        let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) };
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    }
    last_err(fd)?;
    // SAFETY: openat returned a new descriptor that we alone own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn copy(req: &CopyFileRequest) -> Result<(), CopyError> {
    let parts = components_below_base(&req.path)?;
    let (name, dirs) = parts.split_last().ok_or(CopyError::IsBase)?;
    std::fs::create_dir_all(COPY_BASE).map_err(io(format!("create {COPY_BASE}")))?;
    let base = std::fs::File::open(COPY_BASE).map_err(io(format!("open {COPY_BASE}")))?;
    let dir_mode = if req.dir_mode == 0 {
        0o755
    } else {
        req.dir_mode & 0o7777
    };
    let mut dir = OwnedFd::from(base);
    for d in dirs {
        dir = open_dir_at(&dir, d, dir_mode).map_err(io(format!("directory {d:?}")))?;
    }
    let kind = req.file_mode & libc::S_IFMT;
    let perm = req.file_mode & 0o7777;
    let cname = cstr(name).map_err(io("name"))?;
    let (uid, gid) = (req.uid as libc::uid_t, req.gid as libc::gid_t);
    let chown_at = |fdir: &OwnedFd, n: &CString, flags: i32| -> Result<(), CopyError> {
        // SAFETY: fchownat with a valid dir fd and a NUL-terminated name.
        last_err(unsafe { libc::fchownat(fdir.as_raw_fd(), n.as_ptr(), uid, gid, flags) })
            .map(|_| ())
            .map_err(io("chown"))
    };
    if kind == libc::S_IFDIR {
        open_dir_at(&dir, name, if perm == 0 { dir_mode } else { perm }).map_err(io("mkdir"))?;
        return chown_at(&dir, &cname, libc::AT_SYMLINK_NOFOLLOW);
    }
    if kind == libc::S_IFLNK {
        let target = CString::new(req.data.clone()).map_err(|_| CopyError::NulInTarget)?;
        // SAFETY: symlinkat with NUL-terminated strings and a valid dir fd.
        last_err(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), cname.as_ptr()) })
            .map_err(io("symlink"))?;
        return chown_at(&dir, &cname, libc::AT_SYMLINK_NOFOLLOW);
    }
    if kind != 0 && kind != libc::S_IFREG {
        return Err(CopyError::FileType(req.file_mode));
    }
    if req.offset < 0 || req.file_size < 0 {
        return Err(CopyError::Negative);
    }
    let tmp = cstr(&format!("{name}{TMP_SUFFIX}")).map_err(io("name"))?;
    let mut flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if req.offset == 0 {
        flags |= libc::O_TRUNC;
    }
    // SAFETY: openat with a valid dir fd and a NUL-terminated name.
    let fd = last_err(unsafe { libc::openat(dir.as_raw_fd(), tmp.as_ptr(), flags, 0o600) })
        .map_err(io("open"))?;
    // SAFETY: openat returned a new descriptor that we alone own.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::os::unix::fs::FileExt::write_all_at(&file, &req.data, req.offset as u64)
        .map_err(io("write"))?;
    let size = file.metadata().map_err(io("stat"))?.len();
    if size < req.file_size as u64 {
        return Ok(()); // more chunks to come
    }
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(perm))
        .map_err(io("chmod"))?;
    // SAFETY: fchown on a descriptor we own.
    last_err(unsafe { libc::fchown(file.as_raw_fd(), uid, gid) }).map_err(io("chown"))?;
    // SAFETY: renameat within one directory fd, NUL-terminated names.
    last_err(unsafe {
        libc::renameat(
            dir.as_raw_fd(),
            tmp.as_ptr(),
            dir.as_raw_fd(),
            cname.as_ptr(),
        )
    })
    .map_err(io("rename into place"))?;
    Ok(())
}

impl AgentImpl {
    pub(super) async fn do_copy_file(
        &self,
        _ctx: &TtrpcContext,
        req: CopyFileRequest,
    ) -> ttrpc::Result<Empty> {
        let path = req.path.clone();
        blocking(move || copy(&req))
            .await?
            .map_err(|e| status(e.code(), format!("copy file {path:?}: {e}")))?;
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined() {
        assert_eq!(
            components_below_base("/run/kata-containers/shared/containers/x/hosts").unwrap(),
            vec!["x", "hosts"]
        );
        for bad in [
            "relative/path",
            "/etc/passwd",
            "/run/kata-containers",
            "/run/kata-containers/x",
            "/run/kata-containers/shared/foo",
            "/run/kata-containers/sandbox/hosts",
            "/run/kata-containers/shared/containers",
            "/run/kata-containers/shared/containersX/a",
            "/run/kata-containers/../../etc/shadow",
            "/run/kata-containers/a/../../x",
            "/run/kata-containersX/a",
            "/run/kata-containers/shared/containers/a\0/b",
        ] {
            assert!(components_below_base(bad).is_err(), "{bad}");
        }
        let long_name = format!(
            "{COPY_BASE}/{}",
            "n".repeat(NAME_MAX - TMP_SUFFIX.len() + 1)
        );
        assert!(matches!(
            components_below_base(&long_name),
            Err(CopyError::NameTooLong(_))
        ));
        let fits = format!("{COPY_BASE}/{}", "n".repeat(NAME_MAX - TMP_SUFFIX.len()));
        assert!(components_below_base(&fits).is_ok());
        let long_path = format!("{COPY_BASE}/{}", "d/".repeat(PATH_MAX / 2));
        assert!(matches!(
            components_below_base(&long_path),
            Err(CopyError::TooLong)
        ));
    }
}
