//! Root integration tests: real containers from a busybox rootfs.
//! Each test skips with a message when not root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn echo_writes_stdout() {
    require_root!();
    let id = unique_id("echo");
    let out = run(&spec(&id, &["echo", "hello", "world"]));
    assert_eq!(out.stdout, "hello world\n");
    assert_eq!(out.stderr, "");
    assert_eq!(out.code, 0);
}

#[test]
fn exit_code_is_reported() {
    require_root!();
    let id = unique_id("exit");
    let out = run(&spec(&id, &["sh", "-c", "echo oops >&2; exit 3"]));
    assert_eq!(out.code, 3);
    assert_eq!(out.stderr, "oops\n");
}

#[test]
fn killed_by_signal_is_128_plus_n() {
    require_root!();
    let bundle = Bundle::new();
    let id = unique_id("kill");
    let mounts = mount_count();
    let mut c = create(
        &id,
        &spec(&id, &["sleep", "100"]),
        &bundle,
        Default::default(),
    )
    .unwrap();
    c.start().unwrap();
    c.kill(nix::sys::signal::Signal::SIGKILL, false).unwrap();
    assert_eq!(wait_code(c.pid()), 137);
    let cg = c.cgroup().path().to_string();
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_clean(c.pid(), &cg, mounts);
}

#[test]
fn hostname_is_set() {
    require_root!();
    let id = unique_id("host");
    let out = run(&spec(&id, &["hostname"]));
    assert_eq!(out.stdout, "rustjail\n");
}

#[test]
fn user_and_groups() {
    require_root!();
    let id = unique_id("user");
    let mut s = spec(&id, &["id"]);
    let process = s.process_mut().as_mut().unwrap();
    process.user_mut().set_uid(1000);
    process.user_mut().set_gid(1000);
    process.user_mut().set_additional_gids(Some(vec![10, 20]));
    let out = run(&s);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("uid=1000(user) gid=1000(user)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("groups=10,20"), "{}", out.stdout);
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn capabilities_and_no_new_privs() {
    require_root!();
    let id = unique_id("caps");
    let out = run(&spec(&id, &["cat", "/proc/self/status"]));
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    let want = format!("{:016x}", (1u64 << 5) | (1 << 10) | (1 << 29));
    for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&out.stdout, set), want, "{set}");
    }
    assert_eq!(status_field(&out.stdout, "NoNewPrivs:"), "1");
}

#[test]
fn non_root_keeps_ambient_capabilities() {
    require_root!();
    let id = unique_id("capuser");
    let mut s = spec(&id, &["cat", "/proc/self/status"]);
    let process = s.process_mut().as_mut().unwrap();
    process.user_mut().set_uid(1000);
    process.user_mut().set_gid(1000);
    let out = run(&s);
    let want = format!("{:016x}", (1u64 << 5) | (1 << 10) | (1 << 29));
    assert_eq!(status_field(&out.stdout, "CapEff:"), want);
    assert_eq!(status_field(&out.stdout, "CapAmb:"), want);
    assert_eq!(status_field(&out.stdout, "Uid:"), "1000\t1000\t1000\t1000");
}

#[test]
fn cwd_env_umask_rlimits() {
    require_root!();
    let id = unique_id("proc");
    let mut s = spec(
        &id,
        &["sh", "-c", "pwd; echo $FOO; umask; ulimit -n; echo $HOME"],
    );
    let process = s.process_mut().as_mut().unwrap();
    process.set_cwd("/tmp".into());
    process.set_env(Some(vec!["PATH=/bin".into(), "FOO=bar".into()]));
    process.user_mut().set_umask(Some(0o027));
    process.set_rlimits(Some(vec![
        rustjail::oci_spec::runtime::PosixRlimitBuilder::default()
            .typ(rustjail::oci_spec::runtime::PosixRlimitType::RlimitNofile)
            .soft(321u64)
            .hard(321u64)
            .build()
            .unwrap(),
    ]));
    let out = run(&s);
    assert_eq!(
        out.stdout, "/tmp\nbar\n0027\n321\n/root\n",
        "{}",
        out.stderr
    );
}

#[test]
fn memory_and_pids_limits_are_applied() {
    require_root!();
    let id = unique_id("limits");
    let mut s = spec(
        &id,
        &[
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
        ],
    );
    let res = rustjail::oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(
            rustjail::oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(
            rustjail::oci_spec::runtime::LinuxPidsBuilder::default()
                .limit(42i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    s.linux_mut().as_mut().unwrap().set_resources(Some(res));
    let out = run(&s);
    assert_eq!(
        out.stdout,
        format!("{}\n42\n", 64u64 << 20),
        "{}",
        out.stderr
    );
}

#[test]
fn readonly_root_and_masked_paths() {
    require_root!();
    let id = unique_id("mounts");
    let mut s = spec(
        &id,
        &["sh", "-c", "cat /proc/self/mountinfo; touch /x 2>&1; ls /proc/acpi | wc -l; cat /proc/keys | wc -c"],
    );
    s.root_mut().as_mut().unwrap().set_readonly(Some(true));
    let out = run(&s);
    let root_line = out
        .stdout
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a mount on /");
    let opts = root_line.split(' ').nth(5).unwrap();
    assert!(opts.split(',').any(|o| o == "ro"), "{root_line}");
    assert!(
        out.stdout.contains("Read-only file system"),
        "{}",
        out.stdout
    );
    // /proc/keys is masked by /dev/null, /proc/acpi by an empty tmpfs.
    for p in ["/proc/keys", "/proc/acpi"] {
        assert!(
            out.stdout.lines().any(|l| l.split(' ').nth(4) == Some(p)),
            "{p} not masked"
        );
    }
    assert!(out.stdout.ends_with("\n0\n0\n"), "{}", out.stdout);
    // /proc/sys is readonly.
    let sys = out
        .stdout
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/proc/sys"))
        .expect("/proc/sys mount");
    assert!(
        sys.split(' ').nth(5).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
}

#[test]
fn default_devices_exist() {
    require_root!();
    let id = unique_id("dev");
    let out = run(&spec(
        &id,
        &[
            "sh",
            "-c",
            "ls /dev; echo x > /dev/null && head -c 4 /dev/zero | wc -c",
        ],
    ));
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "ptmx", "pts", "shm",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == d),
            "no /dev/{d} in {}",
            out.stdout
        );
    }
    assert!(out.stdout.ends_with("4\n"), "{}", out.stdout);
}

#[test]
fn sysctl_is_written() {
    require_root!();
    let id = unique_id("sysctl");
    let mut s = spec(&id, &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    let mut sysctl = std::collections::HashMap::new();
    sysctl.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
    s.linux_mut().as_mut().unwrap().set_sysctl(Some(sysctl));
    let out = run(&s);
    assert_eq!(out.stdout, "1\n", "{}", out.stderr);
}

#[test]
fn pid_namespace_makes_init_pid_1() {
    require_root!();
    let id = unique_id("pidns");
    let out = run(&spec(&id, &["sh", "-c", "echo $$"]));
    assert_eq!(out.stdout, "1\n");
}

#[test]
fn user_namespace_maps_ids() {
    require_root!();
    let id = unique_id("userns");
    let mut s = spec(
        &id,
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u",
        ],
    );
    let linux = s.linux_mut().as_mut().unwrap();
    let mut ns = linux.namespaces().clone().unwrap();
    ns.push(
        rustjail::oci_spec::runtime::LinuxNamespaceBuilder::default()
            .typ(rustjail::oci_spec::runtime::LinuxNamespaceType::User)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(ns));
    let map = rustjail::oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(100000u32)
        .size(65536u32)
        .build()
        .unwrap();
    linux.set_uid_mappings(Some(vec![map]));
    linux.set_gid_mappings(Some(vec![map]));
    let out = run(&s);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        words,
        ["0", "100000", "65536", "0", "100000", "65536", "0"],
        "{}",
        out.stdout
    );

    // Exec joins the user namespace too.
    let bundle = Bundle::new();
    let mounts = mount_count();
    s.process_mut()
        .as_mut()
        .unwrap()
        .set_args(Some(vec!["sleep".into(), "100".into()]));
    let mut c = create(&id, &s, &bundle, Default::default()).unwrap();
    c.start().unwrap();
    let (r, w) = pipe();
    let spawned = c
        .exec(
            &exec_process(&["sh", "-c", "id -u; cat /proc/self/uid_map"]),
            rustjail::Stdio {
                stdin: None,
                stdout: Some(w),
                stderr: None,
            },
        )
        .unwrap();
    let out = read_all(r);
    assert_eq!(wait_code(spawned.pid), 0);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["0", "0", "100000", "65536"], "{out}");
    let cg = c.cgroup().path().to_string();
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(wait_code(c.pid()), 137);
    assert_clean(c.pid(), &cg, mounts);
}

fn exec_process(args: &[&str]) -> rustjail::oci_spec::runtime::Process {
    let mut p = spec("unused", args).process().clone().unwrap();
    p.set_env(Some(vec!["PATH=/bin".into()]));
    p
}

#[test]
fn exec_joins_the_running_container() {
    require_root!();
    let bundle = Bundle::new();
    let id = unique_id("exec");
    let mounts = mount_count();
    let mut c = create(
        &id,
        &spec(&id, &["sleep", "100"]),
        &bundle,
        Default::default(),
    )
    .unwrap();
    // Exec into a created (not yet started) container works too.
    c.start().unwrap();

    let (r, w) = pipe();
    let pid = c
        .exec(
            &exec_process(&[
                "sh",
                "-c",
                "hostname; cat /proc/1/cmdline; echo; cat /proc/self/cgroup | grep memory",
            ]),
            rustjail::Stdio {
                stdin: None,
                stdout: Some(w),
                stderr: None,
            },
        )
        .unwrap()
        .pid;
    let out = read_all(r);
    assert_eq!(wait_code(pid), 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "rustjail");
    assert_eq!(lines[1], "sleep\u{0}100\u{0}");
    // In the container's cgroup namespace its cgroup is the root.
    assert_eq!(lines[2].rsplit(':').next(), Some("/"), "{out}");

    // An exec error names the container and the cause, and leaves no process.
    let err = c
        .exec(&exec_process(&["no-such-binary"]), Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("container {id:?}: exec \"no-such-binary\": executable file not found in $PATH")
    );

    // Exit codes of exec'd processes.
    let pid = c
        .exec(&exec_process(&["sh", "-c", "exit 7"]), Default::default())
        .unwrap()
        .pid;
    assert_eq!(wait_code(pid), 7);

    let cg = c.cgroup().path().to_string();
    c.kill(nix::sys::signal::Signal::SIGKILL, true).unwrap();
    assert_eq!(wait_code(c.pid()), 137);
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_clean(c.pid(), &cg, mounts);
}

#[test]
fn destroy_kills_every_process() {
    require_root!();
    let bundle = Bundle::new();
    let id = unique_id("destroy");
    let mounts = mount_count();
    let mut c = create(
        &id,
        &spec(&id, &["sh", "-c", "sleep 100 & sleep 100 & wait"]),
        &bundle,
        Default::default(),
    )
    .unwrap();
    c.start().unwrap();
    let extra = c
        .exec(&exec_process(&["sleep", "100"]), Default::default())
        .unwrap()
        .pid;
    let cg = c.cgroup().path().to_string();
    // Wait for the background sleeps to show up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while c.cgroup().pids().unwrap().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "processes did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    // The exec'd process first: a dying pid-namespace init waits until
    // every process of its namespace is reaped, and we are its parent.
    assert_eq!(wait_code(extra), 137);
    assert_eq!(wait_code(c.pid()), 137);
    assert_clean(c.pid(), &cg, mounts);
    assert_clean(extra, &cg, mounts);
}

#[test]
fn destroy_before_start() {
    require_root!();
    let bundle = Bundle::new();
    let id = unique_id("nostart");
    let mounts = mount_count();
    let mut c = create(&id, &spec(&id, &["true"]), &bundle, Default::default()).unwrap();
    let cg = c.cgroup().path().to_string();
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(wait_code(c.pid()), 137);
    assert_clean(c.pid(), &cg, mounts);
    assert!(c.start().is_err());
}

#[test]
fn pause_resume_stats_update() {
    require_root!();
    let bundle = Bundle::new();
    let id = unique_id("pause");
    let mounts = mount_count();
    let mut c = create(
        &id,
        &spec(&id, &["sleep", "100"]),
        &bundle,
        Default::default(),
    )
    .unwrap();
    c.start().unwrap();
    let freezer = std::fs::read_to_string(c.cgroup().file(Some("freezer"), "freezer.state"));
    assert_eq!(freezer.unwrap().trim(), "THAWED");
    c.pause().unwrap();
    let state = std::fs::read_to_string(c.cgroup().file(Some("freezer"), "freezer.state")).unwrap();
    assert_eq!(state.trim(), "FROZEN");
    assert!(c.pause().is_err());
    c.resume().unwrap();
    let state = std::fs::read_to_string(c.cgroup().file(Some("freezer"), "freezer.state")).unwrap();
    assert_eq!(state.trim(), "THAWED");

    let stats = c.stats();
    let mem = stats.memory.memory.as_ref().expect("memory stats");
    assert!(mem.usage > 0);
    assert_eq!(mem.limit, 256i64 << 20);
    assert_eq!(stats.pids.current, 1);

    let res = rustjail::oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(
            rustjail::oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(128i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    c.update(&res).unwrap();
    let limit =
        std::fs::read_to_string(c.cgroup().file(Some("memory"), "memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (128u64 << 20).to_string());

    // Destroy works on a paused container too.
    c.pause().unwrap();
    let cg = c.cgroup().path().to_string();
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(wait_code(c.pid()), 137);
    assert_clean(c.pid(), &cg, mounts);
}

#[test]
fn bad_input_is_reported_and_leaves_nothing() {
    require_root!();
    let bundle = Bundle::new();
    let mounts = mount_count();

    let id = unique_id("norootfs");
    let mut s = spec(&id, &["true"]);
    s.root_mut()
        .as_mut()
        .unwrap()
        .set_path("/nonexistent/rootfs".into());
    let err = create(&id, &s, &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("container {id:?}: rootfs /nonexistent/rootfs: no such file or directory")
    );
    assert!(cgroup_dirs(&id).is_empty());

    let err = create("a/b", &spec("a-b", &["true"]), &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("container \"a/b\": invalid id"), "{err}");
    let err = create("..", &spec("dots", &["true"]), &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("container \"..\": invalid id"), "{err}");

    // A missing executable fails at create, inside the container.
    let id = unique_id("noexe");
    let err = create(&id, &spec(&id, &["/bin/nope"]), &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("container {id:?}: exec /bin/nope: no such file or directory")
    );
    assert!(cgroup_dirs(&id).is_empty());

    // A failing mount names the mount and the cause.
    let id = unique_id("badmount");
    let mut s = spec(&id, &["true"]);
    s.mounts_mut().as_mut().unwrap().push(
        rustjail::oci_spec::runtime::MountBuilder::default()
            .destination("/mnt")
            .typ("bind")
            .source("/nonexistent/src")
            .options(vec!["rbind".into()])
            .build()
            .unwrap(),
    );
    let err = create(&id, &s, &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("container {id:?}: bind source /nonexistent/src: no such file or directory")
    );
    assert!(cgroup_dirs(&id).is_empty());

    // A cgroup that exists already (here: another container's) is refused
    // and left alone.
    let id = unique_id("cgtaken");
    let mut first = create(&id, &spec(&id, &["true"]), &bundle, Default::default()).unwrap();
    let id2 = unique_id("cgtaken2");
    let mut s = spec(&id2, &["true"]);
    s.linux_mut()
        .as_mut()
        .unwrap()
        .set_cgroups_path(Some(format!("/{id}").into()));
    let err = create(&id2, &s, &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("container {id2:?}: cgroup {id}: create: already exists")
    );
    assert!(!cgroup_dirs(&id).is_empty());
    first.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(wait_code(first.pid()), 137);
    assert!(cgroup_dirs(&id).is_empty());

    // A cgroup path with '..' is refused.
    let id = unique_id("badcg");
    let mut s = spec(&id, &["true"]);
    s.linux_mut()
        .as_mut()
        .unwrap()
        .set_cgroups_path(Some("/../x".into()));
    let err = create(&id, &s, &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("'..' is not allowed"), "{err}");

    assert_eq!(mount_count(), mounts);
}

#[test]
fn bind_mount_and_joined_namespace() {
    require_root!();
    let bundle = Bundle::new();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("f"), "from host\n").unwrap();
    let id = unique_id("bind");
    let mut s = spec(
        &id,
        &[
            "sh",
            "-c",
            "cat /data/f; touch /data/g 2>/dev/null || echo ro",
        ],
    );
    s.mounts_mut().as_mut().unwrap().push(
        rustjail::oci_spec::runtime::MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(shared.path())
            .options(vec!["rbind".into(), "ro".into()])
            .build()
            .unwrap(),
    );
    // Join the caller's network namespace by path instead of a new one.
    let linux = s.linux_mut().as_mut().unwrap();
    let ns: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .map(|mut n| {
            if n.typ() == rustjail::oci_spec::runtime::LinuxNamespaceType::Network {
                n.set_path(Some("/proc/self/ns/net".into()));
            }
            n
        })
        .collect();
    linux.set_namespaces(Some(ns));
    let out = run_in(&s, &bundle);
    assert_eq!(out.stdout, "from host\nro\n", "{}", out.stderr);
}

/// Prints create -> start -> exit timings for `true` (p50/p99 over 50).
/// Run with `cargo test -p rustjail --release -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run explicitly"]
fn bench_create_start_wait_true() {
    require_root!();
    bench_variant("all namespaces new", |_| {});
    // As in a Kata pod: network, IPC and UTS belong to the sandbox.
    bench_variant("new mount+pid+cgroup ns only", |s| {
        use rustjail::oci_spec::runtime::LinuxNamespaceType as T;
        let linux = s.linux_mut().as_mut().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|n| matches!(n.typ(), T::Mount | T::Pid | T::Cgroup))
            .collect();
        linux.set_namespaces(Some(ns));
    });
}

fn bench_variant(name: &str, tweak: impl Fn(&mut rustjail::oci_spec::runtime::Spec)) {
    println!("{name}:");
    let bundle = Bundle::new();
    let mut create_ms = Vec::new();
    let mut total_ms = Vec::new();
    let mut destroy_ms = Vec::new();
    for _ in 0..50 {
        let id = unique_id("bench");
        let mut s = spec(&id, &["true"]);
        tweak(&mut s);
        let t0 = std::time::Instant::now();
        let mut c = create(&id, &s, &bundle, Default::default()).unwrap();
        let t1 = std::time::Instant::now();
        c.start().unwrap();
        assert_eq!(wait_code(c.pid()), 0);
        let t2 = std::time::Instant::now();
        c.destroy(std::time::Duration::from_secs(5)).unwrap();
        let t3 = std::time::Instant::now();
        create_ms.push((t1 - t0).as_secs_f64() * 1e3);
        total_ms.push((t2 - t0).as_secs_f64() * 1e3);
        destroy_ms.push((t3 - t2).as_secs_f64() * 1e3);
    }
    for (name, v) in [
        ("create", &mut create_ms),
        ("create+start+exit", &mut total_ms),
        ("destroy", &mut destroy_ms),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "  {name}: p50 {:.2} ms, p99 {:.2} ms",
            v[v.len() / 2],
            v[v.len() * 99 / 100]
        );
    }
}

#[test]
fn hooks_run_in_order_with_state() {
    require_root!();
    use rustjail::oci_spec::runtime::{Hook, HookBuilder, HooksBuilder};
    let bundle = Bundle::new();
    let log = tempfile::tempdir().unwrap();
    let host_hook = |name: &str| -> Hook {
        // Appends "<name> <status> <hostname>" to a host file.
        let script = format!(
            "read -r state; s=${{state#*\\\"status\\\":\\\"}}; echo {name} ${{s%%\\\"*}} $(hostname) >> {}/log",
            log.path().display()
        );
        HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["sh".to_string(), "-c".to_string(), script])
            .timeout(10i64)
            .build()
            .unwrap()
    };
    let start_hook = HookBuilder::default()
        .path("/bin/sh")
        .args(vec![
            "sh".into(),
            "-c".into(),
            "hostname > /tmp/started".into(),
        ])
        .build()
        .unwrap();
    let hooks = HooksBuilder::default()
        .create_runtime(vec![host_hook("createRuntime")])
        .create_container(vec![host_hook("createContainer")])
        .start_container(vec![start_hook])
        .poststart(vec![host_hook("poststart")])
        .poststop(vec![host_hook("poststop")])
        .build()
        .unwrap();
    let id = unique_id("hooks");
    let mut s = spec(&id, &["true"]);
    s.set_hooks(Some(hooks));
    let out = run_in(&s, &bundle);
    assert_eq!(out.code, 0);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let logged = std::fs::read_to_string(log.path().join("log")).unwrap();
    assert_eq!(
        logged,
        format!(
            "createRuntime creating {host}\ncreateContainer creating rustjail\n\
             poststart running {host}\npoststop stopped {host}\n"
        )
    );
    let started = std::fs::read_to_string(bundle.rootfs().join("tmp/started")).unwrap();
    assert_eq!(started, "rustjail\n");

    // A failing createRuntime hook fails create and leaves nothing.
    let id = unique_id("badhook");
    let mut s = spec(&id, &["true"]);
    s.set_hooks(Some(
        HooksBuilder::default()
            .create_runtime(vec![HookBuilder::default()
                .path("/bin/false")
                .build()
                .unwrap()])
            .build()
            .unwrap(),
    ));
    let mounts = mount_count();
    let err = create(&id, &s, &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("container {id:?}: hook createRuntime /bin/false: exit status: 1")
    );
    assert!(cgroup_dirs(&id).is_empty());
    assert_eq!(mount_count(), mounts);
}

#[test]
fn terminal_for_init_and_exec() {
    require_root!();
    use std::io::{Read, Write};
    let bundle = Bundle::new();
    let id = unique_id("tty");
    let mounts = mount_count();
    let mut s = spec(
        &id,
        &["sh", "-c", "tty; stty size; read line; echo got $line"],
    );
    let process = s.process_mut().as_mut().unwrap();
    process.set_terminal(Some(true));
    process.set_console_size(Some(
        rustjail::oci_spec::runtime::BoxBuilder::default()
            .height(24u64)
            .width(80u64)
            .build()
            .unwrap(),
    ));
    let mut c = create(&id, &s, &bundle, Default::default()).unwrap();
    let console = c.take_console().expect("a console");
    c.start().unwrap();
    let mut f = std::fs::File::from(console);
    f.write_all(b"hello\n").unwrap();
    let mut out = Vec::new();
    // The master reads EIO once the last slave holder exits.
    let _ = f.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).replace('\r', "");
    assert_eq!(wait_code(c.pid()), 0);
    // The terminal may echo our input before the shell starts.
    let lines: Vec<&str> = out.lines().filter(|l| *l != "hello").collect();
    assert_eq!(lines, ["/dev/pts/0", "24 80", "got hello"], "{out}");
    let cg = c.cgroup().path().to_string();
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_clean(c.pid(), &cg, mounts);
}

#[test]
fn exec_with_terminal_and_resize() {
    require_root!();
    use std::io::Read;
    use std::os::fd::AsFd;
    let bundle = Bundle::new();
    let id = unique_id("ttyexec");
    let mounts = mount_count();
    let mut c = create(
        &id,
        &spec(&id, &["sleep", "100"]),
        &bundle,
        Default::default(),
    )
    .unwrap();
    c.start().unwrap();
    let mut p = exec_process(&["sh", "-c", "sleep 0.2; stty size"]);
    p.set_terminal(Some(true));
    let spawned = c.exec(&p, Default::default()).unwrap();
    let console = spawned.console.expect("a console");
    rustjail::set_window_size(console.as_fd(), 50, 132).unwrap();
    let mut out = Vec::new();
    let _ = std::fs::File::from(console).read_to_end(&mut out);
    assert_eq!(wait_code(spawned.pid), 0);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "50 132");
    let cg = c.cgroup().path().to_string();
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(wait_code(c.pid()), 137);
    assert_clean(c.pid(), &cg, mounts);
}

fn seccomp_profile() -> rustjail::oci_spec::runtime::LinuxSeccomp {
    use rustjail::oci_spec::runtime::{
        LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
        LinuxSyscallBuilder,
    };
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec![
                    "mkdir".to_string(),
                    "mkdirat".to_string(),
                    "clock_gettime64".to_string(),
                ])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(13u32)
                .build()
                .unwrap(),
            // sethostname(2) refused only for names of length 3.
            LinuxSyscallBuilder::default()
                .names(vec!["sethostname".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(1usize)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .value(3u64)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap()
}

#[test]
fn seccomp_refuses_syscalls() {
    require_root!();
    for nnp in [true, false] {
        let bundle = Bundle::new();
        let id = unique_id("seccomp");
        let mounts = mount_count();
        let script = "grep -E '^Seccomp' /proc/self/status; mkdir /tmp/x 2>&1; \
                      hostname abc 2>&1; hostname abcd && hostname; exec sleep 100";
        let mut s = spec(&id, &["sh", "-c", script]);
        s.linux_mut()
            .as_mut()
            .unwrap()
            .set_seccomp(Some(seccomp_profile()));
        let process = s.process_mut().as_mut().unwrap();
        process.set_no_new_privileges(Some(nnp));
        // Changing the hostname needs CAP_SYS_ADMIN.
        let mut caps = process.capabilities().clone().unwrap();
        let mut set = caps.bounding().clone().unwrap();
        set.insert(rustjail::oci_spec::runtime::Capability::SysAdmin);
        caps.set_bounding(Some(set.clone()));
        caps.set_effective(Some(set.clone()));
        caps.set_permitted(Some(set));
        process.set_capabilities(Some(caps));
        let (r, w) = pipe();
        let mut c = create(
            &id,
            &s,
            &bundle,
            rustjail::Stdio {
                stdin: None,
                stdout: Some(w),
                stderr: None,
            },
        )
        .unwrap();
        c.start().unwrap();
        // Read the script's five lines before it is killed.
        let mut reader = std::io::BufReader::new(std::fs::File::from(r));
        let mut out = String::new();
        for _ in 0..5 {
            std::io::BufRead::read_line(&mut reader, &mut out).unwrap();
        }
        // Exec'd processes get the container's profile as well.
        let (er, ew) = pipe();
        let spawned = c
            .exec(
                &exec_process(&["sh", "-c", "mkdir /tmp/y 2>&1"]),
                rustjail::Stdio {
                    stdin: None,
                    stdout: Some(ew),
                    stderr: None,
                },
            )
            .unwrap();
        let exec_out = read_all(er);
        assert_eq!(wait_code(spawned.pid), 1);
        assert!(exec_out.contains("Permission denied"), "{exec_out}");
        let cg = c.cgroup().path().to_string();
        c.destroy(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(wait_code(c.pid()), 137);
        assert_clean(c.pid(), &cg, mounts);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["Seccomp:", "2"],
            "{out}"
        );
        assert!(lines[1].starts_with("Seccomp_filters:"), "{out}");
        assert!(lines[2].contains("Permission denied"), "{out}");
        // No errnoRet: EPERM.
        assert!(lines[3].contains("Operation not permitted"), "{out}");
        assert_eq!(lines[4], "abcd", "{out}");
    }
}

#[test]
fn oom_kill_is_reported() {
    require_root!();
    let bundle = Bundle::new();
    let id = unique_id("oom");
    let mounts = mount_count();
    let mut s = spec(
        &id,
        &[
            "sh",
            "-c",
            "read x; dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
    );
    let res = rustjail::oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(
            rustjail::oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(16i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    s.linux_mut().as_mut().unwrap().set_resources(Some(res));
    let (stdin_r, stdin_w) = pipe();
    let mut c = create(
        &id,
        &s,
        &bundle,
        rustjail::Stdio {
            stdin: Some(stdin_r),
            stdout: None,
            stderr: None,
        },
    )
    .unwrap();
    let mut oom = c.oom_events().unwrap();
    assert_eq!(oom.read().unwrap(), 0);
    c.start().unwrap();
    drop(stdin_w);
    let code = wait_code(c.pid());
    assert_ne!(code, 0);
    let mut fds = [nix::poll::PollFd::new(
        oom.fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    assert_eq!(nix::poll::poll(&mut fds, 5000u16).unwrap(), 1);
    assert!(oom.read().unwrap() >= 1);
    let cg = c.cgroup().path().to_string();
    drop(oom);
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_clean(c.pid(), &cg, mounts);
}

#[test]
fn sandbox_shares_pid_ipc_uts_namespaces() {
    require_root!();
    use rustjail::oci_spec::runtime::LinuxNamespaceType as T;
    let bundle = Bundle::new();
    let mounts = mount_count();
    let sandbox_id = unique_id("sandbox");
    let mut sandbox = create(
        &sandbox_id,
        &spec(&sandbox_id, &["sleep", "100"]),
        &bundle,
        Default::default(),
    )
    .unwrap();
    sandbox.start().unwrap();
    let spid = sandbox.pid();

    let id = unique_id("member");
    let mut s = spec(&id, &["sh", "-c", "echo $$; hostname; cat /proc/1/cmdline"]);
    s.set_hostname(None);
    let linux = s.linux_mut().as_mut().unwrap();
    let ns: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .map(|mut n| {
            let name = match n.typ() {
                T::Pid => "pid",
                T::Ipc => "ipc",
                T::Uts => "uts",
                _ => return n,
            };
            n.set_path(Some(format!("/proc/{spid}/ns/{name}").into()));
            n
        })
        .collect();
    linux.set_namespaces(Some(ns));
    let out = run_in(&s, &bundle).stdout;
    let lines: Vec<&str> = out.lines().collect();
    // Not PID 1: the sandbox's sleep is PID 1 of the shared namespace.
    assert_ne!(lines[0], "1", "{out}");
    assert_eq!(lines[1], "rustjail", "{out}");
    assert_eq!(lines[2], "sleep\u{0}100\u{0}", "{out}");

    let cg = sandbox.cgroup().path().to_string();
    sandbox.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(wait_code(spid), 137);
    assert_clean(spid, &cg, mounts);
}

#[test]
fn spec_devices_are_created() {
    require_root!();
    let id = unique_id("devices");
    let mut s = spec(&id, &["stat", "-c", "%F %t %T %a %u", "/dev/mydev"]);
    s.linux_mut().as_mut().unwrap().set_devices(Some(vec![
        rustjail::oci_spec::runtime::LinuxDeviceBuilder::default()
            .path("/dev/mydev")
            .typ(rustjail::oci_spec::runtime::LinuxDeviceType::C)
            .major(1i64)
            .minor(3i64)
            .file_mode(0o640u32)
            .uid(1000u32)
            .build()
            .unwrap(),
    ]));
    let out = run(&s);
    assert_eq!(
        out.stdout, "character special file 1 3 640 1000\n",
        "{}",
        out.stderr
    );
}

#[test]
fn no_pivot_uses_move_and_chroot() {
    require_root!();
    let bundle = Bundle::new();
    let id = unique_id("nopivot");
    let mounts = mount_count();
    let mut s = spec(&id, &["sh", "-c", "ls /; cat /proc/self/mountinfo | wc -l"]);
    s.root_mut().as_mut().unwrap().set_readonly(Some(true));
    let (r, w) = pipe();
    let mut c = rustjail::Container::create(
        &id,
        &s,
        bundle.path(),
        rustjail::CreateOpts {
            launcher: launcher(),
            stdio: rustjail::Stdio {
                stdin: None,
                stdout: Some(w),
                stderr: None,
            },
            no_pivot: true,
            ..Default::default()
        },
    )
    .unwrap();
    c.start().unwrap();
    let out = read_all(r);
    assert_eq!(wait_code(c.pid()), 0);
    let mut lines: Vec<&str> = out.lines().collect();
    let _count = lines.pop();
    assert_eq!(
        lines,
        ["bin", "dev", "etc", "proc", "root", "sys", "tmp"],
        "{out}"
    );
    let cg = c.cgroup().path().to_string();
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_clean(c.pid(), &cg, mounts);
}

#[test]
fn exec_into_stopped_container_fails() {
    require_root!();
    let bundle = Bundle::new();
    let id = unique_id("stopped");
    let mounts = mount_count();
    let mut c = create(&id, &spec(&id, &["true"]), &bundle, Default::default()).unwrap();
    c.start().unwrap();
    // Not reaped yet: a zombie counts as stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.pid())).unwrap();
        if stat
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .starts_with('Z')
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let err = c
        .exec(&exec_process(&["true"]), Default::default())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("container {id:?}: exec: the container is stopped")
    );
    assert_eq!(wait_code(c.pid()), 0);
    let cg = c.cgroup().path().to_string();
    c.destroy(std::time::Duration::from_secs(5)).unwrap();
    assert_clean(c.pid(), &cg, mounts);
}

/// The spec's rules come first and the default allow-list after them (as
/// runc and upstream Kata apply it): a spec cannot take /dev/zero away,
/// but its rules are applied (`tests/devices.rs` checks a device outside
/// the list).
#[test]
fn device_cgroup_rules() {
    require_root!();
    use rustjail::oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};
    let id = unique_id("devcg");
    let mut s = spec(
        &id,
        &[
            "sh",
            "-c",
            "echo x > /dev/null && echo null ok; head -c 1 /dev/zero >/dev/null && echo zero ok",
        ],
    );
    let rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap(),
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1i64)
            .minor(3i64)
            .access("rwm")
            .build()
            .unwrap(),
        // Any char device may be created (major and minor omitted).
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .access("m")
            .build()
            .unwrap(),
    ];
    let linux = s.linux_mut().as_mut().unwrap();
    let mut res = linux.resources().clone().unwrap();
    res.set_devices(Some(rules));
    linux.set_resources(Some(res));
    let out = run(&s);
    assert!(out.stdout.starts_with("null ok\n"), "{}", out.stdout);
    assert!(out.stdout.ends_with("zero ok\n"), "{}", out.stdout);
    assert_eq!(out.stderr, "");
}

#[test]
fn create_timeout_kills_and_cleans_up() {
    require_root!();
    use rustjail::oci_spec::runtime::{HookBuilder, HooksBuilder};
    let bundle = Bundle::new();
    let id = unique_id("timeout");
    let mounts = mount_count();
    let mut s = spec(&id, &["true"]);
    // A createContainer hook, run by the init, that outlasts the timeout.
    s.set_hooks(Some(
        HooksBuilder::default()
            .create_container(vec![HookBuilder::default()
                .path("/bin/sleep")
                .args(vec!["sleep".to_string(), "30".to_string()])
                .build()
                .unwrap()])
            .build()
            .unwrap(),
    ));
    let t0 = std::time::Instant::now();
    let err = rustjail::Container::create(
        &id,
        &s,
        bundle.path(),
        rustjail::CreateOpts {
            launcher: launcher(),
            timeout: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("container {id:?}: create timed out after 0.3 s")
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    assert!(cgroup_dirs(&id).is_empty());
    assert_eq!(mount_count(), mounts);
}

#[test]
fn cpu_cpuset_and_oom_score_adj() {
    require_root!();
    use rustjail::oci_spec::runtime::{LinuxCpuBuilder, LinuxResourcesBuilder};
    let id = unique_id("cpu");
    let mut s = spec(
        &id,
        &[
            "sh",
            "-c",
            "cd /sys/fs/cgroup; cat cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us \
             cpuset/cpuset.cpus /proc/self/oom_score_adj",
        ],
    );
    let res = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50000i64)
                .period(100000u64)
                .cpus("0")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    s.linux_mut().as_mut().unwrap().set_resources(Some(res));
    s.process_mut()
        .as_mut()
        .unwrap()
        .set_oom_score_adj(Some(500));
    let out = run(&s);
    assert_eq!(out.stdout, "512\n50000\n100000\n0\n500\n", "{}", out.stderr);
}

#[test]
fn time_namespace_with_offsets() {
    require_root!();
    use rustjail::oci_spec::runtime::{
        LinuxNamespaceBuilder, LinuxNamespaceType, LinuxTimeOffsetBuilder,
    };
    if !std::path::Path::new("/proc/self/ns/time").exists() {
        skip("no time namespaces in this kernel");
        return;
    }
    let id = unique_id("timens");
    let mut s = spec(&id, &["cat", "/proc/uptime"]);
    let linux = s.linux_mut().as_mut().unwrap();
    let mut ns = linux.namespaces().clone().unwrap();
    ns.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Time)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(ns));
    let mut offsets = std::collections::HashMap::new();
    offsets.insert(
        "boottime".to_string(),
        LinuxTimeOffsetBuilder::default()
            .secs(86400i64 * 1000)
            .build()
            .unwrap(),
    );
    linux.set_time_offsets(Some(offsets));
    let out = run(&s);
    let uptime: f64 = out
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(uptime > 86400.0 * 1000.0, "{}", out.stdout);
}

#[test]
fn username_is_resolved_in_the_container() {
    require_root!();
    let bundle = Bundle::new();
    let root = bundle.rootfs();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nweb:x:33:34:web:/var/www:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwww:x:34:\nlog:x:4:web\n",
    )
    .unwrap();
    let id = unique_id("username");
    let mut s = spec(&id, &["sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
    let user = s.process_mut().as_mut().unwrap().user_mut();
    user.set_username(Some("web".into()));
    user.set_additional_gids(Some(vec![7]));
    let out = run_in(&s, &bundle);
    assert_eq!(out.stdout, "33\n34\n34 4 7\n/var/www\n", "{}", out.stderr);

    let id = unique_id("nouser");
    let mut s = spec(&id, &["true"]);
    s.process_mut()
        .as_mut()
        .unwrap()
        .user_mut()
        .set_username(Some("ghost".into()));
    let err = create(&id, &s, &bundle, Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("container {id:?}: user \"ghost\": not found in /etc/passwd")
    );
}

/// Prints the cost of the caller-side cgroup work alone.
#[test]
#[ignore = "benchmark: run explicitly"]
fn bench_cgroup_create_destroy() {
    require_root!();
    let res = spec("x", &["true"])
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .clone();
    let mut v = Vec::new();
    for _ in 0..50 {
        let id = unique_id("cgbench");
        let t0 = std::time::Instant::now();
        let mut cg = rustjail::cgroups::CgroupManager::create(&id, res.as_ref()).unwrap();
        cg.destroy(std::time::Duration::from_secs(1)).unwrap();
        v.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    println!("cgroup create+destroy: p50 {:.2} ms", v[v.len() / 2]);
}
