//! CreateSandbox, DestroySandbox and UpdateEphemeralMounts: each converts
//! the request, calls the sandbox layer ([`crate::sandbox`]) in one
//! blocking call, and maps the error.

use protocols::agent::*;
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;

use super::{blocking, AgentImpl};
use crate::sandbox::{self, CreateParams, KernelModule};

impl AgentImpl {
    pub(super) async fn do_create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        let params = CreateParams {
            id: req.sandbox_id,
            hostname: req.hostname,
            dns: req.dns,
            storages: req.storages,
            sandbox_pidns: req.sandbox_pidns,
            kernel_modules: req
                .kernel_modules
                .into_iter()
                .map(|m| KernelModule {
                    name: m.name,
                    parameters: m.parameters,
                })
                .collect(),
            guest_hook_path: req.guest_hook_path,
        };
        let s = self.sandbox.clone();
        blocking(move || sandbox::create(&s, params)).await??;
        Ok(Empty::new())
    }

    pub(super) async fn do_destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        _req: DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        let s = self.sandbox.clone();
        blocking(move || sandbox::destroy(&s)).await??;
        if crate::pid1::is_pid1() {
            // The VM's life ends with its sandbox. The answer goes out on
            // the connection's writer task first; give it that moment.
            tokio::spawn(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                log::info!("powering off");
                crate::pid1::poweroff();
            });
        } else {
            // As upstream: the agent's life ends with its sandbox. The
            // server stops as on SIGTERM, which answers this request first.
            self.stop.notify_one();
        }
        Ok(Empty::new())
    }

    /// Everything the agent set up goes: containers, then the sandbox.
    /// Used when the agent stops.
    pub async fn shutdown(&self) {
        let s = self.sandbox.clone();
        match blocking(move || sandbox::destroy(&s)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("shutdown: {e}"),
            Err(e) => log::warn!("shutdown: {e:?}"),
        }
    }

    pub(super) async fn do_update_ephemeral_mounts(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateEphemeralMountsRequest,
    ) -> ttrpc::Result<Empty> {
        let sandbox = self.sandbox.clone();
        blocking(move || {
            for s in &req.storages {
                sandbox.storage.update_ephemeral(s)?;
            }
            Ok::<(), ttrpc::Error>(())
        })
        .await??;
        Ok(Empty::new())
    }
}
