//! Faults injected on purpose, each with its outcome asserted and the
//! agent checked afterwards (it answers, and nothing of the fault is left):
//! the host disconnecting during ReadStdout, WaitProcess and WriteStdin, an
//! OOM kill, a container that ignores SIGTERM, a process that leaves 1,000
//! orphans, a full writable layer, a hook that hangs, requests for a
//! container being removed, and creates of one id racing.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::env::*;
use integration_tests::*;
use protobuf::Message;
use protocols::agent::*;
use protocols::oci;
use ttrpc::Code;

/// The agent's descriptors that are sockets, by their `socket:[inode]` link.
fn agent_sockets(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

/// A raw connection of the test's own, to be cut while a request is in
/// flight; it knows which of the agent's descriptors serves it.
struct RawConn {
    s: UnixStream,
    agent_end: String,
    next_stream: u32,
}

impl RawConn {
    fn open(agent: &Agent) -> RawConn {
        let before = agent_sockets(agent.pid());
        let mut c = RawConn {
            s: raw_connect(&agent.socket),
            agent_end: String::new(),
            next_stream: 1,
        };
        // Once a request was answered the agent has accepted the
        // connection: its new socket is the one that was not there before.
        c.check();
        let after = agent_sockets(agent.pid());
        // By inode: the agent may hold more than one descriptor of it.
        let new: std::collections::BTreeSet<_> =
            after.iter().filter(|s| !before.contains(s)).collect();
        assert_eq!(
            new.len(),
            1,
            "one new agent socket: {before:?} -> {after:?}"
        );
        let new: Vec<_> = new.into_iter().collect();
        c.agent_end = new[0].clone();
        c
    }

    fn send(&mut self, service: &str, method: &str, payload: &[u8]) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        self.s
            .write_all(&request_frame(id, service, method, payload))
            .unwrap();
        id
    }

    /// A Check, answered: every request sent before it has been read and
    /// its handler started (frames are handled in order).
    fn check(&mut self) {
        let payload = protocols::health::CheckRequest::new()
            .write_to_bytes()
            .unwrap();
        let id = self.send("grpc.Health", "Check", &payload);
        loop {
            let r = read_response(&mut self.s).expect("Check answered");
            if r.stream_id == id {
                assert_eq!(r.code(), Code::OK, "{}", r.message());
                return;
            }
        }
    }

    /// Closes the connection: shut down first, so that a copy of the
    /// descriptor in a child another test is forking right now cannot keep
    /// it open.
    fn close(self) -> String {
        let RawConn { s, agent_end, .. } = self;
        let _ = s.shutdown(std::net::Shutdown::Both);
        drop(s);
        agent_end
    }

    /// Closes the connection and waits (bounded) until the agent has
    /// closed its end: every handler of the connection has ended by then.
    fn cut(self, agent: &Agent) {
        let agent_end = self.close();
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent_sockets(agent.pid()).contains(&agent_end) {
            assert!(
                Instant::now() < deadline,
                "the agent kept {agent_end} of a closed connection"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn read_req(cid: &str, eid: &str, len: u32) -> Vec<u8> {
    let mut r = ReadStreamRequest::new();
    r.container_id = cid.into();
    r.exec_id = eid.into();
    r.len = len;
    r.write_to_bytes().unwrap()
}

/// Reads stdout until `want` bytes arrived.
fn read_exactly(env: &Env, cid: &str, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < want {
        let d = env
            .read(cid, cid, false, (want - out.len()) as u32)
            .unwrap_or_else(|e| panic!("after {:?}: {e:?}", String::from_utf8_lossy(&out)));
        out.extend_from_slice(&d);
    }
    out
}

/// ReadStdout requests cut by the host, waiting or racing new output:
/// none of them takes a byte (a `cat` echoes each line written to it).
#[test]
fn a_disconnected_read_consumes_nothing() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("cut-read");
    env.run(&cid, &["cat"]);
    // The read waits on an empty pipe; the agent sees the cut first.
    for i in 0..10 {
        let mut c = RawConn::open(&env.agent);
        c.send(
            "grpc.AgentService",
            "ReadStdout",
            &read_req(&cid, &cid, 4096),
        );
        c.check();
        c.cut(&env.agent);
        let line = format!("waited-{i}\n");
        env.write(&cid, &cid, line.as_bytes()).unwrap();
        assert_eq!(read_exactly(&env, &cid, line.len()), line.as_bytes());
    }
    // The cut and the output race: the output is written the moment the
    // connection is closed, before the agent can have seen the close.
    let rounds = 200;
    for i in 0..rounds {
        let mut c = RawConn::open(&env.agent);
        c.send(
            "grpc.AgentService",
            "ReadStdout",
            &read_req(&cid, &cid, 4096),
        );
        c.check();
        c.close();
        let line = format!("raced-{i}\n");
        env.write(&cid, &cid, line.as_bytes()).unwrap();
        assert_eq!(
            read_exactly(&env, &cid, line.len()),
            line.as_bytes(),
            "round {i}"
        );
    }
    eprintln!("cut reads: 10 waiting, {rounds} racing new output: no byte lost");
    env.write(&cid, &cid, b"").unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    env.remove(&cid).unwrap();

    // The close and the output reach the agent at the same moment: the
    // agent is stopped while the client closes and the process writes,
    // then continued; its reader sees both at once.
    let delayed = unique("cut-read-late");
    // Writes a line each time /go appears in its rootfs, which the test
    // makes only once the agent is stopped.
    let late_root = Rootfs::new();
    let script = "n=0; while [ ! -e /stop ]; do \
                  if [ -e /go ]; then rm /go; echo \"late-$n\"; n=$((n+1)); fi; sleep 0.01; done";
    env.create(
        &delayed,
        env.spec(late_root.path(), &delayed, &["sh", "-c", script]),
    )
    .unwrap();
    env.start(&delayed).unwrap();
    let tasks = Path::new("/sys/fs/cgroup/pids")
        .join(&env.cgroups.name)
        .join(&delayed)
        .join("tasks");
    let init: u32 = std::fs::read_to_string(&tasks)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Another open of the process's stdout pipe, to see what it holds
    // (FIONREAD) without taking anything.
    let pipe = std::fs::File::open(format!("/proc/{init}/fd/1")).unwrap();
    let queued = || {
        let mut n: libc::c_int = 0;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&pipe);
        // SAFETY: FIONREAD writes an int into `n`, which we own.
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        n
    };
    let agent_pid = env.agent.pid() as i32;
    let stopped_rounds = 20;
    for i in 0..stopped_rounds {
        let mut c = RawConn::open(&env.agent);
        c.send(
            "grpc.AgentService",
            "ReadStdout",
            &read_req(&delayed, &delayed, 4096),
        );
        c.check();
        // SAFETY: kill(2) on the agent this test started.
        unsafe { libc::kill(agent_pid, libc::SIGSTOP) };
        c.close();
        std::fs::write(late_root.path().join("go"), "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while queued() == 0 {
            assert!(Instant::now() < deadline, "the process never wrote");
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: as above.
        unsafe { libc::kill(agent_pid, libc::SIGCONT) };
        let line = format!("late-{i}\n");
        assert_eq!(
            read_exactly(&env, &delayed, line.len()),
            line.as_bytes(),
            "round {i}"
        );
    }
    eprintln!(
        "cut reads: {stopped_rounds} with the close and the output seen at once: no byte lost"
    );
    std::fs::write(late_root.path().join("stop"), "").unwrap();
    assert_eq!(env.wait(&delayed, &delayed).unwrap(), 0);
    env.remove(&delayed).unwrap();

    // A read cut by its own deadline takes nothing either.
    let cid = unique("cut-deadline");
    env.run(&cid, &["cat"]);
    let mut c = RawConn::open(&env.agent);
    let id = c.next_stream;
    c.next_stream += 2;
    c.s.write_all(&request_frame_with_timeout(
        id,
        "grpc.AgentService",
        "ReadStdout",
        &read_req(&cid, &cid, 4096),
        Duration::from_millis(50),
    ))
    .unwrap();
    let r = read_response(&mut c.s).unwrap();
    assert_eq!(r.code(), Code::DEADLINE_EXCEEDED, "{}", r.message());
    env.write(&cid, &cid, b"after-deadline\n").unwrap();
    assert_eq!(read_exactly(&env, &cid, 15), b"after-deadline\n");
    c.cut(&env.agent);
    env.write(&cid, &cid, b"").unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// A WaitProcess cut by the host: the exit still reaches the next waiter.
#[test]
fn a_disconnected_wait_loses_no_exit() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("cut-wait");
    env.run(&cid, &["sleep", "100000"]);
    env.exec(&cid, "e", &["sleep", "100000"]).unwrap();
    for eid in [cid.as_str(), "e"] {
        let mut c = RawConn::open(&env.agent);
        let mut w = WaitProcessRequest::new();
        w.container_id = cid.clone();
        w.exec_id = eid.into();
        c.send(
            "grpc.AgentService",
            "WaitProcess",
            &w.write_to_bytes().unwrap(),
        );
        c.check();
        c.cut(&env.agent);
    }
    env.signal(&cid, "e", 9).unwrap();
    assert_eq!(env.wait(&cid, "e").unwrap(), 137);

    // The close and the exit reach the agent at the same moment (it is
    // stopped meanwhile), for execs whose streams have ended already: an
    // exec is released once its status was delivered, so a status handed
    // to the closed connection would leave the next waiter NOT_FOUND.
    let agent_pid = env.agent.pid() as i32;
    let rounds = 10;
    for i in 0..rounds {
        let eid = format!("quiet-{i}");
        // Its own pid first, then no stdout or stderr: both streams end at
        // once, while it waits for stdin.
        env.exec(
            &cid,
            &eid,
            &["sh", "-c", "echo $$ >&2; exec >&- 2>&-; read x"],
        )
        .unwrap();
        let said = String::from_utf8(env.read_all(&cid, &eid, true, 4096)).unwrap();
        let pid: i32 = said.trim().parse().unwrap();
        assert_eq!(env.read_all(&cid, &eid, false, 4096), b"");
        let mut c = RawConn::open(&env.agent);
        let mut w = WaitProcessRequest::new();
        w.container_id = cid.clone();
        w.exec_id = eid.clone();
        c.send(
            "grpc.AgentService",
            "WaitProcess",
            &w.write_to_bytes().unwrap(),
        );
        c.check();
        // SAFETY: kill(2) on the agent this test started.
        unsafe { libc::kill(agent_pid, libc::SIGSTOP) };
        c.close();
        // The container has a pid namespace of its own: its pid there is
        // not the host's. Found by the host pid's NSpid line instead.
        let host_pid = host_pid_of(&env, &cid, pid);
        // SAFETY: kill(2) on a process of this test's container.
        unsafe { libc::kill(host_pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !process_ended(host_pid as u32) {
            assert!(Instant::now() < deadline, "{host_pid} still runs");
        }
        // SAFETY: as above.
        unsafe { libc::kill(agent_pid, libc::SIGCONT) };
        assert_eq!(env.wait(&cid, &eid).unwrap(), 137, "round {i}");
    }
    eprintln!(
        "cut waits: 2 waiting, {rounds} with the close and the exit seen at once: no exit lost"
    );
    env.signal(&cid, &cid, 9).unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 137);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// The host pid of the process of container `cid` whose pid in the
/// container's pid namespace is `ns_pid`.
fn host_pid_of(env: &Env, cid: &str, ns_pid: i32) -> i32 {
    let tasks = Path::new("/sys/fs/cgroup/pids")
        .join(&env.cgroups.name)
        .join(cid)
        .join("tasks");
    std::fs::read_to_string(&tasks)
        .unwrap()
        .lines()
        .filter_map(|l| l.parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last()?.parse::<i32>().ok())
                == Some(ns_pid)
        })
        .unwrap_or_else(|| panic!("no process {ns_pid} in {}", tasks.display()))
}

/// A WriteStdin cut by the host while it waits for room in the pipe: the
/// process gets a prefix of it, intact, then what the next write sends;
/// stdin stays usable.
#[test]
fn a_disconnected_write_leaves_stdin_usable() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("cut-write");
    // cat copies stdin to stdout; nobody reads stdout until the end, so
    // both pipes fill and the 3 MiB write stalls part way.
    env.run(&cid, &["cat"]);
    let mut data = Vec::new();
    let mut i = 0u32;
    while data.len() < 3 << 20 {
        data.extend_from_slice(format!("{i:08}\n").as_bytes());
        i += 1;
    }
    let mut c = RawConn::open(&env.agent);
    let mut w = WriteStreamRequest::new();
    w.container_id = cid.clone();
    w.exec_id = cid.clone();
    w.data = data.clone();
    c.send(
        "grpc.AgentService",
        "WriteStdin",
        &w.write_to_bytes().unwrap(),
    );
    c.check();
    c.cut(&env.agent);
    // The rest, then EOF, while stdout is read.
    let client = env.client.clone();
    let cid2 = cid.clone();
    let tail = env.rt.spawn(async move {
        for d in [&b"\nEND\n"[..], b""] {
            let mut w = WriteStreamRequest::new();
            w.container_id = cid2.clone();
            w.exec_id = cid2.clone();
            w.data = d.to_vec();
            client.write_stdin(ctx(), &w).await?;
        }
        Ok::<_, ttrpc::Error>(())
    });
    let out = env.read_all(&cid, &cid, false, 1 << 20);
    env.rt.block_on(tail).unwrap().unwrap();
    assert!(out.ends_with(b"\nEND\n"), "tail missing");
    let k = out.len() - 5;
    assert!(k < data.len(), "the cut write was not cut ({k} bytes)");
    assert!(
        out[..k] == data[..k],
        "the cut write's bytes are not a prefix"
    );
    eprintln!(
        "cut WriteStdin: {k} of {} bytes reached the process, intact",
        data.len()
    );
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// An exec that outgrows the container's memory limit is OOM-killed and
/// reported, the container and the agent go on; then a container whose
/// init does the same.
#[test]
fn an_oom_killed_exec_is_reported_and_the_container_goes_on() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("oom-exec");
    let s = env.spec_with_memory(env.rootfs.path(), &cid, &["sleep", "100000"], 32 << 20);
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    let oom = env.watch_oom();
    env.exec(
        &cid,
        "hog",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
    )
    .unwrap();
    assert_eq!(env.wait(&cid, "hog").unwrap(), 137);
    let ev = env.rt.block_on(oom).unwrap().unwrap();
    assert_eq!(ev.container_id, cid);
    env.exec(&cid, "after", &["echo", "alive"]).unwrap();
    assert_eq!(env.read_all(&cid, "after", false, 64), b"alive\n");
    assert_eq!(env.wait(&cid, "after").unwrap(), 0);
    let mut req = StatsContainerRequest::new();
    req.container_id = cid.clone();
    let stats = env
        .rt
        .block_on(env.client.stats_container(ctx(), &req))
        .unwrap();
    let mem = &stats.cgroup_stats.memory_stats;
    eprintln!(
        "OOM-killed exec: memory limit {} MiB, max usage {} MiB, failcnt {}",
        mem.usage.limit >> 20,
        mem.usage.max_usage >> 20,
        mem.usage.failcnt
    );
    raw_check(&env.agent.socket);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);

    // The container itself: its init is the hog.
    let init = unique("oom-init");
    let s = env.spec_with_memory(
        env.rootfs.path(),
        &init,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
        32 << 20,
    );
    let oom = env.watch_oom();
    env.create(&init, s).unwrap();
    env.start(&init).unwrap();
    assert_eq!(env.wait(&init, &init).unwrap(), 137);
    // cgroup v1 notifies each time the kernel enters OOM handling in the
    // cgroup, and one kill can take several (allocations that fail while
    // the victim is still exiting): late events of the first container may
    // come first, never another container's.
    let mut ev = env.rt.block_on(oom).unwrap().unwrap();
    for _ in 0..64 {
        if ev.container_id == init {
            break;
        }
        assert_eq!(ev.container_id, cid, "an OOM event of neither container");
        ev = env.rt.block_on(env.watch_oom()).unwrap().unwrap();
    }
    assert_eq!(ev.container_id, init);
    raw_check(&env.agent.socket);
    env.remove(&init).unwrap();
    env.assert_gone(&init);
}

/// A container whose processes ignore SIGTERM: the signal changes
/// nothing, RemoveContainer kills them all and answers.
#[test]
fn remove_kills_a_container_that_ignores_sigterm() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("noterm");
    // The init has a handler that does nothing (an init that merely
    // ignores SIGTERM is killed by SignalProcess, as upstream does); the
    // exec ignores it outright.
    let init = "trap 'echo term-ignored' TERM; echo ready; while :; do sleep 1; done";
    env.run(&cid, &["sh", "-c", init]);
    assert_eq!(env.read(&cid, &cid, false, 6).unwrap(), b"ready\n");
    let exec = "trap '' TERM; echo ready; while :; do sleep 1; done";
    env.exec(&cid, "e", &["sh", "-c", exec]).unwrap();
    assert_eq!(env.read(&cid, "e", false, 6).unwrap(), b"ready\n");
    env.signal(&cid, &cid, 15).unwrap();
    env.signal(&cid, "e", 15).unwrap();
    let got = read_exactly(&env, &cid, "term-ignored\n".len());
    assert_eq!(got, b"term-ignored\n");
    // Still there: an exec runs, and the processes are listed.
    env.exec(&cid, "ps", &["sh", "-c", "ls /proc | grep -c '^[0-9]'"])
        .unwrap();
    let n: usize = String::from_utf8(env.read_all(&cid, "ps", false, 64))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 3, "{n} processes after SIGTERM");
    env.wait(&cid, "ps").unwrap();
    let start = Instant::now();
    env.remove(&cid).unwrap();
    eprintln!(
        "RemoveContainer of a container ignoring SIGTERM: {:?}",
        start.elapsed()
    );
    env.assert_gone(&cid);
    raw_check(&env.agent.socket);
}

/// Processes whose parent exited before them, in a container without a
/// pid namespace of its own: the agent (their subreaper) reaps all 1,000,
/// no zombie stays.
#[test]
fn a_thousand_orphans_are_reaped() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("orphans");
    let n = 1000;
    let script = format!("i=0; while [ $i -lt {n} ]; do sleep 3 & i=$((i+1)); done; echo forked");
    let mut s = env.spec(env.rootfs.path(), &cid, &["sh", "-c", &script]);
    s.Linux
        .as_mut()
        .unwrap()
        .Namespaces
        .retain(|ns| ns.Type != "pid");
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    assert_eq!(env.read_all(&cid, &cid, false, 64), b"forked\n");
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    let agent = env.agent.pid();
    let tasks = Path::new("/sys/fs/cgroup/pids")
        .join(&env.cgroups.name)
        .join(&cid)
        .join("tasks");
    let start = Instant::now();
    let mut most_zombies = 0;
    let deadline = start + Duration::from_secs(60);
    loop {
        let kids = all_children_of(agent);
        let zombies = kids
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
                    .unwrap_or(false)
            })
            .count();
        most_zombies = most_zombies.max(zombies);
        let left = std::fs::read_to_string(&tasks).unwrap_or_default();
        if left.trim().is_empty() && children_of(agent).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans left: {} in the cgroup, children of the agent {:?}",
            left.lines().count(),
            children_of(agent)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "{n} orphans: all reaped {:?} after the parent's exit (at most {most_zombies} zombies seen at once)",
        start.elapsed()
    );
    raw_check(&env.agent.socket);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// A tmpfs of a fixed size, mounted on the host before the agent starts
/// (so the agent's mount namespace has it); unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &dir.path().to_string_lossy(),
            ],
        );
        SmallFs { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// The container's writable root fills up: its writes fail with ENOSPC,
/// its output and the agent are unaffected.
#[test]
fn a_full_writable_layer_is_the_containers_problem() {
    if !can_run_containers() {
        return;
    }
    // Declared first: unmounted after the agent is gone.
    let fs = SmallFs::new("8m");
    let root = fs.dir.path().join("rootfs");
    busybox_rootfs_at(&root);
    let Some(mut env) = Env::new() else { return };
    let cid = unique("enospc");
    // dd's complaint goes through a pipe: the filesystem has no room for it.
    let script = "dd if=/dev/zero of=/fill bs=64k 2>&1 | grep -c 'No space left'; \
                  (echo x > /more) 2>/dev/null || echo write-failed; \
                  rm /fill; echo x > /more && echo freed";
    let s = env.spec(&root, &cid, &["sh", "-c", script]);
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    let out = String::from_utf8(env.read_all(&cid, &cid, false, 4096)).unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0, "{out}");
    assert_eq!(out, "1\nwrite-failed\nfreed\n");
    // The agent's own files live elsewhere: it goes on.
    let other = unique("after-enospc");
    env.run(&other, &["echo", "fine"]);
    assert_eq!(env.read_all(&other, &other, false, 64), b"fine\n");
    assert_eq!(env.wait(&other, &other).unwrap(), 0);
    for c in [&cid, &other] {
        env.remove(c).unwrap();
        env.assert_gone(c);
    }
}

/// Pids of processes whose command line is exactly `args`.
fn processes_running(args: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok().as_deref() == Some(&want[..]))
        .collect()
}

/// A prestart hook that never returns: CreateContainer fails after the
/// hook's timeout, naming it; the hook and what it started are killed;
/// nothing of the container is left.
#[test]
fn a_hanging_hook_times_out_and_leaves_nothing() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("hook-hangs");
    // A number of this test's own: its `sleep` is findable among all.
    let secs = format!("{}", 500_000 + std::process::id());
    let mut s = env.spec(env.rootfs.path(), &cid, &["true"]);
    let mut h = oci::Hook::new();
    h.Path = "/bin/sh".into();
    h.Args = vec!["sh".into(), "-c".into(), format!("sleep {secs}; true")];
    h.Timeout = 1;
    let mut hooks = oci::Hooks::new();
    hooks.Prestart = vec![h];
    s.Hooks = Some(hooks).into();
    let start = Instant::now();
    let e = env.create(&cid, s).unwrap_err();
    let took = start.elapsed();
    assert!(message(&e).contains("prestart"), "{e:?}");
    assert!(message(&e).contains("timed out after 1 s"), "{e:?}");
    assert!(message(&e).contains(&cid), "{e:?}");
    eprintln!("hook hanging past its 1 s timeout: CreateContainer failed after {took:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_running(&["sleep", &secs]).is_empty() {
        assert!(Instant::now() < deadline, "the hook's sleep outlived it");
        std::thread::sleep(Duration::from_millis(10));
    }
    let e = env.wait(&cid, &cid).unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND, "{e:?}");
    env.assert_gone(&cid);
    // The id is free again.
    env.run(&cid, &["true"]);
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// While RemoveContainer runs (a poststop hook keeps it busy until the
/// test lets it go), requests
/// for the container get a clear status, a create of the same id is
/// refused, and afterwards the id is unknown and free.
#[test]
fn requests_for_a_container_being_removed() {
    let Some(mut env) = Env::new() else { return };
    let cid = unique("removing");
    let mut s = env.spec(env.rootfs.path(), &cid, &["sleep", "100000"]);
    let marker = env.agent.path("/run").join(format!("{cid}-poststop"));
    let mut h = oci::Hook::new();
    h.Path = "/bin/sh".into();
    // In the agent's mount namespace: its own /run.
    h.Args = vec![
        "sh".into(),
        "-c".into(),
        // Until the test is done with its checks, at most 30 s.
        format!(
            "touch /run/{cid}-poststop; i=0; \
             while [ ! -e /run/{cid}-release ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"
        ),
    ];
    h.Timeout = 60;
    let mut hooks = oci::Hooks::new();
    hooks.Poststop = vec![h];
    s.Hooks = Some(hooks).into();
    env.create(&cid, s).unwrap();
    env.start(&cid).unwrap();
    let client = env.client.clone();
    let cid2 = cid.clone();
    let removal = env.rt.spawn(async move {
        let mut r = RemoveContainerRequest::new();
        r.container_id = cid2;
        r.timeout = 30;
        client.remove_container(ctx(), &r).await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "poststop hook never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The removal is under way: every call gets a status, none hangs.
    let mut seen = Vec::new();
    let e = env.exec(&cid, "late", &["true"]).unwrap_err();
    seen.push(("ExecProcess", code(&e)));
    let e = env.wait(&cid, &cid).unwrap_err();
    seen.push(("WaitProcess", code(&e)));
    let e = env.read(&cid, &cid, false, 16).unwrap_err();
    seen.push(("ReadStdout", code(&e)));
    let e = env.signal(&cid, &cid, 9).unwrap_err();
    seen.push(("SignalProcess", code(&e)));
    let mut st = StatsContainerRequest::new();
    st.container_id = cid.clone();
    let e = env
        .rt
        .block_on(env.client.stats_container(ctx(), &st))
        .unwrap_err();
    seen.push(("StatsContainer", code(&e)));
    let e = env.remove(&cid).unwrap_err();
    seen.push(("RemoveContainer", code(&e)));
    for (m, c) in &seen {
        assert_eq!(*c, Code::NOT_FOUND, "{m} during the removal");
    }
    let e = env
        .create(&cid, env.spec(env.rootfs.path(), &cid, &["true"]))
        .unwrap_err();
    assert!(
        matches!(code(&e), Code::ALREADY_EXISTS | Code::FAILED_PRECONDITION),
        "create during the removal: {e:?}"
    );
    assert!(message(&e).contains(&cid), "{e:?}");
    assert!(
        !removal.is_finished(),
        "the removal ended before the checks"
    );
    std::fs::write(env.agent.path("/run").join(format!("{cid}-release")), "").unwrap();
    env.rt.block_on(removal).unwrap().unwrap();
    env.assert_gone(&cid);
    env.run(&cid, &["true"]);
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// Eight CreateContainer calls for one id at once, twenty times: exactly
/// one wins each time, the others are refused by name, and the winner
/// runs normally.
#[test]
fn racing_creates_of_one_id() {
    let Some(mut env) = Env::new() else { return };
    let root = env.rootfs.path().to_path_buf();
    for round in 0..20 {
        let cid = unique("race");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let client = env.client.clone();
            let mut req = CreateContainerRequest::new();
            req.container_id = cid.clone();
            req.exec_id = cid.clone();
            req.OCI = Some(env.spec(&root, &cid, &["sh", "-c", "echo won"])).into();
            tasks.push(
                env.rt
                    .spawn(async move { client.create_container(ctx(), &req).await }),
            );
        }
        let mut won = 0;
        for t in tasks {
            match env.rt.block_on(t).unwrap() {
                Ok(_) => won += 1,
                Err(e) => {
                    assert!(
                        matches!(code(&e), Code::ALREADY_EXISTS | Code::FAILED_PRECONDITION),
                        "round {round}: {e:?}"
                    );
                    assert!(message(&e).contains(&cid), "{e:?}");
                }
            }
        }
        assert_eq!(won, 1, "round {round}: {won} creates of {cid} succeeded");
        env.start(&cid).unwrap();
        assert_eq!(env.read_all(&cid, &cid, false, 64), b"won\n");
        assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
        env.remove(&cid).unwrap();
        env.assert_gone(&cid);
    }
}
