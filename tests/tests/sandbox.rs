//! The call sequence Kata's shim sends, against an agent in its own mount
//! and UTS namespaces: CreateSandbox with storages, a container whose rootfs
//! is under the shared directory, exec, signal, stats, removal, and
//! DestroySandbox; then nothing may be left.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use integration_tests::*;
use protocols::agent::*;
use protocols::oci;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

fn agent_mounts(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect()
}

#[test]
fn shim_sequence_leaves_nothing_behind() {
    if !can_run_containers() {
        return;
    }
    let cgroups = CgroupParent::new();
    let mut agent = Agent::start_isolated();
    let pid = agent.pid();
    let before = agent_mounts(pid);
    // The agent exits after DestroySandbox: its namespace is looked at
    // through a witness, and its children are known beforehand.
    let witness = MountNsWitness::of(pid);
    // The host side of the shared directory: what virtio-fs would share.
    let shared = tempfile::tempdir().unwrap();
    let cid = format!("shim-{}", std::process::id());
    let rootfs = Rootfs::new();
    let guest_rootfs = shared.path().join(&cid).join("rootfs");
    std::fs::create_dir_all(guest_rootfs.parent().unwrap()).unwrap();
    std::fs::rename(rootfs.path(), &guest_rootfs).unwrap();

    let (rt, c) = agent_client(&agent);
    let children = rt.block_on(async {
        let shared_mp = "/run/kata-containers/shared/containers/";
        let mut sb = CreateSandboxRequest::new();
        sb.sandbox_id = "sb1".into();
        sb.sandbox_pidns = true;
        sb.hostname = "pod-host".into();
        sb.dns = vec!["nameserver 10.0.0.53".into(), "search svc.local".into()];
        sb.storages = vec![
            // On the host, a bind mount stands in for the virtio-fs share.
            storage(
                "bind",
                &shared.path().display().to_string(),
                "bind",
                &["rbind"],
                shared_mp,
            ),
            storage(
                "ephemeral",
                "shm",
                "tmpfs",
                &["size=1048576"],
                "/run/kata-containers/sandbox/shm",
            ),
        ];
        c.create_sandbox(ctx(), &sb).await.unwrap();
        // A second CreateSandbox is refused.
        assert!(c.create_sandbox(ctx(), &sb).await.is_err());

        let s = busybox_spec(
            &format!("{shared_mp}{cid}/rootfs"),
            &cid,
            &[
                "sh",
                "-c",
                "hostname; cat /etc/hostname 2>/dev/null; echo up; exec sleep 1000",
            ],
            &cgroups.name,
        );
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.clone();
        req.exec_id = cid.clone();
        req.OCI = Some(s.clone()).into();
        req.sandbox_pidns = true;
        // A per-container volume.
        req.storages = vec![storage(
            "local",
            "local",
            "local",
            &["mode=0777"],
            &format!("/run/kata-containers/sandbox/local/{cid}-vol"),
        )];
        c.create_container(ctx(), &req).await.unwrap();
        let mut st = StartContainerRequest::new();
        st.container_id = cid.clone();
        c.start_container(ctx(), &st).await.unwrap();

        let mut rd = ReadStreamRequest::new();
        rd.container_id = cid.clone();
        rd.exec_id = cid.clone();
        rd.len = 1024;
        let mut out = Vec::new();
        while !out.ends_with(b"up\n") {
            out.extend(c.read_stdout(ctx(), &rd).await.unwrap().data);
        }
        // The container shares the sandbox's UTS namespace: its hostname.
        assert!(
            out.starts_with(b"pod-host\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );

        let mut ex = ExecProcessRequest::new();
        ex.container_id = cid.clone();
        ex.exec_id = "probe".into();
        let mut p = oci::Process::new();
        p.Args = vec!["echo".into(), "exec-ok".into()];
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/".into();
        ex.process = Some(p).into();
        c.exec_process(ctx(), &ex).await.unwrap();
        let mut w = WaitProcessRequest::new();
        w.container_id = cid.clone();
        w.exec_id = "probe".into();
        assert_eq!(c.wait_process(ctx(), &w).await.unwrap().status, 0);

        // A second container of the pod shares the pid, IPC and UTS
        // namespaces: it sees the first one's process and the holder.
        let cid2 = format!("{cid}-b");
        std::fs::create_dir_all(shared.path().join(&cid2)).unwrap();
        std::os::unix::fs::symlink(
            shared.path().join(&cid).join("rootfs"),
            shared.path().join(&cid2).join("rootfs"),
        )
        .unwrap();
        let mut s2 = s.clone();
        s2.Root.as_mut().unwrap().Path = format!("{shared_mp}{cid2}/rootfs");
        s2.Process.as_mut().unwrap().Args = vec![
            "sh".into(),
            "-c".into(),
            "readlink /proc/self/ns/ipc; hostname; cat /proc/[0-9]*/cmdline | tr '\\0' ' '".into(),
        ];
        s2.Linux.as_mut().unwrap().CgroupsPath = format!("/{}/{cid2}", cgroups.name);
        let mut req2 = CreateContainerRequest::new();
        req2.container_id = cid2.clone();
        req2.exec_id = cid2.clone();
        req2.OCI = Some(s2).into();
        req2.sandbox_pidns = true;
        c.create_container(ctx(), &req2).await.unwrap();
        st.container_id = cid2.clone();
        c.start_container(ctx(), &st).await.unwrap();
        let mut w2 = WaitProcessRequest::new();
        w2.container_id = cid2.clone();
        w2.exec_id = cid2.clone();
        assert_eq!(c.wait_process(ctx(), &w2).await.unwrap().status, 0);
        let mut rd2 = rd.clone();
        rd2.container_id = cid2.clone();
        rd2.exec_id = cid2.clone();
        let text = String::from_utf8(c.read_stdout(ctx(), &rd2).await.unwrap().data).unwrap();
        assert!(text.contains("sleep 1000"), "{text}");
        assert!(text.contains("sandbox-ns-holder"), "{text}");
        assert!(text.contains("\npod-host\n"), "{text}");
        let ipc2 = text.lines().next().unwrap().to_string();
        ex.exec_id = "ipc".into();
        ex.process.as_mut().unwrap().Args = vec!["readlink".into(), "/proc/self/ns/ipc".into()];
        c.exec_process(ctx(), &ex).await.unwrap();
        w.exec_id = "ipc".into();
        assert_eq!(c.wait_process(ctx(), &w).await.unwrap().status, 0);
        rd.exec_id = "ipc".into();
        let ipc1 = String::from_utf8(c.read_stdout(ctx(), &rd).await.unwrap().data).unwrap();
        assert_eq!(ipc1.trim(), ipc2, "containers of a pod share IPC");
        let mut rm2 = RemoveContainerRequest::new();
        rm2.container_id = cid2.clone();
        c.remove_container(ctx(), &rm2).await.unwrap();

        let mut stats = StatsContainerRequest::new();
        stats.container_id = cid.clone();
        let s = c.stats_container(ctx(), &stats).await.unwrap();
        assert!(s.cgroup_stats.pids_stats.current >= 1);

        let mut sig = SignalProcessRequest::new();
        sig.container_id = cid.clone();
        sig.signal = 9;
        c.signal_process(ctx(), &sig).await.unwrap();
        w.exec_id = cid.clone();
        assert_eq!(c.wait_process(ctx(), &w).await.unwrap().status, 137);

        let mut rm = RemoveContainerRequest::new();
        rm.container_id = cid.clone();
        rm.timeout = 10;
        c.remove_container(ctx(), &rm).await.unwrap();
        let children = children_of(pid);
        assert!(!children.is_empty(), "no namespace holder");
        c.destroy_sandbox(ctx(), &DestroySandboxRequest::new())
            .await
            .unwrap();
        children
    });
    let status = agent.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    let after = witness.mounts();
    assert_eq!(after, before, "mounts left in the agent's namespace");
    assert!(!witness.path("/run/kata-containers").join(&cid).exists());
    assert!(!Path::new("/sys/fs/cgroup/memory")
        .join(&cgroups.name)
        .join(&cid)
        .exists());
    for child in children {
        assert!(process_ended(child), "child {child} outlived the agent");
    }
    assert!(
        !witness.path("/run/kata-containers/shared").exists(),
        "shared dir left behind"
    );
    assert!(
        !witness
            .path("/run/kata-containers/sandbox/resolv.conf")
            .exists(),
        "dns file left behind"
    );
    // The host's hostname is untouched: the agent has its own UTS namespace.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "pod-host");
}

#[test]
fn update_ephemeral_mounts_resizes_the_tmpfs() {
    if !can_run_containers() {
        return;
    }
    let mut agent = Agent::start_isolated();
    let witness = MountNsWitness::of(agent.pid());
    let mp = format!("/run/kata-containers/sandbox/eph-{}", std::process::id());
    let (rt, c) = agent_client(&agent);
    let size_of = |mp: &str| -> Option<String> {
        witness
            .mountinfo()
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(mp))
            .and_then(|l| {
                l.split(',')
                    .find_map(|o| o.strip_prefix("size="))
                    .map(String::from)
            })
    };
    rt.block_on(async {
        let mut sb = CreateSandboxRequest::new();
        sb.sandbox_id = "eph".into();
        sb.storages = vec![storage("ephemeral", "tmpfs", "tmpfs", &["size=1m"], &mp)];
        c.create_sandbox(ctx(), &sb).await.unwrap();
        assert_eq!(size_of(&mp).as_deref(), Some("1024k"));

        let mut up = UpdateEphemeralMountsRequest::new();
        up.storages = vec![storage("ephemeral", "tmpfs", "tmpfs", &["size=2m"], &mp)];
        c.update_ephemeral_mounts(ctx(), &up).await.unwrap();
        assert_eq!(size_of(&mp).as_deref(), Some("2048k"));

        // Only ephemeral storages this agent set up.
        up.storages = vec![storage(
            "ephemeral",
            "tmpfs",
            "tmpfs",
            &["size=2m"],
            "/run/kata-containers/not-ours",
        )];
        let e = c.update_ephemeral_mounts(ctx(), &up).await.unwrap_err();
        assert!(format!("{e:?}").contains("not-ours"), "{e:?}");
        up.storages = vec![storage("local", "x", "", &[], &mp)];
        assert!(c.update_ephemeral_mounts(ctx(), &up).await.is_err());

        c.destroy_sandbox(ctx(), &DestroySandboxRequest::new())
            .await
            .unwrap();
    });
    assert!(agent.wait_exit(Duration::from_secs(20)).is_some());
    assert_eq!(size_of(&mp), None, "tmpfs left mounted");
}

/// The hostname of the agent's UTS namespace.
fn agent_hostname(pid: u32) -> String {
    let out = std::process::Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-u",
            "cat",
            "/proc/sys/kernel/hostname",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_refused_create_sandbox_undoes_every_step() {
    if !can_run_containers() {
        return;
    }
    let agent = Agent::start_isolated();
    let pid = agent.pid();
    let hostname = agent_hostname(pid);
    let before = agent_mounts(pid);
    let ok_mp = format!("/run/kata-containers/sandbox/rb-{}", std::process::id());
    let (rt, c) = agent_client(&agent);
    rt.block_on(async {
        let mut sb = CreateSandboxRequest::new();
        sb.sandbox_id = "rollback".into();
        sb.hostname = "rollback-host".into();
        sb.dns = vec!["nameserver 10.0.0.53".into()];
        // The first storage is set up, the second is refused.
        sb.storages = vec![
            storage("ephemeral", "tmpfs", "tmpfs", &["size=1m"], &ok_mp),
            storage(
                "no-such-driver",
                "x",
                "",
                &[],
                "/run/kata-containers/sandbox/rb-bad",
            ),
        ];
        let e = c.create_sandbox(ctx(), &sb).await.unwrap_err();
        let msg = format!("{e:?}");
        assert!(msg.contains("sandbox \\\"rollback\\\""), "{msg}");
        assert!(msg.contains("no-such-driver"), "{msg}");

        // Nothing of it stays: hostname, DNS mount and file, the storage.
        assert_eq!(agent_hostname(pid), hostname);
        assert_eq!(agent_mounts(pid), before, "mounts left behind");
        assert!(!agent
            .path("/run/kata-containers/sandbox/resolv.conf")
            .exists());
        assert!(!agent.path(&ok_mp).exists(), "storage left behind");
        assert!(children_of(pid).is_empty(), "namespace holder left behind");

        // The sandbox was not created: the same request without the bad
        // storage succeeds.
        sb.storages.pop();
        c.create_sandbox(ctx(), &sb).await.unwrap();
        assert_eq!(agent_hostname(pid), "rollback-host");
        assert!(agent_mounts(pid).contains(&ok_mp));
        c.destroy_sandbox(ctx(), &DestroySandboxRequest::new())
            .await
            .unwrap();
    });
}

#[test]
fn destroy_sandbox_is_answered_then_an_agent_that_is_not_pid1_exits_0() {
    if !can_run_containers() {
        return;
    }
    let cgroups = CgroupParent::new();
    let mut agent = Agent::start_isolated();
    let pid = agent.pid();
    let witness = MountNsWitness::of(pid);
    let before = witness.mounts();
    let rootfs = Rootfs::new();
    let cid = format!("last-{}", std::process::id());
    let (rt, c) = agent_client(&agent);
    let children = rt.block_on(async {
        let mut sb = CreateSandboxRequest::new();
        sb.sandbox_id = "last".into();
        sb.dns = vec!["nameserver 10.0.0.53".into()];
        sb.storages = vec![storage(
            "ephemeral",
            "tmpfs",
            "tmpfs",
            &["size=1m"],
            "/run/kata-containers/sandbox/last-eph",
        )];
        c.create_sandbox(ctx(), &sb).await.unwrap();
        let spec = busybox_spec(
            &rootfs.path().display().to_string(),
            &cid,
            &["sleep", "1000"],
            &cgroups.name,
        );
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.clone();
        req.OCI = Some(spec).into();
        c.create_container(ctx(), &req).await.unwrap();
        let mut st = StartContainerRequest::new();
        st.container_id = cid.clone();
        c.start_container(ctx(), &st).await.unwrap();
        let children = all_children_of(pid);
        // The holder, the container's init, the launcher.
        assert!(children.len() >= 2, "{children:?}");
        // The answer reaches the client before the agent goes.
        c.destroy_sandbox(ctx(), &DestroySandboxRequest::new())
            .await
            .unwrap();
        children
    });
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{status:?}\n{}",
        agent.log_text()
    );
    assert!(!agent.socket.exists(), "socket file left behind");
    // Everything was torn down: processes, mounts, files, cgroups.
    for child in children {
        assert!(process_ended(child), "child {child} outlived the agent");
    }
    assert_eq!(witness.mounts(), before, "mounts left behind");
    assert!(!witness.path("/run/kata-containers").join(&cid).exists());
    assert!(!witness
        .path("/run/kata-containers/sandbox/resolv.conf")
        .exists());
    for dir in cgroups.dirs() {
        assert!(!dir.join(&cid).exists(), "{} left behind", dir.display());
    }
    assert!(agent
        .log_text()
        .contains("sandbox destroyed, shutting down"));
}

/// A module the host has loaded or built in: asking for it loads nothing.
fn a_present_module() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/module")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .collect();
    names.sort();
    names.into_iter().next().expect("a module in /sys/module")
}

fn kernel_module(name: &str, params: &[&str]) -> KernelModule {
    let mut m = KernelModule::new();
    m.name = name.into();
    m.parameters = params.iter().map(|p| p.to_string()).collect();
    m
}

#[test]
fn kernel_modules_are_loaded_and_an_unknown_one_is_refused_naming_it() {
    if !can_run_containers() {
        return;
    }
    let agent = Agent::start_isolated();
    let pid = agent.pid();
    let hostname = agent_hostname(pid);
    let before = agent_mounts(pid);
    let modules_before = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let present = a_present_module();
    let (rt, c) = agent_client(&agent);
    rt.block_on(async {
        let mut sb = CreateSandboxRequest::new();
        sb.sandbox_id = "modules".into();
        sb.hostname = "modules-host".into();
        sb.dns = vec!["nameserver 10.0.0.53".into()];
        sb.kernel_modules = vec![
            kernel_module(&present, &[]),
            kernel_module("no-such-module-guest-agent", &["debug=1"]),
        ];
        let e = c.create_sandbox(ctx(), &sb).await.unwrap_err();
        let ttrpc::Error::RpcStatus(st) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(st.code(), ttrpc::Code::NOT_FOUND, "{e:?}");
        assert!(
            st.message()
                .starts_with("sandbox \"modules\": kernel module \"no-such-module-guest-agent\": not found in /lib/modules/"),
            "{}",
            st.message()
        );
        // Nothing half done.
        assert_eq!(agent_hostname(pid), hostname);
        assert_eq!(agent_mounts(pid), before);
        assert!(children_of(pid).is_empty());
        // A name that is no module name is refused as such.
        sb.kernel_modules = vec![kernel_module("../../tmp/evil", &[])];
        let e = c.create_sandbox(ctx(), &sb).await.unwrap_err();
        assert!(format!("{e:?}").contains("INVALID_ARGUMENT"), "{e:?}");

        // A module already there is accepted and nothing is loaded.
        sb.kernel_modules = vec![kernel_module(&present, &[])];
        c.create_sandbox(ctx(), &sb).await.unwrap();
        assert_eq!(agent_hostname(pid), "modules-host");
        c.destroy_sandbox(ctx(), &DestroySandboxRequest::new())
            .await
            .unwrap();
    });
    // What the agent was asked to load is as it was: other tests may load
    // modules of their own meanwhile (iptables, links), so only these.
    let modules_after = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let loaded = |t: &str, name: &str| t.lines().any(|l| l.split_whitespace().next() == Some(name));
    for name in [
        "no-such-module-guest-agent",
        "no_such_module_guest_agent",
        present.as_str(),
    ] {
        assert_eq!(
            loaded(&modules_after, name),
            loaded(&modules_before, name),
            "{name}"
        );
    }
}

#[test]
fn guest_hooks_run_for_every_container() {
    if !can_run_containers() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let cgroups = CgroupParent::new();
    let hooks = tempfile::tempdir().unwrap();
    let out = hooks.path().join("ran");
    for kind in ["prestart", "poststart", "poststop"] {
        let dir = hooks.path().join(kind);
        std::fs::create_dir(&dir).unwrap();
        let script = dir.join("record");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat >/dev/null\necho \"${{0##*/}} $1\" >>{}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Not executable: no hook.
        std::fs::write(dir.join("README"), "not a hook").unwrap();
    }
    let mut agent = Agent::start_isolated();
    let rootfs = Rootfs::new();
    let cid = format!("hooked-{}", std::process::id());
    let (rt, c) = agent_client(&agent);
    rt.block_on(async {
        let mut sb = CreateSandboxRequest::new();
        sb.sandbox_id = "hooks".into();
        sb.guest_hook_path = hooks.path().display().to_string();
        c.create_sandbox(ctx(), &sb).await.unwrap();
        let spec = busybox_spec(
            &rootfs.path().display().to_string(),
            &cid,
            &["sleep", "1000"],
            &cgroups.name,
        );
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.clone();
        req.OCI = Some(spec).into();
        c.create_container(ctx(), &req).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "record prestart\n",
            "prestart runs at create"
        );
        let mut st = StartContainerRequest::new();
        st.container_id = cid.clone();
        c.start_container(ctx(), &st).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "record prestart\nrecord poststart\n"
        );
        let mut rm = RemoveContainerRequest::new();
        rm.container_id = cid.clone();
        rm.timeout = 10;
        c.remove_container(ctx(), &rm).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "record prestart\nrecord poststart\nrecord poststop\n"
        );
        c.destroy_sandbox(ctx(), &DestroySandboxRequest::new())
            .await
            .unwrap();
    });
    assert!(agent.wait_exit(Duration::from_secs(20)).is_some());
}

#[test]
fn share_process_namespace_pods_use_the_pause_containers_pid_namespace() {
    if !can_run_containers() {
        return;
    }
    let cgroups = CgroupParent::new();
    let agent = Agent::start_isolated();
    let rootfs = Rootfs::new();
    let root = rootfs.path().display().to_string();
    let tag = std::process::id();
    let (pause, app1, app2) = (
        format!("pause-{tag}"),
        format!("app1-{tag}"),
        format!("app2-{tag}"),
    );
    let (rt, c) = agent_client(&agent);
    rt.block_on(async {
        // As the Go runtime sends a shareProcessNamespace pod: no pid
        // namespace of the sandbox, sandbox_pidns on the app containers.
        let mut sb = CreateSandboxRequest::new();
        sb.sandbox_id = "spn".into();
        sb.sandbox_pidns = false;
        c.create_sandbox(ctx(), &sb).await.unwrap();
        let run = |cid: String, args: Vec<String>, pidns: bool| {
            let c = c.clone();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let spec = busybox_spec(&root, &cid, &args, &cgroups.name);
            async move {
                let mut req = CreateContainerRequest::new();
                req.container_id = cid.clone();
                req.OCI = Some(spec).into();
                req.sandbox_pidns = pidns;
                c.create_container(ctx(), &req).await.unwrap();
                let mut st = StartContainerRequest::new();
                st.container_id = cid;
                c.start_container(ctx(), &st).await.unwrap();
            }
        };
        let read_until = |cid: String, exec_id: String, end: &'static str| {
            let c = c.clone();
            async move {
                let mut rd = ReadStreamRequest::new();
                rd.container_id = cid;
                rd.exec_id = exec_id;
                rd.len = 4096;
                let mut out = String::new();
                while !out.ends_with(end) {
                    let data = c.read_stdout(ctx(), &rd).await.unwrap().data;
                    out.push_str(&String::from_utf8_lossy(&data));
                }
                out
            }
        };
        const LIST: &str = "echo \"1: $(tr '\\0' ' ' </proc/1/cmdline)\"; \
            for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; done; echo end";
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        run(pause.clone(), args(&["sleep", "1001"]), false).await;
        run(app1.clone(), args(&["sleep", "1002"]), true).await;
        let list2 = format!("{LIST}; exec sleep 1003");
        run(app2.clone(), args(&["sh", "-c", &list2]), true).await;
        let seen2 = read_until(app2.clone(), app2.clone(), "end\n").await;
        // The pause container's init is PID 1 of the shared namespace.
        assert!(seen2.starts_with("1: sleep 1001 \n"), "{seen2}");
        assert!(seen2.contains("sleep 1002"), "app2 sees app1:\n{seen2}");

        // And app1 sees app2, from an exec in it.
        let mut ex = ExecProcessRequest::new();
        ex.container_id = app1.clone();
        ex.exec_id = "list".into();
        let mut p = oci::Process::new();
        p.Args = vec!["sh".into(), "-c".into(), LIST.into()];
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/".into();
        ex.process = Some(p).into();
        c.exec_process(ctx(), &ex).await.unwrap();
        let seen1 = read_until(app1.clone(), "list".into(), "end\n").await;
        assert!(seen1.starts_with("1: sleep 1001 \n"), "{seen1}");
        assert!(seen1.contains("sleep 1003"), "app1 sees app2:\n{seen1}");

        for cid in [&app2, &app1, &pause] {
            let mut rm = RemoveContainerRequest::new();
            rm.container_id = cid.clone();
            rm.timeout = 10;
            c.remove_container(ctx(), &rm).await.unwrap();
        }
        c.destroy_sandbox(ctx(), &DestroySandboxRequest::new())
            .await
            .unwrap();
    });
}
