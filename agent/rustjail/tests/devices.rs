//! The device cgroup, for real: a container opens the devices of the
//! default allow-list and none other (cgroup v1 here, through the
//! container), and the cgroup v2 device program does the same for a
//! process in a v2 cgroup of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rustjail::devices::{container_rules, DeviceFilter};
use rustjail::oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType, MountBuilder};

/// A character device of the host that is not on the allow-list and that
/// root may open without a capability, with its numbers.
fn unlisted_device() -> Option<(PathBuf, i64, i64)> {
    ["/dev/fuse", "/dev/net/tun", "/dev/kvm"]
        .iter()
        .find_map(|p| {
            let md = std::fs::metadata(p).ok()?;
            md.file_type().is_char_device().then(|| {
                let rdev = md.rdev();
                (
                    PathBuf::from(p),
                    libc::major(rdev) as i64,
                    libc::minor(rdev) as i64,
                )
            })
        })
}

fn as_device(path: &Path, major: i64, minor: i64) -> LinuxDevice {
    LinuxDeviceBuilder::default()
        .path(path)
        .typ(LinuxDeviceType::C)
        .major(major)
        .minor(minor)
        .file_mode(0o600u32)
        .build()
        .unwrap()
}

/// Opens /dev/null and /dev/probe, reading nothing (`head` is no special
/// builtin: a failed redirection does not end the shell).
const PROBE: &str = "head -c 0 </dev/null && echo null-ok; \
    if head -c 0 </dev/probe 2>/dev/null; then echo probe-open; else echo probe-denied; fi";

#[test]
fn a_container_opens_only_allowed_devices() {
    require_root!();
    let Some((dev, major, minor)) = unlisted_device() else {
        skip("no /dev/fuse, /dev/net/tun or /dev/kvm on this host");
        return;
    };
    // The host's node bound into the container: only the cgroup stops it.
    let id = unique_id("devdeny");
    let mut s = spec(&id, &["sh", "-c", PROBE]);
    let mut mounts = s.mounts().clone().unwrap_or_default();
    mounts.push(
        MountBuilder::default()
            .destination("/dev/probe")
            .typ("bind")
            .source(&dev)
            .options(vec!["bind".to_string()])
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    let out = run(&s);
    assert_eq!(out.stdout, "null-ok\nprobe-denied\n", "{}", out.stderr);

    // Listed in linux.devices: made in /dev and allowed.
    let id = unique_id("devallow");
    let mut s = spec(&id, &["sh", "-c", PROBE]);
    let linux = s.linux_mut().as_mut().unwrap();
    linux.set_devices(Some(vec![as_device(Path::new("/dev/probe"), major, minor)]));
    let out = run(&s);
    assert_eq!(out.stdout, "null-ok\nprobe-open\n", "{}", out.stderr);
}

/// Where a cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` itself, or the
/// hybrid layout's `/sys/fs/cgroup/unified`.
fn v2_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|root| {
            rustjail::cgroups::layout_from_mountinfo(&mountinfo, root)
                == Some(rustjail::cgroups::Layout::V2)
        })
}

/// Runs the probe in the v2 cgroup `dir` (the shell moves itself there).
fn probe_in(dir: &Path, dev: &Path) -> String {
    let script = format!(
        "echo $$ > {}/cgroup.procs && {}",
        dir.display(),
        PROBE.replace("/dev/probe", &dev.display().to_string())
    );
    let out = Command::new("/bin/busybox")
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_v2_device_program_allows_and_replaces() {
    require_root!();
    let Some(root) = v2_root() else {
        skip("no cgroup v2 hierarchy mounted");
        return;
    };
    let Some((dev, major, minor)) = unlisted_device() else {
        skip("no /dev/fuse, /dev/net/tun or /dev/kvm on this host");
        return;
    };
    let dir = root.join(unique_id("devprog"));
    std::fs::create_dir(&dir).unwrap();
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            probe_in(&dir, &dev),
            "null-ok\nprobe-open\n",
            "no program yet"
        );
        let mut filter = DeviceFilter::default();
        filter.replace(&dir, &container_rules(&[], &[])).unwrap();
        assert_eq!(probe_in(&dir, &dev), "null-ok\nprobe-denied\n");
        // Replaced by a program that allows the device: the old one is gone.
        let rules = container_rules(&[], &[as_device(&dev, major, minor)]);
        filter.replace(&dir, &rules).unwrap();
        assert_eq!(probe_in(&dir, &dev), "null-ok\nprobe-open\n");
    });
    // The probes have exited: the cgroup is empty again.
    std::fs::remove_dir(&dir).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
