//! What lets a developer see into the guest: the agent's logs forwarded to
//! the host over vsock ([`log_forward`], `agent.log_vport`) and the debug
//! console ([`debug_console`], `agent.debug_console` +
//! `agent.debug_console_vport`).
//!
//! [`Observe::new`] is called before the logger exists: with a log port,
//! the logger's sink is a bounded buffer that keeps the boot lines until the
//! host connects; without one, stderr (the console when PID 1).
//! [`Observe::run`] starts the listeners once the runtime runs.

pub mod debug_console;
pub mod log_forward;
pub mod metrics;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::Config;
use crate::logging::Sink;
use crate::reaper::Reaper;
use log_forward::{BufferSink, LogBuffer};

/// The log buffer when logs go to a vsock port, for [`flush_logs`].
static LOG_BUFFER: OnceLock<Arc<LogBuffer>> = OnceLock::new();

/// Before the guest powers off: the lines not yet forwarded go to the
/// connected log reader now (bounded wait), not with the VM.
pub fn flush_logs() {
    if let Some(b) = LOG_BUFFER.get() {
        b.drain_blocking(Duration::from_millis(500));
    }
}

/// The observability settings and the log buffer, between start-up and the
/// runtime.
pub struct Observe {
    log: Option<(Arc<LogBuffer>, u32)>,
    debug_console_vport: Option<u32>,
}

impl Observe {
    pub fn new(cfg: &Config) -> Observe {
        let log = (cfg.log_vport > 0)
            .then(|| (LogBuffer::new(log_forward::DEFAULT_CAPACITY), cfg.log_vport));
        if let Some((buffer, _)) = &log {
            let _ = LOG_BUFFER.set(buffer.clone());
        }
        let debug_console_vport = cfg.debug_console.then_some(cfg.debug_console_vport);
        Observe {
            log,
            debug_console_vport,
        }
    }

    /// Where the logger writes.
    pub fn log_sink(&self) -> Sink {
        match &self.log {
            Some((buffer, _)) => Box::new(BufferSink(buffer.clone())),
            None => crate::logging::console::stderr_sink(),
        }
    }

    /// Serves the log port and the debug console; returns at once.
    pub fn run(self, reaper: &Reaper) {
        if let Some((buffer, port)) = self.log {
            tokio::spawn(log_forward::serve(buffer, port));
        }
        match self.debug_console_vport {
            Some(0) => {
                tokio::spawn(debug_console::serve_serial(reaper.clone()));
            }
            Some(port) => {
                tokio::spawn(debug_console::serve(reaper.clone(), port));
            }
            None => {}
        }
    }
}
