//! The logger's stderr, never blocking.
//!
//! As PID 1 stderr is the guest console: a serial port or hvc0 that the
//! host drains at its own pace, or not at all (a console socket nobody
//! reads, an interrupt the emulated UART never raises). A blocking write
//! there would stop the agent's only async thread, and with it every
//! connection, while the agent still looks alive. So the logger writes to a
//! descriptor of its own, opened with `O_NONBLOCK` on the same pipe or
//! terminal: when the console does not keep up, lines are dropped and
//! counted, the rest of a line cut short is finished before the next one,
//! and the count is reported once the console takes lines again. Regular
//! files (a host test's log) never block and are written as before.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::time::SystemTime;

/// Stderr for the logger: a non-blocking descriptor of its own on a pipe or
/// terminal, stderr itself otherwise (a file, a socket, no stderr at all).
pub fn stderr_sink() -> super::Sink {
    match nonblocking_stderr() {
        Some(file) => Box::new(NonBlocking::new(file)),
        None => Box::new(std::io::stderr()),
    }
}

fn nonblocking_stderr() -> Option<File> {
    let meta = std::fs::metadata("/proc/self/fd/2").ok()?;
    let ft = meta.file_type();
    if !(ft.is_fifo() || ft.is_char_device()) {
        return None;
    }
    // Opening the /proc link makes a new open file description of the same
    // pipe or terminal: O_NONBLOCK on it leaves fd 2 (shared with the
    // launcher and anything that inherits it) as it was.
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/proc/self/fd/2")
        .ok()
}

/// A writer that never waits: see the module's comment.
pub struct NonBlocking<W: Write> {
    out: W,
    /// The unwritten end of a line cut short.
    pending: Vec<u8>,
    /// Lines dropped since the last report.
    dropped: u64,
}

impl<W: Write> NonBlocking<W> {
    pub fn new(out: W) -> Self {
        NonBlocking {
            out,
            pending: Vec::new(),
            dropped: 0,
        }
    }

    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes as much of `buf` as goes without waiting; returns how much.
    fn try_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.out.write(&buf[done..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Finishes a line cut short; true when nothing is pending any more.
    fn flush_pending(&mut self) -> std::io::Result<bool> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        let pending = std::mem::take(&mut self.pending);
        let n = self.try_write(&pending)?;
        self.pending = pending[n..].to_vec();
        Ok(self.pending.is_empty())
    }

    /// Writes one whole line, or keeps its rest for later, or drops it.
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if !self.flush_pending()? {
            self.dropped += 1;
            return Ok(());
        }
        if self.dropped > 0 {
            let note = super::format_line(
                &std::process::id().to_string(),
                log::Level::Warn,
                "kata_agent::logging",
                &format!(
                    "{} log lines dropped: the console did not take them",
                    self.dropped
                ),
                SystemTime::now(),
            );
            let n = self.try_write(note.as_bytes())?;
            if n == 0 {
                self.dropped += 1;
                return Ok(());
            }
            self.dropped = 0;
            if n < note.len() {
                self.pending = note.as_bytes()[n..].to_vec();
                self.dropped = 1;
                return Ok(());
            }
        }
        let n = self.try_write(line)?;
        if n == 0 {
            self.dropped += 1;
        } else if n < line.len() {
            self.pending = line[n..].to_vec();
        }
        Ok(())
    }
}

impl<W: Write> Write for NonBlocking<W> {
    /// `buf` is one log line: it is taken whole, written, kept or dropped.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_pending().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then would block until given more room.
    struct Tight {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn sink(room: usize) -> NonBlocking<Tight> {
        NonBlocking::new(Tight {
            data: Vec::new(),
            room,
        })
    }

    #[test]
    fn whole_lines_pass_through() {
        let mut s = sink(100);
        s.write_all(b"one\n").unwrap();
        s.write_all(b"two\n").unwrap();
        assert_eq!(s.out.data, b"one\ntwo\n");
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn a_full_console_drops_lines_and_never_waits() {
        let mut s = sink(6);
        s.write_all(b"first\n").unwrap();
        for _ in 0..1000 {
            s.write_all(b"lost\n").unwrap();
        }
        assert_eq!(s.out.data, b"first\n");
        assert_eq!(s.dropped(), 1000);
    }

    #[test]
    fn a_cut_line_is_finished_first_and_drops_are_reported() {
        let mut s = sink(3);
        s.write_all(b"abcdef\n").unwrap();
        assert_eq!(s.out.data, b"abc");
        // Still no room: the rest waits, the new line is dropped.
        s.write_all(b"gone\n").unwrap();
        assert_eq!(s.dropped(), 1);
        s.out.room = 10_000;
        s.write_all(b"next\n").unwrap();
        let text = String::from_utf8(s.out.data.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "abcdef");
        assert!(
            lines[1].contains("1 log lines dropped"),
            "no report of the drop: {text}"
        );
        assert_eq!(lines[2], "next");
        assert_eq!(lines.len(), 3);
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn a_pipe_nobody_reads_never_blocks_the_writer() {
        let (rx, tx) = nix::unistd::pipe().unwrap();
        use std::os::fd::AsRawFd;
        nix::fcntl::fcntl(
            tx.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut s = NonBlocking::new(File::from(tx));
        let line = [b'x'; 1023];
        // Far more than a pipe holds (64 KiB): a blocking writer would hang.
        for _ in 0..1000 {
            s.write_all(&line).unwrap();
        }
        assert!(s.dropped() > 0);
        drop(rx);
    }
}
