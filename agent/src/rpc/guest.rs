//! Guest-wide calls: GetGuestDetails, SetGuestDateTime, ReseedRandomDev,
//! OnlineCPUMem, MemHotplugByProbe.

use std::io::Write;
use std::path::{Path, PathBuf};

use protocols::agent::*;
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};
use crate::storage::SUPPORTED_DRIVERS;
use crate::version::AGENT_VERSION;

const SYS_MEMORY: &str = "/sys/devices/system/memory";
const SYS_CPU: &str = "/sys/devices/system/cpu";

/// `block_size_bytes` is hexadecimal without a prefix.
pub fn parse_block_size(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim(), 16).ok()
}

/// Writes "1" to every `online` file under `dir` whose entry name starts
/// with `prefix` and that reads "0". Returns how many it brought online.
fn online_all(dir: &Path, prefix: &str) -> std::io::Result<usize> {
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

fn online_count() -> usize {
    // "0-3,5" style list.
    std::fs::read_to_string(Path::new(SYS_CPU).join("online"))
        .map(|s| {
            s.trim()
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('-') {
                    Some((a, b)) => {
                        let (a, b): (usize, usize) =
                            (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                        b.saturating_sub(a) + 1
                    }
                    None => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Why OnlineCPUMem failed: the sysfs writes are the kernel's to refuse.
#[derive(Debug, thiserror::Error)]
enum OnlineError {
    #[error("online cpus: {0}")]
    Cpus(std::io::Error),
    #[error("online memory: {0}")]
    Memory(std::io::Error),
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
        let work = move || -> Result<(), OnlineError> {
            let cpus = online_all(Path::new(SYS_CPU), "cpu").map_err(OnlineError::Cpus)?;
            log::info!("onlined {cpus} cpus ({} online)", online_count());
            if !req.cpu_only {
                // Guests without memory hotplug have no memory blocks.
                match online_all(Path::new(SYS_MEMORY), "memory") {
                    Ok(n) => log::info!("onlined {n} memory blocks"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(OnlineError::Memory(e)),
                }
            }
            Ok(())
        };
        if req.wait {
            blocking(work)
                .await?
                .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
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
