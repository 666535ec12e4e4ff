//! The sandbox-wide files `CreateSandbox` sets up and `DestroySandbox`
//! undoes: the hostname of the agent's UTS namespace, and the DNS
//! configuration, written under `/run/kata-containers/sandbox/` and
//! bind-mounted over `/etc/resolv.conf` as upstream Kata does.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// Where the agent writes the sandbox's files.
pub const SANDBOX_DIR: &str = "/run/kata-containers/sandbox";
/// The file the DNS configuration is bind-mounted over.
pub const ETC_RESOLV: &str = "/etc/resolv.conf";
/// The name of the DNS file in the sandbox directory.
pub const RESOLV_NAME: &str = "resolv.conf";
/// `HOST_NAME_MAX` on Linux.
pub const MAX_HOSTNAME_LEN: usize = 64;
/// The resolv.conf keywords a DNS line may start with.
pub const DNS_KEYWORDS: &[&str] = &["nameserver", "search", "options", "domain", "sortlist"];

/// Why a sandbox file could not be set up; each message names the object.
#[derive(Debug, thiserror::Error)]
pub enum GuestFilesError {
    /// The hostname is not acceptable.
    #[error("hostname {name:?}: {reason}")]
    InvalidHostname { name: String, reason: &'static str },
    /// sethostname(2) failed.
    #[error("hostname {name:?}: set hostname: {}", lower_first(cause.desc()))]
    SetHostname { name: String, cause: Errno },
    /// A DNS line is not acceptable; nothing was written.
    #[error("dns line {line:?}: {reason}")]
    InvalidDns { line: String, reason: String },
    /// A file operation or mount for the DNS setup failed.
    #[error("dns: {op} {}: {}", path.display(), describe_io(cause))]
    Dns {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
}

impl GuestFilesError {
    /// The status this error answers with.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            GuestFilesError::InvalidHostname { .. } | GuestFilesError::InvalidDns { .. } => {
                ttrpc::Code::INVALID_ARGUMENT
            }
            GuestFilesError::SetHostname { .. } | GuestFilesError::Dns { .. } => {
                ttrpc::Code::INTERNAL
            }
        }
    }
}

crate::error::into_status!(GuestFilesError);

use crate::error::{describe_io, lower_first};

fn dns_err(op: &'static str, path: &Path, cause: impl Into<io::Error>) -> GuestFilesError {
    GuestFilesError::Dns {
        op,
        path: path.to_path_buf(),
        cause: cause.into(),
    }
}

/// Checks a hostname: 1 to 64 bytes, no `/`, no NUL, no control character.
pub fn validate_hostname(name: &str) -> Result<(), GuestFilesError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_HOSTNAME_LEN {
        Some("longer than 64 bytes")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains a nul byte")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(GuestFilesError::InvalidHostname {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Sets the hostname of the agent's UTS namespace (which the containers of
/// the sandbox share) after validating it. Kata's shim may send an empty
/// hostname: the caller skips the call then, as upstream does.
pub fn set_hostname(name: &str) -> Result<(), GuestFilesError> {
    validate_hostname(name)?;
    nix::unistd::sethostname(name).map_err(|cause| GuestFilesError::SetHostname {
        name: name.to_owned(),
        cause,
    })
}

/// Checks one DNS line as Kata's shim sends it (`nameserver 8.8.8.8`,
/// `search svc.cluster.local`, `options ndots:5`). Returns the trimmed
/// line to write, or `None` for a blank or comment line, which is dropped.
pub fn validate_dns_line(line: &str) -> Result<Option<&str>, GuestFilesError> {
    let invalid = |reason: String| GuestFilesError::InvalidDns {
        line: line.to_owned(),
        reason,
    };
    if line.contains(['\n', '\r']) {
        return Err(invalid("contains a line break".to_owned()));
    }
    if line.contains('\0') {
        return Err(invalid("contains a nul byte".to_owned()));
    }
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
        return Ok(None);
    }
    let mut words = trimmed.split_whitespace();
    let keyword = words.next().unwrap_or_default();
    if !DNS_KEYWORDS.contains(&keyword) {
        return Err(invalid(format!(
            "must start with one of {}",
            DNS_KEYWORDS.join(", ")
        )));
    }
    if words.next().is_none() {
        return Err(invalid(format!("{keyword} without a value")));
    }
    Ok(Some(trimmed))
}

/// What [`setup_dns`] set up, so that [`teardown_dns`] undoes exactly
/// that: the file it wrote and the identity of that file, by which its bind
/// mount is recognised even after someone removed or replaced the file.
/// The file is held open, so its inode number cannot pass to another file
/// while the setup exists.
#[derive(Debug, Clone)]
pub struct DnsSetup {
    src: PathBuf,
    etc_resolv: PathBuf,
    dev: u64,
    ino: u64,
    _held: std::sync::Arc<fs::File>,
}

impl PartialEq for DnsSetup {
    fn eq(&self, other: &Self) -> bool {
        (&self.src, &self.etc_resolv, self.dev, self.ino)
            == (&other.src, &other.etc_resolv, other.dev, other.ino)
    }
}

impl Eq for DnsSetup {}

impl DnsSetup {
    /// Whether `path` currently shows the file this setup wrote.
    fn shows_ours(&self, path: &Path) -> bool {
        fs::metadata(path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

/// Writes `dir/resolv.conf` from the `dns` lines and bind-mounts it over
/// `etc_resolv` (created empty if missing). An empty `dns` changes nothing
/// and returns `None`, as upstream Kata does. Called again, it rewrites the
/// file in place and keeps the one bind mount. Lines are all checked before
/// anything is written.
pub fn setup_dns(
    dir: &Path,
    dns: &[String],
    etc_resolv: &Path,
) -> Result<Option<DnsSetup>, GuestFilesError> {
    if dns.is_empty() {
        return Ok(None);
    }
    let mut content = String::new();
    for line in dns {
        if let Some(line) = validate_dns_line(line)? {
            content.push_str(line);
            content.push('\n');
        }
    }

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| dns_err("create directory", dir, e))?;
    let src = dir.join(RESOLV_NAME);
    // In place, not by rename: a bind mount of it keeps showing this inode.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&src)
        .map_err(|e| dns_err("open", &src, e))?;
    file.write_all(content.as_bytes())
        .map_err(|e| dns_err("write", &src, e))?;
    let md = file.metadata().map_err(|e| dns_err("stat", &src, e))?;
    let setup = DnsSetup {
        src: src.clone(),
        etc_resolv: etc_resolv.to_path_buf(),
        dev: md.dev(),
        ino: md.ino(),
        _held: std::sync::Arc::new(file),
    };

    if setup.shows_ours(etc_resolv) {
        return Ok(Some(setup));
    }
    let mut created = false;
    match fs::symlink_metadata(etc_resolv) {
        Ok(md) if md.is_dir() => {
            return Err(dns_err(
                "bind mount over",
                etc_resolv,
                io::Error::from(Errno::EISDIR),
            ))
        }
        Ok(md) if md.file_type().is_symlink() => {
            // mount(2) follows it; a dangling one cannot be mounted over.
            fs::metadata(etc_resolv).map_err(|e| dns_err("follow symlink", etc_resolv, e))?;
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(etc_resolv)
                .map_err(|e| dns_err("create", etc_resolv, e))?;
            created = true;
        }
        Err(e) => return Err(dns_err("stat", etc_resolv, e)),
    }
    if let Err(e) = nix::mount::mount(
        Some(&src),
        etc_resolv,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        if created {
            let _ = fs::remove_file(etc_resolv);
        }
        return Err(dns_err("bind mount over", etc_resolv, e));
    }
    Ok(Some(setup))
}

/// Undoes [`setup_dns`]: unmounts this setup's file from `/etc/resolv.conf`
/// and removes the file. Only what `setup` names is touched: a bind mount
/// someone else put there (as container engines do), or a file another
/// agent wrote at the same path, is left alone. A bind mount of ours that
/// will not go is an error, never a silent success.
pub fn teardown_dns(setup: &DnsSetup) -> Result<(), GuestFilesError> {
    let etc = &setup.etc_resolv;
    // Bounded: each round removes one bind mount of ours.
    for _ in 0..16 {
        if !setup.shows_ours(etc) {
            break;
        }
        nix::mount::umount2(etc, MntFlags::empty()).map_err(|e| dns_err("unmount", etc, e))?;
    }
    if setup.shows_ours(etc) {
        return Err(dns_err("unmount", etc, io::Error::from(Errno::EBUSY)));
    }
    if setup.shows_ours(&setup.src) {
        fs::remove_file(&setup.src).map_err(|e| dns_err("remove", &setup.src, e))?;
    }
    if let Some(dir) = setup.src.parent() {
        // The directory goes too once nothing else is in it.
        let _ = fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testns::{self, test_name};

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn hostname_validation() {
        validate_hostname("sandbox-1").unwrap();
        validate_hostname(&"a".repeat(64)).unwrap();
        for (name, why) in [
            ("", "empty"),
            (&*"a".repeat(65), "longer than 64 bytes"),
            ("a/b", "contains '/'"),
            ("a\0b", "contains a nul byte"),
            ("a\nb", "contains a control character"),
        ] {
            let err = validate_hostname(name).unwrap_err();
            assert!(err.to_string().contains(why), "{name:?}: {err}");
            assert!(err.to_string().starts_with("hostname "), "{err}");
            // set_hostname refuses before any syscall, so this is safe
            // outside a UTS namespace.
            assert!(matches!(
                set_hostname(name),
                Err(GuestFilesError::InvalidHostname { .. })
            ));
        }
    }

    #[test]
    fn set_hostname_in_uts_namespace() {
        if !testns::enter(test_name!(set_hostname_in_uts_namespace), true) {
            return;
        }
        set_hostname("kata-test-host").unwrap();
        assert_eq!(
            nix::unistd::gethostname().unwrap().to_string_lossy(),
            "kata-test-host"
        );
    }

    #[test]
    fn dns_line_validation() {
        assert_eq!(
            validate_dns_line("nameserver 8.8.8.8").unwrap(),
            Some("nameserver 8.8.8.8")
        );
        assert_eq!(
            validate_dns_line("  search a.svc b.svc ").unwrap(),
            Some("search a.svc b.svc")
        );
        assert_eq!(
            validate_dns_line("options ndots:5").unwrap(),
            Some("options ndots:5")
        );
        assert_eq!(validate_dns_line("").unwrap(), None);
        assert_eq!(validate_dns_line("# generated").unwrap(), None);
        for (line, why) in [
            ("nameserver 1.1.1.1\nnameserver 2.2.2.2", "line break"),
            ("nameserver 1.1.1.1\r", "line break"),
            ("server 1.1.1.1", "must start with one of nameserver"),
            ("nameservers 1.1.1.1", "must start with one of"),
            ("nameserver", "without a value"),
            ("search\0x", "nul byte"),
        ] {
            let err = validate_dns_line(line).unwrap_err();
            assert!(err.to_string().contains(why), "{line:?}: {err}");
            assert!(err.to_string().starts_with("dns line "), "{err}");
        }
    }

    #[test]
    fn bad_dns_line_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let target = dir.path().join("resolv.conf");
        let err = setup_dns(
            &sandbox,
            &lines(&["nameserver 8.8.8.8", "bogus x"]),
            &target,
        )
        .unwrap_err();
        assert!(matches!(err, GuestFilesError::InvalidDns { .. }), "{err}");
        assert!(!sandbox.exists());
        assert!(!target.exists());
    }

    #[test]
    fn empty_dns_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let target = dir.path().join("resolv.conf");
        assert_eq!(setup_dns(&sandbox, &[], &target).unwrap(), None);
        assert!(!sandbox.exists());
        assert!(!target.exists());
    }

    #[test]
    fn dns_is_written_mounted_and_torn_down() {
        if !testns::enter(test_name!(dns_is_written_mounted_and_torn_down), false) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("run/sandbox");
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).unwrap();
        let target = etc.join("resolv.conf");
        fs::write(&target, "nameserver 127.0.0.1\n").unwrap();

        let dns = lines(&[
            "nameserver 8.8.8.8",
            "search default.svc.cluster.local svc.cluster.local",
            "options ndots:5",
        ]);
        let setup = setup_dns(&sandbox, &dns, &target).unwrap().unwrap();
        let want = "nameserver 8.8.8.8\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n";
        assert_eq!(fs::read_to_string(sandbox.join(RESOLV_NAME)).unwrap(), want);
        assert_eq!(fs::read_to_string(&target).unwrap(), want);
        assert!(crate::storage::mounted_at(&target).unwrap().is_some());

        // Again: rewritten in place, still one mount.
        let again = setup_dns(&sandbox, &lines(&["nameserver 1.1.1.1"]), &target).unwrap();
        assert_eq!(again.as_ref(), Some(&setup));
        assert_eq!(fs::read_to_string(&target).unwrap(), "nameserver 1.1.1.1\n");
        let n = crate::storage::mounts()
            .unwrap()
            .iter()
            .filter(|m| m.mount_point == target)
            .count();
        assert_eq!(n, 1);

        teardown_dns(&setup).unwrap();
        assert!(crate::storage::mounted_at(&target).unwrap().is_none());
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "nameserver 127.0.0.1\n",
            "the original file shows again"
        );
        assert!(!sandbox.join(RESOLV_NAME).exists());
        teardown_dns(&setup).unwrap();
    }

    #[test]
    fn dns_teardown_undoes_only_its_own_setup() {
        if !testns::enter(test_name!(dns_teardown_undoes_only_its_own_setup), false) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let target = dir.path().join("resolv.conf");
        fs::write(&target, "nameserver 127.0.0.1\n").unwrap();
        let setup = setup_dns(&sandbox, &lines(&["nameserver 9.9.9.9"]), &target)
            .unwrap()
            .unwrap();

        // Someone else removes the file and writes one of their own at the
        // same path: our mount (of the removed inode) is still recognised.
        fs::remove_file(sandbox.join(RESOLV_NAME)).unwrap();
        fs::write(sandbox.join(RESOLV_NAME), "theirs\n").unwrap();
        teardown_dns(&setup).unwrap();
        assert!(crate::storage::mounted_at(&target).unwrap().is_none());
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "nameserver 127.0.0.1\n"
        );
        // Their file is not ours to remove.
        assert_eq!(
            fs::read_to_string(sandbox.join(RESOLV_NAME)).unwrap(),
            "theirs\n"
        );

        // A mount of ours that cannot go is an error, not a success: an open
        // file on it keeps it busy.
        let setup = setup_dns(&sandbox, &lines(&["nameserver 9.9.9.9"]), &target)
            .unwrap()
            .unwrap();
        let busy = fs::File::open(&target).unwrap();
        let err = teardown_dns(&setup).unwrap_err();
        assert!(err.to_string().contains("unmount"), "{err}");
        assert!(crate::storage::mounted_at(&target).unwrap().is_some());
        drop(busy);
        teardown_dns(&setup).unwrap();
    }

    #[test]
    fn dns_target_created_when_missing_and_foreign_mount_kept() {
        if !testns::enter(
            test_name!(dns_target_created_when_missing_and_foreign_mount_kept),
            false,
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let target = dir.path().join("resolv.conf");
        let setup = setup_dns(&sandbox, &lines(&["nameserver 9.9.9.9"]), &target)
            .unwrap()
            .unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "nameserver 9.9.9.9\n");
        teardown_dns(&setup).unwrap();
        assert!(crate::storage::mounted_at(&target).unwrap().is_none());

        // A bind mount that is not ours (as a container engine makes) is
        // not unmounted by teardown.
        let foreign = dir.path().join("foreign");
        fs::write(&foreign, "nameserver 10.0.0.1\n").unwrap();
        nix::mount::mount(
            Some(&foreign),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        teardown_dns(&setup).unwrap();
        assert!(crate::storage::mounted_at(&target).unwrap().is_some());
        nix::mount::umount2(&target, MntFlags::empty()).unwrap();

        // A directory cannot be mounted over.
        let d = dir.path().join("adir");
        fs::create_dir(&d).unwrap();
        let err = setup_dns(&sandbox, &lines(&["nameserver 9.9.9.9"]), &d).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}
