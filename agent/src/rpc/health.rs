//! `grpc.Health`: liveness and version for the shim.

use async_trait::async_trait;
use protocols::health::{
    health_check_response::ServingStatus, CheckRequest, HealthCheckResponse, VersionCheckResponse,
};
use protocols::health_ttrpc::Health;
use ttrpc::asynchronous::TtrpcContext;

use crate::version::{AGENT_VERSION, API_VERSION};

pub struct HealthImpl;

#[async_trait]
impl Health for HealthImpl {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<HealthCheckResponse> {
        let mut resp = HealthCheckResponse::new();
        resp.status = ServingStatus::SERVING.into();
        Ok(resp)
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<VersionCheckResponse> {
        let mut resp = VersionCheckResponse::new();
        resp.grpc_version = API_VERSION.to_string();
        resp.agent_version = AGENT_VERSION.to_string();
        Ok(resp)
    }
}
