//! Devices and block storages through the real agent, with a loop disk
//! standing in for a hot-plugged one: CreateContainer.devices gives the
//! container the guest's node (the host's numbers in the spec are
//! replaced, and the device cgroup follows), a `blk` storage mounts the
//! disk for a volume, and a device that never comes fails within
//! `agent.hotplug_timeout`, leaving nothing behind. Hot-plug itself is
//! tested in the micro-VM (`tests/vm/devices.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use integration_tests::env::*;
use integration_tests::*;
use protocols::agent::*;
use protocols::oci;
use ttrpc::Code;

/// A loop device over a fresh ext4 image holding `hello`; detached on
/// drop.
struct Loop {
    dev: String,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn new() -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("hello"), "from the disk\n").unwrap();
        let img = dir.path().join("disk.img");
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("16M")
            .output()
            .expect("run mkfs.ext4 (e2fsprogs)");
        assert!(out.status.success(), "mkfs.ext4: {out:?}");
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .expect("run losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Loop { dev, _dir: dir }
    }

    fn numbers(&self) -> (i64, i64) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev).into(), libc::minor(rdev).into())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn device(typ: &str, id: &str, vm_path: &str, container_path: &str) -> Device {
    let mut d = Device::new();
    d.type_ = typ.into();
    d.id = id.into();
    d.vm_path = vm_path.into();
    d.container_path = container_path.into();
    d
}

fn create_with(
    env: &Env,
    cid: &str,
    spec: oci::Spec,
    devices: Vec<Device>,
    storages: Vec<Storage>,
) -> ttrpc::Result<()> {
    let mut req = CreateContainerRequest::new();
    req.container_id = cid.into();
    req.exec_id = cid.into();
    req.OCI = Some(spec).into();
    req.devices = devices;
    req.storages = storages;
    env.rt
        .block_on(env.client.create_container(ctx(), &req))
        .map(|_| ())
}

#[test]
fn a_device_reaches_the_container_with_the_guest_numbers() {
    let Some(env) = Env::new() else { return };
    let disk = Loop::new();
    let (major, minor) = disk.numbers();
    let cid = unique("dev");
    let mut spec = env.spec(
        env.rootfs.path(),
        &cid,
        &[
            "sh",
            "-c",
            "stat -c '%t:%T %F' /dev/xvdb; dd if=/dev/xvdb of=/dev/null bs=4096 count=1 2>/dev/null && echo readable",
        ],
    );
    // As the shim sends it: the host's idea of the node (8:0) in the
    // devices list and the cgroup rules; only the guest's numbers work.
    if let Some(l) = spec.Linux.as_mut() {
        let mut d = oci::LinuxDevice::new();
        d.Path = "/dev/xvdb".into();
        d.Type = "b".into();
        d.Major = 8;
        d.Minor = 0;
        d.FileMode = 0o660;
        l.Devices.push(d);
        let mut res = oci::LinuxResources::new();
        let mut deny = oci::LinuxDeviceCgroup::new();
        deny.Access = "rwm".into();
        let mut allow = oci::LinuxDeviceCgroup::new();
        allow.Allow = true;
        allow.Type = "b".into();
        allow.Major = 8;
        allow.Minor = 0;
        allow.Access = "rw".into();
        res.Devices = vec![deny, allow];
        l.Resources = Some(res).into();
    }
    create_with(
        &env,
        &cid,
        spec,
        vec![device("mmioblk", "", &disk.dev, "/dev/xvdb")],
        vec![],
    )
    .unwrap();
    env.start(&cid).unwrap();
    let out = String::from_utf8(env.read_all(&cid, &cid, false, 65536)).unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0, "{out}");
    assert!(
        out.contains(&format!("{major:x}:{minor:x} block special file")),
        "{out}"
    );
    assert!(out.contains("readable"), "{out}");
    env.remove(&cid).unwrap();
}

#[test]
fn a_block_volume_is_mounted_for_the_container_and_released() {
    let Some(env) = Env::new() else { return };
    let disk = Loop::new();
    let cid = unique("vol");
    let mp = format!("/run/kata-containers/sandbox/storage/{cid}");
    let mut spec = env.spec(
        env.rootfs.path(),
        &cid,
        &["sh", "-c", "cat /data/hello; echo written >/data/new"],
    );
    spec.Mounts
        .push(oci_mount("/data", "bind", &mp, &["rbind", "rw"]));
    create_with(
        &env,
        &cid,
        spec,
        vec![],
        vec![storage("blk", &disk.dev, "ext4", &[], &mp)],
    )
    .unwrap();
    env.start(&cid).unwrap();
    let out = String::from_utf8(env.read_all(&cid, &cid, false, 65536)).unwrap();
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0, "{out}");
    assert_eq!(out, "from the disk\n");
    let mounted = |env: &Env| {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", env.agent.pid()))
            .map(|t| t.contains(&disk.dev))
            .unwrap_or(false)
    };
    assert!(mounted(&env));
    env.remove(&cid).unwrap();
    assert!(
        !mounted(&env),
        "the disk is still mounted after RemoveContainer"
    );
    assert!(!env.agent.path(&mp).exists());
    // What the container wrote is on the disk.
    let check = Command::new("debugfs")
        .args(["-R", "cat /new", &disk.dev])
        .output()
        .expect("run debugfs (e2fsprogs)");
    assert_eq!(String::from_utf8_lossy(&check.stdout), "written\n");
}

#[test]
fn a_device_that_never_comes_fails_in_time_and_leaves_nothing() {
    let Some(env) = Env::with_cmdline("agent.hotplug_timeout=1") else {
        return;
    };
    let cid = unique("nodev");
    for (devices, storages, what) in [
        (
            vec![device("blk", "1f/1f", "/dev/vdz", "/dev/xvdz")],
            vec![],
            "virtio-blk device at PCI path 1f/1f",
        ),
        (
            vec![],
            vec![storage(
                "scsi",
                "7:3",
                "ext4",
                &[],
                "/run/kata-containers/sandbox/storage/never",
            )],
            "SCSI device 7:3",
        ),
    ] {
        let spec = env.spec(env.rootfs.path(), &cid, &["true"]);
        let e = create_with(&env, &cid, spec, devices, storages).unwrap_err();
        // The agent's answer (not the client's 60 s deadline): its
        // message says what it looked for and found.
        assert_eq!(code(&e), Code::DEADLINE_EXCEEDED, "{e:?}");
        let msg = message(&e);
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains("found instead"), "{msg}");
        assert!(!env
            .agent
            .path(format!("/run/kata-containers/{cid}"))
            .exists());
        assert!(!env
            .agent
            .path("/run/kata-containers/sandbox/storage/never")
            .exists());
    }
    // The agent serves on, and the id is free.
    env.run(&cid, &["true"]);
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    env.remove(&cid).unwrap();
}
