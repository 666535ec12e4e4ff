//! OOM notifications for GetOOMEvent.
//!
//! rustjail gives a pollable descriptor per container cgroup
//! ([`rustjail::oom::OomEvents`]: an eventfd on v1, inotify on v2); a small
//! task per container waits on it through the reactor and queues the
//! container id for each OOM kill. The shim's GetOOMEvent long poll takes
//! them in order.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, Mutex};
use tokio::task::AbortHandle;

/// The queue of container ids that had a process OOM-killed.
pub struct OomEvents {
    tx: mpsc::UnboundedSender<String>,
    rx: Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Default for OomEvents {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        OomEvents {
            tx,
            rx: Mutex::new(rx),
        }
    }
}

/// rustjail's watch, pollable by the reactor.
struct Watch(rustjail::oom::OomEvents);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd().as_fd().as_raw_fd()
    }
}

impl OomEvents {
    /// Waits for the next OOM event; `None` only if the queue is closed.
    pub async fn next(&self) -> Option<String> {
        self.rx.lock().await.recv().await
    }

    /// Queues `cid` for each OOM kill `events` reports, until the cgroup
    /// at `cgroup_dir` is gone or the returned handle aborts the task.
    pub fn watch(
        &self,
        cid: &str,
        events: rustjail::oom::OomEvents,
        cgroup_dir: PathBuf,
    ) -> io::Result<AbortHandle> {
        // SAFETY: the descriptor belongs to `events`, which moves into the
        // AsyncFd and so stays open and unchanged for its whole life.
        let mut fd = unsafe { AsyncFd::register(Watch(events)) }.map_err(|e| e.into_parts().1)?;
        let tx = self.tx.clone();
        let cid = cid.to_string();
        let task = tokio::spawn(async move {
            loop {
                let mut guard = match fd.readable_mut().await {
                    Ok(g) => g,
                    Err(_) => return,
                };
                let kills = match guard.get_inner_mut().0.read() {
                    Ok(0) => {
                        guard.clear_ready();
                        continue;
                    }
                    Ok(n) => n,
                    Err(_) => return,
                };
                // v1 also signals when the cgroup is removed.
                if !cgroup_dir.exists() {
                    return;
                }
                for _ in 0..kills {
                    log::info!("container {cid:?}: OOM kill");
                    if tx.send(cid.clone()).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(task.abort_handle())
    }
}
