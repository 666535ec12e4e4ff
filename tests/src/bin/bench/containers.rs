//! Container figures: create-start-wait of `true`, exec, remove, stdout
//! throughput and the agent's RSS with 20 containers running.

use std::time::{Duration, Instant};

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::oci;

use super::{judge, push, Goal, Row};

const CGROUP_PARENT: &str = "guest-agent-bench";

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(120_000_000_000)
}

fn spec(rootfs: &std::path::Path, cid: &str, args: &[&str]) -> oci::Spec {
    busybox_spec(&rootfs.display().to_string(), cid, args, CGROUP_PARENT)
}

struct Bench {
    c: AgentServiceClient,
    rootfs: Rootfs,
}

impl Bench {
    async fn create(&self, cid: &str, args: &[&str]) -> ttrpc::Result<()> {
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.into();
        req.exec_id = cid.into();
        req.OCI = Some(spec(self.rootfs.path(), cid, args)).into();
        self.c.create_container(ctx(), &req).await.map(|_| ())
    }
    async fn start(&self, cid: &str) -> ttrpc::Result<()> {
        let mut req = StartContainerRequest::new();
        req.container_id = cid.into();
        self.c.start_container(ctx(), &req).await.map(|_| ())
    }
    async fn wait(&self, cid: &str, eid: &str) -> ttrpc::Result<i32> {
        let mut req = WaitProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        self.c.wait_process(ctx(), &req).await.map(|r| r.status)
    }
    async fn remove(&self, cid: &str) -> ttrpc::Result<()> {
        let mut req = RemoveContainerRequest::new();
        req.container_id = cid.into();
        self.c.remove_container(ctx(), &req).await.map(|_| ())
    }
    async fn exec(&self, cid: &str, eid: &str, args: &[&str]) -> ttrpc::Result<()> {
        let mut p = oci::Process::new();
        p.Args = args.iter().map(|a| a.to_string()).collect();
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/".into();
        let mut req = ExecProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        req.process = Some(p).into();
        self.c.exec_process(ctx(), &req).await.map(|_| ())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub fn run(agent: &Agent, rows: &mut Vec<Row>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    let uri = agent.uri();
    let pid = agent.pid();
    if let Err(e) = rt.block_on(measure(&uri, pid, rows)) {
        eprintln!("container benchmark failed: {e:?}");
    }
}

async fn measure(uri: &str, agent_pid: u32, rows: &mut Vec<Row>) -> ttrpc::Result<()> {
    let client = ttrpc::asynchronous::Client::connect(uri).await?;
    let b = Bench {
        c: AgentServiceClient::new(client),
        rootfs: Rootfs::new(),
    };
    let tag = std::process::id();
    // As in a pod, a long-lived container (the pause container) holds the
    // cgroup parent: the containers measured come and go beside it, and
    // the parent, which the agent removes with its last child, stays.
    let pause = format!("bench-{tag}-pause");
    b.create(&pause, &["sleep", "100000"]).await?;
    b.start(&pause).await?;

    // create -> start -> wait of `true`, then remove (timed separately).
    let mut cycle = Vec::new();
    let mut steps: [Vec<Duration>; 3] = Default::default();
    let mut removes = Vec::new();
    let mut first = Duration::ZERO;
    for i in 0..51 {
        let cid = format!("bench-{tag}-true-{i}");
        let t = Instant::now();
        b.create(&cid, &["true"]).await?;
        let t1 = t.elapsed();
        b.start(&cid).await?;
        let t2 = t.elapsed();
        b.wait(&cid, &cid).await?;
        let d = t.elapsed();
        if i > 0 {
            steps[0].push(t1);
            steps[1].push(t2 - t1);
            steps[2].push(d - t2);
        }
        if i == 0 {
            first = d;
        } else {
            cycle.push(d);
        }
        let t = Instant::now();
        b.remove(&cid).await?;
        removes.push(t.elapsed());
    }
    cycle.sort();
    removes.sort();
    push(
        rows,
        "create+start+wait `true` p50 / p99 (50)",
        format!(
            "{} / {} ms",
            ms(percentile(&cycle, 50.0)),
            ms(percentile(&cycle, 99.0))
        ),
        "11.9 ms / <= 0.1x: 1.2 ms",
    );
    judge(
        rows,
        percentile(&cycle, 50.0).as_secs_f64() * 1e3,
        Goal::AtMost(1.19),
    );
    for s in steps.iter_mut() {
        s.sort();
    }
    push(
        rows,
        "  of which create / start / wait p50",
        format!(
            "{} / {} / {} ms",
            ms(percentile(&steps[0], 50.0)),
            ms(percentile(&steps[1], 50.0)),
            ms(percentile(&steps[2], 50.0))
        ),
        "",
    );
    push(
        rows,
        "first container of a fresh agent",
        format!("{} ms", ms(first)),
        "about 31 ms",
    );
    push(
        rows,
        "RemoveContainer p50",
        format!("{} ms", ms(percentile(&removes, 50.0))),
        "1.05 ms / <= 0.5x: 0.53 ms",
    );
    judge(
        rows,
        percentile(&removes, 50.0).as_secs_f64() * 1e3,
        Goal::AtMost(0.525),
    );

    // ExecProcess of `true` into a running container.
    let host = format!("bench-{tag}-exec");
    b.create(&host, &["sleep", "100000"]).await?;
    b.start(&host).await?;
    let mut execs = Vec::new();
    let mut exec_waits = Vec::new();
    for i in 0..50 {
        let eid = format!("e{i}");
        let t = Instant::now();
        b.exec(&host, &eid, &["true"]).await?;
        execs.push(t.elapsed());
        b.wait(&host, &eid).await?;
        exec_waits.push(t.elapsed());
    }
    execs.sort();
    exec_waits.sort();
    push(
        rows,
        "ExecProcess `true` p50 (exec+wait p50)",
        format!(
            "{} ms ({} ms)",
            ms(percentile(&execs, 50.0)),
            ms(percentile(&exec_waits, 50.0))
        ),
        "",
    );
    b.remove(&host).await?;

    // stdout throughput: 1 GiB read with ReadStdout(len = 1 MiB).
    let cid = format!("bench-{tag}-dd");
    b.create(&cid, &["dd", "if=/dev/zero", "bs=1048576", "count=1024"])
        .await?;
    b.start(&cid).await?;
    let t = Instant::now();
    let mut total = 0usize;
    loop {
        let mut req = ReadStreamRequest::new();
        req.container_id = cid.clone();
        req.exec_id = cid.clone();
        req.len = 1 << 20;
        match b.c.read_stdout(ctx(), &req).await {
            Ok(r) => total += r.data.len(),
            Err(_) => break,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    b.wait(&cid, &cid).await?;
    b.remove(&cid).await?;
    push(
        rows,
        "stdout throughput (1 GiB, len = 1 MiB)",
        format!(
            "{:.0} MiB/s ({} bytes)",
            total as f64 / secs / 1048576.0,
            total
        ),
        "246-316 MiB/s / >= 2x: 632 MiB/s",
    );
    judge(rows, total as f64 / secs / 1048576.0, Goal::AtLeast(632.0));

    // RSS with 20 containers running.
    let mut ids = Vec::new();
    for i in 0..20 {
        let cid = format!("bench-{tag}-rss-{i}");
        b.create(&cid, &["sleep", "100000"]).await?;
        b.start(&cid).await?;
        ids.push(cid);
    }
    let rss = vm_rss_kib(agent_pid).unwrap_or(0);
    let anon = proc_status_field(agent_pid, "RssAnon:").unwrap_or(0);
    let file = proc_status_field(agent_pid, "RssFile:").unwrap_or(0);
    let threads = proc_status_field(agent_pid, "Threads:").unwrap_or(0);
    push(
        rows,
        "VmRSS with 20 containers (anon + file, threads)",
        format!(
            "{:.2} MiB ({:.2} + {:.2}, {threads})",
            rss as f64 / 1024.0,
            anon as f64 / 1024.0,
            file as f64 / 1024.0
        ),
        "18.4 MB / <= 0.25x: 4.6 MB",
    );
    judge(rows, rss as f64 * 1024.0 / 1e6, Goal::AtMost(4.6));
    for cid in ids {
        b.remove(&cid).await?;
    }
    b.remove(&pause).await?;
    Ok(())
}
