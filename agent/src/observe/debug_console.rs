//! The debug console (`agent.debug_console`, `agent.debug_console_vport=N`):
//! a shell from the guest's rootfs on a PTY, one per connection to vsock
//! port N; without a port, a shell on `/dev/console` (the serial console),
//! started again whenever it exits. Off by default; a developer's tool, as
//! in Kata.
//!
//! The shell is started with `std::process::Command`; the only code run
//! between fork and exec is `setsid`, `TIOCSCTTY` and the reset of signal
//! dispositions (async-signal-safe syscalls), so the multi-threaded agent
//! never runs Rust code in a forked child. The shell is started through the agent's reaper, which collects
//! it and tells the console when it exited.
//! When the host disconnects, the PTY master is closed and the kernel
//! hangs the shell's session up (SIGHUP).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::reaper::{ExitWatch, Reaper};
use crate::stream::FdStream;

/// Shells tried in order, as Kata does.
pub const SHELLS: &[&str] = &["/bin/bash", "/bin/sh"];

/// The first shell of [`SHELLS`] the rootfs has.
pub fn find_shell() -> Option<&'static str> {
    SHELLS.iter().copied().find(|s| Path::new(s).exists())
}

/// Starts `shell` on a new PTY, as the leader of a new session whose
/// controlling terminal is the PTY. Returns the master (for the runtime:
/// call from inside it), the shell's pid and its exit.
pub fn spawn_shell(reaper: &Reaper, shell: &str) -> io::Result<(FdStream, u32, ExitWatch)> {
    // Close-on-exec from the start: a master inherited by a child spawned
    // meanwhile would keep the shell from being hung up.
    let (master, slave) = rustjail::open_pty_pair()?;
    let (pid, exit) = spawn_on_terminal(reaper, shell, slave, 0)?;
    Ok((FdStream::new(master, true)?, pid, exit))
}

/// Copies between the host's stream and the PTY until either side ends:
/// the host disconnects, or the shell exits.
pub async fn bridge<S>(stream: &mut S, pty: &FdStream) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut from_host = [0u8; 4096];
    let mut from_pty = [0u8; 4096];
    loop {
        tokio::select! {
            r = stream.read(&mut from_host) => match r? {
                0 => return Ok(()),
                n => pty.write_all(&from_host[..n]).await?,
            },
            r = pty.read(&mut from_pty) => match r? {
                0 => return Ok(()),
                n => {
                    stream.write_all(&from_pty[..n]).await?;
                    stream.flush().await?;
                }
            },
        }
    }
}

/// Starts `shell` on the console `tty`, as the leader of a new session whose
/// controlling terminal it is (taken over if another session had it).
fn spawn_on_tty(reaper: &Reaper, shell: &str, tty: OwnedFd) -> io::Result<(u32, ExitWatch)> {
    // The argument 1 steals the terminal from a session that still holds
    // it; PID 1 has CAP_SYS_ADMIN.
    spawn_on_terminal(reaper, shell, tty, 1)
}

/// Starts `shell` with `tty` as its stdio and controlling terminal, as the
/// leader of a new session; `steal` is TIOCSCTTY's argument.
fn spawn_on_terminal(
    reaper: &Reaper,
    shell: &str,
    tty: OwnedFd,
    steal: libc::c_int,
) -> io::Result<(u32, ExitWatch)> {
    let mut cmd = Command::new(shell);
    cmd.stdin(Stdio::from(tty.try_clone()?))
        .stdout(Stdio::from(tty.try_clone()?))
        .stderr(Stdio::from(tty))
        .env("TERM", "vt100");
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setsid(2), ioctl(2), signal(2) and sigprocmask(2), all
    // async-signal-safe; it allocates nothing and touches no lock. fd 0 is
    // the terminal by then.
    unsafe {
        cmd.pre_exec(move || {
            // The shell must die of SIGHUP when the host leaves, even if
            // the agent was started with it ignored.
            rustjail::default_signals();
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, steal) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Dropping the Child neither waits nor kills: the reaper collects it.
    let (child, exit) = reaper.spawn(&mut cmd)?;
    Ok((child.id(), exit))
}

/// The serial console: a shell on `/dev/console`, again after each exit.
pub async fn serve_serial(reaper: Reaper) {
    let Some(shell) = find_shell() else {
        log::warn!(
            "debug console: no shell in the rootfs ({}); not started",
            SHELLS.join(", ")
        );
        return;
    };
    log::info!("debug console: {shell} on /dev/console");
    loop {
        let console = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/console");
        let (pid, exit) = match console.and_then(|c| spawn_on_tty(&reaper, shell, c.into())) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("debug console: start {shell} on /dev/console: {e}; not started");
                return;
            }
        };
        exit.wait().await;
        log::info!("debug console: shell pid {pid} exited; starting another");
        // A shell that cannot start must not turn into a busy loop.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Listens on vsock `port`; each connection gets its own shell.
pub async fn serve(reaper: Reaper, port: u32) {
    let Some(shell) = find_shell() else {
        log::warn!(
            "debug console: no shell in the rootfs ({}); not started",
            SHELLS.join(", ")
        );
        return;
    };
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
    let listener = match tokio_vsock::VsockListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            log::error!("debug console: listen on vsock port {port}: {e}");
            return;
        }
    };
    log::info!("debug console: {shell} on vsock port {port}");
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("debug console: accept on vsock port {port}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let reaper = reaper.clone();
        tokio::spawn(async move {
            let (pty, pid, _exit) = match spawn_shell(&reaper, shell) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("debug console: start {shell}: {e}");
                    return;
                }
            };
            log::info!("debug console: {peer:?} connected, shell pid {pid}");
            let r = bridge(&mut stream, &pty).await;
            log::info!("debug console: session of shell pid {pid} ended ({r:?})");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_pid(pid: u32) -> Option<i32> {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => Some(c),
            _ => None,
        }
    }

    #[test]
    fn a_shell_on_a_pty_answers_and_ends_with_exit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // No reaper runs in unit tests: the test waits for its pid.
            let (pty, pid, _exit) = match spawn_shell(&Reaper::new(), "/bin/sh") {
                Ok(s) => s,
                Err(e) => {
                    crate::storage::testns::skip(&format!("no PTY here: {e}"));
                    return;
                }
            };
            let (mut agent_end, mut host_end) = tokio::net::UnixStream::pair().unwrap();
            let task = tokio::spawn(async move { bridge(&mut agent_end, &pty).await });
            host_end
                .write_all(b"echo h''i; tty >/dev/null && echo on-a-tty; exit\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            let read_all = host_end.read_to_end(&mut out);
            tokio::time::timeout(std::time::Duration::from_secs(10), read_all)
                .await
                .expect("the shell's session ends after exit")
                .unwrap();
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("hi\r\n"), "{text}");
            assert!(text.contains("on-a-tty"), "{text}");
            task.await.unwrap().unwrap();
            assert_eq!(wait_pid(pid), Some(0));
        });
    }

    #[test]
    fn the_shell_is_hung_up_when_the_host_leaves() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // No reaper runs in unit tests: the test waits for its pid.
            let (pty, pid, _exit) = match spawn_shell(&Reaper::new(), "/bin/sh") {
                Ok(s) => s,
                Err(e) => {
                    crate::storage::testns::skip(&format!("no PTY here: {e}"));
                    return;
                }
            };
            // A session whose foreground program does not read the
            // terminal: only the hang-up can end it, not an end of input.
            pty.write_all(b"exec sleep 1000\n").await.unwrap();
            let comm = format!("/proc/{pid}/comm");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the shell did not exec sleep"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let (mut agent_end, host_end) = tokio::net::UnixStream::pair().unwrap();
            drop(host_end);
            // The host is gone: the session ends (on its EOF, or on a failed
            // write of the echoed line) and the master is closed.
            let _ = bridge(&mut agent_end, &pty).await;
            drop(pty);
            let status = tokio::task::spawn_blocking(move || {
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).ok()
            })
            .await
            .unwrap();
            assert_eq!(
                status,
                Some(nix::sys::wait::WaitStatus::Signaled(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGHUP,
                    false
                )),
                "the session ends by SIGHUP"
            );
        });
    }
}
