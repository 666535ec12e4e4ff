//! The agent's console: a stderr nobody reads (a guest console the host
//! stopped draining) must never stop the agent from answering.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use integration_tests::*;
use protocols::health::CheckRequest;

/// A pipe: (read end, write end).
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Everything the pipe holds now, without waiting for more.
fn drain(file: &mut File) -> String {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut text = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

async fn checks(h: &protocols::health_ttrpc::HealthClient, n: usize) {
    for i in 0..n {
        // A bound on a stuck agent, not a measure of a fast one.
        let ctx = ttrpc::context::with_timeout(Duration::from_secs(20).as_nanos() as i64);
        if let Err(e) = h.check(ctx, &CheckRequest::new()).await {
            panic!("Check {i} with the agent's stderr unread: {e:?}");
        }
    }
}

/// 64 KiB of pipe fill up after a few hundred log lines; every request at
/// trace level logs several. With writes that wait for the reader, the
/// agent's only async thread stops on the first full pipe and Check is
/// never answered; with the non-blocking console, lines are dropped
/// instead, and counted.
#[test]
fn an_unread_stderr_never_stops_the_agent() {
    let (mut rx, tx) = pipe();
    let mut agent = Agent::start_with_stderr("agent.log=trace", Stdio::from(tx));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(async {
        let c = ttrpc::asynchronous::Client::connect(&agent.uri())
            .await
            .unwrap();
        protocols::health_ttrpc::HealthClient::new(c)
    });
    rt.block_on(checks(&h, 2000));
    assert!(agent.alive(), "the agent exited");
    let first = drain(&mut rx);
    assert!(
        first.len() >= 60 * 1024,
        "the pipe never filled: {} bytes",
        first.len()
    );
    // With room again, the agent reports what it dropped.
    rt.block_on(checks(&h, 1));
    let mut later = String::new();
    for _ in 0..100 {
        later.push_str(&drain(&mut rx));
        if later.contains("log lines dropped") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        later.contains("log lines dropped: the console did not take them"),
        "no report of the dropped lines in: {later}"
    );
}
