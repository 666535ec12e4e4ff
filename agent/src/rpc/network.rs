//! Network calls: UpdateInterface, UpdateRoutes, ListInterfaces, ListRoutes
//! and AddARPNeighbors, over [`crate::network`].

use protocols::agent::*;
use protocols::empty::Empty;
use protocols::types::Interface;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{status, AgentImpl};
use crate::network as net;

/// The status code for a network error: whose fault it was.
fn code_of(e: &net::Error) -> Code {
    match e {
        net::Error::Invalid { .. } => Code::INVALID_ARGUMENT,
        net::Error::NotFound { .. } => Code::NOT_FOUND,
        net::Error::Kernel { source, .. } => match source.raw_os_error() {
            Some(libc::EINVAL | libc::ERANGE | libc::EAFNOSUPPORT) => Code::INVALID_ARGUMENT,
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH) => Code::NOT_FOUND,
            Some(libc::EEXIST) => Code::ALREADY_EXISTS,
            Some(libc::EPERM | libc::EACCES) => Code::PERMISSION_DENIED,
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL) => {
                Code::FAILED_PRECONDITION
            }
            _ => Code::INTERNAL,
        },
    }
}

fn net_status(e: net::Error) -> ttrpc::Error {
    status(code_of(&e), e.to_string())
}

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
        net::update_interface(&iface, self.sandbox.settings.hotplug_timeout)
            .await
            .map_err(net_status)
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
            .map_err(net_status)?;
        Ok(resp)
    }

    pub(super) async fn do_list_interfaces(
        &self,
        _ctx: &TtrpcContext,
        _req: ListInterfacesRequest,
    ) -> ttrpc::Result<Interfaces> {
        let mut resp = Interfaces::new();
        resp.Interfaces = net::list_interfaces().await.map_err(net_status)?;
        Ok(resp)
    }

    pub(super) async fn do_list_routes(
        &self,
        _ctx: &TtrpcContext,
        _req: ListRoutesRequest,
    ) -> ttrpc::Result<Routes> {
        let mut resp = Routes::new();
        resp.Routes = net::list_routes().await.map_err(net_status)?;
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
            .map_err(net_status)?;
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
        assert_eq!(code_of(&kernel(libc::EINVAL)), Code::INVALID_ARGUMENT);
        assert_eq!(code_of(&kernel(libc::ENODEV)), Code::NOT_FOUND);
        assert_eq!(
            code_of(&kernel(libc::ENETUNREACH)),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(code_of(&kernel(libc::ENOBUFS)), Code::INTERNAL);
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
        assert_eq!(code_of(&nf), Code::NOT_FOUND);
    }
}
