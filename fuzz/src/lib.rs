//! What the fuzz targets share: the check that the process runs in the
//! private world `fuzz/run.sh` builds (its own mount, UTS, network and IPC
//! namespaces, tmpfs on `/run`, `/sys` and `/dev`, no CAP_SYS_TIME,
//! CAP_SYS_MODULE or CAP_SYS_BOOT), one tokio runtime, and a fresh agent
//! (a `Sandbox` behind the real `AgentImpl`) whose handlers can only touch
//! that private world.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kata_agent::policy::{Policy, ALLOW_ALL_REGO};
use kata_agent::reaper::Reaper;
use kata_agent::rpc::AgentImpl;
use kata_agent::sandbox::{Sandbox, Settings};
use protocols::agent_ttrpc::{self, AgentService};
use protocols::health_ttrpc::{self, Health};
use ttrpc::r#async::Service;

/// The launcher the sandbox re-executes for container inits and the
/// namespace holder: a path that does not exist, so that no process is
/// ever started (the libFuzzer binary itself cannot serve as one).
pub const NO_LAUNCHER: &str = "/run/fuzz-no-launcher";

/// How long a device wait lasts (AddSwap, block storages): short, since
/// no device ever comes here.
pub const HOTPLUG_WAIT: Duration = Duration::from_millis(20);

fn ns(pid: &str, kind: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()
}

/// Aborts unless the namespaces are private and `/run` is a tmpfs of
/// this namespace's own, as `fuzz/run.sh` arranges: the handlers mount,
/// write and configure links, and none of that may reach the host.
pub fn assert_private_world() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let private = ["mnt", "net", "uts", "ipc"]
            .iter()
            .all(|k| ns("self", k).is_some() && ns("self", k) != ns("1", k));
        let run_is_tmpfs = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/run") && l.contains(" - tmpfs fuzz-run "));
        if !(private && run_is_tmpfs) {
            eprintln!(
                "this fuzz target changes mounts, links and files: run it through fuzz/run.sh, \
                 which gives it namespaces and a /run of its own"
            );
            std::process::abort();
        }
    });
}

/// The one runtime the targets run the agent's async code on: a current
/// thread one with a blocking pool, as the agent's own.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(16)
            .build()
            .expect("tokio runtime")
    })
}

/// The reaper, started once on [`runtime`].
fn reaper() -> Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let r = Reaper::new();
            let _guard = runtime().enter();
            tokio::spawn(r.clone().run());
            r
        })
        .clone()
}

/// A fresh agent: an empty sandbox with the default roots (under the
/// private `/run`), no launcher and short device waits.
pub fn agent() -> Arc<AgentImpl> {
    let settings = Settings {
        launcher: PathBuf::from(NO_LAUNCHER),
        hotplug_timeout: HOTPLUG_WAIT,
        ..Settings::default()
    };
    // Upstream's allow-all policy through the engine, so every request
    // decoded is also written as a policy's input.
    let policy = Policy::from_rego(ALLOW_ALL_REGO).expect("allow-all.rego compiles");
    Arc::new(AgentImpl::new(
        Arc::new(Sandbox::new(settings, reaper())),
        Arc::new(policy),
    ))
}

/// The ttrpc services of `agent`, as the server registers them.
pub fn services(agent: &Arc<AgentImpl>) -> HashMap<String, Service> {
    let a: Arc<dyn AgentService + Send + Sync> = agent.clone();
    let h: Arc<dyn Health + Send + Sync> = Arc::new(kata_agent::rpc::health::HealthImpl);
    let mut s = agent_ttrpc::create_agent_service(a);
    s.extend(health_ttrpc::create_health(h));
    s
}

/// The mount points of this namespace, to compare before and after.
pub fn mount_points() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect();
    v.sort();
    v
}
