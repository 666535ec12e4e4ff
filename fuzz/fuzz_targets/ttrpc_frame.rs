//! The ttrpc frame reader as our server sees it: the real ttrpc server
//! with the agent's services registered (`grpc.AgentService` on a sandbox
//! of the private world of `fuzz/run.sh`, and `grpc.Health`), fed each
//! input as the byte stream of one connection (headers, lengths, stream
//! ids, flags, request envelopes, payloads as they come). After every
//! input a well-formed Check on a new connection must be answered: no
//! byte stream may stop the server.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use guest_agent_fuzz::{agent, assert_private_world, runtime, services};
use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// Where new connections are handed to the server.
fn connections() -> &'static mpsc::UnboundedSender<DuplexStream> {
    static TX: OnceLock<mpsc::UnboundedSender<DuplexStream>> = OnceLock::new();
    TX.get_or_init(|| {
        assert_private_world();
        let (tx, rx) = mpsc::unbounded_channel::<DuplexStream>();
        let incoming = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|s| (Ok::<_, std::io::Error>(s), rx))
        });
        let agent = agent();
        let mut server = ttrpc::r#async::Server::new()
            .add_listener(ttrpc::r#async::transport::Listener::new(incoming))
            .register_service(services(&agent));
        runtime().block_on(async {
            server.start().await.expect("start the ttrpc server");
        });
        // The server lives as long as the process.
        std::mem::forget(server);
        tx
    })
}

/// A well-formed `/grpc.Health/Check` frame with stream id `id`.
fn check_frame(id: u32) -> Vec<u8> {
    let mut req = ttrpc::Request::new();
    req.service = "grpc.Health".into();
    req.method = "Check".into();
    req.payload = protocols::health::CheckRequest::new()
        .write_to_bytes()
        .expect("encode CheckRequest");
    let body = req.write_to_bytes().expect("encode Request");
    let mut frame = Vec::with_capacity(10 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&[1, 0]);
    frame.extend_from_slice(&body);
    frame
}

/// Sends `bytes` on a new connection, then reads until the server closes
/// it or `limit` passes; returns what came back.
async fn exchange(bytes: &[u8], close: bool, limit: Duration) -> Vec<u8> {
    let (mut client, server_end) = tokio::io::duplex(1 << 20);
    if connections().send(server_end).is_err() {
        panic!("the server stopped accepting connections");
    }
    let mut out = Vec::new();
    let io = async {
        let _ = client.write_all(bytes).await;
        if close {
            let _ = client.shutdown().await;
        }
        let mut buf = [0u8; 4096];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // A Check's answer is one short frame.
                    if !close && out.len() >= 10 {
                        let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
                        if out.len() >= 10 + len {
                            break;
                        }
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(limit, io).await;
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = connections();
    runtime().block_on(async {
        exchange(data, true, Duration::from_secs(2)).await;
        let answer = exchange(&check_frame(1), false, Duration::from_secs(20)).await;
        assert!(
            answer.len() > 10 && answer[8] == 2,
            "no answer to Check after the input (got {} bytes)",
            answer.len()
        );
    });
});
