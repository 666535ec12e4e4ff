//! Cgroup hierarchies at `/sys/fs/cgroup`: the unified (v2) hierarchy, or a
//! tmpfs holding one v1 hierarchy per enabled controller.
//!
//! Controllers that systemd and runc expect to share a hierarchy (`cpu` with
//! `cpuacct`, `net_cls` with `net_prio`) are mounted together at
//! `cpu,cpuacct` with a symlink for each name, as on any distribution.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::mounts::mount_once;
use super::InitError;

/// Where the hierarchies go.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Controllers mounted together when the kernel offers all of them.
const COMBINED: &[&[&str]] = &[&["cpu", "cpuacct"], &["net_cls", "net_prio"]];

const FLAGS: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Which cgroup layout the kernel command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// cgroup v2 only.
    Unified,
    /// One v1 hierarchy per controller, except those `cgroup_no_v1=` names.
    Legacy { disabled: Vec<String> },
}

impl Mode {
    /// Reads `cgroup_no_v1=` and `systemd.unified_cgroup_hierarchy` (or
    /// `agent.unified_cgroup_hierarchy`) from the kernel command line; the
    /// parameters after `--` belong to init and are not looked at.
    /// `force_unified` (from the agent's own configuration) wins.
    pub fn from_cmdline(cmdline: &str, force_unified: bool) -> Mode {
        let mut no_v1_all = false;
        let mut systemd_unified = false;
        let mut disabled = Vec::new();
        for token in cmdline.split_ascii_whitespace() {
            if token == "--" {
                break;
            }
            let (name, value) = match token.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (token, None),
            };
            match name {
                "cgroup_no_v1" => {
                    for c in value.unwrap_or("").split(',').filter(|c| !c.is_empty()) {
                        if c == "all" {
                            no_v1_all = true;
                        } else {
                            disabled.push(c.to_string());
                        }
                    }
                }
                "systemd.unified_cgroup_hierarchy" | "agent.unified_cgroup_hierarchy" => {
                    systemd_unified = match value {
                        None => true,
                        Some(v) => matches!(v, "1" | "y" | "yes" | "true" | "on"),
                    };
                }
                _ => {}
            }
        }
        if force_unified || no_v1_all || systemd_unified {
            Mode::Unified
        } else {
            Mode::Legacy { disabled }
        }
    }
}

/// One v1 hierarchy: its directory name under [`CGROUP_ROOT`], the
/// controllers mounted there, and the symlinks that point to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub controllers: Vec<String>,
    pub links: Vec<String>,
}

/// The enabled controllers listed in `/proc/cgroups`, in the kernel's order.
pub fn parse_proc_cgroups(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            match fields.as_slice() {
                [name, _hierarchy, _count, enabled, ..] if *enabled == "1" => {
                    Some(name.to_string())
                }
                _ => None,
            }
        })
        .collect()
}

/// Groups `controllers` into v1 hierarchies, leaving out `disabled` ones.
pub fn v1_groups(controllers: &[String], disabled: &[String]) -> Vec<Group> {
    let wanted: Vec<&String> = controllers
        .iter()
        .filter(|c| !disabled.contains(c))
        .collect();
    let mut groups = Vec::new();
    let mut taken: Vec<&str> = Vec::new();
    for c in &wanted {
        if taken.contains(&c.as_str()) {
            continue;
        }
        let combined = COMBINED.iter().find(|set| {
            set.contains(&c.as_str()) && set.iter().all(|m| wanted.iter().any(|w| w == m))
        });
        match combined {
            Some(set) => {
                taken.extend(set.iter().copied());
                groups.push(Group {
                    name: set.join(","),
                    controllers: set.iter().map(|s| s.to_string()).collect(),
                    links: set.iter().map(|s| s.to_string()).collect(),
                });
            }
            None => {
                taken.push(c);
                groups.push(Group {
                    name: c.to_string(),
                    controllers: vec![c.to_string()],
                    links: Vec::new(),
                });
            }
        }
    }
    groups
}

/// Mounts the hierarchies `mode` asks for; returns the problems met (a
/// controller that would not mount does not stop the others).
pub fn mount(mode: &Mode) -> Vec<InitError> {
    let root = Path::new(CGROUP_ROOT);
    match mode {
        Mode::Unified => mount_v2(root),
        Mode::Legacy { disabled } => mount_v1(root, disabled),
    }
}

fn mount_v2(root: &Path) -> Vec<InitError> {
    if let Err(e) = mount_once("cgroup2", root, "cgroup2", FLAGS, "") {
        return vec![e];
    }
    // Delegate every controller to child cgroups so that container limits
    // (memory.max, pids.max, ...) can be set. One write per controller, so
    // one the kernel refuses does not hold back the rest.
    let mut errors = Vec::new();
    let controllers_path = root.join("cgroup.controllers");
    let controllers = match std::fs::read_to_string(&controllers_path) {
        Ok(s) => s,
        Err(source) => {
            errors.push(InitError::Read {
                path: controllers_path,
                source,
            });
            return errors;
        }
    };
    let control = root.join("cgroup.subtree_control");
    for c in controllers.split_whitespace() {
        if let Err(source) = std::fs::write(&control, format!("+{c}")) {
            errors.push(InitError::Write {
                path: PathBuf::from(format!("{} (+{c})", control.display())),
                source,
            });
        }
    }
    errors
}

fn mount_v1(root: &Path, disabled: &[String]) -> Vec<InitError> {
    let proc_cgroups = Path::new("/proc/cgroups");
    let text = match std::fs::read_to_string(proc_cgroups) {
        Ok(t) => t,
        Err(source) => {
            return vec![InitError::Read {
                path: proc_cgroups.to_path_buf(),
                source,
            }]
        }
    };
    if let Err(e) = mount_once("tmpfs", root, "tmpfs", FLAGS, "mode=0755") {
        return vec![e];
    }
    let mut errors = Vec::new();
    for g in v1_groups(&parse_proc_cgroups(&text), disabled) {
        let dir = root.join(&g.name);
        if let Err(e) = mount_once("cgroup", &dir, "cgroup", FLAGS, &g.controllers.join(",")) {
            errors.push(e);
            continue;
        }
        for link in &g.links {
            let path = root.join(link);
            match std::os::unix::fs::symlink(&g.name, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => errors.push(InitError::Create { path, source }),
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
        cpuset\t0\t1\t1\ncpu\t0\t1\t1\ncpuacct\t0\t1\t1\nblkio\t0\t1\t1\n\
        memory\t0\t1\t1\ndevices\t0\t1\t1\nfreezer\t0\t1\t1\nnet_cls\t0\t1\t1\n\
        perf_event\t0\t1\t1\nnet_prio\t0\t1\t1\nhugetlb\t0\t1\t0\npids\t0\t1\t1\n\
        rdma\t0\t1\t1\nmisc\t0\t1\t1\n";

    fn names(groups: &[Group]) -> Vec<&str> {
        groups.iter().map(|g| g.name.as_str()).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_enabled_controllers_in_order() {
        let c = parse_proc_cgroups(PROC_CGROUPS);
        assert_eq!(c.first().map(String::as_str), Some("cpuset"));
        assert!(c.contains(&"memory".to_string()));
        assert!(!c.contains(&"hugetlb".to_string()), "disabled one kept");
        assert!(!c.iter().any(|n| n.starts_with('#')));
        assert_eq!(c.len(), 13);
    }

    #[test]
    fn parse_ignores_short_and_empty_lines() {
        assert_eq!(
            parse_proc_cgroups("\n\nfoo 1\nbar 0 1 1\n"),
            strings(&["bar"])
        );
    }

    #[test]
    fn combines_cpu_cpuacct_and_net_cls_net_prio() {
        let groups = v1_groups(&parse_proc_cgroups(PROC_CGROUPS), &[]);
        assert_eq!(
            names(&groups),
            [
                "cpuset",
                "cpu,cpuacct",
                "blkio",
                "memory",
                "devices",
                "freezer",
                "net_cls,net_prio",
                "perf_event",
                "pids",
                "rdma",
                "misc"
            ]
        );
        let cpu = &groups[1];
        assert_eq!(cpu.controllers, strings(&["cpu", "cpuacct"]));
        assert_eq!(cpu.links, strings(&["cpu", "cpuacct"]));
        assert!(groups[0].links.is_empty());
    }

    #[test]
    fn lone_member_of_a_pair_gets_its_own_hierarchy() {
        let groups = v1_groups(
            &strings(&["cpu", "cpuacct", "memory"]),
            &strings(&["cpuacct"]),
        );
        assert_eq!(names(&groups), ["cpu", "memory"]);
        assert!(groups[0].links.is_empty());
        let groups = v1_groups(&strings(&["net_prio", "pids"]), &[]);
        assert_eq!(names(&groups), ["net_prio", "pids"]);
    }

    #[test]
    fn disabled_controllers_are_left_out() {
        let groups = v1_groups(
            &parse_proc_cgroups(PROC_CGROUPS),
            &strings(&["memory", "pids"]),
        );
        assert!(!names(&groups).contains(&"memory"));
        assert!(!names(&groups).contains(&"pids"));
    }

    #[test]
    fn mode_from_cmdline() {
        assert_eq!(
            Mode::from_cmdline("console=ttyS0 quiet", false),
            Mode::Legacy { disabled: vec![] }
        );
        assert_eq!(Mode::from_cmdline("console=ttyS0", true), Mode::Unified);
        assert_eq!(Mode::from_cmdline("cgroup_no_v1=all", false), Mode::Unified);
        assert_eq!(
            Mode::from_cmdline("cgroup_no_v1=memory,pids", false),
            Mode::Legacy {
                disabled: strings(&["memory", "pids"])
            }
        );
        assert_eq!(
            Mode::from_cmdline("systemd.unified_cgroup_hierarchy=1", false),
            Mode::Unified
        );
        assert_eq!(
            Mode::from_cmdline("systemd.unified_cgroup_hierarchy", false),
            Mode::Unified
        );
        assert_eq!(
            Mode::from_cmdline("systemd.unified_cgroup_hierarchy=0", false),
            Mode::Legacy { disabled: vec![] }
        );
        assert_eq!(
            Mode::from_cmdline("systemd.unified_cgroup_hierarchy=0", true),
            Mode::Unified
        );
        assert_eq!(
            Mode::from_cmdline("cgroup_no_v1=all systemd.unified_cgroup_hierarchy=0", false),
            Mode::Unified
        );
        assert_eq!(
            Mode::from_cmdline("quiet -- cgroup_no_v1=all", false),
            Mode::Legacy { disabled: vec![] }
        );
    }
}
