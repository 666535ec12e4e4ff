//! What the agent policy costs a request: ExecProcess of a realistic
//! process into a container that does not exist (the handler answers
//! NOT_FOUND at once), sent to an agent without a policy and to one running
//! upstream's allow-all policy, the same client, interleaved. The
//! difference of the medians is the check: the request's JSON form and one
//! rule's evaluation.

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::*;
use protocols::agent::ExecProcessRequest;
use protocols::oci;

/// upstream's `allow-all.rego` (src/kata-opa): the default policy of its
/// guest images, one `default <Request> := true` per request type.
const ALLOW_ALL: &str = include_str!("../../../../agent/src/policy/allow-all.rego");

fn exec_request() -> ExecProcessRequest {
    let mut p = oci::Process::new();
    p.Args = vec![
        "sh".into(),
        "-c".into(),
        "echo probe; cat /etc/hostname".into(),
    ];
    p.Env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "HOSTNAME=pod".into(),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".into(),
        "KUBERNETES_SERVICE_PORT=443".into(),
    ];
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    let mut req = ExecProcessRequest::new();
    req.container_id = "no-such-container".into();
    req.exec_id = "probe".into();
    req.process = Some(p).into();
    req
}

/// Median latency of `n` ExecProcess calls on one connection.
async fn exec_p50(uri: &str, n: usize) -> Option<Duration> {
    let c = ttrpc::asynchronous::Client::connect(uri).await.ok()?;
    let client = protocols::agent_ttrpc::AgentServiceClient::new(c);
    let req = exec_request();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let ctx = ttrpc::context::with_timeout(10_000_000_000);
        // NOT_FOUND is the expected answer; only the time counts.
        let _ = client.exec_process(ctx, &req).await;
        lat.push(t.elapsed());
    }
    lat.sort();
    Some(percentile(&lat, 50.0))
}

/// The median added by the check, in microseconds.
pub fn run(agent_path: &Path) -> Option<f64> {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("policy figures: temp dir: {e}");
            return None;
        }
    };
    let file = dir.path().join("allow-all.rego");
    if let Err(e) = std::fs::write(&file, ALLOW_ALL) {
        eprintln!("policy figures: {e}");
        return None;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("policy figures: runtime: {e}");
            return None;
        }
    };
    let none = Agent::start_with(agent_path, "", &[]);
    let allow_all = Agent::start_with(
        agent_path,
        &format!("agent.policy_file={}", file.display()),
        &[],
    );
    // A B B A rounds, so load on the machine weighs on both alike.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..4 {
        let order = if round % 3 == 0 {
            [&none, &allow_all]
        } else {
            [&allow_all, &none]
        };
        for a in order {
            if let Some(p50) = rt.block_on(exec_p50(&a.uri(), 1000)) {
                if std::ptr::eq(a, &none) {
                    without.push(p50);
                } else {
                    with.push(p50);
                }
            }
        }
    }
    without.sort();
    with.sort();
    if without.is_empty() || with.is_empty() {
        eprintln!("policy figures: no answers");
        return None;
    }
    let (a, b) = (percentile(&without, 50.0), percentile(&with, 50.0));
    eprintln!(
        "policy check: ExecProcess p50 {} us with upstream's allow-all, {} us without a policy",
        b.as_micros(),
        a.as_micros()
    );
    Some(b.as_secs_f64() * 1e6 - a.as_secs_f64() * 1e6)
}
