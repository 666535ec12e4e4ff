//! Connecting to the agent: one byte stream per address form, retried until
//! a deadline the way a shim waits for a booting guest.

use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;
use ttrpc::r#async::transport::Socket;
use ttrpc::r#async::Client;

use crate::addr::Address;

/// First pause between attempts; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(200);
/// A hybrid vsock reply line longer than this is not a reply.
const MAX_REPLY: usize = 256;
/// How long one hybrid vsock handshake may wait for its reply before the
/// connection is dropped and tried again. A guest that is up answers at
/// once (OK, or a refusal while nothing listens yet); a request that gets
/// no reply at all was lost between the VMM's backend and the guest's
/// vsock, where a retry on a new connection gets through (Kata's Go shim
/// does the same, after 10 s). Without it, one lost request cost the whole
/// `--timeout`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Linux `EAFNOSUPPORT`: no vsock transport in this kernel; retrying cannot help.
const EAFNOSUPPORT: i32 = 97;

/// Connects and wraps the stream in a ttrpc client. `timeout` bounds the
/// whole connect phase, retries included; `None` waits forever.
pub async fn connect(addr: &Address, timeout: Option<Duration>) -> Result<Client> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let socket = connect_with_retry(addr, deadline).await?;
    Ok(Client::new(socket))
}

/// Tries to connect (and, for hybrid vsock, to finish the handshake) until
/// it works or `deadline` passes, pausing 20 ms, then up to 200 ms, between
/// attempts. Errors that no wait can cure end the loop at once.
pub async fn connect_with_retry(addr: &Address, deadline: Option<Instant>) -> Result<Socket> {
    connect_with_retry_within(addr, deadline, HANDSHAKE_TIMEOUT).await
}

/// [`connect_with_retry`], each hybrid vsock handshake bounded by
/// `handshake`.
async fn connect_with_retry_within(
    addr: &Address,
    deadline: Option<Instant>,
    handshake: Duration,
) -> Result<Socket> {
    let started = Instant::now();
    let mut pause = RETRY_FIRST;
    let mut attempts = 0u32;
    let mut last_err: Option<io::Error> = None;
    loop {
        attempts += 1;
        let attempt = match deadline {
            Some(d) => match tokio::time::timeout_at(d, connect_once(addr, handshake)).await {
                Ok(result) => result,
                // An attempt cut short by the deadline says less than the
                // failure before it, if there was one.
                Err(_) => Err(last_err.take().unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::TimedOut, "no answer before the deadline")
                })),
            },
            None => connect_once(addr, handshake).await,
        };
        let err = match attempt {
            Ok(socket) => return Ok(socket),
            Err(e) => e,
        };
        if is_permanent(&err) {
            return Err(anyhow!("connect {addr}: {err}"));
        }
        let now = Instant::now();
        if let Some(d) = deadline {
            if now >= d {
                return Err(anyhow!(
                    "connect {addr}: {err} (gave up after {}, {attempts} attempt{})",
                    short(now.duration_since(started)),
                    if attempts == 1 { "" } else { "s" }
                ));
            }
            tokio::time::sleep(pause.min(d - now)).await;
        } else {
            tokio::time::sleep(pause).await;
        }
        pause = (pause * 2).min(RETRY_MAX);
        last_err = Some(err);
    }
}

/// `250ms`, `5.0s`: enough precision for a message.
fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn is_permanent(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
    ) || err.raw_os_error() == Some(EAFNOSUPPORT)
}

async fn connect_once(addr: &Address, handshake: Duration) -> io::Result<Socket> {
    match addr {
        Address::Unix(path) => Ok(Socket::new(UnixStream::connect(path).await?)),
        Address::UnixAbstract(name) => Ok(Socket::new(connect_abstract(name)?)),
        Address::Vsock { cid, port } => Socket::connect_vsock(format!("{cid}:{port}")).await,
        Address::HybridVsock { path, port } => {
            let stream = connect_hybrid_within(path, *port, handshake).await?;
            Ok(Socket::new(stream))
        }
    }
}

fn connect_abstract(name: &str) -> io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    // A Unix connect does not wait for the peer to accept, so the blocking
    // call returns at once.
    let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

/// Connects to the VMM's Unix socket and asks it to forward to guest `port`,
/// waiting at most `handshake` for the reply: past it, the error says so and
/// the connection is dropped.
async fn connect_hybrid_within(
    path: &Path,
    port: u32,
    handshake: Duration,
) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(path).await?;
    match tokio::time::timeout(handshake, hybrid_handshake(&mut stream, port)).await {
        Ok(reply) => reply.map(|_| stream),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "hybrid vsock handshake for port {port}: no reply within {}",
                short(handshake)
            ),
        )),
    }
}

/// Sends `CONNECT <port>\n` and reads one reply line; any line starting with
/// `OK ` means the stream now reaches the guest. Reads byte by byte so that
/// nothing after the reply line is taken from the ttrpc stream.
pub async fn hybrid_handshake<S>(stream: &mut S, port: u32) -> io::Result<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    stream.flush().await?;
    let mut line = Vec::with_capacity(32);
    loop {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "hybrid vsock handshake for port {port}: connection closed before the OK reply{}",
                    if line.is_empty() {
                        String::new()
                    } else {
                        format!(" (got {:?})", String::from_utf8_lossy(&line))
                    }
                ),
            ));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("hybrid vsock handshake for port {port}: reply line too long"),
            ));
        }
    }
    let reply = String::from_utf8_lossy(&line).into_owned();
    if reply.starts_with("OK ") {
        Ok(reply)
    } else {
        // Not permanent: a VMM may refuse while the guest is still booting.
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("hybrid vsock handshake for port {port}: unexpected reply {reply:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// A fresh socket path in the temp dir, removed when dropped.
    struct TempSock(PathBuf);
    impl TempSock {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("agent-ctl-{tag}-{}-{n}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            Self(path)
        }
    }
    impl Drop for TempSock {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Reads the CONNECT line a hybrid vsock client sends.
    async fn read_connect(stream: &mut UnixStream) -> String {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        line
    }

    #[tokio::test]
    async fn handshake_ok_then_stream_is_passed_through() {
        let sock = TempSock::new("ok");
        let listener = UnixListener::bind(&sock.0).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let line = read_connect(&mut s).await;
            // The reply and the first guest bytes in one write: the client
            // must not swallow what follows the reply line.
            s.write_all(b"OK 123\nping").await.unwrap();
            line
        });
        let mut stream = connect_hybrid_within(&sock.0, 1024, HANDSHAKE_TIMEOUT)
            .await
            .unwrap();
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"ping");
        assert_eq!(server.await.unwrap(), "CONNECT 1024\n");
    }

    #[tokio::test]
    async fn handshake_rejects_other_replies() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let _ = server.read(&mut buf).await;
            server.write_all(b"ERR no listener\n").await.unwrap();
        });
        let err = hybrid_handshake(&mut client, 5).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("unexpected reply \"ERR no listener\""),
            "{err}"
        );
        assert!(!is_permanent(&err));
    }

    #[tokio::test]
    async fn handshake_eof_is_an_error() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let _ = server.read(&mut buf).await;
            server.write_all(b"OK").await.unwrap();
            drop(server);
        });
        let err = hybrid_handshake(&mut client, 5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("(got \"OK\")"), "{err}");
    }

    /// Nothing listens at first; then a listener that drops the first
    /// connection and refuses the second; the third is accepted. The client
    /// keeps retrying and gets through.
    #[tokio::test]
    async fn retries_until_the_vmm_answers() {
        let sock = TempSock::new("retry");
        let path = sock.0.clone();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let listener = UnixListener::bind(&path).unwrap();
            // 1: drop without a reply.
            let (mut s, _) = listener.accept().await.unwrap();
            read_connect(&mut s).await;
            drop(s);
            // 2: refuse.
            let (mut s, _) = listener.accept().await.unwrap();
            read_connect(&mut s).await;
            s.write_all(b"FAILED\n").await.unwrap();
            drop(s);
            // 3: accept.
            let (mut s, _) = listener.accept().await.unwrap();
            let line = read_connect(&mut s).await;
            s.write_all(b"OK 1073741824\n").await.unwrap();
            (line, s)
        });
        let addr = Address::HybridVsock {
            path: sock.0.clone(),
            port: 1024,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let socket = connect_with_retry(&addr, Some(deadline)).await;
        assert!(socket.is_ok(), "{:?}", socket.err());
        let (line, _s) = server.await.unwrap();
        assert_eq!(line, "CONNECT 1024\n");
    }

    /// The first handshake is swallowed (accepted, never answered, held
    /// open), as when the request is lost on its way into a booting guest;
    /// the second is answered. The client drops the first after its
    /// handshake bound and gets through on a new connection, well before
    /// the deadline it would otherwise have waited for.
    #[tokio::test]
    async fn a_lost_handshake_is_retried_on_a_new_connection() {
        let sock = TempSock::new("lost");
        let listener = UnixListener::bind(&sock.0).unwrap();
        let server = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            read_connect(&mut first).await;
            let (mut s, _) = listener.accept().await.unwrap();
            let line = read_connect(&mut s).await;
            s.write_all(b"OK 7\n").await.unwrap();
            (line, first, s)
        });
        let addr = Address::HybridVsock {
            path: sock.0.clone(),
            port: 1024,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let socket =
            connect_with_retry_within(&addr, Some(deadline), Duration::from_millis(200)).await;
        assert!(socket.is_ok(), "{:?}", socket.err());
        let (line, _first, _s) = server.await.unwrap();
        assert_eq!(line, "CONNECT 1024\n");
    }

    /// A handshake with no reply within its bound is an error that says so
    /// (and is retried: it is not permanent).
    #[tokio::test]
    async fn a_silent_handshake_times_out() {
        let sock = TempSock::new("mute");
        let listener = UnixListener::bind(&sock.0).unwrap();
        let server = tokio::spawn(async move { listener.accept().await.unwrap() });
        let err = connect_hybrid_within(&sock.0, 1024, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("no reply within 100ms"), "{err}");
        assert!(!is_permanent(&err));
        drop(server.await.unwrap());
    }

    /// A VMM that accepts but never answers: the client gives up at the
    /// deadline, naming the address.
    #[tokio::test]
    async fn silent_vmm_hits_the_deadline() {
        let sock = TempSock::new("silent");
        let listener = UnixListener::bind(&sock.0).unwrap();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                match listener.accept().await {
                    Ok((s, _)) => held.push(s),
                    Err(_) => return,
                }
            }
        });
        let addr = Address::HybridVsock {
            path: sock.0.clone(),
            port: 1024,
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let err = connect_with_retry(&addr, Some(deadline))
            .await
            .err()
            .unwrap();
        let elapsed = started.elapsed();
        server.abort();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("connect {addr}")), "{msg}");
        assert!(msg.contains("gave up after"), "{msg}");
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }

    #[tokio::test]
    async fn missing_unix_socket_hits_the_deadline() {
        let sock = TempSock::new("missing");
        let addr = Address::Unix(sock.0.clone());
        let deadline = Instant::now() + Duration::from_millis(100);
        let err = connect_with_retry(&addr, Some(deadline))
            .await
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(msg.contains("No such file or directory"), "{msg}");
        assert!(msg.contains("attempts"), "{msg}");
    }

    #[tokio::test]
    async fn unix_and_abstract_connect() {
        let sock = TempSock::new("plain");
        let _listener = UnixListener::bind(&sock.0).unwrap();
        let addr = Address::Unix(sock.0.clone());
        assert!(
            connect_with_retry(&addr, Some(Instant::now() + Duration::from_secs(2)))
                .await
                .is_ok()
        );

        use std::os::linux::net::SocketAddrExt;
        let name = format!("agent-ctl-test-{}", std::process::id());
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let std_listener = std::os::unix::net::UnixListener::bind_addr(&sa).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let _listener = UnixListener::from_std(std_listener).unwrap();
        let addr = Address::UnixAbstract(name);
        assert!(
            connect_with_retry(&addr, Some(Instant::now() + Duration::from_secs(2)))
                .await
                .is_ok()
        );
    }
}
