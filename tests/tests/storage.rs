//! Storages as Kubernetes pods use them through Kata's shims, against the
//! real agent in its own mount namespace: emptyDirs shared by an init
//! container and the app container (with the Go runtime's
//! UpdateEphemeralMounts in between), ConfigMap volumes through
//! `watchable-bind`, and RemoveStaleVirtiofsShareMounts. Root only.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "s-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn mountinfo(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default()
}

/// The mountinfo line of the top-most mount at `mp` in the agent.
fn mount_line(pid: u32, mp: &str) -> Option<String> {
    mountinfo(pid)
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some(mp))
        .map(str::to_owned)
}

fn mount_points(pid: u32) -> Vec<String> {
    mountinfo(pid)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect()
}

struct Pod {
    agent: Agent,
    client: AgentServiceClient,
    rt: tokio::runtime::Runtime,
    rootfs: Rootfs,
    cgroups: CgroupParent,
}

impl Pod {
    fn new() -> Option<Pod> {
        Pod::with_storages(vec![])
    }

    fn with_storages(storages: Vec<Storage>) -> Option<Pod> {
        if !can_run_containers() {
            return None;
        }
        let cgroups = CgroupParent::new();
        let agent = Agent::start_isolated();
        let (rt, client) = agent_client(&agent);
        let pod = Pod {
            agent,
            client,
            rt,
            rootfs: Rootfs::new(),
            cgroups,
        };
        let mut sb = CreateSandboxRequest::new();
        sb.sandbox_id = unique("pod");
        sb.storages = storages;
        pod.rt
            .block_on(pod.client.create_sandbox(ctx(), &sb))
            .unwrap();
        Some(pod)
    }

    /// A container running `script`, with bind mounts `(guest path,
    /// container path)` of the given storages' mount points.
    fn create(
        &self,
        cid: &str,
        script: &str,
        binds: &[(&str, &str)],
        storages: Vec<Storage>,
    ) -> ttrpc::Result<()> {
        let mut s = busybox_spec(
            &self.rootfs.path().display().to_string(),
            cid,
            &["sh", "-c", script],
            &self.cgroups.name,
        );
        for (src, dst) in binds {
            let ro = if dst.starts_with("/etc") { "ro" } else { "rw" };
            s.Mounts.push(oci_mount(dst, "bind", src, &["rbind", ro]));
        }
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.into();
        req.exec_id = cid.into();
        req.OCI = Some(s).into();
        req.storages = storages;
        self.rt
            .block_on(self.client.create_container(ctx(), &req))?;
        Ok(())
    }

    fn start(&self, cid: &str) {
        let mut st = StartContainerRequest::new();
        st.container_id = cid.into();
        self.rt
            .block_on(self.client.start_container(ctx(), &st))
            .unwrap();
    }

    /// Reads the container's stdout until `want` shows up (or 20 s pass).
    fn read_until(&self, cid: &str, want: &str) -> String {
        let mut rd = ReadStreamRequest::new();
        rd.container_id = cid.into();
        rd.exec_id = cid.into();
        rd.len = 4096;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = String::new();
        while !out.contains(want) {
            assert!(Instant::now() < deadline, "no {want:?} in {out:?}");
            let r = self.rt.block_on(self.client.read_stdout(ctx(), &rd));
            match r {
                Ok(r) => out.push_str(&String::from_utf8_lossy(&r.data)),
                Err(e) => panic!("read {cid}: {e:?}; got {out:?}"),
            }
        }
        out
    }

    /// Waits for the container's init and returns its status.
    fn wait(&self, cid: &str) -> i32 {
        let mut w = WaitProcessRequest::new();
        w.container_id = cid.into();
        w.exec_id = cid.into();
        self.rt
            .block_on(self.client.wait_process(ctx(), &w))
            .unwrap()
            .status
    }

    fn remove(&self, cid: &str) {
        let mut sig = SignalProcessRequest::new();
        sig.container_id = cid.into();
        sig.signal = 9;
        let _ = self.rt.block_on(self.client.signal_process(ctx(), &sig));
        let mut rm = RemoveContainerRequest::new();
        rm.container_id = cid.into();
        rm.timeout = 10;
        self.rt
            .block_on(self.client.remove_container(ctx(), &rm))
            .unwrap();
    }

    fn update_ephemeral(&self, storages: Vec<Storage>) -> ttrpc::Result<()> {
        let mut up = UpdateEphemeralMountsRequest::new();
        up.storages = storages;
        self.rt
            .block_on(self.client.update_ephemeral_mounts(ctx(), &up))?;
        Ok(())
    }

    fn destroy(&self) {
        self.rt
            .block_on(
                self.client
                    .destroy_sandbox(ctx(), &DestroySandboxRequest::new()),
            )
            .unwrap();
    }
}

/// The Go runtime's sequence for a pod with an init container that fills a
/// memory emptyDir and a disk emptyDir, then the app container that reads
/// them: the init container's removal leaves both storages, the
/// UpdateEphemeralMounts after each create (empty after the pause
/// container, the emptyDir twice once two containers use it) resizes in
/// place, and the next container with the same storage is not refused.
#[test]
fn init_container_output_survives_for_the_app_container() {
    let Some(pod) = Pod::new() else { return };
    let pid = pod.agent.pid();
    // The agent exits after DestroySandbox: its namespace is seen through a
    // process left in it.
    let witness = MountNsWitness::of(pid);
    let before = witness.mounts();
    let work = "/run/kata-containers/sandbox/ephemeral/work";
    let cache = "/run/kata-containers/sandbox/local/cache";
    let storages = || {
        vec![
            storage("ephemeral", "tmpfs", "tmpfs", &["fsgid=2000"], work),
            storage("local", "local", "local", &["mode=0777"], cache),
        ]
    };
    let binds = [(work, "/work"), (cache, "/cache")];
    let resize = storage(
        "ephemeral",
        "tmpfs",
        "tmpfs",
        &["remount", "size=64M"],
        work,
    );

    // The pause container, then an empty UpdateEphemeralMounts.
    let pause = unique("pause");
    pod.create(&pause, "echo paused; exec sleep 1000", &[], vec![])
        .unwrap();
    pod.update_ephemeral(vec![]).unwrap();
    pod.start(&pause);

    let init = unique("init");
    pod.create(
        &init,
        "echo from-init > /work/out && echo from-init > /cache/out && echo done",
        &binds,
        storages(),
    )
    .unwrap();
    pod.update_ephemeral(vec![resize.clone()]).unwrap();
    pod.start(&init);
    pod.read_until(&init, "done");
    assert_eq!(pod.wait(&init), 0);
    pod.remove(&init);
    // Removed, and its volumes are still there.
    assert!(mount_line(pid, work).is_some(), "emptyDir unmounted");
    assert_eq!(
        std::fs::read_to_string(pod.agent.path(work).join("out")).unwrap(),
        "from-init\n"
    );
    assert_eq!(
        std::fs::read_to_string(pod.agent.path(cache).join("out")).unwrap(),
        "from-init\n"
    );

    let app = unique("app");
    pod.create(
        &app,
        "cat /work/out /cache/out; echo ok; exec sleep 1000",
        &binds,
        storages(),
    )
    .unwrap();
    pod.update_ephemeral(vec![resize.clone()]).unwrap();
    pod.start(&app);
    let out = pod.read_until(&app, "ok");
    assert_eq!(out, "from-init\nfrom-init\nok\n");
    let line = mount_line(pid, work).unwrap();
    assert!(line.contains("size=65536k"), "{line}");

    // A sidecar with the same volume after the resize: not a conflict; the
    // Go runtime then sends the entry once per user.
    let side = unique("side");
    pod.create(&side, "cat /work/out; exec sleep 1000", &binds, storages())
        .unwrap();
    pod.update_ephemeral(vec![resize.clone(), resize]).unwrap();
    pod.start(&side);
    pod.read_until(&side, "from-init");

    for c in [&side, &app, &pause] {
        pod.remove(c);
    }
    assert!(mount_line(pid, work).is_some());
    pod.destroy();
    assert_eq!(witness.mounts(), before, "mounts left after DestroySandbox");
    assert!(!witness.path(work).exists());
    assert!(!witness.path(cache).exists());
}

/// A container whose create fails after its new emptyDir was set up leaves
/// nothing behind.
#[test]
fn refused_create_undoes_its_new_emptydir() {
    let Some(pod) = Pod::new() else { return };
    let pid = pod.agent.pid();
    let work = "/run/kata-containers/sandbox/ephemeral/refused";
    let cid = unique("refused");
    let err = pod
        .create(
            &cid,
            "true",
            &[],
            vec![
                storage("ephemeral", "tmpfs", "tmpfs", &[], work),
                storage("no-such-driver", "x", "", &[], "/run/kata-containers/x"),
            ],
        )
        .unwrap_err();
    assert!(format!("{err:?}").contains("no-such-driver"), "{err:?}");
    assert!(mount_line(pid, work).is_none(), "emptyDir left mounted");
    assert!(!pod.agent.path(work).exists());
    pod.destroy();
}

/// Threads of the agent named `storage-watch` (the poll thread).
fn watch_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "storage-watch")
                })
                .count()
        })
        .unwrap_or(0)
}

fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The Go runtime's ConfigMap volume: a `watchable-bind` storage whose
/// source is in the shared directory and whose mount point the container
/// bind-mounts. The files are there at start, the kubelet's atomic update
/// reaches the container (the 500 ms poll: well within 2 s; the bound here is loose for loaded machines), and the watch ends with the container.
#[test]
fn configmap_updates_reach_the_container() {
    let shared = tempfile::tempdir().unwrap();
    let shared_mp = "/run/kata-containers/shared/containers/";
    let Some(pod) = Pod::with_storages(vec![storage(
        "bind",
        &shared.path().display().to_string(),
        "bind",
        &["rbind"],
        shared_mp,
    )]) else {
        return;
    };
    let pid = pod.agent.pid();
    let cid = unique("cm");
    let name = format!("{cid}-5f3e9a-config");
    let dir = shared.path().join(&name);
    kubelet_configmap(
        &dir,
        "..2026_05_01_10_00_00.1",
        &[("greeting", "hello"), ("color", "red")],
    );
    let guest_src = format!("{shared_mp}{name}");
    let guest_mp = format!("{shared_mp}watchable/{name}");
    let cm = storage(
        "watchable-bind",
        &guest_src,
        "bind",
        &["rbind", "ro"],
        &guest_mp,
    );
    pod.create(
        &cid,
        "cat /etc/config/greeting; echo; echo ready; exec sleep 1000",
        &[(&guest_mp, "/etc/config")],
        vec![cm],
    )
    .unwrap();
    pod.start(&cid);
    assert_eq!(pod.read_until(&cid, "ready"), "hello\nready\n");
    assert_eq!(watch_threads(pid), 1, "one poll thread");

    // The kubelet's update: a new timestamped dir, ..data swapped, the old
    // dir removed.
    kubelet_configmap(
        &dir,
        "..2026_05_01_10_05_00.2",
        &[("greeting", "bonjour"), ("color", "red")],
    );
    std::fs::remove_dir_all(dir.join("..2026_05_01_10_00_00.1")).unwrap();
    let target = pod.agent.path(&guest_mp).join("greeting");
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(&target)
            .is_ok_and(|t| t == "bonjour")),
        "update not visible within 20 s"
    );
    eprintln!("update visible after {:?}", started.elapsed());
    // In the container, through its bind mount.
    let mut ex = ExecProcessRequest::new();
    ex.container_id = cid.clone();
    ex.exec_id = "cat".into();
    let mut p = protocols::oci::Process::new();
    p.Args = vec![
        "sh".into(),
        "-c".into(),
        "cat /etc/config/greeting /etc/config/color; echo; ls -a /etc/config | tr '\\n' ' '".into(),
    ];
    p.Env = vec!["PATH=/bin".into()];
    p.Cwd = "/".into();
    ex.process = Some(p).into();
    pod.rt
        .block_on(pod.client.exec_process(ctx(), &ex))
        .unwrap();
    let mut w = WaitProcessRequest::new();
    w.container_id = cid.clone();
    w.exec_id = "cat".into();
    let status = pod.rt.block_on(pod.client.wait_process(ctx(), &w)).unwrap();
    assert_eq!(status.status, 0);
    let mut rd = ReadStreamRequest::new();
    rd.container_id = cid.clone();
    rd.exec_id = "cat".into();
    rd.len = 4096;
    let out = pod
        .rt
        .block_on(pod.client.read_stdout(ctx(), &rd))
        .unwrap()
        .data;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "bonjourred\n. .. ..2026_05_01_10_05_00.2 ..data color greeting "
    );

    pod.remove(&cid);
    assert!(!pod.agent.path(&guest_mp).exists());
    assert!(
        eventually(Duration::from_secs(20), || watch_threads(pid) == 0),
        "watching goes on after the last user"
    );
    pod.destroy();
    assert!(!shared.path().join("watchable").exists());
    assert!(dir.join("greeting").exists(), "source untouched");
}

/// RemoveStaleVirtiofsShareMounts (the Go runtime sends it when it deletes
/// a container that is not stopped) answers OK and, as upstream, only
/// stats the mounts below the shared directory: nothing is unmounted.
#[test]
fn remove_stale_virtiofs_share_mounts_stats_and_keeps_mounts() {
    let shared = tempfile::tempdir().unwrap();
    let shared_mp = "/run/kata-containers/shared/containers/";
    let Some(pod) = Pod::with_storages(vec![
        storage(
            "bind",
            &shared.path().display().to_string(),
            "bind",
            &["rbind"],
            shared_mp,
        ),
        storage(
            "ephemeral",
            "tmpfs",
            "tmpfs",
            &["size=1m"],
            &format!("{shared_mp}sub/mount"),
        ),
    ]) else {
        return;
    };
    let pid = pod.agent.pid();
    let before = mount_points(pid);
    assert!(before
        .iter()
        .any(|m| m.ends_with("shared/containers/sub/mount")));
    pod.rt
        .block_on(pod.client.remove_stale_virtiofs_share_mounts(
            ctx(),
            &RemoveStaleVirtiofsShareMountsRequest::new(),
        ))
        .unwrap();
    assert_eq!(mount_points(pid), before, "a mount changed");
    pod.destroy();
}
