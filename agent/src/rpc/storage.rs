//! RemoveStaleVirtiofsShareMounts: see [`crate::storage::refresh_share_mounts`].

use std::path::Path;

use protocols::agent::RemoveStaleVirtiofsShareMountsRequest;
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};
use crate::storage::{refresh_share_mounts, SHARED_DIR};

impl AgentImpl {
    pub(super) async fn do_remove_stale_virtiofs_share_mounts(
        &self,
        _ctx: &TtrpcContext,
        _req: RemoveStaleVirtiofsShareMountsRequest,
    ) -> ttrpc::Result<Empty> {
        let stated = blocking(|| refresh_share_mounts(Path::new(SHARED_DIR)))
            .await?
            .map_err(|e| {
                status(
                    Code::INTERNAL,
                    format!("share mounts under {SHARED_DIR}: read /proc/self/mountinfo: {e}"),
                )
            })?;
        for (mp, r) in stated {
            match r {
                Ok(()) => log::debug!("stat {}: ok", mp.display()),
                Err(e) => log::info!("stat {}: {e}", mp.display()),
            }
        }
        Ok(Empty::new())
    }
}
