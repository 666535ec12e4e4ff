//! GetMetrics (Prometheus text about the agent and the guest) and
//! GetVolumeStats (statvfs of a volume's guest mount).

use std::ffi::CString;
use std::fmt::Write as _;
use std::path::{Component, Path};

use protocols::agent::*;
use protocols::csi::{volume_usage::Unit, VolumeCondition, VolumeStatsResponse, VolumeUsage};
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};

/// Volumes are mounted below this directory; stats are answered only there.
const VOLUME_BASE: &str = "/run/kata-containers";

/// `Name:   value kB` fields of a /proc status-like text, as (name, value).
fn kv_fields(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_string(), n))
        })
        .collect()
}

/// Renders the metrics text; split out for tests.
pub fn render(status_text: &str, meminfo: &str, fds: usize, containers: usize) -> String {
    let mut out = String::new();
    let status = kv_fields(status_text);
    let get = |k: &str| status.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let _ = writeln!(
        out,
        "# HELP kata_agent_process_resident_memory_bytes Agent resident memory."
    );
    let _ = writeln!(out, "# TYPE kata_agent_process_resident_memory_bytes gauge");
    let _ = writeln!(
        out,
        "kata_agent_process_resident_memory_bytes {}",
        get("VmRSS").unwrap_or(0).saturating_mul(1024)
    );
    let _ = writeln!(out, "# HELP kata_agent_threads Agent threads.");
    let _ = writeln!(out, "# TYPE kata_agent_threads gauge");
    let _ = writeln!(out, "kata_agent_threads {}", get("Threads").unwrap_or(0));
    let _ = writeln!(
        out,
        "# HELP kata_agent_open_fds Agent open file descriptors."
    );
    let _ = writeln!(out, "# TYPE kata_agent_open_fds gauge");
    let _ = writeln!(out, "kata_agent_open_fds {fds}");
    let _ = writeln!(
        out,
        "# HELP kata_agent_containers Containers the agent manages."
    );
    let _ = writeln!(out, "# TYPE kata_agent_containers gauge");
    let _ = writeln!(out, "kata_agent_containers {containers}");
    let _ = writeln!(out, "# HELP kata_guest_meminfo_bytes Guest /proc/meminfo.");
    let _ = writeln!(out, "# TYPE kata_guest_meminfo_bytes gauge");
    for (k, v) in kv_fields(meminfo) {
        if k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '(' || c == ')')
        {
            let _ = writeln!(
                out,
                "kata_guest_meminfo_bytes{{item=\"{k}\"}} {}",
                v.saturating_mul(1024)
            );
        }
    }
    out
}

fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain data; zeroed is a valid initial value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a statvfs we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn usage(unit: Unit, available: u64, total: u64, used: u64) -> VolumeUsage {
    let mut u = VolumeUsage::new();
    u.unit = unit.into();
    u.available = available;
    u.total = total;
    u.used = used;
    u
}

impl AgentImpl {
    pub(super) async fn do_get_metrics(
        &self,
        _ctx: &TtrpcContext,
        _req: GetMetricsRequest,
    ) -> ttrpc::Result<Metrics> {
        let containers = self.sandbox.all().len();
        let text = blocking(move || {
            let status_text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
            let fds = std::fs::read_dir("/proc/self/fd")
                .map(|d| d.count())
                .unwrap_or(0);
            render(&status_text, &meminfo, fds, containers)
        })
        .await?;
        let mut m = Metrics::new();
        m.metrics = text;
        Ok(m)
    }

    pub(super) async fn do_get_volume_stats(
        &self,
        _ctx: &TtrpcContext,
        req: VolumeStatsRequest,
    ) -> ttrpc::Result<VolumeStatsResponse> {
        let path = req.volume_guest_path.clone();
        let p = Path::new(&path);
        let bad = |why: &str| status(Code::INVALID_ARGUMENT, format!("volume {path:?}: {why}"));
        if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return Err(bad("expected an absolute path without \"..\""));
        }
        if !p.starts_with(VOLUME_BASE) {
            return Err(bad(&format!("not under {VOLUME_BASE}/")));
        }
        let st = blocking({
            let p = p.to_path_buf();
            move || statvfs(&p)
        })
        .await?
        .map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                Code::NOT_FOUND
            } else {
                Code::INTERNAL
            };
            status(code, format!("volume {path:?}: statvfs: {e}"))
        })?;
        let frsize = st.f_frsize as u64;
        let mut resp = VolumeStatsResponse::new();
        resp.usage = vec![
            usage(
                Unit::BYTES,
                (st.f_bavail as u64).saturating_mul(frsize),
                (st.f_blocks as u64).saturating_mul(frsize),
                (st.f_blocks as u64)
                    .saturating_sub(st.f_bfree as u64)
                    .saturating_mul(frsize),
            ),
            usage(
                Unit::INODES,
                st.f_favail as u64,
                st.f_files as u64,
                (st.f_files as u64).saturating_sub(st.f_ffree as u64),
            ),
        ];
        resp.volume_condition = Some(VolumeCondition::new()).into();
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let text = render(
            "Name:\tkata-agent\nVmRSS:\t    3000 kB\nThreads:\t1\n",
            "MemTotal:       2048 kB\nMemFree:  1024 kB\n",
            12,
            3,
        );
        assert!(
            text.contains("kata_agent_process_resident_memory_bytes 3072000\n"),
            "{text}"
        );
        assert!(text.contains("kata_agent_threads 1\n"));
        assert!(text.contains("kata_agent_open_fds 12\n"));
        assert!(text.contains("kata_agent_containers 3\n"));
        assert!(text.contains("kata_guest_meminfo_bytes{item=\"MemTotal\"} 2097152\n"));
    }
}
