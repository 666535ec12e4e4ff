//! The helper protocol, in one place: what the caller asks the init helper
//! ([`Request`]), what the helper and the container init answer ([`Msg`]),
//! and how both travel: a Unix stream socket carrying length-prefixed JSON
//! messages, plus `SCM_RIGHTS` messages for the stdio descriptors and the
//! PTY master.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Process, Spec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Largest message accepted: a spec is a few KiB, this bounds a bad peer.
const MAX_MSG: usize = 16 << 20;

/// What the caller asks the helper to do.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Create(Box<CreateRequest>),
    Exec(Box<ExecRequest>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CreateRequest {
    pub spec: Spec,
    /// Absolute, resolved rootfs path.
    pub rootfs: PathBuf,
    pub no_pivot: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExecRequest {
    /// Host pid of the container init, whose namespaces we join.
    pub init_pid: i32,
    /// Namespace types the container has (joined from the init).
    pub namespaces: Vec<LinuxNamespaceType>,
    pub process: Process,
    /// The container's seccomp profile, which exec'd processes get too.
    pub seccomp: Option<LinuxSeccomp>,
}

/// Messages from the helper and the container init to the caller, and the
/// caller's go-ahead to the init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// Host pid of the container init or exec'd process.
    Pid(i32),
    /// The PTY master follows as one `SCM_RIGHTS` message.
    Console,
    /// Setup is done; the init waits for `Start` before exec.
    Created,
    /// Setup failed; the text names the object and the cause.
    Error(String),
    /// Init to caller: mounts are done; run prestart and createRuntime
    /// hooks, then send `Continue`.
    CreateRuntime,
    /// Caller to init: the state document for the createContainer hooks.
    Continue(String),
    /// Caller to init: run the startContainer hooks with this state, then
    /// exec the process.
    Start(String),
}

pub(crate) fn send<T: Serialize>(mut w: impl Write, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)
}

/// Reads one message; `Ok(None)` on end of stream before a message starts.
pub(crate) fn recv<T: DeserializeOwned>(mut r: impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MSG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too large",
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends descriptors with one marker byte.
pub(crate) fn send_fds(sock: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(b"F")];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives the descriptors sent by [`send_fds`], close-on-exec.
pub(crate) fn recv_fds(sock: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut out = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in our table for
                // this message; nothing else owns it.
                out.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.bytes != 1 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &Msg::Pid(42)).unwrap();
        send(&a, &Msg::Error("x: y".into())).unwrap();
        drop(a);
        assert!(matches!(recv::<Msg>(&b).unwrap(), Some(Msg::Pid(42))));
        assert!(matches!(recv::<Msg>(&b).unwrap(), Some(Msg::Error(s)) if s == "x: y"));
        assert!(recv::<Msg>(&b).unwrap().is_none());
    }

    #[test]
    fn fds_pass() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_fds(&a, &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let got = recv_fds(&b).unwrap();
        assert_eq!(got.len(), 2);
        nix::unistd::write(&got[1], b"hi").unwrap();
        let mut buf = [0u8; 2];
        nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }
}
