//! Non-blocking reads and writes on a process's stdio: a pipe end or a PTY
//! master, through the runtime's reactor.
//!
//! Reads are cancel-safe: bytes leave the kernel only in the same poll that
//! returns them, so a request dropped while waiting takes nothing.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// One direction of a process's stdio.
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
    /// A PTY master reports the end of its slave side as EIO.
    pty: bool,
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no pointers.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl FdStream {
    /// Wraps `fd` (made non-blocking). Must run inside the runtime.
    pub fn new(fd: OwnedFd, pty: bool) -> io::Result<FdStream> {
        set_nonblocking(&fd)?;
        // SAFETY: the OwnedFd moves into the AsyncFd, so the descriptor stays
        // open and unchanged for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(FdStream { fd, pty })
    }

    fn raw_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most buf.len() bytes into a buffer we own.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if self.pty && e.raw_os_error() == Some(libc::EIO) {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }

    /// Waits for data; `Ok(0)` is end of stream.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|_| self.raw_read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits for data like [`FdStream::read`], or for `stop` to complete
    /// first (`Ok(None)`); cancel-safe in the same way.
    pub async fn read_or<F: std::future::Future>(
        &self,
        buf: &mut [u8],
        stop: F,
    ) -> io::Result<Option<usize>> {
        self.read_while(buf, stop, || true).await
    }

    /// [`FdStream::read_or`], asking `wanted` once the descriptor is
    /// readable and before any byte is taken: when it says no, nothing is
    /// read and the result is `ConnectionAborted`.
    pub async fn read_while<F: std::future::Future>(
        &self,
        buf: &mut [u8],
        stop: F,
        wanted: impl Fn() -> bool,
    ) -> io::Result<Option<usize>> {
        tokio::pin!(stop);
        loop {
            let mut guard = tokio::select! {
                biased;
                g = self.fd.readable() => g?,
                _ = &mut stop => return Ok(None),
            };
            if !wanted() {
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
            match guard.try_io(|_| self.raw_read(buf)) {
                Ok(result) => return result.map(Some),
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what is there without waiting (`WouldBlock` if nothing).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.raw_read(buf)
    }

    /// Writes everything, waiting for room as needed.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            let written = guard.try_io(|inner| {
                // SAFETY: writes at most data.len() bytes from a live slice.
                let n = unsafe { libc::write(inner.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match written {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn pipe_round_trip_and_eof() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let rs = FdStream::new(r, false).unwrap();
        let ws = FdStream::new(w, false).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            rs.try_read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        ws.write_all(b"hello").await.unwrap();
        assert_eq!(rs.read(&mut buf).await.unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        drop(ws);
        assert_eq!(rs.read(&mut buf).await.unwrap(), 0);
    }
}
