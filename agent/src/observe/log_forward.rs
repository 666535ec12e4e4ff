//! Log lines to the host over vsock (`agent.log_vport=N`).
//!
//! The logger writes into a [`LogBuffer`] and never waits for the network:
//! while no reader is connected (the guest boots before the host connects)
//! lines are kept, up to a bound; past it the oldest are dropped and the
//! next reader is told how many with a note line. [`serve`] listens on the
//! port and streams to one reader at a time: what was kept, then every new
//! line as it comes.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// How long the last lines get to leave the guest before it powers off.
const SEND_GRACE: Duration = Duration::from_millis(100);

/// How much is kept while no reader is connected.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

#[derive(Default)]
struct Inner {
    /// One log line (a `write` call of the logger) per entry.
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// The port could not be served: lines go to stderr instead.
    to_stderr: bool,
    /// A duplicate of the connected reader's socket, for the last lines
    /// before power-off (see [`LogBuffer::drain_blocking`]).
    reader: Option<OwnedFd>,
}

/// Bounded store of log lines between the logger and the vsock reader.
pub struct LogBuffer {
    inner: Mutex<Inner>,
    ready: Notify,
    capacity: usize,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Arc<LogBuffer> {
        Arc::new(LogBuffer {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Stores one line, dropping the oldest ones past the capacity.
    pub fn push(&self, line: &[u8]) {
        let mut st = self.lock();
        if st.to_stderr {
            drop(st);
            let _ = io::stderr().write_all(line);
            return;
        }
        st.lines.push_back(line.to_vec());
        st.bytes += line.len();
        while st.bytes > self.capacity {
            match st.lines.pop_front() {
                Some(old) => {
                    st.bytes -= old.len();
                    st.dropped_lines += 1;
                    st.dropped_bytes += old.len() as u64;
                }
                None => break,
            }
        }
        drop(st);
        self.ready.notify_one();
    }

    /// Everything stored, oldest first, preceded by a note if lines were
    /// dropped; `None` when empty.
    pub fn take(&self) -> Option<Vec<u8>> {
        let mut st = self.lock();
        if st.lines.is_empty() && st.dropped_lines == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(st.bytes + 256);
        if st.dropped_lines > 0 {
            let msg = format!(
                "log forwarding: {} lines ({} bytes) dropped while no reader was connected",
                st.dropped_lines, st.dropped_bytes
            );
            let pid = std::process::id().to_string();
            let note = crate::logging::format_line(
                &pid,
                log::Level::Warn,
                module_path!(),
                &msg,
                SystemTime::now(),
            );
            out.extend_from_slice(note.as_bytes());
            st.dropped_lines = 0;
            st.dropped_bytes = 0;
        }
        for line in st.lines.drain(..) {
            out.extend_from_slice(&line);
        }
        st.bytes = 0;
        Some(out)
    }

    /// Puts back what a reader did not get, in front of newer lines.
    fn unread(&self, data: Vec<u8>) {
        let mut st = self.lock();
        st.bytes += data.len();
        st.lines.push_front(data);
        drop(st);
        self.ready.notify_one();
    }

    /// From now on lines go to stderr (with what was kept): nobody can
    /// connect, and the console is better than nothing.
    pub fn fall_back_to_stderr(&self) {
        let kept = self.take();
        let mut st = self.lock();
        st.to_stderr = true;
        drop(st);
        if let Some(kept) = kept {
            let _ = io::stderr().write_all(&kept);
        }
    }

    /// Writes what is kept to the connected reader, if any, synchronously
    /// and within `timeout`: the last lines before the guest powers off,
    /// when the async task will not run again.
    pub fn drain_blocking(&self, timeout: Duration) {
        let reader = match self.lock().reader.as_ref().map(|fd| fd.try_clone()) {
            Some(Ok(fd)) => fd,
            _ => return,
        };
        let Some(data) = self.take() else { return };
        let deadline = Instant::now() + timeout;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            if ms == 0 {
                return;
            }
            let mut fds = [nix::poll::PollFd::new(
                reader.as_fd(),
                nix::poll::PollFlags::POLLOUT,
            )];
            match nix::poll::poll(&mut fds, ms) {
                Ok(n) if n > 0 => {}
                Err(nix::errno::Errno::EINTR) => continue,
                _ => return,
            }
            match nix::unistd::write(&reader, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
        // virtio-vsock hands the bytes to the device from a kernel worker;
        // a power-off right now would lose them. Let it run (bounded).
        std::thread::sleep(
            deadline
                .saturating_duration_since(Instant::now())
                .min(SEND_GRACE),
        );
    }

    /// Bytes waiting for a reader.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().bytes
    }
}

/// The logger's sink: a writer into the buffer.
pub struct BufferSink(pub Arc<LogBuffer>);

impl Write for BufferSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams the buffer to one reader until a write or read fails (the reader
/// left). Whatever could not be written is kept for the next reader.
pub async fn stream_to<S>(buffer: &LogBuffer, stream: &mut S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + AsFd + Unpin,
{
    struct Connected<'a>(&'a LogBuffer);
    impl Drop for Connected<'_> {
        fn drop(&mut self) {
            self.0.lock().reader = None;
        }
    }
    buffer.lock().reader = Some(stream.as_fd().try_clone_to_owned()?);
    let _connected = Connected(buffer);
    let mut probe = [0u8; 256];
    // Whether the reader may still send: it has nothing to say, a read only
    // tells that it left. A reader that only closed its sending side (EOF)
    // still reads; if it is gone, the next write fails.
    let mut open = true;
    loop {
        while let Some(chunk) = buffer.take() {
            if let Err(e) = stream.write_all(&chunk).await {
                buffer.unread(chunk);
                return Err(e);
            }
        }
        stream.flush().await?;
        tokio::select! {
            _ = buffer.ready.notified() => {}
            r = stream.read(&mut probe), if open => match r {
                Ok(0) => open = false,
                Ok(_) => {}
                Err(e) => return Err(e),
            },
        }
    }
}

/// Listens on vsock `port` and streams the logs to each reader in turn.
/// If the port cannot be listened on, logs go to stderr instead.
pub async fn serve(buffer: Arc<LogBuffer>, port: u32) {
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
    let listener = match tokio_vsock::VsockListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            buffer.fall_back_to_stderr();
            log::error!("log forwarding: listen on vsock port {port}: {e}; logging to stderr");
            return;
        }
    };
    log::info!("log forwarding: listening on vsock port {port}");
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("log forwarding: accept on vsock port {port}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        log::info!("log forwarding: reader {peer:?} connected");
        if let Err(e) = stream_to(&buffer, &mut stream).await {
            log::info!("log forwarding: reader {peer:?} left: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn keeps_lines_until_read() {
        let b = LogBuffer::new(1024);
        assert!(b.take().is_none());
        let mut sink = BufferSink(b.clone());
        sink.write_all(b"one\n").unwrap();
        sink.write_all(b"two\n").unwrap();
        assert_eq!(b.take().unwrap(), b"one\ntwo\n");
        assert!(b.take().is_none());
    }

    #[test]
    fn drops_oldest_past_capacity_and_says_so() {
        let b = LogBuffer::new(10);
        for l in [b"aaaa\n", b"bbbb\n", b"cccc\n"] {
            b.push(l);
        }
        assert_eq!(b.pending(), 10);
        let out = String::from_utf8(b.take().unwrap()).unwrap();
        let (note, rest) = out.split_once('\n').unwrap();
        assert!(
            note.contains("1 lines (5 bytes) dropped while no reader was connected"),
            "{note}"
        );
        assert!(note.contains(r#""level":"warn""#), "{note}");
        assert_eq!(rest, "bbbb\ncccc\n");
        // The note is given once.
        b.push(b"d\n");
        assert_eq!(b.take().unwrap(), b"d\n");
    }

    #[test]
    fn streams_kept_then_live_lines_and_ends_when_the_reader_leaves() {
        let rt = rt();
        rt.block_on(async {
            let b = LogBuffer::new(DEFAULT_CAPACITY);
            b.push(b"boot line\n");
            let (mut agent_end, host_end) = tokio::net::UnixStream::pair().unwrap();
            let b2 = b.clone();
            let task = tokio::spawn(async move { stream_to(&b2, &mut agent_end).await });
            let mut lines = tokio::io::BufReader::new(host_end).lines();
            assert_eq!(lines.next_line().await.unwrap().unwrap(), "boot line");
            b.push(b"live line\n");
            assert_eq!(lines.next_line().await.unwrap().unwrap(), "live line");
            drop(lines);
            // The reader's departure shows at the next write, which is kept.
            b.push(b"after\n");
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .expect("stream_to ends when the reader leaves")
                .unwrap();
            assert!(r.is_err(), "{r:?}");
            assert_eq!(b.take().unwrap(), b"after\n");
        });
    }

    #[test]
    fn a_reader_that_closed_its_sending_side_still_gets_lines() {
        let rt = rt();
        rt.block_on(async {
            let b = LogBuffer::new(DEFAULT_CAPACITY);
            let (mut agent_end, host_end) = tokio::net::UnixStream::pair().unwrap();
            let (host_read, mut host_write) = host_end.into_split();
            host_write.shutdown().await.unwrap();
            let b2 = b.clone();
            let task = tokio::spawn(async move { stream_to(&b2, &mut agent_end).await });
            tokio::task::yield_now().await;
            b.push(b"still read\n");
            let mut lines = tokio::io::BufReader::new(host_read).lines();
            assert_eq!(lines.next_line().await.unwrap().unwrap(), "still read");
            task.abort();
        });
    }

    #[test]
    fn the_last_lines_go_out_synchronously_before_power_off() {
        let rt = rt();
        rt.block_on(async {
            let b = LogBuffer::new(DEFAULT_CAPACITY);
            let (mut agent_end, host_end) = tokio::net::UnixStream::pair().unwrap();
            let b2 = b.clone();
            let task = tokio::spawn(async move { stream_to(&b2, &mut agent_end).await });
            b.push(b"first\n");
            let mut lines = tokio::io::BufReader::new(host_end).lines();
            assert_eq!(lines.next_line().await.unwrap().unwrap(), "first");
            // The runtime's thread is busy powering off: the task cannot run.
            b.push(b"powering off\n");
            b.drain_blocking(Duration::from_secs(1));
            task.abort();
            assert_eq!(lines.next_line().await.unwrap().unwrap(), "powering off");
        });
        // Without a reader it returns at once and keeps the lines.
        let b = LogBuffer::new(DEFAULT_CAPACITY);
        b.push(b"kept\n");
        b.drain_blocking(Duration::from_secs(1));
        assert_eq!(b.take().unwrap(), b"kept\n");
    }

    #[test]
    fn unsent_data_is_kept_for_the_next_reader() {
        let rt = rt();
        rt.block_on(async {
            let b = LogBuffer::new(DEFAULT_CAPACITY);
            let (mut agent_end, host_end) = tokio::net::UnixStream::pair().unwrap();
            drop(host_end);
            b.push(b"kept\n");
            assert!(stream_to(&b, &mut agent_end).await.is_err());
            assert_eq!(b.take().unwrap(), b"kept\n");
        });
    }
}
