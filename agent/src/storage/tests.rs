//! Manager tests. Those that mount run as root in a private mount
//! namespace (see [`testns`]); the path and request checks need no root.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocols::agent::{FSGroup, Storage};

use super::testns::{self, test_name};
use super::*;

fn storage(driver: &str, mount_point: &Path, source: &str, options: &[&str]) -> Storage {
    Storage {
        driver: driver.to_owned(),
        source: source.to_owned(),
        mount_point: mount_point.to_string_lossy().into_owned(),
        options: options.iter().map(|o| (*o).to_owned()).collect(),
        ..Default::default()
    }
}

fn tmpfs(mount_point: &Path, options: &[&str]) -> Storage {
    let mut s = storage(DRIVER_EPHEMERAL_TYPE, mount_point, "tmpfs", options);
    s.fstype = "tmpfs".to_owned();
    s
}

/// A temporary allowed root (resolved, so paths compare equal) and a
/// manager confined to it.
fn setup() -> (tempfile::TempDir, PathBuf, StorageManager) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonicalize");
    let m = StorageManager::new([root.clone()]);
    (dir, root, m)
}

fn mount_of(p: &Path) -> Option<MountInfo> {
    mounted_at(p).expect("read mountinfo")
}

/// The superblock options mountinfo shows for the top-most mount at `p`.
fn super_options(p: &Path) -> String {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(&*p.to_string_lossy()))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_default()
        .to_owned()
}

fn assert_no_mounts_under(root: &Path) {
    let left: Vec<_> = mounts()
        .expect("mountinfo")
        .into_iter()
        .filter(|m| m.mount_point.starts_with(root))
        .collect();
    assert!(
        left.is_empty(),
        "mounts left under {}: {left:?}",
        root.display()
    );
}

// --- no root needed: everything here is refused before any change ---

#[test]
fn unknown_driver_is_refused() {
    let (_d, root, m) = setup();
    for driver in ["nfs", "virtio-blk", "erofs", ""] {
        let s = storage(driver, &root.join("x"), "src", &[]);
        let err = m.add("sandbox", &s).unwrap_err();
        assert!(
            matches!(err, StorageError::UnsupportedDriver { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("(driver \"{driver}\")")), "{msg}");
        assert!(msg.contains("unsupported driver"), "{msg}");
    }
    assert!(m.list().is_empty());
    assert!(!root.join("x").exists());
}

#[test]
fn path_escapes_are_refused_before_anything_is_created() {
    let (_d, root, m) = setup();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), root.join("link")).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (format!("{}/a/../../etc", root.display()), "\"..\""),
        ("relative/dir".to_owned(), "not an absolute path"),
        ("/etc/kata-test-x".to_owned(), "not under an allowed root"),
        (root.display().to_string(), "not under an allowed root"),
        (format!("{}/link/x", root.display()), "outside"),
        (String::new(), "empty path"),
    ];
    for driver in [
        DRIVER_EPHEMERAL_TYPE,
        DRIVER_LOCAL_TYPE,
        DRIVER_VIRTIOFS_TYPE,
        DRIVER_BIND_TYPE,
    ] {
        for (mp, why) in &cases {
            let mut s = tmpfs(Path::new(mp), &[]);
            s.driver = driver.to_owned();
            s.source = "/".to_owned();
            s.fstype.clear();
            let err = m.add("sandbox", &s).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, StorageError::InvalidMountPoint { .. }),
                "{driver} {mp}: {msg}"
            );
            assert!(msg.contains(why), "{driver} {mp}: {msg}");
            assert!(
                msg.starts_with(&format!("storage \"{mp}\" (driver \"{driver}\"): ")),
                "{msg}"
            );
        }
    }
    assert!(m.list().is_empty());
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    let names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["link"]);
}

#[test]
fn bad_requests_are_refused_before_anything_is_created() {
    let (_d, root, m) = setup();
    let mp = root.join("a/b");
    let cases = [
        (
            storage(DRIVER_BIND_TYPE, &mp, "/nonexistent/kata-src", &[]),
            "source \"/nonexistent/kata-src\": no such file or directory",
        ),
        (
            storage(DRIVER_BIND_TYPE, &mp, "rel/src", &[]),
            "source \"rel/src\": not an absolute path",
        ),
        (
            storage(DRIVER_VIRTIOFS_TYPE, &mp, "", &[]),
            "no virtio-fs tag",
        ),
        (
            storage(DRIVER_LOCAL_TYPE, &mp, "local", &["mode=rwx"]),
            "option mode=rwx: not an octal mode",
        ),
        (
            storage(DRIVER_LOCAL_TYPE, &mp, "local", &["fsgid=abc"]),
            "option fsgid=abc: not a group id",
        ),
        (
            Storage {
                fstype: "ext4".to_owned(),
                ..storage(DRIVER_EPHEMERAL_TYPE, &mp, "nodev", &[])
            },
            "fstype \"ext4\" is not supported",
        ),
        (
            Storage {
                fstype: "hugetlbfs".to_owned(),
                ..storage(DRIVER_EPHEMERAL_TYPE, &mp, "nodev", &["size=4194304"])
            },
            "hugetlbfs needs a pagesize= option",
        ),
        (
            Storage {
                fstype: "hugetlbfs".to_owned(),
                ..storage(
                    DRIVER_EPHEMERAL_TYPE,
                    &mp,
                    "nodev",
                    &["pagesize=2M,size=4M"],
                )
            },
            "option pagesize=2M: not a positive number of bytes",
        ),
    ];
    for (s, want) in cases {
        let err = m.add("sandbox", &s).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StorageError::Invalid { .. }), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
    assert!(m.list().is_empty());
    assert!(!root.join("a").exists());
}

#[test]
fn error_message_format() {
    let e = StorageError::Io {
        mount_point: "/run/kata-containers/x".to_owned(),
        driver: "ephemeral".to_owned(),
        op: "mount tmpfs".to_owned(),
        cause: io::Error::from_raw_os_error(libc_eacces()),
    };
    assert_eq!(
        e.to_string(),
        "storage \"/run/kata-containers/x\" (driver \"ephemeral\"): mount tmpfs: permission denied"
    );
}

fn libc_eacces() -> i32 {
    Errno::EACCES as i32
}

#[test]
fn local_directory_without_root() {
    // `local` mounts nothing, so it runs unprivileged too.
    let (_d, root, m) = setup();
    let mp = root.join("sandbox/local/vol");
    let s = storage(DRIVER_LOCAL_TYPE, &mp, "local", &["mode=0777"]);
    assert_eq!(m.add("sandbox", &s).unwrap(), mp);
    let md = fs::metadata(&mp).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o777);
    // Shared with a container; a different mode is a conflict.
    assert_eq!(m.add("c1", &s).unwrap(), mp);
    let other = storage(DRIVER_LOCAL_TYPE, &mp, "local", &["mode=0700"]);
    let err = m.add("c2", &other).unwrap_err();
    assert!(matches!(err, StorageError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("already in use"), "{err}");
    assert_eq!(m.list(), vec![(mp.clone(), 2)]);

    fs::write(mp.join("data"), b"x").unwrap();
    assert!(m.release("sandbox").is_empty());
    assert!(mp.join("data").exists());
    // Sandbox-scoped: kept without users until the sandbox goes.
    assert!(m.release("c1").is_empty());
    assert!(mp.join("data").exists());
    assert_eq!(m.list(), vec![(mp.clone(), 0)]);
    assert!(m.release_all().is_empty());
    // The directory, its contents and the parents it needed are gone.
    assert!(!root.join("sandbox").exists());
    assert!(m.list().is_empty());
}

#[test]
fn local_directory_that_existed_is_kept() {
    let (_d, root, m) = setup();
    let mp = root.join("pre");
    fs::create_dir(&mp).unwrap();
    fs::write(mp.join("keep"), b"x").unwrap();
    let s = storage(DRIVER_LOCAL_TYPE, &mp, "local", &["mode=0750"]);
    m.add("sandbox", &s).unwrap();
    assert_eq!(
        fs::metadata(&mp).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert!(m.release("sandbox").is_empty());
    assert!(mp.join("keep").exists());
}

#[test]
fn trailing_slash_and_dot_name_the_same_storage() {
    let (_d, root, m) = setup();
    let a = storage(DRIVER_LOCAL_TYPE, &root.join("v"), "local", &[]);
    let mut b = a.clone();
    b.mount_point = format!("{}/./v/", root.display());
    m.add("x", &a).unwrap();
    m.add("y", &b).unwrap();
    assert_eq!(m.list(), vec![(root.join("v"), 2)]);
    assert!(m.release_all().is_empty());
    assert!(m.list().is_empty());
    assert!(!root.join("v").exists());
}

#[test]
fn same_owner_twice_counts_twice() {
    let (_d, root, m) = setup();
    let s = storage(DRIVER_LOCAL_TYPE, &root.join("v"), "local", &[]);
    m.add("c1", &s).unwrap();
    m.add("c1", &s).unwrap();
    assert_eq!(m.list(), vec![(root.join("v"), 2)]);
    // Releasing an owner drops all its references at once.
    assert!(m.release("c1").is_empty());
    assert_eq!(m.list(), vec![(root.join("v"), 0)]);
    assert!(m.release("nobody").is_empty());
    assert!(m.release_all().is_empty());
    assert!(m.list().is_empty());
}

#[test]
fn concurrent_adds_set_up_once() {
    let (_d, root, m) = setup();
    let m = Arc::new(m);
    let s = storage(DRIVER_LOCAL_TYPE, &root.join("shared"), "local", &[]);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let m = Arc::clone(&m);
            let s = s.clone();
            std::thread::spawn(move || m.add(&format!("c{i}"), &s).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(m.list(), vec![(root.join("shared"), 16)]);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || m.release(&format!("c{i}")))
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().is_empty());
    }
    assert_eq!(m.list(), vec![(root.join("shared"), 0)]);
    assert!(m.release_all().is_empty());
    assert!(m.list().is_empty());
    assert!(!root.join("shared").exists());
}

#[test]
fn manager_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<StorageManager>();
    assert_eq!(
        StorageManager::default().roots,
        vec![PathBuf::from("/run/kata-containers")]
    );
}

// --- root, in a private mount namespace ---

#[test]
fn ephemeral_is_shared_counted_and_removed() {
    if !testns::enter(test_name!(ephemeral_is_shared_counted_and_removed), false) {
        return;
    }
    let (_d, root, m) = setup();
    let mp = root.join("sandbox/ephemeral/vol");
    let s = tmpfs(&mp, &["nosuid", "nodev", "size=1m", "mode=1777"]);
    assert_eq!(m.add("sandbox", &s).unwrap(), mp);
    let info = mount_of(&mp).expect("tmpfs mounted");
    assert_eq!(info.fstype, "tmpfs");
    let opts = super_options(&mp);
    assert!(opts.contains("size=1024k"), "{opts}");
    assert_eq!(fs::metadata(&mp).unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(m.list(), vec![(mp.clone(), 1)]);

    // A second owner shares the same mount.
    assert_eq!(m.add("c1", &s).unwrap(), mp);
    assert_eq!(m.list(), vec![(mp.clone(), 2)]);
    let count = mounts()
        .unwrap()
        .iter()
        .filter(|m| m.mount_point == mp)
        .count();
    assert_eq!(count, 1, "mounted once");

    // Releasing one keeps it.
    assert!(m.release("sandbox").is_empty());
    assert!(mount_of(&mp).is_some());
    assert_eq!(m.list(), vec![(mp.clone(), 1)]);

    // Releasing the other keeps it (sandbox-scoped) until release_all,
    // which unmounts it and removes what was created.
    assert!(m.release("c1").is_empty());
    assert!(mount_of(&mp).is_some());
    assert_eq!(m.list(), vec![(mp.clone(), 0)]);
    assert!(m.release_all().is_empty());
    assert!(mount_of(&mp).is_none());
    assert!(!mp.exists());
    assert!(!root.join("sandbox").exists());
    assert!(m.list().is_empty());
    assert_no_mounts_under(&root);
}

#[test]
fn ephemeral_with_fsgid_sets_group() {
    if !testns::enter(test_name!(ephemeral_with_fsgid_sets_group), false) {
        return;
    }
    let (_d, root, m) = setup();
    let mp = root.join("eph");
    m.add("sandbox", &tmpfs(&mp, &["fsgid=1234"])).unwrap();
    let md = fs::metadata(&mp).unwrap();
    assert_eq!(md.gid(), 1234);
    assert_ne!(md.mode() & 0o2000, 0, "setgid");
    assert!(m.release_all().is_empty());
    assert_no_mounts_under(&root);
    assert!(!mp.exists());
}

#[test]
fn failed_mount_leaves_nothing() {
    if !testns::enter(test_name!(failed_mount_leaves_nothing), false) {
        return;
    }
    let (_d, root, m) = setup();
    let mp = root.join("deep/er/vol");
    let err = m
        .add("sandbox", &tmpfs(&mp, &["size=notanumber"]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Io { .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "storage \"{}\" (driver \"ephemeral\"): mount tmpfs: invalid argument",
            mp.display()
        )
    );
    assert!(!root.join("deep").exists());
    assert!(m.list().is_empty());
    // The same mount point works afterwards.
    m.add("sandbox", &tmpfs(&mp, &[])).unwrap();
    assert!(m.release_all().is_empty());
    assert!(!root.join("deep").exists());
}

#[test]
fn virtio_fs_with_unknown_tag_fails_cleanly() {
    if !testns::enter(test_name!(virtio_fs_with_unknown_tag_fails_cleanly), false) {
        return;
    }
    let (_d, root, m) = setup();
    let mp = root.join("shared/containers");
    let mut s = storage(DRIVER_VIRTIOFS_TYPE, &mp, "kataTestNoSuchTag", &["nodev"]);
    s.fstype = "virtiofs".to_owned();
    let err = m.add("sandbox", &s).unwrap_err();
    let msg = err.to_string();
    println!("virtio-fs error: {msg}");
    assert!(
        msg.starts_with(&format!(
            "storage \"{}\" (driver \"virtio-fs\"): mount virtiofs tag \"kataTestNoSuchTag\": ",
            mp.display()
        )),
        "{msg}"
    );
    assert!(!root.join("shared").exists());
    assert!(m.list().is_empty());
}

#[test]
fn virtio_fs_does_not_adopt_other_mounts() {
    if !testns::enter(test_name!(virtio_fs_does_not_adopt_other_mounts), false) {
        return;
    }
    // No virtiofs here: adoption of a real premount is covered by the
    // unit test in `virtio_fs`; here a tmpfs named like the tag must not
    // be taken for it.
    let (_d, root, m) = setup();
    let mp = root.join("shared");
    fs::create_dir(&mp).unwrap();
    nix::mount::mount(
        Some("kataShared"),
        &mp,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let mut s = storage(DRIVER_VIRTIOFS_TYPE, &mp, "kataShared", &[]);
    s.fstype = "virtiofs".to_owned();
    // A tmpfs named like the tag is not the tag: a real mount is tried.
    assert!(m.add("sandbox", &s).is_err());
    assert!(mount_of(&mp).is_some(), "the existing mount is untouched");
    nix::mount::umount2(&mp, MntFlags::empty()).unwrap();
    assert!(mp.exists(), "a directory it did not create is kept");
}

#[test]
fn bind_directory_and_file() {
    if !testns::enter(test_name!(bind_directory_and_file), false) {
        return;
    }
    let (_d, root, m) = setup();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("hello"), b"hi").unwrap();
    let src_file = src.path().join("hello");

    let mp_dir = root.join("b/dir");
    let s = storage(
        DRIVER_BIND_TYPE,
        &mp_dir,
        &src.path().to_string_lossy(),
        &["ro", "nosuid"],
    );
    m.add("c1", &s).unwrap();
    assert_eq!(fs::read(mp_dir.join("hello")).unwrap(), b"hi");
    let err = fs::write(mp_dir.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(Errno::EROFS as i32), "read-only");

    let mp_file = root.join("b/file");
    let s = storage(DRIVER_BIND_TYPE, &mp_file, &src_file.to_string_lossy(), &[]);
    m.add("c1", &s).unwrap();
    assert!(mp_file.is_file());
    assert_eq!(fs::read(&mp_file).unwrap(), b"hi");
    assert!(mount_of(&mp_file).is_some());

    assert!(m.release("c1").is_empty());
    assert_no_mounts_under(&root);
    assert!(!root.join("b").exists());
    assert_eq!(fs::read(&src_file).unwrap(), b"hi", "source untouched");
}

#[test]
fn release_all_tears_down_nested_storages() {
    if !testns::enter(test_name!(release_all_tears_down_nested_storages), false) {
        return;
    }
    let (_d, root, m) = setup();
    let outer = root.join("outer");
    let inner = outer.join("inner");
    m.add("sandbox", &tmpfs(&outer, &[])).unwrap();
    m.add("c1", &tmpfs(&inner, &[])).unwrap();
    m.add(
        "c2",
        &storage(DRIVER_LOCAL_TYPE, &root.join("loc"), "local", &[]),
    )
    .unwrap();
    assert_eq!(m.list().len(), 3);
    assert!(m.release_all().is_empty());
    assert!(m.list().is_empty());
    assert_no_mounts_under(&root);
    assert!(!outer.exists());
    assert!(!root.join("loc").exists());
}

#[test]
fn fs_group_is_applied() {
    if !testns::enter(test_name!(fs_group_is_applied), false) {
        return;
    }
    let (_d, root, m) = setup();
    let mp = root.join("grp");
    let mut s = tmpfs(&mp, &[]);
    s.fs_group = protobuf::MessageField::some(FSGroup {
        group_id: 4321,
        ..Default::default()
    });
    m.add("sandbox", &s).unwrap();
    let md = fs::metadata(&mp).unwrap();
    assert_eq!(md.gid(), 4321);
    assert_eq!(md.mode() & 0o2770, 0o2770);
    assert!(m.release_all().is_empty());
    assert_no_mounts_under(&root);
}

#[test]
fn unmount_failure_is_reported_and_retried() {
    if !testns::enter(test_name!(unmount_failure_is_reported_and_retried), false) {
        return;
    }
    let (_d, root, m) = setup();
    let mp = root.join("gone");
    m.add("sandbox", &tmpfs(&mp, &[])).unwrap();
    // Someone unmounts it behind our back: release still cleans up.
    nix::mount::umount2(&mp, MntFlags::empty()).unwrap();
    assert!(m.release_all().is_empty());
    assert!(!mp.exists());
    assert!(m.list().is_empty());

    // Something left inside the directory after unmount is reported and
    // the storage is forgotten (it is no longer mounted).
    m.add("sandbox", &tmpfs(&mp, &[])).unwrap();
    nix::mount::umount2(&mp, MntFlags::empty()).unwrap();
    fs::write(mp.join("stray"), b"x").unwrap();
    let errs = m.release_all();
    assert_eq!(errs.len(), 1, "{errs:?}");
    let msg = errs[0].to_string();
    assert!(msg.contains("directory not empty"), "{msg}");
    assert!(m.list().is_empty());
}

#[test]
fn mountinfo_unescape() {
    assert_eq!(unescape("/a\\040b"), "/a b");
    assert_eq!(unescape("/a\\134b"), "/a\\b");
    assert_eq!(unescape("/a\\"), "/a\\");
    assert_eq!(unescape("/a\\04"), "/a\\04");
    assert_eq!(unescape("/é"), "/é");
}

#[test]
fn concurrent_tmpfs_adds_mount_once() {
    if !testns::enter(test_name!(concurrent_tmpfs_adds_mount_once), false) {
        return;
    }
    let (_d, root, m) = setup();
    let m = Arc::new(m);
    let mp = root.join("shm");
    let s = tmpfs(&mp, &["size=1m"]);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let m = Arc::clone(&m);
            let s = s.clone();
            std::thread::spawn(move || m.add(&format!("c{i}"), &s).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let count = mounts()
        .unwrap()
        .iter()
        .filter(|m| m.mount_point == mp)
        .count();
    assert_eq!(count, 1);
    assert_eq!(m.list(), vec![(mp.clone(), 8)]);
    for i in 0..8 {
        assert!(m.release(&format!("c{i}")).is_empty());
    }
    assert_eq!(m.list(), vec![(mp.clone(), 0)]);
    assert!(m.release_all().is_empty());
    assert_no_mounts_under(&root);
    assert!(!mp.exists());
}

/// The storages as Kata's shim sends them, under a temporary root in
/// place of `/run/kata-containers` (virtio-fs is left out: no device here).
#[test]
fn shim_shaped_requests() {
    if !testns::enter(test_name!(shim_shaped_requests), false) {
        return;
    }
    let (_d, root, m) = setup();
    let shm = Storage {
        driver: "ephemeral".to_owned(),
        source: "shm".to_owned(),
        fstype: "tmpfs".to_owned(),
        mount_point: format!("{}/sandbox/shm", root.display()),
        options: ["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"]
            .map(str::to_owned)
            .to_vec(),
        ..Default::default()
    };
    let empty_dir = Storage {
        driver: "ephemeral".to_owned(),
        source: "tmpfs".to_owned(),
        fstype: "tmpfs".to_owned(),
        mount_point: format!("{}/sandbox/ephemeral/cache", root.display()),
        options: vec!["fsgid=2000".to_owned()],
        ..Default::default()
    };
    let local = Storage {
        driver: "local".to_owned(),
        source: "local".to_owned(),
        fstype: "local".to_owned(),
        mount_point: format!("{}/sandbox/storage/scratch", root.display()),
        options: vec!["mode=0777".to_owned(), "fsgid=2000".to_owned()],
        ..Default::default()
    };
    m.add("sandbox", &shm).unwrap();
    for cid in ["c1", "c2"] {
        m.add(cid, &empty_dir).unwrap();
        m.add(cid, &local).unwrap();
    }
    let shm_path = root.join("sandbox/shm");
    assert_eq!(mount_of(&shm_path).unwrap().fstype, "tmpfs");
    let opts = super_options(&shm_path);
    assert!(opts.contains("size=65536k"), "{opts}");
    assert_eq!(fs::metadata(&shm_path).unwrap().mode() & 0o7777, 0o1777);
    let local_md = fs::metadata(root.join("sandbox/storage/scratch")).unwrap();
    assert_eq!(local_md.mode() & 0o7777, 0o2777);
    assert_eq!(local_md.gid(), 2000);
    assert_eq!(
        m.list(),
        vec![
            (root.join("sandbox/ephemeral/cache"), 2),
            (shm_path.clone(), 1),
            (root.join("sandbox/storage/scratch"), 2),
        ]
    );
    // RemoveContainer c1, then c2, then DestroySandbox: the emptyDirs
    // live as long as the sandbox.
    assert!(m.release("c1").is_empty());
    assert_eq!(m.list().len(), 3);
    assert!(m.release("c2").is_empty());
    assert_eq!(
        m.list(),
        vec![
            (root.join("sandbox/ephemeral/cache"), 0),
            (shm_path, 1),
            (root.join("sandbox/storage/scratch"), 0),
        ]
    );
    assert!(m.release_all().is_empty());
    assert!(m.list().is_empty());
    assert_no_mounts_under(&root);
    assert!(!root.join("sandbox").exists());
}

/// Kubernetes' init container pattern: the init container fills an emptyDir
/// and is removed; the app container gets the same storage and its data.
/// UpdateEphemeralMounts in between (as the Go runtime sends it) resizes
/// in place and does not make the next add a conflict.
#[test]
fn sandbox_scoped_storages_outlive_their_containers() {
    if !testns::enter(
        test_name!(sandbox_scoped_storages_outlive_their_containers),
        false,
    ) {
        return;
    }
    let (_d, root, m) = setup();
    let eph = root.join("sandbox/ephemeral/work");
    let loc = root.join("sandbox/local/cache");
    let eph_s = tmpfs(&eph, &["nosuid", "fsgid=2000"]);
    let loc_s = storage(DRIVER_LOCAL_TYPE, &loc, "local", &["mode=0777"]);
    m.add("init", &eph_s).unwrap();
    m.add("init", &loc_s).unwrap();
    fs::write(eph.join("out"), b"from init").unwrap();
    fs::write(loc.join("out"), b"from init").unwrap();
    assert!(m.release("init").is_empty());
    assert_eq!(fs::read(eph.join("out")).unwrap(), b"from init");
    assert_eq!(fs::read(loc.join("out")).unwrap(), b"from init");

    m.add("app", &eph_s).unwrap();
    m.add("app", &loc_s).unwrap();
    // The Go runtime after the app container, twice for two users.
    let update = tmpfs(&eph, &["remount", "size=3M"]);
    m.update_ephemeral(&update).unwrap();
    m.update_ephemeral(&update).unwrap();
    assert!(
        super_options(&eph).contains("size=3072k"),
        "{}",
        super_options(&eph)
    );
    // Remounted in place: same data, nosuid kept.
    assert_eq!(fs::read(eph.join("out")).unwrap(), b"from init");
    let line = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(&*eph.to_string_lossy()))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.split(' ').nth(5).unwrap_or("").contains("nosuid"),
        "{line}"
    );
    // An empty option list changes nothing (upstream skips it).
    m.update_ephemeral(&tmpfs(&eph, &[])).unwrap();
    assert!(super_options(&eph).contains("size=3072k"));
    // The next container with the options the storage was set up with.
    m.add("app2", &eph_s).unwrap();
    assert_eq!(m.list()[0], (eph.clone(), 2));
    assert_eq!(
        mounts()
            .unwrap()
            .iter()
            .filter(|i| i.mount_point == eph)
            .count(),
        1
    );

    assert!(m.release("app").is_empty());
    assert!(m.release("app2").is_empty());
    assert!(mount_of(&eph).is_some());
    assert!(m.release_all().is_empty());
    assert_no_mounts_under(&root);
    assert!(!root.join("sandbox").exists());
}

/// A failed request undoes the sandbox-scoped storages it set up itself,
/// not those it only joined.
#[test]
fn rollback_undoes_only_own_setups() {
    if !testns::enter(test_name!(rollback_undoes_only_own_setups), false) {
        return;
    }
    let (_d, root, m) = setup();
    let mp = root.join("sandbox/ephemeral/vol");
    let s = tmpfs(&mp, &[]);
    m.add("c1", &s).unwrap();
    assert!(m.rollback("c1").is_empty());
    assert!(mount_of(&mp).is_none());
    assert!(m.list().is_empty());
    assert!(!root.join("sandbox").exists());

    // Set up by c1, kept after its removal: a failed c2 leaves it, and so
    // does a failed container that reuses the id c1.
    m.add("c1", &s).unwrap();
    assert!(m.release("c1").is_empty());
    m.add("c2", &s).unwrap();
    assert!(m.rollback("c2").is_empty());
    m.add("c1", &s).unwrap();
    assert!(m.rollback("c1").is_empty());
    assert!(mount_of(&mp).is_some());
    assert_eq!(m.list(), vec![(mp.clone(), 0)]);
    assert!(m.release_all().is_empty());
    assert_no_mounts_under(&root);
}

/// hugetlbfs as the Go runtime sends it, with a stand-in for
/// `/sys/kernel/mm/hugepages` so that the host's pools are not touched;
/// the mount itself is real (hugetlbfs mounts with no pages reserved).
#[test]
fn hugetlbfs_grows_the_pool_and_mounts() {
    if !testns::enter(test_name!(hugetlbfs_grows_the_pool_and_mounts), false) {
        return;
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap();
    if !filesystems.contains("hugetlbfs") {
        testns::skip("the kernel has no hugetlbfs");
        return;
    }
    let (_d, root, m) = setup();
    let sys = tempfile::tempdir().unwrap();
    let pool = sys.path().join("hugepages-2048kB/nr_hugepages");
    fs::create_dir_all(pool.parent().unwrap()).unwrap();
    fs::write(&pool, "1\n").unwrap();
    let m = m.with_hugepages_dir(sys.path().to_path_buf());
    let mp = root.join("sandbox/ephemeral/hugepages-2mi");
    let s = Storage {
        fstype: "hugetlbfs".to_owned(),
        ..storage(
            DRIVER_EPHEMERAL_TYPE,
            &mp,
            "nodev",
            &["pagesize=2097152,size=8388608"],
        )
    };
    m.add("c1", &s).unwrap();
    assert_eq!(fs::read_to_string(&pool).unwrap().trim(), "4");
    assert_eq!(mount_of(&mp).unwrap().fstype, "hugetlbfs");
    let opts = super_options(&mp);
    assert!(opts.contains("pagesize=2M"), "{opts}");
    assert!(opts.contains("size=8388608"), "{opts}");
    // A larger pool is left as it is.
    m.add("c2", &s).unwrap();
    fs::write(&pool, "16").unwrap();
    let mp2 = root.join("sandbox/ephemeral/hugepages-2mi-b");
    m.add(
        "c3",
        &Storage {
            mount_point: mp2.to_string_lossy().into_owned(),
            ..s.clone()
        },
    )
    .unwrap();
    assert_eq!(fs::read_to_string(&pool).unwrap().trim(), "16");
    // A page size this kernel does not offer: refused before anything.
    let gib = Storage {
        mount_point: root
            .join("sandbox/ephemeral/gib")
            .to_string_lossy()
            .into_owned(),
        options: vec!["pagesize=1073741824,size=1073741824".to_owned()],
        ..s.clone()
    };
    let err = m.add("c1", &gib).unwrap_err().to_string();
    assert!(err.contains("page size 1073741824: not offered"), "{err}");
    assert!(!root.join("sandbox/ephemeral/gib").exists());
    assert!(m.release_all().is_empty());
    assert_no_mounts_under(&root);
}

// --- watchable-bind ---

/// A ConfigMap volume as the kubelet writes it: `<ts>/<key>` files, the
/// `..data -> <ts>` symlink swapped atomically, `<key> -> ..data/<key>`.
pub(super) fn configmap(dir: &Path, ts: &str, data: &[(&str, &str)]) {
    fs::create_dir_all(dir.join(ts)).unwrap();
    for (k, v) in data {
        fs::write(dir.join(ts).join(k), v).unwrap();
    }
    symlink(ts, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (k, _) in data {
        if fs::symlink_metadata(dir.join(k)).is_err() {
            symlink(format!("..data/{k}"), dir.join(k)).unwrap();
        }
    }
}

fn watchable(mp: &Path, source: &Path) -> Storage {
    Storage {
        fstype: "bind".to_owned(),
        ..storage(
            DRIVER_WATCHABLE_BIND_TYPE,
            mp,
            &source.to_string_lossy(),
            &["rbind", "ro"],
        )
    }
}

/// Polls `f` for up to `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

#[test]
fn watchable_bind_requests_are_checked_first() {
    let (_d, root, m) = setup();
    let shared = root.join("shared/containers");
    fs::create_dir_all(shared.join("cm")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), shared.join("escape")).unwrap();
    fs::create_dir_all(shared.join("watchable/inner")).unwrap();
    let mp = shared.join("watchable/cm");
    let cases = [
        (
            watchable(&shared.join("cm2"), &shared.join("cm")),
            "directly in a \"watchable\" directory",
        ),
        (
            watchable(&shared.join("watchable/a/b"), &shared.join("cm")),
            "directly in a \"watchable\"",
        ),
        (
            watchable(&mp, outside.path()),
            "not in the shared directory",
        ),
        (
            watchable(&mp, &shared.join("escape")),
            "not in the shared directory",
        ),
        (
            watchable(&mp, &shared.join("watchable/inner")),
            "not in the shared directory",
        ),
        (watchable(&mp, &shared), "not in the shared directory"),
        (
            watchable(&mp, &shared.join("missing")),
            "no such file or directory",
        ),
        (watchable(&mp, Path::new("cm")), "not an absolute path"),
        (
            Storage {
                fstype: "ext4".into(),
                ..watchable(&mp, &shared.join("cm"))
            },
            "fstype \"ext4\" is not supported",
        ),
    ];
    for (s, want) in cases {
        let err = m.add("c1", &s).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StorageError::Invalid { .. }), "{msg}");
        assert!(msg.contains(want), "{msg}");
        assert!(msg.contains("(driver \"watchable-bind\")"), "{msg}");
    }
    assert!(m.list().is_empty());
    assert!(!mp.exists());
    assert!(!m.watching());
}

/// Copied in at add, updates (the kubelet's atomic swap included) seen
/// (the bound is loose for loaded machines), and the watch gone with the last user; the Go runtime's
/// and runtime-rs's paths both, and a single-file source.
#[test]
fn watchable_bind_follows_updates_until_released() {
    if !testns::enter(
        test_name!(watchable_bind_follows_updates_until_released),
        false,
    ) {
        return;
    }
    let (_d, root, m) = setup();
    let shared = root.join("shared/containers");
    let go_src = shared.join("c1-0a1b-config");
    configmap(&go_src, "..2026_01_01", &[("a", "one"), ("b", "two")]);
    let go_mp = shared.join("watchable/c1-0a1b-config");
    let rs_src = shared.join("passthrough/c1-0a1b-secret");
    configmap(&rs_src, "..2026_01_01", &[("token", "t1")]);
    let rs_mp = shared.join("passthrough/watchable/c1-0a1b-secret");
    let file_src = shared.join("c1-0a1b-single");
    fs::write(&file_src, "f1").unwrap();
    let file_mp = shared.join("watchable/c1-0a1b-single");

    m.add("c1", &watchable(&go_mp, &go_src)).unwrap();
    m.add("c1", &watchable(&rs_mp, &rs_src)).unwrap();
    m.add("c2", &watchable(&file_mp, &file_src)).unwrap();
    assert!(m.watching());
    assert_eq!(mount_of(&shared.join("watchable")).unwrap().fstype, "tmpfs");
    assert_eq!(
        mount_of(&shared.join("passthrough/watchable"))
            .unwrap()
            .fstype,
        "tmpfs"
    );
    assert!(mount_of(&go_mp).is_none(), "a copy, not a mount");
    assert_eq!(fs::read_to_string(go_mp.join("a")).unwrap(), "one");
    assert_eq!(
        fs::read_link(go_mp.join("a")).unwrap(),
        Path::new("..data/a")
    );
    assert_eq!(fs::read_to_string(rs_mp.join("token")).unwrap(), "t1");
    assert_eq!(fs::read_to_string(&file_mp).unwrap(), "f1");

    // The kubelet's update.
    configmap(&go_src, "..2026_01_02", &[("a", "ONE"), ("b", "two")]);
    fs::remove_dir_all(go_src.join("..2026_01_01")).unwrap();
    fs::write(&file_src, "f2").unwrap();
    assert!(
        eventually(20, || fs::read_to_string(go_mp.join("a")).ok().as_deref()
            == Some("ONE")),
        "update not mirrored within 20 s"
    );
    assert!(eventually(20, || !go_mp.join("..2026_01_01").exists()));
    assert!(eventually(20, || fs::read_to_string(&file_mp)
        .ok()
        .as_deref()
        == Some("f2")));
    // A new key.
    configmap(
        &go_src,
        "..2026_01_03",
        &[("a", "ONE"), ("b", "two"), ("c", "new")],
    );
    assert!(eventually(20, || fs::read_to_string(go_mp.join("c"))
        .ok()
        .as_deref()
        == Some("new")));

    assert!(m.release("c1").is_empty());
    assert!(!go_mp.exists());
    assert!(mount_of(&shared.join("passthrough/watchable")).is_none());
    assert!(
        mount_of(&shared.join("watchable")).is_some(),
        "still used by c2"
    );
    assert!(m.watching());
    assert!(m.release("c2").is_empty());
    assert!(m.list().is_empty());
    assert!(
        eventually(20, || !m.watching()),
        "poll thread still running"
    );
    assert_no_mounts_under(&root);
    assert!(!shared.join("watchable").exists());
    assert!(!shared.join("passthrough/watchable").exists());
    assert_eq!(
        fs::read_to_string(&file_src).unwrap(),
        "f2",
        "source untouched"
    );
}

/// Past upstream's limits (16 entries, 1 MiB), a bind mount of the source,
/// as upstream falls back; unmounted on release.
#[test]
fn watchable_bind_past_the_limits_is_bind_mounted() {
    if !testns::enter(
        test_name!(watchable_bind_past_the_limits_is_bind_mounted),
        false,
    ) {
        return;
    }
    let (_d, root, m) = setup();
    let shared = root.join("shared/containers");
    let src = shared.join("big");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("k{i}")), "v").unwrap();
    }
    let mp = shared.join("watchable/big");
    m.add("c1", &watchable(&mp, &src)).unwrap();
    assert!(mount_of(&mp).is_some(), "bind mount expected");
    assert!(!m.watching());
    fs::write(src.join("k0"), "changed").unwrap();
    assert_eq!(fs::read_to_string(mp.join("k0")).unwrap(), "changed");
    let err = fs::write(mp.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(Errno::EROFS as i32), "read-only");

    // A watched source that outgrows the limits is bind-mounted then.
    let small = shared.join("small");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("k"), "v").unwrap();
    let mp2 = shared.join("watchable/small");
    m.add("c2", &watchable(&mp2, &small)).unwrap();
    assert!(mount_of(&mp2).is_none());
    for i in 0..20 {
        fs::write(small.join(format!("n{i}")), "v").unwrap();
    }
    assert!(eventually(20, || mount_of(&mp2).is_some()), "no fallback");
    assert_eq!(fs::read_to_string(mp2.join("n19")).unwrap(), "v");

    assert!(m.release_all().is_empty());
    assert_no_mounts_under(&root);
    assert!(!shared.join("watchable").exists());
    assert_eq!(fs::read_dir(&src).unwrap().count(), 20, "source untouched");
}

#[test]
fn refresh_share_mounts_stats_the_mounts_below_only() {
    if !testns::enter(
        test_name!(refresh_share_mounts_stats_the_mounts_below_only),
        false,
    ) {
        return;
    }
    let (_d, root, m) = setup();
    let shared = root.join("shared");
    m.add("sandbox", &tmpfs(&shared, &[])).unwrap();
    m.add("sandbox", &tmpfs(&shared.join("a"), &[])).unwrap();
    m.add("sandbox", &tmpfs(&root.join("sharedx"), &[]))
        .unwrap();
    let stated = refresh_share_mounts(&shared).unwrap();
    let paths: Vec<&Path> = stated.iter().map(|(p, _)| p.as_path()).collect();
    assert_eq!(paths, vec![shared.join("a").as_path()]);
    assert!(stated[0].1.is_ok());
    assert_eq!(m.list().len(), 3, "nothing unmounted");
    assert!(mount_of(&shared.join("a")).is_some());
    assert!(m.release_all().is_empty());
}
