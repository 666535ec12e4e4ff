//! The Go runtime's pod start on a fresh agent, request by request in its
//! order and shapes (as `tests/tests/shim_replay.rs` replays it):
//! GetGuestDetails, CreateSandbox with the pod's /dev/shm, the pause
//! container (CreateContainer, the updateResources pair OnlineCPUMem and
//! UpdateEphemeralMounts, StartContainer), the app container the same
//! way, then ReadStdout(32 KiB) until its first output. Timed from the
//! first request after the agent answered its first Check (the runtime's
//! wait for the agent) to the app's first output bytes. The rootfs is a
//! host directory named by the spec's root path: no share driver (neither
//! virtio-fs nor our host-only `bind`) is common to both agents on a host.

use std::time::{Duration, Instant};

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::oci;

use super::containers::{ctx, err, spec, Parent};
use super::target::{Running, Target};

const SHM: &str = "/run/kata-containers/sandbox/shm";
const SHM_OPTIONS: [&str; 5] = ["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"];
fn pod_spec(rootfs: &Rootfs, cid: &str, args: &[&str], parent: &Parent) -> oci::Spec {
    let mut s = spec(rootfs.path(), cid, args, &parent.name);
    s.Hostname = "web-pod".into();
    s.Mounts
        .push(oci_mount("/dev/shm", "bind", SHM, &["rbind"]));
    s
}

/// `rounds` pod starts, each on a fresh agent: their durations.
pub fn run(t: &Target, rounds: usize) -> Result<Vec<Duration>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // Each container its own rootfs, as in a pod.
    let rootfs = [Rootfs::new(), Rootfs::new()];
    let mut out = Vec::new();
    for i in 0..rounds {
        let agent = Running::start(t)?;
        let parent = Parent::new("pod");
        let r = rt.block_on(one(&agent, &rootfs, &parent, i));
        drop(agent);
        drop(parent);
        out.push(r?);
    }
    Ok(out)
}

async fn one(
    agent: &Running,
    rootfs: &[Rootfs; 2],
    parent: &Parent,
    n: usize,
) -> Result<Duration, String> {
    let c = AgentServiceClient::new(
        ttrpc::asynchronous::Client::connect(&agent.uri())
            .await
            .map_err(|e| err("connect", e))?,
    );
    let sid = format!("pod{}x{n}", std::process::id());
    let (pause, app) = (sid.clone(), format!("{sid}-app"));
    let t = Instant::now();
    let r = start_pod(&c, rootfs, parent, &sid, &pause, &app).await;
    let d = t.elapsed();
    for cid in [&app, &pause] {
        let mut req = RemoveContainerRequest::new();
        req.container_id = cid.to_string();
        let _ = c.remove_container(ctx(), &req).await;
    }
    r.map(|_| d)
}

async fn start_pod(
    c: &AgentServiceClient,
    rootfs: &[Rootfs; 2],
    parent: &Parent,
    sid: &str,
    pause: &str,
    app: &str,
) -> Result<(), String> {
    let mut gd = GuestDetailsRequest::new();
    gd.mem_block_size = true;
    gd.mem_hotplug_probe = true;
    c.get_guest_details(ctx(), &gd)
        .await
        .map_err(|e| err("GetGuestDetails", e))?;

    let mut sb = CreateSandboxRequest::new();
    sb.hostname = "web-pod".into();
    sb.dns = vec![
        "nameserver 10.96.0.10".into(),
        "search default.svc.cluster.local svc.cluster.local cluster.local".into(),
        "options ndots:5".into(),
    ];
    sb.sandbox_id = sid.into();
    sb.sandbox_pidns = false;
    sb.storages = vec![storage("ephemeral", "shm", "tmpfs", &SHM_OPTIONS, SHM)];
    c.create_sandbox(ctx(), &sb)
        .await
        .map_err(|e| err("CreateSandbox", e))?;

    for (cid, args, rootfs) in [
        (pause, &["sleep", "100000"][..], &rootfs[0]),
        (
            app,
            &["sh", "-c", "echo ready; exec sleep 100000"][..],
            &rootfs[1],
        ),
    ] {
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.into();
        req.exec_id = cid.into();
        req.OCI = Some(pod_spec(rootfs, cid, args, parent)).into();
        c.create_container(ctx(), &req)
            .await
            .map_err(|e| err(&format!("CreateContainer {cid}"), e))?;
        // The Go runtime's updateResources after each create.
        let mut on = OnlineCPUMemRequest::new();
        on.wait = false;
        on.nb_cpus = 0;
        on.cpu_only = false;
        c.online_cpu_mem(ctx(), &on)
            .await
            .map_err(|e| err("OnlineCPUMem", e))?;
        c.update_ephemeral_mounts(ctx(), &UpdateEphemeralMountsRequest::new())
            .await
            .map_err(|e| err("UpdateEphemeralMounts", e))?;
        let mut st = StartContainerRequest::new();
        st.container_id = cid.into();
        c.start_container(ctx(), &st)
            .await
            .map_err(|e| err(&format!("StartContainer {cid}"), e))?;
    }
    let mut rd = ReadStreamRequest::new();
    rd.container_id = app.into();
    rd.exec_id = app.into();
    rd.len = 32768;
    let r = c
        .read_stdout(ctx(), &rd)
        .await
        .map_err(|e| err(&format!("ReadStdout {app}"), e))?;
    if r.data.is_empty() {
        return Err(format!("{app}: empty first read"));
    }
    Ok(())
}
