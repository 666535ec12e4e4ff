//! agent-ctl against the real agent: direct Unix socket, and hybrid vsock
//! through a host-side fake that answers `CONNECT <port>` and forwards to
//! the agent's socket, as Firecracker, Cloud Hypervisor and
//! vhost-device-vsock do.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use integration_tests::*;

fn ctl(args: &[&str]) -> Output {
    Command::new(bin("agent-ctl"))
        .args(args)
        .env_remove("KATA_AGENT_ADDR")
        .output()
        .expect("run agent-ctl")
}

fn json_out(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "agent-ctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("agent-ctl prints JSON")
}

#[test]
fn check_version_and_unimplemented_through_agent_ctl() {
    // Own namespaces: whatever the "unimplemented" example becomes one day,
    // it must not reach the host.
    let agent = Agent::start_isolated();
    let uri = agent.uri();
    let v = json_out(&ctl(&["--addr", &uri, "call", "Check"]));
    assert_eq!(v["status"], "SERVING");
    let v = json_out(&ctl(&["--addr", &uri, "call", "grpc.Health/Version"]));
    assert_eq!(v["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["grpc_version"], "0.0.1");

    let out = ctl(&[
        "--addr",
        &uri,
        "call",
        "MemAgentCompactSet",
        r#"{"period_secs": 60}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UNIMPLEMENTED")
            && err.contains("/grpc.AgentService/MemAgentCompactSet")
            && err.contains("mem-agent"),
        "{err}"
    );
}

#[test]
fn repeat_mode_reports_figures() {
    let agent = Agent::start();
    let out = ctl(&[
        "--addr",
        &agent.uri(),
        "repeat",
        "-n",
        "50",
        "-c",
        "4",
        "--json",
        "Check",
    ]);
    let v = json_out(&out);
    assert_eq!(v["count"], 200);
    assert_eq!(v["errors"], 0);
    assert!(v["p50_us"].as_u64().unwrap() > 0);
    assert!(v["p99_us"].as_u64().unwrap() >= v["p50_us"].as_u64().unwrap());
    assert!(v["throughput_rps"].as_f64().unwrap() > 0.0);
}

/// A hybrid vsock endpoint in front of the agent's Unix socket. The first
/// `refuse` connections are dropped after reading CONNECT, as a VMM does
/// while nothing listens on the guest port yet.
struct FakeHybrid {
    path: PathBuf,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeHybrid {
    fn start(path: &Path, target: PathBuf, refuse: usize) -> FakeHybrid {
        let listener = UnixListener::bind(path).expect("bind fake hybrid socket");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (connections.clone(), requests.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                r.lock().unwrap().push(line.clone());
                if n < refuse {
                    continue; // dropped: the guest port is not listening yet
                }
                let target = target.clone();
                thread::spawn(move || {
                    let mut client = stream;
                    let Ok(agent) = UnixStream::connect(&target) else {
                        return;
                    };
                    if client.write_all(b"OK 1073741824\n").is_err() {
                        return;
                    }
                    // Bytes the client sent after its CONNECT line are
                    // still buffered in the reader.
                    let mut agent_w = agent.try_clone().expect("clone");
                    let buffered = reader.buffer().to_vec();
                    if agent_w.write_all(&buffered).is_err() {
                        return;
                    }
                    let mut client_r = reader.into_inner();
                    let mut agent_r = agent;
                    let up = thread::spawn(move || std::io::copy(&mut client_r, &mut agent_w));
                    let _ = std::io::copy(&mut agent_r, &mut client);
                    let _ = up.join();
                });
            }
        });
        FakeHybrid {
            path: path.to_path_buf(),
            connections,
            requests,
        }
    }

    fn addr(&self, port: u32) -> String {
        format!("hvsock://{}:{port}", self.path.display())
    }
}

#[test]
fn hybrid_vsock_with_refusals_then_success() {
    let agent = Agent::start();
    let fake = FakeHybrid::start(&agent.dir.path().join("hv.sock"), agent.socket.clone(), 3);
    let v = json_out(&ctl(&[
        "--addr",
        &fake.addr(1024),
        "--timeout",
        "20s",
        "call",
        "Check",
    ]));
    assert_eq!(v["status"], "SERVING");
    assert!(
        fake.connections.load(Ordering::SeqCst) >= 4,
        "agent-ctl did not retry after refused handshakes"
    );
    for line in fake.requests.lock().unwrap().iter() {
        assert_eq!(line, "CONNECT 1024\n");
    }
}

#[test]
fn hybrid_vsock_retries_while_nothing_listens_yet() {
    let agent = Agent::start();
    let hv = agent.dir.path().join("late.sock");
    let child = Command::new(bin("agent-ctl"))
        .args(["--addr", &format!("hvsock://{}:1024", hv.display())])
        .args(["--timeout", "30s", "call", "Version"])
        .env_remove("KATA_AGENT_ADDR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The socket appears only after agent-ctl has started: it must keep
    // trying until it exists, then finish the handshake. (Whether a failed
    // attempt happened before the bind is up to timing; the retry itself is
    // proven below, with nothing listening at all.)
    assert!(!hv.exists());
    let _fake = FakeHybrid::start(&hv, agent.socket.clone(), 0);
    let out = child.wait_with_output().unwrap();
    let v = json_out(&out);
    assert_eq!(v["agent_version"], env!("CARGO_PKG_VERSION"));

    // Nothing ever listens: agent-ctl tries again and again until the
    // deadline, and says how often.
    let never = agent.dir.path().join("never.sock");
    let out = ctl(&[
        "--addr",
        &format!("hvsock://{}:1024", never.display()),
        "--timeout",
        "400ms",
        "call",
        "Check",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let attempts: u32 = err
        .split(" attempt")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(attempts >= 2, "no retry while nothing listens: {err}");
}

#[test]
fn kata_spelling_of_hybrid_vsock_is_accepted() {
    let agent = Agent::start();
    let fake = FakeHybrid::start(&agent.dir.path().join("k.sock"), agent.socket.clone(), 0);
    let v = json_out(&ctl(&[
        "--server-address",
        &format!("unix://{}", fake.path.display()),
        "--hybrid-vsock",
        "--hybrid-vsock-port",
        "1024",
        "call",
        "Check",
    ]));
    assert_eq!(v["status"], "SERVING");
}
