//! `make bench`: measures our agent and, given `--upstream PATH`, any other
//! kata-agent binary (upstream's) with the same ttrpc-rust client, in the
//! same run, interleaved A B B A, and prints both side by side with the
//! ratio and whether it meets its goal. Figures are printed, never
//! asserted.
//!
//! Usage: bench [--agent PATH] [--upstream PATH] [--rounds N] [--spawns N] [--only LIST]
//!
//! `--rounds N`: N A B B A rounds (default 1: each agent measured twice).
//! `--only LIST`: only these parts, comma-separated, of `spawn`, `idle`
//! (idle memory and Checks), `containers` (all container figures but
//! stdout), `stdout`, `pod`, `policy` (ours only: a check's cost); for
//! profiling one of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration_tests::*;
use protocols::health::CheckRequest;

mod containers;
mod pod;
mod policy;
mod target;

use target::{Kind, Running, Target};

/// A figure's goal, as the ratio ours / upstream.
#[derive(Clone, Copy)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(g) => ratio <= g,
            Goal::AtLeast(g) => ratio >= g,
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtMost(g) => format!("<= {g}"),
            Goal::AtLeast(g) => format!(">= {g}"),
        }
    }
}

/// What one measured figure is: its key in a run, its label, its unit and
/// its goal.
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub goal: Option<Goal>,
}

const fn fig(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    goal: Option<Goal>,
) -> Figure {
    Figure {
        key,
        label,
        unit,
        goal,
    }
}

/// Every figure, in the table's order.
pub const FIGURES: &[Figure] = &[
    fig("size", "stripped binary", "MB", Some(Goal::AtMost(0.25))),
    fig(
        "spawn",
        "spawn to first Check (exec to answer, median)",
        "ms",
        None,
    ),
    fig("idle_rss", "idle VmRSS", "MiB", Some(Goal::AtMost(0.25))),
    fig(
        "idle_anon",
        "  of which anonymous (heap, stacks, data)",
        "MiB",
        None,
    ),
    fig(
        "idle_file",
        "  of which file pages (the binary, its libraries)",
        "MiB",
        None,
    ),
    fig("idle_threads", "idle threads", "", None),
    fig(
        "checks200",
        "200 sequential Checks, one connection",
        "ms",
        Some(Goal::AtMost(0.3)),
    ),
    fig("check_cpu", "  the agent's CPU time a Check", "us", None),
    fig(
        "check_client",
        "  the client's CPU time a Check",
        "us",
        None,
    ),
    fig(
        "first",
        "first container of a fresh agent: create+start+wait `true`",
        "ms",
        None,
    ),
    fig(
        "cycle",
        "create+start+wait `true`, p50 of 50",
        "ms",
        Some(Goal::AtMost(0.1)),
    ),
    fig("create", "  of which CreateContainer p50", "ms", None),
    fig("start", "  of which StartContainer p50", "ms", None),
    fig("waitp", "  of which WaitProcess p50", "ms", None),
    fig(
        "remove",
        "RemoveContainer p50",
        "ms",
        Some(Goal::AtMost(0.5)),
    ),
    fig(
        "exec",
        "ExecProcess `true` + WaitProcess, p50 of 50",
        "ms",
        None,
    ),
    fig(
        "rss20",
        "VmRSS with 20 containers",
        "MiB",
        Some(Goal::AtMost(0.25)),
    ),
    fig(
        "out1m",
        "stdout 256 MiB, ReadStdout(1 MiB)",
        "MiB/s",
        Some(Goal::AtLeast(2.0)),
    ),
    fig(
        "out1m_call",
        "  bytes a ReadStdout(1 MiB) answered, mean",
        "KiB",
        None,
    ),
    fig("out1m_cpu", "  the agent's CPU time for it", "ms", None),
    fig("out1m_client", "  the client's CPU time for it", "ms", None),
    fig(
        "out32k",
        "stdout 256 MiB, ReadStdout(32 KiB)",
        "MiB/s",
        Some(Goal::AtLeast(2.0)),
    ),
    fig("out32k_cpu", "  the agent's CPU time for it", "ms", None),
    fig(
        "out32k_client",
        "  the client's CPU time for it",
        "ms",
        None,
    ),
    fig(
        "out1m_x2",
        "stdout 256 MiB, ReadStdout(1 MiB), two reads in flight",
        "MiB/s",
        None,
    ),
    fig("out1m_x2_cpu", "  the agent's CPU time for it", "ms", None),
    fig(
        "out1m_x2_client",
        "  the client's CPU time for it",
        "ms",
        None,
    ),
    fig(
        "policy",
        "a request's policy check, upstream's allow-all (ExecProcess p50, with - without)",
        "us",
        None,
    ),
    fig(
        "pod",
        "Go shim's pod start: GetGuestDetails to the app's first output, median of 3",
        "ms",
        None,
    ),
];

/// The parts `--only` asked for; unset: all.
static ONLY: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Whether part `name` is to be measured.
pub fn wants(name: &str) -> bool {
    ONLY.get().is_none_or(|l| l.iter().any(|p| p == name))
}

/// One agent's figures in one run.
pub type Run = HashMap<&'static str, f64>;

fn usage() -> ! {
    eprintln!(
        "usage: bench [--agent PATH] [--upstream PATH] [--rounds N] [--spawns N] [--only LIST]"
    );
    std::process::exit(2);
}

fn main() {
    let mut ours = PathBuf::from("target/x86_64-unknown-linux-gnu/release/kata-agent");
    let mut upstream: Option<PathBuf> = None;
    let mut rounds: usize = 1;
    let mut spawns: usize = 10;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--agent" => ours = PathBuf::from(value()),
            "--upstream" => upstream = Some(PathBuf::from(value())),
            "--rounds" => rounds = value().parse().unwrap_or_else(|_| usage()),
            "--spawns" => spawns = value().parse().unwrap_or_else(|_| usage()),
            "--only" => {
                let parts: Vec<String> = value().split(',').map(str::to_string).collect();
                let _ = ONLY.set(parts);
            }
            _ => usage(),
        }
    }
    for p in std::iter::once(&ours).chain(upstream.iter()) {
        if !p.exists() {
            eprintln!(
                "{}: not found (our agent: `make agent-static`)",
                p.display()
            );
            std::process::exit(2);
        }
    }
    if !is_root() {
        eprintln!("bench: needs root (the agents run in namespaces of their own)");
        std::process::exit(2);
    }
    // The agents run with `/` as their working directory.
    let absolute = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let a = Target {
        kind: Kind::Ours,
        exe: absolute(ours),
    };
    let b = upstream.map(|exe| Target {
        kind: Kind::Upstream,
        exe: absolute(exe),
    });
    let containers = can_run_containers();

    // A B B A: each round measures ours, upstream, upstream, ours, so a
    // drift of the machine's load weighs on both alike.
    let mut runs: Vec<(Kind, Run)> = Vec::new();
    let order: Vec<&Target> = match &b {
        Some(b) => (0..rounds).flat_map(|_| [&a, b, b, &a]).collect(),
        None => (0..rounds.max(1) * 2).map(|_| &a).collect(),
    };
    let started = Instant::now();
    for (i, t) in order.iter().enumerate() {
        eprintln!(
            "bench: run {}/{} ({}), {:.0} s so far",
            i + 1,
            order.len(),
            t.name(),
            started.elapsed().as_secs_f64()
        );
        runs.push((t.kind, measure(t, spawns, containers)));
    }
    print_table(&a, b.as_ref(), &runs);
}

/// Every figure of `t` in one run; a section that fails says why on
/// stderr and leaves its figures out.
fn measure(t: &Target, spawns: usize, containers: bool) -> Run {
    let mut run = Run::new();
    if let Ok(m) = std::fs::metadata(&t.exe) {
        run.insert("size", m.len() as f64 / 1e6);
    }
    match target::spawn_to_first_check(t, if wants("spawn") { spawns } else { 0 }) {
        Ok(mut s) if !s.is_empty() => {
            s.sort();
            run.insert("spawn", ms(percentile(&s, 50.0)));
        }
        Ok(_) => {}
        Err(e) => eprintln!("{}: spawn to first Check: {e}", t.name()),
    }
    let main_agent = wants("idle") || wants("containers") || wants("stdout");
    let agent = if main_agent {
        Some(Running::start(t))
    } else {
        None
    };
    match agent {
        None => {}
        Some(Ok(agent)) => {
            let pid = agent.pid();
            // Idle: started, one Check answered, nothing else.
            let kib = |f: &str| proc_status_field(pid, f).unwrap_or(0) as f64;
            if wants("idle") {
                run.insert("idle_rss", kib("VmRSS:") / 1024.0);
                run.insert("idle_anon", kib("RssAnon:") / 1024.0);
                run.insert("idle_file", kib("RssFile:") / 1024.0);
                run.insert("idle_threads", kib("Threads:"));
                checks(&agent.uri(), pid, &mut run);
            }
            if containers && (wants("containers") || wants("stdout")) {
                if let Err(e) = containers::run(&agent, &mut run) {
                    eprintln!("{}: containers: {e}\n{}", t.name(), agent.log_tail());
                }
            }
        }
        Some(Err(e)) => eprintln!("{}: {e}", t.name()),
    }
    // Upstream's release build has no policy engine: ours only.
    if t.kind == Kind::Ours && wants("policy") {
        if let Some(us) = policy::run(&t.exe) {
            run.insert("policy", us);
        }
    }
    if containers && wants("pod") {
        match pod::run(t, 3) {
            Ok(mut s) => {
                s.sort();
                run.insert("pod", ms(percentile(&s, 50.0)));
            }
            Err(e) => eprintln!("{}: pod start: {e}", t.name()),
        }
    }
    run
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// 200 sequential Checks on one connection, the median of 5 batches.
/// 200 sequential Checks on one connection, the median of 5 batches; then
/// the agent's and the client's CPU time per Check over 5,000 more.
fn checks(uri: &str, pid: u32, run: &mut Run) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let r: Option<()> = rt.block_on(async {
        let c = ttrpc::asynchronous::Client::connect(uri).await.ok()?;
        let h = protocols::health_ttrpc::HealthClient::new(c);
        let mut batches = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..200 {
                let ctx = ttrpc::context::with_timeout(10_000_000_000);
                h.check(ctx, &CheckRequest::new()).await.ok()?;
            }
            batches.push(t.elapsed());
        }
        batches.sort();
        run.insert("checks200", ms(percentile(&batches, 50.0)));
        let (a0, c0) = (
            containers::cpu_ms(pid),
            containers::cpu_ms(std::process::id()),
        );
        for _ in 0..5000 {
            let ctx = ttrpc::context::with_timeout(10_000_000_000);
            h.check(ctx, &CheckRequest::new()).await.ok()?;
        }
        // ms over 5,000 calls: x 0.2 gives us a call.
        run.insert("check_cpu", (containers::cpu_ms(pid) - a0) * 0.2);
        run.insert(
            "check_client",
            (containers::cpu_ms(std::process::id()) - c0) * 0.2,
        );
        Some(())
    });
    if r.is_none() {
        eprintln!("Checks failed");
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// "median (min-max) unit" of one agent's runs.
fn cell(values: &[f64], unit: &str) -> String {
    let mut v = values.to_vec();
    let Some(m) = median(&mut v) else {
        return "-".into();
    };
    let (lo, hi) = (v[0], v[v.len() - 1]);
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    if lo == hi {
        format!("{}{unit}", num(m))
    } else {
        format!("{} ({}-{}){unit}", num(m), num(lo), num(hi))
    }
}

fn values(runs: &[(Kind, Run)], kind: Kind, key: &str) -> Vec<f64> {
    runs.iter()
        .filter(|(k, _)| *k == kind)
        .filter_map(|(_, r)| r.get(key).copied())
        .collect()
}

fn print_table(a: &Target, b: Option<&Target>, runs: &[(Kind, Run)]) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    println!(
        "agents: ours {}{}; {} cores, load {}; host {}",
        a.exe.display(),
        b.map(|b| format!(", upstream {}", b.exe.display()))
            .unwrap_or_else(|| ", no upstream (--upstream PATH)".into()),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        host.trim()
    );
    println!("medians of each agent's runs, (min-max) over runs; ratio = ours / upstream, median (range over A B B A pairs)\n");
    let mut lines = vec![[
        "figure".to_string(),
        "upstream".into(),
        "ours".into(),
        "ratio".into(),
        "goal".into(),
        "".into(),
    ]];
    let mut judged = 0;
    let mut missed = Vec::new();
    for f in FIGURES {
        let ov = values(runs, Kind::Ours, f.key);
        let uv = values(runs, Kind::Upstream, f.key);
        if ov.is_empty() && uv.is_empty() {
            continue;
        }
        let ratio = {
            let (mut o, mut u) = (ov.clone(), uv.clone());
            match (median(&mut o), median(&mut u)) {
                (Some(o), Some(u)) if u > 0.0 => Some(o / u),
                _ => None,
            }
        };
        // Pairs in A B B A order: the i-th run of ours with upstream's i-th.
        let pairs: Vec<f64> = ov
            .iter()
            .zip(uv.iter())
            .filter(|(_, u)| **u > 0.0)
            .map(|(o, u)| o / u)
            .collect();
        let ratio_text = match ratio {
            Some(r) => {
                let lo = pairs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = pairs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if pairs.len() > 1 && hi > lo {
                    format!("{r:.2} ({lo:.2}-{hi:.2})")
                } else {
                    format!("{r:.2}")
                }
            }
            None => "-".into(),
        };
        let (goal, met) = match (f.goal, ratio) {
            (Some(g), Some(r)) => {
                judged += 1;
                if g.met(r) {
                    (g.text(), "met".to_string())
                } else {
                    missed.push(f.label.trim());
                    (g.text(), "**MISSED**".to_string())
                }
            }
            (Some(g), None) => (g.text(), "no upstream".into()),
            (None, _) => (String::new(), String::new()),
        };
        lines.push([
            f.label.to_string(),
            cell(&uv, f.unit),
            cell(&ov, f.unit),
            ratio_text,
            goal,
            met,
        ]);
    }
    let mut w = [0usize; 6];
    for l in &lines {
        for (i, c) in l.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    for (n, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = w.iter().map(|&x| "-".repeat(x)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
    if b.is_some() {
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
}
