//! Converts the wire form of an OCI spec (`oci.proto`, Kata's field names)
//! into `oci-spec` types, the only spec form `rustjail` knows.
//!
//! The wire spec is proto3, so "unset" and "zero" look the same. The rule
//! here, as Kata's shim means it: a zero number, an empty string or an empty
//! message is absent. The conversion builds the OCI JSON shape and lets
//! `oci-spec`'s own deserializer validate it, so enum values (namespace
//! types, capabilities, rlimit types, seccomp actions) are checked in one
//! place and errors name the offending field.

use protocols::oci as pb;
use rustjail::oci_spec::runtime::Spec;
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
#[error("invalid spec: {0}")]
pub struct ConvertError(String);

/// A JSON object builder that leaves absent values out.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn str(mut self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn num<T: Into<Value> + Default + PartialEq>(mut self, k: &str, v: T) -> Self {
        if v != T::default() {
            self.0.insert(k.into(), v.into());
        }
        self
    }
    fn flag(mut self, k: &str, v: bool) -> Self {
        if v {
            self.0.insert(k.into(), json!(true));
        }
        self
    }
    fn strs(mut self, k: &str, v: &[String]) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn list(mut self, k: &str, v: Vec<Value>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::Array(v));
        }
        self
    }
    fn obj(mut self, k: &str, v: Option<Value>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v);
        }
        self
    }
    /// Always present, even when empty.
    fn raw(mut self, k: &str, v: Value) -> Self {
        self.0.insert(k.into(), v);
        self
    }
    /// `None` when nothing was set, so the parent leaves the key out.
    fn some(self) -> Option<Value> {
        (!self.0.is_empty()).then_some(Value::Object(self.0))
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn map(m: &std::collections::HashMap<String, String>) -> Option<Value> {
    if m.is_empty() {
        return None;
    }
    let mut sorted: Vec<_> = m.iter().collect();
    sorted.sort();
    Some(Value::Object(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect(),
    ))
}

fn process(p: &pb::Process) -> Value {
    let user = p.User.as_ref().map(|u| {
        Obj::default()
            .raw("uid", json!(u.UID))
            .raw("gid", json!(u.GID))
            .list(
                "additionalGids",
                u.AdditionalGids.iter().map(|g| json!(g)).collect(),
            )
            .str("username", &u.Username)
            .done()
    });
    let caps = p.Capabilities.as_ref().map(|c| {
        json!({
            "bounding": c.Bounding,
            "effective": c.Effective,
            "inheritable": c.Inheritable,
            "permitted": c.Permitted,
            "ambient": c.Ambient,
        })
    });
    let console = p
        .ConsoleSize
        .as_ref()
        .filter(|b| b.Height != 0 || b.Width != 0)
        .map(|b| json!({"height": b.Height, "width": b.Width}));
    let rlimits = p
        .Rlimits
        .iter()
        .map(|r| json!({"type": r.Type, "hard": r.Hard, "soft": r.Soft}))
        .collect();
    Obj::default()
        .flag("terminal", p.Terminal)
        .obj("consoleSize", console)
        .raw("user", user.unwrap_or_else(|| json!({"uid": 0, "gid": 0})))
        .strs("args", &p.Args)
        .strs("env", &p.Env)
        .raw("cwd", json!(if p.Cwd.is_empty() { "/" } else { &p.Cwd }))
        .obj("capabilities", caps)
        .list("rlimits", rlimits)
        .flag("noNewPrivileges", p.NoNewPrivileges)
        .str("apparmorProfile", &p.ApparmorProfile)
        .num("oomScoreAdj", p.OOMScoreAdj)
        .str("selinuxLabel", &p.SelinuxLabel)
        .done()
}

fn hooks(h: &pb::Hooks) -> Option<Value> {
    let list = |hs: &[pb::Hook]| -> Vec<Value> {
        hs.iter()
            .map(|h| {
                Obj::default()
                    .raw("path", json!(h.Path))
                    .strs("args", &h.Args)
                    .strs("env", &h.Env)
                    .num("timeout", h.Timeout)
                    .done()
            })
            .collect()
    };
    Obj::default()
        .list("prestart", list(&h.Prestart))
        .list("createRuntime", list(&h.CreateRuntime))
        .list("createContainer", list(&h.CreateContainer))
        .list("startContainer", list(&h.StartContainer))
        .list("poststart", list(&h.Poststart))
        .list("poststop", list(&h.Poststop))
        .some()
}

/// `linux.resources`; also used by UpdateContainer.
pub fn resources(r: &pb::LinuxResources) -> Value {
    let devices = r
        .Devices
        .iter()
        .map(|d| {
            Obj::default()
                .raw("allow", json!(d.Allow))
                .str("type", &d.Type)
                .obj(
                    "major",
                    (d.Major >= 0 && d.Type != "a").then(|| json!(d.Major)),
                )
                .obj(
                    "minor",
                    (d.Minor >= 0 && d.Type != "a").then(|| json!(d.Minor)),
                )
                .str("access", &d.Access)
                .done()
        })
        .collect();
    let memory = r.Memory.as_ref().and_then(|m| {
        Obj::default()
            .num("limit", m.Limit)
            .num("reservation", m.Reservation)
            .num("swap", m.Swap)
            .num("kernel", m.Kernel)
            .num("kernelTCP", m.KernelTCP)
            .num("swappiness", m.Swappiness)
            .flag("disableOOMKiller", m.DisableOOMKiller)
            .some()
    });
    let cpu = r.CPU.as_ref().and_then(|c| {
        Obj::default()
            .num("shares", c.Shares)
            .num("quota", c.Quota)
            .num("period", c.Period)
            .num("realtimeRuntime", c.RealtimeRuntime)
            .num("realtimePeriod", c.RealtimePeriod)
            .str("cpus", &c.Cpus)
            .str("mems", &c.Mems)
            .some()
    });
    let pids = r
        .Pids
        .as_ref()
        .filter(|p| p.Limit != 0)
        .map(|p| json!({"limit": p.Limit}));
    let throttle = |ds: &[pb::LinuxThrottleDevice]| -> Vec<Value> {
        ds.iter()
            .map(|d| json!({"major": d.Major, "minor": d.Minor, "rate": d.Rate}))
            .collect()
    };
    let block_io = r.BlockIO.as_ref().and_then(|b| {
        let weights = b
            .WeightDevice
            .iter()
            .map(|d| {
                Obj::default()
                    .raw("major", json!(d.Major))
                    .raw("minor", json!(d.Minor))
                    .num("weight", d.Weight)
                    .num("leafWeight", d.LeafWeight)
                    .done()
            })
            .collect();
        Obj::default()
            .num("weight", b.Weight)
            .num("leafWeight", b.LeafWeight)
            .list("weightDevice", weights)
            .list("throttleReadBpsDevice", throttle(&b.ThrottleReadBpsDevice))
            .list(
                "throttleWriteBpsDevice",
                throttle(&b.ThrottleWriteBpsDevice),
            )
            .list(
                "throttleReadIOPSDevice",
                throttle(&b.ThrottleReadIOPSDevice),
            )
            .list(
                "throttleWriteIOPSDevice",
                throttle(&b.ThrottleWriteIOPSDevice),
            )
            .some()
    });
    let hugepages = r
        .HugepageLimits
        .iter()
        .map(|h| json!({"pageSize": h.Pagesize, "limit": h.Limit}))
        .collect();
    let network = r.Network.as_ref().and_then(|n| {
        let prios = n
            .Priorities
            .iter()
            .map(|p| json!({"name": p.Name, "priority": p.Priority}))
            .collect();
        Obj::default()
            .num("classID", n.ClassID)
            .list("priorities", prios)
            .some()
    });
    Obj::default()
        .list("devices", devices)
        .obj("memory", memory)
        .obj("cpu", cpu)
        .obj("pids", pids)
        .obj("blockIO", block_io)
        .list("hugepageLimits", hugepages)
        .obj("network", network)
        .done()
}

fn seccomp(s: &pb::LinuxSeccomp) -> Option<Value> {
    if s.DefaultAction.is_empty() {
        return None;
    }
    let syscalls = s
        .Syscalls
        .iter()
        .map(|sc| {
            let args = sc
                .Args
                .iter()
                .map(|a| {
                    json!({"index": a.Index, "value": a.Value, "valueTwo": a.ValueTwo, "op": a.Op})
                })
                .collect();
            let errno = match &sc.ErrnoRet {
                Some(pb::linux_syscall::ErrnoRet::Errnoret(e)) => Some(json!(e)),
                _ => None,
            };
            Obj::default()
                .raw("names", json!(sc.Names))
                .raw("action", json!(sc.Action))
                .obj("errnoRet", errno)
                .list("args", args)
                .done()
        })
        .collect();
    Obj::default()
        .raw("defaultAction", json!(s.DefaultAction))
        .strs("architectures", &s.Architectures)
        .strs("flags", &s.Flags)
        .list("syscalls", syscalls)
        .some()
}

/// A namespace type as the OCI JSON names it. Kata's clients spell some
/// types two ways: the Go runtime as the OCI spec does (`mount`,
/// `network`), upstream agent-ctl and runtime-rs as `oci-spec`'s Rust types
/// print them, the kernel's names (`mnt`, `net`). Both are accepted, as
/// upstream's agent does; anything else goes on to fail validation by name.
fn namespace_type(t: &str) -> Value {
    use rustjail::oci_spec::runtime::LinuxNamespaceType;
    LinuxNamespaceType::try_from(t)
        .ok()
        .and_then(|ty| serde_json::to_value(ty).ok())
        .unwrap_or_else(|| json!(t))
}

fn linux(l: &pb::Linux) -> Value {
    let idmap = |ms: &[pb::LinuxIDMapping]| -> Vec<Value> {
        ms.iter()
            .map(|m| json!({"hostID": m.HostID, "containerID": m.ContainerID, "size": m.Size}))
            .collect()
    };
    let namespaces = l
        .Namespaces
        .iter()
        .map(|n| {
            Obj::default()
                .raw("type", namespace_type(&n.Type))
                .str("path", &n.Path)
                .done()
        })
        .collect();
    let devices = l
        .Devices
        .iter()
        .map(|d| {
            Obj::default()
                .raw("path", json!(d.Path))
                .raw("type", json!(d.Type))
                .raw("major", json!(d.Major))
                .raw("minor", json!(d.Minor))
                .num("fileMode", d.FileMode)
                .raw("uid", json!(d.UID))
                .raw("gid", json!(d.GID))
                .done()
        })
        .collect();
    Obj::default()
        .list("uidMappings", idmap(&l.UIDMappings))
        .list("gidMappings", idmap(&l.GIDMappings))
        .obj("sysctl", map(&l.Sysctl))
        .obj("resources", l.Resources.as_ref().map(resources))
        .str("cgroupsPath", &l.CgroupsPath)
        .list("namespaces", namespaces)
        .list("devices", devices)
        .obj("seccomp", l.Seccomp.as_ref().and_then(seccomp))
        .str("rootfsPropagation", &l.RootfsPropagation)
        .strs("maskedPaths", &l.MaskedPaths)
        .strs("readonlyPaths", &l.ReadonlyPaths)
        .str("mountLabel", &l.MountLabel)
        .done()
}

/// The OCI JSON form of a wire spec.
pub fn spec_json(s: &pb::Spec) -> Value {
    let mounts = s
        .Mounts
        .iter()
        .map(|m| {
            Obj::default()
                .raw("destination", json!(m.destination))
                .str("source", &m.source)
                .str("type", &m.type_)
                .strs("options", &m.options)
                .done()
        })
        .collect();
    let root = s
        .Root
        .as_ref()
        .map(|r| json!({"path": r.Path, "readonly": r.Readonly}));
    Obj::default()
        .raw(
            "ociVersion",
            json!(if s.Version.is_empty() {
                "1.0.2"
            } else {
                &s.Version
            }),
        )
        .obj("process", s.Process.as_ref().map(process))
        .obj("root", root)
        .str("hostname", &s.Hostname)
        .raw("mounts", Value::Array(mounts))
        .obj("hooks", s.Hooks.as_ref().and_then(hooks))
        .obj("annotations", map(&s.Annotations))
        .obj("linux", s.Linux.as_ref().map(linux))
        .done()
}

/// Converts and validates a wire spec.
pub fn spec_from_proto(s: &pb::Spec) -> Result<Spec, ConvertError> {
    if let Some(h) = s.Hooks.as_ref() {
        check_hook_paths(h)?;
    }
    from_json(&spec_json(s)).map_err(ConvertError)
}

/// Reads `v` as a `T` through its JSON text. rustjail's helper reads the
/// same types from JSON bytes, so going through bytes here reuses that
/// deserializer instead of linking a second one for `Value` (326 KB of the
/// static binary); a conversion is once per request, microseconds.
pub fn from_json<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    let text = serde_json::to_vec(v).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| {
        // The position would be in text of our own making, not the host's.
        let msg = e.to_string();
        match msg.rfind(" at line ") {
            Some(at) if e.line() > 0 => msg[..at].to_string(),
            _ => msg,
        }
    })
}

/// A hook's path must be absolute (the OCI runtime spec's rule; a bare
/// name would be looked up in the agent's PATH) and one the kernel can
/// take: no NUL, no name over NAME_MAX, shorter than PATH_MAX.
fn check_hook_paths(h: &pb::Hooks) -> Result<(), ConvertError> {
    use crate::storage::{NAME_MAX, PATH_MAX};
    let kinds: [(&str, &[pb::Hook]); 6] = [
        ("prestart", &h.Prestart),
        ("createRuntime", &h.CreateRuntime),
        ("createContainer", &h.CreateContainer),
        ("startContainer", &h.StartContainer),
        ("poststart", &h.Poststart),
        ("poststop", &h.Poststop),
    ];
    for (kind, hooks) in kinds {
        for (i, hook) in hooks.iter().enumerate() {
            let p = &hook.Path;
            let why = if !p.starts_with('/') {
                "not an absolute path"
            } else if p.contains('\0') {
                "contains a NUL byte"
            } else if p.len() >= PATH_MAX {
                "too long"
            } else if p.split('/').any(|n| n.len() > NAME_MAX) {
                "a name too long"
            } else {
                continue;
            };
            return Err(ConvertError(format!(
                "hooks.{kind}[{i}]: path {p:?}: {why}"
            )));
        }
    }
    Ok(())
}

/// Converts and validates a wire process (ExecProcess).
pub fn process_from_proto(
    p: &pb::Process,
) -> Result<rustjail::oci_spec::runtime::Process, ConvertError> {
    from_json(&process(p)).map_err(|e| ConvertError(format!("process: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::Spec {
        let mut s = pb::Spec::new();
        s.Version = "1.1.0".into();
        s.Hostname = "box".into();
        let mut p = pb::Process::new();
        p.Args = vec!["/bin/sh".into(), "-c".into(), "echo hi".into()];
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/tmp".into();
        p.NoNewPrivileges = true;
        p.OOMScoreAdj = 100;
        let mut u = pb::User::new();
        u.UID = 1000;
        u.GID = 1000;
        u.AdditionalGids = vec![10, 20];
        p.User = Some(u).into();
        let mut c = pb::LinuxCapabilities::new();
        c.Bounding = vec!["CAP_CHOWN".into(), "CAP_KILL".into()];
        c.Effective = vec!["CAP_KILL".into()];
        p.Capabilities = Some(c).into();
        let mut rl = pb::POSIXRlimit::new();
        rl.Type = "RLIMIT_NOFILE".into();
        rl.Hard = 1024;
        rl.Soft = 512;
        p.Rlimits = vec![rl];
        s.Process = Some(p).into();
        let mut root = pb::Root::new();
        root.Path = "/run/kata-containers/shared/containers/c1/rootfs".into();
        root.Readonly = true;
        s.Root = Some(root).into();
        let mut m = pb::Mount::new();
        m.destination = "/proc".into();
        m.source = "proc".into();
        m.type_ = "proc".into();
        s.Mounts = vec![m];
        let mut l = pb::Linux::new();
        let mut ns = pb::LinuxNamespace::new();
        ns.Type = "mount".into();
        l.Namespaces = vec![ns];
        let mut res = pb::LinuxResources::new();
        let mut mem = pb::LinuxMemory::new();
        mem.Limit = 64 << 20;
        res.Memory = Some(mem).into();
        let mut pids = pb::LinuxPids::new();
        pids.Limit = 32;
        res.Pids = Some(pids).into();
        let mut dev = pb::LinuxDeviceCgroup::new();
        dev.Allow = false;
        dev.Type = "a".into();
        dev.Access = "rwm".into();
        res.Devices = vec![dev];
        l.Resources = Some(res).into();
        l.MaskedPaths = vec!["/proc/kcore".into()];
        l.Sysctl.insert("net.ipv4.ip_forward".into(), "1".into());
        let mut sc = pb::LinuxSeccomp::new();
        sc.DefaultAction = "SCMP_ACT_ALLOW".into();
        sc.Architectures = vec!["SCMP_ARCH_X86_64".into()];
        let mut call = pb::LinuxSyscall::new();
        call.Names = vec!["mkdir".into()];
        call.Action = "SCMP_ACT_ERRNO".into();
        call.ErrnoRet = Some(pb::linux_syscall::ErrnoRet::Errnoret(1));
        sc.Syscalls = vec![call];
        l.Seccomp = Some(sc).into();
        s.Linux = Some(l).into();
        s
    }

    #[test]
    fn full_spec_converts() {
        let spec = spec_from_proto(&sample()).unwrap();
        assert_eq!(spec.version(), "1.1.0");
        assert_eq!(spec.hostname().as_deref(), Some("box"));
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap()[2], "echo hi");
        assert_eq!(p.cwd().to_str(), Some("/tmp"));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &vec![10, 20]);
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.oom_score_adj(), Some(100));
        assert_eq!(p.rlimits().as_ref().unwrap()[0].hard(), 1024);
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 2);
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.readonly(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 32);
        assert!(!res.devices().as_ref().unwrap()[0].allow());
        let sc = linux.seccomp().as_ref().unwrap();
        assert_eq!(sc.syscalls().as_ref().unwrap()[0].errno_ret(), Some(1));
        assert_eq!(linux.sysctl().as_ref().unwrap()["net.ipv4.ip_forward"], "1");
    }

    #[test]
    fn hook_paths_must_be_absolute_and_kernel_sized() {
        for (path, why) in [
            ("sh", "not an absolute path"),
            ("", "not an absolute path"),
            ("/bin/sh\0x", "NUL"),
            (&format!("/bin/{}", "n".repeat(256)), "a name too long"),
            (&"/d".repeat(2048), "too long"),
        ] {
            let mut s = sample();
            let mut h = pb::Hook::new();
            h.Path = path.to_string();
            let mut hooks = pb::Hooks::new();
            hooks.Poststop = vec![pb::Hook::new(), h];
            hooks.Poststop[0].Path = "/bin/true".into();
            s.Hooks = Some(hooks).into();
            let err = spec_from_proto(&s)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("hooks.poststop[1]") && err.contains(why),
                "{path:?}: {err}"
            );
        }
    }

    #[test]
    fn zero_means_absent() {
        let mut s = sample();
        let l = s.Linux.as_mut().unwrap();
        let r = l.Resources.as_mut().unwrap();
        r.Memory.as_mut().unwrap().Limit = 0;
        r.Pids.as_mut().unwrap().Limit = 0;
        let spec = spec_from_proto(&s).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert!(res.memory().is_none());
        assert!(res.pids().is_none());
    }

    #[test]
    fn bad_enum_values_are_errors_naming_them() {
        let mut s = sample();
        s.Linux.as_mut().unwrap().Namespaces[0].Type = "bogus".into();
        let e = spec_from_proto(&s).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");

        let mut s = sample();
        s.Process.as_mut().unwrap().Rlimits[0].Type = "RLIMIT_NOPE".into();
        let e = spec_from_proto(&s).unwrap_err().to_string();
        assert!(e.contains("RLIMIT_NOPE"), "{e}");
    }

    /// Upstream agent-ctl and runtime-rs print namespace types with
    /// `oci-spec`'s Display (`mnt`, `net`); the Go runtime uses the OCI
    /// names. Capabilities come as `CAP_CHOWN` or `CHOWN`.
    #[test]
    fn spellings_of_kata_clients_are_accepted() {
        use rustjail::oci_spec::runtime::{Capability, LinuxNamespaceType as T};
        let mut s = sample();
        let l = s.Linux.as_mut().unwrap();
        l.Namespaces.clear();
        for t in [
            "mnt", "mount", "net", "network", "pid", "ipc", "uts", "user", "cgroup", "time",
        ] {
            let mut ns = pb::LinuxNamespace::new();
            ns.Type = t.into();
            l.Namespaces.push(ns);
        }
        s.Process
            .as_mut()
            .unwrap()
            .Capabilities
            .as_mut()
            .unwrap()
            .Bounding = vec!["CHOWN".into(), "CAP_KILL".into()];
        let spec = spec_from_proto(&s).unwrap();
        let got: Vec<T> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(
            got,
            [
                T::Mount,
                T::Mount,
                T::Network,
                T::Network,
                T::Pid,
                T::Ipc,
                T::Uts,
                T::User,
                T::Cgroup,
                T::Time
            ]
        );
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert!(bounding.contains(&Capability::Chown) && bounding.contains(&Capability::Kill));
        // Each Display form of the Rust types converts back to the same value.
        for t in [T::Mount, T::Network, T::Pid, T::Time] {
            let mut s = sample();
            s.Linux.as_mut().unwrap().Namespaces[0].Type = t.to_string();
            let spec = spec_from_proto(&s).unwrap();
            assert_eq!(
                spec.linux()
                    .as_ref()
                    .unwrap()
                    .namespaces()
                    .as_ref()
                    .unwrap()[0]
                    .typ(),
                t
            );
        }
    }

    #[test]
    fn empty_spec_is_minimal() {
        let v = spec_json(&pb::Spec::new());
        assert_eq!(v, json!({"ociVersion": "1.0.2", "mounts": []}));
    }
}
