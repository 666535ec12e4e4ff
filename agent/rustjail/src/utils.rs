//! Small helpers shared by the caller side and the init side.

use std::io;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::sys::wait::WaitStatus;

/// Lower-case text for an errno, as our messages print it
/// (`no such file or directory`).
pub(crate) fn errno_text(errno: Errno) -> String {
    lower_first(errno.desc())
}

/// Lower-case text for an io error, without the `(os error N)` suffix.
pub(crate) fn io_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => errno_text(Errno::from_raw(code)),
        None => lower_first(&err.to_string()),
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Exit code of a process as a shell reports it: the exit status, or
/// 128 + n when it was killed by signal n. `None` while the process is
/// alive (stopped, continued, still running).
pub fn wait_status_to_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Joins `unsafe_path` under `root`, resolving symlinks as if `root` were
/// `/`, so that neither `..` nor a symlink can lead outside `root`.
/// Components that do not exist are appended as they are.
pub(crate) fn secure_join(root: &Path, unsafe_path: &Path) -> io::Result<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![unsafe_path.to_path_buf()];
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(next) = pending.pop() {
        let mut comps: Vec<Component> = next.components().collect();
        comps.reverse();
        while let Some(comp) = comps.pop() {
            match comp {
                Component::RootDir | Component::Prefix(_) => resolved.clear(),
                Component::CurDir => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let full = root.join(&candidate);
                    match std::fs::symlink_metadata(&full) {
                        Ok(meta) if meta.file_type().is_symlink() => {
                            links += 1;
                            if links > 255 {
                                return Err(io::Error::from_raw_os_error(libc::ELOOP));
                            }
                            let target = std::fs::read_link(&full)?;
                            // Resolve the link target first, then what was left.
                            let rest: PathBuf = comps.iter().rev().collect();
                            pending.push(rest);
                            if target.is_absolute() {
                                resolved.clear();
                            }
                            pending.push(target);
                            comps.clear();
                        }
                        _ => resolved = candidate,
                    }
                }
            }
        }
    }
    Ok(root.join(resolved))
}

/// Checks a container id: non-empty, at most 255 bytes, made of
/// `[A-Za-z0-9_.-]` and neither `.` nor `..`, so it can name a directory.
pub fn validate_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty");
    }
    if id.len() > 256 {
        return Err("longer than 256 bytes");
    }
    if id == "." || id.contains("..") {
        return Err("\".\" or contains \"..\"");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// `a=b` environment entries: the value of `key`, if set.
pub(crate) fn env_get<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Gives every signal its default disposition and unblocks them all, for
/// a program about to be exec'd. execve keeps what is ignored and what is
/// blocked, so without this a container, a hook or the debug shell would
/// start with whatever the agent, or whoever started it (`nohup`, a
/// service manager), had set aside: a shell that ignores SIGHUP outlives
/// its hung-up terminal. Only signal(2) and sigprocmask(2):
/// async-signal-safe, for a forked child.
pub fn default_signals() {
    // SAFETY: SIG_DFL installs no handler code; the set is a local value
    // that sigemptyset initialises. SIGKILL, SIGSTOP and the C library's
    // reserved signals answer EINVAL and are left as they are.
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    /// `SigIgn` and `SigBlk` of a `cat /proc/self/status` started with
    /// SIGHUP ignored and SIGUSR1 blocked, with `default_signals` before
    /// its exec or not.
    fn inherited_signals(reset: bool) -> (String, String) {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("cat");
        cmd.arg("/proc/self/status");
        // SAFETY: only signal(2) and sigprocmask(2) run in the child.
        unsafe {
            cmd.pre_exec(move || {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                let mut usr1: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut usr1);
                libc::sigaddset(&mut usr1, libc::SIGUSR1);
                libc::sigprocmask(libc::SIG_BLOCK, &usr1, std::ptr::null_mut());
                if reset {
                    default_signals();
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("run cat");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        (field("SigIgn:"), field("SigBlk:"))
    }

    #[test]
    fn exec_after_default_signals_inherits_nothing_ignored_or_blocked() {
        // Without the reset the child sees both (SIGHUP is bit 0, SIGUSR1
        // bit 9): what the test looks at is really inherited.
        let (ign, blk) = inherited_signals(false);
        let bits = |hex: &str| u64::from_str_radix(hex, 16).expect("hex mask");
        assert_eq!(bits(&ign) & 1, 1, "SigIgn {ign}");
        assert_eq!(bits(&blk) & (1 << 9), 1 << 9, "SigBlk {blk}");
        let (ign, blk) = inherited_signals(true);
        // Signals 32 and 33 (bits 31, 32) are the C library's own, which
        // each program's libc sets up for itself; signal(2) refuses them.
        let libc_own = (1u64 << 31) | (1 << 32);
        assert_eq!(bits(&ign) & !libc_own, 0, "SigIgn {ign}");
        assert_eq!(bits(&blk) & !libc_own, 0, "SigBlk {blk}");
    }

    #[test]
    fn exit_codes() {
        let pid = Pid::from_raw(1);
        assert_eq!(wait_status_to_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            wait_status_to_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(wait_status_to_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn errno_messages_are_lower_case() {
        assert_eq!(errno_text(Errno::ENOENT), "no such file or directory");
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(io_text(&e), "operation not permitted");
    }

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_3").is_ok());
        assert!(validate_id(&"a".repeat(256)).is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            "a/b",
            "../x",
            "a b",
            &"a".repeat(257),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secure_join_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("a/b/up")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/rel")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/a/b")).unwrap(),
            root.join("a/b")
        );
        assert_eq!(
            secure_join(root, Path::new("../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/b/up/y")).unwrap(),
            root.join("y")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/rel/z")).unwrap(),
            root.join("a/b/z")
        );
    }

    #[test]
    fn env_lookup() {
        let env = vec!["PATH=/bin".to_string(), "HOME=/root".to_string()];
        assert_eq!(env_get(&env, "HOME"), Some("/root"));
        assert_eq!(env_get(&env, "USER"), None);
    }
}
