//! Agent configuration: defaults, an optional config file, the kernel
//! command line, the environment and command-line flags.
//!
//! Precedence, lowest to highest: built-in defaults, the config file
//! (`agent.config_file=` or `--config`), `agent.*` kernel parameters,
//! `KATA_AGENT_*` environment variables, command-line flags. An invalid value
//! anywhere stops start-up with an error naming the parameter and the value;
//! unknown `agent.*` parameters are ignored and reported at debug level.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default time to wait for a hot-plugged device.
pub const DEFAULT_HOTPLUG_TIMEOUT: Duration = Duration::from_secs(3);
/// Default kernel command line location.
pub const DEFAULT_CMDLINE: &str = "/proc/cmdline";

const ENV_SERVER_ADDR: &str = "KATA_AGENT_SERVER_ADDR";
const ENV_LOG_LEVEL: &str = "KATA_AGENT_LOG_LEVEL";

/// Log severity, with Kata's names (`critical` sits above `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Critical,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// Parses a level as Kata and logrus spell it.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "fatal" | "panic" | "critical" => Level::Critical,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Critical => "critical",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// The `log` crate filter that lets this level and everything more severe through.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            Level::Critical | Level::Error => log::LevelFilter::Error,
            Level::Warn => log::LevelFilter::Warn,
            Level::Info => log::LevelFilter::Info,
            Level::Debug => log::LevelFilter::Debug,
            Level::Trace => log::LevelFilter::Trace,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the ttrpc server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// `vsock://<cid>:<port>`; `None` is `-1`, any CID.
    Vsock { cid: Option<u32>, port: u32 },
    /// `unix:///path` (or `unix://@name` for the abstract namespace).
    Unix(String),
}

/// Why a server address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("expected vsock://<cid>:<port>")]
    VsockForm,
    #[error("cid {0:?} is not -1 or a 32-bit number")]
    Cid(String),
    #[error("port {0:?} is not a 32-bit number")]
    Port(String),
    #[error("expected unix:///absolute/path or unix://@name")]
    UnixForm,
    #[error("expected vsock://<cid>:<port> or unix:///path")]
    Scheme,
}

impl ServerAddr {
    pub fn parse(s: &str) -> Result<ServerAddr, AddrError> {
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest.split_once(':').ok_or(AddrError::VsockForm)?;
            let cid = match cid {
                "-1" => None,
                c => Some(
                    c.parse::<u32>()
                        .map_err(|_| AddrError::Cid(c.to_string()))?,
                ),
            };
            let port = port
                .parse::<u32>()
                .map_err(|_| AddrError::Port(port.to_string()))?;
            return Ok(ServerAddr::Vsock { cid, port });
        }
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() || !(path.starts_with('/') || path.starts_with('@')) {
                return Err(AddrError::UnixForm);
            }
            return Ok(ServerAddr::Unix(path.to_string()));
        }
        Err(AddrError::Scheme)
    }

    /// The address in the form ttrpc binds.
    pub fn to_uri(&self) -> String {
        match self {
            ServerAddr::Vsock { cid: None, port } => format!("vsock://-1:{port}"),
            ServerAddr::Vsock {
                cid: Some(cid),
                port,
            } => format!("vsock://{cid}:{port}"),
            ServerAddr::Unix(path) => format!("unix://{path}"),
        }
    }

    /// The socket file to remove on shutdown, if any.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            ServerAddr::Unix(p) if p.starts_with('/') => Some(Path::new(p)),
            _ => None,
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{param}: invalid value {value:?}: {reason}")]
    InvalidValue {
        param: String,
        value: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    FileSyntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// The agent's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server_addr: ServerAddr,
    pub log_level: Level,
    pub dev_mode: bool,
    pub debug_console: bool,
    /// vsock port of the debug console; 0 means the serial console.
    pub debug_console_vport: u32,
    /// vsock port logs go to; 0 means the console.
    pub log_vport: u32,
    pub hotplug_timeout: Duration,
    /// Size of container stdio pipes in bytes; 0 keeps the kernel default.
    pub container_pipe_size: u32,
    pub trace: bool,
    pub unified_cgroup_hierarchy: bool,
    pub config_file: Option<PathBuf>,
    /// The Rego policy in force from start-up until a SetPolicy replaces
    /// it; when the file does not exist every request is allowed.
    pub policy_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_addr: ServerAddr::Vsock {
                cid: None,
                port: 1024,
            },
            log_level: Level::Info,
            dev_mode: false,
            debug_console: false,
            debug_console_vport: 0,
            log_vport: 0,
            hotplug_timeout: DEFAULT_HOTPLUG_TIMEOUT,
            container_pipe_size: 0,
            trace: false,
            unified_cgroup_hierarchy: false,
            config_file: None,
            policy_file: PathBuf::from(crate::policy::DEFAULT_POLICY_FILE),
        }
    }
}

/// A setting that a source named, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    ServerAddr,
    LogLevel,
    DevMode,
    DebugConsole,
    DebugConsoleVport,
    LogVport,
    HotplugTimeout,
    ContainerPipeSize,
    Trace,
    UnifiedCgroups,
    CgroupNoV1,
    ConfigFile,
    PolicyFile,
}

impl Key {
    fn from_cmdline(name: &str) -> Option<Key> {
        Some(match name {
            "agent.server_addr" => Key::ServerAddr,
            "agent.log" => Key::LogLevel,
            "agent.devmode" => Key::DevMode,
            "agent.debug_console" => Key::DebugConsole,
            "agent.debug_console_vport" => Key::DebugConsoleVport,
            "agent.log_vport" => Key::LogVport,
            "agent.hotplug_timeout" => Key::HotplugTimeout,
            "agent.container_pipe_size" => Key::ContainerPipeSize,
            "agent.trace" => Key::Trace,
            "agent.unified_cgroup_hierarchy" | "systemd.unified_cgroup_hierarchy" => {
                Key::UnifiedCgroups
            }
            "cgroup_no_v1" => Key::CgroupNoV1,
            "agent.config_file" => Key::ConfigFile,
            "agent.policy_file" => Key::PolicyFile,
            _ => return None,
        })
    }

    fn from_file(name: &str) -> Option<Key> {
        Some(match name {
            "server_addr" => Key::ServerAddr,
            "log_level" | "log" => Key::LogLevel,
            "dev_mode" | "devmode" => Key::DevMode,
            "debug_console" => Key::DebugConsole,
            "debug_console_vport" => Key::DebugConsoleVport,
            "log_vport" => Key::LogVport,
            "hotplug_timeout" => Key::HotplugTimeout,
            "container_pipe_size" => Key::ContainerPipeSize,
            "trace" | "tracing" => Key::Trace,
            "unified_cgroup_hierarchy" => Key::UnifiedCgroups,
            "policy_file" => Key::PolicyFile,
            _ => return None,
        })
    }

    /// Whether the parameter may appear without `=value` (a flag meaning true).
    fn is_flag(self) -> bool {
        matches!(
            self,
            Key::DevMode | Key::DebugConsole | Key::Trace | Key::UnifiedCgroups
        )
    }
}

fn invalid(param: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        param: param.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_bool(param: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "1" | "true" | "yes" | "on" | "y" => Ok(true),
        "0" | "false" | "no" | "off" | "n" => Ok(false),
        _ => Err(invalid(
            param,
            value,
            "expected true/false, 1/0, yes/no or on/off",
        )),
    }
}

fn parse_port(param: &str, value: &str) -> Result<u32, ConfigError> {
    value
        .parse::<u32>()
        .map_err(|_| invalid(param, value, "expected a vsock port number (0 disables)"))
}

impl Config {
    /// Applies one setting. `param` is how the source spelled it, for errors.
    fn apply(&mut self, key: Key, param: &str, value: Option<&str>) -> Result<(), ConfigError> {
        let value = match value {
            Some(v) => v,
            None if key.is_flag() => "true",
            None => return Err(invalid(param, "", "a value is required")),
        };
        match key {
            Key::ServerAddr => {
                self.server_addr = ServerAddr::parse(value)
                    .map_err(|reason| invalid(param, value, reason.to_string()))?;
            }
            Key::LogLevel => {
                self.log_level = Level::parse(value).ok_or_else(|| {
                    invalid(
                        param,
                        value,
                        "expected one of critical, error, warn, info, debug, trace",
                    )
                })?;
            }
            Key::DevMode => {
                self.dev_mode = parse_bool(param, value)?;
                if self.dev_mode && self.log_level < Level::Debug {
                    self.log_level = Level::Debug;
                }
            }
            Key::DebugConsole => self.debug_console = parse_bool(param, value)?,
            Key::DebugConsoleVport => self.debug_console_vport = parse_port(param, value)?,
            Key::LogVport => self.log_vport = parse_port(param, value)?,
            Key::HotplugTimeout => {
                let secs = value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| {
                        invalid(param, value, "expected a positive number of seconds")
                    })?;
                self.hotplug_timeout = Duration::from_secs(secs);
            }
            Key::ContainerPipeSize => {
                self.container_pipe_size = value
                    .parse::<u32>()
                    .map_err(|_| invalid(param, value, "expected a non-negative size in bytes"))?;
            }
            Key::Trace => self.trace = parse_bool(param, value)?,
            Key::UnifiedCgroups => self.unified_cgroup_hierarchy = parse_bool(param, value)?,
            Key::CgroupNoV1 => {
                // Only `all` disables every v1 controller; a list of
                // controllers leaves the others on v1.
                if value.split(',').any(|c| c == "all") {
                    self.unified_cgroup_hierarchy = true;
                }
            }
            Key::ConfigFile => {
                if value.is_empty() {
                    return Err(invalid(param, value, "expected a file path"));
                }
                self.config_file = Some(PathBuf::from(value));
            }
            Key::PolicyFile => {
                if value.is_empty() {
                    return Err(invalid(param, value, "expected a file path"));
                }
                self.policy_file = PathBuf::from(value);
            }
        }
        Ok(())
    }

    /// Applies the `agent.*` parameters of a kernel command line. Returns the
    /// unknown `agent.*` parameters so the caller can report them.
    pub fn apply_cmdline(&mut self, cmdline: &str) -> Result<Vec<String>, ConfigError> {
        let mut unknown = Vec::new();
        for token in cmdline.split_ascii_whitespace() {
            let (name, value) = match token.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (token, None),
            };
            match Key::from_cmdline(name) {
                Some(key) => self.apply(key, name, value)?,
                None if name.starts_with("agent.") => unknown.push(token.to_string()),
                None => {}
            }
        }
        Ok(unknown)
    }

    /// Applies a config file: flat `key = value` lines (a TOML subset:
    /// strings in double quotes, integers, booleans, `#` comments).
    /// Returns the unknown keys.
    pub fn apply_file_text(&mut self, path: &Path, text: &str) -> Result<Vec<String>, ConfigError> {
        let mut unknown = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let syntax = |reason: &str| ConfigError::FileSyntax {
                path: path.to_path_buf(),
                line: line_no,
                reason: reason.to_string(),
            };
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                return Err(syntax(
                    "tables are not supported: use flat key = value lines",
                ));
            }
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| syntax("expected key = value"))?;
            let name = name.trim();
            let value = value.trim();
            let value = if let Some(inner) = value.strip_prefix('"') {
                inner
                    .strip_suffix('"')
                    .ok_or_else(|| syntax("unterminated string"))?
            } else {
                value
            };
            match Key::from_file(name) {
                Some(key) => {
                    let param = format!("{}: {name}", path.display());
                    self.apply(key, &param, Some(value))?;
                }
                None => unknown.push(name.to_string()),
            }
        }
        Ok(unknown)
    }

    /// Applies `KATA_AGENT_SERVER_ADDR` and `KATA_AGENT_LOG_LEVEL`.
    pub fn apply_env<F: Fn(&str) -> Option<String>>(&mut self, get: F) -> Result<(), ConfigError> {
        if let Some(v) = get(ENV_SERVER_ADDR) {
            self.apply(Key::ServerAddr, ENV_SERVER_ADDR, Some(&v))?;
        }
        if let Some(v) = get(ENV_LOG_LEVEL) {
            self.apply(Key::LogLevel, ENV_LOG_LEVEL, Some(&v))?;
        }
        Ok(())
    }
}

fn strip_comment(line: &str) -> &str {
    // A '#' inside a quoted string is not a comment.
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

/// What the command line asked the binary to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve(Flags),
    Help,
    Version,
    /// Print every wire method with its status.
    Methods,
}

/// Command-line flags, the highest-precedence source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub server_addr: Option<String>,
    pub log_level: Option<String>,
    pub cmdline_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
}

pub const USAGE: &str = "\
kata-agent: the in-guest agent of a Kata Containers sandbox

Usage: kata-agent [OPTIONS]

Options:
  --server-addr <ADDR>  listen on ADDR: vsock://<cid>:<port> (default vsock://-1:1024)
                        or unix:///path
  --log-level <LEVEL>   critical, error, warn, info (default), debug or trace
  --cmdline <FILE>      read kernel parameters from FILE instead of /proc/cmdline
  --config <FILE>       read settings from a flat key = value file
  --methods             list every wire method and whether this agent serves it
  -V, --version         print the agent and protocol versions and exit
  -h, --help            print this help and exit

Kernel parameters: agent.server_addr, agent.log, agent.devmode, agent.debug_console,
agent.debug_console_vport, agent.log_vport, agent.hotplug_timeout,
agent.container_pipe_size, agent.trace, agent.config_file, agent.unified_cgroup_hierarchy,
systemd.unified_cgroup_hierarchy, cgroup_no_v1, agent.policy_file.
Environment: KATA_AGENT_SERVER_ADDR, KATA_AGENT_LOG_LEVEL.
Precedence: defaults < config file < kernel parameters < environment < flags.
";

/// Parses the command-line flags (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    let mut flags = Flags::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| -> Result<String, ConfigError> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => Err(ConfigError::Usage(format!("{flag}: a value is required"))),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--methods" => return Ok(Command::Methods),
            "--server-addr" => flags.server_addr = Some(value("--server-addr")?),
            "--log-level" => flags.log_level = Some(value("--log-level")?),
            "--cmdline" => flags.cmdline_file = Some(PathBuf::from(value("--cmdline")?)),
            "--config" => flags.config_file = Some(PathBuf::from(value("--config")?)),
            other => {
                return Err(ConfigError::Usage(format!(
                    "unknown argument {other:?} (see --help)"
                )))
            }
        }
    }
    Ok(Command::Serve(flags))
}

/// Things worth logging once the logger exists.
#[derive(Debug, Default)]
pub struct Notes {
    pub unknown_params: Vec<String>,
    pub cmdline_source: Option<PathBuf>,
}

/// Builds the configuration from every source.
pub fn load<F>(flags: &Flags, env: F) -> Result<(Config, Notes), ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let mut notes = Notes::default();
    let cmdline_path = flags
        .cmdline_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CMDLINE));
    let cmdline = match std::fs::read_to_string(&cmdline_path) {
        Ok(s) => s,
        // Outside a VM /proc/cmdline may be unreadable (restricted
        // containers); only a file named by a flag must exist.
        Err(_) if flags.cmdline_file.is_none() => String::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: cmdline_path,
                source,
            })
        }
    };
    notes.cmdline_source = Some(cmdline_path);

    // The config file may be named on the kernel command line: look for it
    // before the file's settings are applied (the full parse comes after,
    // and rejects an empty value).
    let file = flags.config_file.clone().or_else(|| {
        cmdline
            .split_ascii_whitespace()
            .rev()
            .filter_map(|t| t.strip_prefix("agent.config_file="))
            .find(|v| !v.is_empty())
            .map(PathBuf::from)
    });

    let mut cfg = Config::default();
    if let Some(path) = &file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        notes
            .unknown_params
            .extend(cfg.apply_file_text(path, &text)?);
    }
    notes.unknown_params.extend(cfg.apply_cmdline(&cmdline)?);
    cfg.config_file = file;
    cfg.apply_env(env)?;
    if let Some(v) = &flags.server_addr {
        cfg.apply(Key::ServerAddr, "--server-addr", Some(v))?;
    }
    if let Some(v) = &flags.log_level {
        cfg.apply(Key::LogLevel, "--log-level", Some(v))?;
    }
    Ok((cfg, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdline(s: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.apply_cmdline(s)?;
        Ok(c)
    }

    fn err_text(s: &str) -> String {
        cmdline(s).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.server_addr.to_uri(), "vsock://-1:1024");
        assert_eq!(c.log_level, Level::Info);
        assert!(!c.dev_mode && !c.debug_console && !c.trace && !c.unified_cgroup_hierarchy);
        assert_eq!(c.debug_console_vport, 0);
        assert_eq!(c.log_vport, 0);
        assert_eq!(c.hotplug_timeout, Duration::from_secs(3));
        assert_eq!(c.container_pipe_size, 0);
        assert_eq!(c.config_file, None);
    }

    #[test]
    fn every_parameter() {
        let c = cmdline(
            "console=ttyS0 quiet agent.server_addr=unix:///run/a.sock agent.log=debug \
             agent.debug_console agent.debug_console_vport=1026 agent.log_vport=1025 \
             agent.hotplug_timeout=10 agent.container_pipe_size=65536 agent.trace=true \
             agent.config_file=/etc/agent.toml cgroup_no_v1=all",
        )
        .unwrap();
        assert_eq!(c.server_addr, ServerAddr::Unix("/run/a.sock".into()));
        assert_eq!(c.log_level, Level::Debug);
        assert!(c.debug_console);
        assert_eq!(c.debug_console_vport, 1026);
        assert_eq!(c.log_vport, 1025);
        assert_eq!(c.hotplug_timeout, Duration::from_secs(10));
        assert_eq!(c.container_pipe_size, 65536);
        assert!(c.trace);
        assert_eq!(c.config_file, Some(PathBuf::from("/etc/agent.toml")));
        assert!(c.unified_cgroup_hierarchy);
    }

    #[test]
    fn policy_file_defaults_to_upstreams_path() {
        assert_eq!(
            cmdline("").unwrap().policy_file,
            PathBuf::from("/etc/kata-opa/default-policy.rego")
        );
        let c = cmdline("agent.policy_file=/etc/p.rego").unwrap();
        assert_eq!(c.policy_file, PathBuf::from("/etc/p.rego"));
        assert!(cmdline("agent.policy_file=").is_err());
    }

    #[test]
    fn devmode_raises_log_level_only_upwards() {
        assert_eq!(cmdline("agent.devmode").unwrap().log_level, Level::Debug);
        let c = cmdline("agent.log=trace agent.devmode").unwrap();
        assert!(c.dev_mode);
        assert_eq!(c.log_level, Level::Trace);
        assert!(!cmdline("agent.devmode=0").unwrap().dev_mode);
    }

    #[test]
    fn cgroup_switches() {
        assert!(
            cmdline("systemd.unified_cgroup_hierarchy=1")
                .unwrap()
                .unified_cgroup_hierarchy
        );
        assert!(
            cmdline("systemd.unified_cgroup_hierarchy")
                .unwrap()
                .unified_cgroup_hierarchy
        );
        assert!(
            !cmdline("systemd.unified_cgroup_hierarchy=0")
                .unwrap()
                .unified_cgroup_hierarchy
        );
        assert!(
            cmdline("agent.unified_cgroup_hierarchy=yes")
                .unwrap()
                .unified_cgroup_hierarchy
        );
        assert!(
            !cmdline("cgroup_no_v1=memory,cpu")
                .unwrap()
                .unified_cgroup_hierarchy
        );
        assert!(
            cmdline("cgroup_no_v1=memory,all")
                .unwrap()
                .unified_cgroup_hierarchy
        );
    }

    #[test]
    fn vsock_addresses() {
        assert_eq!(
            ServerAddr::parse("vsock://3:5000").unwrap(),
            ServerAddr::Vsock {
                cid: Some(3),
                port: 5000
            }
        );
        assert_eq!(
            ServerAddr::parse("vsock://-1:1024").unwrap().to_uri(),
            "vsock://-1:1024"
        );
        assert_eq!(
            ServerAddr::parse("unix://@abstract").unwrap(),
            ServerAddr::Unix("@abstract".into())
        );
        assert_eq!(
            ServerAddr::parse("unix:///a/b").unwrap().socket_path(),
            Some(Path::new("/a/b"))
        );
    }

    #[test]
    fn bad_values_name_parameter_and_value() {
        let cases = [
            ("agent.log=loud", "agent.log", "\"loud\""),
            ("agent.log=", "agent.log", "\"\""),
            (
                "agent.server_addr=tcp://1.2.3.4:5",
                "agent.server_addr",
                "tcp://",
            ),
            (
                "agent.server_addr=vsock://x:1024",
                "agent.server_addr",
                "cid",
            ),
            (
                "agent.server_addr=vsock://3:port",
                "agent.server_addr",
                "port",
            ),
            (
                "agent.server_addr=vsock://3",
                "agent.server_addr",
                "vsock://3",
            ),
            (
                "agent.server_addr=unix://relative",
                "agent.server_addr",
                "relative",
            ),
            ("agent.server_addr", "agent.server_addr", "required"),
            (
                "agent.hotplug_timeout=0",
                "agent.hotplug_timeout",
                "positive",
            ),
            (
                "agent.hotplug_timeout=-3",
                "agent.hotplug_timeout",
                "\"-3\"",
            ),
            (
                "agent.hotplug_timeout=3s",
                "agent.hotplug_timeout",
                "\"3s\"",
            ),
            ("agent.log_vport=-1", "agent.log_vport", "\"-1\""),
            ("agent.log_vport=99999999999", "agent.log_vport", "port"),
            (
                "agent.debug_console_vport=abc",
                "agent.debug_console_vport",
                "\"abc\"",
            ),
            (
                "agent.container_pipe_size=-1",
                "agent.container_pipe_size",
                "\"-1\"",
            ),
            (
                "agent.container_pipe_size=1k",
                "agent.container_pipe_size",
                "\"1k\"",
            ),
            (
                "agent.debug_console=maybe",
                "agent.debug_console",
                "\"maybe\"",
            ),
            ("agent.devmode=2", "agent.devmode", "\"2\""),
            ("agent.trace=yesplease", "agent.trace", "\"yesplease\""),
            (
                "systemd.unified_cgroup_hierarchy=x",
                "systemd.unified_cgroup_hierarchy",
                "\"x\"",
            ),
            ("agent.config_file=", "agent.config_file", "path"),
        ];
        for (line, param, fragment) in cases {
            let e = err_text(line);
            assert!(e.starts_with(param), "{line}: {e}");
            assert!(e.contains(fragment), "{line}: {e} lacks {fragment}");
        }
    }

    #[test]
    fn unknown_agent_parameters_are_reported_not_fatal() {
        let mut c = Config::default();
        let unknown = c
            .apply_cmdline("agent.bogus=1 agent.debug_consolex foo=bar agent.log=warn")
            .unwrap();
        assert_eq!(unknown, vec!["agent.bogus=1", "agent.debug_consolex"]);
        assert_eq!(c.log_level, Level::Warn);
        assert!(!c.debug_console);
    }

    /// The kernel command line Kata 2.x's runtime gives its QEMU guest (the
    /// image on an NVDIMM): not one parameter is ours, and none may stop
    /// start-up or be reported.
    const KATA_RUNTIME_CMDLINE: &str = "tsc=reliable no_timer_check rcupdate.rcu_expedited=1 \
        i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 noreplace-smp reboot=k \
        console=hvc0 console=hvc1 cryptomgr.notests net.ifnames=0 pci=lastbus=0 \
        root=/dev/pmem0p1 rootflags=dax,data=ordered,errors=remount-ro ro rootfstype=ext4 \
        quiet systemd.show_status=false panic=1 nr_cpus=2 systemd.unit=kata-containers.target \
        systemd.mask=systemd-networkd.service systemd.mask=systemd-networkd.socket \
        scsi_mod.scan=none";

    #[test]
    fn kata_runtime_command_line_is_skipped_quietly() {
        let mut c = Config::default();
        let unknown = c.apply_cmdline(KATA_RUNTIME_CMDLINE).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(c, Config::default());

        // What configuration.toml's kernel_params and enable_debug add.
        let line = format!(
            "{KATA_RUNTIME_CMDLINE} agent.log=debug agent.debug_console \
             agent.debug_console_vport=1026 agent.hotplug_timeout=10"
        );
        let unknown = c.apply_cmdline(&line).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(c.log_level, Level::Debug);
        assert!(c.debug_console);
        assert_eq!(c.debug_console_vport, 1026);
        assert_eq!(c.hotplug_timeout, Duration::from_secs(10));
        assert!(!c.unified_cgroup_hierarchy);
    }

    #[test]
    fn level_names() {
        for (s, l) in [
            ("critical", Level::Critical),
            ("fatal", Level::Critical),
            ("error", Level::Error),
            ("warning", Level::Warn),
            ("info", Level::Info),
            ("debug", Level::Debug),
            ("trace", Level::Trace),
        ] {
            assert_eq!(Level::parse(s), Some(l));
        }
        assert_eq!(Level::parse("INFO"), None);
    }

    #[test]
    fn env_overrides_cmdline() {
        let mut c = cmdline("agent.log=debug agent.server_addr=vsock://-1:2000").unwrap();
        c.apply_env(|k| match k {
            "KATA_AGENT_LOG_LEVEL" => Some("trace".into()),
            "KATA_AGENT_SERVER_ADDR" => Some("unix:///tmp/x.sock".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.log_level, Level::Trace);
        assert_eq!(c.server_addr, ServerAddr::Unix("/tmp/x.sock".into()));
        let e = c
            .apply_env(|k| (k == "KATA_AGENT_LOG_LEVEL").then(|| "chatty".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("KATA_AGENT_LOG_LEVEL: invalid value \"chatty\""),
            "{e}"
        );
    }

    #[test]
    fn config_file_subset() {
        let mut c = Config::default();
        let unknown = c
            .apply_file_text(
                Path::new("/etc/a.toml"),
                "# agent settings\nserver_addr = \"unix:///run/x#y.sock\" # trailing\n\
                 log_level = \"debug\"\ndebug_console = true\nlog_vport = 1025\nnew_thing = 3\n",
            )
            .unwrap();
        assert_eq!(unknown, vec!["new_thing"]);
        assert_eq!(c.server_addr, ServerAddr::Unix("/run/x#y.sock".into()));
        assert_eq!(c.log_level, Level::Debug);
        assert!(c.debug_console);
        assert_eq!(c.log_vport, 1025);

        let e = Config::default()
            .apply_file_text(Path::new("/a"), "[section]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/a:1: tables"), "{e}");
        let e = Config::default()
            .apply_file_text(Path::new("/a"), "\nlog_level\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/a:2: expected key = value"), "{e}");
        let e = Config::default()
            .apply_file_text(Path::new("/a"), "log_level = \"loud\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/a: log_level: invalid value \"loud\""),
            "{e}"
        );
    }

    #[test]
    fn precedence_file_cmdline_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "log_level = \"error\"\nlog_vport = 7\nserver_addr = \"vsock://-1:9\"\n",
        )
        .unwrap();
        let cmd = dir.path().join("cmdline");
        std::fs::write(
            &cmd,
            format!("agent.config_file={} agent.log=warn\n", file.display()),
        )
        .unwrap();
        let flags = Flags {
            cmdline_file: Some(cmd.clone()),
            ..Flags::default()
        };
        let (c, _) = load(&flags, |_| None).unwrap();
        assert_eq!(c.log_level, Level::Warn, "cmdline beats file");
        assert_eq!(c.log_vport, 7, "file beats default");
        assert_eq!(c.server_addr.to_uri(), "vsock://-1:9");
        assert_eq!(c.config_file.as_deref(), Some(file.as_path()));

        let env = |k: &str| (k == "KATA_AGENT_LOG_LEVEL").then(|| "info".to_string());
        let (c, _) = load(&flags, env).unwrap();
        assert_eq!(c.log_level, Level::Info, "env beats cmdline");

        let flags = Flags {
            cmdline_file: Some(cmd),
            log_level: Some("trace".into()),
            server_addr: Some("unix:///tmp/flag.sock".into()),
            ..Flags::default()
        };
        let (c, _) = load(&flags, env).unwrap();
        assert_eq!(c.log_level, Level::Trace, "flag beats env");
        assert_eq!(c.server_addr.to_uri(), "unix:///tmp/flag.sock");
    }

    #[test]
    fn missing_files_are_errors_when_named() {
        let flags = Flags {
            cmdline_file: Some(PathBuf::from("/nonexistent/cmdline")),
            ..Flags::default()
        };
        let e = load(&flags, |_| None).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/cmdline: "), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let cmd = dir.path().join("cmdline");
        std::fs::write(&cmd, "agent.config_file=/nonexistent/agent.toml").unwrap();
        let flags = Flags {
            cmdline_file: Some(cmd),
            ..Flags::default()
        };
        let e = load(&flags, |_| None).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/agent.toml: "), "{e}");
    }

    #[test]
    fn flags() {
        let args = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        assert_eq!(args(&["--help"]).unwrap(), Command::Help);
        assert_eq!(args(&["-V"]).unwrap(), Command::Version);
        let Command::Serve(f) = args(&[
            "--server-addr",
            "unix:///a",
            "--log-level=debug",
            "--cmdline",
            "/c",
            "--config=/f",
        ])
        .unwrap() else {
            panic!("expected serve");
        };
        assert_eq!(f.server_addr.as_deref(), Some("unix:///a"));
        assert_eq!(f.log_level.as_deref(), Some("debug"));
        assert_eq!(f.cmdline_file, Some(PathBuf::from("/c")));
        assert_eq!(f.config_file, Some(PathBuf::from("/f")));
        assert!(args(&["--server-addr"])
            .unwrap_err()
            .to_string()
            .contains("required"));
        assert!(args(&["--bogus"])
            .unwrap_err()
            .to_string()
            .contains("\"--bogus\""));
    }
}
