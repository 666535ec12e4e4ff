//! `kata-agent`: the in-guest agent of a Kata Containers sandbox, as a
//! library with a thin binary (`main.rs`), so tests and benchmarks can drive
//! the service in-process.
//!
//! Start-up ([`run`]) reads the configuration ([`config`]), installs the
//! JSON logger ([`logging`]), then runs the ttrpc server ([`server`]) on a
//! single-threaded tokio runtime. Requests flow one way: [`rpc`] converts
//! wire messages and calls into the sandbox state and `rustjail`.

pub mod config;
pub mod containers;
pub mod device;
pub mod error;
pub mod lock;
pub mod logging;
pub mod network;
pub mod observe;
pub mod peer;
pub mod pid1;
#[cfg(feature = "agent-policy")]
pub mod policy;
#[cfg(not(feature = "agent-policy"))]
#[path = "policy/disabled.rs"]
pub mod policy;
pub mod reaper;
pub mod rpc;
pub mod sandbox;
pub mod server;
pub mod storage;
pub mod stream;
pub mod version;
pub mod volume;

use config::{Command, ConfigError};

/// One malloc arena: glibc otherwise gives each blocking thread its own,
/// and their high-water marks stay resident. The agent allocates little and
/// rarely contends, so the lock costs nothing measurable.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // Fixed thresholds turn off glibc's dynamic ones, which after one
        // freed multi-MiB buffer (a large WriteStdin) would keep such
        // buffers on the heap and resident for good. A ReadStdout answer's
        // buffers (at most 128 KiB each) stay below the mapping threshold,
        // and the heap keeps up to 512 KiB free at its top, so a stream of
        // answers reuses pages already mapped instead of faulting in fresh
        // ones for every answer.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024);
    }
}

/// Most descriptors the agent asks for: each container and exec holds a
/// few pipes, each connection a socket; the kernel's default of 1024 runs
/// out with a busy pod.
const FD_LIMIT: u64 = 1 << 20;

/// Raises the agent's own RLIMIT_NOFILE: the soft limit to the hard one,
/// and with the privilege for it (PID 1, root) both to [`FD_LIMIT`] or the
/// kernel's `fs.nr_open`, whichever is lower.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(FD_LIMIT);
    let want = FD_LIMIT.min(nr_open).max(hard);
    let result = setrlimit(Resource::RLIMIT_NOFILE, want, want)
        .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard));
    match (result, getrlimit(Resource::RLIMIT_NOFILE)) {
        (Ok(()), Ok((now, _))) if now != soft => {
            log::debug!("open file limit raised from {soft} to {now}")
        }
        (Err(e), _) => log::warn!("open file limit {soft}: raise: {e}"),
        _ => {}
    }
}

/// Makes the agent the OOM killer's last choice. Run as a process (on a
/// host, or under a service manager) nothing else protects it; as PID 1
/// the kernel already never picks init, and the same value costs nothing.
fn protect_from_oom() {
    match rustjail::oom::protect_self() {
        Ok(()) => log::debug!(
            "oom_score_adj set to {}",
            rustjail::oom::AGENT_OOM_SCORE_ADJ
        ),
        Err(e) => log::warn!(
            "set oom_score_adj {}: {e}",
            rustjail::oom::AGENT_OOM_SCORE_ADJ
        ),
    }
}

/// Env var choosing how container helpers start: `zygote` (default), a
/// process forked now that forks one helper per container, or `reexec`,
/// an execve of this binary per container.
const LAUNCHER_ENV: &str = "KATA_AGENT_LAUNCHER";

/// Starts the pre-forked launcher unless re-exec was asked for. Must run
/// before the runtime starts any thread.
fn start_launcher() -> Option<std::sync::Arc<rustjail::zygote::Zygote>> {
    if std::env::var(LAUNCHER_ENV).as_deref() == Ok("reexec") {
        log::info!("container helpers: re-exec of the agent binary");
        return None;
    }
    // SAFETY: no thread exists yet: the runtime is built after this.
    match unsafe { rustjail::zygote::Zygote::start() } {
        Ok(z) => {
            log::info!("container helpers: forked by launcher pid {}", z.pid());
            Some(std::sync::Arc::new(z))
        }
        Err(e) => {
            log::warn!("start the launcher: {e}; falling back to re-exec");
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("init: {0}")]
    Init(#[from] pid1::InitError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("logger: {0}")]
    Logger(#[from] log::SetLoggerError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Server(#[from] server::ServerError),
}

/// Serves requests as configured by `args` (or prints what a flag asks
/// for); returns when the server stops.
pub fn run(args: Vec<String>) -> Result<(), StartError> {
    let flags = match config::parse_args(args)? {
        Command::Help => {
            print!("{}", config::USAGE);
            return Ok(());
        }
        Command::Version => {
            println!(
                "kata-agent {} (protocol {})",
                version::AGENT_VERSION,
                version::API_VERSION
            );
            return Ok(());
        }
        Command::Methods => {
            for (name, status) in rpc::METHODS {
                match status.reason() {
                    Some(why) => println!("grpc.AgentService/{name}\t{status}\t{why}"),
                    None => println!("grpc.AgentService/{name}\t{status}"),
                }
            }
            for name in ["Check", "Version"] {
                println!("grpc.Health/{name}\t{}", rpc::Status::Implemented);
            }
            return Ok(());
        }
        Command::Serve(flags) => flags,
    };
    // First, so that /proc (and with it the kernel command line) exists.
    pid1::setup_pid1(false)?;
    let (cfg, notes) = config::load(&flags, |k| std::env::var(k).ok())?;
    // Logs to stderr, or kept for the host's reader on agent.log_vport.
    let observe = observe::Observe::new(&cfg);
    logging::init(cfg.log_level, observe.log_sink())?;
    for p in &notes.unknown_params {
        log::debug!("ignoring unknown parameter {p:?}");
    }
    log::debug!("configuration: {cfg:?}");
    for n in pid1::take_notes() {
        log::warn!("init: {n}");
    }
    if let Some(t) = pid1::timings() {
        log::info!(
            "init: guest uptime {} ms at start, setup took {} ms (mounts {} ms, modules {} ms, cgroups {} ms)",
            t.uptime_at_start.as_millis(),
            t.setup.as_millis(),
            t.mounts.as_millis(),
            t.modules.as_millis(),
            t.cgroups.as_millis()
        );
    }

    let zygote = start_launcher();
    // After the launcher's fork: containers keep the usual limit.
    raise_fd_limit();
    // After it too: the launcher's helpers keep the score they had.
    protect_from_oom();
    // One async thread serves every connection; blocking work (fork,
    // mounts, cgroup files) runs on a small pool whose idle threads retire
    // quickly, so an idle agent holds one thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(64)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .thread_stack_size(256 * 1024)
        .build()
        .map_err(StartError::Runtime)?;
    // The one owner of child processes, for every part that starts one.
    let reaper = reaper::Reaper::new();
    {
        // Log port and debug console: tasks that start with the server.
        let _rt = rt.enter();
        observe.run(&reaper);
    }
    rt.block_on(server::serve(&cfg, zygote, reaper))?;
    Ok(())
}
