//! AddSwap, AddSwapPath and ResizeVolume: see [`crate::volume`].

use std::path::Path;

use protocols::agent::{AddSwapPathRequest, AddSwapRequest, ResizeVolumeRequest};
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;

use super::{blocking, AgentImpl};
use crate::volume::{resize, swap, VOLUME_ROOT};

impl AgentImpl {
    pub(super) async fn do_add_swap(
        &self,
        _ctx: &TtrpcContext,
        req: AddSwapRequest,
    ) -> ttrpc::Result<Empty> {
        let devices = self.sandbox.devices.clone();
        blocking(move || swap::add_swap(&devices, &req.PCIPath)).await??;
        Ok(Empty::new())
    }

    pub(super) async fn do_add_swap_path(
        &self,
        _ctx: &TtrpcContext,
        req: AddSwapPathRequest,
    ) -> ttrpc::Result<Empty> {
        blocking(move || swap::add_swap_path(&req.path, &swap::SwapRoots::default())).await??;
        Ok(Empty::new())
    }

    pub(super) async fn do_resize_volume(
        &self,
        _ctx: &TtrpcContext,
        req: ResizeVolumeRequest,
    ) -> ttrpc::Result<Empty> {
        let wait = self.sandbox.settings.hotplug_timeout;
        blocking(move || {
            resize::resize(
                &req.volume_guest_path,
                req.size,
                Path::new(VOLUME_ROOT),
                wait,
            )
        })
        .await??;
        Ok(Empty::new())
    }
}
