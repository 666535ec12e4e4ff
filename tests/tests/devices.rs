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
    let disk = LoopDisk::with_files(&[("hello", "from the disk\n")]);
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
    let disk = LoopDisk::with_files(&[("hello", "from the disk\n")]);
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
    // What the container wrote is on the disk. Mounted again (in a mount
    // namespace of its own), not read raw: the container's mount namespace
    // may still hold the filesystem for a moment after it exited, and a
    // new mount of the disk shares that live filesystem if so.
    let dir = tempfile::tempdir().unwrap();
    let check = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -o ro {} {} && cat {}/new",
            disk.dev,
            dir.path().display(),
            dir.path().display()
        ))
        .output()
        .expect("run unshare");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "written\n",
        "{check:?}"
    );
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
