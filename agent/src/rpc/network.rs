//! Network calls: UpdateInterface, UpdateRoutes, ListInterfaces, ListRoutes
//! and AddARPNeighbors, over [`crate::network`].

use protocols::agent::*;
use protocols::empty::Empty;
use protocols::types::Interface;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{status, AgentImpl};
use crate::network as net;

impl AgentImpl {
    pub(super) async fn do_update_interface(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateInterfaceRequest,
    ) -> ttrpc::Result<Interface> {
        let iface = req.interface.into_option().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                "update interface: the request has no interface",
            )
        })?;
        net::update_interface(
            &iface,
            self.sandbox.settings.hotplug_timeout,
            &self.sandbox.devices,
        )
        .await
        .map_err(ttrpc::Error::from)
    }

    pub(super) async fn do_update_routes(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateRoutesRequest,
    ) -> ttrpc::Result<Routes> {
        let routes = req.routes.into_option().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                "update routes: the request has no route list",
            )
        })?;
        let mut resp = Routes::new();
        resp.Routes = net::update_routes(&routes.Routes)
            .await
            .map_err(ttrpc::Error::from)?;
        Ok(resp)
    }

    pub(super) async fn do_list_interfaces(
        &self,
        _ctx: &TtrpcContext,
        _req: ListInterfacesRequest,
    ) -> ttrpc::Result<Interfaces> {
        let mut resp = Interfaces::new();
        resp.Interfaces = net::list_interfaces().await.map_err(ttrpc::Error::from)?;
        Ok(resp)
    }

    pub(super) async fn do_list_routes(
        &self,
        _ctx: &TtrpcContext,
        _req: ListRoutesRequest,
    ) -> ttrpc::Result<Routes> {
        let mut resp = Routes::new();
        resp.Routes = net::list_routes().await.map_err(ttrpc::Error::from)?;
        Ok(resp)
    }

    pub(super) async fn do_add_arp_neighbors(
        &self,
        _ctx: &TtrpcContext,
        req: AddARPNeighborsRequest,
    ) -> ttrpc::Result<Empty> {
        let neighbors = req.neighbors.into_option().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                "add arp neighbors: the request has no neighbor list",
            )
        })?;
        net::add_arp_neighbors(&neighbors.ARPNeighbors)
            .await
            .map_err(ttrpc::Error::from)?;
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_say_whose_fault_it_was() {
        let kernel = |errno| net::Error::Kernel {
            object: "route \"default via 10.0.0.1 dev eth0\"".into(),
            op: "add".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(
            net::Error::code(&kernel(libc::EINVAL)),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(net::Error::code(&kernel(libc::ENODEV)), Code::NOT_FOUND);
        assert_eq!(
            net::Error::code(&kernel(libc::ENETUNREACH)),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(net::Error::code(&kernel(libc::ENOBUFS)), Code::INTERNAL);
        let e = kernel(libc::ENETUNREACH);
        assert!(
            e.to_string()
                .starts_with("route \"default via 10.0.0.1 dev eth0\": add: "),
            "{e}"
        );
        let nf = net::Error::NotFound {
            object: "x".into(),
            reason: "y".into(),
        };
        assert_eq!(net::Error::code(&nf), Code::NOT_FOUND);
    }
}
