//! GetDiagnosticData: a container's termination message, which runtimes
//! read back when the guest cannot write through to the host's file.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use protocols::agent::*;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};

/// The only log type: Kubernetes' termination message.
pub const TERMINATION_LOG: &str = "termination_log";
/// Kubernetes keeps at most 4 KiB of a message; allow some slack.
const MAX_MESSAGE: u64 = 16 * 1024;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Opens `path` as if `root` were `/`: symlinks and `..` cannot leave it.
fn open_in_root(root: &Path, path: &str) -> std::io::Result<std::fs::File> {
    let dir = std::fs::File::open(root)?;
    let rel = CString::new(path.trim_start_matches('/'))
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and
    // a pointer to an open_how of the size passed; all outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that we alone own.
    Ok(std::fs::File::from(unsafe {
        OwnedFd::from_raw_fd(fd as i32)
    }))
}

fn read_bounded(f: std::fs::File) -> std::io::Result<String> {
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut buf = Vec::new();
    f.take(MAX_MESSAGE).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

impl AgentImpl {
    pub(super) async fn do_get_diagnostic_data(
        &self,
        _ctx: &TtrpcContext,
        req: GetDiagnosticDataRequest,
    ) -> ttrpc::Result<GetDiagnosticDataResponse> {
        let cid = req.container_id.clone();
        if req.log_type != TERMINATION_LOG {
            return Err(status(
                Code::INVALID_ARGUMENT,
                format!(
                    "container {cid:?}: log type {:?}: only {TERMINATION_LOG:?} is supported",
                    req.log_type
                ),
            ));
        }
        let ctr = self.ctr(&cid)?;
        let log = ctr.termination_log.clone();
        let running_pid = ctr
            .init_proc()
            .filter(|p| p.exited().is_none())
            .map(|p| p.pid);
        let data = blocking(move || read_termination_log(&cid, &log, running_pid)).await??;
        let mut resp = GetDiagnosticDataResponse::new();
        resp.data = data;
        Ok(resp)
    }
}

/// The termination message: from the guest file mounted at its path, or
/// else from the running container's own tree; runs blocking.
fn read_termination_log(
    cid: &str,
    log: &crate::containers::TerminationLog,
    running_pid: Option<i32>,
) -> ttrpc::Result<String> {
    let what = |e: std::io::Error, from: &str| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            Code::NOT_FOUND
        } else {
            Code::FAILED_PRECONDITION
        };
        status(
            code,
            format!(
                "container {cid:?}: termination log {} ({from}): {e}",
                log.path
            ),
        )
    };
    // The guest file mounted at the path is the message's home; with
    // none, the file is in the running container's own tree.
    if let Some(src) = &log.source {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_nonblock()
            .open(src)
            .map_err(|e| what(e, "mounted file"))?;
        return read_bounded(f).map_err(|e| what(e, "mounted file"));
    }
    match running_pid {
            Some(pid) => {
                let root = format!("/proc/{pid}/root");
                let f = open_in_root(Path::new(&root), &log.path)
                    .map_err(|e| what(e, "container root"))?;
                read_bounded(f).map_err(|e| what(e, "container root"))
            }
            None => Err(status(
                Code::NOT_FOUND,
                format!(
                    "container {cid:?}: termination log {}: the container has exited and no mount holds it",
                    log.path
                ),
            )),
        }
}

/// `O_NONBLOCK | O_NOFOLLOW` on an `OpenOptions`: a FIFO planted at the
/// path must not hang the read, and the final component must not be a link.
trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
    }
}
