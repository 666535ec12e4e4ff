//! The last steps before exec, shared by the container init and exec'd
//! processes: rlimits, user and groups, capabilities, no_new_privs, the
//! executable lookup and the environment.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process, User};

use crate::error::{Context, SetupError, SetupResult};
use crate::utils::env_get;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the process will exec, resolved before privileges are dropped.
pub(crate) struct ExecTarget {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
}

fn cstring(s: &str, what: &str) -> SetupResult<CString> {
    CString::new(s).map_err(|_| SetupError::new(format!("{what} {s:?}"), "contains a nul byte"))
}

/// The ids the process runs with.
#[derive(Debug, PartialEq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The process's ids: the spec's numbers, or, when `user.username` is set,
/// the uid and gid of that name in the container's own `/etc/passwd` and
/// its groups from `/etc/group` (no NSS), plus `additionalGids`.
pub(crate) fn resolve_user(user: &User) -> SetupResult<ResolvedUser> {
    let mut out = ResolvedUser {
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
    };
    let Some(name) = user.username().as_deref().filter(|n| !n.is_empty()) else {
        return Ok(out);
    };
    let what = || format!("user {name:?}");
    let passwd =
        std::fs::read_to_string("/etc/passwd").ctx(|| format!("user {name:?}: /etc/passwd"))?;
    let (uid, gid) = passwd_ids(&passwd, name)
        .ok_or_else(|| SetupError::new(what(), "not found in /etc/passwd"))?;
    out.uid = uid;
    out.gid = gid;
    if let Ok(group) = std::fs::read_to_string("/etc/group") {
        for g in member_groups(&group, name) {
            if !out.groups.contains(&g) {
                out.groups.push(g);
            }
        }
    }
    Ok(out)
}

fn passwd_ids(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || f[0] != name {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

fn member_groups(group: &str, name: &str) -> Vec<u32> {
    group
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || !f[3].split(',').any(|m| m.trim() == name) {
                return None;
            }
            f[2].parse().ok()
        })
        .collect()
}

/// Resolves `args[0]` against the process's `PATH` (in the current root)
/// and builds the environment, adding `HOME` from `/etc/passwd` if unset.
pub(crate) fn exec_target(process: &Process, user: &ResolvedUser) -> SetupResult<ExecTarget> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(arg0) = args.first() else {
        return Err(SetupError::new("process args", "empty"));
    };
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    let path = if arg0.contains('/') {
        PathBuf::from(arg0)
    } else {
        let search = env_get(&env, "PATH").unwrap_or(DEFAULT_PATH);
        search
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(arg0))
            .find(|p| is_executable(p))
            .ok_or_else(|| {
                SetupError::new(
                    format!("exec {arg0:?}"),
                    "executable file not found in $PATH",
                )
            })?
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => {
            return Err(SetupError::new(
                format!("exec {}", path.display()),
                "is a directory",
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(e).ctx(|| format!("exec {}", path.display())),
    }
    if env_get(&env, "HOME").is_none() {
        let home = home_dir(user.uid).unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    let path_str = path.to_string_lossy();
    Ok(ExecTarget {
        path: cstring(&path_str, "executable")?,
        args: args
            .iter()
            .map(|a| cstring(a, "argument"))
            .collect::<SetupResult<_>>()?,
        env: env
            .iter()
            .map(|e| cstring(e, "environment entry"))
            .collect::<SetupResult<_>>()?,
    })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Home directory of `uid` from the container's own `/etc/passwd` (no NSS).
pub(crate) fn home_dir(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd_home(&passwd, uid)
}

fn passwd_home(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse::<u32>().ok() == Some(uid))
            .then(|| fields[5].to_string())
    })
}

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Applies the spec's rlimits.
pub(crate) fn set_rlimits(process: &Process) -> SetupResult<()> {
    for r in process.rlimits().as_deref().unwrap_or_default() {
        setrlimit(rlimit_resource(r.typ()), r.soft(), r.hard())
            .ctx(|| format!("set rlimit {:?}", r.typ()))?;
    }
    Ok(())
}

/// Converts OCI capabilities; those unknown to this kernel are skipped, as
/// runc does.
pub(crate) fn to_caps(set: Option<&Capabilities>, supported: &CapsHashSet) -> CapsHashSet {
    let mut out = HashSet::new();
    for c in set.into_iter().flatten() {
        if let Ok(cap) = format!("CAP_{c}").parse::<Capability>() {
            if supported.contains(&cap) {
                out.insert(cap);
            }
        }
    }
    out
}

/// Switches to the process's user and capabilities. Order matters: the
/// bounding set is cut while we still hold CAP_SETPCAP, the permitted set
/// survives setuid thanks to KEEPCAPS, then every set is written.
pub(crate) fn set_user_and_caps(process: &Process, user: &ResolvedUser) -> SetupResult<()> {
    let supported = caps::runtime::thread_all_supported();
    let c = process.capabilities().as_ref();
    let bounding = to_caps(c.and_then(|c| c.bounding().as_ref()), &supported);
    let effective = to_caps(c.and_then(|c| c.effective().as_ref()), &supported);
    let permitted = to_caps(c.and_then(|c| c.permitted().as_ref()), &supported);
    let inheritable = to_caps(c.and_then(|c| c.inheritable().as_ref()), &supported);
    let ambient = to_caps(c.and_then(|c| c.ambient().as_ref()), &supported);

    for cap in &supported {
        if !bounding.contains(cap) {
            caps::drop(None, CapSet::Bounding, *cap)
                .ctx(|| format!("drop {cap} from the bounding set"))?;
        }
    }

    nix::sys::prctl::set_keepcaps(true).ctx(|| "set keepcaps")?;
    let gid = Gid::from_raw(user.gid);
    let uid = Uid::from_raw(user.uid);
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).ctx(|| format!("set additional groups {groups:?}"))?;
    setresgid(gid, gid, gid).ctx(|| format!("set gid {gid}"))?;
    setresuid(uid, uid, uid).ctx(|| format!("set uid {uid}"))?;
    nix::sys::prctl::set_keepcaps(false).ctx(|| "clear keepcaps")?;

    // Effective first: it may only hold permitted capabilities, and the
    // permitted set only shrinks.
    let mut eff_now = effective.clone();
    eff_now.retain(|c| permitted.contains(c));
    caps::set(None, CapSet::Effective, &eff_now).ctx(|| "set effective capabilities")?;
    caps::set(None, CapSet::Inheritable, &inheritable).ctx(|| "set inheritable capabilities")?;
    caps::set(None, CapSet::Permitted, &permitted).ctx(|| "set permitted capabilities")?;
    if eff_now != effective {
        return Err(SetupError::new(
            "set effective capabilities",
            "effective capabilities must also be permitted",
        ));
    }
    caps::clear(None, CapSet::Ambient).ctx(|| "clear ambient capabilities")?;
    for cap in &ambient {
        caps::raise(None, CapSet::Ambient, *cap)
            .ctx(|| format!("raise ambient capability {cap}"))?;
    }
    Ok(())
}

/// Sets no_new_privs when the spec asks for it.
pub(crate) fn set_no_new_privs(process: &Process) -> SetupResult<()> {
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().ctx(|| "set no_new_privs")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability as OciCap;

    #[test]
    fn capability_names() {
        let set: Capabilities = [OciCap::Chown, OciCap::NetBindService, OciCap::SysAdmin]
            .into_iter()
            .collect();
        let got = to_caps(Some(&set), &caps::all());
        assert!(got.contains(&Capability::CAP_CHOWN));
        assert!(got.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(got.contains(&Capability::CAP_SYS_ADMIN));
        assert_eq!(got.len(), 3);
        assert!(to_caps(None, &caps::all()).is_empty());
    }

    #[test]
    fn user_and_group_files() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nweb:x:33:34::/var/www:/bin/false\n";
        let group = "root:x:0:\nwww:x:34:\nlog:x:4:web,other\ndisk:x:6:other\n";
        assert_eq!(passwd_ids(passwd, "web"), Some((33, 34)));
        assert_eq!(passwd_ids(passwd, "nobody"), None);
        assert_eq!(member_groups(group, "web"), vec![4]);
        assert!(member_groups(group, "root").is_empty());
    }

    #[test]
    fn passwd_lookup() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
        assert_eq!(passwd_home(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(passwd_home(passwd, 65534).as_deref(), Some("/nonexistent"));
        assert_eq!(passwd_home(passwd, 1000), None);
    }
}
