//! Leak check, alone in its test binary so that no other test opens
//! descriptors or processes meanwhile: create/start/wait/destroy cycles
//! must leave the caller's descriptors, threads, children, mounts and
//! cgroups as they were.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(|pp| pp == me))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn cycles_leave_nothing_behind() {
    require_root!();
    let bundle = Bundle::new();
    // One warm-up cycle: lazily opened descriptors (e.g. /dev/urandom).
    let run_one = |i: usize| {
        let id = unique_id("leak");
        let mut s = spec(&id, &["sh", "-c", "echo out; echo err >&2; exit 2"]);
        if i % 2 == 1 {
            s.process_mut().as_mut().unwrap().set_terminal(Some(true));
        }
        let out = run_in(&s, &bundle);
        assert_eq!(out.code, 2);
    };
    run_one(0);
    let (fds, threads, kids, mounts) = (fd_count(), thread_count(), children(), mount_count());
    for i in 0..20 {
        run_one(i);
    }
    assert_eq!(fd_count(), fds, "descriptors leaked");
    assert_eq!(thread_count(), threads, "threads leaked");
    assert_eq!(children(), kids, "children left");
    assert_eq!(mount_count(), mounts, "mounts left");
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/memory")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rjt-leak"))
        .collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
}
