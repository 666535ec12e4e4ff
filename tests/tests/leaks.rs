//! Leaks: 1,000 container lifecycles (`LEAK_CYCLES`) and 5,000 exec
//! probes (`LEAK_EXEC_CYCLES`), then the agent's fds, threads, children,
//! mounts, cgroups and bundles are back where they started, and its RSS
//! grew by at most [`RSS_BOUND_KIB`].

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::env::*;
use integration_tests::*;

/// How much the agent's VmRSS may grow over a run: allocator slack and
/// lazily touched pages of the binary, not a per-cycle cost (a leak of
/// 1 KiB a cycle alone would be 1,000 or 5,000 KiB).
const RSS_BOUND_KIB: u64 = 768;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footprint {
    fds: usize,
    threads: u64,
    children: usize,
    mounts: usize,
    cgroups: usize,
    bundles: usize,
}

impl Footprint {
    fn of(env: &Env) -> Footprint {
        let pid = env.agent.pid();
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        // Every directory below this test's own cgroup parent, in every
        // hierarchy.
        let cgroups = env.cgroups.dirs().iter().map(|d| count_dirs(d)).sum();
        let bundles = std::fs::read_dir(env.agent.path("/run/kata-containers"))
            .map(|d| d.count())
            .unwrap_or(0);
        Footprint {
            fds: fd_count(pid),
            threads: proc_status_field(pid, "Threads:").unwrap_or(0),
            children: children_of(pid).len(),
            mounts,
            cgroups,
            bundles,
        }
    }

    fn within(&self, base: &Footprint) -> bool {
        self.fds <= base.fds
            && self.threads <= base.threads
            && self.children <= base.children
            && self.mounts <= base.mounts
            && self.cgroups <= base.cgroups
            && self.bundles <= base.bundles
    }
}

fn count_dirs(d: &Path) -> usize {
    std::fs::read_dir(d)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| 1 + count_dirs(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// The footprint once idle blocking threads have retired (they do after
/// 2 s idle), or what it is after a bounded wait.
fn settled(env: &Env, want: &Footprint) -> Footprint {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = Footprint::of(env);
        if now.within(want) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cycles(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn idle_baseline(env: &Env) -> Footprint {
    let mut want = Footprint::of(env);
    want.threads = 1;
    let base = settled(env, &want);
    assert_eq!(base.threads, 1, "an idle agent holds one thread: {base:?}");
    base
}

#[test]
fn a_thousand_container_lifecycles_leave_nothing() {
    let Some(mut env) = Env::new() else { return };
    let n = cycles("LEAK_CYCLES", 1000);
    let pid = env.agent.pid();
    // A container holding the cgroup parent, as the pod's pause container
    // does; and one warm cycle so lazily made things are in the baseline.
    let holder = unique("holder");
    env.run(&holder, &["sleep", "100000"]);
    let warm = unique("warm");
    env.run(&warm, &["true"]);
    env.wait(&warm, &warm).unwrap();
    env.remove(&warm).unwrap();
    let base = idle_baseline(&env);
    let rss_before = vm_rss_kib(pid).unwrap_or(0);
    let start = Instant::now();
    let mut peak = rss_before;
    for i in 0..n {
        let cid = unique("cycle");
        env.run(&cid, &["sh", "-c", "echo x"]);
        assert_eq!(env.read_all(&cid, &cid, false, 16), b"x\n", "cycle {i}");
        assert_eq!(env.wait(&cid, &cid).unwrap(), 0, "cycle {i}");
        env.remove(&cid).unwrap();
        if i.is_multiple_of(100) {
            peak = peak.max(vm_rss_kib(pid).unwrap_or(0));
        }
    }
    let took = start.elapsed();
    let after = settled(&env, &base);
    let rss_after = vm_rss_kib(pid).unwrap_or(0);
    eprintln!(
        "{n} create/start/wait/remove cycles in {:.1} s ({:.1} ms each): {base:?} -> {after:?}; \
         VmRSS {rss_before} -> {rss_after} KiB (peak sampled {peak} KiB)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / n as f64
    );
    assert!(
        after.within(&base),
        "footprint before {base:?} and after {after:?} {n} cycles"
    );
    assert!(
        rss_after <= rss_before + RSS_BOUND_KIB,
        "VmRSS grew from {rss_before} to {rss_after} KiB over {n} cycles"
    );
    env.remove(&holder).unwrap();
    env.assert_gone(&holder);
}

#[test]
fn five_thousand_exec_probes_leave_nothing() {
    let Some(mut env) = Env::new() else { return };
    let n = cycles("LEAK_EXEC_CYCLES", 5000);
    let pid = env.agent.pid();
    let cid = unique("probed");
    env.run(&cid, &["sleep", "100000"]);
    let probe = |eid: &str| {
        env.exec(&cid, eid, &["echo", "ok"]).unwrap();
        assert_eq!(env.read_all(&cid, eid, false, 32 * 1024), b"ok\n", "{eid}");
        assert_eq!(env.read_all(&cid, eid, true, 32 * 1024), b"", "{eid}");
        assert_eq!(env.wait(&cid, eid).unwrap(), 0, "{eid}");
    };
    probe("warm");
    let base = idle_baseline(&env);
    let rss_before = vm_rss_kib(pid).unwrap_or(0);
    let start = Instant::now();
    for i in 0..n {
        probe(&format!("probe-{i}"));
    }
    let took = start.elapsed();
    let after = settled(&env, &base);
    let rss_after = vm_rss_kib(pid).unwrap_or(0);
    eprintln!(
        "{n} exec probes in {:.1} s ({:.2} ms each): {base:?} -> {after:?}; VmRSS {rss_before} -> {rss_after} KiB",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / n as f64
    );
    assert!(
        after.within(&base),
        "footprint before {base:?} and after {after:?} {n} probes"
    );
    assert!(
        rss_after <= rss_before + RSS_BOUND_KIB,
        "VmRSS grew from {rss_before} to {rss_after} KiB over {n} probes"
    );
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}
