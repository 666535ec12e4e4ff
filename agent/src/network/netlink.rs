//! The kernel side: one rtnetlink connection, opened on first use, the few
//! requests the network calls make, and the conversions between netlink
//! messages and wire messages.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Mutex;

use futures_util::TryStreamExt;
use protocols::types::{IPAddress, IPFamily, Interface, Route};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::wire::{format_hwaddr, NeighborConfig, Prefix, RouteConfig, RouteSource};

/// The open connection, if any. Its task runs on the agent's runtime; the
/// lock is only held to clone or replace the handle, never across an await.
static CONNECTION: Mutex<Option<Handle>> = Mutex::new(None);

/// A handle on the netlink connection.
pub struct Netlink {
    handle: Handle,
}

/// Opens the connection on first use and spawns its task on the current
/// tokio runtime, so an agent that never configures the network never opens
/// the socket. Must be called from within the runtime.
pub fn connect() -> io::Result<Netlink> {
    let mut conn = crate::lock::lock(&CONNECTION);
    if let Some(handle) = conn.as_ref() {
        return Ok(Netlink {
            handle: handle.clone(),
        });
    }
    let (task, handle, _unsolicited) = rtnetlink::new_connection()?;
    tokio::spawn(task);
    *conn = Some(handle.clone());
    Ok(Netlink { handle })
}

fn kernel_error(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        rtnetlink::Error::RequestFailed => {
            // The connection task has ended: the next call opens a new one.
            *crate::lock::lock(&CONNECTION) = None;
            io::Error::new(io::ErrorKind::BrokenPipe, "netlink connection closed")
        }
        e => io::Error::other(e.to_string()),
    }
}

/// Errors a delete may meet when the object went away with another one (an
/// IPv4 primary address takes its secondaries along, a route its cached
/// copies): the goal is reached.
pub fn already_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL | libc::ENODEV)
    )
}

impl Netlink {
    pub async fn links(&self) -> io::Result<Vec<Link>> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(Link)
            .try_collect()
            .await
            .map_err(kernel_error)
    }

    pub async fn addresses(&self) -> io::Result<Vec<AddressMessage>> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(kernel_error)
    }

    /// Sets what `msg` carries on the link `msg.header.index`.
    pub async fn set_link(&self, msg: LinkMessage) -> io::Result<()> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(kernel_error)
    }

    pub async fn add_address(&self, index: u32, p: Prefix) -> io::Result<()> {
        self.handle
            .address()
            .add(index, p.addr, p.len)
            .execute()
            .await
            .map_err(kernel_error)
    }

    pub async fn del_address(&self, msg: AddressMessage) -> io::Result<()> {
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(kernel_error)
    }

    /// The main table's routes, IPv4 then IPv6. The two dumps run one after
    /// the other: the kernel answers EBUSY to a second dump on one socket.
    pub async fn routes(&self) -> io::Result<Vec<RouteMessage>> {
        let mut all = Vec::new();
        for query in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(kernel_error)?;
            all.extend(routes.into_iter().filter(in_main_table));
        }
        Ok(all)
    }

    /// Adds a route; true if it is new. One that exists already (the kernel
    /// makes the subnet route of each address) is not an error.
    pub async fn add_route(&self, msg: RouteMessage) -> io::Result<bool> {
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = kernel_error(e);
                if e.raw_os_error() == Some(libc::EEXIST) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn del_route(&self, msg: RouteMessage) -> io::Result<()> {
        self.handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(kernel_error)
    }

    /// Adds or replaces a neighbour entry (`ip neigh replace`).
    pub async fn add_neighbor(&self, index: u32, n: &NeighborConfig) -> io::Result<()> {
        let mut req = self
            .handle
            .neighbours()
            .add(index, n.ip)
            .state(NeighbourState::from(n.state))
            .flags(NeighbourFlags::from_bits_retain(n.flags))
            .replace();
        if let Some(ll) = &n.lladdr {
            req = req.link_layer_address(ll);
        }
        req.execute().await.map_err(kernel_error)
    }
}

/// A link as the kernel reports it.
pub struct Link(pub LinkMessage);

impl Link {
    pub fn index(&self) -> u32 {
        self.0.header.index
    }

    pub fn name(&self) -> &str {
        self.0
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.as_str()),
                _ => None,
            })
            .unwrap_or("")
    }

    pub fn hwaddr(&self) -> &[u8] {
        self.0
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(a) => Some(a.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    pub fn mtu(&self) -> u32 {
        self.0
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// The link kind (`veth`, `dummy`, ...); empty for a physical device.
    pub fn kind(&self) -> String {
        self.0
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or_default()
    }

    pub fn is_up(&self) -> bool {
        self.0.header.flags.contains(LinkFlags::Up)
    }

    pub fn is_loopback(&self) -> bool {
        self.0.header.flags.contains(LinkFlags::Loopback)
    }

    /// The wire form, with this link's addresses out of `addresses`.
    pub fn to_wire(&self, addresses: &[AddressMessage]) -> Interface {
        let mut iface = Interface::new();
        iface.name = self.name().to_string();
        iface.hwAddr = format_hwaddr(self.hwaddr());
        iface.mtu = u64::from(self.mtu());
        iface.type_ = self.kind();
        iface.raw_flags = self.0.header.flags.bits();
        iface.IPAddresses = addresses
            .iter()
            .filter(|a| a.header.index == self.index())
            .filter_map(address_to_wire)
            .collect();
        iface
    }

    /// A message that renames the link (when `name` is given), sets its MTU
    /// (when not 0) and its ARP flag, and brings it up or down.
    pub fn change(&self, name: Option<&str>, mtu: u32, arp: Option<bool>, up: bool) -> LinkMessage {
        let mut b = LinkUnspec::new_with_index(self.index());
        if let Some(n) = name {
            b = b.name(n);
        }
        if mtu > 0 {
            b = b.mtu(mtu);
        }
        if let Some(arp) = arp {
            b = b.arp(arp);
        }
        b = if up { b.up() } else { b.down() };
        b.build()
    }
}

fn address_to_wire(a: &AddressMessage) -> Option<IPAddress> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on a point-to-point link and the only one for IPv6.
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = local.or_else(|| {
        a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    let mut w = IPAddress::new();
    w.family = family(&addr).into();
    w.address = addr.to_string();
    w.mask = a.header.prefix_len.to_string();
    Some(w)
}

fn family(addr: &IpAddr) -> IPFamily {
    if addr.is_ipv6() {
        IPFamily::v6
    } else {
        IPFamily::v4
    }
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_address(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn in_main_table(r: &RouteMessage) -> bool {
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN)
}

/// The parts of a kernel route that decide whether UpdateRoutes removes it.
pub struct RouteFacts {
    pub kernel_made: bool,
    pub dest: Option<Prefix>,
    pub oif: Option<u32>,
    pub via_gateway: bool,
}

pub fn route_facts(r: &RouteMessage) -> RouteFacts {
    let mut facts = RouteFacts {
        kernel_made: r.header.protocol == RouteProtocol::Kernel,
        dest: None,
        oif: None,
        via_gateway: false,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                facts.dest = ip(d).map(|addr| Prefix {
                    addr,
                    len: r.header.destination_prefix_length,
                })
            }
            RouteAttribute::Oif(i) => facts.oif = Some(*i),
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => facts.via_gateway = true,
            _ => {}
        }
    }
    facts
}

/// A dumped route made fit to be added again: only the attributes that
/// describe it, and of its flags only `onlink` (the kernel refuses state
/// flags such as `linkdown` in a request).
pub fn restorable(mut m: RouteMessage) -> RouteMessage {
    m.attributes.retain(|a| {
        matches!(
            a,
            RouteAttribute::Destination(_)
                | RouteAttribute::Source(_)
                | RouteAttribute::Gateway(_)
                | RouteAttribute::PrefSource(_)
                | RouteAttribute::Oif(_)
                | RouteAttribute::Priority(_)
                | RouteAttribute::Table(_)
                | RouteAttribute::Metrics(_)
                | RouteAttribute::Preference(_)
        )
    });
    m.header.flags &= RouteFlags::Onlink;
    m
}

/// The netlink message adding `r` through the link `oif`: main table,
/// unicast, `proto boot` as Kata's agent marks the routes it was given.
pub fn route_message(r: &RouteConfig, oif: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if r.is_v6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.destination_prefix_length = r.dest.len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::from(r.scope);
    m.header.kind = RouteType::Unicast;
    m.header.flags = RouteFlags::from_bits_retain(r.flags);
    if !r.dest.is_default() {
        m.attributes
            .push(RouteAttribute::Destination(route_address(r.dest.addr)));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    if let Some(gw) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    match r.source {
        Some(RouteSource::Preferred(a)) => m
            .attributes
            .push(RouteAttribute::PrefSource(route_address(a))),
        Some(RouteSource::Prefix(p)) => {
            m.header.source_prefix_length = p.len;
            m.attributes
                .push(RouteAttribute::Source(route_address(p.addr)));
        }
        None => {}
    }
    m
}

/// The wire form of a kernel route; `names` maps link indices to names.
/// A default route has an empty `dest`, as Kata's runtime sends it.
pub fn route_to_wire(r: &RouteMessage, names: &HashMap<u32, String>) -> Route {
    let mut w = Route::new();
    w.family = if r.header.address_family == AddressFamily::Inet6 {
        IPFamily::v6
    } else {
        IPFamily::v4
    }
    .into();
    w.scope = u32::from(u8::from(r.header.scope));
    w.flags = r.header.flags.bits();
    let mut pref_source = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(d) = ip(d) {
                    w.dest = format!("{d}/{}", r.header.destination_prefix_length);
                }
            }
            RouteAttribute::Gateway(g) => {
                if let Some(g) = ip(g) {
                    w.gateway = g.to_string();
                }
            }
            RouteAttribute::Oif(i) => w.device = names.get(i).cloned().unwrap_or_default(),
            RouteAttribute::Source(s) => {
                if let Some(s) = ip(s) {
                    w.source = format!("{s}/{}", r.header.source_prefix_length);
                }
            }
            RouteAttribute::PrefSource(s) => pref_source = ip(s),
            _ => {}
        }
    }
    if w.source.is_empty() {
        if let Some(s) = pref_source {
            w.source = s.to_string();
        }
    }
    w
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn route(dest: &str, gw: &str, dev: &str, src: &str) -> RouteConfig {
        let mut r = Route::new();
        r.dest = dest.into();
        r.gateway = gw.into();
        r.device = dev.into();
        r.source = src.into();
        RouteConfig::from_wire(&r).unwrap()
    }

    #[test]
    fn routes_round_trip_through_netlink_messages() {
        let names = HashMap::from([(7, "eth0".to_string())]);
        for (dest, gw, src) in [
            ("10.0.0.0/24", "", "10.0.0.2"),
            ("", "10.0.0.1", ""),
            ("192.168.0.0/16", "10.0.0.1", ""),
            ("fd00::/64", "", "fd01::/64"),
            ("", "fd00::1", ""),
        ] {
            let m = route_message(&route(dest, gw, "eth0", src), 7);
            assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
            assert_eq!(m.header.protocol, RouteProtocol::Boot);
            assert!(in_main_table(&m));
            let w = route_to_wire(&m, &names);
            assert_eq!(
                (
                    w.dest.as_str(),
                    w.gateway.as_str(),
                    w.device.as_str(),
                    w.source.as_str()
                ),
                (dest, gw, "eth0", src)
            );
            let v6 = dest.contains(':') || gw.contains(':');
            assert_eq!(
                w.family.enum_value(),
                Ok(if v6 { IPFamily::v6 } else { IPFamily::v4 })
            );
        }
    }

    #[test]
    fn route_header_fields() {
        let mut r = Route::new();
        r.dest = "10.0.0.0/24".into();
        r.device = "eth0".into();
        r.scope = 253;
        r.flags = 4; // RTNH_F_ONLINK
        let m = route_message(&RouteConfig::from_wire(&r).unwrap(), 3);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.destination_prefix_length, 24);
        assert_eq!(m.header.flags, RouteFlags::Onlink);
        let facts = route_facts(&m);
        assert!(!facts.kernel_made);
        assert_eq!(facts.oif, Some(3));
        assert!(!facts.via_gateway);
        let gw = route_message(&route("", "10.0.0.1", "eth0", ""), 3);
        assert!(route_facts(&gw).via_gateway);
        assert_eq!(facts.dest.unwrap().to_string(), "10.0.0.0/24");
        let w = route_to_wire(&m, &HashMap::new());
        assert_eq!((w.scope, w.flags, w.device.as_str()), (253, 4, ""));
    }

    #[test]
    fn restored_routes_lose_state() {
        let mut m = route_message(&route("10.0.0.0/24", "", "eth0", ""), 2);
        m.header.flags = RouteFlags::Onlink | RouteFlags::Linkdown;
        m.attributes.push(RouteAttribute::Expires(5));
        let r = restorable(m);
        assert_eq!(r.header.flags, RouteFlags::Onlink);
        assert!(!r
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Expires(_))));
        assert!(r
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(2))));
    }

    #[test]
    fn other_tables_are_not_main() {
        let mut m = RouteMessage::default();
        m.header.table = 255; // local
        assert!(!in_main_table(&m));
        m.header.table = 252;
        m.attributes.push(RouteAttribute::Table(1000));
        assert!(!in_main_table(&m));
    }

    #[test]
    fn addresses_prefer_the_local_address() {
        let mut a = AddressMessage::default();
        a.header.prefix_len = 32;
        a.attributes
            .push(AddressAttribute::Address("10.0.0.9".parse().unwrap()));
        a.attributes
            .push(AddressAttribute::Local("10.0.0.1".parse().unwrap()));
        let w = address_to_wire(&a).unwrap();
        assert_eq!((w.address.as_str(), w.mask.as_str()), ("10.0.0.1", "32"));
        assert_eq!(w.family.enum_value(), Ok(IPFamily::v4));
        let mut b = AddressMessage::default();
        b.header.prefix_len = 64;
        b.attributes
            .push(AddressAttribute::Address("fd00::1".parse().unwrap()));
        let w = address_to_wire(&b).unwrap();
        assert_eq!((w.address.as_str(), w.mask.as_str()), ("fd00::1", "64"));
        assert_eq!(w.family.enum_value(), Ok(IPFamily::v6));
        assert!(address_to_wire(&AddressMessage::default()).is_none());
    }
}
