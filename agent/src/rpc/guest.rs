//! Guest-wide calls: GetGuestDetails, SetGuestDateTime, ReseedRandomDev,
//! OnlineCPUMem, MemHotplugByProbe.

use std::io::Write;
use std::path::{Path, PathBuf};

use protocols::agent::*;
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};
use crate::device::cpu_mem;
use crate::lock::lock;
use crate::storage::SUPPORTED_DRIVERS;
use crate::version::AGENT_VERSION;

use cpu_mem::SYS_MEMORY;

/// `block_size_bytes` is hexadecimal without a prefix.
pub fn parse_block_size(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim(), 16).ok()
}

/// OnlineCPUMem's work: CPUs (waiting for `nb_cpus` of them), the
/// containers' cpusets, memory unless `cpu_only`; runs blocking.
fn online(
    sandbox: &crate::sandbox::Sandbox,
    req: &OnlineCPUMemRequest,
) -> Result<(), cpu_mem::Error> {
    let timeout = sandbox.settings.hotplug_timeout;
    let sys_cpu = Path::new(cpu_mem::SYS_CPU);
    let before = cpu_mem::online_list(sys_cpu);
    let wanted = req.nb_cpus as usize;
    let cpus = cpu_mem::online_cpus(sys_cpu, wanted, timeout)?;
    let after = cpu_mem::online_list(sys_cpu);
    log::info!("onlined {cpus} cpus (online: {after})");
    if before != after {
        let paths: Vec<String> = sandbox
            .all()
            .iter()
            .map(|c| lock(&c.jail).cgroup().path().to_string())
            .collect();
        let v2 = rustjail::cgroups::layout() == rustjail::cgroups::Layout::V2;
        let root = Path::new(rustjail::cgroups::CGROUP_ROOT);
        let n = cpu_mem::widen_cpusets(root, v2, &paths, &before, &after);
        log::info!("cpusets widened from {before} to {after}: {n} cgroups");
    }
    if !req.cpu_only {
        let n = cpu_mem::online_memory(Path::new(cpu_mem::SYS_MEMORY))?;
        log::info!("onlined {n} memory blocks");
    }
    Ok(())
}

impl AgentImpl {
    pub(super) async fn do_get_guest_details(
        &self,
        _ctx: &TtrpcContext,
        req: GuestDetailsRequest,
    ) -> ttrpc::Result<GuestDetailsResponse> {
        let mut resp = GuestDetailsResponse::new();
        if req.mem_block_size {
            // A guest without memory hotplug has no such file: 0 says so.
            resp.mem_block_size_bytes =
                std::fs::read_to_string(Path::new(SYS_MEMORY).join("block_size_bytes"))
                    .ok()
                    .and_then(|t| parse_block_size(&t))
                    .unwrap_or(0);
        }
        if req.mem_hotplug_probe {
            resp.support_mem_hotplug_probe = Path::new(SYS_MEMORY).join("probe").exists();
        }
        let mut details = AgentDetails::new();
        details.version = AGENT_VERSION.to_string();
        details.init_daemon = crate::pid1::is_pid1();
        details.storage_handlers = SUPPORTED_DRIVERS.iter().map(|d| d.to_string()).collect();
        details.supports_seccomp = true;
        resp.agent_details = Some(details).into();
        Ok(resp)
    }

    pub(super) async fn do_set_guest_date_time(
        &self,
        _ctx: &TtrpcContext,
        req: SetGuestDateTimeRequest,
    ) -> ttrpc::Result<Empty> {
        if req.Sec < 0 || !(0..1_000_000).contains(&req.Usec) {
            return Err(status(
                Code::INVALID_ARGUMENT,
                format!("guest time: invalid {}s {}us", req.Sec, req.Usec),
            ));
        }
        let tv = libc::timeval {
            tv_sec: req.Sec as libc::time_t,
            tv_usec: req.Usec as libc::suseconds_t,
        };
        // SAFETY: settimeofday reads one timeval through a valid pointer; a
        // null timezone is allowed.
        let rc = unsafe { libc::settimeofday(&tv, std::ptr::null()) };
        if rc != 0 {
            return Err(status(
                Code::INTERNAL,
                format!(
                    "guest time: settimeofday: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(Empty::new())
    }

    pub(super) async fn do_reseed_random_dev(
        &self,
        _ctx: &TtrpcContext,
        req: ReseedRandomDevRequest,
    ) -> ttrpc::Result<Empty> {
        if req.data.is_empty() {
            return Ok(Empty::new());
        }
        blocking(move || {
            // Mixing bytes into the pool needs no privilege; the kernel's
            // crng picks them up at its next reseed.
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/random")
                .and_then(|mut f| f.write_all(&req.data))
                .map_err(|e| status(Code::INTERNAL, format!("reseed /dev/random: {e}")))
        })
        .await??;
        Ok(Empty::new())
    }

    pub(super) async fn do_online_cpu_mem(
        &self,
        _ctx: &TtrpcContext,
        req: OnlineCPUMemRequest,
    ) -> ttrpc::Result<Empty> {
        let sandbox = self.sandbox.clone();
        let wait = req.wait;
        let work = move || online(&sandbox, &req);
        if wait {
            blocking(work).await??;
        } else {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = work() {
                    log::warn!("{e}");
                }
            });
        }
        Ok(Empty::new())
    }

    pub(super) async fn do_mem_hotplug_by_probe(
        &self,
        _ctx: &TtrpcContext,
        req: MemHotplugByProbeRequest,
    ) -> ttrpc::Result<Empty> {
        let probe = PathBuf::from(SYS_MEMORY).join("probe");
        blocking(move || {
            for addr in &req.memHotplugProbeAddr {
                std::fs::write(&probe, format!("{addr:#x}")).map_err(|e| {
                    status(
                        Code::FAILED_PRECONDITION,
                        format!("memory probe {addr:#x}: {}: {e}", probe.display()),
                    )
                })?;
            }
            Ok::<(), ttrpc::Error>(())
        })
        .await??;
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size() {
        assert_eq!(parse_block_size("8000000\n"), Some(128 << 20));
        assert_eq!(parse_block_size("zz"), None);
    }
}
