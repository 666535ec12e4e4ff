//! OOM notification for a container's cgroup, without a thread: a
//! descriptor that turns readable when the kernel may have OOM-killed a
//! process of the cgroup, for the caller to poll (e.g. tokio's `AsyncFd`).
//!
//! - v1: an eventfd registered in `cgroup.event_control` against
//!   `memory.oom_control`; each OOM event counts one.
//! - v2: an inotify watch on `memory.events`; the `oom_kill` counter tells
//!   how many kills happened since the last read.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

enum Source {
    V1 {
        efd: EventFd,
        // Kept open: the registration lives as long as this descriptor.
        _oom_control: File,
    },
    V2 {
        inotify: Inotify,
        events: PathBuf,
        seen: u64,
    },
}

/// OOM events of one cgroup. Dropping it ends the registration.
pub struct OomEvents {
    source: Source,
}

impl std::fmt::Debug for OomEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OomEvents").finish_non_exhaustive()
    }
}

/// `oom_kill N` from a v2 `memory.events` text.
fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl OomEvents {
    /// Watches a v1 memory cgroup directory (`.../memory/<path>`).
    pub fn v1(memory_dir: &Path) -> io::Result<OomEvents> {
        let oom_control = File::open(memory_dir.join("memory.oom_control"))?;
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        let line = format!("{} {}", efd.as_fd().as_raw_fd(), oom_control.as_raw_fd());
        std::fs::write(memory_dir.join("cgroup.event_control"), line)?;
        Ok(OomEvents {
            source: Source::V1 {
                efd,
                _oom_control: oom_control,
            },
        })
    }

    /// Watches a v2 cgroup directory (`memory.events` inside it).
    pub fn v2(cgroup_dir: &Path) -> io::Result<OomEvents> {
        let events = cgroup_dir.join("memory.events");
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        inotify.add_watch(&events, AddWatchFlags::IN_MODIFY)?;
        let seen = oom_kills(&std::fs::read_to_string(&events)?);
        Ok(OomEvents {
            source: Source::V2 {
                inotify,
                events,
                seen,
            },
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            Source::V1 { efd, .. } => efd.as_fd(),
            Source::V2 { inotify, .. } => inotify.as_fd(),
        }
    }

    /// New OOM events since the last call; 0 when none (non-blocking).
    pub fn read(&mut self) -> io::Result<u64> {
        match &mut self.source {
            Source::V1 { efd, .. } => {
                let mut buf = [0u8; 8];
                match nix::unistd::read(efd.as_fd().as_raw_fd(), &mut buf) {
                    Ok(8) => Ok(u64::from_ne_bytes(buf)),
                    Ok(_) => Ok(0),
                    Err(nix::errno::Errno::EAGAIN) => Ok(0),
                    Err(e) => Err(e.into()),
                }
            }
            Source::V2 {
                inotify,
                events,
                seen,
            } => {
                match inotify.read_events() {
                    Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
                    Err(e) => return Err(e.into()),
                }
                let now = oom_kills(&std::fs::read_to_string(events.as_path())?);
                let new = now.saturating_sub(*seen);
                *seen = now;
                Ok(new)
            }
        }
    }
}

/// The agent's own `oom_score_adj`, as Kata's image gives its agent
/// (`OOMScoreAdjust=-997` in its systemd unit): the OOM killer picks
/// nearly any process before it, while -1000 (never) stays for the kernel's
/// own threads and whatever the operator exempts.
pub const AGENT_OOM_SCORE_ADJ: i32 = -997;

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Sets the calling process's `oom_score_adj` to [`AGENT_OOM_SCORE_ADJ`].
/// Children forked afterwards inherit it: container helpers give it up
/// with [`drop_agent_protection`].
pub fn protect_self() -> io::Result<()> {
    std::fs::write(OOM_SCORE_ADJ, AGENT_OOM_SCORE_ADJ.to_string())
}

/// In a process forked from the protected agent (a re-exec'd container
/// helper): back to the kernel's default of 0, so that a container never
/// keeps the agent's protection unless its spec asks for a value. A
/// process that did not inherit the agent's value keeps its own.
pub fn drop_agent_protection() -> io::Result<()> {
    let now = std::fs::read_to_string(OOM_SCORE_ADJ)?;
    if now.trim().parse::<i32>().ok() == Some(AGENT_OOM_SCORE_ADJ) {
        // Raising the value needs no privilege.
        std::fs::write(OOM_SCORE_ADJ, "0")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_memory_events() {
        let text = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kills(text), 2);
        assert_eq!(oom_kills(""), 0);
    }

    /// v2 code path against a fake cgroupfs: a plain file stands in for
    /// `memory.events`.
    #[test]
    fn v2_counts_new_kills_in_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        let mut w = OomEvents::v2(dir.path()).unwrap();
        assert_eq!(w.read().unwrap(), 0);
        std::fs::write(&events, "oom 3\noom_kill 3\n").unwrap();
        let mut fds = [nix::poll::PollFd::new(w.fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(nix::poll::poll(&mut fds, 1000u16).unwrap(), 1);
        assert_eq!(w.read().unwrap(), 2);
        assert_eq!(w.read().unwrap(), 0);
    }
}
