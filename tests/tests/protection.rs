//! Self-protection: the agent makes itself the OOM killer's last choice
//! (`oom_score_adj` -997, as Kata's image sets its agent) without passing
//! that on to containers, and keeps answering Check while one container
//! runs a fork bomb held by its pids cgroup and another a memory hog held
//! by its memory cgroup (`PROTECT_SECS`). Check's latency is printed, idle
//! and under the attack; only that every Check is answered is asserted.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use integration_tests::env::*;
use integration_tests::*;
use protocols::agent::*;
use protocols::health::CheckRequest;
use protocols::health_ttrpc::HealthClient;
use protocols::oci;

fn oom_score_adj(pid: u32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Whether this process has CAP_SYS_RESOURCE (24), which lowering an
/// `oom_score_adj` needs. Some hosts' root lacks it (a sandboxed machine);
/// a guest's PID 1 has it.
fn has_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

#[test]
fn the_agent_protects_itself_and_not_its_containers() {
    let Some(mut env) = Env::new() else { return };
    if has_sys_resource() {
        assert_eq!(oom_score_adj(env.agent.pid()), -997);
    } else {
        // Refused by the kernel here: the agent says so and goes on.
        let wanted = "set oom_score_adj -997: Permission denied";
        let deadline = Instant::now() + Duration::from_secs(10);
        while !env.agent.log_text().contains(wanted) {
            assert!(
                Instant::now() < deadline,
                "no warning: {}",
                env.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "this host's root lacks CAP_SYS_RESOURCE: the agent could not lower its oom_score_adj \
             (it stays {}) and said so",
            oom_score_adj(env.agent.pid())
        );
    }
    let cid = unique("score");
    env.run(
        &cid,
        &[
            "sh",
            "-c",
            "cat /proc/self/oom_score_adj; exec sleep 100000",
        ],
    );
    assert_eq!(env.read(&cid, &cid, false, 16).unwrap(), b"0\n");
    env.exec(&cid, "e", &["cat", "/proc/self/oom_score_adj"])
        .unwrap();
    assert_eq!(env.read_all(&cid, "e", false, 16), b"0\n");
    assert_eq!(env.wait(&cid, "e").unwrap(), 0);
    env.remove(&cid).unwrap();
    // A spec's own value still applies.
    let own = unique("score-own");
    let mut s = env.spec(
        env.rootfs.path(),
        &own,
        &["cat", "/proc/self/oom_score_adj"],
    );
    s.Process.as_mut().unwrap().OOMScoreAdj = 500;
    env.create(&own, s).unwrap();
    env.start(&own).unwrap();
    assert_eq!(env.read_all(&own, &own, false, 16), b"500\n");
    assert_eq!(env.wait(&own, &own).unwrap(), 0);
    env.remove(&own).unwrap();
    env.assert_gone(&own);
}

/// Check latencies on one connection for `dur`.
fn check_for(env: &Env, health: &HealthClient, dur: Duration) -> Vec<Duration> {
    let mut lat = Vec::new();
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let t = Instant::now();
        env.rt
            .block_on(health.check(ctx(), &CheckRequest::new()))
            .expect("Check answered under attack");
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    lat.sort();
    lat
}

fn summary(lat: &[Duration]) -> String {
    format!(
        "{} Checks, p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        percentile(lat, 50.0),
        percentile(lat, 99.0),
        lat.last().copied().unwrap_or_default()
    )
}

#[test]
fn check_answers_through_a_fork_bomb_and_a_memory_hog() {
    let Some(mut env) = Env::new() else { return };
    let secs: u64 = std::env::var("PROTECT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let health = HealthClient::new(env.rt.block_on(async {
        ttrpc::asynchronous::Client::connect(&env.agent.uri())
            .await
            .unwrap()
    }));
    let idle = check_for(&env, &health, Duration::from_secs(2));

    let bomb = unique("forkbomb");
    let mut s = env.spec(
        env.rootfs.path(),
        &bomb,
        &["sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 100000"],
    );
    let mut res = oci::LinuxResources::new();
    let mut pids = oci::LinuxPids::new();
    pids.Limit = 64;
    res.Pids = Some(pids).into();
    s.Linux.as_mut().unwrap().Resources = Some(res).into();
    env.create(&bomb, s).unwrap();
    env.start(&bomb).unwrap();

    let hog = unique("memhog");
    let hog_root = Rootfs::new();
    let s = env.spec_with_memory(
        hog_root.path(),
        &hog,
        &["sh", "-c", "while :; do tail /dev/zero; done"],
        64 << 20,
    );
    let oom = env.watch_oom();
    env.create(&hog, s).unwrap();
    env.start(&hog).unwrap();

    let attacked = check_for(&env, &health, Duration::from_secs(secs));
    let mut st = StatsContainerRequest::new();
    st.container_id = bomb.clone();
    let bomb_stats = env
        .rt
        .block_on(env.client.stats_container(ctx(), &st))
        .unwrap();
    st.container_id = hog.clone();
    let hog_stats = env
        .rt
        .block_on(env.client.stats_container(ctx(), &st))
        .unwrap();
    let ev = env.rt.block_on(oom).unwrap().unwrap();
    assert_eq!(ev.container_id, hog, "the OOM event names the hog");
    let pid = env.agent.pid();
    eprintln!("Check, idle: {}", summary(&idle));
    eprintln!(
        "Check, fork bomb ({} pids of {}) and memory hog ({} MiB max of {} MiB, {} failures): {}; agent VmRSS {} KiB",
        bomb_stats.cgroup_stats.pids_stats.current,
        bomb_stats.cgroup_stats.pids_stats.limit,
        hog_stats.cgroup_stats.memory_stats.usage.max_usage >> 20,
        hog_stats.cgroup_stats.memory_stats.usage.limit >> 20,
        hog_stats.cgroup_stats.memory_stats.usage.failcnt,
        summary(&attacked),
        vm_rss_kib(pid).unwrap_or(0)
    );
    assert!(bomb_stats.cgroup_stats.pids_stats.current <= 64);
    let start = Instant::now();
    for c in [&bomb, &hog] {
        env.remove(c).unwrap();
    }
    eprintln!("both removed in {:?}", start.elapsed());
    for c in [&bomb, &hog] {
        env.assert_gone(c);
    }
    raw_check(&env.agent.socket);
}
