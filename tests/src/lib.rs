//! Harness for host integration tests and benchmarks: finds the built
//! `kata-agent` and `agent-ctl` binaries, runs the agent on a Unix socket in
//! a temporary directory, and speaks raw ttrpc frames for the tests that
//! must send what no well-behaved client would.

// A harness for tests: a failed step is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;

pub mod env;

/// ttrpc frame types.
pub const MESSAGE_TYPE_REQUEST: u8 = 1;
pub const MESSAGE_TYPE_RESPONSE: u8 = 2;

/// Directory holding the workspace's built binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("GUEST_AGENT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps, binaries one level up.
    let exe = std::env::current_exe().expect("current test executable");
    let mut dir = exe.parent().expect("executable directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; fails with the command that builds it.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --bins` first (or set GUEST_AGENT_BIN_DIR)",
        p.display()
    );
    p
}

/// A kata-agent process on a Unix socket in its own temporary directory.
/// Dropping it stops the agent (SIGTERM, then SIGKILL) and removes the dir.
pub struct Agent {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Starts the agent with an empty kernel command line and waits until it
    /// accepts connections.
    pub fn start() -> Agent {
        Agent::start_with(&bin("kata-agent"), "", &[])
    }

    /// Starts the agent in its own UTS and network namespaces too (as in a
    /// guest, its hostname, links and routes are its own). Any test whose
    /// requests may change the hostname or the network must use this.
    pub fn start_isolated() -> Agent {
        Agent::spawn(&bin("kata-agent"), "", &[], true)
    }

    pub fn start_with(exe: &Path, cmdline: &str, extra: &[&str]) -> Agent {
        Agent::spawn(exe, cmdline, extra, false)
    }

    /// Starts the agent with its stderr on `stderr` (a pipe a test holds)
    /// instead of the log file.
    pub fn start_with_stderr(cmdline: &str, stderr: Stdio) -> Agent {
        Agent::spawn_to(&bin("kata-agent"), cmdline, &[], false, Some(stderr))
    }

    /// As root, every agent runs in a mount namespace of its own with a
    /// fresh tmpfs on `/run`: what it mounts and writes there (bundles,
    /// sandbox files, storages) is its own, so agents of tests running in
    /// parallel never meet. Tests look at it through [`Agent::path`].
    fn spawn(exe: &Path, cmdline: &str, extra: &[&str], isolated: bool) -> Agent {
        Agent::spawn_to(exe, cmdline, extra, isolated, None)
    }

    fn spawn_to(
        exe: &Path,
        cmdline: &str,
        extra: &[&str],
        isolated: bool,
        stderr: Option<Stdio>,
    ) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let cmdline_file = dir.path().join("cmdline");
        std::fs::write(&cmdline_file, cmdline).expect("write cmdline");
        let log_file = std::fs::File::create(&log).expect("create log");
        let mut cmd = Command::new(exe);
        if is_root() {
            let mut flags = libc::CLONE_NEWNS;
            if isolated {
                flags |= libc::CLONE_NEWUTS | libc::CLONE_NEWNET;
            }
            private_run(&mut cmd, flags);
        } else {
            assert!(!isolated, "an isolated agent needs root");
        }
        let child = cmd
            .arg("--server-addr")
            .arg(format!("unix://{}", socket.display()))
            .arg("--cmdline")
            .arg(&cmdline_file)
            .args(extra)
            .env_remove("KATA_AGENT_SERVER_ADDR")
            .env_remove("KATA_AGENT_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.unwrap_or_else(|| log_file.into()))
            .spawn()
            .expect("spawn kata-agent");
        let mut agent = Agent {
            child: Some(child),
            dir,
            socket,
            log,
        };
        agent.wait_ready(Duration::from_secs(20));
        agent
    }

    /// `path` as the agent sees it, in its own mount namespace.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(rel)
    }

    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Polls until the socket accepts a connection; panics with the agent's
    /// log if it exits or the deadline passes.
    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("kata-agent exited early ({status}):\n{}", self.log_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "kata-agent not ready after {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `sig` and waits up to `limit` for the exit; returns the status.
    pub fn stop_with(&mut self, sig: i32, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Agent {
    /// Waits up to `limit` for the agent to exit by itself; its status, or
    /// `None` if it still runs then. Once it exited, [`Agent::pid`] is 0.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Reaped: nothing may signal its pid any more.
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A process that sits in another process's mount namespace, so that the
/// namespace can still be inspected after that process exited (an agent
/// after DestroySandbox). Dropping it ends it.
pub struct MountNsWitness {
    child: Child,
}

impl MountNsWitness {
    /// Enters the mount namespace of `pid` and waits until it is there.
    pub fn of(pid: u32) -> MountNsWitness {
        let child = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "--", "sleep", "100000"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn nsenter (util-linux)");
        let w = MountNsWitness { child };
        let target = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("mount namespace");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{}/ns/mnt", w.pid())).ok() != Some(target.clone()) {
            assert!(
                Instant::now() < deadline,
                "nsenter did not enter {target:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The mount points of the namespace, in mountinfo order.
    pub fn mounts(&self) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid()))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .collect()
    }

    /// The namespace's mountinfo text.
    pub fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid())).unwrap_or_default()
    }

    /// `path` as seen in the namespace.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(rel)
    }
}

impl Drop for MountNsWitness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(15));
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the tests run under CI (`CI` set and not `0`/`false`): there,
/// everything a test needs is installed, so a test that would skip fails.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Says why a test cannot run here, and returns so that the caller
/// returns. Under CI this is a failure instead: a skip there hides
/// untested code.
pub fn skip(why: &str) {
    assert!(
        !under_ci(),
        "{why}: CI is set, so this test must run (as root, with .ci/run's packages)"
    );
    eprintln!("skipped: {why}");
}

/// Makes `cmd` run in new namespaces (`flags`, which include a mount
/// namespace) with private propagation and a fresh tmpfs on `/run`, with
/// the open file limit a guest's PID 1 starts with. Further `pre_exec`
/// steps the caller adds run after these.
pub fn private_run(cmd: &mut Command, flags: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // Built before the fork: the child must not allocate.
    let root = std::ffi::CString::new("/").expect("cstr");
    let run = std::ffi::CString::new("/run").expect("cstr");
    let tmpfs = std::ffi::CString::new("tmpfs").expect("cstr");
    let opts = std::ffi::CString::new("mode=0755").expect("cstr");
    // The open file limit a guest's PID 1 starts with (the kernel's 1024),
    // whatever the test runner was given: the agent is to raise it itself.
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into a struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    nofile.rlim_cur = nofile.rlim_max.min(1024);
    // SAFETY: the closure runs between fork and exec and only makes
    // syscalls on strings and structs prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(flags) != 0 || libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let none = std::ptr::null();
            if libc::mount(
                none,
                root.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ) != 0
                || libc::mount(
                    tmpfs.as_ptr(),
                    run.as_ptr(),
                    tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    opts.as_ptr().cast(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A cgroup parent of a test's own (`guest-agent-tests-<pid>-<n>`): the
/// containers of one test never share a cgroup directory with another's.
/// Dropping it removes the parent in every hierarchy (cgroup v1 and v2);
/// containers left inside make that fail the test.
pub struct CgroupParent {
    pub name: String,
}

fn next_cgroup_number() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

impl CgroupParent {
    pub fn new() -> CgroupParent {
        CgroupParent {
            name: format!(
                "guest-agent-tests-{}-{}",
                std::process::id(),
                next_cgroup_number()
            ),
        }
    }

    /// A top-level systemd slice of the test's own, `gatests<pid>x<n>.slice`:
    /// no `-` in its base, so systemd's nesting of `-` separated slices
    /// keeps every slice made from it (`<base>-pod1.slice`) below it.
    pub fn systemd_slice() -> CgroupParent {
        CgroupParent {
            name: format!(
                "gatests{}x{}.slice",
                std::process::id(),
                next_cgroup_number()
            ),
        }
    }

    /// The name without `.slice`, for building slice names below it.
    pub fn slice_base(&self) -> &str {
        self.name.strip_suffix(".slice").unwrap_or(&self.name)
    }

    /// Directories of this parent that exist now, in every hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let top = Path::new("/sys/fs/cgroup");
        let mut candidates = vec![top.join(&self.name)];
        if let Ok(d) = std::fs::read_dir(top) {
            candidates.extend(d.flatten().map(|e| e.path().join(&self.name)));
        }
        for c in candidates {
            if c.is_dir() && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

impl Default for CgroupParent {
    fn default() -> Self {
        CgroupParent::new()
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let mut left = Vec::new();
        for d in self.dirs() {
            if let Err(e) = std::fs::remove_dir(&d) {
                left.push(format!("{}: {e}", d.display()));
            }
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("cgroup parent left behind: {left:?}");
        }
    }
}

/// Encodes a ttrpc request frame for `service`/`method` with a raw payload.
pub fn request_frame(stream_id: u32, service: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    request_frame_with_timeout(stream_id, service, method, payload, Duration::ZERO)
}

/// Like [`request_frame`], with the request's own deadline (0: none).
pub fn request_frame_with_timeout(
    stream_id: u32,
    service: &str,
    method: &str,
    payload: &[u8],
    timeout: Duration,
) -> Vec<u8> {
    let req = ttrpc::Request {
        service: service.to_string(),
        method: method.to_string(),
        payload: payload.to_vec(),
        timeout_nano: timeout.as_nanos() as i64,
        ..Default::default()
    };
    let body = req.write_to_bytes().expect("encode request");
    frame(stream_id, MESSAGE_TYPE_REQUEST, 0, &body)
}

/// A raw frame: 10-byte header then the body.
pub fn frame(stream_id: u32, typ: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = header(body.len() as u32, stream_id, typ, flags).to_vec();
    out.extend_from_slice(body);
    out
}

pub fn header(len: u32, stream_id: u32, typ: u8, flags: u8) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[0..4].copy_from_slice(&len.to_be_bytes());
    h[4..8].copy_from_slice(&stream_id.to_be_bytes());
    h[8] = typ;
    h[9] = flags;
    h
}

/// One decoded response frame.
#[derive(Debug)]
pub struct RawResponse {
    pub stream_id: u32,
    pub typ: u8,
    pub response: ttrpc::Response,
}

impl RawResponse {
    pub fn code(&self) -> ttrpc::Code {
        self.response.status.code.enum_value_or_default()
    }

    pub fn message(&self) -> &str {
        &self.response.status.message
    }
}

/// Reads one frame from a blocking stream and decodes it as a ttrpc response.
pub fn read_response(s: &mut UnixStream) -> std::io::Result<RawResponse> {
    let mut h = [0u8; 10];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let stream_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    let response = ttrpc::Response::parse_from_bytes(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(RawResponse {
        stream_id,
        typ: h[8],
        response,
    })
}

/// Connects a blocking raw stream with a read timeout.
pub fn raw_connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect agent socket");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set read timeout");
    s
}

/// Sends a raw Check on a fresh connection and expects SERVING.
pub fn raw_check(path: &Path) {
    let mut s = raw_connect(path);
    let payload = protocols::health::CheckRequest::new()
        .write_to_bytes()
        .expect("encode");
    s.write_all(&request_frame(1, "grpc.Health", "Check", &payload))
        .expect("send Check");
    let r = read_response(&mut s).expect("Check response");
    assert_eq!(r.code(), ttrpc::Code::OK, "Check failed: {}", r.message());
    let resp = protocols::health::HealthCheckResponse::parse_from_bytes(&r.response.payload)
        .expect("decode HealthCheckResponse");
    assert_eq!(
        resp.status.enum_value_or_default(),
        protocols::health::health_check_response::ServingStatus::SERVING
    );
}

/// Resident set size of a process in KiB, from /proc/<pid>/status.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmRSS:")
}

/// A numeric field of /proc/<pid>/status (first number after the name).
pub fn proc_status_field(pid: u32, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Whether the container tests can run here; says why not (see [`skip`]).
pub fn can_run_containers() -> bool {
    if !is_root() {
        skip("container tests need root");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        skip("/bin/busybox missing (apt-get install busybox-static)");
        return false;
    }
    true
}

/// A busybox root filesystem in a temporary directory: /bin/busybox with
/// every applet linked, /etc/passwd and /etc/group, empty mount points.
pub struct Rootfs {
    pub dir: tempfile::TempDir,
}

impl Rootfs {
    pub fn new() -> Rootfs {
        let dir = tempfile::tempdir().expect("temp dir");
        busybox_rootfs_at(dir.path());
        Rootfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Rootfs {
    fn default() -> Self {
        Rootfs::new()
    }
}

/// Fills `root` (created if missing) as [`Rootfs`] does, for a rootfs that
/// must sit at a given path, as under a shim's shared directory.
pub fn busybox_rootfs_at(root: &Path) {
    for d in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/user",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .expect("link applet");
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nextra:x:2000:user\n",
    )
    .expect("group");
}

/// Pids whose parent is `ppid`, except the agent's pre-forked launcher
/// (`kata-launcher`), which lives as long as the agent.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if proc_status_field(pid, "PPid:") == Some(u64::from(ppid)) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "kata-launcher" {
                out.push(pid);
            }
        }
    }
    out
}

/// Number of open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A wire spec for a busybox container: `args` with `PATH=/bin` in `/`,
/// `/proc` mounted, new mount, pid, ipc and uts namespaces, and the cgroup
/// `/<cgroup_parent>/<cid>`. Tests adjust it from there.
pub fn busybox_spec(
    rootfs: &str,
    cid: &str,
    args: &[&str],
    cgroup_parent: &str,
) -> protocols::oci::Spec {
    use protocols::oci;
    let mut s = oci::Spec::new();
    s.Version = "1.0.2".into();
    let mut p = oci::Process::new();
    p.Args = args.iter().map(|a| a.to_string()).collect();
    p.Env = vec!["PATH=/bin".into()];
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    s.Process = Some(p).into();
    let mut root = oci::Root::new();
    root.Path = rootfs.to_string();
    s.Root = Some(root).into();
    s.Mounts = vec![oci_mount("/proc", "proc", "proc", &[])];
    let mut l = oci::Linux::new();
    for t in ["mount", "pid", "ipc", "uts"] {
        let mut ns = oci::LinuxNamespace::new();
        ns.Type = t.into();
        l.Namespaces.push(ns);
    }
    l.CgroupsPath = format!("/{cgroup_parent}/{cid}");
    s.Linux = Some(l).into();
    s
}

/// A wire OCI mount.
pub fn oci_mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> protocols::oci::Mount {
    let mut m = protocols::oci::Mount::new();
    m.destination = dest.into();
    m.type_ = typ.into();
    m.source = source.into();
    m.options = options.iter().map(|o| o.to_string()).collect();
    m
}

/// A current-thread runtime and an AgentService client connected to `agent`.
pub fn agent_client(
    agent: &Agent,
) -> (
    tokio::runtime::Runtime,
    protocols::agent_ttrpc::AgentServiceClient,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let uri = agent.uri();
    let client = rt.block_on(async {
        ttrpc::asynchronous::Client::connect(&uri)
            .await
            .expect("connect to the agent")
    });
    (rt, protocols::agent_ttrpc::AgentServiceClient::new(client))
}

/// A wire Storage as the shims build them.
pub fn storage(
    driver: &str,
    source: &str,
    fstype: &str,
    opts: &[&str],
    mount_point: &str,
) -> protocols::agent::Storage {
    let mut s = protocols::agent::Storage::new();
    s.driver = driver.into();
    s.source = source.into();
    s.fstype = fstype.into();
    s.options = opts.iter().map(|o| o.to_string()).collect();
    s.mount_point = mount_point.into();
    s
}

/// A ConfigMap volume as the kubelet writes it (and updates it): the data
/// in `<dir>/<ts>/<key>`, `..data -> <ts>` swapped by rename, and
/// `<key> -> ..data/<key>`.
pub fn kubelet_configmap(dir: &Path, ts: &str, data: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join(ts)).expect("configmap dir");
    for (k, v) in data {
        std::fs::write(dir.join(ts).join(k), v).expect("configmap file");
    }
    std::os::unix::fs::symlink(ts, dir.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("..data swap");
    for (k, _) in data {
        if std::fs::symlink_metadata(dir.join(k)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{k}"), dir.join(k)).expect("key link");
        }
    }
}

/// Whether process `pid` is gone (or a zombie awaiting its new parent)
/// within a few seconds: the launcher dies with the agent, by a signal.
pub fn process_ended(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let zombie = state
            .as_deref()
            .and_then(|s| s.rsplit_once(") "))
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if state.is_none() || zombie {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every child of `ppid`, the container launcher included.
pub fn all_children_of(ppid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&p| proc_status_field(p, "PPid:") == Some(u64::from(ppid)))
        .collect()
}

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A disk image in a temporary directory, attached to a loop device.
/// [`LoopDisk::detach`] detaches it and checks that it is gone; dropping
/// it without that detaches it too.
pub struct LoopDisk {
    dir: Option<tempfile::TempDir>,
    pub image: PathBuf,
    pub dev: String,
}

impl LoopDisk {
    /// `bytes` of zeros, formatted as ext4 if `ext4`.
    pub fn new(bytes: u64, ext4: bool) -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        if ext4 {
            run("mkfs.ext4", &["-F", "-q", &image.to_string_lossy()]);
        }
        LoopDisk::attach(dir, image)
    }

    /// Attaches `image` (in `dir`, removed with the disk) to a free loop
    /// device.
    fn attach(dir: tempfile::TempDir, image: PathBuf) -> LoopDisk {
        let dev = run("losetup", &["-f", "--show", &image.to_string_lossy()]);
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        LoopDisk {
            dir: Some(dir),
            image,
            dev,
        }
    }

    /// A 16 MiB ext4 disk holding `files` (name, text) at its root.
    pub fn with_files(files: &[(&str, &str)]) -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        for (name, text) in files {
            std::fs::write(tree.join(name), text).unwrap();
        }
        let image = dir.path().join("disk.img");
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-d",
                &tree.to_string_lossy(),
                &image.to_string_lossy(),
                "16M",
            ],
        );
        LoopDisk::attach(dir, image)
    }

    /// The device's major and minor numbers.
    pub fn numbers(&self) -> (i64, i64) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev).into(), libc::minor(rdev).into())
    }

    /// Grows the image and tells the loop device, as a hypervisor's
    /// `block_resize` does for a virtio disk.
    pub fn grow(&self, bytes: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        run("losetup", &["-c", &self.dev]);
    }

    /// Loop devices backed by the image.
    pub fn attached(&self) -> String {
        run("losetup", &["-j", &self.image.to_string_lossy()])
    }

    /// Detaches the device (its mount must be gone), removes the image,
    /// and checks that neither is left.
    pub fn detach(mut self) {
        run("losetup", &["-d", &self.dev]);
        // The kernel may finish releasing the device after the call.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.attached().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} still attached: {}",
                self.dev,
                self.attached()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = self.dir.take().unwrap();
        let path = dir.path().to_path_buf();
        dir.close().unwrap();
        assert!(!path.exists(), "{} left behind", path.display());
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.dir.is_some() {
            let _ = Command::new("losetup").args(["-d", &self.dev]).output();
        }
    }
}

/// containerd's default capabilities, which the shims pass on in a
/// container's spec.
pub const CONTAINERD_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
