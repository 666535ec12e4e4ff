//! CreateSandbox and DestroySandbox: hostname, DNS, the sandbox's storages.

use std::path::Path;

use protocols::agent::*;
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};
use crate::sandbox::lock;
use crate::sandbox_files::{self, ETC_RESOLV, SANDBOX_DIR};

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
        if req.sandbox_pidns {
            return Err(status(
                Code::UNIMPLEMENTED,
                format!(
                    "sandbox {sid:?}: sandbox_pidns: a shared pid namespace is not supported yet"
                ),
            ));
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
        blocking(move || {
            let fail = |code: Code, msg: String| status(code, format!("sandbox {sid:?}: {msg}"));
            if !req.hostname.is_empty() {
                sandbox_files::set_hostname(&req.hostname)
                    .map_err(|e| fail(Code::INVALID_ARGUMENT, e.to_string()))?;
            }
            let dns_dir = Path::new(SANDBOX_DIR);
            let etc = Path::new(ETC_RESOLV);
            if !req.dns.is_empty() {
                sandbox_files::setup_dns(dns_dir, &req.dns, etc)
                    .map_err(|e| fail(Code::INVALID_ARGUMENT, e.to_string()))?;
            }
            for s in &req.storages {
                if let Err(e) = sandbox.storage.add(SANDBOX_OWNER, s) {
                    // Nothing half-done: undo what this request set up.
                    for e in sandbox.storage.release(SANDBOX_OWNER) {
                        log::warn!("sandbox {sid:?}: undo storage: {e}");
                    }
                    if !req.dns.is_empty() {
                        let _ = sandbox_files::teardown_dns(dns_dir, etc);
                    }
                    return Err(fail(Code::INVALID_ARGUMENT, e.to_string()));
                }
            }
            log::info!("sandbox {sid:?} created ({} storages)", req.storages.len());
            Ok(Empty::new())
        })
        .await?
    }

    pub(super) async fn do_destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        _req: DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        self.destroy_all().await;
        let sandbox = self.sandbox.clone();
        let errors = blocking(move || {
            let mut errors: Vec<String> = sandbox
                .storage
                .release_all()
                .into_iter()
                .map(|e| e.to_string())
                .collect();
            if let Err(e) =
                sandbox_files::teardown_dns(Path::new(SANDBOX_DIR), Path::new(ETC_RESOLV))
            {
                errors.push(e.to_string());
            }
            errors
        })
        .await?;
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
        Ok(Empty::new())
    }
}
