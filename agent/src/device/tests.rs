//! Matchers fed with events recorded from a q35 guest (Debian's 6.1
//! kernel under QEMU), waits against a fake sysfs.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pci::ROOT_BUS_DIR;
use super::uevent::Uevent;
use super::*;

fn ev(action: &str, subsystem: &str, devpath: &str, devname: &str, devtype: &str) -> Uevent {
    Uevent {
        action: action.into(),
        devpath: devpath.into(),
        subsystem: subsystem.into(),
        devname: devname.into(),
        devtype: devtype.into(),
        interface: String::new(),
    }
}

/// A sysfs with a root port in slot 5 of the root bus, bus 1 behind it.
fn sysfs_with_port() -> tempfile::TempDir {
    let sys = tempfile::tempdir().unwrap();
    let port = sys.path().join(ROOT_BUS_DIR).join("0000:00:05.0");
    fs::create_dir_all(port.join("pci_bus/0000:01")).unwrap();
    fs::create_dir_all(sys.path().join("class/block")).unwrap();
    fs::create_dir_all(sys.path().join("bus/pci")).unwrap();
    sys
}

/// Where the fake sysfs's device nodes are (plain files: they open).
fn nodes(sys: &Path) -> std::path::PathBuf {
    sys.join("nodes")
}

/// Devices over the fake sysfs and its nodes.
fn devices(sys: &Path, timeout: Duration) -> Devices {
    fs::create_dir_all(nodes(sys)).unwrap();
    Devices::with_roots(sys.into(), nodes(sys), timeout)
}

/// Plugs a virtio disk `name` behind the port, as the kernel lays it out,
/// and makes its node.
fn plug_disk(sys: &Path, name: &str) {
    plug_disk_in_sysfs(sys, name);
    fs::create_dir_all(nodes(sys)).unwrap();
    fs::write(nodes(sys).join(name), b"").unwrap();
}

/// Only the sysfs part: the disk is not ready to be opened yet.
fn plug_disk_in_sysfs(sys: &Path, name: &str) {
    let dir = sys
        .join(ROOT_BUS_DIR)
        .join("0000:00:05.0/0000:01:00.0/virtio3/block")
        .join(name);
    fs::create_dir_all(dir).unwrap();
}

const DISK: &str = "/devices/pci0000:00/0000:00:05.0/0000:01:00.0/virtio3/block/vdb";

#[test]
fn virtio_blk_matches_its_pci_path_only() {
    let sys = sysfs_with_port();
    let t = Target::BlkPci("05/00".parse().unwrap());
    let add = ev("add", "block", DISK, "vdb", "disk");
    assert_eq!(t.matches(&add, sys.path()).unwrap().name, "vdb");
    // Another slot, a partition, a removal, another subsystem: no.
    let other = Target::BlkPci("05/01".parse().unwrap());
    assert!(other.matches(&add, sys.path()).is_none());
    let part = ev("add", "block", &format!("{DISK}/vdb1"), "vdb1", "partition");
    assert!(t.matches(&part, sys.path()).is_none());
    assert!(t
        .matches(&ev("remove", "block", DISK, "vdb", "disk"), sys.path())
        .is_none());
    assert!(t
        .matches(
            &ev("add", "bdi", "/devices/virtual/bdi/253:16", "", ""),
            sys.path()
        )
        .is_none());
    // The virtio device itself, before its disk: no.
    let virtio = ev(
        "add",
        "virtio",
        "/devices/pci0000:00/0000:00:05.0/0000:01:00.0/virtio3",
        "",
        "",
    );
    assert!(t.matches(&virtio, sys.path()).is_none());
    // A disk on the root bus, slot 7.
    let t7 = Target::BlkPci("07".parse().unwrap());
    let on_root = ev(
        "add",
        "block",
        "/devices/pci0000:00/0000:00:07.0/virtio5/block/vdc",
        "vdc",
        "disk",
    );
    assert_eq!(t7.matches(&on_root, sys.path()).unwrap().name, "vdc");
    assert!(t.matches(&on_root, sys.path()).is_none());
}

#[test]
fn mmio_scsi_pmem_and_net_matchers() {
    let sys = sysfs_with_port();
    let mmio = Target::BlkMmio("vdb".into());
    let e = ev(
        "add",
        "block",
        "/devices/platform/a000200.virtio_mmio/virtio1/block/vdb",
        "vdb",
        "disk",
    );
    assert_eq!(mmio.matches(&e, sys.path()).unwrap().name, "vdb");
    assert!(Target::BlkMmio("vda".into())
        .matches(&e, sys.path())
        .is_none());

    let scsi = Target::Scsi { target: 1, lun: 0 };
    let e = ev(
        "add",
        "block",
        "/devices/pci0000:00/0000:00:03.0/virtio1/host0/target0:0:1/0:0:1:0/block/sda",
        "sda",
        "disk",
    );
    assert_eq!(scsi.matches(&e, sys.path()).unwrap().name, "sda");
    assert!(Target::Scsi { target: 1, lun: 1 }
        .matches(&e, sys.path())
        .is_none());
    assert!(Target::Scsi { target: 0, lun: 0 }
        .matches(&e, sys.path())
        .is_none());
    // Target 11 is not target 1.
    let e11 = ev(
        "add",
        "block",
        "/devices/pci0000:00/0000:00:03.0/virtio1/host0/target0:0:11/0:0:11:0/block/sdb",
        "sdb",
        "disk",
    );
    assert!(scsi.matches(&e11, sys.path()).is_none());

    let pmem = Target::Pmem("pmem0".into());
    let e = ev(
        "add",
        "block",
        "/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/region0/namespace0.0/block/pmem0",
        "pmem0",
        "disk",
    );
    assert_eq!(pmem.matches(&e, sys.path()).unwrap().name, "pmem0");
    let part = ev(
        "add",
        "block",
        "/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/region0/namespace0.0/block/pmem0/pmem0p1",
        "pmem0p1",
        "partition",
    );
    let p1 = Target::Pmem("pmem0p1".into());
    assert_eq!(p1.matches(&part, sys.path()).unwrap().name, "pmem0p1");
    assert!(pmem.matches(&part, sys.path()).is_none());
    let not_nd = ev(
        "add",
        "block",
        "/devices/virtual/block/pmem0",
        "pmem0",
        "disk",
    );
    assert!(pmem.matches(&not_nd, sys.path()).is_none());

    let net = Target::NetPci("05/00".parse().unwrap());
    let mut e = ev(
        "add",
        "net",
        "/devices/pci0000:00/0000:00:05.0/0000:01:00.0/virtio4/net/eth1",
        "",
        "",
    );
    e.interface = "eth1".into();
    assert_eq!(net.matches(&e, sys.path()).unwrap().name, "eth1");
    assert!(Target::BlkPci("05/00".parse().unwrap())
        .matches(&e, sys.path())
        .is_none());

    let vfio = Target::VfioPci("05/00".parse().unwrap());
    let e = ev(
        "add",
        "pci",
        "/devices/pci0000:00/0000:00:05.0/0000:01:00.0",
        "",
        "",
    );
    assert_eq!(vfio.matches(&e, sys.path()).unwrap().name, "0000:01:00.0");
    let child = ev(
        "add",
        "pci",
        "/devices/pci0000:00/0000:00:05.0/0000:01:00.0/0000:02:00.0",
        "",
        "",
    );
    assert!(vfio.matches(&child, sys.path()).is_none());
}

#[test]
fn a_disk_already_there_is_found_without_an_event() {
    let sys = sysfs_with_port();
    plug_disk(sys.path(), "vdb");
    let d = devices(sys.path(), Duration::from_secs(5));
    let f = d.wait(&Target::BlkPci("05/00".parse().unwrap())).unwrap();
    assert_eq!(f.name, "vdb");
}

#[test]
fn a_disk_in_sysfs_that_does_not_open_yet_waits_for_its_event() {
    let sys = sysfs_with_port();
    // In sysfs, but its node does not open (yet): not taken from the scan.
    plug_disk_in_sysfs(sys.path(), "vdb");
    let d = Arc::new(devices(sys.path(), Duration::from_millis(300)));
    let e = d
        .wait(&Target::BlkPci("05/00".parse().unwrap()))
        .unwrap_err();
    assert_eq!(e.code(), ttrpc::Code::DEADLINE_EXCEEDED, "{e}");
    // Its add event is trusted.
    let hub = d.hub().clone();
    let waiter = {
        let d = d.clone();
        std::thread::spawn(move || d.wait(&Target::BlkPci("05/00".parse().unwrap())))
    };
    while !waiter.is_finished() {
        hub.dispatch(&ev("add", "block", DISK, "vdb", "disk"));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(waiter.join().unwrap().unwrap().name, "vdb");
}

#[test]
fn a_wait_is_answered_by_the_event() {
    let sys = sysfs_with_port();
    let d = Arc::new(Devices::with_roots(
        sys.path().into(),
        "/dev".into(),
        Duration::from_secs(60),
    ));
    let hub = d.hub().clone();
    let waiter = {
        let d = d.clone();
        std::thread::spawn(move || d.wait(&Target::BlkPci("05/00".parse().unwrap())))
    };
    // Events for other devices first, then ours, until the wait is
    // answered (the waiter may not have subscribed yet).
    let ours = ev("add", "block", DISK, "vdb", "disk");
    let other = ev(
        "add",
        "block",
        "/devices/pci0000:00/0000:00:06.0/0000:02:00.0/virtio4/block/vdc",
        "vdc",
        "disk",
    );
    while !waiter.is_finished() {
        hub.dispatch(&other);
        hub.dispatch(&ours);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(waiter.join().unwrap().unwrap().name, "vdb");
}

#[test]
fn a_device_that_never_comes_times_out_naming_it() {
    let sys = sysfs_with_port();
    fs::create_dir_all(sys.path().join("class/block/vda")).unwrap();
    let d = Devices::with_roots(sys.path().into(), "/dev".into(), Duration::from_millis(200));
    let e = d
        .wait(&Target::BlkPci("05/00".parse().unwrap()))
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("virtio-blk device at PCI path 05/00"), "{msg}");
    assert!(msg.contains("0000:01:00.0"), "{msg}");
    assert!(msg.contains("block devices present: vda"), "{msg}");
    assert_eq!(e.code(), ttrpc::Code::DEADLINE_EXCEEDED);
    // The rescan was asked for.
    assert_eq!(
        fs::read_to_string(sys.path().join("bus/pci/rescan")).unwrap(),
        "1"
    );
}

#[test]
fn a_device_that_comes_with_the_rescan_ends_the_wait() {
    let sys = sysfs_with_port();
    let d = Arc::new(Devices::with_roots(
        sys.path().into(),
        "/dev".into(),
        Duration::from_millis(300),
    ));
    // The disk appears, with its event, only once the rescan is asked for.
    let (root, hub) = (sys.path().to_path_buf(), d.hub().clone());
    let kernel = std::thread::spawn(move || {
        let rescan = root.join("bus/pci/rescan");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !rescan.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        plug_disk(&root, "vdd");
        let disk = DISK.replace("vdb", "vdd");
        hub.dispatch(&ev("add", "block", &disk, "vdd", "disk"));
    });
    let r = d.wait(&Target::BlkPci("05/00".parse().unwrap()));
    kernel.join().unwrap();
    assert_eq!(r.unwrap().name, "vdd");
}

#[test]
fn scsi_waits_ask_the_hosts_to_scan() {
    let sys = sysfs_with_port();
    let host = sys.path().join("class/scsi_host/host0");
    fs::create_dir_all(&host).unwrap();
    fs::create_dir_all(sys.path().join("bus/scsi/devices/0:0:1:0/block/sda")).unwrap();
    let d = devices(sys.path(), Duration::from_secs(5));
    fs::write(nodes(sys.path()).join("sda"), b"").unwrap();
    let f = d.wait(&Target::Scsi { target: 1, lun: 0 }).unwrap();
    assert_eq!(f.name, "sda");
    assert_eq!(fs::read_to_string(host.join("scan")).unwrap(), "0 1 0");
}

#[test]
fn spec_gets_the_guest_numbers() {
    use rustjail::oci_spec::runtime::{LinuxDeviceType, Spec};
    let mut spec: Spec = serde_json::from_str(
        r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{
            "devices":[{"path":"/dev/xvda","type":"b","major":8,"minor":0,"fileMode":432}],
            "resources":{"devices":[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"b","major":8,"minor":0,"access":"rw"}]}}}"#,
    )
    .unwrap();
    let node = spec::Node {
        path: "/dev/vdb".into(),
        typ: LinuxDeviceType::B,
        major: 253,
        minor: 16,
        mode: 0o660,
    };
    spec::update_spec(&mut spec, Path::new("/dev/xvda"), &node);
    let linux = spec.linux().as_ref().unwrap();
    let d = &linux.devices().as_ref().unwrap()[0];
    assert_eq!((d.major(), d.minor()), (253, 16));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!((rules[1].major(), rules[1].minor()), (Some(253), Some(16)));
    assert_eq!(rules[1].access().as_deref(), Some("rw"));

    // A device the spec did not list is added and allowed.
    spec::update_spec(&mut spec, Path::new("/dev/data"), &node);
    let linux = spec.linux().as_ref().unwrap();
    let added = &linux.devices().as_ref().unwrap()[1];
    assert_eq!(added.path(), Path::new("/dev/data"));
    assert_eq!(added.typ(), LinuxDeviceType::B);
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules.len(), 3);
    assert!(rules[2].allow());
    assert_eq!(rules[2].access().as_deref(), Some("rwm"));
}

#[test]
fn spec_devices_refuse_bad_requests_and_change_nothing() {
    use protocols::agent::Device;
    use rustjail::oci_spec::runtime::Spec;
    let sys = sysfs_with_port();
    let d = Devices::with_roots(sys.path().into(), "/dev".into(), Duration::from_millis(50));
    let mut spec = Spec::default();
    let before = serde_json::to_string(&spec).unwrap();
    let cases = [
        ("floppy", "1", "", "/dev/fd0", "not supported"),
        ("blk", "zz", "", "/dev/x", "PCI path"),
        ("scsi", "1", "", "/dev/x", "target:lun"),
        (
            "mmioblk",
            "",
            "/dev/../etc/passwd",
            "/dev/x",
            "not a plain device name",
        ),
        ("nvdimm", "", "pmem0", "/dev/x", "not under /dev/"),
        ("vfio-pci", "5", "", "/dev/vfio/5", "no devices in options"),
    ];
    for (typ, id, vm_path, cpath, want) in cases {
        let dev = Device {
            type_: typ.into(),
            id: id.into(),
            vm_path: vm_path.into(),
            container_path: cpath.into(),
            ..Default::default()
        };
        let e = spec::apply(&d, &[dev], &mut spec).unwrap_err();
        assert!(e.to_string().contains(want), "{typ}: {e}");
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{typ}: {e}");
    }
    // A device that is there but a container path that escapes.
    fs::create_dir_all(sys.path().join("class/block/null")).unwrap();
    let dev = Device {
        type_: "mmioblk".into(),
        vm_path: "/dev/null".into(),
        container_path: "/dev/../../x".into(),
        ..Default::default()
    };
    let e = spec::apply(&d, &[dev], &mut spec).unwrap_err();
    assert!(e.to_string().contains("container_path"), "{e}");
    assert_eq!(serde_json::to_string(&spec).unwrap(), before);
}

#[test]
fn vfio_devices_resolve_to_their_group_node() {
    use protocols::agent::Device;
    use rustjail::oci_spec::runtime::Spec;
    let sys = sysfs_with_port();
    let dev_dir = sys
        .path()
        .join(ROOT_BUS_DIR)
        .join("0000:00:05.0/0000:01:00.0");
    fs::create_dir_all(&dev_dir).unwrap();
    // Already bound to vfio-pci, in group 7.
    let drv = sys.path().join("bus/pci/drivers/vfio-pci");
    fs::create_dir_all(&drv).unwrap();
    std::os::unix::fs::symlink(&drv, dev_dir.join("driver")).unwrap();
    let group = sys.path().join("kernel/iommu_groups/7");
    fs::create_dir_all(&group).unwrap();
    std::os::unix::fs::symlink(&group, dev_dir.join("iommu_group")).unwrap();
    // The group node: /dev/null stands in (a char device).
    let devroot = tempfile::tempdir().unwrap();
    fs::create_dir_all(devroot.path().join("vfio")).unwrap();
    std::os::unix::fs::symlink("/dev/null", devroot.path().join("vfio/7")).unwrap();
    let d = Devices::with_roots(
        sys.path().into(),
        devroot.path().into(),
        Duration::from_secs(5),
    );
    let mut spec = Spec::default();
    let dev = Device {
        type_: "vfio-pci".into(),
        id: "42".into(),
        container_path: "/dev/vfio/42".into(),
        options: vec!["0000:3b:00.0=05/00".into()],
        ..Default::default()
    };
    spec::apply(&d, &[dev], &mut spec).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let added = &linux.devices().as_ref().unwrap()[0];
    assert_eq!(added.path(), Path::new("/dev/vfio/42"));
    assert_eq!((added.major(), added.minor()), (1, 3));
}
