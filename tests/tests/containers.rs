//! Containers through the wire API of the real agent: busybox rootfs, real
//! namespaces and cgroups. Root only; each test checks it left nothing.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use integration_tests::env::*;
use integration_tests::*;
use protocols::agent::*;
use protocols::oci;
use ttrpc::Code;

#[test]
fn echo_runs_and_everything_is_cleaned_up() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("echo");
    env.run(&cid, &["sh", "-c", "echo hello; echo oops >&2; hostname"]);
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    // Output written before exit is all there after WaitProcess.
    assert_eq!(env.read_all(&cid, &cid, false, 1024), b"hello\nbox\n");
    assert_eq!(env.read_all(&cid, &cid, true, 1024), b"oops\n");
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

#[test]
fn exit_codes_and_signals() {
    let Some(mut env) = Env::new() else { return };
    let a = unique("exit3");
    env.run(&a, &["sh", "-c", "exit 3"]);
    assert_eq!(env.wait(&a, "").unwrap(), 3);

    let b = unique("killed");
    env.run(&b, &["sleep", "1000"]);
    env.signal(&b, "", 9).unwrap();
    assert_eq!(env.wait(&b, &b).unwrap(), 137);
    // A signal to a process that has exited is no error (the Go runtime's
    // stop races the exit; upstream ignores ESRCH).
    env.signal(&b, &b, 15).unwrap();

    let c = unique("term");
    env.run(
        &c,
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; while :; do sleep 0.01; done",
        ],
    );
    // Signal only once the trap is installed: as a pid namespace's init,
    // the shell ignores SIGTERM until then.
    assert_eq!(env.read(&c, &c, false, 6).unwrap(), b"ready\n");
    env.signal(&c, &c, 15).unwrap();
    assert_eq!(env.wait(&c, &c).unwrap(), 7);

    for id in [&a, &b, &c] {
        env.remove(id).unwrap();
        env.assert_gone(id);
    }
}

#[test]
fn exec_into_running_container_and_not_into_a_stopped_one() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("exec");
    env.run(&cid, &["sleep", "1000"]);
    env.exec(&cid, "e1", &["sh", "-c", "echo from-exec; exit 5"])
        .unwrap();
    assert_eq!(env.wait(&cid, "e1").unwrap(), 5);
    assert_eq!(env.read_all(&cid, "e1", false, 100), b"from-exec\n");
    // The exec shares the container's pid namespace: it sees the init as 1.
    env.exec(&cid, "e2", &["sh", "-c", "cat /proc/1/cmdline"])
        .unwrap();
    assert_eq!(env.wait(&cid, "e2").unwrap(), 0);
    assert_eq!(env.read_all(&cid, "e2", false, 100), b"sleep\x001000\x00");
    // Duplicate exec id.
    let e = env.exec(&cid, "e1", &["true"]).unwrap_err();
    assert_eq!(code(&e), Code::ALREADY_EXISTS, "{e:?}");

    env.signal(&cid, "", 9).unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 137);
    let e = env.exec(&cid, "e3", &["true"]).unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION, "{e:?}");
    assert!(message(&e).contains(&cid), "{e:?}");
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

#[test]
fn stdin_round_trip_and_eof() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("cat");
    env.run(&cid, &["cat"]);
    assert_eq!(env.write(&cid, &cid, b"abc").unwrap(), 3);
    assert_eq!(env.write(&cid, &cid, b"def\n").unwrap(), 4);
    // Empty data is EOF for the process.
    env.write(&cid, &cid, b"").unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    assert_eq!(env.read_all(&cid, &cid, false, 2), b"abcdef\n");
    // Stdin is closed now.
    let e = env.write(&cid, &cid, b"more").unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION, "{e:?}");
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

#[test]
fn hundred_mib_of_stdout_byte_exact_with_a_slow_reader() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("bulk");
    let total: usize = 100 << 20;
    // 16-byte lines "0123456789abcde\n", so every byte's value is checkable.
    env.run(
        &cid,
        &[
            "sh",
            "-c",
            &format!("yes 0123456789abcde | head -c {total}"),
        ],
    );
    let mut got = 0usize;
    let pattern = b"0123456789abcde\n";
    loop {
        match env.read(&cid, &cid, false, 64 * 1024) {
            Ok(d) => {
                for (i, b) in d.iter().enumerate() {
                    assert_eq!(*b, pattern[(got + i) % 16], "byte {} differs", got + i);
                }
                got += d.len();
            }
            Err(e) => {
                assert_eq!(code(&e), Code::OUT_OF_RANGE, "{e:?}");
                break;
            }
        }
    }
    assert_eq!(got, total);
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

#[test]
fn bad_requests_get_clear_statuses_and_leave_nothing() {
    let Some(mut env) = Env::new() else { return };
    let missing = unique("missing");
    let e = env.wait(&missing, "").unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND);
    assert!(message(&e).contains(&missing), "{e:?}");
    let e = env.remove(&missing).unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND);

    for bad in ["../escape", "a/b", "..", ""] {
        let e = env
            .create(bad, env.spec(env.rootfs.path(), "x", &["true"]))
            .unwrap_err();
        assert_eq!(code(&e), Code::INVALID_ARGUMENT, "{bad:?}: {e:?}");
    }

    let norootfs = unique("norootfs");
    let e = env
        .create(
            &norootfs,
            env.spec(Path::new("/nonexistent/rootfs"), &norootfs, &["true"]),
        )
        .unwrap_err();
    assert!(message(&e).contains("/nonexistent/rootfs"), "{e:?}");
    assert!(message(&e).contains(&norootfs), "{e:?}");
    env.assert_gone(&norootfs);

    let badspec = unique("badspec");
    let mut s = env.spec(env.rootfs.path(), &badspec, &["true"]);
    s.Linux.as_mut().unwrap().Namespaces[0].Type = "bogus".into();
    let e = env.create(&badspec, s).unwrap_err();
    assert_eq!(code(&e), Code::INVALID_ARGUMENT, "{e:?}");
    env.assert_gone(&badspec);

    let dup = unique("dup");
    env.run(&dup, &["sleep", "1000"]);
    let e = env
        .create(&dup, env.spec(env.rootfs.path(), &dup, &["true"]))
        .unwrap_err();
    assert_eq!(code(&e), Code::ALREADY_EXISTS, "{e:?}");
    let e = env.start(&dup).unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION, "{e:?}");
    let e = env.read(&dup, "nope", false, 10).unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND, "{e:?}");
    // Remove of a running container kills it and cleans up, as Kata does.
    env.remove(&dup).unwrap();
    env.assert_gone(&dup);
    raw_check(&env.agent.socket);
}

#[test]
fn stats_pause_resume_update() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("stats");
    env.run(&cid, &["sleep", "1000"]);
    let mut req = StatsContainerRequest::new();
    req.container_id = cid.clone();
    let stats = env
        .rt
        .block_on(env.client.stats_container(ctx(), &req))
        .unwrap();
    let cg = stats.cgroup_stats.as_ref().unwrap();
    assert_eq!(cg.pids_stats.current, 1);
    assert!(cg.memory_stats.usage.usage > 0);

    let mut p = PauseContainerRequest::new();
    p.container_id = cid.clone();
    env.rt
        .block_on(env.client.pause_container(ctx(), &p))
        .unwrap();
    let freezer = Path::new("/sys/fs/cgroup/freezer")
        .join(&env.cgroups.name)
        .join(&cid)
        .join("freezer.state");
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    let mut r = ResumeContainerRequest::new();
    r.container_id = cid.clone();
    env.rt
        .block_on(env.client.resume_container(ctx(), &r))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "THAWED");

    let mut u = UpdateContainerRequest::new();
    u.container_id = cid.clone();
    let mut res = oci::LinuxResources::new();
    let mut pids = oci::LinuxPids::new();
    pids.Limit = 42;
    res.Pids = Some(pids).into();
    u.resources = Some(res).into();
    env.rt
        .block_on(env.client.update_container(ctx(), &u))
        .unwrap();
    let max = Path::new("/sys/fs/cgroup/pids")
        .join(&env.cgroups.name)
        .join(&cid)
        .join("pids.max");
    assert_eq!(std::fs::read_to_string(max).unwrap().trim(), "42");

    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// What the agent holds: fds, threads, children, mounts in its namespace,
/// and cgroups under the test parent.
fn footprint(pid: u32, parent: &str) -> (usize, u64, usize, usize, usize) {
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let cgroups: usize = [
        "memory", "pids", "cpu", "freezer", "cpuset", "devices", "blkio",
    ]
    .iter()
    .map(|c| {
        std::fs::read_dir(Path::new("/sys/fs/cgroup").join(c).join(parent))
            .map(|d| {
                // Only this test's containers: others run in parallel.
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.contains("-cycle") || n.contains("-warm")
                    })
                    .count()
            })
            .unwrap_or(0)
    })
    .sum();
    (
        fd_count(pid),
        proc_status_field(pid, "Threads:").unwrap_or(0),
        children_of(pid).len(),
        mounts,
        cgroups,
    )
}

/// The kubelet's systemd cgroup driver (kubeadm's default) sends
/// `slice:prefix:name`; the pod's containers share the pod's slice, laid out
/// as systemd does, and the slices go with the pod's last container.
#[test]
fn systemd_cgroups_paths_group_a_pod_and_leave_nothing() {
    let Some(mut env) = Env::new() else { return };
    let top = CgroupParent::systemd_slice();
    let base = top.slice_base().to_string();
    let pod = format!("{base}-besteffort-pod{}.slice", std::process::id());
    let pod_dir = format!("{base}.slice/{base}-besteffort.slice/{pod}");
    let (a, b) = (unique("sd-a"), unique("sd-b"));
    for cid in [&a, &b] {
        let mut s = env.spec(env.rootfs.path(), cid, &["sleep", "1000"]);
        s.Linux.as_mut().unwrap().CgroupsPath = format!("{pod}:cri-containerd:{cid}");
        env.create(cid, s).unwrap();
        env.start(cid).unwrap();
    }
    for ctrl in ["memory", "pids", "cpu", "freezer"] {
        for cid in [&a, &b] {
            let scope = Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(&pod_dir)
                .join(format!("cri-containerd-{cid}.scope"));
            assert!(scope.is_dir(), "{} missing", scope.display());
        }
    }
    env.remove(&a).unwrap();
    assert!(
        Path::new("/sys/fs/cgroup/memory").join(&pod_dir).is_dir(),
        "the pod's slice went while a container is in it"
    );
    env.remove(&b).unwrap();
    assert!(top.dirs().is_empty(), "slices left: {:?}", top.dirs());
    env.assert_gone(&a);
}

/// Parents the agent created for a container go with their last child;
/// one that existed before is left alone.
#[test]
fn parent_cgroups_the_agent_created_go_with_their_last_child() {
    let Some(env) = Env::new() else { return };
    let outer = CgroupParent::new();
    // Made by the test: the agent must not remove it.
    let kept = Path::new("/sys/fs/cgroup/memory").join(&outer.name);
    std::fs::create_dir(&kept).unwrap();
    let cid = unique("nested");
    let mut s = env.spec(env.rootfs.path(), &cid, &["true"]);
    s.Linux.as_mut().unwrap().CgroupsPath = format!("/{}/pod-x/{cid}", outer.name);
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    assert!(kept.join("pod-x").is_dir());
    env.remove(&cid).unwrap();
    assert!(!kept.join("pod-x").exists(), "pod-level parent left behind");
    assert!(
        kept.is_dir(),
        "a parent the agent did not create was removed"
    );
    assert_eq!(outer.dirs(), vec![kept]);
}

#[test]
fn hundred_cycles_leave_no_fd_thread_child_mount_or_cgroup() {
    let Some(mut env) = Env::new() else { return };
    let pid = env.agent.pid();
    // One cycle first, so lazily created things (the blocking pool, the
    // cgroup parent) exist in the baseline.
    let warm = unique("warm");
    env.run(&warm, &["true"]);
    env.wait(&warm, &warm).unwrap();
    env.remove(&warm).unwrap();
    let wait_for_baseline = |want: (usize, u64, usize, usize, usize)| {
        // Idle blocking threads retire after their keep-alive; give them
        // a bounded time to do so.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = footprint(pid, &env.cgroups.name);
            if now.0 <= want.0
                && now.1 <= want.1
                && now.2 <= want.2
                && now.3 <= want.3
                && now.4 <= want.4
            {
                return now;
            }
            if std::time::Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let base = wait_for_baseline((usize::MAX, 1, 0, usize::MAX, usize::MAX));
    assert_eq!(base.1, 1, "an idle agent should hold one thread: {base:?}");
    for i in 0..100 {
        let cid = unique(&format!("cycle{i}"));
        env.run(&cid, &["sh", "-c", "echo x"]);
        assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
        assert_eq!(env.read_all(&cid, &cid, false, 16), b"x\n");
        env.remove(&cid).unwrap();
    }
    let after = wait_for_baseline(base);
    assert_eq!(
        after, base,
        "(fds, threads, children, mounts, cgroups) before {base:?} after {after:?}"
    );
    env.assert_gone("none");
}

#[test]
fn agent_shutdown_removes_its_containers() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("shutdown");
    env.run(&cid, &["sleep", "1000"]);
    let mut exec_pid = None;
    for p in children_of(env.agent.pid()) {
        exec_pid = Some(p);
    }
    let init = exec_pid.expect("the container's init is the agent's child");
    // The agent's own /run outlives it while this handle is open.
    let run = std::fs::File::open(env.agent.path("/run/kata-containers")).unwrap();
    let status = env
        .agent
        .stop_with(libc::SIGTERM, Duration::from_secs(30))
        .expect("agent exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        !Path::new(&format!("/proc/{init}")).exists(),
        "container init {init} outlived the agent"
    );
    let run_dir = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&run));
    assert!(
        !Path::new(&run_dir).join(&cid).exists(),
        "bundle left behind"
    );
    let cg = Path::new("/sys/fs/cgroup/memory")
        .join(&env.cgroups.name)
        .join(&cid);
    assert!(!cg.exists(), "{} left behind", cg.display());
}

#[test]
fn memory_capped_process_is_oom_killed_and_reported() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("oom");
    let s = env.spec_with_memory(
        env.rootfs.path(),
        &cid,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
        32 << 20,
    );
    // The long poll is already waiting when the kill happens.
    let oom = env.watch_oom();
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 137, "dd should be SIGKILLed");
    let ev = env.rt.block_on(oom).unwrap().unwrap();
    assert_eq!(ev.container_id, cid);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// Opens a FIFO for writing without blocking: succeeds only once some
/// process has it open for reading.
fn fifo_has_reader(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()
}

#[test]
fn a_stuck_container_does_not_delay_another() {
    let Some(mut env) = Env::new() else { return };
    // Container A's /etc/passwd is a FIFO: setting up its process (HOME from
    // /etc/passwd) blocks in the kernel until someone writes to it.
    let stuck_root = Rootfs::new();
    let passwd = stuck_root.path().join("etc/passwd");
    std::fs::remove_file(&passwd).unwrap();
    let c_path = std::ffi::CString::new(passwd.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);

    let a = unique("stuck");
    let b = unique("free");
    let s = env.spec(stuck_root.path(), &a, &["true"]);
    let client = env.client.clone();
    let a2 = a.clone();
    let stuck = env.rt.spawn(async move {
        let mut req = CreateContainerRequest::new();
        req.container_id = a2.clone();
        req.exec_id = a2.clone();
        req.OCI = Some(s).into();
        client.create_container(ctx(), &req).await?;
        let mut st = StartContainerRequest::new();
        st.container_id = a2;
        client.start_container(ctx(), &st).await
    });
    // Wait (bounded) until A's setup is blocked reading the FIFO.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let writer = loop {
        if let Some(w) = fifo_has_reader(&passwd) {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container A never opened its passwd"
        );
        std::thread::sleep(Duration::from_millis(5));
    };

    // While A is stuck, B runs its whole life and the agent answers.
    env.run(&b, &["sh", "-c", "echo b-ran"]);
    assert_eq!(env.wait(&b, &b).unwrap(), 0);
    assert_eq!(env.read_all(&b, &b, false, 64), b"b-ran\n");
    env.remove(&b).unwrap();
    raw_check(&env.agent.socket);
    assert!(
        !stuck.is_finished(),
        "A should still be blocked on its FIFO"
    );

    // Release A: it completes normally.
    drop(writer);
    env.rt.block_on(stuck).unwrap().unwrap();
    assert_eq!(env.wait(&a, &a).unwrap(), 0);
    env.remove(&a).unwrap();
    env.assert_gone(&a);
    env.assert_gone(&b);
}

#[test]
fn terminal_session_with_resize() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("pty");
    let mut s = env.spec(
        env.rootfs.path(),
        &cid,
        &[
            "sh",
            "-c",
            "stty size; [ -t 0 ] && echo is-a-tty; read line; echo got:$line",
        ],
    );
    s.Process.as_mut().unwrap().Terminal = true;
    // As in a runtime's spec: /dev on tmpfs and a private devpts.
    for (dest, typ, src, opts) in [
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            vec!["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            vec![
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
    ] {
        let mut m = oci::Mount::new();
        m.destination = dest.into();
        m.type_ = typ.into();
        m.source = src.into();
        m.options = opts.into_iter().map(String::from).collect();
        s.Mounts.push(m);
    }
    env.create(&cid, s).unwrap();
    let mut rs = TtyWinResizeRequest::new();
    rs.container_id = cid.clone();
    rs.exec_id = cid.clone();
    rs.row = 41;
    rs.column = 123;
    env.rt
        .block_on(env.client.tty_win_resize(ctx(), &rs))
        .unwrap();
    env.start(&cid).unwrap();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("is-a-tty") {
        out.extend(env.read(&cid, &cid, false, 4096).unwrap());
    }
    assert!(
        String::from_utf8_lossy(&out).contains("41 123"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    env.write(&cid, &cid, b"hello\n").unwrap();
    while !String::from_utf8_lossy(&out).contains("got:hello") {
        out.extend(env.read(&cid, &cid, false, 4096).unwrap());
    }
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    // A terminal merges stderr into the terminal: there is no stderr stream.
    let e = env.read(&cid, &cid, true, 10).unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION, "{e:?}");
    // Resizing a process without a terminal is refused.
    let other = unique("nopty");
    env.run(&other, &["true"]);
    rs.container_id = other.clone();
    rs.exec_id = other.clone();
    let e = env
        .rt
        .block_on(env.client.tty_win_resize(ctx(), &rs))
        .unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION, "{e:?}");
    env.wait(&other, &other).unwrap();
    env.remove(&other).unwrap();
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

#[test]
fn termination_log_through_get_diagnostic_data() {
    let Some(mut env) = Env::new() else { return };
    let diag = |env: &Env, cid: &str, kind: &str| {
        let mut req = GetDiagnosticDataRequest::new();
        req.container_id = cid.into();
        req.log_type = kind.into();
        env.rt
            .block_on(env.client.get_diagnostic_data(ctx(), &req))
            .map(|r| r.data)
    };
    // Written inside a running container, no mount: read from its own tree.
    let a = unique("termlog");
    env.run(
        &a,
        &["sh", "-c", "echo bye > /dev/termination-log; ln -s /../../../etc/passwd /tmp/esc; echo ready; exec sleep 1000"],
    );
    assert_eq!(env.read(&a, &a, false, 6).unwrap(), b"ready\n");
    assert_eq!(diag(&env, &a, "termination_log").unwrap(), "bye\n");
    let e = diag(&env, &a, "kernel_log").unwrap_err();
    assert_eq!(code(&e), Code::INVALID_ARGUMENT, "{e:?}");
    env.signal(&a, "", 9).unwrap();
    env.wait(&a, &a).unwrap();
    let e = diag(&env, &a, "termination_log").unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND, "{e:?}");
    env.remove(&a).unwrap();

    // A symlink cannot lead the read out of the container.
    let b = unique("termesc");
    let mut s = env.spec(
        env.rootfs.path(),
        &b,
        &[
            "sh",
            "-c",
            "ln -s /../../../../etc/passwd /tmp/msg; echo ready; exec sleep 1000",
        ],
    );
    s.Annotations.insert(
        "io.kubernetes.container.terminationMessagePath".into(),
        "/tmp/msg".into(),
    );
    env.create(&b, s).unwrap();
    env.start(&b).unwrap();
    assert_eq!(env.read(&b, &b, false, 6).unwrap(), b"ready\n");
    let got = diag(&env, &b, "termination_log").unwrap();
    assert_eq!(
        got,
        std::fs::read_to_string(env.rootfs.path().join("etc/passwd")).unwrap()
    );
    env.remove(&b).unwrap();

    // Mounted from a guest file: still readable after the exit.
    let c = unique("termmount");
    let msg_dir = tempfile::tempdir().unwrap();
    let msg_file = msg_dir.path().join("msg-file");
    std::fs::write(&msg_file, "").unwrap();
    let mut s = env.spec(
        env.rootfs.path(),
        &c,
        &["sh", "-c", "echo the end > /dev/termination-log"],
    );
    let mut m = oci::Mount::new();
    m.destination = "/dev/termination-log".into();
    m.source = msg_file.display().to_string();
    m.type_ = "bind".into();
    m.options = vec!["rbind".into(), "rw".into()];
    s.Mounts.push(m);
    env.create(&c, s).unwrap();
    env.start(&c).unwrap();
    assert_eq!(env.wait(&c, &c).unwrap(), 0);
    assert_eq!(diag(&env, &c, "termination_log").unwrap(), "the end\n");
    env.remove(&c).unwrap();
    for id in [&a, &b, &c] {
        env.assert_gone(id);
    }
}
