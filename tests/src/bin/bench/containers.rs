//! Container figures of one agent: the first container of a fresh agent,
//! create-start-wait of `true`, RemoveContainer, exec, stdout throughput
//! at the two read sizes, and the agent's RSS with 20 containers running.
//! Requests as the Go runtime shapes them: a sandbox first, and the pid
//! namespace taken out of each spec (the agent makes one per container).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::oci;

use super::target::Running;
use super::{ms, wants, Run};

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(120_000_000_000)
}

/// A container spec as the Go runtime passes it on: busybox, `/proc`,
/// containerd's capabilities and /dev, new mount, ipc and uts namespaces, no pid
/// namespace in the spec.
pub fn spec(rootfs: &Path, cid: &str, args: &[&str], parent: &str) -> oci::Spec {
    let mut s = busybox_spec(&rootfs.display().to_string(), cid, args, parent);
    if let Some(l) = s.Linux.as_mut() {
        l.Namespaces.retain(|ns| ns.Type != "pid");
    }
    let names: Vec<String> = CONTAINERD_CAPS.iter().map(|c| c.to_string()).collect();
    let mut caps = oci::LinuxCapabilities::new();
    caps.Bounding = names.clone();
    caps.Effective = names.clone();
    caps.Permitted = names;
    if let Some(p) = s.Process.as_mut() {
        p.Capabilities = Some(caps).into();
    }
    // containerd's default /dev: a container's device nodes and links go
    // to a tmpfs of its own, never into the shared rootfs directory.
    s.Mounts.push(oci_mount(
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ));
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
            "gid=5",
        ],
    ));
    s
}

/// The cgroup parent of one run's containers; dropping it removes what
/// the agent left of it in every hierarchy (ours removes parents with
/// their last child, upstream's leaves them).
pub struct Parent {
    pub name: String,
}

impl Parent {
    pub fn new(what: &str) -> Parent {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        Parent {
            name: format!(
                "guest-agent-bench-{}-{what}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
        }
    }
}

/// Removes the directory tree of a cgroup, children first.
fn rmdir_tree(d: &Path) {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(d) {
        eprintln!("bench: cgroup {} left behind: {e}", d.display());
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        let top = Path::new("/sys/fs/cgroup");
        let mut dirs: Vec<PathBuf> = vec![top.join(&self.name)];
        if let Ok(rd) = std::fs::read_dir(top) {
            dirs.extend(rd.flatten().map(|e| e.path().join(&self.name)));
        }
        for d in dirs {
            if d.is_dir() {
                rmdir_tree(&d);
            }
        }
    }
}

pub struct Bench {
    pub c: AgentServiceClient,
    pub rootfs: Rootfs,
    pub parent: Parent,
}

pub fn err(what: &str, e: ttrpc::Error) -> String {
    format!("{what}: {e:?}")
}

impl Bench {
    pub async fn create(&self, cid: &str, args: &[&str]) -> Result<(), String> {
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.into();
        req.exec_id = cid.into();
        req.OCI = Some(spec(self.rootfs.path(), cid, args, &self.parent.name)).into();
        self.c
            .create_container(ctx(), &req)
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("CreateContainer {cid}"), e))
    }
    pub async fn start(&self, cid: &str) -> Result<(), String> {
        let mut req = StartContainerRequest::new();
        req.container_id = cid.into();
        self.c
            .start_container(ctx(), &req)
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("StartContainer {cid}"), e))
    }
    pub async fn wait(&self, cid: &str, eid: &str) -> Result<i32, String> {
        let mut req = WaitProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        self.c
            .wait_process(ctx(), &req)
            .await
            .map(|r| r.status)
            .map_err(|e| err(&format!("WaitProcess {cid}/{eid}"), e))
    }
    pub async fn remove(&self, cid: &str) -> Result<(), String> {
        let mut req = RemoveContainerRequest::new();
        req.container_id = cid.into();
        self.c
            .remove_container(ctx(), &req)
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("RemoveContainer {cid}"), e))
    }
    pub async fn exec(&self, cid: &str, eid: &str, args: &[&str]) -> Result<(), String> {
        let mut p = oci::Process::new();
        p.Args = args.iter().map(|a| a.to_string()).collect();
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/".into();
        p.User = Some(oci::User::new()).into();
        p.Capabilities = spec(Path::new("/"), cid, &[], "")
            .Process
            .take()
            .and_then(|p| p.Capabilities.into_option())
            .into();
        let mut req = ExecProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        req.process = Some(p).into();
        self.c
            .exec_process(ctx(), &req)
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("ExecProcess {cid}/{eid}"), e))
    }
    /// Reads stdout with ReadStdout(`len`) until the stream ends, `depth`
    /// reads in flight at a time: bytes and calls.
    pub async fn drain(&self, cid: &str, len: u32, depth: usize) -> (usize, usize) {
        let mut req = ReadStreamRequest::new();
        req.container_id = cid.into();
        req.exec_id = cid.into();
        req.len = len;
        let mut readers = Vec::new();
        for _ in 0..depth {
            let (c, req) = (self.c.clone(), req.clone());
            readers.push(tokio::spawn(async move {
                let (mut total, mut calls) = (0usize, 0usize);
                // Ours ends a stream with OUT_OF_RANGE, upstream's with
                // empty data.
                while let Ok(r) = c.read_stdout(ctx(), &req).await {
                    if r.data.is_empty() {
                        break;
                    }
                    total += r.data.len();
                    calls += 1;
                }
                (total, calls)
            }));
        }
        let (mut total, mut calls) = (0, 0);
        for r in readers {
            if let Ok((t, c)) = r.await {
                total += t;
                calls += c;
            }
        }
        (total, calls)
    }
}

pub fn run(agent: &Running, run: &mut Run) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let uri = agent.uri();
    let pid = agent.pid();
    rt.block_on(async {
        let client = ttrpc::asynchronous::Client::connect(&uri)
            .await
            .map_err(|e| err("connect", e))?;
        let b = Bench {
            c: AgentServiceClient::new(client),
            rootfs: Rootfs::new(),
            parent: Parent::new("c"),
        };
        let mut ids = Vec::new();
        let r = measure(&b, pid, run, &mut ids).await;
        // Whatever happened, nothing of ours stays in the agent.
        for cid in ids.iter().rev() {
            let _ = b.remove(cid).await;
        }
        r
    })
}

/// CPU time (user + system, every thread) a process has used, in ms.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) * 1e3 / hz
}

fn p50(v: &mut [Duration]) -> f64 {
    v.sort();
    ms(percentile(v, 50.0))
}

async fn measure(
    b: &Bench,
    agent_pid: u32,
    run: &mut Run,
    ids: &mut Vec<String>,
) -> Result<(), String> {
    let tag = std::process::id();
    let mut sb = CreateSandboxRequest::new();
    sb.hostname = "bench".into();
    sb.sandbox_id = format!("bench-{tag}");
    b.c.create_sandbox(ctx(), &sb)
        .await
        .map_err(|e| err("CreateSandbox", e))?;

    if wants("containers") {
        lifecycle(b, run, ids).await?;
    }
    if wants("stdout") {
        stdout(b, agent_pid, run, ids).await?;
    }
    if wants("containers") {
        rss(b, agent_pid, run, ids).await?;
    }
    Ok(())
}

async fn lifecycle(b: &Bench, run: &mut Run, ids: &mut Vec<String>) -> Result<(), String> {
    let tag = std::process::id();
    // The first container of the agent: nothing is warm yet.
    let cid = format!("bench-{tag}-first");
    let t = Instant::now();
    b.create(&cid, &["true"]).await?;
    ids.push(cid.clone());
    b.start(&cid).await?;
    b.wait(&cid, &cid).await?;
    run.insert("first", ms(t.elapsed()));
    b.remove(&cid).await?;
    ids.pop();

    // As in a pod, a long-lived container (the pause container) holds the
    // cgroup parent: the containers measured come and go beside it.
    let pause = format!("bench-{tag}-pause");
    b.create(&pause, &["sleep", "100000"]).await?;
    ids.push(pause.clone());
    b.start(&pause).await?;

    let mut cycle = Vec::new();
    let mut steps: [Vec<Duration>; 3] = Default::default();
    let mut removes = Vec::new();
    for i in 0..50 {
        let cid = format!("bench-{tag}-true-{i}");
        let t = Instant::now();
        b.create(&cid, &["true"]).await?;
        ids.push(cid.clone());
        let t1 = t.elapsed();
        b.start(&cid).await?;
        let t2 = t.elapsed();
        b.wait(&cid, &cid).await?;
        let d = t.elapsed();
        steps[0].push(t1);
        steps[1].push(t2 - t1);
        steps[2].push(d - t2);
        cycle.push(d);
        let t = Instant::now();
        b.remove(&cid).await?;
        removes.push(t.elapsed());
        ids.pop();
    }
    run.insert("cycle", p50(&mut cycle));
    run.insert("create", p50(&mut steps[0]));
    run.insert("start", p50(&mut steps[1]));
    run.insert("waitp", p50(&mut steps[2]));
    run.insert("remove", p50(&mut removes));

    // ExecProcess of `true` into a running container, then its wait.
    let host = format!("bench-{tag}-exec");
    b.create(&host, &["sleep", "100000"]).await?;
    ids.push(host.clone());
    b.start(&host).await?;
    let mut execs = Vec::new();
    for i in 0..50 {
        let eid = format!("e{i}");
        let t = Instant::now();
        b.exec(&host, &eid, &["true"]).await?;
        b.wait(&host, &eid).await?;
        execs.push(t.elapsed());
    }
    run.insert("exec", p50(&mut execs));
    b.remove(&host).await?;
    ids.pop();

    Ok(())
}

async fn stdout(
    b: &Bench,
    agent_pid: u32,
    run: &mut Run,
    ids: &mut Vec<String>,
) -> Result<(), String> {
    let tag = std::process::id();
    // stdout: 256 MiB of zeros, read as it is written.
    // (figure, its agent CPU figure, its client CPU figure, len, reads in
    // flight): one read at a time as the shims read; two at once to see
    // what the agent gives when the client's round trip is hidden.
    let kinds: [(&'static str, &'static str, &'static str, u32, usize); 3] = [
        ("out1m", "out1m_cpu", "out1m_client", 1 << 20, 1),
        ("out32k", "out32k_cpu", "out32k_client", 32 << 10, 1),
        ("out1m_x2", "out1m_x2_cpu", "out1m_x2_client", 1 << 20, 2),
    ];
    for (key, cpu_key, client_key, len, depth) in kinds {
        let cid = format!("bench-{tag}-dd-{key}");
        b.create(&cid, &["dd", "if=/dev/zero", "bs=1048576", "count=256"])
            .await?;
        ids.push(cid.clone());
        b.start(&cid).await?;
        let (agent0, client0) = (cpu_ms(agent_pid), cpu_ms(std::process::id()));
        let t = Instant::now();
        let (total, calls) = b.drain(&cid, len, depth).await;
        let secs = t.elapsed().as_secs_f64();
        run.insert(cpu_key, cpu_ms(agent_pid) - agent0);
        run.insert(client_key, cpu_ms(std::process::id()) - client0);
        b.wait(&cid, &cid).await?;
        b.remove(&cid).await?;
        ids.pop();
        if total != 256 << 20 {
            return Err(format!("{cid}: read {total} bytes of {}", 256 << 20));
        }
        run.insert(key, total as f64 / secs / 1048576.0);
        if key == "out1m" {
            run.insert("out1m_call", total as f64 / calls.max(1) as f64 / 1024.0);
        }
    }

    Ok(())
}

async fn rss(
    b: &Bench,
    agent_pid: u32,
    run: &mut Run,
    ids: &mut Vec<String>,
) -> Result<(), String> {
    let tag = std::process::id();
    // RSS with 20 containers running.
    for i in 0..20 {
        let cid = format!("bench-{tag}-rss-{i}");
        b.create(&cid, &["sleep", "100000"]).await?;
        ids.push(cid.clone());
        b.start(&cid).await?;
    }
    let rss = vm_rss_kib(agent_pid).ok_or("agent's VmRSS")?;
    run.insert("rss20", rss as f64 / 1024.0);
    Ok(())
}
