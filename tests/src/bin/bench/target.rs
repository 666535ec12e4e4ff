//! Starting any kata-agent binary the same way: in new mount, UTS and
//! network namespaces with a tmpfs on `/run`, its address in
//! `KATA_AGENT_SERVER_ADDR` (the one way upstream's agent takes it), its
//! stderr in a log file. Namespaces and mounts are made in the child
//! before the clock of [`spawn_to_first_check`] starts, so what is timed
//! is the agent's own start: exec, set-up, listen, answer.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use protocols::health::CheckRequest;

/// Which agent a binary is: ours takes `--cmdline` (so the host's kernel
/// command line is not read as the guest's); upstream's takes no flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Ours,
    Upstream,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub kind: Kind,
    pub exe: PathBuf,
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Ours => "ours",
            Kind::Upstream => "upstream",
        }
    }
}

/// A running agent; dropping it stops it (SIGTERM, then SIGKILL) and its
/// namespaces go with it.
pub struct Running {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// Two pipes between the bench and a child being started: the child says
/// it made its namespaces (`ready`), then waits for the go-ahead (`go`)
/// before its exec.
struct Gate {
    ready_r: OwnedFd,
    ready_w: OwnedFd,
    go_r: OwnedFd,
    go_w: OwnedFd,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own; on
    // success we take ownership of both exactly once.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: both descriptors were just returned by pipe2 and are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Gate {
    fn new() -> std::io::Result<Gate> {
        let (ready_r, ready_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        Ok(Gate {
            ready_r,
            ready_w,
            go_r,
            go_w,
        })
    }
}

/// The command for `t`, listening on `socket`, with the namespaces and
/// `/run` made in the child; with a gate, the child waits for it.
fn command(
    t: &Target,
    dir: &Path,
    socket: &Path,
    log: &Path,
    gate: Option<(i32, i32)>,
) -> std::io::Result<Command> {
    let mut cmd = Command::new(&t.exe);
    if t.kind == Kind::Ours {
        let cmdline = dir.join("cmdline");
        std::fs::write(&cmdline, "")?;
        cmd.arg("--cmdline").arg(cmdline);
    }
    cmd.env(
        "KATA_AGENT_SERVER_ADDR",
        format!("unix://{}", socket.display()),
    )
    .env_remove("KATA_AGENT_LOG_LEVEL")
    .current_dir("/")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log)?);
    integration_tests::private_run(
        &mut cmd,
        libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWNET,
    );
    if let Some((ready_w, go_r)) = gate {
        // SAFETY: the closure runs between fork and exec, after the
        // namespaces are made; it only writes and reads two pipe ends
        // opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let b = [1u8];
                let mut got = [0u8];
                if libc::write(ready_w, b.as_ptr().cast(), 1) != 1
                    || libc::read(go_r, got.as_mut_ptr().cast(), 1) != 1
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Ok(cmd)
}

fn check_frame() -> Vec<u8> {
    let payload = CheckRequest::new().write_to_bytes().unwrap_or_default();
    integration_tests::request_frame(1, "grpc.Health", "Check", &payload)
}

/// One Check on a fresh connection: whether a response frame came back.
fn answers(socket: &Path, frame: &[u8]) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut h = [0u8; 10];
    if s.write_all(frame).is_err() || s.read_exact(&mut h).is_err() {
        return false;
    }
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).is_ok()
}

/// Whether `fd` became readable within `limit`.
fn wait_readable(fd: &OwnedFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd we own.
    let n = unsafe { libc::poll(&mut p, 1, limit.as_millis() as i32) };
    n == 1 && p.revents & libc::POLLIN != 0
}

impl Running {
    /// Starts `t` and waits (up to 20 s) until it answers a Check.
    pub fn start(t: &Target) -> Result<Running, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let child = command(t, dir.path(), &socket, &log, None)
            .and_then(|mut c| c.spawn())
            .map_err(|e| format!("spawn {}: {e}", t.exe.display()))?;
        let mut r = Running {
            child: Some(child),
            _dir: dir,
            socket,
            log,
        };
        let frame = check_frame();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers(&r.socket, &frame) {
            if let Some(Ok(Some(st))) = r.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("{} exited ({st}): {}", t.name(), r.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("{} not ready in 20 s: {}", t.name(), r.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(r)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Stops the agent; returns whether it ended by SIGTERM within 10 s.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        // SAFETY: kill(2) on the pid of our own unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Time from the agent's exec to its first answered Check, `rounds` times.
/// The child makes its namespaces and `/run`, says so, and waits; the
/// clock starts when it is let go, so a wrapper's cost is not counted.
pub fn spawn_to_first_check(t: &Target, rounds: usize) -> Result<Vec<Duration>, String> {
    let frame = check_frame();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let gate = Gate::new().map_err(|e| format!("pipe: {e}"))?;
        let mut cmd = command(
            t,
            dir.path(),
            &socket,
            &log,
            Some((gate.ready_w.as_raw_fd(), gate.go_r.as_raw_fd())),
        )
        .map_err(|e| format!("{}: {e}", t.exe.display()))?;
        // spawn() returns only after the exec, so it runs on a thread of
        // its own while this one opens the gate.
        let spawner = std::thread::spawn(move || cmd.spawn());
        // The parent keeps its ends of both pipes until spawn() returned:
        // the fork may come after this thread got here.
        let made = wait_readable(&gate.ready_r, Duration::from_secs(20));
        let t0 = Instant::now();
        // SAFETY: write(2) of one byte from a local to a pipe we own.
        let _ = unsafe { libc::write(gate.go_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        let child = spawner
            .join()
            .map_err(|_| "spawner thread panicked".to_string())?
            .map_err(|e| format!("spawn {}: {e}", t.exe.display()))?;
        drop(gate);
        let mut r = Running {
            child: Some(child),
            _dir: dir,
            socket,
            log,
        };
        if !made {
            return Err(format!("{}: namespaces not made", t.name()));
        }
        let deadline = t0 + Duration::from_secs(20);
        loop {
            if answers(&r.socket, &frame) {
                samples.push(t0.elapsed());
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} not ready in 20 s: {}", t.name(), r.log_tail()));
            }
            std::hint::spin_loop();
        }
        r.stop();
    }
    Ok(samples)
}
