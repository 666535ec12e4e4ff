//! Hostile input: every path and id the host hands the agent, tried with
//! `..`, absolute escapes, symlinks planted on the way (by the test, as a
//! guest file would be, and by a container process in a directory it
//! shares with the host), names longer than NAME_MAX, paths longer than
//! PATH_MAX and NUL bytes. Each must be refused with a status that is the
//! caller's (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, never
//! INTERNAL) and names the object, and the filesystem is checked
//! afterwards: nothing was written, created or mounted outside its place.
//! Root only: the agent runs in its own mount namespace with its own /run.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::oci;

const SHARED: &str = "/run/kata-containers/shared/containers";
const RUN_DIR: &str = "/run/kata-containers";
/// A directory of the agent's own /run that no request may reach.
const OUTSIDE: &str = "/run/hostile-outside";
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4096;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "h-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The status of a refused request; panics if it was served.
fn refused<T: std::fmt::Debug>(what: &str, r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r {
        Ok(v) => panic!("{what}: served ({v:?}), expected a refusal"),
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message().to_string()),
        Err(e) => panic!("{what}: transport error {e:?}"),
    }
}

/// Asserts a refusal that blames the request or the guest's state, not
/// the agent, and that names the object (`names`, as it appears in the
/// message: a prefix of the path or id is enough).
fn assert_clear_refusal<T: std::fmt::Debug>(what: &str, names: &str, r: ttrpc::Result<T>) {
    let (code, msg) = refused(what, r);
    assert!(
        matches!(
            code,
            ttrpc::Code::INVALID_ARGUMENT
                | ttrpc::Code::NOT_FOUND
                | ttrpc::Code::FAILED_PRECONDITION
        ),
        "{what}: code {code:?} ({msg})"
    );
    // As written, or as Rust's Debug shows it (a NUL as `\0`).
    let shown: String = names.chars().take(40).collect();
    let quoted = format!("{names:?}");
    let escaped: String = quoted[1..quoted.len() - 1].chars().take(40).collect();
    assert!(
        msg.contains(&shown) || msg.contains(&escaped),
        "{what}: the message does not name {shown:?}: {msg}"
    );
}

/// The entries of `dir` as the agent sees it, sorted.
fn entries(agent: &Agent, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(agent.path(dir))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn mount_points(agent: &Agent) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{}/mountinfo", agent.pid()))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect()
}

/// Paths that must never be accepted below `base` (an allowed directory):
/// each with a label. `links` names a directory under `base` in which
/// [`plant_links`] put the symlinks.
fn hostile_paths(base: &str, links: &str) -> Vec<(&'static str, String)> {
    let ups = "../".repeat(12);
    vec![
        ("relative", "hostile/relative".to_string()),
        ("empty", String::new()),
        ("absolute outside", format!("{OUTSIDE}/abs")),
        ("dot-dot", format!("{base}/{ups}run/hostile-outside/dd")),
        (
            "inner dot-dot",
            format!("{base}/a/b/{ups}run/hostile-outside/idd"),
        ),
        ("trailing dot-dot", format!("{base}/a/..")),
        ("nul byte", format!("{base}/nul\0byte")),
        ("nul then escape", format!("{base}/x\0/../../../../etc")),
        (
            "name > NAME_MAX",
            format!("{base}/{}", "n".repeat(NAME_MAX + 1)),
        ),
        (
            "path > PATH_MAX",
            format!(
                "{base}/{}",
                format!("{}/", "d".repeat(200)).repeat(PATH_MAX / 201 + 1)
            ),
        ),
        ("symlink out", format!("{base}/{links}/out/sl")),
        (
            "symlink to /",
            format!("{base}/{links}/root/run/hostile-outside/slr"),
        ),
        (
            "relative symlink up",
            format!("{base}/{links}/up/run/hostile-outside/slu"),
        ),
        ("symlink as last name", format!("{base}/{links}/out")),
        ("base itself", base.to_string()),
    ]
}

/// Symlinks that lead out of `dir`: to [`OUTSIDE`], to `/`, and up.
fn plant_links(agent: &Agent, dir: &str) {
    let d = agent.path(dir);
    std::fs::create_dir_all(&d).unwrap();
    symlink(OUTSIDE, d.join("out")).unwrap();
    symlink("/", d.join("root")).unwrap();
    symlink("../".repeat(12), d.join("up")).unwrap();
}

struct Guest {
    agent: Agent,
    rt: tokio::runtime::Runtime,
    client: AgentServiceClient,
}

impl Guest {
    fn start() -> Option<Guest> {
        if !is_root() {
            skip("hostile input tests need root (the agent's own mount namespace)");
            return None;
        }
        let agent = Agent::start_isolated();
        let (rt, client) = agent_client(&agent);
        std::fs::create_dir_all(agent.path(OUTSIDE)).unwrap();
        Some(Guest { agent, rt, client })
    }

    fn outside_is_empty(&self, after: &str) {
        let left = entries(&self.agent, OUTSIDE);
        assert!(left.is_empty(), "{after}: written outside: {left:?}");
    }
}

fn copy_request(path: &str, data: &[u8]) -> CopyFileRequest {
    let mut r = CopyFileRequest::new();
    r.path = path.to_string();
    r.file_size = data.len() as i64;
    r.file_mode = libc::S_IFREG | 0o644;
    r.dir_mode = 0o755;
    r.data = data.to_vec();
    r
}

#[test]
fn copy_file_targets_stay_in_the_shared_directory() {
    let Some(g) = Guest::start() else { return };
    plant_links(&g.agent, &format!("{SHARED}/links"));
    for (label, path) in hostile_paths(SHARED, "links") {
        for mode in [
            libc::S_IFDIR | 0o755,
            libc::S_IFLNK | 0o777,
            libc::S_IFREG | 0o644,
        ] {
            let mut req = copy_request(&path, b"/");
            req.file_mode = mode;
            let r = g.rt.block_on(g.client.copy_file(ctx(), &req));
            let what = format!("CopyFile {label} (mode {mode:o})");
            if label == "symlink as last name" && mode & libc::S_IFMT == libc::S_IFREG {
                // A regular file replaces the link itself, in place.
                r.unwrap();
                let meta = std::fs::symlink_metadata(g.agent.path(&path)).unwrap();
                assert!(meta.is_file(), "{what}: not replaced by the file");
            } else {
                assert_clear_refusal(&what, &path, r);
            }
            g.outside_is_empty(&what);
        }
    }
    // A symlink the host itself copied in earlier leads nowhere either.
    let mut link = copy_request(&format!("{SHARED}/copied-link"), OUTSIDE.as_bytes());
    link.file_mode = libc::S_IFLNK | 0o777;
    g.rt.block_on(g.client.copy_file(ctx(), &link)).unwrap();
    let through = copy_request(&format!("{SHARED}/copied-link/x"), b"data");
    let r = g.rt.block_on(g.client.copy_file(ctx(), &through));
    assert_clear_refusal("CopyFile through a copied symlink", &through.path, r);
    g.outside_is_empty("CopyFile through a copied symlink");
    // Nothing appeared elsewhere in the agent's /run, and what was
    // refused left no file or directory in the shared one.
    assert_eq!(
        entries(&g.agent, "/run"),
        ["hostile-outside", "kata-containers"]
    );
    assert_eq!(entries(&g.agent, SHARED), ["copied-link", "links"]);
    // The agent still serves a good one.
    let ok = copy_request(&format!("{SHARED}/c/hosts"), b"127.0.0.1 localhost\n");
    g.rt.block_on(g.client.copy_file(ctx(), &ok)).unwrap();
    assert_eq!(
        std::fs::read(g.agent.path(format!("{SHARED}/c/hosts"))).unwrap(),
        b"127.0.0.1 localhost\n"
    );
}

#[test]
fn storage_mount_points_stay_under_the_run_directory() {
    let Some(g) = Guest::start() else { return };
    plant_links(&g.agent, &format!("{RUN_DIR}/links"));
    let mounts_before = mount_points(&g.agent);
    for (label, path) in hostile_paths(RUN_DIR, "links") {
        let mut req = CreateSandboxRequest::new();
        req.sandbox_id = unique("storage");
        req.storages = vec![storage("ephemeral", "tmpfs", "tmpfs", &["size=1m"], &path)];
        let r = g.rt.block_on(g.client.create_sandbox(ctx(), &req));
        let what = format!("storage mount point {label}");
        assert_clear_refusal(&what, &path, r);
        g.outside_is_empty(&what);
        assert_eq!(
            mount_points(&g.agent),
            mounts_before,
            "{what}: left a mount"
        );
    }
    assert_eq!(
        entries(&g.agent, "/run"),
        ["hostile-outside", "kata-containers"]
    );
}

#[test]
fn volume_paths_stay_under_the_run_directory() {
    let Some(g) = Guest::start() else { return };
    plant_links(&g.agent, &format!("{RUN_DIR}/links"));
    for (label, path) in hostile_paths(RUN_DIR, "links") {
        let mut stats = VolumeStatsRequest::new();
        stats.volume_guest_path = path.clone();
        let r = g.rt.block_on(g.client.get_volume_stats(ctx(), &stats));
        assert_clear_refusal(&format!("GetVolumeStats {label}"), &path, r);
        let mut resize = ResizeVolumeRequest::new();
        resize.volume_guest_path = path.clone();
        resize.size = 1 << 30;
        let r = g.rt.block_on(g.client.resize_volume(ctx(), &resize));
        assert_clear_refusal(&format!("ResizeVolume {label}"), &path, r);
    }
}

/// Ids no container or process may take: each would name a directory
/// or a cgroup outside its place, or cannot name one at all.
fn hostile_ids() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("dot", ".".into()),
        ("dot-dot", "..".into()),
        ("dot-dot path", "../../../run/hostile-outside/id".into()),
        ("slash", "a/b".into()),
        ("absolute", "/run/hostile-outside/id".into()),
        ("nul byte", "id\0x".into()),
        ("newline", "id\nx".into()),
        ("over-long", "i".repeat(NAME_MAX + 2)),
    ]
}

#[test]
fn container_and_exec_ids_are_refused_before_anything_is_made() {
    let Some(g) = Guest::start() else { return };
    let run_before = entries(&g.agent, RUN_DIR);
    let cgroups = CgroupParent::new();
    let rootfs = Rootfs::new();
    for (label, id) in hostile_ids() {
        let mut c = CreateContainerRequest::new();
        c.container_id = id.clone();
        c.OCI = Some(busybox_spec(
            &rootfs.path().to_string_lossy(),
            "x",
            &["true"],
            &cgroups.name,
        ))
        .into();
        let r = g.rt.block_on(g.client.create_container(ctx(), &c));
        let (code, msg) = refused(&format!("CreateContainer id {label}"), r);
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "id {label}: {msg}");

        let mut e = ExecProcessRequest::new();
        e.container_id = "no-such-container".into();
        e.exec_id = id.clone();
        let r = g.rt.block_on(g.client.exec_process(ctx(), &e));
        assert_clear_refusal(&format!("ExecProcess exec id {label}"), "", r);

        // Every request naming a container: refused, not served, not a crash.
        let mut w = WaitProcessRequest::new();
        w.container_id = id.clone();
        let r = g.rt.block_on(g.client.wait_process(ctx(), &w));
        assert_clear_refusal(&format!("WaitProcess {label}"), "", r);
        let mut rm = RemoveContainerRequest::new();
        rm.container_id = id.clone();
        let r = g.rt.block_on(g.client.remove_container(ctx(), &rm));
        assert_clear_refusal(&format!("RemoveContainer {label}"), "", r);
        let mut s = SignalProcessRequest::new();
        s.container_id = id.clone();
        s.signal = 9;
        let r = g.rt.block_on(g.client.signal_process(ctx(), &s));
        assert_clear_refusal(&format!("SignalProcess {label}"), "", r);
        let mut st = StatsContainerRequest::new();
        st.container_id = id.clone();
        let r = g.rt.block_on(g.client.stats_container(ctx(), &st));
        assert_clear_refusal(&format!("StatsContainer {label}"), "", r);
        let mut rd = ReadStreamRequest::new();
        rd.container_id = id.clone();
        rd.len = 10;
        let r = g.rt.block_on(g.client.read_stdout(ctx(), &rd));
        assert_clear_refusal(&format!("ReadStdout {label}"), "", r);
    }
    assert_eq!(
        entries(&g.agent, RUN_DIR),
        run_before,
        "bundle directories made"
    );
    g.outside_is_empty("hostile ids");
    for d in cgroups.dirs() {
        let made: Vec<_> = std::fs::read_dir(&d)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            made.iter().all(|n| !n.to_string_lossy().starts_with('i')),
            "cgroups made under {}: {made:?}",
            d.display()
        );
    }
}

/// A folder of guest hooks with one prestart hook that would leave a mark.
fn hook_folder(agent: &Agent, dir: &str) {
    let prestart = agent.path(format!("{dir}/prestart"));
    std::fs::create_dir_all(&prestart).unwrap();
    let hook = prestart.join("mark");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {OUTSIDE}/hook-ran\n")).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn guest_hook_paths_outside_the_guest_image_are_refused() {
    let Some(g) = Guest::start() else { return };
    // Where the host or a container can write: the shared directory (a
    // container's rootfs), and a link from elsewhere into it.
    let writable = format!("{SHARED}/c/rootfs/hooks");
    hook_folder(&g.agent, &writable);
    symlink(&writable, g.agent.path("/run/hooks-link")).unwrap();
    let ups = "../".repeat(12);
    let long = format!(
        "/{}",
        format!("{}/", "h".repeat(200)).repeat(PATH_MAX / 201 + 1)
    );
    for (label, path) in [
        ("relative", "usr/share/oci/hooks".to_string()),
        (
            "dot-dot",
            format!("/usr/share/oci/hooks/{ups}run/kata-containers"),
        ),
        ("nul byte", "/usr/share/oci\0/hooks".to_string()),
        (
            "name > NAME_MAX",
            format!("/usr/{}", "n".repeat(NAME_MAX + 1)),
        ),
        ("path > PATH_MAX", long),
        ("container-writable", writable.clone()),
        ("symlink into it", "/run/hooks-link".to_string()),
    ] {
        let mut req = CreateSandboxRequest::new();
        req.sandbox_id = unique("hooks");
        req.guest_hook_path = path.clone();
        let r = g.rt.block_on(g.client.create_sandbox(ctx(), &req));
        assert_clear_refusal(&format!("guest_hook_path {label}"), &path, r);
    }
    g.outside_is_empty("guest hooks");
}

/// A container whose rootfs is in the shared directory plants symlinks in
/// it, as any process of the pod may; the host then names paths through
/// them in the requests that take one.
#[test]
fn symlinks_a_container_plants_lead_nowhere() {
    if !can_run_containers() {
        return;
    }
    let Some(g) = Guest::start() else { return };
    let cgroups = CgroupParent::new();
    let mut sb = CreateSandboxRequest::new();
    sb.sandbox_id = unique("pod");
    g.rt.block_on(g.client.create_sandbox(ctx(), &sb)).unwrap();

    let cid = unique("planter");
    let rootfs = format!("{SHARED}/{cid}/rootfs");
    busybox_rootfs_at(&g.agent.path(&rootfs));
    let script = format!(
        "ln -s / /to-root && ln -s {OUTSIDE} /to-outside && ln -s ../../../../../.. /to-up \
         && mkdir -p /hooks/prestart && printf '#!/bin/sh\\ntouch {OUTSIDE}/hook-ran\\n' \
         > /hooks/prestart/mark && chmod 755 /hooks/prestart/mark"
    );
    let mut c = CreateContainerRequest::new();
    c.container_id = cid.clone();
    c.OCI = Some(busybox_spec(
        &rootfs,
        &cid,
        &["sh", "-c", &script],
        &cgroups.name,
    ))
    .into();
    g.rt.block_on(g.client.create_container(ctx(), &c)).unwrap();
    let mut start = StartContainerRequest::new();
    start.container_id = cid.clone();
    g.rt.block_on(g.client.start_container(ctx(), &start))
        .unwrap();
    let mut w = WaitProcessRequest::new();
    w.container_id = cid.clone();
    let status =
        g.rt.block_on(g.client.wait_process(ctx(), &w))
            .unwrap()
            .status;
    assert_eq!(status, 0, "the container could not plant its links");
    assert!(std::fs::symlink_metadata(g.agent.path(format!("{rootfs}/to-root"))).is_ok());

    let mounts_before = mount_points(&g.agent);
    for link in [
        "to-root/run/hostile-outside",
        "to-outside",
        "to-up/run/hostile-outside",
    ] {
        let through = format!("{rootfs}/{link}/planted");
        let r =
            g.rt.block_on(g.client.copy_file(ctx(), &copy_request(&through, b"x")));
        assert_clear_refusal(&format!("CopyFile through {link}"), &through, r);

        let mut stats = VolumeStatsRequest::new();
        stats.volume_guest_path = format!("{rootfs}/{link}");
        let r = g.rt.block_on(g.client.get_volume_stats(ctx(), &stats));
        assert_clear_refusal(&format!("GetVolumeStats through {link}"), &rootfs, r);

        let mut resize = ResizeVolumeRequest::new();
        resize.volume_guest_path = format!("{rootfs}/{link}");
        resize.size = 1 << 30;
        let r = g.rt.block_on(g.client.resize_volume(ctx(), &resize));
        assert_clear_refusal(&format!("ResizeVolume through {link}"), &rootfs, r);

        // A second container whose storage's mount point goes through it.
        let other = unique("victim");
        let mut c2 = CreateContainerRequest::new();
        c2.container_id = other.clone();
        c2.storages = vec![storage(
            "ephemeral",
            "tmpfs",
            "tmpfs",
            &["size=1m"],
            &through,
        )];
        c2.OCI = Some(busybox_spec(&rootfs, &other, &["true"], &cgroups.name)).into();
        let r = g.rt.block_on(g.client.create_container(ctx(), &c2));
        assert_clear_refusal(&format!("storage through {link}"), &through, r);
        assert_eq!(
            mount_points(&g.agent),
            mounts_before,
            "storage through {link}: mounted"
        );
    }
    // The container's hook folder is no guest hook folder.
    let fresh = Guest::start().unwrap();
    let hooks = format!("{rootfs}/hooks");
    hook_folder(&fresh.agent, &hooks);
    let mut sb2 = CreateSandboxRequest::new();
    sb2.sandbox_id = unique("pod2");
    sb2.guest_hook_path = hooks.clone();
    let r = fresh.rt.block_on(fresh.client.create_sandbox(ctx(), &sb2));
    assert_clear_refusal("guest_hook_path in a container's rootfs", &hooks, r);
    fresh.outside_is_empty("guest hooks of a container");
    g.outside_is_empty("planted symlinks");

    let mut rm = RemoveContainerRequest::new();
    rm.container_id = cid;
    g.rt.block_on(g.client.remove_container(ctx(), &rm))
        .unwrap();
}

#[test]
fn spec_hook_paths_must_be_absolute() {
    if !can_run_containers() {
        return;
    }
    let Some(g) = Guest::start() else { return };
    let cgroups = CgroupParent::new();
    let rootfs = Rootfs::new();
    let mark = format!("touch {OUTSIDE}/spec-hook-ran");
    for (label, path) in [
        ("relative", "sh".to_string()),
        ("relative with a slash", "bin/sh".to_string()),
        ("empty", String::new()),
        ("nul byte", "/bin/sh\0x".to_string()),
        (
            "name > NAME_MAX",
            format!("/bin/{}", "n".repeat(NAME_MAX + 1)),
        ),
    ] {
        let cid = unique("hook");
        let mut spec = busybox_spec(
            &rootfs.path().to_string_lossy(),
            &cid,
            &["true"],
            &cgroups.name,
        );
        let mut hook = oci::Hook::new();
        hook.Path = path.clone();
        hook.Args = vec!["sh".into(), "-c".into(), mark.clone()];
        let mut hooks = oci::Hooks::new();
        hooks.Prestart = vec![hook.clone()];
        hooks.CreateRuntime = vec![hook];
        spec.Hooks = Some(hooks).into();
        let mut c = CreateContainerRequest::new();
        c.container_id = cid.clone();
        c.OCI = Some(spec).into();
        let r = g.rt.block_on(g.client.create_container(ctx(), &c));
        let (code, msg) = refused(&format!("hook path {label}"), r);
        assert_eq!(
            code,
            ttrpc::Code::INVALID_ARGUMENT,
            "hook path {label}: {msg}"
        );
        assert!(msg.contains("hook"), "hook path {label}: {msg}");
        g.outside_is_empty(&format!("hook path {label}"));
    }
}

#[test]
fn exec_ids_are_refused_by_a_running_container() {
    if !can_run_containers() {
        return;
    }
    let Some(g) = Guest::start() else { return };
    let cgroups = CgroupParent::new();
    let rootfs = Rootfs::new();
    let cid = unique("exec");
    let mut c = CreateContainerRequest::new();
    c.container_id = cid.clone();
    c.OCI = Some(busybox_spec(
        &rootfs.path().to_string_lossy(),
        &cid,
        &["sh", "-c", "exec sleep 600"],
        &cgroups.name,
    ))
    .into();
    g.rt.block_on(g.client.create_container(ctx(), &c)).unwrap();
    let mut start = StartContainerRequest::new();
    start.container_id = cid.clone();
    g.rt.block_on(g.client.start_container(ctx(), &start))
        .unwrap();
    let bundle = entries(&g.agent, &format!("{RUN_DIR}/{cid}"));
    let children = all_children_of(g.agent.pid()).len();
    for (label, id) in hostile_ids() {
        if id.is_empty() {
            continue; // the init's own exec id
        }
        let mut e = ExecProcessRequest::new();
        e.container_id = cid.clone();
        e.exec_id = id.clone();
        let mut p = oci::Process::new();
        p.Args = vec![
            "sh".into(),
            "-c".into(),
            format!("touch {OUTSIDE}/exec-ran"),
        ];
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/".into();
        p.User = Some(oci::User::new()).into();
        e.process = Some(p).into();
        let r = g.rt.block_on(g.client.exec_process(ctx(), &e));
        let (code, msg) = refused(&format!("ExecProcess exec id {label}"), r);
        assert_eq!(
            code,
            ttrpc::Code::INVALID_ARGUMENT,
            "exec id {label}: {msg}"
        );
        assert!(msg.contains("exec"), "exec id {label}: {msg}");
    }
    assert_eq!(entries(&g.agent, &format!("{RUN_DIR}/{cid}")), bundle);
    assert_eq!(
        all_children_of(g.agent.pid()).len(),
        children,
        "a process was started"
    );
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = cid;
    rm.timeout = 5;
    g.rt.block_on(g.client.remove_container(ctx(), &rm))
        .unwrap();
    g.outside_is_empty("hostile exec ids");
}
