//! CreateSandbox and DestroySandbox: hostname, DNS, the sandbox's storages.

use std::path::Path;

use protocols::agent::*;
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};
use crate::lock::lock;
use crate::sandbox::guest_files::{self, ETC_RESOLV, SANDBOX_DIR};
use crate::sandbox::ns_holder::{self, HolderError};
use crate::sandbox::Holder;

/// Owner name of the sandbox's own storages.
pub const SANDBOX_OWNER: &str = "sandbox";

impl AgentImpl {
    pub(super) async fn do_create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        {
            let mut st = lock(&self.sandbox.state);
            if st.created {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("sandbox {:?}: already created", st.id),
                ));
            }
            st.created = true;
            st.id = req.sandbox_id.clone();
        }
        let result = self.create_sandbox(req).await;
        if result.is_err() {
            lock(&self.sandbox.state).created = false;
        }
        result
    }

    async fn create_sandbox(&self, req: CreateSandboxRequest) -> ttrpc::Result<Empty> {
        let sid = req.sandbox_id.clone();
        if !req.hostname.is_empty() {
            guest_files::validate_hostname(&req.hostname)
                .map_err(|e| status(Code::INVALID_ARGUMENT, format!("sandbox {sid:?}: {e}")))?;
        }
        if !req.kernel_modules.is_empty() {
            log::warn!(
                "sandbox {sid:?}: kernel_modules ignored: {:?}",
                req.kernel_modules
                    .iter()
                    .map(|m| m.name.clone())
                    .collect::<Vec<_>>()
            );
        }
        let sandbox = self.sandbox.clone();
        let (pidns, hostname, n_storages, sid2) = (
            req.sandbox_pidns,
            req.hostname.clone(),
            req.storages.len(),
            req.sandbox_id.clone(),
        );
        blocking(move || {
            let fail = |code: Code, msg: String| status(code, format!("sandbox {sid:?}: {msg}"));
            if !req.hostname.is_empty() {
                guest_files::set_hostname(&req.hostname)
                    .map_err(|e| fail(Code::INVALID_ARGUMENT, e.to_string()))?;
            }
            let dns =
                guest_files::setup_dns(Path::new(SANDBOX_DIR), &req.dns, Path::new(ETC_RESOLV))
                    .map_err(|e| fail(Code::INVALID_ARGUMENT, e.to_string()))?;
            for s in &req.storages {
                if let Err(e) = sandbox.storage.add(SANDBOX_OWNER, s) {
                    // Nothing half-done: undo what this request set up.
                    for e in sandbox.storage.rollback(SANDBOX_OWNER) {
                        log::warn!("sandbox {sid:?}: undo storage: {e}");
                    }
                    if let Some(dns) = &dns {
                        if let Err(e) = guest_files::teardown_dns(dns) {
                            log::warn!("sandbox {sid:?}: undo dns: {e}");
                        }
                    }
                    return Err(fail(Code::INVALID_ARGUMENT, e.to_string()));
                }
            }
            lock(&sandbox.state).dns = dns;
            Ok(())
        })
        .await??;
        // The namespaces the pod's containers share.
        let holder = match self.spawn_holder(pidns, &hostname).await {
            Ok(h) => h,
            Err(e) => {
                self.teardown_sandbox().await;
                return Err(status(Code::INTERNAL, format!("sandbox {sid2:?}: {e}")));
            }
        };
        lock(&self.sandbox.state).holder = Some(holder);
        log::info!(
            "sandbox {sid2:?} created ({n_storages} storages, shared pid namespace: {pidns})"
        );
        Ok(Empty::new())
    }

    /// Starts the namespace holder and adopts it.
    async fn spawn_holder(&self, pidns: bool, hostname: &str) -> Result<Holder, HolderError> {
        let exe = self.sandbox.settings.launcher.clone();
        let reaper = self.sandbox.reaper.clone();
        let hostname = hostname.to_string();
        let spawned =
            tokio::task::spawn_blocking(move || ns_holder::spawn(&reaper, &exe, pidns, &hostname))
                .await;
        spawned.map_err(|e| HolderError::Blocking(e.to_string()))?
    }

    /// Ends the namespace holder and waits (bounded) until it is reaped.
    async fn stop_holder(&self) {
        let holder = lock(&self.sandbox.state).holder.take();
        if let Some(h) = holder {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(h.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let waited =
                tokio::time::timeout(std::time::Duration::from_secs(10), h.exit.wait()).await;
            if waited.is_err() {
                log::warn!("namespace holder {} did not exit after SIGKILL", h.pid);
            }
        }
    }

    /// Everything the agent set up goes: containers, then the sandbox.
    /// Used when the agent stops.
    pub async fn shutdown(&self) {
        self.destroy_all().await;
        for e in self.teardown_sandbox().await {
            log::warn!("shutdown: {e}");
        }
    }

    /// Undoes a sandbox: storages, DNS, the holder. Returns the errors.
    async fn teardown_sandbox(&self) -> Vec<String> {
        self.stop_holder().await;
        let sandbox = self.sandbox.clone();
        blocking(move || {
            let mut errors: Vec<String> = sandbox
                .storage
                .release_all()
                .into_iter()
                .map(|e| e.to_string())
                .collect();
            let dns = lock(&sandbox.state).dns.take();
            if let Some(dns) = dns {
                if let Err(e) = guest_files::teardown_dns(&dns) {
                    errors.push(e.to_string());
                    // Kept, so that a later DestroySandbox or the agent's
                    // shutdown tries again.
                    lock(&sandbox.state).dns = Some(dns);
                }
            }
            errors
        })
        .await
        .unwrap_or_else(|e| vec![format!("{e:?}")])
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

    pub(super) async fn do_destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        _req: DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        self.destroy_all().await;
        let errors = self.teardown_sandbox().await;
        let id = {
            let mut st = lock(&self.sandbox.state);
            st.created = false;
            std::mem::take(&mut st.id)
        };
        if !errors.is_empty() {
            return Err(status(
                Code::INTERNAL,
                format!("sandbox {id:?}: destroy: {}", errors.join("; ")),
            ));
        }
        log::info!("sandbox {id:?} destroyed");
        if crate::pid1::is_pid1() {
            // The VM's life ends with its sandbox. The answer goes out on
            // the connection's writer task first; give it that moment.
            tokio::spawn(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                log::info!("powering off");
                crate::pid1::poweroff();
            });
        }
        Ok(Empty::new())
    }
}
