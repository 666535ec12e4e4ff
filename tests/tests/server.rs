//! The agent binary on a Unix socket: health, unimplemented methods, bad
//! frames, concurrency, configuration errors, logs and shutdown.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use integration_tests::*;
use protobuf::Message;
use protocols::health::{health_check_response::ServingStatus, CheckRequest};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn health_client(uri: &str) -> protocols::health_ttrpc::HealthClient {
    let c = ttrpc::asynchronous::Client::connect(uri).await.unwrap();
    protocols::health_ttrpc::HealthClient::new(c)
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(10).as_nanos() as i64)
}

#[test]
fn check_and_version_through_the_protocols_client() {
    let agent = Agent::start();
    rt().block_on(async {
        let h = health_client(&agent.uri()).await;
        let r = h.check(ctx(), &CheckRequest::new()).await.unwrap();
        assert_eq!(r.status.enum_value_or_default(), ServingStatus::SERVING);
        let v = h.version(ctx(), &CheckRequest::new()).await.unwrap();
        assert_eq!(v.agent_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(v.grpc_version, "0.0.1");
    });
}

#[test]
fn every_agent_method_is_registered_and_unimplemented_names_it() {
    // The agent's own table says which methods it serves.
    let out = Command::new(bin("kata-agent"))
        .arg("--methods")
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    // Status, and the reason of a method decided not to be served.
    let status_of = |m: &str| -> (String, Option<String>) {
        let rest = table
            .lines()
            .find_map(|l| l.strip_prefix(&format!("grpc.AgentService/{m}\t")))
            .unwrap_or_else(|| panic!("{m} missing from kata-agent --methods"));
        match rest.split_once('\t') {
            Some((status, why)) => (status.to_string(), Some(why.to_string())),
            None => (rest.to_string(), None),
        }
    };
    // An agent in its own namespaces: empty requests to served methods
    // (CreateSandbox, DestroySandbox) must not touch the host.
    let agent = Agent::start_isolated();
    let services = protocols::services();
    let agent_service = services
        .iter()
        .find(|s| s.name == "grpc.AgentService")
        .expect("AgentService descriptor");
    assert_eq!(agent_service.methods.len(), 42);
    let mut s = raw_connect(&agent.socket);
    let mut unimplemented = 0;
    // DestroySandbox ends an agent that is not PID 1: it goes last.
    let mut methods: Vec<_> = agent_service.methods.iter().collect();
    methods.sort_by_key(|m| m.name == "DestroySandbox");
    assert_eq!(methods.last().unwrap().name, "DestroySandbox");
    for (i, m) in methods.into_iter().enumerate() {
        let id = 2 * i as u32 + 1;
        // A deadline, so that long polls (GetOOMEvent) answer too.
        s.write_all(&request_frame_with_timeout(
            id,
            "grpc.AgentService",
            &m.name,
            &[],
            Duration::from_millis(300),
        ))
        .unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.stream_id, id);
        assert_eq!(r.typ, MESSAGE_TYPE_RESPONSE);
        // Never the generated default ("... is not supported", NOT_FOUND).
        assert!(
            !r.message().contains("is not supported"),
            "{}: {}",
            m.name,
            r.message()
        );
        let (status, why) = status_of(&m.name);
        if status == "unimplemented" {
            unimplemented += 1;
            if let Some(why) = why {
                assert!(
                    r.message().ends_with(&format!(": {why}")),
                    "{}: status message {:?} does not give the reason",
                    m.name,
                    r.message()
                );
            }
            assert_eq!(
                r.code(),
                ttrpc::Code::UNIMPLEMENTED,
                "{}: {}",
                m.name,
                r.message()
            );
            assert!(
                r.message()
                    .contains(&format!("/grpc.AgentService/{}", m.name)),
                "{}: status message {:?} does not name the method",
                m.name,
                r.message()
            );
        } else {
            assert_ne!(
                r.code(),
                ttrpc::Code::UNIMPLEMENTED,
                "{}: {}",
                m.name,
                r.message()
            );
        }
    }
    assert!(
        unimplemented > 0,
        "the test no longer exercises UNIMPLEMENTED"
    );
}

#[test]
fn unknown_method_and_service_get_error_statuses() {
    let agent = Agent::start();
    let mut s = raw_connect(&agent.socket);
    s.write_all(&request_frame(1, "grpc.AgentService", "NoSuchMethod", &[]))
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.code(), ttrpc::Code::UNIMPLEMENTED, "{}", r.message());
    assert!(r.message().contains("NoSuchMethod"), "{}", r.message());

    s.write_all(&request_frame(3, "grpc.NoSuchService", "Check", &[]))
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_ne!(r.code(), ttrpc::Code::OK);
    assert!(
        r.message().contains("grpc.NoSuchService"),
        "{}",
        r.message()
    );

    // The same connection still serves.
    let payload = CheckRequest::new().write_to_bytes().unwrap();
    s.write_all(&request_frame(5, "grpc.Health", "Check", &payload))
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().code(), ttrpc::Code::OK);
}

#[test]
fn malformed_request_payloads_get_error_statuses() {
    let agent = Agent::start();
    let mut s = raw_connect(&agent.socket);
    // Not a ttrpc Request protobuf at all.
    s.write_all(&frame(1, MESSAGE_TYPE_REQUEST, 0, &[0xff; 16]))
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.stream_id, 1);
    assert_ne!(r.code(), ttrpc::Code::OK);

    // A valid envelope whose method payload is not a CheckRequest.
    s.write_all(&request_frame(3, "grpc.Health", "Check", &[0xff; 8]))
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.stream_id, 3);
    assert_ne!(r.code(), ttrpc::Code::OK);

    // Client stream ids are odd; an even one is refused.
    let payload = CheckRequest::new().write_to_bytes().unwrap();
    s.write_all(&request_frame(4, "grpc.Health", "Check", &payload))
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.code(), ttrpc::Code::INVALID_ARGUMENT, "{}", r.message());

    raw_check(&agent.socket);
}

#[test]
fn oversized_frame_is_refused_and_the_agent_keeps_serving() {
    let agent = Agent::start();
    let mut s = raw_connect(&agent.socket);
    let len: u32 = (4 << 20) + 1;
    s.write_all(&header(len, 1, MESSAGE_TYPE_REQUEST, 0))
        .unwrap();
    // Another client is served while this one streams its huge body.
    raw_check(&agent.socket);
    let chunk = vec![0u8; 64 * 1024];
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.code(), ttrpc::Code::INVALID_ARGUMENT, "{}", r.message());
    assert!(r.message().contains("exceed"), "{}", r.message());
    // The connection itself survives the refusal.
    let payload = CheckRequest::new().write_to_bytes().unwrap();
    s.write_all(&request_frame(3, "grpc.Health", "Check", &payload))
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().code(), ttrpc::Code::OK);
    raw_check(&agent.socket);
}

#[test]
fn huge_announcement_then_hang_up_is_harmless() {
    let agent = Agent::start();
    {
        let mut s = raw_connect(&agent.socket);
        s.write_all(&header(u32::MAX, 1, MESSAGE_TYPE_REQUEST, 0))
            .unwrap();
        s.write_all(&[1u8; 1000]).unwrap();
    }
    raw_check(&agent.socket);
}

#[test]
fn truncated_frames_and_mid_frame_hang_ups_do_not_disturb_others() {
    let mut agent = Agent::start();
    // A second client stays connected throughout and must keep working.
    let mut steady = raw_connect(&agent.socket);
    let payload = CheckRequest::new().write_to_bytes().unwrap();
    let full = request_frame(1, "grpc.Health", "Check", &payload);
    for cut in [1usize, 5, 9, 10, full.len() - 1] {
        let mut s = UnixStream::connect(&agent.socket).unwrap();
        s.write_all(&full[..cut]).unwrap();
        drop(s);
    }
    // A truncated frame on a connection that stays open: the agent waits for
    // the rest without blocking anyone else.
    let mut stalled = UnixStream::connect(&agent.socket).unwrap();
    stalled.write_all(&full[..full.len() - 2]).unwrap();

    for i in 0..5u32 {
        steady
            .write_all(&request_frame(2 * i + 1, "grpc.Health", "Check", &payload))
            .unwrap();
        assert_eq!(read_response(&mut steady).unwrap().code(), ttrpc::Code::OK);
    }
    raw_check(&agent.socket);
    drop(stalled);
    raw_check(&agent.socket);
    assert!(agent.alive());
}

#[test]
fn fifty_concurrent_clients_two_hundred_checks_each() {
    let agent = Agent::start();
    let uri = agent.uri();
    let ok = rt().block_on(async move {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let uri = uri.clone();
            tasks.push(tokio::spawn(async move {
                let h = health_client(&uri).await;
                let mut ok = 0u32;
                for _ in 0..200 {
                    let r = h.check(ctx(), &CheckRequest::new()).await.unwrap();
                    assert_eq!(r.status.enum_value_or_default(), ServingStatus::SERVING);
                    ok += 1;
                }
                ok
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    assert_eq!(ok, 50 * 200);
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly_and_remove_the_socket() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut agent = Agent::start();
        // An idle connected client must not hold the shutdown up.
        let _idle = raw_connect(&agent.socket);
        let status = agent
            .stop_with(sig, Duration::from_secs(15))
            .expect("agent did not exit after the signal");
        assert!(status.success(), "signal {sig}: exit {status}");
        assert!(
            !agent.socket.exists(),
            "socket file left behind after signal {sig}"
        );
        let log = agent.log_text();
        assert!(log.contains("shutting down"), "{log}");
    }
}

#[test]
fn stale_socket_is_replaced_and_a_live_one_is_refused() {
    let agent = Agent::start();
    // A second agent on the same live socket must refuse to start.
    let out = Command::new(bin("kata-agent"))
        .arg("--server-addr")
        .arg(agent.uri())
        .arg("--cmdline")
        .arg("/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serving"), "{err}");
    raw_check(&agent.socket);

    // A socket file nobody listens on is cleared and reused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut child = Command::new(bin("kata-agent"))
        .arg("--server-addr")
        .arg(format!("unix://{}", path.display()))
        .arg("--cmdline")
        .arg("/dev/null")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&path).is_err() {
        assert!(std::time::Instant::now() < deadline, "agent never listened");
        assert!(child.try_wait().unwrap().is_none(), "agent exited");
        std::thread::sleep(Duration::from_millis(2));
    }
    raw_check(&path);
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn invalid_configuration_stops_start_up_naming_parameter_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("agent.log=loud", "agent.log: invalid value \"loud\""),
        (
            "agent.hotplug_timeout=soon",
            "agent.hotplug_timeout: invalid value \"soon\"",
        ),
        (
            "agent.server_addr=tcp://x:1",
            "agent.server_addr: invalid value \"tcp://x:1\"",
        ),
        (
            "agent.log_vport=-5",
            "agent.log_vport: invalid value \"-5\"",
        ),
    ];
    for (cmdline, expect) in cases {
        let f = dir.path().join("cmdline");
        std::fs::write(&f, cmdline).unwrap();
        let out = Command::new(bin("kata-agent"))
            .arg("--cmdline")
            .arg(&f)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmdline}: started anyway");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{cmdline}: {err}");
    }
    let out = Command::new(bin("kata-agent"))
        .env("KATA_AGENT_LOG_LEVEL", "verbose")
        .arg("--cmdline")
        .arg("/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("KATA_AGENT_LOG_LEVEL: invalid value \"verbose\""));
    let out = Command::new(bin("kata-agent"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frobnicate"));
}

#[test]
fn help_and_version() {
    let out = Command::new(bin("kata-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--server-addr", "agent.log_vport", "KATA_AGENT_SERVER_ADDR"] {
        assert!(text.contains(word), "help lacks {word}");
    }
    let out = Command::new(bin("kata-agent"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn logs_are_json_lines_with_kata_fields_at_the_configured_level() {
    let agent = Agent::start_with(&bin("kata-agent"), "agent.log=debug agent.bogus=1", &[]);
    raw_check(&agent.socket);
    let log = agent.log_text();
    let mut saw_debug = false;
    let mut saw_unknown = false;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["ts", "level", "msg", "pid", "name", "source", "subsystem"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        assert_eq!(v["name"], "kata-agent");
        assert_eq!(v["source"], "agent");
        assert_eq!(v["pid"], agent.pid().to_string());
        saw_debug |= v["level"] == "debug";
        saw_unknown |= v["msg"].as_str().unwrap_or("").contains("agent.bogus=1");
    }
    assert!(saw_debug, "no debug line at agent.log=debug:\n{log}");
    assert!(saw_unknown, "unknown parameter not reported:\n{log}");
    drop(agent);

    let agent = Agent::start_with(&bin("kata-agent"), "agent.log=warn", &[]);
    raw_check(&agent.socket);
    let log = agent.log_text();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["level"] == "warn" || v["level"] == "error",
            "line below warn at agent.log=warn: {line}"
        );
    }
}

#[test]
fn readme_method_table_matches_the_agent() {
    let out = Command::new(bin("kata-agent"))
        .arg("--methods")
        .output()
        .unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split('\t');
        let (name, status) = (fields.next().unwrap(), fields.next().unwrap());
        let want = match (status, fields.next()) {
            ("implemented", _) => format!("| `{name}` | implemented |"),
            (_, Some(why)) => format!("| `{name}` | `UNIMPLEMENTED` status: {why} |"),
            (_, None) => format!("| `{name}` | `UNIMPLEMENTED` status |"),
        };
        assert!(readme.contains(&want), "README.md lacks the row {want:?}");
    }
}

/// A guest kernel without a console yet (`console=hvc0` before its driver
/// is loaded) starts init with fds 0, 1 and 2 closed. The agent must serve,
/// with none of its sockets on them (its logs would be written into them).
#[test]
fn closed_stdio_fds_are_not_taken_by_sockets() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "agent.log=debug").unwrap();
    let mut cmd = Command::new(bin("kata-agent"));
    cmd.arg("--server-addr")
        .arg(format!("unix://{}", socket.display()))
        .arg("--cmdline")
        .arg(&cmdline)
        .env_remove("KATA_AGENT_SERVER_ADDR");
    // SAFETY: only close(2) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 0..=2 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // The file exists from bind(2), connections succeed from listen(2).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&socket).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never listened"
        );
        assert!(child.try_wait().unwrap().is_none(), "the agent exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    raw_check(&socket);
    for fd in 0..=2 {
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", child.id())).unwrap();
        assert!(
            !link.to_string_lossy().starts_with("socket:"),
            "fd {fd}: {link:?}"
        );
    }
    // It logs (into nothing) and serves on.
    for _ in 0..20 {
        raw_check(&socket);
    }
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
