//! Mount option parsing, alone and as the storage drivers use it: the
//! option list is split into flags, propagation and data; then the whole
//! `Storage` (decoded from the input) is set up by the storage manager in
//! the private world of `fuzz/run.sh`, which checks its mount point and
//! parses its options per driver, and released again. Whatever the
//! storage, every mount it added lies under `/run/kata-containers`, and
//! after the release (or a refusal) the mount table is as before.
#![no_main]

use guest_agent_fuzz::{assert_private_world, mount_points};
use kata_agent::storage::{parse_mount_options, StorageManager};
use protobuf::Message;
use protocols::agent::Storage;

const ROOT: &str = "/run/kata-containers";

/// What a flag or propagation option is called: such a word never
/// reaches the filesystem's data string.
const KNOWN: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert_private_world();
    let Ok(s) = Storage::parse_from_bytes(data) else {
        return;
    };
    let parsed = parse_mount_options(&s.options);
    for word in parsed.data.split(',') {
        assert!(
            !KNOWN.contains(&word) || s.options.iter().any(|o| o.contains(',')),
            "{word:?} left in the data string of {:?}",
            s.options
        );
    }
    // Later options win, so a list given twice parses to the same flags.
    let twice: Vec<&String> = s.options.iter().chain(s.options.iter()).collect();
    let again = parse_mount_options(&twice);
    assert_eq!(
        (parsed.flags, parsed.propagation),
        (again.flags, again.propagation)
    );

    let before = mount_points();
    let manager = StorageManager::default();
    let added = manager.add("sandbox", &s);
    let during = mount_points();
    for m in &during {
        if !before.contains(m) {
            assert!(
                m.starts_with(&format!("{ROOT}/")),
                "storage {:?} ({:?}) mounted {m} outside {ROOT}",
                s.mount_point,
                s.driver
            );
        }
    }
    if added.is_err() {
        assert_eq!(
            before, during,
            "refused storage {:?} left mounts",
            s.mount_point
        );
    }
    let _ = manager.release_all();
    assert_eq!(
        before,
        mount_points(),
        "storage {:?} not torn down",
        s.mount_point
    );
});
