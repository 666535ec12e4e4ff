//! The loopback interface: down at boot, needed by anything that talks to
//! `localhost` in the guest's own network namespace.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::InitError;

const LO: &str = "lo";

/// Sets `IFF_UP` on `lo` with `SIOCGIFFLAGS`/`SIOCSIFFLAGS`.
pub(super) fn loopback_up() -> Result<(), InitError> {
    let err = |source| InitError::Interface { name: LO, source };
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;

    // SAFETY: `ifreq` is a plain C struct (a name array and a union of
    // integers, sockaddrs and a pointer); all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(LO.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket for the whole call; `req` is a valid,
    // NUL-terminated (zeroed past "lo") ifreq that outlives the call, and
    // SIOCGIFFLAGS writes only `ifr_ifru.ifru_flags` inside it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(err(Errno::last()));
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so `ifru_flags` is the field the
    // kernel filled in; reading a c_short from the union is sound.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(err(Errno::last()));
    }
    Ok(())
}
