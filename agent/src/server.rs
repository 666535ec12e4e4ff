//! The ttrpc server: binds the configured address, registers
//! `grpc.AgentService` and `grpc.Health`, serves until SIGTERM or SIGINT
//! (or, when not PID 1, until DestroySandbox was answered), then shuts down
//! cleanly and removes its socket file.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use protocols::{agent_ttrpc, health_ttrpc};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, ServerAddr};
use crate::reaper::Reaper;
use crate::rpc;
use crate::sandbox::{Sandbox, Settings};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("listen {addr}: another agent is already serving this socket")]
    InUse { addr: String },
    #[error("start server on {addr}: {reason}")]
    Start { addr: String, reason: String },
    #[error("install {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// Removes a socket file that no process listens on any more, so a restarted
/// agent can bind again. A live socket is left alone and reported.
fn clear_stale_socket(path: &Path, addr: &str) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ServerError::Bind {
                addr: addr.to_string(),
                reason: e.to_string(),
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::Bind {
            addr: addr.to_string(),
            reason: "path exists and is not a socket".to_string(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::InUse {
            addr: addr.to_string(),
        }),
        Err(_) => {
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|e| ServerError::Bind {
                addr: addr.to_string(),
                reason: format!("remove stale socket: {e}"),
            })
        }
    }
}

/// Serves until SIGTERM, SIGINT or a destroyed sandbox.
pub async fn serve(
    cfg: &Config,
    zygote: Option<Arc<rustjail::zygote::Zygote>>,
    reaper: Reaper,
) -> Result<(), ServerError> {
    let started = Instant::now();
    let uri = cfg.server_addr.to_uri();

    // Install the handlers first: a signal that arrives while binding must
    // still end in a clean shutdown.
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| ServerError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| ServerError::Signal {
        signal: "SIGINT",
        source,
    })?;

    if let Some(path) = cfg.server_addr.socket_path() {
        clear_stale_socket(path, &uri)?;
    }

    // Container inits are re-parented to us when their launcher exits; as
    // PID 1 that is automatic, otherwise we ask for it.
    if std::process::id() != 1 {
        if let Err(e) = rustjail::set_child_subreaper() {
            log::warn!("PR_SET_CHILD_SUBREAPER: {e}; container exits may go unseen");
        }
    }
    tokio::spawn(reaper.clone().run());
    let settings = Settings {
        pipe_size: cfg.container_pipe_size,
        hotplug_timeout: cfg.hotplug_timeout,
        zygote,
        ..Settings::default()
    };
    let sandbox = Arc::new(Sandbox::new(settings, reaper));
    // Device events are read from before the first request: a disk
    // plugged just before CreateContainer must not be missed.
    sandbox.devices.listen();

    let policy = Arc::new(crate::policy::Policy::load(&cfg.policy_file));
    let agent_impl = Arc::new(rpc::AgentImpl::new(sandbox, policy));
    let agent: Arc<dyn agent_ttrpc::AgentService + Send + Sync> = agent_impl.clone();
    let health: Arc<dyn health_ttrpc::Health + Send + Sync> = Arc::new(rpc::health::HealthImpl);
    let mut server = ttrpc::asynchronous::Server::new()
        .bind(&uri)
        .map_err(|e| ServerError::Bind {
            addr: uri.clone(),
            reason: ttrpc_reason(&e),
        })?
        .set_accept_hook(crate::peer::PeerWatch)
        .register_service(agent_ttrpc::create_agent_service(agent))
        .register_service(health_ttrpc::create_health(health));
    server.start().await.map_err(|e| ServerError::Start {
        addr: uri.clone(),
        reason: ttrpc_reason(&e),
    })?;
    log::info!(
        "listening on {uri} ({} us after start)",
        started.elapsed().as_micros()
    );

    let stop = agent_impl.stop_requested();
    tokio::select! {
        _ = sigterm.recv() => log::info!("SIGTERM received, shutting down"),
        _ = sigint.recv() => log::info!("SIGINT received, shutting down"),
        _ = stop => log::info!("sandbox destroyed, shutting down"),
    }
    // Stops accepting, tells connections to close and waits (bounded) for
    // in-flight requests to be answered or cancelled.
    if let Err(e) = server.shutdown().await {
        log::warn!("shutdown: {}", ttrpc_reason(&e));
    }
    remove_socket(&cfg.server_addr);
    // Nothing outlives the agent: no container process, mount or cgroup.
    agent_impl.shutdown().await;
    log::info!("stopped");
    Ok(())
}

fn remove_socket(addr: &ServerAddr) {
    if let Some(path) = addr.socket_path() {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => log::warn!("remove socket {}: {e}", path.display()),
        }
    }
}

fn ttrpc_reason(e: &ttrpc::Error) -> String {
    match e {
        ttrpc::Error::Others(s) | ttrpc::Error::Socket(s) => s.clone(),
        other => other.to_string(),
    }
}
