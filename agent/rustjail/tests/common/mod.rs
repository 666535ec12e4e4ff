//! Helpers for rustjail's root integration tests: a busybox rootfs, specs,
//! and a runner that checks cleanup.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use rustjail::oci_spec::runtime::{
    LinuxBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use rustjail::{Container, CreateOpts, Stdio};

pub const BUSYBOX: &str = "/bin/busybox";

/// Skips the test (with a message) unless we are root and busybox exists.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            $crate::common::skip("this test needs root");
            return;
        }
        if !std::path::Path::new($crate::common::BUSYBOX).exists() {
            $crate::common::skip(&format!(
                "{} missing (apt-get install busybox-static)",
                $crate::common::BUSYBOX
            ));
            return;
        }
        $crate::common::init();
    };
}

/// Says why a test is skipped, on the real stderr: the test harness
/// captures `eprintln!`, so the message would be hidden on success. Under
/// CI (`CI` set and not `0` or `false`), where the tests run as root with
/// everything installed, a skip is a failure: it would hide untested code.
pub fn skip(why: &str) {
    use std::io::Write;
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!ci, "{why}: CI is set, so this test must run here");
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(std::io::stderr(), "test {name}: skipped: {why}");
}

static INIT: Once = Once::new();

pub fn init() {
    INIT.call_once(|| {
        rustjail::set_child_subreaper().unwrap();
    });
}

/// The test launcher; `RUSTJAIL_TEST_LAUNCHER` may name another build of
/// it (e.g. a release build, for the benchmark).
pub fn launcher() -> PathBuf {
    std::env::var_os("RUSTJAIL_TEST_LAUNCHER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rustjail-test-init")))
}

/// A unique container id for this test process.
pub fn unique_id(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rjt-{}-{}-{}",
        name,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A bundle directory holding `rootfs/` with busybox and its applets.
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "cat", "id", "hostname", "sleep", "ls", "pwd", "grep", "kill",
    "mount", "touch", "wc", "head", "env", "stat", "umask", "mkdir", "dd", "ps", "tty", "stty",
];

impl Bundle {
    pub fn new() -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        Bundle { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
}

pub fn cgroup_mount() -> Mount {
    MountBuilder::default()
        .destination("/sys/fs/cgroup")
        .typ("cgroup")
        .source("cgroup")
        .options(vec![
            "nosuid".into(),
            "noexec".into(),
            "nodev".into(),
            "ro".into(),
        ])
        .build()
        .unwrap()
}

/// A spec running `args` as root with the OCI defaults (pid, net, ipc, uts,
/// mount and cgroup namespaces; default mounts, masked and readonly paths;
/// default capabilities), a memory limit and a per-test cgroup.
pub fn spec(id: &str, args: &[&str]) -> Spec {
    let process = ProcessBuilder::default()
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
        .no_new_privileges(true)
        .capabilities(rustjail::oci_spec::runtime::LinuxCapabilities::default())
        .build()
        .unwrap();
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(256i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let linux = LinuxBuilder::default()
        .namespaces(rustjail::oci_spec::runtime::get_default_namespaces())
        .masked_paths(
            Spec::default()
                .linux()
                .as_ref()
                .unwrap()
                .masked_paths()
                .clone()
                .unwrap(),
        )
        .readonly_paths(
            Spec::default()
                .linux()
                .as_ref()
                .unwrap()
                .readonly_paths()
                .clone()
                .unwrap(),
        )
        .resources(resources)
        .cgroups_path(PathBuf::from(format!("/{id}")))
        .build()
        .unwrap();
    let mut mounts = rustjail::oci_spec::runtime::get_default_mounts();
    if !mounts.iter().any(|m| m.typ().as_deref() == Some("cgroup")) {
        mounts.push(cgroup_mount());
    }
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .unwrap(),
        )
        .process(process)
        .hostname("rustjail")
        .mounts(mounts)
        .linux(linux)
        .build()
        .unwrap()
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    // Close-on-exec, or a parallel test's helper would inherit the write
    // end and hold our reader open.
    nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap()
}

pub fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

/// A container that is destroyed when the test ends, even when it fails
/// half-way, so that no cgroup or process outlives a failed test.
#[derive(Debug)]
pub struct Ctr(pub Container);

impl std::ops::Deref for Ctr {
    type Target = Container;
    fn deref(&self) -> &Container {
        &self.0
    }
}

impl std::ops::DerefMut for Ctr {
    fn deref_mut(&mut self) -> &mut Container {
        &mut self.0
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        // A no-op when the test destroyed it already.
        let _ = self.0.destroy(Duration::from_secs(5));
    }
}

pub fn create(id: &str, spec: &Spec, bundle: &Bundle, stdio: Stdio) -> rustjail::Result<Ctr> {
    Container::create(
        id,
        spec,
        bundle.path(),
        CreateOpts {
            launcher: launcher(),
            stdio,
            ..Default::default()
        },
    )
    .map(Ctr)
}

pub fn wait_code(pid: i32) -> i32 {
    let st = waitpid(Pid::from_raw(pid), None).unwrap();
    rustjail::wait_status_to_code(st).unwrap()
}

pub fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(rel))
        .filter(|p| p.exists())
        .collect()
}

/// Output of a finished container.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Creates, starts, waits for and destroys a container, then checks that
/// nothing is left: no process, no cgroup directory, no mount.
pub fn run(spec: &Spec) -> Output {
    let bundle = Bundle::new();
    run_in(spec, &bundle)
}

pub fn run_in(spec: &Spec, bundle: &Bundle) -> Output {
    let mounts_before = mount_count();
    let id = container_id(spec);
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let mut c = create(
        &id,
        spec,
        bundle,
        Stdio {
            stdin: None,
            stdout: Some(out_w),
            stderr: Some(err_w),
        },
    )
    .unwrap();
    let pid = c.pid();
    c.start().unwrap();
    let stdout = read_all(out_r);
    let stderr = read_all(err_r);
    let code = wait_code(pid);
    let cg = c.cgroup().path().to_string();
    c.destroy(Duration::from_secs(5)).unwrap();
    assert_clean(pid, &cg, mounts_before);
    Output {
        code,
        stdout,
        stderr,
    }
}

pub fn container_id(spec: &Spec) -> String {
    spec.linux()
        .as_ref()
        .unwrap()
        .cgroups_path()
        .as_ref()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string()
}

pub fn assert_clean(pid: i32, cgroup: &str, mounts_before: usize) {
    assert!(
        nix::sys::signal::kill(Pid::from_raw(pid), None).is_err(),
        "process {pid} is still there"
    );
    assert!(
        cgroup_dirs(cgroup).is_empty(),
        "cgroup left: {:?}",
        cgroup_dirs(cgroup)
    );
    assert_eq!(
        mount_count(),
        mounts_before,
        "mounts left in the caller's namespace"
    );
}
