//! `agent-ctl repeat`: the same request N times on each of C connections,
//! concurrently, with latency percentiles and throughput.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::addr::Address;
use crate::rpc::{self, CallError};
use crate::transport;

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub method: String,
    pub connections: u32,
    pub requests_per_connection: u64,
    /// Requests sent in all (connections x requests per connection).
    pub count: u64,
    pub errors: u64,
    /// Round-trip latencies of all requests, failed ones included, in µs.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
    /// From the first request sent to the last response, connects excluded.
    pub elapsed_s: f64,
    pub throughput_rps: f64,
    /// The first failure, to tell why `errors` is not zero.
    pub first_error: Option<String>,
}

/// The value at percentile `p` (0-100] of sorted `samples`, nearest-rank
/// method: the smallest sample with at least p% of samples at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = (p * n as f64 / 100.0).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Sums up latencies (µs) and errors measured over `elapsed`.
pub fn summarize(
    method: String,
    connections: u32,
    requests_per_connection: u64,
    mut latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
) -> Report {
    latencies.sort_unstable();
    let count = latencies.len() as u64;
    let elapsed_s = elapsed.as_secs_f64();
    let mean_us = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&l| l as f64).sum::<f64>() / latencies.len() as f64
    };
    Report {
        method,
        connections,
        requests_per_connection,
        count,
        errors,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        max_us: latencies.last().copied().unwrap_or(0),
        mean_us,
        elapsed_s,
        throughput_rps: if elapsed_s > 0.0 {
            count as f64 / elapsed_s
        } else {
            0.0
        },
        first_error,
    }
}

/// Connects `connections` clients (each its own socket), then has each send
/// `req` `per_connection` times, one request in flight per connection.
pub async fn run(
    addr: &Address,
    timeout: Option<Duration>,
    method_path: String,
    req: ttrpc::Request,
    per_connection: u64,
    connections: u32,
) -> Result<Report> {
    let mut clients = Vec::with_capacity(connections as usize);
    for i in 0..connections {
        let client = transport::connect(addr, timeout)
            .await
            .map_err(|e| anyhow!("connection {} of {connections}: {e:#}", i + 1))?;
        clients.push(client);
    }

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in clients {
        let req = req.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_connection.min(1 << 20) as usize);
            let mut errors = 0u64;
            let mut first_error: Option<CallError> = None;
            for _ in 0..per_connection {
                let t0 = Instant::now();
                let result = rpc::call(&client, req.clone()).await;
                latencies.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                if let Err(e) = result {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (l, e, f) = joined.map_err(|e| anyhow!("request task failed: {e}"))?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f.map(|e| e.to_string());
        }
    }
    let elapsed = started.elapsed();
    Ok(summarize(
        method_path,
        connections,
        per_connection,
        latencies,
        errors,
        first_error,
        elapsed,
    ))
}

impl Report {
    /// Aligned lines for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "method       {}", self.method);
        let _ = writeln!(
            out,
            "requests     {} ({} connection{} x {})",
            self.count,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.requests_per_connection
        );
        let _ = writeln!(out, "errors       {}", self.errors);
        let _ = writeln!(
            out,
            "latency µs   p50 {}  p99 {}  max {}  mean {:.1}",
            self.p50_us, self.p99_us, self.max_us, self.mean_us
        );
        let _ = writeln!(out, "throughput   {:.1} requests/s", self.throughput_rps);
        let _ = writeln!(out, "elapsed      {:.3} s", self.elapsed_s);
        if let Some(e) = &self.first_error {
            let _ = writeln!(out, "first error  {e}");
        }
        out
    }

    /// One JSON object on one line, for scripts.
    pub fn json(&self) -> String {
        format!(
            concat!(
                "{{\"method\":{},\"connections\":{},\"requests_per_connection\":{},",
                "\"count\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},",
                "\"mean_us\":{:.1},\"elapsed_s\":{:.6},\"throughput_rps\":{:.1},\"first_error\":{}}}"
            ),
            json_string(&self.method),
            self.connections,
            self.requests_per_connection,
            self.count,
            self.errors,
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.mean_us,
            self.elapsed_s,
            self.throughput_rps,
            self.first_error
                .as_deref()
                .map_or_else(|| "null".to_string(), json_string),
        )
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 1.0), 1);
        assert_eq!(percentile(&v, 0.0), 1);

        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 50.0), 500);

        // Few samples: p99 is the largest, p50 rounds up.
        assert_eq!(percentile(&[10, 20, 30], 50.0), 20);
        assert_eq!(percentile(&[10, 20, 30], 99.0), 30);
        assert_eq!(percentile(&[10, 20], 50.0), 10);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn summary_sorts_and_counts() {
        let r = summarize(
            "grpc.Health/Check".into(),
            2,
            3,
            vec![300, 100, 200, 600, 500, 400],
            1,
            Some("UNIMPLEMENTED: x".into()),
            Duration::from_millis(3),
        );
        assert_eq!(r.count, 6);
        assert_eq!(r.errors, 1);
        assert_eq!(r.p50_us, 300);
        assert_eq!(r.p99_us, 600);
        assert_eq!(r.max_us, 600);
        assert!((r.mean_us - 350.0).abs() < 1e-9);
        assert!((r.throughput_rps - 2000.0).abs() < 1e-6);
    }

    #[test]
    fn json_has_every_figure() {
        let r = summarize(
            "grpc.Health/Check".into(),
            1,
            2,
            vec![5, 10],
            0,
            None,
            Duration::from_millis(1),
        );
        assert_eq!(
            r.json(),
            "{\"method\":\"grpc.Health/Check\",\"connections\":1,\"requests_per_connection\":2,\
             \"count\":2,\"errors\":0,\"p50_us\":5,\"p99_us\":10,\"max_us\":10,\
             \"mean_us\":7.5,\"elapsed_s\":0.001000,\"throughput_rps\":2000.0,\"first_error\":null}"
        );
        let with_err = Report {
            first_error: Some("INTERNAL: say \"hi\"\n".into()),
            ..r
        };
        assert!(with_err
            .json()
            .ends_with("\"first_error\":\"INTERNAL: say \\\"hi\\\"\\n\"}"));
    }
}
