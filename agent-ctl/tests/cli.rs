//! Drives the real `agent-ctl` binary against an in-process ttrpc server
//! built from the `protocols` crate, directly on a Unix socket and through
//! a hybrid vsock proxy (`CONNECT <port>` / `OK <n>`), as a VMM exposes it.

// Test scaffolding: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use protocols::agent::{self, CreateContainerRequest};
use protocols::empty::Empty;
use protocols::health::{self, health_check_response::ServingStatus};
use protocols::{agent_ttrpc, health_ttrpc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use ttrpc::r#async::TtrpcContext;

/// `CreateContainer` requests the server got, by container id.
fn created() -> &'static Mutex<HashMap<String, CreateContainerRequest>> {
    static CREATED: OnceLock<Mutex<HashMap<String, CreateContainerRequest>>> = OnceLock::new();
    CREATED.get_or_init(Default::default)
}

struct TestAgent;

#[async_trait]
impl health_ttrpc::Health for TestAgent {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: health::CheckRequest,
    ) -> ttrpc::Result<health::HealthCheckResponse> {
        let mut resp = health::HealthCheckResponse::new();
        resp.status = ServingStatus::SERVING.into();
        Ok(resp)
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: health::CheckRequest,
    ) -> ttrpc::Result<health::VersionCheckResponse> {
        let mut resp = health::VersionCheckResponse::new();
        resp.grpc_version = "test-grpc".into();
        resp.agent_version = "test-agent".into();
        Ok(resp)
    }
}

#[async_trait]
impl agent_ttrpc::AgentService for TestAgent {
    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        if req.container_id.is_empty() {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                "container_id is empty",
            )));
        }
        if let Ok(mut map) = created().lock() {
            map.insert(req.container_id.clone(), req);
        }
        Ok(Empty::new())
    }

    async fn pause_container(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::PauseContainerRequest,
    ) -> ttrpc::Result<Empty> {
        Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
            ttrpc::Code::UNIMPLEMENTED,
            "/grpc.AgentService/PauseContainer: not implemented by this agent",
        )))
    }

    async fn get_metrics(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::GetMetricsRequest,
    ) -> ttrpc::Result<agent::Metrics> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(agent::Metrics::new())
    }

    async fn get_guest_details(
        &self,
        _ctx: &TtrpcContext,
        req: agent::GuestDetailsRequest,
    ) -> ttrpc::Result<agent::GuestDetailsResponse> {
        let mut details = agent::AgentDetails::new();
        details.version = "1.2.3".into();
        details.storage_handlers = vec!["virtio-fs".into(), "local".into()];
        let mut resp = agent::GuestDetailsResponse::new();
        resp.mem_block_size_bytes = if req.mem_block_size { 128 << 20 } else { 0 };
        resp.agent_details = Some(details).into();
        Ok(resp)
    }
}

struct Sockets {
    /// The ttrpc server itself.
    agent: PathBuf,
    /// A hybrid vsock proxy in front of it, guest port 1024.
    hybrid: PathBuf,
}

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("agent-ctl-it-{}-{tag}.sock", std::process::id()))
}

/// Answers `CONNECT 1024` with `OK <n>` and then splices the stream to the
/// agent socket; any other port is refused, as a VMM does.
async fn hybrid_proxy(listener: UnixListener, agent: PathBuf) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut host = BufReader::new(stream);
            let mut line = String::new();
            if host.read_line(&mut line).await.is_err() {
                return;
            }
            if line != "CONNECT 1024\n" {
                let _ = host.get_mut().write_all(b"FAILED\n").await;
                return;
            }
            let Ok(mut guest) = UnixStream::connect(&agent).await else {
                return;
            };
            if host.get_mut().write_all(b"OK 1073741824\n").await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut host, &mut guest).await;
        });
    }
}

/// Starts the server and the proxy once for the whole test binary.
fn sockets() -> &'static Sockets {
    static SOCKETS: OnceLock<Sockets> = OnceLock::new();
    SOCKETS.get_or_init(|| {
        let agent = temp_path("agent");
        let hybrid = temp_path("hybrid");
        let _ = std::fs::remove_file(&agent);
        let _ = std::fs::remove_file(&hybrid);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (agent_path, hybrid_path) = (agent.clone(), hybrid.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let service = Arc::new(TestAgent);
                let mut server = ttrpc::r#async::Server::new()
                    .bind(&format!("unix://{}", agent_path.display()))
                    .unwrap()
                    .register_service(health_ttrpc::create_health(service.clone()))
                    .register_service(agent_ttrpc::create_agent_service(service));
                server.start().await.unwrap();
                let proxy = UnixListener::bind(&hybrid_path).unwrap();
                tokio::spawn(hybrid_proxy(proxy, agent_path));
                ready_tx.send(()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Sockets { agent, hybrid }
    })
}

fn unix_addr(path: &Path) -> String {
    format!("unix://{}", path.display())
}

fn agent_ctl(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-ctl"));
    cmd.args(args).env_remove("KATA_AGENT_ADDR");
    cmd
}

fn run(args: &[&str]) -> Output {
    agent_ctl(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

#[test]
fn call_prints_the_response_as_json() {
    let addr = unix_addr(&sockets().agent);
    let o = run(&["--addr", &addr, "call", "Check"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "{\"status\": \"SERVING\"}\n");
    assert_eq!(stderr(&o), "");

    let o = run(&["call", "grpc.Health/Version", "{}", "--addr", &addr]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "{\"grpc_version\": \"test-grpc\", \"agent_version\": \"test-agent\"}\n"
    );

    let o = run(&[
        "--addr",
        &addr,
        "call",
        "GetGuestDetails",
        r#"{"memBlockSize": true}"#,
    ]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "{\"mem_block_size_bytes\": \"134217728\", \"agent_details\": \
         {\"version\": \"1.2.3\", \"storage_handlers\": [\"virtio-fs\", \"local\"]}}\n"
    );
}

#[test]
fn address_from_the_environment() {
    let o = agent_ctl(&["call", "Check"])
        .env("KATA_AGENT_ADDR", unix_addr(&sockets().agent))
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "{\"status\": \"SERVING\"}\n");
}

#[test]
fn emit_defaults_prints_zero_fields() {
    let addr = unix_addr(&sockets().agent);
    let o = run(&[
        "--addr",
        &addr,
        "call",
        "--emit-defaults",
        "GetGuestDetails",
    ]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("\"mem_block_size_bytes\": \"0\""),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("\"support_mem_hotplug_probe\": false"),
        "{}",
        stdout(&o)
    );
}

const CREATE: &str = r#"{
    "container_id": "from-file",
    "OCI": {
        "Version": "1.0.2",
        "Process": {"Args": ["/bin/true"], "Cwd": "/", "User": {"UID": 1}},
        "Root": {"Path": "/run/kata-containers/shared/containers/from-file/rootfs"},
        "Hostname": "box",
        "Annotations": {"a": "b"}
    },
    "storages": [{"driver": "virtio-fs", "mount_point": "/x"}]
}"#;

#[test]
fn nested_request_from_a_file_reaches_the_agent() {
    let addr = unix_addr(&sockets().agent);
    let file = std::env::temp_dir().join(format!("agent-ctl-it-{}.json", std::process::id()));
    std::fs::write(&file, CREATE).unwrap();
    let at_file = format!("@{}", file.display());
    let o = run(&["--addr", &addr, "call", "CreateContainer", &at_file]);
    let _ = std::fs::remove_file(&file);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "{}\n");

    let req = created().lock().unwrap().get("from-file").cloned().unwrap();
    let spec = req.OCI.as_ref().unwrap();
    assert_eq!(spec.Hostname, "box");
    assert_eq!(spec.Process.Args, ["/bin/true"]);
    assert_eq!(spec.Process.User.UID, 1);
    assert_eq!(spec.Annotations.get("a").map(String::as_str), Some("b"));
    assert_eq!(req.storages[0].mount_point, "/x");
}

#[test]
fn request_from_stdin() {
    let addr = unix_addr(&sockets().agent);
    let mut child = agent_ctl(&["--addr", &addr, "call", "CreateContainer", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"containerId": "from-stdin", "execId": "e"}"#)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 0);
    let req = created()
        .lock()
        .unwrap()
        .get("from-stdin")
        .cloned()
        .unwrap();
    assert_eq!(req.exec_id, "e");
}

#[test]
fn status_errors_print_code_and_message() {
    let addr = unix_addr(&sockets().agent);
    let o = run(&[
        "--addr",
        &addr,
        "call",
        "PauseContainer",
        r#"{"container_id": "x"}"#,
    ]);
    assert_exit(&o, 1);
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        "error: UNIMPLEMENTED: /grpc.AgentService/PauseContainer: not implemented by this agent\n"
    );

    let o = run(&["--addr", &addr, "call", "CreateContainer"]);
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        "error: INVALID_ARGUMENT: container_id is empty\n"
    );
}

#[test]
fn request_timeout_is_deadline_exceeded() {
    let addr = unix_addr(&sockets().agent);
    let started = std::time::Instant::now();
    let o = run(&["--addr", &addr, "--timeout", "300ms", "call", "GetMetrics"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).starts_with("error: DEADLINE_EXCEEDED: "),
        "{}",
        stderr(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn hybrid_vsock_both_spellings() {
    let hybrid = &sockets().hybrid;
    let addr = format!("hvsock://{}:1024", hybrid.display());
    let o = run(&["--addr", &addr, "call", "Check"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "{\"status\": \"SERVING\"}\n");

    // Kata agent-ctl's spelling; the port defaults to 1024.
    let o = run(&[
        "--server-address",
        &unix_addr(hybrid),
        "--hybrid-vsock",
        "call",
        "Check",
    ]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "{\"status\": \"SERVING\"}\n");

    // A port nothing serves: refused until the deadline.
    let addr = format!("hvsock://{}:9", hybrid.display());
    let o = run(&["--addr", &addr, "--timeout", "300ms", "call", "Check"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains(&format!("error: connect {addr}: ")), "{err}");
    assert!(err.contains("unexpected reply \"FAILED\""), "{err}");
    assert!(err.contains("gave up after"), "{err}");
}

/// The client starts before the VMM socket exists, as a shim does while
/// the guest boots, and gets through once it appears.
#[test]
fn waits_for_the_vmm_socket_to_appear() {
    let agent = sockets().agent.clone();
    let late = temp_path("late");
    let _ = std::fs::remove_file(&late);
    let addr = format!("hvsock://{}:1024", late.display());
    let child = agent_ctl(&["--addr", &addr, "--timeout", "10s", "call", "Check"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let late_path = late.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = UnixListener::bind(&late_path).unwrap();
            let _ =
                tokio::time::timeout(Duration::from_secs(15), hybrid_proxy(listener, agent)).await;
        });
    });
    let o = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&late);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "{\"status\": \"SERVING\"}\n");
}

#[test]
fn connect_failure_names_the_address() {
    let missing = temp_path("missing");
    let addr = unix_addr(&missing);
    let o = run(&["--addr", &addr, "--timeout", "200ms", "call", "Check"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("error: connect {addr}: ")),
        "{err}"
    );
    assert!(err.contains("gave up after"), "{err}");
}

/// A `"key":value` from the one-line JSON `repeat --json` prints.
fn field(json: &str, key: &str) -> String {
    let start = json
        .find(&format!("\"{key}\":"))
        .map(|i| i + key.len() + 3)
        .unwrap_or_else(|| panic!("{key} missing in {json}"));
    json[start..]
        .split([',', '}'])
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn repeat_reports_figures() {
    let addr = unix_addr(&sockets().agent);
    let o = run(&[
        "--addr", &addr, "repeat", "-n", "20", "-c", "3", "--json", "Check",
    ]);
    assert_exit(&o, 0);
    let json = stdout(&o);
    assert_eq!(json.lines().count(), 1, "{json}");
    assert_eq!(field(&json, "method"), "\"grpc.Health/Check\"");
    assert_eq!(field(&json, "connections"), "3");
    assert_eq!(field(&json, "requests_per_connection"), "20");
    assert_eq!(field(&json, "count"), "60");
    assert_eq!(field(&json, "errors"), "0");
    assert_eq!(field(&json, "first_error"), "null");
    let p50: u64 = field(&json, "p50_us").parse().unwrap();
    let p99: u64 = field(&json, "p99_us").parse().unwrap();
    let max: u64 = field(&json, "max_us").parse().unwrap();
    assert!(p50 <= p99 && p99 <= max, "{json}");
    let rps: f64 = field(&json, "throughput_rps").parse().unwrap();
    assert!(rps > 0.0, "{json}");

    let o = run(&["--addr", &addr, "repeat", "-n", "5", "Check"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("requests     5 (1 connection x 5)"), "{text}");
    assert!(text.contains("latency µs   p50 "), "{text}");
    assert!(text.contains("requests/s"), "{text}");
}

#[test]
fn repeat_fails_when_any_request_fails() {
    let addr = unix_addr(&sockets().agent);
    let o = run(&[
        "--addr",
        &addr,
        "repeat",
        "-n",
        "4",
        "-c",
        "2",
        "--json",
        "PauseContainer",
    ]);
    assert_exit(&o, 1);
    let json = stdout(&o);
    assert_eq!(field(&json, "count"), "8");
    assert_eq!(field(&json, "errors"), "8");
    assert!(
        stderr(&o).contains("error: 8 of 8 requests failed; first: UNIMPLEMENTED: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2() {
    let addr = unix_addr(&sockets().agent);
    for (args, needle) in [
        (
            vec!["call", "NoSuchMethod", "--addr", &addr],
            "unknown method \"NoSuchMethod\"",
        ),
        (
            vec!["--addr", &addr, "call", "Check", r#"{"bogus": 1}"#],
            "invalid JSON for grpc.CheckRequest",
        ),
        (vec!["call", "Check"], "no agent address"),
        (
            vec!["--addr", "tcp://1.2.3.4:5", "call", "Check"],
            "unknown scheme",
        ),
        (
            vec!["--addr", &addr, "call", "Check", "@/nonexistent/x.json"],
            "/nonexistent/x.json",
        ),
        (vec!["frobnicate"], "unknown command"),
        (vec![], "missing command"),
    ] {
        let o = run(&args);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}");
    }
}

#[test]
fn list_help_and_describe() {
    let o = run(&["list"]);
    assert_exit(&o, 0);
    let list = stdout(&o);
    assert_eq!(list.lines().count(), 44, "{list}");
    assert!(list.contains("grpc.Health/Version"), "{list}");

    let o = run(&["--help"]);
    assert_exit(&o, 0);
    let help = stdout(&o);
    assert!(help.contains("agent-ctl [OPTIONS] call <METHOD>"), "{help}");
    assert!(help.contains("hvsock:///PATH:PORT"), "{help}");
    assert!(help.contains(&list), "help lacks the method list");

    let o = run(&["describe", "grpc.AgentService/CreateContainer"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains("message grpc.CreateContainerRequest {"),
        "{text}"
    );
    assert!(text.contains("grpc.Spec"), "{text}");

    let o = run(&["--version"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).starts_with("agent-ctl "));
}
