//! GetMetrics (Prometheus text about the agent and the guest, see
//! `observe::metrics`) and GetVolumeStats (statvfs of a volume's guest
//! mount).

use std::ffi::CString;
use std::path::Path;

use protocols::agent::*;
use protocols::csi::{volume_usage::Unit, VolumeCondition, VolumeStatsResponse, VolumeUsage};
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};
use crate::volume::{confine, VOLUME_ROOT};

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
            crate::observe::metrics::render(&crate::observe::metrics::Sources::read(containers))
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
        // Confined as ResizeVolume's: a symlink on the way (one a container
        // planted in a directory it shares) must not lead the statvfs out.
        let object = format!("volume {path:?}");
        let real = confine(&path, Path::new(VOLUME_ROOT), &object)?;
        let st = blocking(move || statvfs(&real)).await?.map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                Code::NOT_FOUND
            } else {
                Code::INTERNAL
            };
            status(code, format!("{object}: statvfs: {e}"))
        })?;
        Ok(stats_response(&st))
    }
}

/// A statvfs as VolumeStats: bytes and inodes.
// The fields are narrower than u64 on some targets.
#[allow(clippy::unnecessary_cast)]
fn stats_response(st: &libc::statvfs) -> VolumeStatsResponse {
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
    resp
}
