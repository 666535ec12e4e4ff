//! Container lifecycle: CreateContainer, StartContainer, RemoveContainer,
//! PauseContainer, ResumeContainer, UpdateContainer, StatsContainer. Each
//! converts the request, calls the container layer ([`crate::containers`])
//! in one blocking call, and maps the error.

use std::sync::Arc;

use protocols::agent::*;
use protocols::empty::Empty;
use rustjail::oci_spec::runtime::LinuxResources;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::oci;
use super::{blocking, status, AgentImpl};
use crate::containers::{self, CreateParams, Ctr};
use crate::lock::lock;

impl AgentImpl {
    pub(super) async fn do_create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let id = req.container_id;
        let invalid = |reason: String| containers::Error::Invalid {
            id: id.clone(),
            reason,
        };
        let spec_pb = req
            .OCI
            .as_ref()
            .ok_or_else(|| invalid("the request has no OCI spec".into()))?;
        let spec = oci::spec_from_proto(spec_pb).map_err(|e| invalid(e.to_string()))?;
        let params = CreateParams {
            id: id.clone(),
            exec_id: req.exec_id,
            spec,
            sandbox_pidns: req.sandbox_pidns,
            storages: req.storages,
            devices: req.devices,
        };
        let sandbox = self.sandbox.clone();
        blocking(move || containers::create(&sandbox, params)).await??;
        log::info!("container {id:?} created");
        Ok(Empty::new())
    }

    /// Looks a container up or answers NOT_FOUND naming it.
    pub(super) fn ctr(&self, id: &str) -> ttrpc::Result<Arc<Ctr>> {
        self.sandbox
            .get(id)
            .ok_or_else(|| containers::Error::NotFound { id: id.to_string() }.into())
    }

    pub(super) async fn do_start_container(
        &self,
        _ctx: &TtrpcContext,
        req: StartContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.container_id)?;
        let c = ctr.clone();
        blocking(move || containers::start(&c)).await??;
        log::info!("container {:?} started", ctr.id);
        Ok(Empty::new())
    }

    pub(super) async fn do_remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.remove(req.container_id, req.timeout).await?;
        Ok(Empty::new())
    }

    async fn remove(&self, id: String, timeout: u32) -> ttrpc::Result<()> {
        let sandbox = self.sandbox.clone();
        let cid = id.clone();
        blocking(move || containers::remove(&sandbox, &cid, timeout)).await??;
        log::info!("container {id:?} removed");
        Ok(())
    }

    pub(super) async fn do_pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: PauseContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.container_id)?;
        blocking(move || lock(&ctr.jail).pause())
            .await?
            .map_err(containers::Error::from)?;
        Ok(Empty::new())
    }

    pub(super) async fn do_resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: ResumeContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.container_id)?;
        blocking(move || lock(&ctr.jail).resume())
            .await?
            .map_err(containers::Error::from)?;
        Ok(Empty::new())
    }

    pub(super) async fn do_update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let id = req.container_id.clone();
        let ctr = self.ctr(&id)?;
        let res_pb = req.resources.as_ref().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                format!("container {id:?}: update: no resources given"),
            )
        })?;
        let resources: LinuxResources = oci::from_json(&oci::resources(res_pb)).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("container {id:?}: invalid resources: {e}"),
            )
        })?;
        blocking(move || lock(&ctr.jail).update(&resources))
            .await?
            .map_err(containers::Error::from)?;
        Ok(Empty::new())
    }

    pub(super) async fn do_stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        let ctr = self.ctr(&req.container_id)?;
        let stats = blocking(move || lock(&ctr.jail).stats()).await?;
        let mut resp = StatsContainerResponse::new();
        resp.cgroup_stats = Some(super::stats::convert(&stats)).into();
        Ok(resp)
    }
}
