//! Whether the client that sent a request is still connected.
//!
//! A request whose client has gone is cancelled by the ttrpc server, but
//! not at once: its handler may still run for a moment, and a ReadStdout
//! that took bytes from a pipe then would lose them with the answer nobody
//! reads. The accept hook keeps a duplicate of each connection's socket in
//! the connection's data, and the handlers that take something for good
//! (a pipe's bytes, an exit status's one delivery) ask [`hung_up`] just
//! before they do.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use ttrpc::asynchronous::TtrpcContext;
use ttrpc::security_extension::{
    AcceptHook, ConnectionData, ConnectionDataExt, HookError, HookOutput,
};

const KEY: &str = "guest-agent.peer";

/// The server's accept hook: records the connection's socket, changes
/// nothing on it.
#[derive(Debug)]
pub struct PeerWatch;

impl AcceptHook for PeerWatch {
    fn on_accept(&self, fd: RawFd) -> Result<HookOutput, HookError> {
        // SAFETY: fcntl on a descriptor the server lends us for this call;
        // the duplicate it returns is new and ours alone.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(HookError::Io(std::io::Error::last_os_error()));
        }
        // SAFETY: `dup` was just returned by fcntl and nothing else owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(dup) };
        let mut data = ConnectionData::new();
        data.insert(KEY.into(), Box::new(socket));
        Ok(HookOutput {
            data,
            payload_transform: None,
        })
    }
}

/// Whether the client of `ctx` has closed or reset its connection. A
/// request without a recorded socket (in-process callers) has a client.
pub fn hung_up(ctx: &TtrpcContext) -> bool {
    let Some(socket) = ctx.connection_data.get_typed::<OwnedFd>(KEY) else {
        return false;
    };
    // libc's poll: nix drops a revents word with POLLRDHUP in it.
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd we own, for a descriptor that stays open while
    // `socket` is borrowed; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
