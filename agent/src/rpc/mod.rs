//! The ttrpc services. `grpc.AgentService` is declared here as one table:
//! every method of the wire API, each either routed to its handler or
//! answered with `UNIMPLEMENTED` naming the method (`unimplemented`), and
//! why when it was decided not to be served (`unimplemented("why")`). The
//! table also feeds [`METHODS`], which `kata-agent --methods`, tests and
//! the README's status table read. Every method, served or not, passes
//! the agent policy ([`crate::policy`]) first.

mod container;
mod copy_file;
mod diagnostic;
mod guest;
pub mod health;
mod iptables;
mod metrics;
mod network;
pub mod oci;
mod process;
mod sandbox;
mod stats;
mod storage;
mod volume;

use std::sync::Arc;

use async_trait::async_trait;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentService;
use protocols::csi::VolumeStatsResponse;
use protocols::empty::Empty;
use protocols::types::Interface;
use ttrpc::asynchronous::TtrpcContext;

use crate::policy::Policy;
use crate::sandbox::Sandbox;

/// State shared by all requests.
pub struct AgentImpl {
    sandbox: Arc<Sandbox>,
    /// Checked by every method of the table below before it acts.
    policy: Arc<Policy>,
    /// Told when the server should stop: after DestroySandbox, when the
    /// agent is not PID 1.
    stop: Arc<tokio::sync::Notify>,
}

impl AgentImpl {
    pub fn new(sandbox: Arc<Sandbox>, policy: Arc<Policy>) -> Self {
        AgentImpl {
            sandbox,
            policy,
            stop: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Completes once a request asked the agent to stop (DestroySandbox
    /// answered, not PID 1); the server then shuts down as on SIGTERM.
    pub fn stop_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let stop = self.stop.clone();
        async move { stop.notified().await }
    }
}

pub use crate::error::status;

/// Runs blocking work (namespaces, mounts, cgroup files, fork) off the
/// async threads.
pub async fn blocking<T, F>(f: F) -> ttrpc::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| status(ttrpc::Code::INTERNAL, format!("blocking task failed: {e}")))
}

/// Whether a method is served or answers `UNIMPLEMENTED`, and why not
/// when there is more to say than "not yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Implemented,
    Unimplemented(Option<&'static str>),
}

impl Status {
    /// Why the method is not served, if it was decided so.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Status::Implemented | Status::Unimplemented(None) => None,
            Status::Unimplemented(Some(why)) => Some(why),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Implemented => "implemented",
            Status::Unimplemented(_) => "unimplemented",
        })
    }
}

macro_rules! agent_service {
    ($( $wire:literal $method:ident ( $req:ty ) -> $resp:ty => $handler:ident $( ( $why:literal ) )? ; )*) => {
        #[async_trait]
        impl AgentService for AgentImpl {
            $(
                async fn $method(&self, ctx: &TtrpcContext, req: $req) -> ttrpc::Result<$resp> {
                    agent_service!(@call self, ctx, req, $wire, $handler $( ($why) )?)
                }
            )*
        }

        /// Every `grpc.AgentService` method with its status, in wire order.
        pub const METHODS: &[(&str, Status)] = &[
            $( ($wire, agent_service!(@status $handler $( ($why) )?)), )*
        ];
    };
    (@call $s:ident, $ctx:ident, $req:ident, $wire:literal, unimplemented ($why:literal)) => {{
        $s.policy.check_request(&$req)?;
        let _ = ($ctx, $req);
        Err(status(
            ttrpc::Code::UNIMPLEMENTED,
            concat!("/grpc.AgentService/", $wire, ": not implemented by this agent: ", $why),
        ))
    }};
    (@call $s:ident, $ctx:ident, $req:ident, $wire:literal, unimplemented) => {{
        $s.policy.check_request(&$req)?;
        let _ = ($ctx, $req);
        Err(protocols::unimplemented_status(concat!("/grpc.AgentService/", $wire)))
    }};
    (@call $s:ident, $ctx:ident, $req:ident, $wire:literal, $handler:ident) => {{
        // The one place every request passes: the policy decides before
        // the handler acts.
        $s.policy.check_request(&$req)?;
        $s.$handler($ctx, $req).await
    }};
    (@status unimplemented ($why:literal)) => { Status::Unimplemented(Some($why)) };
    (@status unimplemented) => { Status::Unimplemented(None) };
    (@status $handler:ident) => { Status::Implemented };
}

agent_service! {
    "CreateContainer" create_container(CreateContainerRequest) -> Empty => do_create_container;
    "StartContainer" start_container(StartContainerRequest) -> Empty => do_start_container;
    "RemoveContainer" remove_container(RemoveContainerRequest) -> Empty => do_remove_container;
    "ExecProcess" exec_process(ExecProcessRequest) -> Empty => do_exec_process;
    "SignalProcess" signal_process(SignalProcessRequest) -> Empty => do_signal_process;
    "WaitProcess" wait_process(WaitProcessRequest) -> WaitProcessResponse => do_wait_process;
    "UpdateContainer" update_container(UpdateContainerRequest) -> Empty => do_update_container;
    "UpdateEphemeralMounts" update_ephemeral_mounts(UpdateEphemeralMountsRequest) -> Empty => do_update_ephemeral_mounts;
    "StatsContainer" stats_container(StatsContainerRequest) -> StatsContainerResponse => do_stats_container;
    "PauseContainer" pause_container(PauseContainerRequest) -> Empty => do_pause_container;
    "ResumeContainer" resume_container(ResumeContainerRequest) -> Empty => do_resume_container;
    "RemoveStaleVirtiofsShareMounts" remove_stale_virtiofs_share_mounts(RemoveStaleVirtiofsShareMountsRequest) -> Empty => do_remove_stale_virtiofs_share_mounts;
    "GetDiagnosticData" get_diagnostic_data(GetDiagnosticDataRequest) -> GetDiagnosticDataResponse => do_get_diagnostic_data;
    "WriteStdin" write_stdin(WriteStreamRequest) -> WriteStreamResponse => do_write_stdin;
    "ReadStdout" read_stdout(ReadStreamRequest) -> ReadStreamResponse => do_read_stdout;
    "ReadStderr" read_stderr(ReadStreamRequest) -> ReadStreamResponse => do_read_stderr;
    "CloseStdin" close_stdin(CloseStdinRequest) -> Empty => do_close_stdin;
    "TtyWinResize" tty_win_resize(TtyWinResizeRequest) -> Empty => do_tty_win_resize;
    "UpdateInterface" update_interface(UpdateInterfaceRequest) -> Interface => do_update_interface;
    "UpdateRoutes" update_routes(UpdateRoutesRequest) -> Routes => do_update_routes;
    "ListInterfaces" list_interfaces(ListInterfacesRequest) -> Interfaces => do_list_interfaces;
    "ListRoutes" list_routes(ListRoutesRequest) -> Routes => do_list_routes;
    "AddARPNeighbors" add_arp_neighbors(AddARPNeighborsRequest) -> Empty => do_add_arp_neighbors;
    "GetIPTables" get_ip_tables(GetIPTablesRequest) -> GetIPTablesResponse => do_get_ip_tables;
    "SetIPTables" set_ip_tables(SetIPTablesRequest) -> SetIPTablesResponse => do_set_ip_tables;
    "GetMetrics" get_metrics(GetMetricsRequest) -> Metrics => do_get_metrics;
    // Upstream's mem-agent is a daemon of its own (MGLRU aging and
    // eviction of the containers' memcgs, compaction, each paced by PSI
    // limits); these calls only retune it, and upstream refuses them too
    // unless runtime-rs started it. Nothing sends them otherwise.
    "MemAgentMemcgSet" mem_agent_memcg_set(MemAgentMemcgConfig) -> Empty => unimplemented("this agent has no mem-agent (upstream's PSI-paced memcg aging and eviction); upstream refuses this call too unless runtime-rs enabled its mem-agent (agent.mem_agent_enable)");
    "MemAgentCompactSet" mem_agent_compact_set(MemAgentCompactConfig) -> Empty => unimplemented("this agent has no mem-agent (upstream's PSI-paced memory compaction); upstream refuses this call too unless runtime-rs enabled its mem-agent (agent.mem_agent_enable)");
    "CreateSandbox" create_sandbox(CreateSandboxRequest) -> Empty => do_create_sandbox;
    "DestroySandbox" destroy_sandbox(DestroySandboxRequest) -> Empty => do_destroy_sandbox;
    "OnlineCPUMem" online_cpu_mem(OnlineCPUMemRequest) -> Empty => do_online_cpu_mem;
    "ReseedRandomDev" reseed_random_dev(ReseedRandomDevRequest) -> Empty => do_reseed_random_dev;
    "GetGuestDetails" get_guest_details(GuestDetailsRequest) -> GuestDetailsResponse => do_get_guest_details;
    "MemHotplugByProbe" mem_hotplug_by_probe(MemHotplugByProbeRequest) -> Empty => do_mem_hotplug_by_probe;
    "SetGuestDateTime" set_guest_date_time(SetGuestDateTimeRequest) -> Empty => do_set_guest_date_time;
    "CopyFile" copy_file(CopyFileRequest) -> Empty => do_copy_file;
    "GetOOMEvent" get_oom_event(GetOOMEventRequest) -> OOMEvent => do_get_oom_event;
    "AddSwap" add_swap(AddSwapRequest) -> Empty => do_add_swap;
    "AddSwapPath" add_swap_path(AddSwapPathRequest) -> Empty => do_add_swap_path;
    "GetVolumeStats" get_volume_stats(VolumeStatsRequest) -> VolumeStatsResponse => do_get_volume_stats;
    "ResizeVolume" resize_volume(ResizeVolumeRequest) -> Empty => do_resize_volume;
    "SetPolicy" set_policy(SetPolicyRequest) -> Empty => do_set_policy;
}

impl AgentImpl {
    /// SetPolicy: the table has checked the request against the policy in
    /// force (rule `SetPolicyRequest`); the new policy replaces it only if
    /// it compiles.
    async fn do_set_policy(
        &self,
        _ctx: &TtrpcContext,
        req: SetPolicyRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.set(&req.policy)?;
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_wire_descriptor() {
        let wire: Vec<String> = protocols::services()
            .into_iter()
            .find(|s| s.name == "grpc.AgentService")
            .map(|s| s.methods.into_iter().map(|m| m.name).collect())
            .unwrap_or_default();
        let ours: Vec<String> = METHODS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(ours, wire);
    }
}
