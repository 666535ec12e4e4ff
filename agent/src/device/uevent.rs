//! The kernel's device events (`NETLINK_KOBJECT_UEVENT`, multicast group
//! 1), read by one task for the agent's lifetime and handed to the waits
//! registered in a [`Hub`].
//!
//! Packets are parsed by `kobject-uevent`. Only the kernel's own packets
//! (sender port 0) are taken; udev's re-broadcasts go to another group.
//! The socket's receive buffer is raised so that a burst of hot-plug
//! events is not dropped; when the kernel still reports an overrun
//! (`ENOBUFS`), every wait rescans sysfs instead of trusting that its
//! event will come.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use tokio::io::unix::AsyncFd;

use super::target::{Found, Target};
use crate::lock::lock;

/// One device event, as the matchers read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `bind`, ...
    pub action: String,
    /// Path below `/sys`, starting with `/devices/`.
    pub devpath: String,
    pub subsystem: String,
    /// `DEVNAME`: the node below `/dev` (empty for devices without one).
    pub devname: String,
    /// `DEVTYPE`: `disk` or `partition` for block devices.
    pub devtype: String,
    /// `INTERFACE`: the name of a network device.
    pub interface: String,
}

impl Uevent {
    /// Parses one packet from the kernel.
    pub fn parse(pkt: &[u8]) -> Option<Uevent> {
        let ev = kobject_uevent::UEvent::from_netlink_packet(pkt).ok()?;
        let get = |k: &str| ev.env.get(k).cloned().unwrap_or_default();
        Some(Uevent {
            action: get("ACTION"),
            devpath: ev.devpath.to_string_lossy().into_owned(),
            subsystem: ev.subsystem.clone(),
            devname: get("DEVNAME"),
            devtype: get("DEVTYPE"),
            interface: get("INTERFACE"),
        })
    }
}

struct Waiter {
    id: u64,
    target: Target,
    tx: SyncSender<Found>,
}

/// The registered waits, and whether events reach them.
pub struct Hub {
    sysfs: PathBuf,
    waiters: Mutex<Vec<Waiter>>,
    next: AtomicU64,
    listening: AtomicBool,
}

/// A registered wait; dropping it unregisters.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    pub rx: Receiver<Found>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.hub.waiters).retain(|w| w.id != self.id);
    }
}

impl Hub {
    /// A hub whose matchers resolve PCI paths under `sysfs`.
    pub fn new(sysfs: PathBuf) -> Arc<Hub> {
        Arc::new(Hub {
            sysfs,
            waiters: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            listening: AtomicBool::new(false),
        })
    }

    /// Whether the event task runs (else waits poll sysfs).
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Registers a wait for `target` before its sysfs scan, so that a
    /// device added in between is not missed.
    pub fn subscribe(self: &Arc<Self>, target: Target) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        lock(&self.waiters).push(Waiter { id, target, tx });
        Subscription {
            hub: self.clone(),
            id,
            rx,
        }
    }

    /// Hands an event to every wait it satisfies; each is answered once.
    pub fn dispatch(&self, ev: &Uevent) {
        let mut waiters = lock(&self.waiters);
        waiters.retain(|w| match w.target.matches(ev, &self.sysfs) {
            Some(found) => {
                log::debug!("{}: {} ({})", w.target, found.name, ev.devpath);
                // A full channel already holds an answer.
                let _ = w.tx.try_send(found);
                false
            }
            None => true,
        });
    }

    /// Looks for every waited-for device in sysfs (events were lost).
    pub fn rescan_waiters(&self) {
        let mut waiters = lock(&self.waiters);
        waiters.retain(|w| match w.target.scan(&self.sysfs) {
            Some(found) => {
                let _ = w.tx.try_send(found);
                false
            }
            None => true,
        });
    }

    /// Opens the event socket and spawns the task that reads it, on the
    /// current tokio runtime. Without the socket (no permission, no
    /// netlink in this kernel) waits fall back to polling sysfs.
    pub fn listen(self: &Arc<Self>) {
        match open_socket() {
            // SAFETY: the socket is ours alone: opened here, moved into the
            // AsyncFd, never closed or replaced while it is registered.
            Ok(fd) => match unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1) {
                Ok(afd) => {
                    self.listening.store(true, Ordering::Release);
                    tokio::spawn(read_events(self.clone(), afd));
                }
                Err(e) => log::warn!("uevent socket: register with the runtime: {e}"),
            },
            Err(e) => log::warn!(
                "uevent socket: {}; device waits poll sysfs instead",
                crate::error::lower_first(e.desc())
            ),
        }
    }
}

/// Receive buffer for bursts of events (a disk with many partitions, a
/// rescan): 1 MiB, forced past rmem_max where we may.
const RCVBUF: usize = 1 << 20;

fn open_socket() -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF);
    }
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
    Ok(fd)
}

async fn read_events(hub: Arc<Hub>, afd: AsyncFd<OwnedFd>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut guard = match afd.readable().await {
            Ok(g) => g,
            Err(e) => {
                log::warn!("uevent socket: {e}; device waits poll sysfs from now on");
                hub.listening.store(false, Ordering::Release);
                hub.rescan_waiters();
                return;
            }
        };
        match recvfrom::<NetlinkAddr>(afd.get_ref().as_raw_fd(), &mut buf) {
            Ok((n, from)) => {
                // Only the kernel (port 0) speaks for devices.
                if from.is_some_and(|a| a.pid() != 0) {
                    continue;
                }
                if let Some(ev) = buf.get(..n).and_then(Uevent::parse) {
                    hub.dispatch(&ev);
                }
            }
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(nix::errno::Errno::ENOBUFS) => {
                log::warn!("uevent socket overrun: events lost, rescanning for awaited devices");
                hub.rescan_waiters();
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                log::warn!(
                    "uevent socket: {}; device waits poll sysfs from now on",
                    crate::error::lower_first(e.desc())
                );
                hub.listening.store(false, Ordering::Release);
                hub.rescan_waiters();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet as the kernel sends it for a hot-plugged virtio disk.
    pub(crate) fn packet(action: &str, devpath: &str, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut p = format!("{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0");
        for (k, v) in fields {
            p.push_str(&format!("{k}={v}\0"));
        }
        p.push_str("SEQNUM=1234\0");
        p.into_bytes()
    }

    #[test]
    fn parses_a_kernel_packet() {
        let pkt = packet(
            "add",
            "/devices/pci0000:00/0000:00:05.0/0000:01:00.0/virtio3/block/vdb",
            &[
                ("SUBSYSTEM", "block"),
                ("MAJOR", "253"),
                ("MINOR", "16"),
                ("DEVNAME", "vdb"),
                ("DEVTYPE", "disk"),
            ],
        );
        let ev = Uevent::parse(&pkt).unwrap();
        assert_eq!(ev.action, "add");
        assert_eq!(ev.subsystem, "block");
        assert_eq!(ev.devname, "vdb");
        assert_eq!(ev.devtype, "disk");
        assert!(ev.devpath.ends_with("/block/vdb"));
    }

    #[test]
    fn garbage_is_not_an_event() {
        assert!(Uevent::parse(b"").is_none());
        assert!(Uevent::parse(b"\xff\xfe\0ACTION=add").is_none());
        assert!(Uevent::parse(b"libudev\0\xfe\xed\xca\xfe").is_none());
    }
}
