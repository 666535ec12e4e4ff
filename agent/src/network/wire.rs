//! Pure conversions: wire messages (`protocols::types`) into checked
//! configurations, and text forms of addresses, prefixes and hardware
//! addresses. Nothing here talks to the kernel, so all of it is unit tested.

use std::fmt;
use std::net::IpAddr;

use protocols::types::{ARPNeighbor, IPFamily, Interface, Route};

use super::Error;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// `NUD_PERMANENT`: the state of a neighbour entry when the request gives none.
pub const NUD_PERMANENT: u16 = 0x80;

/// An address with a prefix length, as `ip` writes it: `10.0.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// `0.0.0.0/0` or `::/0`.
    pub fn default_route(v6: bool) -> Prefix {
        let addr = if v6 {
            IpAddr::from([0u16; 8])
        } else {
            IpAddr::from([0u8; 4])
        };
        Prefix { addr, len: 0 }
    }

    pub fn is_default(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// Why a text form was refused; each names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0:?}: invalid IP address")]
    Ip(String),
    #[error("mask {0:?}: longer than {1} bits")]
    MaskTooLong(String, u8),
    #[error("mask {0:?}: invalid prefix length")]
    Mask(String),
    #[error("{0:?}: invalid prefix length")]
    PrefixLen(String),
    #[error("{0:?}: invalid hardware address")]
    HwAddr(String),
    #[error("name {0:?}: must be 1 to {IFNAME_MAX} bytes long")]
    IfNameLength(String),
    #[error("name {0:?}: not a valid interface name")]
    IfName(String),
}

/// An IP address.
pub fn parse_ip(text: &str) -> Result<IpAddr, ParseError> {
    text.trim()
        .parse()
        .map_err(|_| ParseError::Ip(text.to_string()))
}

/// A prefix length for `addr`: a number (`24`), or for IPv4 a dotted
/// netmask (`255.255.255.0`), which older clients send.
pub fn parse_prefix_len(mask: &str, addr: &IpAddr) -> Result<u8, ParseError> {
    let max = max_len(addr);
    let text = mask.trim();
    if let Ok(n) = text.parse::<u8>() {
        if n <= max {
            return Ok(n);
        }
        return Err(ParseError::MaskTooLong(mask.to_string(), max));
    }
    if addr.is_ipv4() {
        if let Ok(std::net::IpAddr::V4(m)) = text.parse::<IpAddr>() {
            let bits = u32::from(m);
            // A netmask is contiguous ones followed by zeros.
            if bits.leading_ones() + bits.trailing_zeros() == 32 {
                return Ok(bits.leading_ones() as u8);
            }
        }
    }
    Err(ParseError::Mask(mask.to_string()))
}

/// `addr/len`, or a bare address meaning a host prefix (`/32`, `/128`).
pub fn parse_cidr(text: &str) -> Result<Prefix, ParseError> {
    let (a, len) = match text.trim().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text.trim(), None),
    };
    let addr = a
        .parse::<IpAddr>()
        .map_err(|_| ParseError::Ip(text.to_string()))?;
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max_len(&addr))
            .ok_or_else(|| ParseError::PrefixLen(text.to_string()))?,
        None => max_len(&addr),
    };
    Ok(Prefix { addr, len })
}

/// A hardware address: hex octets separated by `:` (or `-`), 1 to 32 of
/// them (Ethernet has 6, InfiniBand 20).
pub fn parse_hwaddr(text: &str) -> Result<Vec<u8>, ParseError> {
    let bad = || ParseError::HwAddr(text.to_string());
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let octets = t
        .split([':', '-'])
        .map(|o| {
            if o.is_empty() || o.len() > 2 {
                return None;
            }
            u8::from_str_radix(o, 16).ok()
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    if octets.len() > 32 {
        return Err(bad());
    }
    Ok(octets)
}

/// `02:42:ac:11:00:02`: lower case, as `ip` and Go's `net.HardwareAddr` write it.
pub fn format_hwaddr(octets: &[u8]) -> String {
    octets
        .iter()
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Checks an interface name as the kernel's `dev_valid_name` does.
pub fn check_ifname(name: &str) -> Result<(), ParseError> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(ParseError::IfNameLength(name.to_string()));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(ParseError::IfName(name.to_string()));
    }
    Ok(())
}

/// How the request names an interface in messages:
/// `interface "eth0" (hwaddr 02:42:ac:11:00:02)`.
pub fn interface_label(iface: &Interface) -> String {
    format!("interface {:?} (hwaddr {})", iface.name, iface.hwAddr)
}

/// What UpdateInterface asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub hwaddr: Vec<u8>,
    /// New name; empty keeps the current one.
    pub name: String,
    /// 0 keeps the current MTU.
    pub mtu: u32,
    pub addresses: Vec<Prefix>,
    /// `IFF_NOARP` asked for in `raw_flags`.
    pub noarp: bool,
}

impl InterfaceConfig {
    pub fn from_wire(iface: &Interface) -> Result<InterfaceConfig, Error> {
        let invalid = |reason: String| Error::Invalid {
            object: interface_label(iface),
            reason,
        };
        let hwaddr = parse_hwaddr(&iface.hwAddr).map_err(|r| invalid(format!("hwaddr {r}")))?;
        if !iface.name.is_empty() {
            check_ifname(&iface.name).map_err(|r| invalid(r.to_string()))?;
        }
        let mtu = u32::try_from(iface.mtu)
            .map_err(|_| invalid(format!("mtu {}: out of range", iface.mtu)))?;
        let mut addresses = Vec::with_capacity(iface.IPAddresses.len());
        for a in &iface.IPAddresses {
            let addr = parse_ip(&a.address).map_err(|r| invalid(format!("address {r}")))?;
            let len = parse_prefix_len(&a.mask, &addr)
                .map_err(|r| invalid(format!("address {:?}: {r}", a.address)))?;
            addresses.push(Prefix { addr, len });
        }
        Ok(InterfaceConfig {
            hwaddr,
            name: iface.name.clone(),
            mtu,
            addresses,
            noarp: iface.raw_flags & libc::IFF_NOARP as u32 != 0,
        })
    }
}

/// Where a route's source comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    /// A bare address (or `/0`): the preferred source, `ip route ... src`.
    /// This is what Kata's runtime sends (Go netlink's `Route.Src`).
    Preferred(IpAddr),
    /// `addr/len` with len > 0: a source prefix, `ip route ... from`.
    Prefix(Prefix),
}

/// What one route of UpdateRoutes asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub dest: Prefix,
    pub gateway: Option<IpAddr>,
    pub device: String,
    pub source: Option<RouteSource>,
    pub scope: u8,
    pub flags: u32,
    /// `route "10.0.0.0/24 via 10.0.0.1 dev eth0"`, for messages.
    pub label: String,
}

impl RouteConfig {
    pub fn is_v6(&self) -> bool {
        self.dest.addr.is_ipv6()
    }

    pub fn from_wire(route: &Route) -> Result<RouteConfig, Error> {
        let label = route_label(route);
        let invalid = |reason: String| Error::Invalid {
            object: label.clone(),
            reason,
        };
        if route.device.is_empty() {
            return Err(invalid("no device".into()));
        }
        let dest = match route.dest.trim() {
            "" | "default" => None,
            d => Some(parse_cidr(d).map_err(|r| invalid(format!("dest {r}")))?),
        };
        let gateway = match route.gateway.trim() {
            "" => None,
            g => Some(parse_ip(g).map_err(|r| invalid(format!("gateway {r}")))?),
        };
        let source = match route.source.trim() {
            "" => None,
            s => {
                let p = parse_cidr(s).map_err(|r| invalid(format!("source {r}")))?;
                if s.contains('/') && p.len > 0 {
                    Some(RouteSource::Prefix(p))
                } else {
                    Some(RouteSource::Preferred(p.addr))
                }
            }
        };
        // The addresses decide the family; the family field only matters
        // for a default route without a gateway.
        let families: Vec<bool> = dest
            .iter()
            .map(|d| d.addr.is_ipv6())
            .chain(gateway.iter().map(IpAddr::is_ipv6))
            .chain(source.iter().map(|s| match s {
                RouteSource::Preferred(a) => a.is_ipv6(),
                RouteSource::Prefix(p) => p.addr.is_ipv6(),
            }))
            .collect();
        let v6 = match families.first() {
            Some(first) => {
                if families.iter().any(|f| f != first) {
                    return Err(invalid("mixes IPv4 and IPv6 addresses".into()));
                }
                *first
            }
            None => route.family.enum_value() == Ok(IPFamily::v6),
        };
        let scope = u8::try_from(route.scope)
            .map_err(|_| invalid(format!("scope {}: out of range", route.scope)))?;
        Ok(RouteConfig {
            dest: dest.unwrap_or_else(|| Prefix::default_route(v6)),
            gateway,
            device: route.device.clone(),
            source,
            scope,
            flags: route.flags,
            label,
        })
    }
}

/// `route "10.0.0.0/24 via 10.0.0.1 dev eth0 src 10.0.0.2"`, from the wire
/// fields as given.
pub fn route_label(route: &Route) -> String {
    let mut s = if route.dest.is_empty() {
        "default".to_string()
    } else {
        route.dest.clone()
    };
    for (word, v) in [
        ("via", &route.gateway),
        ("dev", &route.device),
        ("src", &route.source),
    ] {
        if !v.is_empty() {
            s.push_str(&format!(" {word} {v}"));
        }
    }
    format!("route {s:?}")
}

/// Device routes first, then routes through a gateway: a gateway must be
/// reachable through a route that already exists. Order is otherwise kept.
pub fn order_routes(routes: Vec<RouteConfig>) -> Vec<RouteConfig> {
    let (mut direct, via): (Vec<_>, Vec<_>) = routes.into_iter().partition(|r| r.gateway.is_none());
    direct.extend(via);
    direct
}

/// What one neighbour of AddARPNeighbors asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborConfig {
    pub ip: IpAddr,
    pub device: String,
    pub lladdr: Option<Vec<u8>>,
    pub state: u16,
    pub flags: u8,
    /// `arp neighbor "10.0.0.1 dev eth0"`, for messages.
    pub label: String,
}

impl NeighborConfig {
    pub fn from_wire(n: &ARPNeighbor) -> Result<NeighborConfig, Error> {
        let to = n
            .toIPAddress
            .as_ref()
            .map(|a| a.address.as_str())
            .unwrap_or("");
        let label = format!("arp neighbor {:?}", format!("{to} dev {}", n.device));
        let invalid = |reason: String| Error::Invalid {
            object: label.clone(),
            reason,
        };
        if to.is_empty() {
            return Err(invalid("no IP address".into()));
        }
        if n.device.is_empty() {
            return Err(invalid("no device".into()));
        }
        let ip = parse_ip(to).map_err(|r| invalid(format!("address {r}")))?;
        let lladdr = match n.lladdr.trim() {
            "" => None,
            l => Some(parse_hwaddr(l).map_err(|r| invalid(format!("lladdr {r}")))?),
        };
        let state = match n.state {
            0 => NUD_PERMANENT,
            s => u16::try_from(s).map_err(|_| invalid(format!("state {s}: out of range")))?,
        };
        let flags = u8::try_from(n.flags)
            .map_err(|_| invalid(format!("flags {}: out of range", n.flags)))?;
        Ok(NeighborConfig {
            ip,
            device: n.device.clone(),
            lladdr,
            state,
            flags,
            label,
        })
    }
}

/// Whether UpdateRoutes leaves an existing route alone: routes the kernel
/// made for an address (`proto kernel`), IPv6 link-local and multicast
/// routes, routes through the loopback device, and routes without an
/// output device (blackhole, multipath) stay.
pub fn keep_on_update(
    kernel_made: bool,
    dest: Option<&Prefix>,
    on_loopback: bool,
    has_oif: bool,
) -> bool {
    if kernel_made || on_loopback || !has_oif {
        return true;
    }
    match dest.map(|d| d.addr) {
        Some(IpAddr::V6(a)) => {
            let s = a.segments()[0];
            // fe80::/10 link-local, ff00::/8 multicast.
            (s & 0xffc0) == 0xfe80 || (s & 0xff00) == 0xff00
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use protocols::types::IPAddress;

    fn v(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(parse_prefix_len("24", &v("10.0.0.1")), Ok(24));
        assert_eq!(parse_prefix_len(" 0 ", &v("10.0.0.1")), Ok(0));
        assert_eq!(parse_prefix_len("255.255.255.0", &v("10.0.0.1")), Ok(24));
        assert_eq!(parse_prefix_len("255.255.255.255", &v("10.0.0.1")), Ok(32));
        assert_eq!(parse_prefix_len("0.0.0.0", &v("10.0.0.1")), Ok(0));
        assert!(parse_prefix_len("255.0.255.0", &v("10.0.0.1")).is_err());
        assert!(parse_prefix_len("33", &v("10.0.0.1")).is_err());
        assert_eq!(parse_prefix_len("64", &v("fd00::1")), Ok(64));
        assert_eq!(parse_prefix_len("128", &v("fd00::1")), Ok(128));
        assert!(parse_prefix_len("129", &v("fd00::1")).is_err());
        assert!(parse_prefix_len("255.255.255.0", &v("fd00::1")).is_err());
        assert!(parse_prefix_len("", &v("10.0.0.1")).is_err());
        assert!(parse_prefix_len("-1", &v("10.0.0.1")).is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.1.0.0/16"),
            Ok(Prefix {
                addr: v("10.1.0.0"),
                len: 16
            })
        );
        assert_eq!(
            parse_cidr("10.1.2.3"),
            Ok(Prefix {
                addr: v("10.1.2.3"),
                len: 32
            })
        );
        assert_eq!(
            parse_cidr("fd00::/8"),
            Ok(Prefix {
                addr: v("fd00::"),
                len: 8
            })
        );
        assert_eq!(
            parse_cidr("fd00::1"),
            Ok(Prefix {
                addr: v("fd00::1"),
                len: 128
            })
        );
        for bad in [
            "10.1.0.0/33",
            "10.1.0/16",
            "10.1.0.0/",
            "x/8",
            "",
            "fd00::/129",
        ] {
            let e = parse_cidr(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(
            Prefix {
                addr: v("fd00::"),
                len: 8
            }
            .to_string(),
            "fd00::/8"
        );
    }

    #[test]
    fn hardware_addresses() {
        assert_eq!(
            parse_hwaddr("02:42:AC:11:00:0f"),
            Ok(vec![0x02, 0x42, 0xac, 0x11, 0x00, 0x0f])
        );
        assert_eq!(
            parse_hwaddr("2-42-ac-11-0-f"),
            Ok(vec![2, 0x42, 0xac, 0x11, 0, 0xf])
        );
        // The length is the link's business: InfiniBand has 20 octets.
        assert_eq!(parse_hwaddr("02:42"), Ok(vec![2, 0x42]));
        for bad in [
            "",
            "02::42",
            "02:420:ac",
            "zz:00:00:00:00:00",
            "02:42:ac:11:00:02:",
        ] {
            assert!(parse_hwaddr(bad).is_err(), "{bad}");
        }
        assert_eq!(
            format_hwaddr(&[2, 0x42, 0xac, 0x11, 0, 0xf]),
            "02:42:ac:11:00:0f"
        );
        assert_eq!(format_hwaddr(&[]), "");
    }

    #[test]
    fn interface_names() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a23456789012345").is_ok());
        for bad in ["", "a234567890123456", "a/b", "a:1", "a b", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }

    fn iface(hw: &str, addrs: &[(&str, &str)]) -> Interface {
        let mut i = Interface::new();
        i.name = "eth0".into();
        i.hwAddr = hw.into();
        i.mtu = 1400;
        for (a, m) in addrs {
            let mut ip = IPAddress::new();
            ip.address = a.to_string();
            ip.mask = m.to_string();
            i.IPAddresses.push(ip);
        }
        i
    }

    #[test]
    fn interface_config() {
        let mut i = iface(
            "02:00:00:00:00:01",
            &[("10.0.0.2", "24"), ("fd00::2", "64")],
        );
        i.raw_flags = libc::IFF_NOARP as u32;
        let c = InterfaceConfig::from_wire(&i).unwrap();
        assert_eq!(c.hwaddr, vec![2, 0, 0, 0, 0, 1]);
        assert_eq!(c.mtu, 1400);
        assert!(c.noarp);
        assert_eq!(
            c.addresses,
            vec![
                Prefix {
                    addr: v("10.0.0.2"),
                    len: 24
                },
                Prefix {
                    addr: v("fd00::2"),
                    len: 64
                }
            ]
        );

        let e = InterfaceConfig::from_wire(&iface("02:00:00:00:00:01", &[("10.0.0.300", "24")]))
            .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }));
        assert_eq!(
            e.to_string(),
            "interface \"eth0\" (hwaddr 02:00:00:00:00:01): address \"10.0.0.300\": invalid IP address"
        );
        let e = InterfaceConfig::from_wire(&iface("02:00:00:00:00:01", &[("10.0.0.3", "40")]))
            .unwrap_err();
        assert!(e.to_string().contains("mask \"40\""), "{e}");
        let e = InterfaceConfig::from_wire(&iface("nope", &[])).unwrap_err();
        assert!(
            e.to_string()
                .contains("hwaddr \"nope\": invalid hardware address"),
            "{e}"
        );
        let mut long = iface("02:00:00:00:00:01", &[]);
        long.name = "much-too-long-name".into();
        assert!(InterfaceConfig::from_wire(&long).is_err());
        let mut big = iface("02:00:00:00:00:01", &[]);
        big.mtu = u64::MAX;
        assert!(InterfaceConfig::from_wire(&big).is_err());
    }

    fn route(dest: &str, gw: &str, dev: &str) -> Route {
        let mut r = Route::new();
        r.dest = dest.into();
        r.gateway = gw.into();
        r.device = dev.into();
        r
    }

    #[test]
    fn route_config() {
        let r = RouteConfig::from_wire(&route("", "10.0.0.1", "eth0")).unwrap();
        assert_eq!(r.dest, Prefix::default_route(false));
        assert_eq!(r.gateway, Some(v("10.0.0.1")));
        assert_eq!(r.label, "route \"default via 10.0.0.1 dev eth0\"");

        let r = RouteConfig::from_wire(&route("default", "fd00::1", "eth0")).unwrap();
        assert!(r.is_v6());
        assert!(r.dest.is_default());

        let mut six = route("", "", "eth0");
        six.family = IPFamily::v6.into();
        assert!(RouteConfig::from_wire(&six).unwrap().is_v6());

        let mut src = route("10.0.0.0/24", "", "eth0");
        src.source = "10.0.0.2".into();
        src.scope = 253;
        let r = RouteConfig::from_wire(&src).unwrap();
        assert_eq!(r.source, Some(RouteSource::Preferred(v("10.0.0.2"))));
        assert_eq!(r.scope, 253);
        src.source = "fd00::/64".into();
        src.dest = "fd01::/64".into();
        let r = RouteConfig::from_wire(&src).unwrap();
        assert_eq!(
            r.source,
            Some(RouteSource::Prefix(Prefix {
                addr: v("fd00::"),
                len: 64
            }))
        );

        for (bad, why) in [
            (
                route("10.0.0.0/24", "fd00::1", "eth0"),
                "mixes IPv4 and IPv6",
            ),
            (
                route("10.0.0.0/99", "", "eth0"),
                "dest \"10.0.0.0/99\": invalid prefix length",
            ),
            (
                route("", "10.0.0", "eth0"),
                "gateway \"10.0.0\": invalid IP address",
            ),
            (route("10.0.0.0/24", "", ""), "no device"),
        ] {
            let e = RouteConfig::from_wire(&bad).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }));
            assert!(e.to_string().contains(why), "{e}");
        }
        let mut s = route("", "10.0.0.1", "eth0");
        s.scope = 256;
        assert!(RouteConfig::from_wire(&s).is_err());
    }

    #[test]
    fn device_routes_come_before_gateway_routes() {
        let routes = [
            route("", "10.0.0.1", "eth0"),
            route("10.0.0.0/24", "", "eth0"),
            route("192.168.0.0/16", "10.0.0.1", "eth0"),
            route("10.1.0.0/24", "", "eth1"),
        ]
        .iter()
        .map(|r| RouteConfig::from_wire(r).unwrap())
        .collect::<Vec<_>>();
        let ordered: Vec<String> = order_routes(routes).into_iter().map(|r| r.label).collect();
        assert_eq!(
            ordered,
            [
                "route \"10.0.0.0/24 dev eth0\"",
                "route \"10.1.0.0/24 dev eth1\"",
                "route \"default via 10.0.0.1 dev eth0\"",
                "route \"192.168.0.0/16 via 10.0.0.1 dev eth0\"",
            ]
        );
    }

    #[test]
    fn neighbor_config() {
        let mut n = ARPNeighbor::new();
        let mut to = IPAddress::new();
        to.address = "10.0.0.9".into();
        n.toIPAddress = Some(to).into();
        n.device = "eth0".into();
        n.lladdr = "02:00:00:00:00:09".into();
        let c = NeighborConfig::from_wire(&n).unwrap();
        assert_eq!(c.state, NUD_PERMANENT);
        assert_eq!(c.lladdr, Some(vec![2, 0, 0, 0, 0, 9]));
        assert_eq!(c.label, "arp neighbor \"10.0.0.9 dev eth0\"");
        n.state = 0x02; // NUD_REACHABLE
        n.flags = 0x80; // NTF_ROUTER
        let c = NeighborConfig::from_wire(&n).unwrap();
        assert_eq!((c.state, c.flags), (2, 0x80));

        let mut bad = n.clone();
        bad.lladdr = "02:00".into();
        bad.lladdr.push_str(":zz");
        let e = NeighborConfig::from_wire(&bad).unwrap_err();
        assert!(e.to_string().contains("lladdr \"02:00:zz\""), "{e}");
        let mut bad = n.clone();
        bad.toIPAddress = None.into();
        assert!(NeighborConfig::from_wire(&bad).is_err());
        let mut bad = n.clone();
        bad.flags = 256;
        assert!(NeighborConfig::from_wire(&bad).is_err());
        let mut bad = n;
        bad.state = -1;
        assert!(NeighborConfig::from_wire(&bad).is_err());
    }

    #[test]
    fn routes_kept_on_update() {
        let p = |s: &str| parse_cidr(s).unwrap();
        assert!(keep_on_update(true, Some(&p("10.0.0.0/24")), false, true));
        assert!(keep_on_update(false, Some(&p("fe80::/64")), false, true));
        assert!(keep_on_update(false, Some(&p("ff00::/8")), false, true));
        assert!(keep_on_update(false, Some(&p("10.0.0.0/8")), true, true));
        assert!(keep_on_update(false, None, false, false));
        assert!(!keep_on_update(false, None, false, true));
        assert!(!keep_on_update(false, Some(&p("fd00::/64")), false, true));
        assert!(!keep_on_update(false, Some(&p("10.0.0.0/8")), false, true));
    }
}
