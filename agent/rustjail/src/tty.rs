//! Pseudo-terminals for processes with `terminal: true`: the container side
//! opens the PTY in the container's devpts, makes the slave its controlling
//! terminal and hands the master to the caller.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

use crate::error::{Context, SetupResult};

/// Opens a PTY pair in the current root: (master, slave).
pub(crate) fn open_pty() -> SetupResult<(OwnedFd, OwnedFd)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| "open /dev/ptmx")?;
    grantpt(&master).ctx(|| "grantpt")?;
    unlockpt(&master).ctx(|| "unlockpt")?;
    let name = ptsname_r(&master).ctx(|| "ptsname")?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {name}"))?;
    // SAFETY: both descriptors were just opened here and have no other owner.
    let pair = unsafe {
        (
            OwnedFd::from_raw_fd(master.into_raw_fd()),
            OwnedFd::from_raw_fd(slave),
        )
    };
    Ok(pair)
}

/// A PTY pair, (master, slave), for a caller outside any container (the
/// agent's debug console). Both ends are close-on-exec from the moment
/// they exist, so a child another thread spawns meanwhile cannot inherit
/// the master and keep the session from being hung up when it closes.
pub fn open_pty_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    open_pty().map_err(|e| std::io::Error::other(e.to_string()))
}

/// Makes `fd` the controlling terminal of the calling session leader.
pub(crate) fn set_controlling(fd: BorrowedFd) -> SetupResult<()> {
    // SAFETY: TIOCSCTTY takes an integer argument, no pointer; `fd` is open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(ret).ctx(|| "set controlling terminal")?;
    Ok(())
}

/// Sets a terminal's window size (TtyWinResize).
pub fn set_window_size(fd: BorrowedFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` through the pointer, which points
    // to a live, initialized value for the duration of the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn window_size_round_trip() {
        let (master, slave) = open_pty().unwrap();
        set_window_size(master.as_fd(), 33, 101).unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into `ws`, which is live.
        let ret = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(ret, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (33, 101));
    }
}
