//! Every request message, decoded and handed to its handler as the server
//! does: the generated ttrpc method handler of `grpc.AgentService` or
//! `grpc.Health` decodes the payload and calls the real `AgentImpl`, on a
//! fresh sandbox per input, in the private world of `fuzz/run.sh`.
//!
//! An input is a sequence of up to 8 requests, each `[method][len lo][len
//! hi][payload]`: `method` indexes the methods in wire order (AgentService's
//! 42, then Check and Version). After the sequence the agent shuts down as
//! on SIGTERM and must leave no mount behind. A panic anywhere (a handler,
//! a blocking task) aborts, and libFuzzer reports it.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use guest_agent_fuzz::{agent, assert_private_world, mount_points, runtime, services};
use kata_agent::rpc::METHODS;
use ttrpc::r#async::TtrpcContext;

/// Long polls, answered only when something happens: given a short while.
const LONG_POLLS: &[&str] = &["GetOOMEvent", "WaitProcess", "ReadStdout", "ReadStderr"];

fn methods() -> &'static [(&'static str, &'static str)] {
    static M: OnceLock<Vec<(&str, &str)>> = OnceLock::new();
    M.get_or_init(|| {
        let mut m: Vec<(&str, &str)> = METHODS
            .iter()
            .map(|(name, _)| ("grpc.AgentService", *name))
            .collect();
        m.push(("grpc.Health", "Check"));
        m.push(("grpc.Health", "Version"));
        m
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert_private_world();
    let table = methods();
    let mut reqs = Vec::new();
    let mut rest = data;
    while let [m, lo, hi, tail @ ..] = rest {
        if reqs.len() == 8 {
            break;
        }
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        reqs.push((table[usize::from(*m) % table.len()], payload.to_vec()));
        rest = next;
    }
    if reqs.is_empty() {
        return;
    }
    let before = mount_points();
    runtime().block_on(async {
        let agent = agent();
        let services = services(&agent);
        for ((service, method), payload) in reqs {
            let handler = services
                .get(service)
                .and_then(|s| s.methods.get(method))
                .unwrap_or_else(|| panic!("/{service}/{method}: not registered"));
            let mut req = ttrpc::Request::new();
            req.service = service.to_string();
            req.method = method.to_string();
            req.payload = payload;
            let limit = if LONG_POLLS.contains(&method) {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(20)
            };
            let call = handler.handler(TtrpcContext::default(), req);
            if tokio::time::timeout(limit, call).await.is_err() && !LONG_POLLS.contains(&method) {
                panic!("/{service}/{method}: no answer after {limit:?}");
            }
        }
        agent.shutdown().await;
    });
    let after = mount_points();
    assert_eq!(before, after, "mounts left behind after shutdown");
});
