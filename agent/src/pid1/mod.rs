//! PID 1 duties: what a guest init must do before the agent can serve.
//!
//! When the agent is the guest's `/init` (PID 1), [`setup_pid1`] mounts the
//! kernel filesystems (`/proc`, `/sys`, `/dev`, `/dev/pts`, `/dev/shm`,
//! `/run`), loads the kernel modules the initrd carries ([`modules`]), mounts
//! the cgroup hierarchies ([`cgroupfs`]), sets `PATH`, brings `lo` up ([`net`])
//! and puts stdin, stdout and stderr on `/dev/console` (on `/dev/kmsg`
//! until a console whose driver is a module exists). Run as an ordinary
//! process (a systemd service, a host test) it does nothing.
//!
//! Everything here is synchronous and runs before the tokio runtime starts.
//! Only the mounts the agent cannot live without are fatal; a cgroup
//! controller, a module or `lo` that fails is recorded as a note (see
//! [`take_notes`]) for the caller to log once its logger is up: a failing
//! subsystem is reported and isolated, never a reason to stop PID 1.
//! [`poweroff`] is the only way PID 1 ends: sync, then power the VM off.

pub mod cgroupfs;
pub mod modules;
pub mod mounts;
pub mod net;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `PATH` PID 1 gives itself and its children (the kernel passes none).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Directories under the `/run` tmpfs that the host shim expects to exist.
const RUN_DIRS: &[&str] = &[
    "/run/kata-containers",
    "/run/kata-containers/shared",
    "/run/kata-containers/shared/containers",
    "/run/kata-containers/sandbox",
];

/// Why PID 1 could not prepare the guest.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mount {fstype} at {target}: {source}")]
    Mount {
        target: PathBuf,
        fstype: String,
        source: nix::Error,
    },
    #[error("create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("console {path}: {source}")]
    Console { path: PathBuf, source: nix::Error },
    #[error("module {path}: {source}")]
    Module { path: PathBuf, source: nix::Error },
    #[error("hostname {name:?}: {source}")]
    Hostname { name: String, source: nix::Error },
    #[error("interface {name}: {source}")]
    Interface {
        name: &'static str,
        source: nix::Error,
    },
}

static DONE: AtomicBool = AtomicBool::new(false);
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static TIMINGS: OnceLock<Timings> = OnceLock::new();

/// How long the guest took to reach the agent, for the boot benchmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Guest uptime (`/proc/uptime`) when PID 1 started its setup.
    pub uptime_at_start: Duration,
    /// How long [`setup_pid1`] took (mounts, modules, cgroups, `lo`).
    pub setup: Duration,
    /// Of which: the kernel filesystems and the console, the modules, the
    /// cgroup hierarchies.
    pub mounts: Duration,
    pub modules: Duration,
    pub cgroups: Duration,
}

/// The boot figures of this PID 1, once [`setup_pid1`] has run.
pub fn timings() -> Option<Timings> {
    TIMINGS.get().copied()
}

/// The first field of `/proc/uptime` ("12.34 45.67").
fn parse_uptime(text: &str) -> Option<Duration> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// True when this process is the guest's init.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Records a non-fatal problem for the caller to log later.
fn note(msg: String) {
    if let Ok(mut notes) = NOTES.lock() {
        notes.push(msg);
    }
}

/// Hands over the non-fatal problems met so far (cgroup controllers, modules,
/// `lo`, console), one message each, and forgets them.
pub fn take_notes() -> Vec<String> {
    NOTES
        .lock()
        .map(|mut n| std::mem::take(&mut *n))
        .unwrap_or_default()
}

/// Prepares the guest when this process is PID 1; does nothing otherwise.
///
/// Call it first thing, before the configuration is read (that needs
/// `/proc/cmdline`) and before any thread exists. Cgroups are v2 when
/// `unified_cgroups` is set or the kernel command line asks for it
/// (`cgroup_no_v1=all`, `systemd.unified_cgroup_hierarchy=1`); otherwise one
/// v1 hierarchy per enabled controller. A second call does nothing.
pub fn setup_pid1(unified_cgroups: bool) -> Result<(), InitError> {
    if !is_pid1() || DONE.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let started = Instant::now();
    // Files and directories we create get exactly the modes we ask for.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    mounts::mount_kernel_filesystems()?;
    let uptime_at_start = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| parse_uptime(&t))
        .map(|u| u.saturating_sub(started.elapsed()));
    let console = mounts::reopen_console();
    if console.is_err() {
        // No console yet: the logs go to the kernel's log meanwhile.
        if let Err(e) = mounts::use_kmsg() {
            note(e.to_string());
        }
    }
    std::env::set_var("PATH", PATH);

    let cmdline_path = Path::new("/proc/cmdline");
    let cmdline = std::fs::read_to_string(cmdline_path).map_err(|source| InitError::Read {
        path: cmdline_path.to_path_buf(),
        source,
    })?;
    // Modules first: vsock and virtio-fs must exist before anyone uses them.
    // Their parameters on the command line (`scsi_mod.scan=none`, as Kata
    // boots) are passed as modprobe would.
    let mounts_done = started.elapsed();
    for e in modules::load_listed(Path::new(modules::LOAD_ORDER), &cmdline) {
        note(e.to_string());
    }
    // A console whose driver is a module (virtio_console for hvc0) exists
    // only now.
    if let Err(first) = console {
        if let Err(e) = mounts::reopen_console() {
            note(format!(
                "{first}; after loading modules: {e}; logging to /dev/kmsg"
            ));
        }
    }

    for dir in RUN_DIRS {
        mounts::mkdir_p(Path::new(dir), 0o755)?;
    }

    let modules_done = started.elapsed();
    let mode = cgroupfs::Mode::from_cmdline(&cmdline, unified_cgroups);
    for e in cgroupfs::mount(&mode) {
        note(e.to_string());
    }
    let cgroups_done = started.elapsed();

    if let Err(e) = net::loopback_up() {
        note(e.to_string());
    }
    if let Err(e) = set_hostname(Path::new("/etc/hostname")) {
        note(e.to_string());
    }
    if let Some(uptime_at_start) = uptime_at_start {
        let _ = TIMINGS.set(Timings {
            uptime_at_start,
            setup: started.elapsed(),
            mounts: mounts_done,
            modules: modules_done.saturating_sub(mounts_done),
            cgroups: cgroups_done.saturating_sub(modules_done),
        });
    }
    Ok(())
}

/// Names the guest after the rootfs's `/etc/hostname`, if it has one, until
/// CreateSandbox gives it the pod's name.
fn set_hostname(path: &Path) -> Result<(), InitError> {
    let name = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(InitError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if name.is_empty() {
        return Ok(());
    }
    nix::unistd::sethostname(&name).map_err(|source| InitError::Hostname { name, source })
}

/// Syncs the filesystems and powers the VM off. Never returns and never
/// exits: PID 1 exiting would panic the kernel. Outside PID 1 (tests, a
/// systemd service) it exits the process instead of powering off the host.
pub fn poweroff() -> ! {
    crate::observe::flush_logs();
    nix::unistd::sync();
    if !is_pid1() {
        std::process::exit(0);
    }
    use nix::sys::reboot::RebootMode;
    let mode = if can_power_off() {
        RebootMode::RB_POWER_OFF
    } else {
        // The kernel would halt instead and leave the VM running: a reset
        // ends a VMM run with -no-reboot (Kata's QEMU, Firecracker).
        RebootMode::RB_AUTOBOOT
    };
    loop {
        // On success this does not return; on failure (no CAP_SYS_BOOT, which
        // PID 1 of a VM always has) wait and try again rather than exit.
        let _ = nix::sys::reboot::reboot(mode);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Whether the kernel has a way to power the machine off. On x86 that is
/// ACPI: a guest without it (QEMU's microvm with acpi=off, the fast boot
/// path) has none, and `reboot(RB_POWER_OFF)` halts the CPUs instead.
fn can_power_off() -> bool {
    !cfg!(target_arch = "x86_64") || Path::new("/sys/firmware/acpi").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_the_first_field() {
        assert_eq!(
            parse_uptime("12.34 45.67\n"),
            Some(Duration::from_millis(12340))
        );
        assert_eq!(parse_uptime("0.05 0.01"), Some(Duration::from_millis(50)));
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("x 1"), None);
        assert_eq!(parse_uptime("-1 1"), None);
    }

    #[test]
    fn not_pid1_does_nothing() {
        // The test runner is never PID 1 of a VM: nothing is mounted.
        assert!(!is_pid1());
        setup_pid1(true).unwrap();
        assert!(timings().is_none());
        assert!(take_notes().is_empty());
    }
}
