//! Shim replays (testing level 4) on the host: the messages Kata's Go
//! runtime and runtime-rs send for an ordinary Kubernetes pod, one by one
//! and in their order and shapes, against the real agent in its own mount,
//! UTS and network namespaces. The pod: a pause container, an init
//! container that fills a memory emptyDir, an app container that reads it
//! and mounts a ConfigMap, exec probes, a `kubectl exec`, the kubelet's
//! stop. Afterwards nothing the agent set up may be left. Root only.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::oci;

/// The guest side of the virtio-fs share (tag `kataShared`).
const SHARED: &str = "/run/kata-containers/shared/containers/";
/// Where both shims put memory emptyDirs (`ephemeral` storages).
const EPHEMERAL: &str = "/run/kata-containers/sandbox/ephemeral/";
/// The pod's /dev/shm.
const SHM: &str = "/run/kata-containers/sandbox/shm";
/// The shm storage's options, as both shims build them (64 MiB).
const SHM_OPTIONS: [&str; 5] = ["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"];
/// `CapEff` of a process with [`CONTAINERD_CAPS`].
const CONTAINERD_CAP_EFF: &str = "00000000a80425fb";
const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

fn code(e: &ttrpc::Error) -> ttrpc::Code {
    match e {
        ttrpc::Error::RpcStatus(s) => s.code.enum_value_or_default(),
        _ => ttrpc::Code::UNKNOWN,
    }
}

fn capabilities(names: &[&str]) -> oci::LinuxCapabilities {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut c = oci::LinuxCapabilities::new();
    c.Bounding = names.clone();
    c.Effective = names.clone();
    c.Permitted = names;
    c
}

/// A container's spec as the shims pass it on: a busybox process, `/proc`,
/// the pod's /dev/shm bound in, `mounts`; the pid namespace taken out (the
/// Go runtime's handlePidNamespace: the agent makes one per container) and
/// no network namespace (the pod's network is the VM's).
fn pod_spec(
    root: &str,
    cid: &str,
    args: &[&str],
    cgroups_path: &str,
    caps: &[&str],
    mounts: Vec<oci::Mount>,
) -> oci::Spec {
    let mut s = busybox_spec(root, cid, args, "unused");
    let linux = s.Linux.as_mut().unwrap();
    linux.Namespaces.retain(|ns| ns.Type != "pid");
    linux.CgroupsPath = cgroups_path.into();
    s.Process.as_mut().unwrap().Capabilities = Some(capabilities(caps)).into();
    s.Mounts
        .push(oci_mount("/dev/shm", "bind", SHM, &["rbind"]));
    s.Mounts.extend(mounts);
    s
}

/// Reads one stream of a process until the agent reports its end.
async fn read_to_eof(c: &AgentServiceClient, cid: &str, eid: &str, stderr: bool) -> String {
    let mut rd = ReadStreamRequest::new();
    rd.container_id = cid.into();
    rd.exec_id = eid.into();
    rd.len = 32768;
    let mut out = Vec::new();
    loop {
        let r = if stderr {
            c.read_stderr(ctx(), &rd).await
        } else {
            c.read_stdout(ctx(), &rd).await
        };
        match r {
            Ok(r) => out.extend(r.data),
            Err(e) => {
                assert_eq!(code(&e), ttrpc::Code::OUT_OF_RANGE, "{cid}/{eid}: {e:?}");
                return String::from_utf8(out).unwrap();
            }
        }
    }
}

/// What a shim sends, one request at a time.
struct Shim {
    rt: tokio::runtime::Runtime,
    c: AgentServiceClient,
}

impl Shim {
    fn new(agent: &Agent) -> Shim {
        let (rt, c) = agent_client(agent);
        Shim { rt, c }
    }

    fn create_sandbox(&self, req: CreateSandboxRequest) {
        self.rt
            .block_on(self.c.create_sandbox(ctx(), &req))
            .unwrap();
    }

    fn create(&self, cid: &str, spec: oci::Spec, storages: Vec<Storage>) {
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.into();
        req.exec_id = cid.into();
        req.OCI = Some(spec).into();
        req.storages = storages;
        if let Err(e) = self.rt.block_on(self.c.create_container(ctx(), &req)) {
            panic!("CreateContainer {cid}: {e:?}");
        }
    }

    /// The Go runtime's updateResources after every create: the memory
    /// onlined (`onlineCPUMem(0, false)`), then the pod's memory emptyDirs
    /// resized to the sandbox's memory.
    fn after_create(&self, emptydirs: Vec<Storage>) {
        let mut on = OnlineCPUMemRequest::new();
        on.wait = false;
        on.nb_cpus = 0;
        on.cpu_only = false;
        self.rt.block_on(self.c.online_cpu_mem(ctx(), &on)).unwrap();
        let mut up = UpdateEphemeralMountsRequest::new();
        up.storages = emptydirs;
        self.rt
            .block_on(self.c.update_ephemeral_mounts(ctx(), &up))
            .unwrap();
    }

    fn start(&self, cid: &str) {
        let mut req = StartContainerRequest::new();
        req.container_id = cid.into();
        self.rt
            .block_on(self.c.start_container(ctx(), &req))
            .unwrap();
    }

    /// Reads the container's stdout until `want` shows up (20 s at most).
    fn read_until(&self, cid: &str, want: &str) -> String {
        let mut rd = ReadStreamRequest::new();
        rd.container_id = cid.into();
        rd.exec_id = cid.into();
        rd.len = 32768;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = String::new();
        while !out.contains(want) {
            assert!(Instant::now() < deadline, "{cid}: no {want:?} in {out:?}");
            let data = self
                .rt
                .block_on(self.c.read_stdout(ctx(), &rd))
                .unwrap()
                .data;
            out.push_str(&String::from_utf8_lossy(&data));
        }
        out
    }

    fn read_to_eof(&self, cid: &str, eid: &str) -> String {
        self.rt.block_on(read_to_eof(&self.c, cid, eid, false))
    }

    /// An exec as the shims run one (a probe, `kubectl exec`): ExecProcess,
    /// stdout and stderr read to their end side by side, then WaitProcess.
    /// Its status, stdout and stderr.
    fn exec(
        &self,
        cid: &str,
        eid: &str,
        args: &[&str],
        caps: Option<&[&str]>,
    ) -> (i32, String, String) {
        let mut p = oci::Process::new();
        p.Args = args.iter().map(|a| a.to_string()).collect();
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/".into();
        p.User = Some(oci::User::new()).into();
        if let Some(caps) = caps {
            p.Capabilities = Some(capabilities(caps)).into();
        }
        let mut req = ExecProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        req.process = Some(p).into();
        self.rt.block_on(async {
            self.c.exec_process(ctx(), &req).await.unwrap();
            let (out, err) = tokio::join!(
                read_to_eof(&self.c, cid, eid, false),
                read_to_eof(&self.c, cid, eid, true)
            );
            (self.wait(cid, eid).await, out, err)
        })
    }

    async fn wait(&self, cid: &str, eid: &str) -> i32 {
        let mut w = WaitProcessRequest::new();
        w.container_id = cid.into();
        w.exec_id = eid.into();
        match self.c.wait_process(ctx(), &w).await {
            Ok(r) => r.status,
            Err(e) => panic!("WaitProcess {cid}/{eid}: {e:?}"),
        }
    }

    fn wait_init(&self, cid: &str) -> i32 {
        self.rt.block_on(self.wait(cid, cid))
    }

    fn signal(&self, cid: &str, eid: &str, sig: u32) {
        let mut req = SignalProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        req.signal = sig;
        if let Err(e) = self.rt.block_on(self.c.signal_process(ctx(), &req)) {
            panic!("SignalProcess {sig} to {cid}/{eid:?}: {e:?}");
        }
    }

    /// The kubelet's stop of a container: `sig` to its init, whose exit
    /// status the shim waits for.
    fn kubelet_stop(&self, cid: &str, sig: u32) -> i32 {
        self.signal(cid, cid, sig);
        self.wait_init(cid)
    }

    fn remove(&self, cid: &str, timeout: u32) {
        let mut req = RemoveContainerRequest::new();
        req.container_id = cid.into();
        req.timeout = timeout;
        if let Err(e) = self.rt.block_on(self.c.remove_container(ctx(), &req)) {
            panic!("RemoveContainer {cid}: {e:?}");
        }
    }

    /// The Go shim once a container's init has exited (its wait goroutine,
    /// then `Container.stop`): SIGKILL to every process of the container
    /// (an empty exec id), WaitProcess again, RemoveContainer.
    fn go_stop_container(&self, cid: &str, status: i32) {
        self.signal(cid, "", SIGKILL);
        assert_eq!(self.wait_init(cid), status, "second WaitProcess of {cid}");
        self.remove(cid, 0);
    }
}

/// The agent's mountinfo line for the top-most mount at `mp`.
fn mount_line(witness: &MountNsWitness, mp: &str) -> Option<String> {
    witness
        .mountinfo()
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some(mp))
        .map(str::to_owned)
}

/// The agent exited 0 and left nothing: its namespace's mounts as at the
/// start (seen through the witness), every child it had ended.
fn assert_torn_down(
    agent: &Agent,
    status: Option<std::process::ExitStatus>,
    witness: &MountNsWitness,
    before: &[String],
    children: &[u32],
) {
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{status:?}\n{}",
        agent.log_text()
    );
    assert_eq!(
        witness.mounts(),
        before,
        "mounts left in the agent's namespace"
    );
    for &child in children {
        assert!(process_ended(child), "child {child} outlived the agent");
    }
}

/// Polls exec probes (`cat <file>`) for up to `limit` until one prints
/// `want`; the time it took.
fn probe_until(shim: &Shim, cid: &str, file: &str, want: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    for i in 0.. {
        let (status, out, err) = shim.exec(cid, &format!("poll-{i}"), &["cat", file], None);
        assert_eq!((status, err.as_str()), (0, ""), "probe {i}");
        if out == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{file} is still {out:?} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!()
}

/// The Go runtime (`src/runtime/virtcontainers`) for a pod with an init
/// container, an app container with a memory emptyDir and a ConfigMap, and
/// a systemd cgroup driver; then the kubelet's stop, the shim's
/// StopContainer after each exit, and DestroySandbox, after which the
/// agent (not PID 1) exits 0 having torn everything down.
#[test]
fn go_runtime_kubernetes_pod() {
    if !can_run_containers() {
        return;
    }
    let slice = CgroupParent::systemd_slice();
    let base = slice.slice_base().to_string();
    let pod_slice = format!("{base}-besteffort-pod{}.slice", std::process::id());
    let pod_dir = format!("/{base}.slice/{base}-besteffort.slice/{pod_slice}");
    let cgroups_path = |cid: &str| format!("{pod_slice}:cri-containerd:{cid}");

    let mut agent = Agent::start_isolated();
    let pid = agent.pid();
    let witness = MountNsWitness::of(pid);
    let before = witness.mounts();
    let shim = Shim::new(&agent);

    // The host side of the share: each container's rootfs at
    // <cid>/rootfs, the ConfigMap bound in as <cid>-<random>-<volume>.
    let shared = tempfile::tempdir().unwrap();
    // The pause container's id is the sandbox's.
    let sid = format!("gopod{}", std::process::id());
    let (pause, init, app) = (sid.clone(), format!("{sid}-init"), format!("{sid}-app"));
    let root = |cid: &str| format!("{SHARED}{cid}/rootfs");
    for cid in [&pause, &init, &app] {
        busybox_rootfs_at(&shared.path().join(cid).join("rootfs"));
    }
    let cm_name = format!("{app}-6b2f1c0e9d4a7358-config");
    let cm_host = shared.path().join(&cm_name);
    kubelet_configmap(
        &cm_host,
        "..2026_05_01_10_00_00.1",
        &[("greeting", "hello")],
    );
    let cm_source = format!("{SHARED}{cm_name}");
    let cm_mp = format!("{SHARED}watchable/{cm_name}");
    let cache = format!("{EPHEMERAL}cache");
    // No fsGroup: the kubelet's emptyDir is owned by root, so no fsgid=.
    let cache_storage = || storage("ephemeral", "tmpfs", "tmpfs", &[], &cache);
    // prepareEphemeralMounts: the sandbox's memory (2048 MiB here).
    let resize = storage(
        "ephemeral",
        "tmpfs",
        "tmpfs",
        &["remount", "size=2048M"],
        &cache,
    );

    let mut sb = CreateSandboxRequest::new();
    sb.hostname = "web-pod".into();
    sb.dns = vec![
        "nameserver 10.96.0.10".into(),
        "search default.svc.cluster.local svc.cluster.local cluster.local".into(),
        "options ndots:5".into(),
    ];
    sb.sandbox_id = sid.clone();
    sb.sandbox_pidns = false;
    sb.storages = vec![
        // On the host, a bind mount stands in for the virtio-fs share.
        storage(
            "bind",
            &shared.path().display().to_string(),
            "bind",
            &["rbind"],
            SHARED,
        ),
        storage("ephemeral", "shm", "tmpfs", &SHM_OPTIONS, SHM),
    ];
    shim.create_sandbox(sb);

    // The pause container: no emptyDir yet, so an empty list follows.
    let mut spec = pod_spec(
        &root(&pause),
        &pause,
        &["sleep", "100000"],
        &cgroups_path(&pause),
        &CONTAINERD_CAPS,
        vec![],
    );
    spec.Hostname = "web-pod".into();
    shim.create(&pause, spec, vec![]);
    shim.after_create(vec![]);
    shim.start(&pause);

    // The init container fills the emptyDir and exits; the shim's wait
    // goroutine then stops it (StopContainer) at once.
    let cache_mount = || oci_mount("/cache", "bind", &cache, &["rbind", "rprivate", "rw"]);
    let spec = pod_spec(
        &root(&init),
        &init,
        &["sh", "-c", "echo from-init > /cache/out && echo done"],
        &cgroups_path(&init),
        &CONTAINERD_CAPS,
        vec![cache_mount()],
    );
    shim.create(&init, spec, vec![cache_storage()]);
    shim.after_create(vec![resize.clone()]);
    shim.start(&init);
    assert_eq!(shim.read_until(&init, "done"), "done\n");
    assert_eq!(shim.wait_init(&init), 0);
    shim.go_stop_container(&init, 0);
    // The emptyDir lives as long as the pod, resized in place.
    let line = mount_line(&witness, &cache).expect("emptyDir unmounted with the init container");
    assert!(line.contains("size=2097152k"), "{line}");
    assert_eq!(
        std::fs::read_to_string(witness.path(&cache).join("out")).unwrap(),
        "from-init\n"
    );

    // The app container: the emptyDir and the ConfigMap (watchable-bind,
    // options as the kubelet's bind mount has them).
    let spec = pod_spec(
        &root(&app),
        &app,
        &[
            "sh",
            "-c",
            "trap 'echo stopping; exit 0' TERM; cat /cache/out /etc/config/greeting; \
             echo; echo ready; sleep 100000 & wait",
        ],
        &cgroups_path(&app),
        &CONTAINERD_CAPS,
        vec![
            cache_mount(),
            oci_mount("/etc/config", "bind", &cm_mp, &["rbind", "rprivate", "ro"]),
        ],
    );
    let cm = storage(
        "watchable-bind",
        &cm_source,
        "bind",
        &["rbind", "rprivate", "ro"],
        &cm_mp,
    );
    shim.create(&app, spec, vec![cache_storage(), cm]);
    // The init container was deleted: only the app's entry.
    shim.after_create(vec![resize]);
    shim.start(&app);
    assert_eq!(shim.read_until(&app, "ready"), "from-init\nhello\nready\n");

    // Exec probes, passing and failing, each a fresh exec.
    for i in 0..3 {
        let got = shim.exec(
            &app,
            &format!("probe-{i}"),
            &["cat", "/etc/config/greeting"],
            None,
        );
        assert_eq!(got, (0, "hello".into(), String::new()), "probe {i}");
    }
    let got = shim.exec(
        &app,
        "probe-failing",
        &["sh", "-c", "echo not-ready >&2; exit 3"],
        None,
    );
    assert_eq!(got, (3, String::new(), "not-ready\n".into()));

    // The kubelet updates the ConfigMap; probes see it (the figure is printed; the bound is loose for loaded machines).
    kubelet_configmap(
        &cm_host,
        "..2026_05_01_10_05_00.2",
        &[("greeting", "bonjour")],
    );
    std::fs::remove_dir_all(cm_host.join("..2026_05_01_10_00_00.1")).unwrap();
    let took = probe_until(
        &shim,
        &app,
        "/etc/config/greeting",
        "bonjour",
        Duration::from_secs(20),
    );
    eprintln!("ConfigMap update seen by a probe after {took:?}");

    // kubectl exec: no capabilities of its own (it gets the container's),
    // the container's cgroup and hostname, and a background child that
    // must not keep the streams open.
    let got = shim.exec(
        &app,
        "kubectl-exec",
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; grep :memory: /proc/self/cgroup | cut -d: -f3; \
             hostname; chown 1000 /cache/out && stat -c %u /cache/out; sleep 600 &",
        ],
        None,
    );
    assert_eq!(
        got,
        (
            0,
            format!("CapEff:\t{CONTAINERD_CAP_EFF}\n{pod_dir}/cri-containerd-{app}.scope\nweb-pod\n1000\n"),
            String::new()
        )
    );

    // The kubelet's stop: the app handles SIGTERM; the pause container's
    // init has no handler, so SIGTERM is delivered as SIGKILL.
    assert_eq!(shim.kubelet_stop(&app, SIGTERM), 0);
    assert_eq!(shim.read_to_eof(&app, &app), "stopping\n");
    shim.go_stop_container(&app, 0);
    assert_eq!(shim.kubelet_stop(&pause, SIGTERM), 128 + SIGKILL as i32);
    // The sandbox container exited: the shim stops the sandbox.
    shim.go_stop_container(&pause, 128 + SIGKILL as i32);
    let children = all_children_of(pid);
    shim.rt
        .block_on(shim.c.destroy_sandbox(ctx(), &DestroySandboxRequest::new()))
        .unwrap();
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_torn_down(&agent, status, &witness, &before, &children);
    assert!(slice.dirs().is_empty(), "cgroups left: {:?}", slice.dirs());
    for cid in [&pause, &init, &app] {
        assert!(!witness.path("/run/kata-containers").join(cid).exists());
    }
    assert!(!witness.path(EPHEMERAL).exists(), "emptyDirs left behind");
    assert!(!shared.path().join("watchable").exists());
    // The host's files are the host's: untouched.
    assert_eq!(
        std::fs::read_to_string(cm_host.join("greeting")).unwrap(),
        "bonjour"
    );
    assert!(shared.path().join(&app).join("rootfs/bin/busybox").exists());
}

/// runtime-rs (`src/runtime-rs/crates`) for the same pod: rootfs and
/// volumes under the share's `passthrough/`, the ConfigMap at
/// `passthrough/watchable/<name>`, the pod's /dev/shm a storage of each
/// container, a cgroupfs cgroup driver, an exec with capabilities of its
/// own; no DestroySandbox: the containers are removed, then the VM goes,
/// here SIGTERM to the agent. Everything it set up is gone after its exit.
#[test]
fn runtime_rs_kubernetes_pod() {
    if !can_run_containers() {
        return;
    }
    let parent = CgroupParent::new();
    let pod_cgroup = format!(
        "/{}/kubepods/besteffort/pod{}",
        parent.name,
        std::process::id()
    );
    let cgroups_path = |cid: &str| format!("{pod_cgroup}/{cid}");

    let mut agent = Agent::start_isolated();
    let pid = agent.pid();
    let witness = MountNsWitness::of(pid);
    let before = witness.mounts();
    let shim = Shim::new(&agent);

    let shared = tempfile::tempdir().unwrap();
    let passthrough = shared.path().join("passthrough");
    let sid = format!("rspod{}", std::process::id());
    let (pause, init, app) = (sid.clone(), format!("{sid}-init"), format!("{sid}-app"));
    let root = |cid: &str| format!("{SHARED}passthrough/{cid}/rootfs");
    for cid in [&pause, &init, &app] {
        busybox_rootfs_at(&passthrough.join(cid).join("rootfs"));
    }
    // Volumes: "sandbox-<random>-<source's name>" under passthrough/.
    let cm_name = "sandbox-0f5e2d7c9b1a4836-config";
    let cm_host = passthrough.join(cm_name);
    kubelet_configmap(&cm_host, "..2026_05_01_11_00_00.1", &[("mode", "blue")]);
    let data_name = "sandbox-93c1d0a8e6f24b57-data";
    std::fs::create_dir(passthrough.join(data_name)).unwrap();
    std::fs::write(passthrough.join(data_name).join("seed"), "from-host\n").unwrap();
    let cm_source = format!("{SHARED}passthrough/{cm_name}");
    let cm_mp = format!("{SHARED}passthrough/watchable/{cm_name}");
    let work = format!("{EPHEMERAL}work");
    let work_storage = || storage("ephemeral", "tmpfs", "tmpfs", &[], &work);
    let shm_storage = || storage("ephemeral", "shm", "tmpfs", &SHM_OPTIONS, SHM);

    let mut sb = CreateSandboxRequest::new();
    sb.hostname = "rs-pod".into();
    sb.dns = vec!["nameserver 10.96.0.10".into()];
    sb.sandbox_id = sid.clone();
    sb.storages = vec![storage(
        "bind",
        &shared.path().display().to_string(),
        "bind",
        &["rbind"],
        SHARED,
    )];
    shim.create_sandbox(sb);

    let mut spec = pod_spec(
        &root(&pause),
        &pause,
        &["sleep", "100000"],
        &cgroups_path(&pause),
        &CONTAINERD_CAPS,
        vec![],
    );
    spec.Hostname = "rs-pod".into();
    shim.create(&pause, spec, vec![shm_storage()]);
    shim.start(&pause);

    let work_mount = || oci_mount("/work", "bind", &work, &["rbind", "rprivate", "rw"]);
    let spec = pod_spec(
        &root(&init),
        &init,
        &[
            "sh",
            "-c",
            "cat /data/seed > /work/out && echo init >> /work/out",
        ],
        &cgroups_path(&init),
        &CONTAINERD_CAPS,
        vec![
            work_mount(),
            oci_mount(
                "/data",
                "bind",
                &format!("{SHARED}passthrough/{data_name}"),
                &["rbind", "rprivate", "ro"],
            ),
        ],
    );
    shim.create(&init, spec, vec![shm_storage(), work_storage()]);
    shim.start(&init);
    assert_eq!(shim.wait_init(&init), 0);
    assert_eq!(shim.read_to_eof(&init, &init), "");
    shim.remove(&init, 0);
    assert!(
        mount_line(&witness, &work).is_some(),
        "emptyDir went with the init container"
    );

    let spec = pod_spec(
        &root(&app),
        &app,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; cat /work/out /etc/config/mode; echo; echo ready; \
             sleep 100000 & wait",
        ],
        &cgroups_path(&app),
        &CONTAINERD_CAPS,
        vec![
            work_mount(),
            oci_mount("/etc/config", "bind", &cm_mp, &["rbind", "rprivate", "ro"]),
        ],
    );
    let cm = storage(
        "watchable-bind",
        &cm_source,
        "bind",
        &["rbind", "rprivate", "ro"],
        &cm_mp,
    );
    shim.create(&app, spec, vec![shm_storage(), work_storage(), cm]);
    shim.start(&app);
    assert_eq!(
        shim.read_until(&app, "ready"),
        "from-host\ninit\nblue\nready\n"
    );

    // The ConfigMap's update reaches the container.
    kubelet_configmap(&cm_host, "..2026_05_01_11_05_00.2", &[("mode", "green")]);
    std::fs::remove_dir_all(cm_host.join("..2026_05_01_11_00_00.1")).unwrap();
    probe_until(
        &shim,
        &app,
        "/etc/config/mode",
        "green",
        Duration::from_secs(20),
    );

    // runtime-rs passes the exec's own process spec, capabilities
    // included: it gets exactly those.
    let got = shim.exec(
        &app,
        "exec-caps",
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; grep :memory: /proc/self/cgroup | cut -d: -f3",
        ],
        Some(&["CAP_CHOWN", "CAP_KILL"]),
    );
    assert_eq!(
        got,
        (
            0,
            format!("CapEff:\t0000000000000021\n{pod_cgroup}/{app}\n"),
            String::new()
        )
    );
    // Both containers' /dev/shm is the one pod tmpfs.
    let got = shim.exec(
        &app,
        "shm",
        &[
            "sh",
            "-c",
            "echo x > /dev/shm/app && grep ' /dev/shm ' /proc/mounts | cut -d' ' -f3",
        ],
        None,
    );
    assert_eq!(got, (0, "tmpfs\n".into(), String::new()));
    assert!(witness.path(SHM).join("app").exists());

    assert_eq!(shim.kubelet_stop(&app, SIGTERM), 0);
    shim.remove(&app, 0);
    assert_eq!(shim.kubelet_stop(&pause, SIGTERM), 128 + SIGKILL as i32);
    shim.remove(&pause, 0);

    // No DestroySandbox: the VM is torn down.
    let children = all_children_of(pid);
    let status = agent.stop_with(libc::SIGTERM, Duration::from_secs(20));
    assert_torn_down(&agent, status, &witness, &before, &children);
    let left: Vec<_> = parent
        .dirs()
        .iter()
        .filter(|d| d.join("kubepods").exists())
        .cloned()
        .collect();
    assert!(left.is_empty(), "pod cgroups left: {left:?}");
    assert!(!witness.path(EPHEMERAL).exists(), "emptyDirs left behind");
    assert!(!witness.path(SHM).exists(), "shm left behind");
    assert!(!passthrough.join("watchable").exists());
    assert!(
        Path::new(&cm_host).join("mode").exists(),
        "source untouched"
    );
}
