//! Every method with malformed payloads: random bytes, truncated and
//! oversized fields. Each request gets an answer (a status, never a hang or
//! a crash) and the agent keeps serving. The agent runs in its own mount,
//! UTS and network namespaces; methods that touch what is not namespaced
//! (the clock, memory hot-plug, swap: a payload that parses as a PCI path
//! would have the agent search and rescan the host's PCI buses) are left
//! out.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use integration_tests::*;

/// xorshift64*: deterministic, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Payloads that look like protobuf more often than random bytes do:
/// valid tags with wrong wire types, lengths past the end, huge varints.
fn payload(rng: &mut Rng) -> Vec<u8> {
    match rng.next() % 5 {
        0 => {
            let n = (rng.next() % 64) as usize;
            rng.bytes(n)
        }
        1 => {
            // field 1..15, random wire type, random content
            let mut v = Vec::new();
            for _ in 0..(rng.next() % 6) {
                v.push(((rng.next() % 15 + 1) << 3) as u8 | (rng.next() % 6) as u8);
                let n = (rng.next() % 8) as usize;
                v.extend(rng.bytes(n));
            }
            v
        }
        2 => vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, b'x'], // length far past the end
        3 => vec![
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ], // 10-byte varint
        _ => {
            // a string field holding invalid UTF-8
            let mut v = vec![0x0a, 4];
            v.extend([0xff, 0xfe, 0xc3, 0x28]);
            v
        }
    }
}

#[test]
fn malformed_payloads_to_every_method_get_answers() {
    let agent = Agent::start_isolated();
    let services = protocols::services();
    // A DestroySandbox that parses ends the agent (not PID 1) by contract:
    // sandbox.rs tests that.
    let skip = [
        "SetGuestDateTime",
        "MemHotplugByProbe",
        "AddSwap",
        "GetOOMEvent",
        "DestroySandbox",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut s = raw_connect(&agent.socket);
    let mut id = 1u32;
    let mut answered = 0;
    for svc in &services {
        for m in &svc.methods {
            if skip.contains(&m.name.as_str()) {
                continue;
            }
            for _ in 0..12 {
                let body = payload(&mut rng);
                s.write_all(&request_frame_with_timeout(
                    id,
                    &svc.name,
                    &m.name,
                    &body,
                    Duration::from_secs(10),
                ))
                .unwrap();
                let r = read_response(&mut s).unwrap_or_else(|e| {
                    panic!("{}/{}: no answer to {body:02x?}: {e}", svc.name, m.name)
                });
                assert_eq!(r.stream_id, id);
                answered += 1;
                id += 2;
            }
        }
    }
    assert!(answered > 400, "{answered}");
    raw_check(&agent.socket);
    let mut agent = agent;
    assert!(agent.alive());
    let log = agent.log_text();
    assert!(!log.contains("panic"), "the agent panicked:\n{log}");
}
