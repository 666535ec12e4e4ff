//! A process's stdio as the agent holds it: our ends of its pipes, or the
//! PTY master that replaces them when the process has a terminal.

use std::os::fd::OwnedFd;

use crate::stream::FdStream;

/// Output pipe size when none is configured: a process writes on while
/// the host's next ReadStdout is on its way, up to 1 MiB ahead instead of
/// the kernel's 64 KiB. Pages are only allocated as data waits in the pipe.
pub const DEFAULT_OUTPUT_PIPE: u32 = 1 << 20;

/// Our ends of a process's stdio, before the process exists.
pub struct ProcIo {
    pub stdin: Option<FdStream>,
    pub stdout: Option<FdStream>,
    pub stderr: Option<FdStream>,
    pub tty: Option<OwnedFd>,
}

impl ProcIo {
    /// Our side of a PTY: the master serves as stdin and stdout; a terminal
    /// has no separate stderr.
    pub fn pty(master: OwnedFd) -> std::io::Result<ProcIo> {
        let reader = master.try_clone()?;
        let tty = master.try_clone()?;
        Ok(ProcIo {
            stdin: Some(FdStream::new(master, true)?),
            stdout: Some(FdStream::new(reader, true)?),
            stderr: None,
            tty: Some(tty),
        })
    }
}

/// A pipe: (our end, the process's end).
pub struct PipePair<T> {
    pub ours: T,
    pub theirs: OwnedFd,
}

fn raw_pipe(size: u32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    if size > 0 {
        // The size is a hint: a smaller system maximum is not an error.
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&r),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as libc::c_int),
        );
    }
    Ok((r, w))
}

/// A pipe the process writes and we read (stdout, stderr).
pub fn output_pipe(size: u32) -> std::io::Result<PipePair<FdStream>> {
    let size = if size == 0 { DEFAULT_OUTPUT_PIPE } else { size };
    let (r, w) = raw_pipe(size)?;
    Ok(PipePair {
        ours: FdStream::new(r, false)?,
        theirs: w,
    })
}

/// A pipe we write and the process reads (stdin); kernel default size
/// unless one is configured.
pub fn input_pipe(size: u32) -> std::io::Result<PipePair<FdStream>> {
    let (r, w) = raw_pipe(size)?;
    Ok(PipePair {
        ours: FdStream::new(w, false)?,
        theirs: r,
    })
}
