//! Load: 64 connections for a minute (`LOAD_SECS`), 20 of them reading
//! the output of 20 containers that count (every number must arrive once,
//! in order), 44 sending Check, StatsContainer and exec round trips
//! (ExecProcess, WriteStdin, ReadStdout, WaitProcess). Asserted: no error,
//! no byte lost or out of order. Printed: Check's latency, request counts,
//! the agent's peak RSS.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::env::*;
use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::health::CheckRequest;
use protocols::health_ttrpc::HealthClient;
use protocols::oci;
use ttrpc::Code;

const STREAMS: usize = 20;
const CONNECTIONS: usize = 64;

#[derive(Default)]
struct Tally {
    checks: AtomicU64,
    stats: AtomicU64,
    execs: AtomicU64,
    reads: AtomicU64,
    bytes: AtomicU64,
    errors: Mutex<Vec<String>>,
    check_latency: Mutex<Vec<Duration>>,
}

impl Tally {
    fn error(&self, what: String) {
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        } else {
            e[19] = format!("... and more, last: {what}");
        }
    }
}

async fn connect(uri: &str) -> ttrpc::asynchronous::Client {
    ttrpc::asynchronous::Client::connect(uri).await.unwrap()
}

/// Reads container `cid`'s stdout to EOF, checking that it is the lines
/// 0, 1, 2, ... exactly; returns how many arrived.
async fn read_counting(c: AgentServiceClient, cid: String, tally: Arc<Tally>) -> u64 {
    let mut next = 0u64;
    let mut partial = Vec::new();
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = cid.clone();
        r.exec_id = cid.clone();
        r.len = 32 * 1024;
        match c.read_stdout(ctx(), &r).await {
            Ok(resp) => {
                tally.reads.fetch_add(1, Ordering::Relaxed);
                tally
                    .bytes
                    .fetch_add(resp.data.len() as u64, Ordering::Relaxed);
                partial.extend_from_slice(&resp.data);
                let end = partial
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                for line in partial[..end]
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                {
                    let got: u64 = std::str::from_utf8(line)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u64::MAX);
                    assert_eq!(
                        got,
                        next,
                        "container {cid}: line {next} is {:?}",
                        String::from_utf8_lossy(line)
                    );
                    next += 1;
                }
                partial.drain(..end);
            }
            Err(e) if code(&e) == Code::OUT_OF_RANGE => break,
            Err(e) => {
                tally.error(format!("ReadStdout {cid}: {e:?}"));
                break;
            }
        }
    }
    assert!(partial.is_empty(), "container {cid}: a partial last line");
    next
}

/// One exec round trip: `cat` gets a token on stdin and must give it back.
async fn exec_round_trip(c: &AgentServiceClient, cid: &str, eid: &str) -> Result<(), String> {
    let mut p = oci::Process::new();
    p.Args = vec!["cat".into()];
    p.Env = vec!["PATH=/bin".into()];
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    let mut req = ExecProcessRequest::new();
    req.container_id = cid.into();
    req.exec_id = eid.into();
    req.process = Some(p).into();
    let err = |what: &str, e: ttrpc::Error| format!("{what} {cid}/{eid}: {e:?}");
    c.exec_process(ctx(), &req)
        .await
        .map_err(|e| err("ExecProcess", e))?;
    let token = format!("token {eid}\n");
    for data in [token.as_bytes(), b""] {
        let mut w = WriteStreamRequest::new();
        w.container_id = cid.into();
        w.exec_id = eid.into();
        w.data = data.to_vec();
        c.write_stdin(ctx(), &w)
            .await
            .map_err(|e| err("WriteStdin", e))?;
    }
    let mut out = Vec::new();
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = cid.into();
        r.exec_id = eid.into();
        r.len = 4096;
        match c.read_stdout(ctx(), &r).await {
            Ok(d) => out.extend_from_slice(&d.data),
            Err(e) if code(&e) == Code::OUT_OF_RANGE => break,
            Err(e) => return Err(err("ReadStdout", e)),
        }
    }
    if out != token.as_bytes() {
        return Err(format!(
            "exec {cid}/{eid}: stdout {out:?}, wanted {token:?}"
        ));
    }
    let mut r = ReadStreamRequest::new();
    r.container_id = cid.into();
    r.exec_id = eid.into();
    match c.read_stderr(ctx(), &r).await {
        Err(e) if code(&e) == Code::OUT_OF_RANGE => {}
        other => return Err(format!("exec {cid}/{eid}: stderr {other:?}")),
    }
    let mut w = WaitProcessRequest::new();
    w.container_id = cid.into();
    w.exec_id = eid.into();
    let status = c
        .wait_process(ctx(), &w)
        .await
        .map_err(|e| err("WaitProcess", e))?
        .status;
    if status != 0 {
        return Err(format!("exec {cid}/{eid}: status {status}"));
    }
    Ok(())
}

/// Check, StatsContainer and, every fourth round, an exec round trip,
/// until `stop`.
async fn mixed(
    uri: String,
    n: usize,
    cids: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let conn = connect(&uri).await;
    let health = HealthClient::new(conn.clone());
    let agent = AgentServiceClient::new(conn);
    let mut lat = Vec::new();
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match health.check(ctx(), &CheckRequest::new()).await {
            Ok(_) => lat.push(t.elapsed()),
            Err(e) => tally.error(format!("Check: {e:?}")),
        }
        tally.checks.fetch_add(1, Ordering::Relaxed);
        let cid = &cids[(n + round) % cids.len()];
        let mut s = StatsContainerRequest::new();
        s.container_id = cid.clone();
        match agent.stats_container(ctx(), &s).await {
            Ok(r) if r.cgroup_stats.pids_stats.current >= 1 => {}
            Ok(r) => tally.error(format!("StatsContainer {cid}: {r:?}")),
            Err(e) => tally.error(format!("StatsContainer {cid}: {e:?}")),
        }
        tally.stats.fetch_add(1, Ordering::Relaxed);
        if round.is_multiple_of(4) {
            let eid = format!("x{n}-{round}");
            if let Err(e) = exec_round_trip(&agent, cid, &eid).await {
                tally.error(e);
            }
            tally.execs.fetch_add(1, Ordering::Relaxed);
        }
        round += 1;
        // Paced: the point is many clients at once, not the most requests
        // two shared cores can push through.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tally.check_latency.lock().unwrap().extend(lat);
}

#[test]
fn sixty_four_connections_and_twenty_streams_for_a_minute() {
    let Some(mut env) = Env::new() else { return };
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let pid = env.agent.pid();
    let rss_idle = vm_rss_kib(pid).unwrap_or(0);
    // One rootfs each: the stop file is a container's own, and containers
    // sharing a rootfs race for its /dev.
    let roots: Vec<Rootfs> = (0..STREAMS).map(|_| Rootfs::new()).collect();
    let mut cids = Vec::new();
    for root in &roots {
        let cid = unique("stream");
        // Counts in bursts of 500 lines every 50 ms until /stop appears.
        let script =
            "i=0; while [ ! -e /stop ]; do seq $i $((i+499)); i=$((i+500)); sleep 0.05; done";
        env.create(&cid, env.spec(root.path(), &cid, &["sh", "-c", script]))
            .unwrap();
        env.start(&cid).unwrap();
        cids.push(cid);
    }
    let cids = Arc::new(cids);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let uri = env.agent.uri();
    // The agent's peak resident set over the run (VmHWM is the kernel's
    // own high-water mark) and its most threads.
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = sampler_stop.clone();
        std::thread::spawn(move || {
            let mut threads = 0;
            while !stop.load(Ordering::Relaxed) {
                threads = threads.max(proc_status_field(pid, "Threads:").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            threads
        })
    };
    let started = Instant::now();
    let (lines, lost_or_errors) = env.rt.block_on(async {
        let mut readers = Vec::new();
        for cid in cids.iter() {
            let c = AgentServiceClient::new(connect(&uri).await);
            readers.push(tokio::spawn(read_counting(c, cid.clone(), tally.clone())));
        }
        let mut others = Vec::new();
        for n in 0..CONNECTIONS - STREAMS {
            others.push(tokio::spawn(mixed(
                uri.clone(),
                n,
                cids.clone(),
                stop.clone(),
                tally.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for o in others {
            o.await.unwrap();
        }
        for root in &roots {
            std::fs::write(root.path().join("stop"), "").unwrap();
        }
        let mut lines = Vec::new();
        for r in readers {
            lines.push(r.await.unwrap());
        }
        (lines, tally.errors.lock().unwrap().clone())
    });
    let elapsed = started.elapsed();
    sampler_stop.store(true, Ordering::Relaxed);
    let max_threads = sampler.join().unwrap();
    let hwm = proc_status_field(pid, "VmHWM:").unwrap_or(0);
    let rss_after = vm_rss_kib(pid).unwrap_or(0);
    for (cid, n) in cids.iter().zip(&lines) {
        // Each stream ended on a whole burst: nothing lost at the end.
        assert_eq!(env.wait(cid, cid).unwrap(), 0, "{cid}");
        assert!(
            *n > 0 && n.is_multiple_of(500),
            "container {cid}: {n} lines"
        );
    }
    let mut lat = tally.check_latency.lock().unwrap().clone();
    lat.sort();
    eprintln!(
        "load: {CONNECTIONS} connections for {:.1} s: {} Checks, {} StatsContainer, {} exec round trips, \
         {} ReadStdout of the streams ({} MiB, {} lines, all in order)",
        elapsed.as_secs_f64(),
        tally.checks.load(Ordering::Relaxed),
        tally.stats.load(Ordering::Relaxed),
        tally.execs.load(Ordering::Relaxed),
        tally.reads.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed) >> 20,
        lines.iter().sum::<u64>(),
    );
    eprintln!(
        "load: Check latency p50 {:?}, p99 {:?}, max {:?}; agent VmRSS idle {rss_idle} KiB, \
         peak (VmHWM) {hwm} KiB, after {rss_after} KiB; at most {max_threads} threads",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or_default(),
    );
    assert!(
        lost_or_errors.is_empty(),
        "{} errors under load: {lost_or_errors:#?}",
        lost_or_errors.len()
    );
    for cid in cids.iter() {
        env.remove(cid).unwrap();
        env.assert_gone(cid);
    }
}
