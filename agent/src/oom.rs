//! OOM notifications for GetOOMEvent.
//!
//! Each container's memory cgroup is watched by a small task: on cgroup v1
//! an eventfd registered through `cgroup.event_control` on
//! `memory.oom_control`; on v2 inotify on `memory.events`. On v2 a rise of
//! the `oom_kill` counter is an OOM kill; on v1 every notification while
//! the cgroup exists is (v1 also signals the eventfd when the cgroup is
//! removed, after its files are gone). Events queue until the shim's
//! GetOOMEvent long poll takes them.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

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

/// Reads the `oom_kill` counter of a `memory.oom_control` (v1) or
/// `memory.events` (v2) file.
fn oom_kills(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_oom_kills(&text)
}

pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        match (it.next(), it.next()) {
            (Some("oom_kill"), Some(n)) => n.parse().ok(),
            _ => None,
        }
    })
}

impl OomEvents {
    /// Waits for the next OOM event; `None` only if the queue is closed.
    pub async fn next(&self) -> Option<String> {
        self.rx.lock().await.recv().await
    }

    /// Starts watching a container's memory cgroup directory. Returns the
    /// handle to stop the watch when the container goes away.
    pub fn watch(&self, cid: &str, memory_dir: &Path, v2: bool) -> io::Result<AbortHandle> {
        let counter_file = memory_dir.join(if v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        });
        let notifier = if v2 {
            inotify_fd(&counter_file)?
        } else {
            v1_eventfd(memory_dir, &counter_file)?
        };
        // SAFETY: `notifier` is an OwnedFd moved into the AsyncFd: it stays
        // open and is the same descriptor for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(notifier) }.map_err(|e| e.into_parts().1)?;
        let tx = self.tx.clone();
        let cid = cid.to_string();
        let mut seen = oom_kills(&counter_file).unwrap_or(0);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                let mut guard = match fd.readable().await {
                    Ok(g) => g,
                    Err(_) => return,
                };
                // Drain the notification; its content does not matter.
                let drained = guard.try_io(|inner| {
                    let mut f = std::fs::File::from(inner.get_ref().try_clone()?);
                    f.read(&mut buf)
                });
                if let Ok(Err(e)) = &drained {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        return;
                    }
                }
                if drained.is_err() {
                    // Nothing was pending: a spurious wakeup.
                    continue;
                }
                // v1 signals as the OOM begins, before the kill is counted,
                // and also when the cgroup is removed; v2 signals on any
                // change of memory.events, so only a rise of oom_kill counts.
                match oom_kills(&counter_file) {
                    Some(n) if !v2 || n > seen => {
                        seen = seen.max(n);
                        log::info!("container {cid:?}: OOM kill");
                        if tx.send(cid.clone()).is_err() {
                            return;
                        }
                    }
                    Some(_) => {}
                    // The cgroup is gone: nothing more to watch.
                    None => return,
                }
            }
        });
        Ok(task.abort_handle())
    }
}

fn v1_eventfd(memory_dir: &Path, oom_control: &Path) -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the result is checked below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: eventfd just returned this descriptor and nothing else owns it.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let control = std::fs::File::open(oom_control)?;
    let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    let mut ec = std::fs::OpenOptions::new()
        .write(true)
        .open(memory_dir.join("cgroup.event_control"))?;
    ec.write_all(line.as_bytes())?;
    // The kernel holds its own reference to oom_control from here on.
    Ok(efd)
}

fn inotify_fd(events: &Path) -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes no pointers; the result is checked below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: inotify_init1 just returned this descriptor; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = std::ffi::CString::new(events.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: a valid inotify fd and a NUL-terminated path that outlives the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kills("oom 2\n"), None);
    }
}
