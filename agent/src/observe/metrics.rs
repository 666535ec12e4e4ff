//! GetMetrics' text: the agent process and the guest in the Prometheus text
//! format, with upstream Kata's metric families and labels
//! (`kata_agent_*`, `kata_guest_*`, as kata-monitor and the dashboards
//! built on it read them), plus a few of our own (`kata_agent_containers`,
//! `kata_agent_open_fds`).
//!
//! Everything is read from `/proc` at scrape time; nothing is kept but the
//! scrape count. Values are in the unit of the `/proc` file they come from
//! (kB in `status`, clock ticks in `stat`), except `kata_guest_meminfo` and
//! the `*_bytes` families, which are bytes, as upstream's are.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one scrape reads; split from the reading so tests can feed text.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub status: String,
    pub stat: String,
    pub io: String,
    pub limits: String,
    pub fds: usize,
    pub meminfo: String,
    pub loadavg: String,
    pub cpu_stat: String,
    pub vmstat: String,
    pub netdev: String,
    pub diskstats: String,
    /// Seconds since the epoch at boot (`btime` of /proc/stat).
    pub boot_time: u64,
    pub containers: usize,
}

/// Clock ticks a second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS: f64 = 100.0;

static SCRAPES: AtomicU64 = AtomicU64::new(0);

impl Sources {
    /// Reads the agent's and the guest's files (blocking).
    pub fn read(containers: usize) -> Sources {
        let f = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_stat = f("/proc/stat");
        let boot_time = cpu_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Sources {
            status: f("/proc/self/status"),
            stat: f("/proc/self/stat"),
            io: f("/proc/self/io"),
            limits: f("/proc/self/limits"),
            fds: std::fs::read_dir("/proc/self/fd")
                .map(|d| d.count())
                .unwrap_or(0),
            meminfo: f("/proc/meminfo"),
            loadavg: f("/proc/loadavg"),
            cpu_stat,
            vmstat: f("/proc/vmstat"),
            netdev: f("/proc/net/dev"),
            diskstats: f("/proc/diskstats"),
            boot_time,
            containers,
        }
    }
}

/// Writes one family: HELP, TYPE, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn one(v: f64) -> Vec<(String, f64)> {
    vec![(String::new(), v)]
}

fn label(k: &str, v: &str) -> String {
    let escaped = v
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{k}=\"{escaped}\"")
}

/// `Name:  value [kB]` lines as (name, value, in kB).
fn kv(text: &str) -> Vec<(&str, u64, bool)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut words = v.split_whitespace();
            let n = words.next()?.parse().ok()?;
            Some((k.trim(), n, words.next() == Some("kB")))
        })
        .collect()
}

/// The fields of /proc/<pid>/stat after the command name.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// upstream's item names for /proc/<pid>/status fields.
const STATUS_ITEMS: &[(&str, &str)] = &[
    ("HugetlbPages", "hugetlbpages"),
    ("nonvoluntary_ctxt_switches", "nonvoluntary_ctxt_switches"),
    ("RssAnon", "rssanon"),
    ("RssFile", "rssfile"),
    ("RssShmem", "rssshmem"),
    ("VmData", "vmdata"),
    ("VmExe", "vmexe"),
    ("VmHWM", "vmhwm"),
    ("VmLck", "vmlck"),
    ("VmLib", "vmlib"),
    ("VmPeak", "vmpeak"),
    ("VmPin", "vmpin"),
    ("VmPTE", "vmpte"),
    ("VmRSS", "vmrss"),
    ("VmSize", "vmsize"),
    ("VmStk", "vmstk"),
    ("VmSwap", "vmswap"),
    ("voluntary_ctxt_switches", "voluntary_ctxt_switches"),
];

/// A /proc/meminfo field's item name, as upstream (the procfs crate's
/// field names): `MemTotal` -> `mem_total`, `Active(anon)` ->
/// `active_anon`, `DirectMap2M` -> `direct_map_2M`.
pub fn meminfo_item(field: &str) -> String {
    let special = [
        ("HugePages_Total", "hugepages_total"),
        ("HugePages_Free", "hugepages_free"),
        ("HugePages_Rsvd", "hugepages_rsvd"),
        ("HugePages_Surp", "hugepages_surp"),
        ("Hugepagesize", "hugepagesize"),
        ("Hugetlb", "hugetlb"),
        ("AnonHugePages", "anon_hugepages"),
        ("ShmemHugePages", "shmem_hugepages"),
        ("ShmemPmdMapped", "shmem_pmd_mapped"),
        ("FileHugePages", "file_hugepages"),
        ("FilePmdMapped", "file_pmd_mapped"),
        ("NFS_Unstable", "nfs_unstable"),
        ("Committed_AS", "committed_as"),
        ("Percpu", "per_cpu"),
        ("KReclaimable", "k_reclaimable"),
        ("SReclaimable", "s_reclaimable"),
        ("SUnreclaim", "s_unreclaim"),
        ("DirectMap4k", "direct_map_4k"),
        ("DirectMap4M", "direct_map_4M"),
        ("DirectMap2M", "direct_map_2M"),
        ("DirectMap1G", "direct_map_1G"),
    ];
    if let Some((_, item)) = special.iter().find(|(f, _)| *f == field) {
        return (*item).to_string();
    }
    let mut out = String::new();
    let mut prev_lower = false;
    for c in field.chars() {
        match c {
            '(' => {
                out.push('_');
                prev_lower = false;
            }
            ')' => {}
            c if c.is_ascii_uppercase() => {
                if prev_lower {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
                prev_lower = false;
            }
            c => {
                out.push(c);
                prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            }
        }
    }
    out
}

fn agent_families(out: &mut String, s: &Sources) {
    let status = kv(&s.status);
    let field = |k: &str| status.iter().find(|(n, _, _)| *n == k).map(|(_, v, _)| *v);
    let stat = stat_fields(&s.stat);
    // After ")": state is field 3 of stat(5), so field n is stat[n - 3].
    let num = |n: usize| -> f64 { stat.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    let (utime, stime, cutime, cstime) = (num(14), num(15), num(16), num(17));
    let scrapes = SCRAPES.fetch_add(1, Ordering::Relaxed) + 1;
    family(
        out,
        "kata_agent_scrape_count",
        "counter",
        "Metrics scrape count",
        &one(scrapes as f64),
    );
    let threads = field("Threads").unwrap_or(0) as f64;
    family(
        out,
        "kata_agent_threads",
        "gauge",
        "Agent process threads",
        &one(threads),
    );
    let total_time = (utime + stime) / TICKS;
    family(
        out,
        "kata_agent_total_time",
        "gauge",
        "Agent process total time",
        &one(total_time),
    );
    let vm = field("VmSize").unwrap_or(0).saturating_mul(1024) as f64;
    let rss = field("VmRSS").unwrap_or(0).saturating_mul(1024) as f64;
    family(
        out,
        "kata_agent_total_vm",
        "gauge",
        "Agent process total VM size",
        &one(vm),
    );
    family(
        out,
        "kata_agent_total_rss",
        "gauge",
        "Agent process total RSS size",
        &one(rss),
    );
    let items: Vec<(String, f64)> = STATUS_ITEMS
        .iter()
        .filter_map(|(f, item)| Some((label("item", item), field(f)? as f64)))
        .collect();
    family(
        out,
        "kata_agent_proc_status",
        "gauge",
        "Agent process status.",
        &items,
    );
    let io: Vec<(String, f64)> = kv(&s.io)
        .into_iter()
        .map(|(k, v, _)| (label("item", k), v as f64))
        .collect();
    family(
        out,
        "kata_agent_io_stat",
        "gauge",
        "Agent process IO stat.",
        &io,
    );
    let ticks = [
        ("utime", utime),
        ("stime", stime),
        ("cutime", cutime),
        ("cstime", cstime),
    ];
    let ticks: Vec<(String, f64)> = ticks.iter().map(|(k, v)| (label("item", k), *v)).collect();
    family(
        out,
        "kata_agent_proc_stat",
        "gauge",
        "Agent process stat.",
        &ticks,
    );

    // The Prometheus process collector's families.
    let cpu = family_name("process_cpu_seconds_total");
    family(
        out,
        &cpu,
        "counter",
        "Total user and system CPU time spent in seconds.",
        &one(total_time),
    );
    let max_fds = s
        .limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let max = family_name("process_max_fds");
    family(
        out,
        &max,
        "gauge",
        "Maximum number of open file descriptors.",
        &one(max_fds),
    );
    let open = family_name("process_open_fds");
    family(
        out,
        &open,
        "gauge",
        "Number of open file descriptors.",
        &one(s.fds as f64),
    );
    let res = family_name("process_resident_memory_bytes");
    family(
        out,
        &res,
        "gauge",
        "Resident memory size in bytes.",
        &one(rss),
    );
    let start = s.boot_time as f64 + num(22) / TICKS;
    let st = family_name("process_start_time_seconds");
    family(
        out,
        &st,
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        &one(start),
    );
    let virt = family_name("process_virtual_memory_bytes");
    family(
        out,
        &virt,
        "gauge",
        "Virtual memory size in bytes.",
        &one(vm),
    );

    // Ours.
    family(
        out,
        "kata_agent_containers",
        "gauge",
        "Containers the agent manages.",
        &one(s.containers as f64),
    );
    family(
        out,
        "kata_agent_open_fds",
        "gauge",
        "Agent open file descriptors.",
        &one(s.fds as f64),
    );
}

fn family_name(suffix: &str) -> String {
    format!("kata_agent_{suffix}")
}

const CPU_ITEMS: &[&str] = &[
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

const NETDEV_ITEMS: &[&str] = &[
    "recv_bytes",
    "recv_packets",
    "recv_errs",
    "recv_drop",
    "recv_fifo",
    "recv_frame",
    "recv_compressed",
    "recv_multicast",
    "sent_bytes",
    "sent_packets",
    "sent_errs",
    "sent_drop",
    "sent_fifo",
    "sent_colls",
    "sent_carrier",
    "sent_compressed",
];

const DISK_ITEMS: &[&str] = &[
    "reads",
    "merged",
    "sectors_read",
    "time_reading",
    "writes",
    "writes_merged",
    "sectors_written",
    "time_writing",
    "in_progress",
    "time_in_progress",
    "weighted_time_in_progress",
    "discards",
    "discards_merged",
    "sectors_discarded",
    "time_discarding",
    "flushes",
    "time_flushing",
];

fn guest_families(out: &mut String, s: &Sources) {
    let load: Vec<&str> = s.loadavg.split_whitespace().collect();
    let lv = |i: usize| {
        load.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let loads = [("load1", lv(0)), ("load5", lv(1)), ("load15", lv(2))];
    let loads: Vec<(String, f64)> = loads.iter().map(|(k, v)| (label("item", k), *v)).collect();
    family(
        out,
        "kata_guest_load",
        "gauge",
        "Guest system load.",
        &loads,
    );
    let (cur, max) = load
        .get(3)
        .and_then(|t| t.split_once('/'))
        .map(|(c, m)| (c.parse().unwrap_or(0.0), m.parse().unwrap_or(0.0)))
        .unwrap_or((0.0, 0.0));
    let tasks = vec![(label("item", "cur"), cur), (label("item", "max"), max)];
    family(
        out,
        "kata_guest_tasks",
        "gauge",
        "Guest system load.",
        &tasks,
    );

    let mut cpu = Vec::new();
    for line in s.cpu_stat.lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next().and_then(|w| w.strip_prefix("cpu")) else {
            continue;
        };
        let which = if name.is_empty() { "total" } else { name };
        for (item, v) in CPU_ITEMS.iter().zip(words) {
            let v = v.parse::<f64>().unwrap_or(0.0);
            cpu.push((
                format!("{},{}", label("cpu", which), label("item", item)),
                v,
            ));
        }
    }
    family(out, "kata_guest_cpu_time", "gauge", "Guest CPU stat.", &cpu);

    let vmstat: Vec<(String, f64)> = s
        .vmstat
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((label("item", k), v.trim().parse().ok()?))
        })
        .collect();
    family(
        out,
        "kata_guest_vm_stat",
        "gauge",
        "Guest virtual memory stat.",
        &vmstat,
    );

    let mut net = Vec::new();
    for line in s.netdev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        for (item, v) in NETDEV_ITEMS.iter().zip(rest.split_whitespace()) {
            let v = v.parse::<f64>().unwrap_or(0.0);
            net.push((
                format!(
                    "{},{}",
                    label("interface", name.trim()),
                    label("item", item)
                ),
                v,
            ));
        }
    }
    family(
        out,
        "kata_guest_netdev_stat",
        "gauge",
        "Guest net devices stats.",
        &net,
    );

    let mut disks = Vec::new();
    for line in s.diskstats.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = words.get(2) else { continue };
        for (item, v) in DISK_ITEMS.iter().zip(&words[3..]) {
            let v = v.parse::<f64>().unwrap_or(0.0);
            disks.push((
                format!("{},{}", label("disk", name), label("item", item)),
                v,
            ));
        }
    }
    family(
        out,
        "kata_guest_diskstat",
        "gauge",
        "Disks stat in system.",
        &disks,
    );

    let mem: Vec<(String, f64)> = kv(&s.meminfo)
        .into_iter()
        .map(|(k, v, kb)| {
            let v = if kb { v.saturating_mul(1024) } else { v };
            (label("item", &meminfo_item(k)), v as f64)
        })
        .collect();
    family(
        out,
        "kata_guest_meminfo",
        "gauge",
        "Statistics about memory usage in the system.",
        &mem,
    );
}

/// The whole metrics text.
pub fn render(s: &Sources) -> String {
    let mut out = String::with_capacity(16 * 1024);
    agent_families(&mut out, s);
    guest_families(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_items_as_upstream() {
        for (field, item) in [
            ("MemTotal", "mem_total"),
            ("MemAvailable", "mem_available"),
            ("Active(anon)", "active_anon"),
            ("Inactive(file)", "inactive_file"),
            ("SwapCached", "swap_cached"),
            ("AnonPages", "anon_pages"),
            ("PageTables", "page_tables"),
            ("VmallocUsed", "vmalloc_used"),
            ("WritebackTmp", "writeback_tmp"),
            ("HardwareCorrupted", "hardware_corrupted"),
            ("HugePages_Total", "hugepages_total"),
            ("DirectMap2M", "direct_map_2M"),
            ("Buffers", "buffers"),
        ] {
            assert_eq!(meminfo_item(field), item, "{field}");
        }
    }

    #[test]
    fn families_from_proc_text() {
        let s = Sources {
            status: "Name:\tkata-agent\nThreads:\t1\nVmRSS:\t    3000 kB\nVmSize:\t 10000 kB\n\
                     voluntary_ctxt_switches:\t7\n"
                .into(),
            stat: "42 (kata agent) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 3 4 20 0 1 0 500 \
                   1000 200"
                .into(),
            io: "rchar: 10\nwchar: 20\n".into(),
            limits: "Max open files            1048576              1048576              files\n"
                .into(),
            fds: 12,
            meminfo: "MemTotal:       2048 kB\nHugePages_Total:       3\n".into(),
            loadavg: "0.50 0.25 0.10 2/80 999\n".into(),
            cpu_stat: "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\nbtime 1000\n".into(),
            vmstat: "nr_free_pages 100\noom_kill 2\n".into(),
            netdev: "h1\nh2\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n".into(),
            diskstats: "   8       0 vda 1 2 3 4 5 6 7 8 9 10 11\n".into(),
            boot_time: 1000,
            containers: 3,
        };
        let text = render(&s);
        for want in [
            "kata_agent_threads 1\n",
            "kata_agent_total_rss 3072000\n",
            "kata_agent_total_vm 10240000\n",
            "kata_agent_total_time 2\n",
            "kata_agent_proc_status{item=\"vmrss\"} 3000\n",
            "kata_agent_proc_status{item=\"voluntary_ctxt_switches\"} 7\n",
            "kata_agent_io_stat{item=\"wchar\"} 20\n",
            "kata_agent_proc_stat{item=\"utime\"} 150\n",
            "kata_agent_process_max_fds 1048576\n",
            "kata_agent_process_open_fds 12\n",
            "kata_agent_process_start_time_seconds 1005\n",
            "kata_agent_containers 3\n",
            "kata_guest_load{item=\"load5\"} 0.25\n",
            "kata_guest_tasks{item=\"max\"} 80\n",
            "kata_guest_cpu_time{cpu=\"total\",item=\"idle\"} 4\n",
            "kata_guest_cpu_time{cpu=\"0\",item=\"guest_nice\"} 10\n",
            "kata_guest_vm_stat{item=\"oom_kill\"} 2\n",
            "kata_guest_netdev_stat{interface=\"eth0\",item=\"sent_bytes\"} 9\n",
            "kata_guest_diskstat{disk=\"vda\",item=\"writes\"} 5\n",
            "kata_guest_meminfo{item=\"mem_total\"} 2097152\n",
            "kata_guest_meminfo{item=\"hugepages_total\"} 3\n",
            "# TYPE kata_agent_scrape_count counter\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }
}
