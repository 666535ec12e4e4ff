//! `make bench`: measures the agent and prints a table. Figures are printed,
//! never asserted.
//!
//! Usage: bench [--agent PATH] [--rounds N]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::*;
use protobuf::Message;
use protocols::health::CheckRequest;

mod containers;
mod policy;

pub struct Row {
    figure: String,
    value: String,
    baseline: &'static str,
    /// Whether the figure meets its goal, when it has one.
    met: Option<bool>,
}

/// A figure's goal, in the unit of the number passed to [`judge`].
#[derive(Clone, Copy)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

/// Marks the last row as meeting `goal` or missing it.
pub fn judge(rows: &mut [Row], measured: f64, goal: Goal) {
    if let Some(r) = rows.last_mut() {
        r.met = Some(match goal {
            Goal::AtMost(limit) => measured <= limit,
            Goal::AtLeast(limit) => measured >= limit,
        });
    }
}

fn main() {
    let mut agent_path = PathBuf::from("target/x86_64-unknown-linux-gnu/release/kata-agent");
    let mut rounds: usize = 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--agent" => agent_path = PathBuf::from(args.next().unwrap_or_default()),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            _ => {
                eprintln!("usage: bench [--agent PATH] [--rounds N]");
                std::process::exit(2);
            }
        }
    }
    if !agent_path.exists() {
        eprintln!(
            "{}: not found (run `make agent-static`)",
            agent_path.display()
        );
        std::process::exit(2);
    }

    let mut rows = Vec::new();
    binary_size(&agent_path, &mut rows);
    start_to_ready(&agent_path, rounds, &mut rows);

    let agent = Agent::start_with(&agent_path, "", &[]);
    idle_memory(&agent, &mut rows);
    check_latency(&agent, &mut rows);
    drop(agent);
    policy::run(&agent_path, &mut rows);

    if can_run_containers() {
        let agent = Agent::start_with(&agent_path, "", &[]);
        containers::run(&agent, &mut rows);
        drop(agent);
    }

    print_table(&rows);
}

pub fn push(
    rows: &mut Vec<Row>,
    figure: impl Into<String>,
    value: impl Into<String>,
    baseline: &'static str,
) {
    rows.push(Row {
        figure: figure.into(),
        value: value.into(),
        baseline,
        met: None,
    });
}

fn print_table(rows: &[Row]) {
    let w0 = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let w1 = rows.iter().map(|r| r.value.len()).max().unwrap_or(5).max(5);
    println!(
        "| {:w0$} | {:w1$} | upstream / goal | goal |",
        "figure", "ours"
    );
    println!("|{}|{}|---|---|", "-".repeat(w0 + 2), "-".repeat(w1 + 2));
    for r in rows {
        let met = match r.met {
            Some(true) => "met",
            Some(false) => "**MISSED**",
            None => "",
        };
        println!(
            "| {:w0$} | {:w1$} | {} | {met} |",
            r.figure, r.value, r.baseline
        );
    }
    let judged = rows.iter().filter(|r| r.met.is_some()).count();
    let missed: Vec<&str> = rows
        .iter()
        .filter(|r| r.met == Some(false))
        .map(|r| r.figure.trim())
        .collect();
    if missed.is_empty() {
        println!("\nall {judged} figures with a goal meet it");
    } else {
        println!(
            "\n{} of {judged} figures with a goal miss it: {}",
            missed.len(),
            missed.join("; ")
        );
    }
}

/// Whether an ELF file has a PT_INTERP header, i.e. is dynamically linked.
fn is_dynamic(path: &Path) -> Option<bool> {
    let data = std::fs::read(path).ok()?;
    if data.get(0..4)? != b"\x7fELF" || *data.get(4)? != 2 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes([*data.get(o)?, *data.get(o + 1)?]) as usize);
    let phoff = u64::from_le_bytes(data.get(0x20..0x28)?.try_into().ok()?) as usize;
    let phentsize = u16_at(0x36)?;
    let phnum = u16_at(0x38)?;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?);
        if p_type == 3 {
            return Some(true);
        }
    }
    Some(false)
}

fn binary_size(path: &Path, rows: &mut Vec<Row>) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let linkage = match is_dynamic(path) {
        Some(true) => "dynamic",
        Some(false) => "static",
        None => "unknown",
    };
    push(
        rows,
        format!("stripped binary ({linkage})"),
        format!("{:.2} MB", size as f64 / 1e6),
        "26.2 MB / <= 0.25x: 6.5 MB static",
    );
    judge(rows, size as f64 / 1e6, Goal::AtMost(6.55));
}

/// Time from spawn to the first answered Check, median over `rounds`.
fn start_to_ready(exe: &Path, rounds: usize, rows: &mut Vec<Row>) {
    let payload = CheckRequest::new().write_to_bytes().unwrap_or_default();
    let frame = request_frame(1, "grpc.Health", "Check", &payload);
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("tempdir: {e}");
                return;
            }
        };
        let sock = dir.path().join("a.sock");
        let t0 = Instant::now();
        let mut child = match Command::new(exe)
            .arg("--server-addr")
            .arg(format!("unix://{}", sock.display()))
            .arg("--cmdline")
            .arg("/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("spawn {}: {e}", exe.display());
                return;
            }
        };
        let deadline = t0 + Duration::from_secs(10);
        let mut answered = None;
        while Instant::now() < deadline {
            if let Ok(mut s) = UnixStream::connect(&sock) {
                let mut h = [0u8; 10];
                if s.write_all(&frame).is_ok() && s.read_exact(&mut h).is_ok() {
                    answered = Some(t0.elapsed());
                    break;
                }
            }
            std::hint::spin_loop();
        }
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
        if let Some(d) = answered {
            samples.push(d);
        }
    }
    samples.sort();
    push(
        rows,
        format!(
            "spawn to first Check answered (median of {})",
            samples.len()
        ),
        format!("{:.2} ms", percentile(&samples, 50.0).as_secs_f64() * 1e3),
        "4 to 7 ms / <= 2 ms",
    );
    judge(
        rows,
        percentile(&samples, 50.0).as_secs_f64() * 1e3,
        Goal::AtMost(2.0),
    );
}

fn idle_memory(agent: &Agent, rows: &mut Vec<Row>) {
    raw_check(&agent.socket);
    let pid = agent.pid();
    let kib = |f: &str| proc_status_field(pid, f).unwrap_or(0);
    push(
        rows,
        "idle VmRSS (anon + file)",
        format!(
            "{:.2} MiB ({:.2} + {:.2})",
            kib("VmRSS:") as f64 / 1024.0,
            kib("RssAnon:") as f64 / 1024.0,
            kib("RssFile:") as f64 / 1024.0
        ),
        "12.1 MB / <= 0.25x: 3.0 MB",
    );
    judge(
        rows,
        kib("VmRSS:") as f64 * 1024.0 / 1e6,
        Goal::AtMost(3.03),
    );
    push(rows, "idle threads", kib("Threads:").to_string(), "5");
}

fn check_latency(agent: &Agent, rows: &mut Vec<Row>) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
    // 200 sequential Checks on one connection, as in the baseline.
    let seq = rt.block_on(run_checks(uri.clone(), 1, 200));
    if let Some((total, _)) = &seq {
        push(
            rows,
            "200 sequential Checks, 1 connection",
            format!("{:.2} ms", total.as_secs_f64() * 1e3),
            "19.3 ms / <= 0.3x: 5.8 ms",
        );
        judge(rows, total.as_secs_f64() * 1e3, Goal::AtMost(5.79));
    }
    for conns in [1usize, 16] {
        let per = if conns == 1 { 5000 } else { 1000 };
        if let Some((total, mut lat)) = rt.block_on(run_checks(uri.clone(), conns, per)) {
            lat.sort();
            let n = lat.len();
            push(
                rows,
                format!("Check over {conns} conn: p50 / p99"),
                format!(
                    "{} / {} us",
                    percentile(&lat, 50.0).as_micros(),
                    percentile(&lat, 99.0).as_micros()
                ),
                "about 100 us a call",
            );
            push(
                rows,
                format!("Check over {conns} conn: throughput"),
                format!("{:.0} req/s", n as f64 / total.as_secs_f64()),
                "",
            );
        }
    }
}

async fn run_checks(uri: String, conns: usize, per: usize) -> Option<(Duration, Vec<Duration>)> {
    let mut clients = Vec::new();
    for _ in 0..conns {
        let c = ttrpc::asynchronous::Client::connect(&uri).await.ok()?;
        clients.push(protocols::health_ttrpc::HealthClient::new(c));
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for h in clients {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let ctx = ttrpc::context::with_timeout(10_000_000_000);
                if h.check(ctx, &CheckRequest::new()).await.is_err() {
                    return None;
                }
                lat.push(t.elapsed());
            }
            Some(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.ok()??);
    }
    Some((t0.elapsed(), all))
}
