//! Structured JSON logs in the shape Kata's log tooling reads: one object a
//! line with `ts`, `level`, `msg`, `pid`, `name`, `source` and `subsystem`.
//!
//! Every `log` record goes through here, ttrpc's own included; the subsystem
//! is taken from the record's target (`kata_agent::rpc::health` -> `rpc`,
//! `ttrpc::...` -> `ttrpc`).

pub mod console;

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Level;

/// Where log lines go. Boxed so that init can later point it at the console
/// or a vsock stream.
pub type Sink = Box<dyn Write + Send>;

struct JsonLogger {
    level: log::LevelFilter,
    pid: String,
    sink: Mutex<Sink>,
}

/// Installs the JSON logger at `level`, writing to `sink`.
pub fn init(level: Level, sink: Sink) -> Result<(), log::SetLoggerError> {
    let logger = JsonLogger {
        level: level.filter(),
        pid: std::process::id().to_string(),
        sink: Mutex::new(sink),
    };
    log::set_boxed_logger(Box::new(logger))?;
    log::set_max_level(level.filter());
    Ok(())
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// `kata_agent::rpc::health` -> `rpc`; `kata_agent` -> `agent`; `ttrpc::x` -> `ttrpc`.
pub fn subsystem(target: &str) -> &str {
    let mut parts = target.split("::");
    match (parts.next(), parts.next()) {
        (Some("kata_agent"), Some(sub)) => sub,
        (Some("kata_agent"), None) => "agent",
        (Some(first), _) => first,
        (None, _) => "agent",
    }
}

/// Appends `s` to `out` as a JSON string literal, escaped as serde_json
/// escapes it (the log's lines and the policy's input both read as JSON).
pub fn push_json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 UTC time with nanoseconds, e.g. `2026-11-28T02:01:47.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Formats one record as a JSON line (with the trailing newline).
pub fn format_line(
    pid: &str,
    level: log::Level,
    target: &str,
    msg: &str,
    now: SystemTime,
) -> String {
    let mut line = String::with_capacity(160 + msg.len());
    line.push_str("{\"ts\":\"");
    line.push_str(&rfc3339(now));
    line.push_str("\",\"level\":\"");
    line.push_str(level_name(level));
    line.push_str("\",\"msg\":");
    push_json_str(&mut line, msg);
    line.push_str(",\"pid\":\"");
    line.push_str(pid);
    line.push_str("\",\"name\":\"kata-agent\",\"source\":\"agent\",\"subsystem\":");
    push_json_str(&mut line, subsystem(target));
    line.push_str(",\"version\":\"");
    line.push_str(env!("CARGO_PKG_VERSION"));
    line.push_str("\"}\n");
    line
}

impl log::Log for JsonLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let line = format_line(
            &self.pid,
            record.level(),
            record.target(),
            &msg,
            SystemTime::now(),
        );
        if let Ok(mut sink) = self.sink.lock() {
            // A log line that cannot be written must never take the agent down.
            let _ = sink.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        if let Ok(mut sink) = self.sink.lock() {
            let _ = sink.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 5); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000005Z");
        let t = UNIX_EPOCH + Duration::new(1_795_831_307, 123_456_789);
        assert_eq!(rfc3339(t), "2026-11-28T02:01:47.123456789Z");
    }

    #[test]
    fn subsystems() {
        assert_eq!(subsystem("kata_agent::rpc::health"), "rpc");
        assert_eq!(subsystem("kata_agent"), "agent");
        assert_eq!(subsystem("ttrpc::r#async::server"), "ttrpc");
    }

    #[test]
    fn line_is_json_with_kata_fields() {
        let line = format_line(
            "42",
            log::Level::Warn,
            "kata_agent::server",
            "quote \" backslash \\ newline \n ctl \u{1}",
            UNIX_EPOCH,
        );
        assert!(line.ends_with("}\n"));
        assert!(line.contains(r#""level":"warn""#));
        assert!(line.contains(r#""msg":"quote \" backslash \\ newline \n ctl \u0001""#));
        assert!(line.contains(r#""pid":"42""#));
        assert!(line.contains(r#""name":"kata-agent""#));
        assert!(line.contains(r#""source":"agent""#));
        assert!(line.contains(r#""subsystem":"server""#));
        assert!(line.contains(r#""ts":"1970-01-01T00:00:00.000000000Z""#));
    }
}
