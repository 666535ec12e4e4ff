//! The device drivers (`blk`, `mmioblk`, `scsi`, `nvdimm`), `9p` and
//! `overlayfs`: request checks without root; real mounts of a loop
//! device and of tmpfs layers as root in a private mount namespace.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use protocols::agent::Storage;

use super::testns::{self, test_name};
use super::*;
use crate::device::Devices;

fn storage(driver: &str, mp: &Path, source: &str, fstype: &str, options: &[&str]) -> Storage {
    Storage {
        driver: driver.to_owned(),
        source: source.to_owned(),
        fstype: fstype.to_owned(),
        mount_point: mp.to_string_lossy().into_owned(),
        options: options.iter().map(|o| (*o).to_owned()).collect(),
        ..Default::default()
    }
}

/// A manager confined to a fresh root, whose devices live in a fake
/// sysfs (nothing is ever plugged there) and wait `wait`.
fn setup(
    wait: Duration,
) -> (
    tempfile::TempDir,
    PathBuf,
    StorageManager,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonicalize");
    let sys = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(
        sys.path()
            .join("devices/pci0000:00/0000:00:05.0/pci_bus/0000:01"),
    )
    .expect("fake sysfs");
    fs::create_dir_all(sys.path().join("class/block/vda")).expect("fake sysfs");
    fs::create_dir_all(sys.path().join("bus/pci")).expect("fake sysfs");
    let devices = Arc::new(Devices::with_roots(
        sys.path().to_path_buf(),
        "/dev".into(),
        wait,
    ));
    let m = StorageManager::new([root.clone()]).with_devices(devices);
    (dir, root, m, sys)
}

#[test]
fn device_requests_are_checked_before_anything_is_created() {
    let (_d, root, m, _sys) = setup(Duration::from_millis(50));
    let mp = root.join("vol");
    let cases: &[(&str, &str, &str, &[&str], &str)] = &[
        ("blk", "zz/00", "ext4", &[], "slot \"zz\""),
        ("blk", "05/00", "", &[], "no fstype"),
        ("blk", "05/00", "ext4,dax", &[], "not a filesystem name"),
        ("blk", "/dev/../etc", "ext4", &[], "not a plain device name"),
        ("mmioblk", "vdb", "ext4", &[], "not under /dev/"),
        ("scsi", "1", "ext4", &[], "target:lun"),
        ("scsi", "a:b", "ext4", &[], "target:lun"),
        (
            "nvdimm",
            "/dev/pmem0/x",
            "ext4",
            &[],
            "not a plain device name",
        ),
        ("9p", "", "9p", &[], "no 9p mount tag"),
        ("9p", "a,b", "9p", &[], "is not a tag"),
        ("9p", "tag", "ext4", &[], "only 9p"),
        ("overlayfs", "overlay", "overlay", &["ro"], "no lowerdir"),
        (
            "overlayfs",
            "overlay",
            "overlay",
            &["lowerdir=/etc"],
            "lowerdir",
        ),
        (
            "overlayfs",
            "overlay",
            "overlay",
            &["lowerdir=a:b"],
            "absolute",
        ),
        (
            "overlayfs",
            "overlay",
            "overlay",
            &["io.katacontainers.fs-opt.overlay-rw", "lowerdir=/x"],
            "needs a container",
        ),
    ];
    for (driver, source, fstype, options, want) in cases {
        let s = storage(driver, &mp, source, fstype, options);
        let e = m.add("sandbox", &s).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(want), "{driver} {source:?}: {msg}");
        assert!(msg.contains(&format!("(driver \"{driver}\")")), "{msg}");
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    }
    // An overlay layer outside the root is refused, inside too if it
    // leads out through a symlink.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
    let lower = format!("lowerdir={}", root.join("out/x").display());
    let e = m
        .add(
            "c1",
            &storage("overlayfs", &mp, "overlay", "overlay", &[&lower]),
        )
        .unwrap_err();
    assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}");
    assert!(m.list().is_empty());
    assert!(!mp.exists());
}

#[test]
fn a_disk_that_never_comes_fails_in_time_and_leaves_nothing() {
    let (_d, root, m, _sys) = setup(Duration::from_millis(100));
    let mp = root.join("sandbox/storage/vol");
    for (driver, source) in [
        ("blk", "05/00"),
        ("mmioblk", "/dev/vdz"),
        ("scsi", "2:0"),
        ("nvdimm", "/dev/pmem3"),
    ] {
        let e = m
            .add("c1", &storage(driver, &mp, source, "ext4", &[]))
            .unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.code(), ttrpc::Code::DEADLINE_EXCEEDED, "{msg}");
        assert!(msg.contains("not found within"), "{msg}");
        assert!(msg.contains("found instead"), "{msg}");
        assert!(m.list().is_empty());
        assert!(!root.join("sandbox").exists(), "{driver}: {msg}");
    }
    let e = m
        .add("c1", &storage("blk", &mp, "05/00", "ext4", &[]))
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("virtio-blk device at PCI path 05/00"), "{msg}");
    assert!(msg.contains("0000:01:00.0"), "{msg}");
    assert!(msg.contains("block devices present: vda"), "{msg}");
}

/// A loop device over a fresh ext4 image; detached on drop.
struct Loop {
    dev: String,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn new(files: &[(&str, &str)]) -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        for (name, text) in files {
            fs::write(tree.join(name), text).unwrap();
        }
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
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn block_devices_are_mounted_and_released() {
    if !testns::enter(test_name!(block_devices_are_mounted_and_released), false) {
        return;
    }
    let disk = Loop::new(&[("hello", "from the host")]);
    let name = disk.dev.trim_start_matches("/dev/").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    // The real sysfs: the loop disk is already there, found by its name.
    let devices = Arc::new(Devices::new(Duration::from_secs(5)));
    let m = StorageManager::new([root.clone()]).with_devices(devices);

    let mp = root.join("sandbox/storage/vol");
    let s = storage("blk", &mp, &disk.dev, "ext4", &["nodev"]);
    m.add("c1", &s).unwrap();
    assert_eq!(
        fs::read_to_string(mp.join("hello")).unwrap(),
        "from the host"
    );
    fs::write(mp.join("written"), "by the guest").unwrap();
    let info = mounted_at(&mp).unwrap().unwrap();
    assert_eq!(
        (info.fstype.as_str(), info.source.as_str()),
        ("ext4", disk.dev.as_str())
    );
    // A second container counts a reference; a conflicting request fails.
    m.add("c2", &s).unwrap();
    let ro = storage("blk", &mp, &disk.dev, "ext4", &["ro"]);
    assert_eq!(
        m.add("c3", &ro).unwrap_err().code(),
        ttrpc::Code::FAILED_PRECONDITION
    );
    assert!(m.release("c1").is_empty());
    assert!(mounted_at(&mp).unwrap().is_some());
    assert!(m.release("c2").is_empty());
    assert!(mounted_at(&mp).unwrap().is_none());
    assert!(!root.join("sandbox").exists());

    // mmioblk by name, read-only: waited for in the real sysfs.
    let mp2 = root.join("ro");
    let s = storage("mmioblk", &mp2, &disk.dev, "ext4", &["ro"]);
    m.add("c1", &s).unwrap();
    assert_eq!(
        fs::read_to_string(mp2.join("written")).unwrap(),
        "by the guest"
    );
    let e = fs::write(mp2.join("x"), "y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert!(m.release("c1").is_empty());
    assert!(!mp2.exists());

    // Not a block device: refused, nothing left.
    let s = storage("blk", &root.join("v3"), "/dev/null", "ext4", &[]);
    let e = m.add("c1", &s).unwrap_err();
    assert!(e.to_string().contains("is not a block device"), "{e}");
    assert!(!root.join("v3").exists());
    // The wrong filesystem: the kernel's answer, nothing left.
    let s = storage("blk", &root.join("v4"), &disk.dev, "xfs", &[]);
    assert!(m.add("c1", &s).is_err());
    assert!(!root.join("v4").exists());
    assert!(m.list().is_empty());
    assert!(Path::new("/sys/class/block").join(&name).exists());
}

#[test]
fn overlays_of_guest_directories() {
    if !testns::enter(test_name!(overlays_of_guest_directories), false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    let m = StorageManager::new([root.clone()]);
    // Layers on a tmpfs of their own.
    let layers = root.join("layers");
    fs::create_dir_all(&layers).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &layers,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    for (d, f) in [("a", "from-a"), ("b", "from-b")] {
        fs::create_dir_all(layers.join(d)).unwrap();
        fs::write(layers.join(d).join(f), d).unwrap();
    }
    fs::write(layers.join("a/both"), "a wins").unwrap();
    fs::write(layers.join("b/both"), "b loses").unwrap();
    let lower = format!(
        "lowerdir={}:{}",
        layers.join("a").display(),
        layers.join("b").display()
    );

    // Read-only: lower layers only.
    let mp = root.join("shared/containers/c1/rootfs");
    let s = storage("overlayfs", &mp, "overlay", "overlay", &[&lower]);
    m.add("c1", &s).unwrap();
    assert_eq!(fs::read_to_string(mp.join("both")).unwrap(), "a wins");
    assert!(mp.join("from-b").exists());
    assert!(fs::write(mp.join("new"), "x").is_err());
    assert!(m.release("c1").is_empty());
    assert!(!root.join("shared").exists());

    // overlay-rw: upper and work made for the container, gone after.
    let s = storage(
        "overlayfs",
        &mp,
        "overlay",
        "overlay",
        &[&lower, "io.katacontainers.fs-opt.overlay-rw"],
    );
    m.add("c2", &s).unwrap();
    fs::write(mp.join("new"), "written").unwrap();
    assert_eq!(
        fs::read_to_string(root.join("c2/upper/new")).unwrap(),
        "written"
    );
    assert!(!layers.join("a/new").exists());
    assert!(m.release("c2").is_empty());
    assert!(!root.join("c2").exists());
    assert!(!root.join("shared").exists());

    // A layer that does not exist: the kernel refuses, nothing is left.
    let bad = format!("lowerdir={}", layers.join("nope").display());
    let s = storage("overlayfs", &mp, "overlay", "overlay", &[&bad]);
    assert!(m.add("c3", &s).is_err());
    assert!(!root.join("shared").exists());
    nix::mount::umount2(&layers, MntFlags::MNT_DETACH).unwrap();
    assert!(m.list().is_empty());
}

#[test]
fn ninep_options_get_the_transport() {
    let (_d, root, m, _sys) = setup(Duration::from_millis(50));
    // Without 9p in this kernel (or without root) the mount fails; the
    // plan's options are what it would pass.
    let ctx_s = storage("9p", &root.join("v"), "tag0", "", &["nodev", "cache=mmap"]);
    let checked = path::check(&ctx_s.mount_point, std::slice::from_ref(&root)).unwrap();
    let ctx = Ctx {
        mount_point: &ctx_s.mount_point,
        driver: &ctx_s.driver,
        real: &checked.real,
        dirs: &m.dirs,
        hugepages: &m.hugepages,
        watch: &m.watch,
        owner: "sandbox",
        roots: &m.roots,
        run_dir: m.run_dir(),
        devices: None,
    };
    let p = ninep::plan(&ctx, &ctx_s).unwrap();
    assert_eq!(p.data(), "cache=mmap,trans=virtio,version=9p2000.L");
    let s = storage(
        "9p",
        &root.join("v"),
        "tag0",
        "9p",
        &["trans=fd", "version=9p2000.u"],
    );
    let p = ninep::plan(&ctx, &s).unwrap();
    assert_eq!(p.data(), "trans=fd,version=9p2000.u");
}
