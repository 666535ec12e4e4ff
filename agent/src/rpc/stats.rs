//! cgroup statistics in the wire form of StatsContainer.

use cgroups_rs::stats as cgroups_stats;
use protocols::agent::{
    BlkioStats, BlkioStatsEntry, CgroupStats, CpuStats, CpuUsage, HugetlbStats, MemoryData,
    MemoryStats, PidsStats, ThrottlingData,
};
use rustjail::cgroups::CgroupStats as Jail;

fn memory_data(m: Option<&cgroups_stats::MemoryStats>) -> MemoryData {
    let mut d = MemoryData::new();
    if let Some(m) = m {
        d.usage = m.usage;
        d.max_usage = m.max_usage;
        d.failcnt = m.fail_cnt;
        d.limit = u64::try_from(m.limit).unwrap_or(u64::MAX);
    }
    d
}

fn blkio(list: &[cgroups_stats::BlkioStat]) -> Vec<BlkioStatsEntry> {
    list.iter()
        .map(|s| {
            let mut e = BlkioStatsEntry::new();
            e.major = s.major;
            e.minor = s.minor;
            e.op = s.op.clone();
            e.value = s.value;
            e
        })
        .collect()
}

/// Converts rustjail's (cgroups-rs) statistics to the wire message.
pub fn convert(s: &Jail) -> CgroupStats {
    let mut out = CgroupStats::new();

    let mut cpu = CpuStats::new();
    let mut usage = CpuUsage::new();
    if let Some(a) = &s.cpu.cpu_acct {
        usage.total_usage = a.total_usage;
        usage.percpu_usage = a.usage_percpu.clone();
        usage.usage_in_kernelmode = a.system_usage;
        usage.usage_in_usermode = a.user_usage;
    }
    cpu.cpu_usage = Some(usage).into();
    if let Some(t) = &s.cpu.cpu_throttling {
        let mut th = ThrottlingData::new();
        th.periods = t.periods;
        th.throttled_periods = t.throttled_periods;
        th.throttled_time = t.throttled_time;
        cpu.throttling_data = Some(th).into();
    }
    out.cpu_stats = Some(cpu).into();

    let mut mem = MemoryStats::new();
    mem.cache = s.memory.cache;
    mem.use_hierarchy = s.memory.use_hierarchy;
    mem.usage = Some(memory_data(s.memory.memory.as_ref())).into();
    mem.swap_usage = Some(memory_data(s.memory.memory_swap.as_ref())).into();
    mem.kernel_usage = Some(memory_data(s.memory.kernel_memory.as_ref())).into();
    for (k, v) in [
        ("rss", s.memory.rss),
        ("cache", s.memory.cache),
        ("shmem", s.memory.shmem),
        ("mapped_file", s.memory.mapped_file),
        ("swap", s.memory.swap),
        ("pgfault", s.memory.pgfault),
        ("pgmajfault", s.memory.pgmajfault),
        ("inactive_anon", s.memory.inactive_anon),
        ("active_anon", s.memory.active_anon),
        ("inactive_file", s.memory.inactive_file),
        ("active_file", s.memory.active_file),
        ("total_rss", s.memory.total_rss),
        ("total_cache", s.memory.total_cache),
        ("total_inactive_file", s.memory.total_inactive_file),
    ] {
        mem.stats.insert(k.to_string(), v);
    }
    out.memory_stats = Some(mem).into();

    let mut pids = PidsStats::new();
    pids.current = s.pids.current;
    pids.limit = u64::try_from(s.pids.limit).unwrap_or(0);
    out.pids_stats = Some(pids).into();

    let mut b = BlkioStats::new();
    b.io_service_bytes_recursive = blkio(&s.blkio.io_service_bytes_recursive);
    b.io_serviced_recursive = blkio(&s.blkio.io_serviced_recursive);
    b.io_queued_recursive = blkio(&s.blkio.io_queued_recursive);
    b.io_service_time_recursive = blkio(&s.blkio.io_service_time_recursive);
    b.io_wait_time_recursive = blkio(&s.blkio.io_wait_time_recursive);
    b.io_merged_recursive = blkio(&s.blkio.io_merged_recursive);
    b.io_time_recursive = blkio(&s.blkio.io_time_recursive);
    b.sectors_recursive = blkio(&s.blkio.sectors_recursive);
    out.blkio_stats = Some(b).into();

    for (size, h) in &s.hugetlb {
        let mut e = HugetlbStats::new();
        e.usage = h.usage;
        e.max_usage = h.max_usage;
        e.failcnt = h.fail_cnt;
        out.hugetlb_stats.insert(size.clone(), e);
    }
    out
}
