//! Mount options as the shim sends them (`["ro", "nosuid", "size=64m"]`),
//! split into the flags `mount(2)` takes, the propagation change that needs
//! a mount call of its own, and the filesystem data string.

use nix::mount::MsFlags;

/// Options understood as flags; `true` means the option clears the flag.
const FLAGS: &[(&str, bool, MsFlags)] = &[
    ("defaults", false, MsFlags::empty()),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("suid", true, MsFlags::MS_NOSUID),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("dev", true, MsFlags::MS_NODEV),
    ("nodev", false, MsFlags::MS_NODEV),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("atime", true, MsFlags::MS_NOATIME),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
];

/// Propagation options: applied by a separate `mount(2)` after the mount.
const PROPAGATION: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// The flags that a bind mount only honours on a second, remounting call.
pub(super) const BIND_REMOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Flags that make no sense for a filesystem mount (only for a bind).
const NOT_FOR_FILESYSTEMS: MsFlags = MsFlags::MS_BIND
    .union(MsFlags::MS_REC)
    .union(MsFlags::MS_REMOUNT);

/// The options of a filesystem mount: parsed, with `bind`, `rbind` and
/// `remount` dropped.
pub(super) fn filesystem_options(options: &[String]) -> MountOptions {
    let mut o = parse_mount_options(options);
    o.flags.remove(NOT_FOR_FILESYSTEMS);
    o
}

/// A parsed option list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount call itself.
    pub flags: MsFlags,
    /// Propagation type, applied afterwards (empty: leave as is).
    pub propagation: MsFlags,
    /// Everything else, comma-joined in order, for the filesystem.
    pub data: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            data: String::new(),
        }
    }
}

impl MountOptions {
    /// The data string, or `None` when there is none (mount(2) takes NULL).
    pub fn data(&self) -> Option<&str> {
        (!self.data.is_empty()).then_some(self.data.as_str())
    }
}

/// Splits `options` into flags, propagation and data. Unknown options go to
/// the data string in order; empty strings are ignored. Later options win,
/// as with mount(8): `["ro", "rw"]` is read-write.
pub fn parse_mount_options<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut parsed = MountOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_ref().trim();
        if opt.is_empty() {
            continue;
        }
        if let Some((_, clear, flag)) = FLAGS.iter().find(|(name, _, _)| *name == opt) {
            if *clear {
                parsed.flags.remove(*flag);
            } else {
                parsed.flags.insert(*flag);
            }
        } else if let Some((_, flag)) = PROPAGATION.iter().find(|(name, _)| *name == opt) {
            parsed.propagation = *flag;
        } else {
            data.push(opt);
        }
    }
    parsed.data = data.join(",");
    parsed
}

/// Looks up `key=value` among `options` (the last one wins).
pub(super) fn option_value<'a, S: AsRef<str>>(options: &'a [S], key: &str) -> Option<&'a str> {
    options.iter().rev().find_map(|o| {
        o.as_ref()
            .trim()
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

/// `options` without any `key=...` entry whose key is in `keys`.
pub(super) fn without_keys<S: AsRef<str>>(options: &[S], keys: &[&str]) -> Vec<String> {
    options
        .iter()
        .map(|o| o.as_ref().trim())
        .filter(|o| {
            !keys.iter().any(|k| {
                o.strip_prefix(k)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
            })
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_data_and_propagation_are_split() {
        let o = parse_mount_options(&[
            "ro",
            "nosuid",
            "nodev",
            "noexec",
            "relatime",
            "size=64m",
            "mode=1777",
            "rprivate",
            "",
        ]);
        assert_eq!(
            o.flags,
            MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_RELATIME
        );
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.data, "size=64m,mode=1777");
        assert_eq!(o.data(), Some("size=64m,mode=1777"));
    }

    #[test]
    fn later_options_win() {
        assert_eq!(parse_mount_options(&["ro", "rw"]).flags, MsFlags::empty());
        assert_eq!(parse_mount_options(&["rw", "ro"]).flags, MsFlags::MS_RDONLY);
        assert_eq!(
            parse_mount_options(&["noexec", "exec", "nosuid"]).flags,
            MsFlags::MS_NOSUID
        );
    }

    #[test]
    fn bind_and_rbind() {
        assert_eq!(parse_mount_options(&["bind"]).flags, MsFlags::MS_BIND);
        assert_eq!(
            parse_mount_options(&["rbind"]).flags,
            MsFlags::MS_BIND | MsFlags::MS_REC
        );
    }

    #[test]
    fn empty_list_has_no_data() {
        let o = parse_mount_options::<&str>(&[]);
        assert_eq!(o, MountOptions::default());
        assert_eq!(o.data(), None);
    }

    #[test]
    fn option_value_and_filter() {
        let opts = ["mode=0777", "fsgid=1000", "fsgidx=3", "mode=0700"];
        assert_eq!(option_value(&opts, "mode"), Some("0700"));
        assert_eq!(option_value(&opts, "fsgid"), Some("1000"));
        assert_eq!(option_value(&opts, "size"), None);
        assert_eq!(
            without_keys(&opts, &["fsgid", "mode"]),
            vec!["fsgidx=3".to_owned()]
        );
    }
}
