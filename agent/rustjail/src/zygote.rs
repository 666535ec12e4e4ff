//! The pre-forked launcher: a process forked from the caller before it
//! starts any thread, which forks an init helper for each container.
//!
//! It replaces re-executing the caller's binary (see [`crate::helper`]): the
//! helper is a fork of a small single-threaded process, so no `execve` of the
//! agent and no runtime start-up happen per container. The protocol to the
//! helper is the same: the zygote hands it the socket the caller passed, on
//! fd 0, and runs [`crate::helper::main`].
//!
//! The zygote ignores SIGCHLD so its helpers never linger as zombies; each
//! helper restores the default before anything else, so the container
//! processes it creates see a normal disposition. Container inits are
//! re-parented to the caller (PID 1 or a child subreaper) when their helper
//! exits, as with re-exec. The zygote exits when the caller's end of its
//! control socket closes, and dies with the caller (PR_SET_PDEATHSIG).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult, Pid};

use crate::protocol;

/// A running zygote, as the caller sees it.
#[derive(Debug)]
pub struct Zygote {
    ctl: Mutex<UnixStream>,
    pid: Pid,
}

impl Zygote {
    /// Forks the zygote.
    ///
    /// # Safety
    ///
    /// The calling process must be single-threaded (call it before any
    /// thread or async runtime starts): the child runs Rust code after fork.
    pub unsafe fn start() -> io::Result<Zygote> {
        let (ours, theirs) = UnixStream::pair()?;
        // SAFETY: the caller guarantees a single-threaded process, so the
        // child may allocate and run arbitrary code.
        match unsafe { fork() }.map_err(io::Error::from)? {
            ForkResult::Child => {
                drop(ours);
                let code = serve(theirs);
                // SAFETY: _exit skips the parent's atexit handlers and
                // buffers, which this fork must not run twice.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                Ok(Zygote {
                    ctl: Mutex::new(ours),
                    pid: child,
                })
            }
        }
    }

    /// The zygote's pid.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Starts an init helper that talks over `sock`; returns its pid.
    pub fn spawn(&self, sock: OwnedFd) -> io::Result<i32> {
        let ctl = match self.ctl.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        protocol::send_fds(&ctl, &[sock.as_raw_fd()])?;
        drop(sock);
        let mut pid = [0u8; 4];
        (&*ctl).read_exact(&mut pid)?;
        match i32::from_ne_bytes(pid) {
            p if p > 0 => Ok(p),
            e => Err(io::Error::from_raw_os_error(-e)),
        }
    }
}

/// The zygote's name in `ps` and `/proc/<pid>/comm`.
pub const COMM: &str = "kata-launcher";

/// The zygote's loop: one helper per descriptor received.
fn serve(ctl: UnixStream) -> i32 {
    let name = c"kata-launcher";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    if unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.is_err() {
        return 1;
    }
    loop {
        let sock = match protocol::recv_fds(&ctl) {
            Ok(mut fds) if fds.len() == 1 => fds.remove(0),
            // The caller is gone (EOF) or spoke nonsense: stop.
            _ => return 0,
        };
        // SAFETY: the zygote is single-threaded (a fork of a
        // single-threaded process that started no thread).
        let reply = match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(ctl);
                let code = helper(sock);
                // SAFETY: as in `start`.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => child.as_raw(),
            Err(e) => -(e as i32),
        };
        drop(sock);
        if (&ctl).write_all(&reply.to_ne_bytes()).is_err() {
            return 0;
        }
    }
}

/// A forked helper: the socket on fd 0, then the init helper proper.
fn helper(sock: OwnedFd) -> i32 {
    // SAFETY: restoring the default disposition installs no handler code.
    if unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }.is_err() {
        return 1;
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG, 0) takes no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    // SAFETY: dup2 onto fd 0 of this single-threaded process.
    if unsafe { libc::dup2(sock.as_raw_fd(), 0) } < 0 {
        return 1;
    }
    drop(sock);
    crate::helper::main()
}
