//! What Kata's Go runtime does with processes of a Kubernetes pod: exec
//! probes and `kubectl exec` (read stdout and stderr to EOF, then
//! WaitProcess), stop (SIGTERM to the init, signals racing the exit), and
//! what must hold: every exec released afterwards, EOF even while a
//! background child holds the pipe, capabilities as the init's.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::env::*;
use integration_tests::*;
use protocols::agent::*;
use protocols::oci;
use ttrpc::Code;

/// What the Go runtime does for an exec probe: ExecProcess, stdout and
/// stderr to EOF, WaitProcess. Returns (exit code, stdout).
fn probe(env: &Env, cid: &str, eid: &str, args: &[&str]) -> (i32, Vec<u8>) {
    env.exec(cid, eid, args).unwrap();
    let out = env.read_all(cid, eid, false, 32 * 1024);
    let err = env.read_all(cid, eid, true, 32 * 1024);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    (env.wait(cid, eid).unwrap(), out)
}

/// (fds, threads) of the agent once idle blocking threads have retired
/// (bounded wait) or the deadline passed.
fn settle(pid: u32, want: (usize, u64)) -> (usize, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = (
            fd_count(pid),
            proc_status_field(pid, "Threads:").unwrap_or(0),
        );
        if (now.0 <= want.0 && now.1 <= want.1) || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Go runtime's probe, every few seconds for the life of a pod: no fd,
/// thread or table entry may stay behind. `EXEC_CYCLES` sets the count
/// (5000 is the figure the issue asks about; the default keeps the suite
/// quick).
#[test]
fn exec_probes_release_everything() {
    let Some(env) = Env::new() else { return };
    let cid = unique("probes");
    env.run(&cid, &["sleep", "100000"]);
    let pid = env.agent.pid();
    let cycles: usize = std::env::var("EXEC_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // Warm: lazily made things exist in the baseline.
    assert_eq!(
        probe(&env, &cid, "warm", &["echo", "ok"]),
        (0, b"ok\n".to_vec())
    );
    let base = settle(pid, (usize::MAX, 1));
    let rss_before = vm_rss_kib(pid).unwrap_or(0);
    for i in 0..cycles {
        let eid = format!("probe-{i}");
        let (code, out) = probe(&env, &cid, &eid, &["sh", "-c", "echo alive"]);
        assert_eq!((code, out.as_slice()), (0, &b"alive\n"[..]), "cycle {i}");
    }
    let after = settle(pid, base);
    let rss_after = vm_rss_kib(pid).unwrap_or(0);
    eprintln!(
        "{cycles} exec/wait cycles: fds {} -> {}, threads {} -> {}, VmRSS {rss_before} -> {rss_after} KiB",
        base.0, after.0, base.1, after.1
    );
    // Nothing held per probe: at most what was there (a transient one in
    // the baseline may have gone meanwhile).
    assert!(
        after.0 <= base.0 && after.1 <= base.1,
        "(fds, threads) before {base:?} and after {after:?} {cycles} probes"
    );
    // Released: the exec id is free again and unknown to reads.
    let e = env.read(&cid, "probe-0", false, 16).unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND, "{e:?}");
    assert_eq!(probe(&env, &cid, "probe-0", &["true"]).0, 0);
    // Read after WaitProcess: nothing is lost while the host is not done.
    env.exec(&cid, "late", &["echo", "late"]).unwrap();
    assert_eq!(env.wait(&cid, "late").unwrap(), 0);
    assert_eq!(env.read_all(&cid, "late", false, 64), b"late\n");
    env.remove(&cid).unwrap();
}

/// The agent raises its own open file limit above the kernel's 1024.
#[test]
fn the_agent_raises_its_open_file_limit() {
    let Some(env) = Env::new() else { return };
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", env.agent.pid())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(soft > 1024, "{limits}");
}

/// `sh -c 'daemon & echo started'`: the process exits, its child keeps the
/// pipe. The reads return everything, then EOF, long before the child
/// ends; whether a read was waiting at the exit or not.
#[test]
fn eof_after_the_exit_while_a_child_holds_the_pipe() {
    let Some(env) = Env::new() else { return };
    let cid = unique("eof");
    // /dev and a devpts as a runtime's spec has them: the exec below has a
    // terminal.
    let mut s = env.spec(env.rootfs.path(), &cid, &["sleep", "100000"]);
    s.Mounts
        .push(oci_mount("/dev", "tmpfs", "tmpfs", &["nosuid", "mode=755"]));
    s.Mounts.push(oci_mount(
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ],
    ));
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    // 300 KiB, then a background child that holds stdout for 1000 s.
    let script = "head -c 307200 /dev/zero | tr '\\0' x; sleep 1000 & echo started";
    // A read waits while the process exits.
    env.exec(&cid, "waiting", &["sh", "-c", script]).unwrap();
    let out = env.read_all(&cid, "waiting", false, 65536);
    assert_eq!(out.len(), 307200 + "started\n".len());
    assert!(out.ends_with(b"xstarted\n"));
    assert_eq!(env.read_all(&cid, "waiting", true, 64), b"");
    assert_eq!(env.wait(&cid, "waiting").unwrap(), 0);
    // No read in flight at the exit: WaitProcess first, then the reads.
    env.exec(&cid, "later", &["sh", "-c", script]).unwrap();
    assert_eq!(env.wait(&cid, "later").unwrap(), 0);
    let out = env.read_all(&cid, "later", false, 65536);
    assert_eq!(out.len(), 307200 + "started\n".len());
    // The container's init too, and on a terminal.
    let init = unique("eof-init");
    env.run(&init, &["sh", "-c", "sleep 1000 & echo init-started"]);
    assert_eq!(env.read_all(&init, &init, false, 64), b"init-started\n");
    assert_eq!(env.wait(&init, &init).unwrap(), 0);
    let mut p = oci::Process::new();
    p.Args = vec![
        "sh".into(),
        "-c".into(),
        "sleep 1000 & echo on-a-tty".into(),
    ];
    p.Env = vec!["PATH=/bin".into()];
    p.Cwd = "/".into();
    p.Terminal = true;
    p.User = Some(oci::User::new()).into();
    let mut req = ExecProcessRequest::new();
    req.container_id = cid.clone();
    req.exec_id = "tty".into();
    req.process = Some(p).into();
    env.rt
        .block_on(env.client.exec_process(ctx(), &req))
        .unwrap();
    let out = env.read_all(&cid, "tty", false, 64);
    assert_eq!(String::from_utf8_lossy(&out).trim_end(), "on-a-tty");
    assert_eq!(env.wait(&cid, "tty").unwrap(), 0);
    for c in [&cid, &init] {
        env.remove(c).unwrap();
    }
}

fn cap_eff(env: &Env, cid: &str, eid: &str, caps: Option<&[&str]>) -> String {
    let mut p = oci::Process::new();
    p.Args = vec!["grep".into(), "CapEff".into(), "/proc/self/status".into()];
    p.Env = vec!["PATH=/bin".into()];
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    if let Some(caps) = caps {
        let list: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        let mut c = oci::LinuxCapabilities::new();
        c.Bounding = list.clone();
        c.Effective = list.clone();
        c.Permitted = list;
        p.Capabilities = Some(c).into();
    }
    let mut req = ExecProcessRequest::new();
    req.container_id = cid.into();
    req.exec_id = eid.into();
    req.process = Some(p).into();
    env.rt
        .block_on(env.client.exec_process(ctx(), &req))
        .unwrap();
    let out = env.read_all(cid, eid, false, 256);
    assert_eq!(env.wait(cid, eid).unwrap(), 0);
    String::from_utf8(out).unwrap().trim().to_string()
}

/// `kubectl exec` through the Go runtime carries no capabilities: the
/// process gets the init's; with capabilities, exactly those.
#[test]
fn exec_capabilities_default_to_the_inits() {
    let Some(env) = Env::new() else { return };
    let cid = unique("caps");
    let mut s = env.spec(
        env.rootfs.path(),
        &cid,
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; exec sleep 100000",
        ],
    );
    let mut caps = oci::LinuxCapabilities::new();
    // CAP_CHOWN (0) and CAP_DAC_OVERRIDE (1): 0x3.
    let set = vec!["CAP_CHOWN".to_string(), "CAP_DAC_OVERRIDE".to_string()];
    caps.Bounding = set.clone();
    caps.Effective = set.clone();
    caps.Permitted = set;
    s.Process.as_mut().unwrap().Capabilities = Some(caps).into();
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    let init = String::from_utf8(env.read(&cid, &cid, false, 64).unwrap()).unwrap();
    assert_eq!(init.trim(), "CapEff:\t0000000000000003");
    assert_eq!(
        cap_eff(&env, &cid, "inherit", None),
        "CapEff:\t0000000000000003"
    );
    // CAP_KILL is 5.
    assert_eq!(
        cap_eff(&env, &cid, "explicit", Some(&["CAP_KILL"])),
        "CapEff:\t0000000000000020"
    );
    env.remove(&cid).unwrap();
}

/// The kubelet's stop: SIGTERM to an init (PID 1 of its pid namespace)
/// without a handler would be ignored; the agent kills it instead. An
/// init with a handler gets the SIGTERM. A signal to a process that has
/// exited is no error.
#[test]
fn stop_signals_as_the_kubelet_sends_them() {
    let Some(env) = Env::new() else { return };
    let plain = unique("noterm");
    env.run(&plain, &["sh", "-c", "echo ready; sleep 1000"]);
    assert_eq!(env.read(&plain, &plain, false, 6).unwrap(), b"ready\n");
    env.signal(&plain, "", 15).unwrap();
    assert_eq!(env.wait(&plain, &plain).unwrap(), 128 + 9);
    // Exited: more signals are not errors.
    env.signal(&plain, "", 15).unwrap();
    env.signal(&plain, &plain, 9).unwrap();

    let handled = unique("term");
    env.run(
        &handled,
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 1; done",
        ],
    );
    assert_eq!(env.read(&handled, &handled, false, 6).unwrap(), b"ready\n");
    env.signal(&handled, "", 15).unwrap();
    assert_eq!(env.wait(&handled, &handled).unwrap(), 3);
    assert_eq!(env.read_all(&handled, &handled, false, 64), b"got-term\n");

    // An exec that has exited, not yet waited for.
    env.run(&plain.replace("noterm", "host"), &["sleep", "100000"]);
    let host = plain.replace("noterm", "host");
    env.exec(&host, "quick", &["true"]).unwrap();
    assert_eq!(env.wait(&host, "quick").unwrap(), 0);
    env.signal(&host, "quick", 15).unwrap();
    for c in [&plain, &handled, &host] {
        env.remove(c).unwrap();
    }
}

/// `SigIgn` and `SigBlk` of a `/proc/self/status` text, as numbers, without
/// signals 32 and 33 (the C library's own, which signal(2) cannot reset).
fn ignored_and_blocked(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"));
        u64::from_str_radix(hex.trim(), 16).unwrap()
    };
    let libc_own = (1u64 << 31) | (1 << 32);
    (field("SigIgn:") & !libc_own, field("SigBlk:") & !libc_own)
}

/// A container's init and an exec start with no signal ignored or blocked,
/// whatever the agent ignores itself (SIGPIPE, as every Rust program; the
/// container would otherwise get EPIPE where it expects to die of SIGPIPE).
#[test]
fn container_processes_start_with_default_signals() {
    let Some(env) = Env::new() else { return };
    // An init that prints its own status and exits.
    let cid = unique("signals-init");
    let s = env.spec(env.rootfs.path(), &cid, &["cat", "/proc/self/status"]);
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    let init = String::from_utf8(env.read_all(&cid, &cid, false, 64 * 1024)).unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    assert_eq!(ignored_and_blocked(&init), (0, 0), "{init}");
    env.remove(&cid).unwrap();
    // An exec into a running container.
    let cid = unique("signals-exec");
    let s = env.spec(env.rootfs.path(), &cid, &["sleep", "100000"]);
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    let (code, out) = probe(&env, &cid, "status", &["cat", "/proc/self/status"]);
    assert_eq!(code, 0);
    let exec = String::from_utf8(out).unwrap();
    assert_eq!(ignored_and_blocked(&exec), (0, 0), "{exec}");
    env.remove(&cid).unwrap();
}
