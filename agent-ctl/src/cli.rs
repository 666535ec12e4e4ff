//! The command line, parsed by hand: a few options and four commands, and a
//! help text that lists the methods from the descriptors.

use std::fmt;
use std::time::Duration;

use crate::addr::{self, Address};
use crate::duration;

/// Environment variable read when `--addr` is not given.
pub const ADDR_ENV: &str = "KATA_AGENT_ADDR";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A mistake on the command line (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Call {
        method: String,
        input: Option<String>,
        emit_defaults: bool,
    },
    Repeat {
        method: String,
        input: Option<String>,
        count: u64,
        connections: u32,
        json: bool,
    },
    List,
    Describe {
        name: String,
    },
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// `--addr`/`--server-address`, before falling back to the environment.
    pub addr: Option<String>,
    pub hybrid_vsock: bool,
    pub hybrid_vsock_port: Option<u32>,
    /// `None`: no timeout (`--timeout 0`).
    pub timeout: Option<Duration>,
    pub command: Command,
}

impl Cli {
    /// The address to connect to: `--addr`, else `$KATA_AGENT_ADDR`, with
    /// Kata's `--hybrid-vsock [--hybrid-vsock-port]` applied.
    pub fn address(&self, env: Option<String>) -> Result<Address, UsageError> {
        let text = match (&self.addr, env) {
            (Some(a), _) => a.clone(),
            (None, Some(e)) if !e.is_empty() => e,
            _ => {
                return Err(usage(format!(
                    "no agent address: pass --addr ADDR or set {ADDR_ENV} ({})",
                    addr::FORMS
                )))
            }
        };
        let parsed = Address::parse(&text).map_err(usage)?;
        if self.hybrid_vsock {
            parsed
                .into_hybrid(self.hybrid_vsock_port.unwrap_or(addr::DEFAULT_AGENT_PORT))
                .map_err(usage)
        } else if self.hybrid_vsock_port.is_some() {
            Err(usage("--hybrid-vsock-port needs --hybrid-vsock"))
        } else {
            Ok(parsed)
        }
    }
}

/// Parses the arguments after the program name. Options may come before or
/// after the command; `--` ends options.
pub fn parse(args: &[String]) -> Result<Cli, UsageError> {
    let mut addr = None;
    let mut hybrid_vsock = false;
    let mut hybrid_vsock_port = None;
    let mut timeout = Some(DEFAULT_TIMEOUT);
    let mut help = false;
    let mut version = false;
    let mut count: Option<u64> = None;
    let mut connections: Option<u32> = None;
    let mut json = false;
    let mut emit_defaults = false;
    let mut positional: Vec<&str> = Vec::new();

    let mut i = 0;
    let mut options_done = false;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        if options_done || arg == "-" || !arg.starts_with('-') {
            positional.push(arg);
            continue;
        }
        if arg == "--" {
            options_done = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (arg, None),
        };
        let mut value = |what: &str| -> Result<String, UsageError> {
            if let Some(v) = inline {
                return Ok(v.to_string());
            }
            let v = args
                .get(i)
                .ok_or_else(|| usage(format!("{name} needs a value ({what})")))?;
            i += 1;
            Ok(v.clone())
        };
        let flag = |set: &mut bool| -> Result<(), UsageError> {
            if inline.is_some() {
                return Err(usage(format!("{name} takes no value")));
            }
            *set = true;
            Ok(())
        };
        match name {
            "-h" | "--help" => flag(&mut help)?,
            "-V" | "--version" => flag(&mut version)?,
            "-a" | "--addr" | "--server-address" => addr = Some(value("an address")?),
            "-t" | "--timeout" => {
                let d = duration::parse(&value("a duration")?).map_err(usage)?;
                timeout = (!d.is_zero()).then_some(d);
            }
            "--hybrid-vsock" => flag(&mut hybrid_vsock)?,
            "--hybrid-vsock-port" => {
                let v = value("a port")?;
                let port = v
                    .parse::<u32>()
                    .map_err(|_| usage(format!("--hybrid-vsock-port {v:?}: not a port number")))?;
                hybrid_vsock_port = Some(port);
            }
            "-n" | "--count" => {
                let v = value("a request count")?;
                let n =
                    v.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        usage(format!("{name} {v:?}: expected a count of 1 or more"))
                    })?;
                count = Some(n);
            }
            "-c" | "--connections" => {
                let v = value("a connection count")?;
                let n = v
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| (1..=4096).contains(&n))
                    .ok_or_else(|| {
                        usage(format!("{name} {v:?}: expected 1 to 4096 connections"))
                    })?;
                connections = Some(n);
            }
            "--json" => flag(&mut json)?,
            "--emit-defaults" => flag(&mut emit_defaults)?,
            _ => return Err(usage(format!("unknown option {arg:?}"))),
        }
    }

    let command = if help {
        Command::Help
    } else if version {
        Command::Version
    } else {
        let (cmd, rest) = match positional.split_first() {
            Some((c, r)) => (*c, r),
            None => return Err(usage("missing command")),
        };
        let only = |allowed: &str| -> Result<(), UsageError> {
            for (set, opt) in [
                (count.is_some(), "-n"),
                (connections.is_some(), "-c"),
                (json, "--json"),
                (emit_defaults, "--emit-defaults"),
            ] {
                if set && !allowed.split(' ').any(|a| a == opt) {
                    return Err(usage(format!("{opt} does not apply to {cmd}")));
                }
            }
            Ok(())
        };
        let method_and_input = |rest: &[&str]| -> Result<(String, Option<String>), UsageError> {
            match rest {
                [] => Err(usage(format!("{cmd}: missing method name"))),
                [m] => Ok((m.to_string(), None)),
                [m, input] => Ok((m.to_string(), Some(input.to_string()))),
                [_, _, extra, ..] => Err(usage(format!(
                    "{cmd}: unexpected argument {extra:?} (quote the JSON as one argument)"
                ))),
            }
        };
        match cmd {
            "call" => {
                only("--emit-defaults")?;
                let (method, input) = method_and_input(rest)?;
                Command::Call {
                    method,
                    input,
                    emit_defaults,
                }
            }
            "repeat" => {
                only("-n -c --json")?;
                let (method, input) = method_and_input(rest)?;
                Command::Repeat {
                    method,
                    input,
                    count: count.ok_or_else(|| usage("repeat: missing -n N"))?,
                    connections: connections.unwrap_or(1),
                    json,
                }
            }
            "list" | "help" | "version" => {
                only("")?;
                if let Some(extra) = rest.first() {
                    return Err(usage(format!("{cmd}: unexpected argument {extra:?}")));
                }
                match cmd {
                    "list" => Command::List,
                    "help" => Command::Help,
                    _ => Command::Version,
                }
            }
            "describe" => {
                only("")?;
                match rest {
                    [name] => Command::Describe {
                        name: name.to_string(),
                    },
                    [] => return Err(usage("describe: missing method or message name")),
                    [_, extra, ..] => {
                        return Err(usage(format!("describe: unexpected argument {extra:?}")))
                    }
                }
            }
            other => {
                let hint = if other.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                    format!("; to call a method: agent-ctl call {other}")
                } else {
                    String::new()
                };
                return Err(usage(format!("unknown command {other:?}{hint}")));
            }
        }
    };
    Ok(Cli {
        addr,
        hybrid_vsock,
        hybrid_vsock_port,
        timeout,
        command,
    })
}

/// The help text; `methods` is the method list from the descriptors.
pub fn help(methods: &str) -> String {
    format!(
        "\
agent-ctl: call any kata-agent ttrpc method by name, with JSON

Usage:
  agent-ctl [OPTIONS] call <METHOD> [JSON | @FILE | file://FILE | -]
  agent-ctl [OPTIONS] repeat -n N [-c CONNECTIONS] [--json] <METHOD> [JSON | @FILE | -]
  agent-ctl list
  agent-ctl describe <METHOD | MESSAGE>
  agent-ctl --help | --version

Commands:
  call      send one request; print the response as JSON (proto field names)
            on stdout. No JSON means {{}}; fields left out keep their defaults;
            field names may be proto names or lowerCamelCase. A non-OK status
            prints 'error: <CODE>: <message>' on stderr and exits 1.
  repeat    send the request N times on each of CONNECTIONS connections (default
            1), concurrently, one in flight per connection; print count, errors,
            latency p50/p99/max in µs and requests/s (--json: one JSON object
            with count, errors, p50_us, p99_us, max_us, mean_us, elapsed_s,
            throughput_rps, ...). Exits 1 if any request failed.
  list      list every method: service/method, input -> output
  describe  print the fields (name, number, type) of a method's input message,
            or of any message by name (e.g. grpc.Spec)

Options:
  -a, --addr ADDR            agent address (default: ${ADDR_ENV}); also --server-address
  -t, --timeout DURATION     bound on connecting (retries included) and on each
                             request: 500ms, 5s, 2m, 1.5 (seconds); 0 = none [default: 5s]
      --hybrid-vsock         treat a unix:// ADDR as hybrid vsock (Kata agent-ctl spelling)
      --hybrid-vsock-port P  guest port for --hybrid-vsock [default: 1024]
      --emit-defaults        call: also print fields at their default value
  -n, --count N              repeat: requests per connection
  -c, --connections C        repeat: concurrent connections [default: 1]
      --json                 repeat: print the figures as one JSON object
  -h, --help                 this text
  -V, --version              the version

Addresses:
  unix:///PATH               Unix socket (the agent run on the host, for tests)
  unix://@NAME               abstract Unix socket
  vsock://CID:PORT           vsock, e.g. vsock://3:1024
  hvsock:///PATH:PORT        hybrid vsock: the VMM's Unix socket on the host
                             (Firecracker, Cloud Hypervisor, vhost-device-vsock);
                             sends 'CONNECT PORT', expects 'OK ...'
  Connecting is retried (every 20 ms, growing to 200 ms) until the timeout,
  as a shim does while the guest boots; a hybrid vsock handshake that gets no
  reply within 5 s is dropped and tried again on a new connection.

Methods (METHOD may be Name, Service/Name or package.Service/Name):
{methods}
Exit status: 0 ok, 1 request or connection failed, 2 usage error.
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cli, UsageError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn call_forms() {
        let cli = p(&["--addr", "unix:///a.sock", "call", "Check"]).unwrap();
        assert_eq!(cli.addr.as_deref(), Some("unix:///a.sock"));
        assert_eq!(cli.timeout, Some(DEFAULT_TIMEOUT));
        assert_eq!(
            cli.command,
            Command::Call {
                method: "Check".into(),
                input: None,
                emit_defaults: false
            }
        );
        let cli = p(&[
            "call",
            "CreateContainer",
            "{\"container_id\":\"a\"}",
            "--timeout=500ms",
        ])
        .unwrap();
        assert_eq!(cli.timeout, Some(Duration::from_millis(500)));
        assert_eq!(
            cli.command,
            Command::Call {
                method: "CreateContainer".into(),
                input: Some("{\"container_id\":\"a\"}".into()),
                emit_defaults: false
            }
        );
        let cli = p(&["call", "Check", "-", "--timeout", "0", "--emit-defaults"]).unwrap();
        assert_eq!(cli.timeout, None);
        assert!(
            matches!(cli.command, Command::Call { input: Some(ref i), emit_defaults: true, .. } if i == "-")
        );
    }

    #[test]
    fn repeat_forms() {
        let cli = p(&["repeat", "-n", "100", "-c", "4", "--json", "Check"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Repeat {
                method: "Check".into(),
                input: None,
                count: 100,
                connections: 4,
                json: true
            }
        );
        let cli = p(&["repeat", "--count=3", "grpc.Health/Check", "{}"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Repeat {
                count: 3,
                connections: 1,
                json: false,
                ..
            }
        ));
    }

    #[test]
    fn other_commands() {
        assert_eq!(p(&["list"]).unwrap().command, Command::List);
        assert_eq!(p(&["--help"]).unwrap().command, Command::Help);
        assert_eq!(p(&["call", "-h"]).unwrap().command, Command::Help);
        assert_eq!(p(&["-V"]).unwrap().command, Command::Version);
        assert_eq!(
            p(&["describe", "CreateContainer"]).unwrap().command,
            Command::Describe {
                name: "CreateContainer".into()
            }
        );
    }

    #[track_caller]
    fn assert_usage(args: &[&str], needle: &str) {
        match p(args) {
            Ok(c) => panic!("{args:?} parsed as {c:?}"),
            Err(e) => assert!(e.0.contains(needle), "{args:?}: {e} lacks {needle:?}"),
        }
    }

    #[test]
    fn usage_errors() {
        assert_usage(&[], "missing command");
        assert_usage(&["call"], "missing method name");
        assert_usage(&["call", "Check", "{}", "x"], "unexpected argument \"x\"");
        assert_usage(&["repeat", "Check"], "missing -n");
        assert_usage(&["repeat", "-n", "0", "Check"], "1 or more");
        assert_usage(&["repeat", "-n", "1", "-c", "0", "Check"], "1 to 4096");
        assert_usage(&["call", "-n", "1", "Check"], "-n does not apply to call");
        assert_usage(&["list", "--json"], "--json does not apply to list");
        assert_usage(&["call", "Check", "--timeout", "5x"], "invalid duration");
        assert_usage(&["call", "Check", "--timeout"], "--timeout needs a value");
        assert_usage(&["--bogus", "list"], "unknown option \"--bogus\"");
        assert_usage(&["--json=1", "list"], "--json takes no value");
        assert_usage(&["Check"], "agent-ctl call Check");
        assert_usage(&["describe"], "missing method or message name");
        assert_usage(&["describe", "A", "B"], "unexpected argument \"B\"");
        assert_usage(&["list", "x"], "unexpected argument \"x\"");
    }

    #[test]
    fn address_sources() {
        let cli = p(&["list"]).unwrap();
        assert!(cli.address(None).unwrap_err().0.contains(ADDR_ENV));
        assert!(cli.address(Some(String::new())).is_err());
        assert_eq!(
            cli.address(Some("vsock://3:1024".into())),
            Ok(Address::Vsock { cid: 3, port: 1024 })
        );
        let cli = p(&["--addr", "unix:///x.sock", "list"]).unwrap();
        assert_eq!(
            cli.address(Some("vsock://3:1024".into())),
            Ok(Address::Unix("/x.sock".into()))
        );
        let cli = p(&[
            "--server-address",
            "unix:///clh.sock",
            "--hybrid-vsock",
            "list",
        ])
        .unwrap();
        assert_eq!(
            cli.address(None),
            Ok(Address::HybridVsock {
                path: "/clh.sock".into(),
                port: 1024
            })
        );
        let cli = p(&[
            "--addr=unix:///clh.sock",
            "--hybrid-vsock",
            "--hybrid-vsock-port",
            "2000",
            "list",
        ])
        .unwrap();
        assert_eq!(
            cli.address(None),
            Ok(Address::HybridVsock {
                path: "/clh.sock".into(),
                port: 2000
            })
        );
        let cli = p(&[
            "--addr",
            "unix:///x.sock",
            "--hybrid-vsock-port",
            "2",
            "list",
        ])
        .unwrap();
        assert!(cli.address(None).is_err());
        let cli = p(&["--addr", "nope", "list"]).unwrap();
        assert!(cli
            .address(None)
            .unwrap_err()
            .0
            .contains("invalid address \"nope\""));
    }
}
