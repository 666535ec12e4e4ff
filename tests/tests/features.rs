//! OCI spec features through the wire API, each checked from inside the
//! container: the spec goes through the agent's protobuf-to-OCI conversion
//! and rustjail, and the container reports what it got.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::oci;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

fn base(cgroups: &CgroupParent, rootfs: &std::path::Path, cid: &str, script: &str) -> oci::Spec {
    let mut s = busybox_spec(
        &rootfs.display().to_string(),
        cid,
        &["sh", "-c", script],
        &cgroups.name,
    );
    s.Hostname = "feature-box".into();
    s.Mounts
        .push(oci_mount("/dev", "tmpfs", "tmpfs", &["nosuid", "mode=755"]));
    s.Mounts.push(oci_mount(
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    ));
    s.Mounts.push(oci_mount(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    ));
    let mut ns = oci::LinuxNamespace::new();
    ns.Type = "cgroup".into();
    s.Linux.as_mut().unwrap().Namespaces.push(ns);
    s
}

/// Runs `script` in a container built from `spec`; returns (exit, stdout).
fn run(
    rt: &tokio::runtime::Runtime,
    c: &AgentServiceClient,
    cid: &str,
    spec: oci::Spec,
) -> (i32, String) {
    rt.block_on(async {
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.into();
        req.exec_id = cid.into();
        req.OCI = Some(spec).into();
        c.create_container(ctx(), &req).await.unwrap();
        let mut st = StartContainerRequest::new();
        st.container_id = cid.into();
        c.start_container(ctx(), &st).await.unwrap();
        let mut w = WaitProcessRequest::new();
        w.container_id = cid.into();
        w.exec_id = cid.into();
        let code = c.wait_process(ctx(), &w).await.unwrap().status;
        let mut out = Vec::new();
        let mut rd = ReadStreamRequest::new();
        rd.container_id = cid.into();
        rd.exec_id = cid.into();
        rd.len = 65536;
        while let Ok(r) = c.read_stdout(ctx(), &rd).await {
            out.extend(r.data);
        }
        let mut rm = RemoveContainerRequest::new();
        rm.container_id = cid.into();
        c.remove_container(ctx(), &rm).await.unwrap();
        (code, String::from_utf8_lossy(&out).into_owned())
    })
}

/// `Name:\tvalue` from /proc/self/status text.
fn status_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim_start_matches(':').trim())
}

#[test]
fn spec_features_seen_from_inside() {
    if !can_run_containers() {
        return;
    }
    let cgroups = CgroupParent::new();
    let agent = Agent::start();
    let rootfs = Rootfs::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uri = agent.uri();
    let c = rt.block_on(async {
        AgentServiceClient::new(ttrpc::asynchronous::Client::connect(&uri).await.unwrap())
    });
    let tag = std::process::id();

    // User, groups, umask, cwd, env, hostname, rlimits, capabilities,
    // no_new_privs, oom_score_adj, masked and readonly paths.
    let cid = format!("feat-{tag}-proc");
    let mut s = base(
        &cgroups,
        rootfs.path(),
        &cid,
        "id; umask; pwd; echo HOME=$HOME; hostname; ulimit -n; cat /proc/self/status; \
         echo oom=$(cat /proc/self/oom_score_adj); \
         echo keys=$(stat -c %t:%T /proc/keys); \
         touch /proc/sys/kernel/hostname 2>/dev/null && echo sys-writable || echo sys-readonly",
    );
    {
        let p = s.Process.as_mut().unwrap();
        let mut u = oci::User::new();
        u.UID = 1000;
        u.GID = 1000;
        u.AdditionalGids = vec![2000];
        p.User = Some(u).into();
        p.Cwd = "/tmp".into();
        p.NoNewPrivileges = true;
        p.OOMScoreAdj = 321;
        let mut rl = oci::POSIXRlimit::new();
        rl.Type = "RLIMIT_NOFILE".into();
        rl.Hard = 777;
        rl.Soft = 555;
        p.Rlimits = vec![rl];
        let mut caps = oci::LinuxCapabilities::new();
        let set = vec!["CAP_KILL".to_string(), "CAP_NET_BIND_SERVICE".to_string()];
        caps.Bounding = set.clone();
        caps.Effective = set.clone();
        caps.Permitted = set.clone();
        caps.Inheritable = set.clone();
        caps.Ambient = set;
        p.Capabilities = Some(caps).into();
        let l = s.Linux.as_mut().unwrap();
        l.MaskedPaths = vec!["/proc/keys".into()];
        l.ReadonlyPaths = vec!["/proc/sys".into()];
    }
    let (code, out) = run(&rt, &c, &cid, s);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("uid=1000(user) gid=1000(user) groups=2000(extra)"),
        "{out}"
    );
    assert!(out.contains("\n/tmp\n"), "cwd: {out}");
    assert!(out.contains("HOME=/home/user"), "{out}");
    assert!(out.contains("\nfeature-box\n"), "{out}");
    assert!(out.contains("\n555\n"), "RLIMIT_NOFILE soft: {out}");
    assert_eq!(status_field(&out, "NoNewPrivs"), Some("1"), "{out}");
    // CAP_KILL (5) and CAP_NET_BIND_SERVICE (10): 0x420.
    for set in ["CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(
            status_field(&out, set),
            Some("0000000000000420"),
            "{set}: {out}"
        );
    }
    assert!(out.contains("oom=321"), "{out}");
    // Masked: /dev/null (1:3) is mounted over it.
    assert!(out.contains("keys=1:3"), "masked /proc/keys: {out}");
    assert!(out.contains("sys-readonly"), "{out}");

    // A readonly rootfs; mounts as the spec lists them.
    let cid = format!("feat-{tag}-ro");
    let mut s = base(
        &cgroups,
        rootfs.path(),
        &cid,
        "touch /x 2>/dev/null && echo root-writable || echo root-readonly; cat /proc/self/mountinfo",
    );
    s.Root.as_mut().unwrap().Readonly = true;
    let (code, out) = run(&rt, &c, &cid, s);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("root-readonly"), "{out}");
    let root_line = out
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in mountinfo: {out}"));
    assert!(
        root_line
            .split_whitespace()
            .nth(5)
            .unwrap()
            .starts_with("ro"),
        "{root_line}"
    );
    assert!(out
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/proc")));
    assert!(out
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/sys")));

    // cgroup limits, as the container sees them in its own cgroup mount.
    let cid = format!("feat-{tag}-cg");
    let mut s = base(
        &cgroups,
        rootfs.path(),
        &cid,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
    );
    let mut res = oci::LinuxResources::new();
    let mut mem = oci::LinuxMemory::new();
    mem.Limit = 48 << 20;
    res.Memory = Some(mem).into();
    let mut pids = oci::LinuxPids::new();
    pids.Limit = 17;
    res.Pids = Some(pids).into();
    s.Linux.as_mut().unwrap().Resources = Some(res).into();
    let (code, out) = run(&rt, &c, &cid, s);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("{}\n17\n", 48u64 << 20));

    // seccomp: mkdir refused with EPERM, everything else allowed.
    let cid = format!("feat-{tag}-seccomp");
    let mut s = base(
        &cgroups,
        rootfs.path(),
        &cid,
        "grep Seccomp: /proc/self/status; mkdir /tmp/d 2>&1; echo mkdir=$?; echo still-running",
    );
    let mut sc = oci::LinuxSeccomp::new();
    sc.DefaultAction = "SCMP_ACT_ALLOW".into();
    sc.Architectures = vec!["SCMP_ARCH_X86_64".into()];
    let mut call = oci::LinuxSyscall::new();
    call.Names = vec!["mkdir".into(), "mkdirat".into()];
    call.Action = "SCMP_ACT_ERRNO".into();
    call.ErrnoRet = Some(oci::linux_syscall::ErrnoRet::Errnoret(libc::EPERM as u32));
    sc.Syscalls = vec![call];
    s.Linux.as_mut().unwrap().Seccomp = Some(sc).into();
    let (code, out) = run(&rt, &c, &cid, s);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        status_field(&out, "Seccomp"),
        Some("2"),
        "filter mode: {out}"
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("mkdir=1"), "{out}");
    assert!(out.contains("still-running"), "{out}");

    assert!(children_of(agent.pid()).is_empty());
}
