//! Container cgroups through `cgroups-rs`: creation with the spec's
//! `linux.resources`, membership, freeze/thaw, stats, update and removal.
//!
//! `cgroups-rs` detects the layout: one hierarchy per controller (v1) or the
//! unified hierarchy (v2) at `/sys/fs/cgroup`. Paths are relative to the
//! hierarchy roots, the same path under every v1 controller.
//!
//! A `cgroupsPath` in systemd form (`slice:prefix:name`, what the kubelet's
//! systemd cgroup driver, kubeadm's default, puts in every spec) is laid out
//! as systemd itself would lay it out, so that the containers of one pod
//! share the pod's slice directory. Parent directories this process created
//! for a container's cgroup are removed when their last child goes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cgroups_rs::fs::{hierarchies, Cgroup};
use cgroups_rs::manager::{FsManager, Manager};
use cgroups_rs::{CgroupPid, FreezerState};
use oci_spec::runtime::LinuxResources;

pub use cgroups_rs::CgroupStats;

/// Errors of cgroup operations, naming the cgroup path and the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cgroup {path}: invalid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("cgroup {path}: {op}: {cause}")]
    Op {
        path: String,
        op: &'static str,
        cause: String,
    },
    #[error("cgroup {path}: {op}: timed out after {ms} ms")]
    Timeout {
        path: String,
        op: &'static str,
        ms: u128,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The cgroup layout of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One hierarchy per controller (cgroup v1, possibly hybrid).
    V1,
    /// The unified hierarchy (cgroup v2).
    V2,
}

/// Layout of the cgroup filesystem mounted at `/sys/fs/cgroup`.
pub fn layout() -> Layout {
    if hierarchies::is_cgroup2_unified_mode() {
        Layout::V2
    } else {
        Layout::V1
    }
}

/// Layout from the filesystem type mounted at `<root>` in a mountinfo text;
/// `cgroups-rs` uses statfs, this form is testable against a fake tree.
pub fn layout_from_mountinfo(mountinfo: &str, root: &Path) -> Option<Layout> {
    let root = root.to_str()?;
    mountinfo.lines().rev().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mount_point = pre.split(' ').nth(4)?;
        if mount_point != root {
            return None;
        }
        match post.split(' ').next()? {
            "cgroup2" => Some(Layout::V2),
            "tmpfs" => Some(Layout::V1),
            _ => None,
        }
    })
}

/// Where cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Path of a control file under `root`: `<root>/<controller>/<path>/<name>`
/// on v1, `<root>/<path>/<name>` on v2 (the controller is then ignored).
pub fn control_file(
    root: &Path,
    layout: Layout,
    controller: Option<&str>,
    path: &str,
    name: &str,
) -> PathBuf {
    let mut p = root.to_path_buf();
    if layout == Layout::V1 {
        if let Some(c) = controller {
            p.push(c);
        }
    }
    p.push(path.trim_start_matches('/'));
    if !name.is_empty() {
        p.push(name);
    }
    p
}

/// Normalizes an OCI `cgroupsPath` to a path relative to the hierarchy
/// roots; a systemd-form path goes through [`systemd_path`].
pub fn normalize_path(path: &str) -> Result<String> {
    let invalid = |reason| Error::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.contains(':') {
        return systemd_path(path).map_err(invalid);
    }
    let mut out = PathBuf::new();
    for comp in Path::new(path).components() {
        match comp {
            std::path::Component::Normal(c) => out.push(c),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => return Err(invalid("'..' is not allowed")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(invalid("empty path"));
    }
    out.to_str()
        .map(str::to_string)
        .ok_or_else(|| invalid("not valid utf-8"))
}

/// The cgroupfs path systemd uses for the unit a systemd-form
/// `cgroupsPath` names (`slice:prefix:name`, runc's convention): the slice
/// expanded into its parents, then `<prefix>-<name>.scope` (or `name` as it
/// is when it is a slice). An empty slice means `system.slice`, `-` the
/// root slice.
///
/// `kubepods-besteffort-pod12.slice:cri-containerd:abc` becomes
/// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope`.
pub fn systemd_path(path: &str) -> std::result::Result<String, &'static str> {
    let mut parts = path.split(':');
    let (Some(slice), Some(prefix), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("systemd form must be slice:prefix:name");
    };
    let unit_ok = |s: &str| !s.contains('/') && s != "." && s != "..";
    if name.is_empty() || !unit_ok(name) || !unit_ok(prefix) {
        return Err("invalid unit name in systemd form");
    }
    let mut out = expand_slice(if slice.is_empty() {
        "system.slice"
    } else {
        slice
    })?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    if !out.is_empty() {
        out.push('/');
    }
    out.push_str(&unit);
    Ok(out)
}

/// systemd's slice nesting: `a-b-c.slice` lives in `a.slice/a-b.slice/`.
fn expand_slice(slice: &str) -> std::result::Result<String, &'static str> {
    if slice == "-" || slice == "-.slice" {
        return Ok(String::new());
    }
    let Some(base) = slice.strip_suffix(".slice") else {
        return Err("systemd slice must end in .slice");
    };
    if base.is_empty()
        || base.contains('/')
        || base.starts_with('-')
        || base.ends_with('-')
        || base.contains("--")
    {
        return Err("invalid systemd slice name");
    }
    let mut out = String::new();
    for (i, _) in base.match_indices('-') {
        out.push_str(&base[..i]);
        out.push_str(".slice/");
    }
    out.push_str(slice);
    Ok(out)
}

/// Parent directories this process created for containers' cgroups: for
/// each parent path, the directories (one a hierarchy) that did not exist
/// before. The lock also orders creating a child against removing a
/// parent, so that a parent is never removed under a child being created.
static CREATED_PARENTS: Mutex<BTreeMap<String, Vec<PathBuf>>> = Mutex::new(BTreeMap::new());

fn created_parents() -> MutexGuard<'static, BTreeMap<String, Vec<PathBuf>>> {
    CREATED_PARENTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The proper ancestors of a relative cgroup path, outermost first.
fn ancestors(path: &str) -> Vec<String> {
    path.match_indices('/')
        .map(|(i, _)| path[..i].to_string())
        .collect()
}

/// The roots of the mounted hierarchies: `/sys/fs/cgroup` on v2, each
/// controller's directory on v1 (links such as `cpu -> cpu,cpuacct` are
/// skipped: their target is listed too). Read once: the hierarchies are
/// mounted before the first container and stay.
fn hierarchy_roots() -> &'static [PathBuf] {
    static ROOTS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let root = Path::new(CGROUP_ROOT);
        if layout() == Layout::V2 {
            return vec![root.to_path_buf()];
        }
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    })
}

/// The parents of `path` that do not exist yet, with their directories.
fn missing_parents(path: &str) -> Vec<(String, Vec<PathBuf>)> {
    let roots = hierarchy_roots();
    ancestors(path)
        .into_iter()
        .filter_map(|parent| {
            let dirs: Vec<PathBuf> = roots
                .iter()
                .map(|r| r.join(&parent))
                .filter(|d| !d.exists())
                .collect();
            (!dirs.is_empty()).then_some((parent, dirs))
        })
        .collect()
}

/// Removes the parent directories of `path` this process created,
/// innermost first, while they have no child left.
fn release_parents(path: &str) {
    let mut created = created_parents();
    for parent in ancestors(path).into_iter().rev() {
        let Some(dirs) = created.get_mut(&parent) else {
            break;
        };
        dirs.retain(|d| match std::fs::remove_dir(d) {
            Ok(()) => false,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        });
        if !dirs.is_empty() {
            // Another child is still in it.
            break;
        }
        created.remove(&parent);
    }
}

/// One container's cgroup.
pub struct CgroupManager {
    path: String,
    fs: FsManager,
    /// The device program attached on cgroup v2 (see `devices`).
    device_filter: crate::devices::DeviceFilter,
}

impl std::fmt::Debug for CgroupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupManager")
            .field("path", &self.path)
            .finish()
    }
}

impl CgroupManager {
    /// Creates the cgroup at `path` (see [`normalize_path`]) and applies
    /// `resources`. On error nothing is left behind.
    pub fn create(path: &str, resources: Option<&LinuxResources>) -> Result<Self> {
        let path = normalize_path(path)?;
        let err = |op: &'static str| {
            let path = path.clone();
            move |e: cgroups_rs::manager::Error| Error::Op {
                path,
                op,
                cause: e.to_string(),
            }
        };
        // Held until the cgroup exists: see CREATED_PARENTS.
        let mut created = created_parents();
        let new_parents = missing_parents(&path);
        let cg = Cgroup::load(hierarchies::auto(), &path);
        if cg.exists() {
            // Another container's, or a leftover: never adopt (or later
            // remove) a cgroup we did not create.
            return Err(Error::Op {
                path,
                op: "create",
                cause: "already exists".into(),
            });
        }
        let made = cg.create();
        for (parent, dirs) in new_parents {
            created.entry(parent).or_default().extend(dirs);
        }
        drop(created);
        if let Err(e) = made {
            let _ = cg.delete();
            release_parents(&path);
            return Err(Error::Op {
                path,
                op: "create",
                cause: e.to_string(),
            });
        }
        let fs = match FsManager::new(&path) {
            Ok(fs) => fs,
            Err(e) => {
                let _ = cg.delete();
                release_parents(&path);
                return Err(err("load")(e));
            }
        };
        let mut mgr = CgroupManager {
            path,
            fs,
            device_filter: Default::default(),
        };
        if let Some(res) = resources {
            if let Err(e) = mgr.fs.set(res) {
                let _ = mgr.fs.destroy();
                release_parents(&mgr.path);
                return Err(Error::Op {
                    path: mgr.path,
                    op: "apply resources",
                    cause: e.to_string(),
                });
            }
        }
        Ok(mgr)
    }

    /// The cgroup path, relative to the hierarchy roots.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this is the unified (v2) hierarchy.
    pub fn is_v2(&self) -> bool {
        self.fs.v2()
    }

    fn op_err(&self, op: &'static str) -> impl Fn(cgroups_rs::manager::Error) -> Error + '_ {
        move |e| Error::Op {
            path: self.path.clone(),
            op,
            cause: e.to_string(),
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_process(&mut self, pid: i32) -> Result<()> {
        let path = self.path.clone();
        self.fs
            .add_proc(CgroupPid::from(pid as u64))
            .map_err(|e| Error::Op {
                path,
                op: "add process",
                cause: e.to_string(),
            })
    }

    /// Task ids in the cgroup (threads on v1, processes on v2).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let pids = self.fs.pids().map_err(self.op_err("list processes"))?;
        Ok(pids.into_iter().map(|p| p.pid as i32).collect())
    }

    /// Freezes every process and waits until the kernel reports it frozen.
    pub fn freeze(&self) -> Result<()> {
        self.fs
            .freeze(FreezerState::Frozen)
            .map_err(self.op_err("freeze"))?;
        self.wait_freezer("FROZEN", "1")
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<()> {
        self.fs
            .freeze(FreezerState::Thawed)
            .map_err(self.op_err("thaw"))
    }

    fn wait_freezer(&self, v1: &str, v2: &str) -> Result<()> {
        let (file, want) = if self.is_v2() {
            (self.file(None, "cgroup.events"), format!("frozen {v2}"))
        } else {
            (self.file(Some("freezer"), "freezer.state"), v1.to_string())
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::read_to_string(&file) {
                Ok(s) if s.lines().any(|l| l.trim() == want) => return Ok(()),
                Ok(_) => {}
                // No freezer file to watch: trust the write.
                Err(_) => return Ok(()),
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    path: self.path.clone(),
                    op: "freeze",
                    ms: 5000,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Path of a control file: `/sys/fs/cgroup/<controller>/<path>/<name>`
    /// on v1, `/sys/fs/cgroup/<path>/<name>` on v2.
    pub fn file(&self, controller: Option<&str>, name: &str) -> PathBuf {
        let layout = if self.is_v2() { Layout::V2 } else { Layout::V1 };
        control_file(Path::new(CGROUP_ROOT), layout, controller, &self.path, name)
    }

    /// Applies new resource limits.
    pub fn update(&mut self, resources: &LinuxResources) -> Result<()> {
        let path = self.path.clone();
        self.fs.set(resources).map_err(|e| Error::Op {
            path,
            op: "update resources",
            cause: e.to_string(),
        })
    }

    /// Replaces the device rules: v1's `devices.deny`/`devices.allow`
    /// files, or v2's device program. `rules` are in order, later ones
    /// overriding earlier ones; a missing major or minor means any.
    pub fn set_device_rules(
        &mut self,
        rules: &[oci_spec::runtime::LinuxDeviceCgroup],
    ) -> Result<()> {
        if self.is_v2() {
            let dir = self.file(None, "");
            return self
                .device_filter
                .replace(&dir, rules)
                .map_err(|e| Error::Op {
                    path: self.path.clone(),
                    op: "attach device program",
                    cause: e.to_string(),
                });
        }
        let mut filled = rules.to_vec();
        for r in &mut filled {
            if r.major().is_none() {
                r.set_major(Some(-1));
            }
            if r.minor().is_none() {
                r.set_minor(Some(-1));
            }
        }
        let mut only = LinuxResources::default();
        only.set_devices(Some(filled));
        let path = self.path.clone();
        self.fs.set(&only).map_err(|e| Error::Op {
            path,
            op: "apply device rules",
            cause: e.to_string(),
        })
    }

    /// Current usage figures.
    pub fn stats(&self) -> CgroupStats {
        self.fs.stats()
    }

    /// Removes the cgroup; it must hold no process. Waits up to `timeout`
    /// for exiting processes to leave.
    pub fn destroy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now().checked_add(timeout);
        while !self.pids().unwrap_or_default().is_empty() {
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(Error::Timeout {
                    path: self.path.clone(),
                    op: "wait for processes to exit",
                    ms: timeout.as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let path = self.path.clone();
        self.fs.destroy().map_err(|e| Error::Op {
            path,
            op: "remove",
            cause: e.to_string(),
        })?;
        release_parents(&self.path);
        Ok(())
    }

    /// Whether the cgroup directory still exists.
    pub fn exists(&self) -> bool {
        self.fs.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        assert_eq!(normalize_path("/a/b").unwrap(), "a/b");
        assert_eq!(normalize_path("a/./b/").unwrap(), "a/b");
        assert!(normalize_path("/a/../b").is_err());
        assert!(normalize_path("/").is_err());
        assert_eq!(
            normalize_path("system.slice:kata:abc").unwrap(),
            "system.slice/kata-abc.scope"
        );
    }

    #[test]
    fn systemd_form_as_systemd_lays_it_out() {
        for (form, want) in [
            (
                "kubepods-besteffort-pod1b2c.slice:cri-containerd:0123abc",
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c.slice/cri-containerd-0123abc.scope",
            ),
            (
                "kubepods-pod9.slice:cri-containerd:ctr",
                "kubepods.slice/kubepods-pod9.slice/cri-containerd-ctr.scope",
            ),
            (":docker:abc", "system.slice/docker-abc.scope"),
            ("-:crio:abc", "crio-abc.scope"),
            ("machine.slice::vm1", "machine.slice/vm1.scope"),
            (
                "kubepods.slice:ignored:kubepods-burstable.slice",
                "kubepods.slice/kubepods-burstable.slice",
            ),
        ] {
            assert_eq!(systemd_path(form).as_deref(), Ok(want), "{form}");
        }
        for bad in [
            "a.slice:b",
            "a.slice:b:c:d",
            "a.slice:p:",
            "nota-slice:p:n",
            "a--b.slice:p:n",
            "-a.slice:p:n",
            "a/b.slice:p:n",
            "a.slice:p:../n",
            "a.slice:p:..",
        ] {
            let e = normalize_path(bad).unwrap_err();
            assert!(e.to_string().starts_with(&format!("cgroup {bad}: ")), "{e}");
        }
    }

    #[test]
    fn ancestors_outermost_first() {
        assert_eq!(ancestors("a/b/c"), vec!["a".to_string(), "a/b".to_string()]);
        assert!(ancestors("a").is_empty());
    }

    #[test]
    fn control_files_per_layout() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            control_file(
                root,
                Layout::V1,
                Some("memory"),
                "a/b",
                "memory.limit_in_bytes"
            ),
            Path::new("/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes")
        );
        assert_eq!(
            control_file(root, Layout::V2, Some("memory"), "/a/b", "memory.max"),
            Path::new("/sys/fs/cgroup/a/b/memory.max")
        );
        assert_eq!(
            control_file(root, Layout::V2, None, "a", ""),
            Path::new("/sys/fs/cgroup/a")
        );
    }

    /// The v2 freezer and OOM paths read these files; check them against a
    /// fake unified tree.
    #[test]
    fn v2_fake_tree_files() {
        let dir = tempfile::tempdir().unwrap();
        let cg = control_file(dir.path(), Layout::V2, None, "pod/ctr", "");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        let events = std::fs::read_to_string(control_file(
            dir.path(),
            Layout::V2,
            Some("freezer"),
            "pod/ctr",
            "cgroup.events",
        ))
        .unwrap();
        assert!(events.lines().any(|l| l.trim() == "frozen 1"));
        let mountinfo = format!(
            "31 23 0:28 / {} rw,relatime - cgroup2 cgroup2 rw\n",
            dir.path().display()
        );
        assert_eq!(
            layout_from_mountinfo(&mountinfo, dir.path()),
            Some(Layout::V2)
        );
    }

    #[test]
    fn layout_detection() {
        let v1 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        let v2 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n";
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(layout_from_mountinfo(v1, root), Some(Layout::V1));
        assert_eq!(layout_from_mountinfo(v2, root), Some(Layout::V2));
        assert_eq!(layout_from_mountinfo("", root), None);
    }
}
