//! ResizeVolume, GetVolumeStats, AddSwap and AddSwapPath against the real
//! agent in its own namespaces, with disks on loop devices: an ext4 image
//! mounted as a `blk` storage is grown online after its file and loop
//! device were; swap requests the agent must refuse are refused before
//! anything is switched on. Root only.
//!
//! Nothing here is ever swapped on: every disk and file these tests offer
//! as swap lacks the signature (the agent reads it before `swapon`), and
//! no test sends a PCI path the host could have a disk at. `/proc/swaps`
//! is compared before and after to show it. Every loop device is detached
//! and its image removed, and the tests check that none is left.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::csi::volume_usage::Unit;

const MIB: u64 = 1 << 20;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

/// Whether the host can run these tests; says why not otherwise.
fn can_use_loop_devices() -> bool {
    if !is_root() {
        skip("volume tests need root (loop devices, mounts)");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        skip("no /dev/loop-control (modprobe loop)");
        return false;
    }
    for (tool, package) in [
        ("losetup", "util-linux"),
        ("mkfs.ext4", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
    ] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            skip(&format!("{tool} missing (apt-get install {package})"));
            return false;
        }
    }
    true
}

/// Whether this process (and so the agent it starts) may grow ext4.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    // CAP_SYS_RESOURCE is capability 24.
    eff & (1 << 24) != 0
}

fn swaps() -> String {
    std::fs::read_to_string("/proc/swaps").unwrap()
}

fn mounted(pid: u32, mp: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some(mp))
        .map(str::to_owned)
}

fn total(client: &AgentServiceClient, rt: &tokio::runtime::Runtime, mp: &str, unit: Unit) -> u64 {
    let mut req = VolumeStatsRequest::new();
    req.volume_guest_path = mp.into();
    let resp = rt.block_on(client.get_volume_stats(ctx(), &req)).unwrap();
    assert!(
        !resp.volume_condition.abnormal,
        "{mp}: {:?}",
        resp.volume_condition
    );
    let u = resp
        .usage
        .iter()
        .find(|u| u.unit.enum_value_or_default() == unit)
        .unwrap_or_else(|| panic!("{mp}: no {unit:?} usage in {resp:?}"));
    assert!(u.used <= u.total && u.available <= u.total, "{u:?}");
    u.total
}

fn resize(
    client: &AgentServiceClient,
    rt: &tokio::runtime::Runtime,
    mp: &str,
    size: u64,
) -> ttrpc::Result<()> {
    let mut req = ResizeVolumeRequest::new();
    req.volume_guest_path = mp.into();
    req.size = size;
    rt.block_on(client.resize_volume(ctx(), &req)).map(drop)
}

/// The status code and message of a refused request.
fn refusal(r: ttrpc::Result<()>) -> (ttrpc::Code, String) {
    match r {
        Ok(()) => panic!("accepted"),
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message.clone()),
        Err(e) => panic!("not a status: {e:?}"),
    }
}

#[test]
fn resize_volume_grows_a_mounted_ext4_online_and_stats_follow() {
    if !can_use_loop_devices() {
        return;
    }
    let swaps_before = swaps();
    let disk = LoopDisk::new(32 * MIB, true);
    let mut agent = Agent::start_isolated();
    let (rt, client) = agent_client(&agent);
    // A direct-assigned block volume as the Go runtime mounts it, and an
    // emptyDir beside it.
    let mp = "/run/kata-containers/sandbox/storage/vol";
    let tmp = "/run/kata-containers/sandbox/ephemeral/scratch";
    let mut sb = CreateSandboxRequest::new();
    sb.sandbox_id = format!("volumes-{}", std::process::id());
    sb.storages = vec![
        storage("blk", &disk.dev, "ext4", &[], mp),
        storage("ephemeral", "tmpfs", "tmpfs", &["size=1m"], tmp),
    ];
    rt.block_on(client.create_sandbox(ctx(), &sb)).unwrap();
    let line = mounted(agent.pid(), mp).expect("the volume is mounted");
    assert!(line.contains(" - ext4 "), "{line}");

    // GetVolumeStats of the block volume: bytes and inodes of the ext4.
    let bytes0 = total(&client, &rt, mp, Unit::BYTES);
    assert!(bytes0 > 16 * MIB && bytes0 <= 32 * MIB, "{bytes0}");
    assert!(total(&client, &rt, mp, Unit::INODES) > 0);

    // The disk was not enlarged: refused once the agent waited for it.
    let (code, msg) = refusal(resize(&client, &rt, mp, 64 * MIB));
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("the disk was not enlarged"), "{msg}");

    disk.grow(64 * MIB);
    // Shrinking is refused, the size it has is nothing to do.
    let (code, msg) = refusal(resize(&client, &rt, mp, 16 * MIB));
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("shrinking is not supported"), "{msg}");
    assert!(msg.starts_with(&format!("volume {mp:?}: ")), "{msg}");
    resize(&client, &rt, mp, 32 * MIB).unwrap();
    assert_eq!(total(&client, &rt, mp, Unit::BYTES), bytes0);
    if has_cap_sys_resource() {
        // To a size below the disk's, then to the whole disk (0).
        resize(&client, &rt, mp, 48 * MIB).unwrap();
        let bytes1 = total(&client, &rt, mp, Unit::BYTES);
        // 16 MiB more, less the new groups' inode tables and bitmaps.
        assert!(bytes1 >= bytes0 + 14 * MIB, "{bytes0} -> {bytes1}");
        resize(&client, &rt, mp, 0).unwrap();
        let bytes2 = total(&client, &rt, mp, Unit::BYTES);
        assert!(bytes2 >= bytes1 + 14 * MIB, "{bytes1} -> {bytes2}");
        resize(&client, &rt, mp, 64 * MIB).unwrap();
        assert_eq!(total(&client, &rt, mp, Unit::BYTES), bytes2);
    } else {
        // The kernel grows ext4 only for CAP_SYS_RESOURCE, which a
        // guest's agent has and some hosts' root lacks (a container's
        // bounding set): then the refusal says so, and the growth itself
        // is left to the micro-VM test (tests/vm).
        let (code, msg) = refusal(resize(&client, &rt, mp, 48 * MIB));
        assert_eq!(code, ttrpc::Code::INTERNAL, "{msg}");
        assert!(
            msg.ends_with("operation not permitted (needs CAP_SYS_RESOURCE)"),
            "{msg}"
        );
        assert_eq!(total(&client, &rt, mp, Unit::BYTES), bytes0);
        eprintln!(
            "note: this host's root lacks CAP_SYS_RESOURCE: growing was refused as expected, \
             not exercised (the micro-VM test grows a disk)"
        );
    }

    // Another filesystem, no mount, paths out of bounds.
    let (code, msg) = refusal(resize(&client, &rt, tmp, 64 * MIB));
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("a tmpfs filesystem: only ext4"), "{msg}");
    let (code, msg) = refusal(resize(
        &client,
        &rt,
        "/run/kata-containers/sandbox/storage",
        64 * MIB,
    ));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("nothing is mounted at"), "{msg}");
    for p in ["/etc", &format!("{mp}/../../../../etc"), "vol", ""] {
        let (code, msg) = refusal(resize(&client, &rt, p, 64 * MIB));
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{p:?}: {msg}");
    }
    std::os::unix::fs::symlink("/", agent.path("/run/kata-containers/escape")).unwrap();
    let (code, msg) = refusal(resize(
        &client,
        &rt,
        "/run/kata-containers/escape/etc",
        64 * MIB,
    ));
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("through a symlink, outside"), "{msg}");

    // The filesystem is whole after growing twice.
    rt.block_on(client.destroy_sandbox(ctx(), &DestroySandboxRequest::new()))
        .unwrap();
    assert!(
        agent.wait_exit(Duration::from_secs(15)).is_some(),
        "the agent did not stop after DestroySandbox"
    );
    drop(client);
    // /proc/fs/ext4/<dev> exists while the filesystem is mounted.
    let name = disk.dev.trim_start_matches("/dev/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new("/proc/fs/ext4").join(name).exists() {
        assert!(Instant::now() < deadline, "{} still mounted", disk.dev);
        std::thread::sleep(Duration::from_millis(20));
    }
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n", &disk.dev])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    disk.detach();
    assert_eq!(swaps(), swaps_before);
}

#[test]
fn swap_requests_without_a_swap_area_are_refused_before_swapon() {
    if !can_use_loop_devices() {
        return;
    }
    let swaps_before = swaps();
    // A disk of zeros: a block device, but no swap signature.
    let disk = LoopDisk::new(4 * MIB, false);
    let agent = Agent::start_isolated();
    let (rt, client) = agent_client(&agent);
    let add_swap_path = |path: &str| {
        let mut req = AddSwapPathRequest::new();
        req.path = path.into();
        rt.block_on(client.add_swap_path(ctx(), &req)).map(drop)
    };
    let add_swap = |slots: &[u32]| {
        let mut req = AddSwapRequest::new();
        req.PCIPath = slots.to_vec();
        rt.block_on(client.add_swap(ctx(), &req)).map(drop)
    };

    let run_dir = agent.path("/run/kata-containers");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("zeros"), vec![0u8; 1 << 16]).unwrap();
    std::fs::create_dir(run_dir.join("dir")).unwrap();
    std::os::unix::fs::symlink(&disk.image, run_dir.join("out")).unwrap();
    for (path, code, why) in [
        (
            disk.dev.as_str(),
            ttrpc::Code::FAILED_PRECONDITION,
            "no swap signature",
        ),
        (
            "/run/kata-containers/zeros",
            ttrpc::Code::FAILED_PRECONDITION,
            "no swap signature",
        ),
        (
            "/run/kata-containers/dir",
            ttrpc::Code::INVALID_ARGUMENT,
            "is not a regular file",
        ),
        (
            "/run/kata-containers/out",
            ttrpc::Code::INVALID_ARGUMENT,
            "through a symlink, outside",
        ),
        (
            "/run/kata-containers/missing",
            ttrpc::Code::NOT_FOUND,
            "no such file",
        ),
        (
            "/dev/null",
            ttrpc::Code::INVALID_ARGUMENT,
            "is not a block device",
        ),
        (
            "/etc/passwd",
            ttrpc::Code::INVALID_ARGUMENT,
            "neither a device",
        ),
        (
            "/dev/../etc/passwd",
            ttrpc::Code::INVALID_ARGUMENT,
            "\"..\"",
        ),
        (
            "swapfile",
            ttrpc::Code::INVALID_ARGUMENT,
            "not an absolute path",
        ),
        ("", ttrpc::Code::INVALID_ARGUMENT, "empty path"),
    ] {
        let (c, msg) = refusal(add_swap_path(path));
        assert_eq!(c, code, "{path:?}: {msg}");
        assert!(msg.contains(why), "{path:?}: {msg}");
        assert!(msg.starts_with(&format!("swap {path:?}: ")), "{msg}");
    }
    // PCI paths that cannot name a device; none that could is sent here,
    // where the host's own buses would be searched (and rescanned).
    for (slots, why) in [
        (&[][..], "empty PCI path"),
        (&[0x20, 0][..], "PCI slot 0x20 out of range"),
        (&[1; 17][..], "hops"),
    ] {
        let (c, msg) = refusal(add_swap(slots));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{slots:?}: {msg}");
        assert!(msg.contains(why), "{slots:?}: {msg}");
    }
    drop(client);
    drop(agent);
    disk.detach();
    assert_eq!(swaps(), swaps_before, "something was swapped on");
}
