//! Hot-added CPUs and memory (OnlineCPUMem): the shim plugs vCPUs or
//! memory into the VM, then asks the agent to bring them online.
//!
//! CPUs show up in sysfs a little after the hypervisor adds them (the ACPI
//! event is handled asynchronously), so onlining retries until as many as
//! the shim announced are online or the hot-plug timeout passes. Cgroup v1
//! cpusets do not grow with the machine: a container whose cpuset held
//! every CPU before is widened to the new set, parents first, as upstream
//! Kata does; one the spec restricted is left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where CPUs and memory blocks are in sysfs.
pub const SYS_CPU: &str = "/sys/devices/system/cpu";
pub const SYS_MEMORY: &str = "/sys/devices/system/memory";

/// How often onlining looks again for CPUs still being added.
const RETRY: Duration = Duration::from_millis(50);

/// Why onlining failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("online cpus: {0}")]
    Cpus(std::io::Error),
    #[error("online cpus: {onlined} of the {wanted} expected came online within {waited:?} ({online} online now)")]
    CpusMissing {
        onlined: usize,
        wanted: usize,
        waited: Duration,
        online: usize,
    },
    #[error("online memory: {0}")]
    Memory(std::io::Error),
}

impl Error {
    /// The kernel refusing or a CPU that did not come is ours to report.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            Error::CpusMissing { .. } => ttrpc::Code::DEADLINE_EXCEEDED,
            _ => ttrpc::Code::INTERNAL,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// Writes "1" to every `online` file under `dir` whose entry name is
/// `prefix` and a number and that reads "0". Returns how many it onlined.
pub fn online_all(dir: &Path, prefix: &str) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let online = entry.path().join("online");
        match std::fs::read_to_string(&online) {
            Ok(v) if v.trim() == "0" => {
                std::fs::write(&online, "1")?;
                n += 1;
            }
            _ => {}
        }
    }
    Ok(n)
}

/// The CPU list in `<sys_cpu>/online` (`0-3,5`), as the kernel writes it.
pub fn online_list(sys_cpu: &Path) -> String {
    std::fs::read_to_string(sys_cpu.join("online"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// How many CPUs a list such as `0-3,5` names.
pub fn list_len(list: &str) -> usize {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                b.saturating_sub(a) + 1
            }
            None => 1,
        })
        .sum()
}

/// Onlines CPUs until the `wanted` hot-added ones are online (onlined
/// here, or by the hypervisor meanwhile), retrying for up to `timeout`
/// while they appear in sysfs. `wanted == 0` onlines what is there, once.
/// A hypervisor that onlined them before the call is seen only at the
/// timeout: then `wanted` CPUs online in all is taken as done, as upstream
/// takes it at once (which returns before a CPU still being added is there).
pub fn online_cpus(sys_cpu: &Path, wanted: usize, timeout: Duration) -> Result<usize, Error> {
    let start = Instant::now();
    let online_before = list_len(&online_list(sys_cpu));
    let mut onlined = 0;
    loop {
        onlined += online_all(sys_cpu, "cpu").map_err(Error::Cpus)?;
        let online = list_len(&online_list(sys_cpu));
        if onlined >= wanted || online >= online_before.saturating_add(wanted) {
            return Ok(onlined);
        }
        if start.elapsed() >= timeout {
            if online >= wanted {
                log::warn!("online cpus: {wanted} expected, {onlined} onlined here, {online} online in all: taking them as onlined before");
                return Ok(onlined);
            }
            return Err(Error::CpusMissing {
                onlined,
                wanted,
                waited: timeout,
                online,
            });
        }
        std::thread::sleep(RETRY);
    }
}

/// Onlines the memory blocks that are offline; a guest without memory
/// hot-plug has no blocks, which is no error.
pub fn online_memory(sys_memory: &Path) -> Result<usize, Error> {
    match online_all(sys_memory, "memory") {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::Memory(e)),
    }
}

/// The `cpuset.cpus` files of a container's cgroup `path` and its parents,
/// outermost first: under `<root>/cpuset/` on v1, `<root>/` on v2.
fn cpuset_files(root: &Path, v2: bool, path: &str) -> Vec<PathBuf> {
    let base = if v2 {
        root.to_path_buf()
    } else {
        root.join("cpuset")
    };
    let mut out = Vec::new();
    let mut dir = base;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        out.push(dir.join("cpuset.cpus"));
    }
    out
}

/// Widens the cpusets of the cgroups `paths` (and their parents) that held
/// exactly `before` to `after`. Returns how many files it changed.
pub fn widen_cpusets(root: &Path, v2: bool, paths: &[String], before: &str, after: &str) -> usize {
    if before == after || after.is_empty() {
        return 0;
    }
    let mut changed = 0;
    for path in paths {
        for file in cpuset_files(root, v2, path) {
            let Ok(now) = std::fs::read_to_string(&file) else {
                // No cpuset here (v2 without the controller): it inherits.
                continue;
            };
            if now.trim() == before {
                match std::fs::write(&file, after) {
                    Ok(()) => changed += 1,
                    Err(e) => log::warn!("{}: widen to {after}: {e}", file.display()),
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(dir: &Path, n: usize, online: &str) {
        let d = dir.join(format!("cpu{n}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("online"), online).unwrap();
    }

    #[test]
    fn lists() {
        assert_eq!(list_len("0-3,5"), 5);
        assert_eq!(list_len("0"), 1);
        assert_eq!(list_len(""), 0);
    }

    #[test]
    fn waits_for_cpus_that_appear_late() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().to_path_buf();
        std::fs::write(sys.join("online"), "0").unwrap();
        cpu(&sys, 1, "0");
        // A second hot-added CPU shows up only later.
        let late = sys.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            cpu(&late, 2, "0");
        });
        let n = online_cpus(&sys, 2, Duration::from_secs(10)).unwrap();
        t.join().unwrap();
        assert_eq!(n, 2);
        for c in [1, 2] {
            let v = std::fs::read_to_string(sys.join(format!("cpu{c}/online"))).unwrap();
            assert_eq!(v, "1");
        }
    }

    /// Two CPUs online, one hot-added that sysfs shows only later: the
    /// call waits for it rather than counting the two.
    #[test]
    fn the_added_cpu_is_waited_for_not_the_ones_online() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().to_path_buf();
        std::fs::write(sys.join("online"), "0-1").unwrap();
        cpu(&sys, 1, "1");
        let late = sys.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            cpu(&late, 2, "0");
        });
        assert_eq!(online_cpus(&sys, 1, Duration::from_secs(30)).unwrap(), 1);
        t.join().unwrap();
        assert_eq!(
            std::fs::read_to_string(sys.join("cpu2/online")).unwrap(),
            "1"
        );
    }

    #[test]
    fn a_cpu_that_never_comes_is_an_error_naming_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::write(sys.join("online"), "0").unwrap();
        cpu(sys, 1, "0");
        let e = online_cpus(sys, 3, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("1 of the 3 expected"), "{e}");
        assert_eq!(e.code(), ttrpc::Code::DEADLINE_EXCEEDED);
        // Without a count: what is there, at once.
        cpu(sys, 2, "0");
        assert_eq!(online_cpus(sys, 0, Duration::ZERO).unwrap(), 1);
    }

    #[test]
    fn unrestricted_cpusets_grow_restricted_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let set = |p: &str, v: &str| {
            let d = root.join("cpuset").join(p);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cpuset.cpus"), v).unwrap();
        };
        set("pod", "0-1");
        set("pod/a", "0-1");
        set("pinned", "0-1");
        // The spec gave this one CPU 1 only.
        set("pinned/c", "1");
        let paths = ["pod/a".to_string(), "pinned/c".to_string()];
        let n = widen_cpusets(root, false, &paths, "0-1", "0-3");
        let read = |p: &str| {
            std::fs::read_to_string(root.join("cpuset").join(p).join("cpuset.cpus")).unwrap()
        };
        assert_eq!(read("pod"), "0-3");
        assert_eq!(read("pod/a"), "0-3");
        assert_eq!(read("pinned"), "0-3");
        assert_eq!(read("pinned/c"), "1");
        assert_eq!(n, 3);
        // Nothing changes when the set did not.
        assert_eq!(widen_cpusets(root, false, &paths, "0-3", "0-3"), 0);
    }

    #[test]
    fn online_all_only_touches_offline_numbered_entries() {
        let dir = tempfile::tempdir().unwrap();
        for (name, state) in [
            ("cpu0", "1"),
            ("cpu1", "0"),
            ("cpufreq", "0"),
            ("cpu2", "0"),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("online"), state).unwrap();
        }
        assert_eq!(online_all(dir.path(), "cpu").unwrap(), 2);
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n).join("online")).unwrap();
        assert_eq!(read("cpu1"), "1");
        assert_eq!(read("cpu2"), "1");
        assert_eq!(read("cpufreq"), "0");
    }
}
