//! Guest network configuration over rtnetlink: what the host shim asks for
//! with UpdateInterface, UpdateRoutes, ListInterfaces, ListRoutes and
//! AddARPNeighbors, done as Kata's agent does it.
//!
//! [`wire`] checks requests and converts text forms (pure, unit tested);
//! [`netlink`] owns the connection, opened on the first call so an agent
//! that never configures the network pays nothing, and the kernel requests.
//! A request is checked in full, and the devices it names looked up, before
//! the first change: bad input leaves the network as it was. Changes are
//! serialised by one lock, so two concurrent requests never interleave.

pub mod netlink;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::Duration;

use tokio::time::Instant;

use protocols::types::{ARPNeighbor, Interface, Route};

use netlink::{already_gone, Link, Netlink};
use wire::{InterfaceConfig, NeighborConfig, RouteConfig};

/// A failed network call. Each names the object (interface, route,
/// neighbour) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: an address, prefix, name or number.
    #[error("{object}: {reason}")]
    Invalid { object: String, reason: String },
    /// The request names an interface that does not exist.
    #[error("{object}: {reason}")]
    NotFound { object: String, reason: String },
    /// The kernel refused a request, or the netlink socket failed.
    #[error("{object}: {op}: {source}")]
    Kernel {
        object: String,
        op: String,
        #[source]
        source: io::Error,
    },
}

crate::error::into_status!(Error);

impl Error {
    /// The status code: whose fault it was.
    pub fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        match self {
            Error::Invalid { .. } => Code::INVALID_ARGUMENT,
            Error::NotFound { .. } => Code::NOT_FOUND,
            Error::Kernel { source, .. } => match source.raw_os_error() {
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

    fn kernel(object: &str, op: impl Into<String>, source: io::Error) -> Error {
        Error::Kernel {
            object: object.to_string(),
            op: op.into(),
            source,
        }
    }
}

/// Held by every call that changes the network.
static CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn connect(object: &str) -> Result<Netlink, Error> {
    netlink::connect().map_err(|e| Error::kernel(object, "netlink socket", e))
}

/// Whether the guest has IPv6: addresses of a family it lacks are skipped,
/// as Kata's agent does, rather than failing the whole interface.
fn ipv6_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .map(|v| v.trim() == "0")
        .unwrap_or(false)
}

/// The index of the link named `device`, or NOT_FOUND naming `object`.
fn link_index(links: &[Link], object: &str, device: &str) -> Result<u32, Error> {
    links
        .iter()
        .find(|l| l.name() == device)
        .map(Link::index)
        .ok_or_else(|| Error::NotFound {
            object: object.to_string(),
            reason: format!("device {device:?}: {LINK_NOT_FOUND}"),
        })
}

/// The words Kata's Go runtime looks for in an error to retry a call on a
/// NIC that is not there yet (`kata_agent.go`), as upstream's agent says.
pub const LINK_NOT_FOUND: &str = "Link not found";

/// How often UpdateInterface looks again for a hot-plugged NIC.
const HOTPLUG_POLL: Duration = Duration::from_millis(20);
/// How long a NIC may take to appear after a PCI rescan.
const AFTER_RESCAN: Duration = Duration::from_millis(500);

/// Configures the interface whose hardware address is `iface.hwAddr`:
/// renames it to `iface.name` (a link that already has that name gets the
/// old one), sets its MTU and ARP flag, replaces its addresses and brings it
/// up. Returns the interface as it now is.
///
/// A request with a `devicePath` is for a NIC the host has just hot-plugged:
/// its link may not exist yet, so it is waited for up to `hotplug_wait`.
pub async fn update_interface(
    iface: &Interface,
    hotplug_wait: Duration,
    devices: &crate::device::Devices,
) -> Result<Interface, Error> {
    let object = wire::interface_label(iface);
    let cfg = InterfaceConfig::from_wire(iface)?;
    let _changes = CHANGES.lock().await;
    let nl = connect(&object)?;
    // Kata's PCI path of a hot-plugged NIC; other spellings (a CCW
    // device) are only waited for, not rescanned.
    let pci_path = iface.devicePath.parse::<crate::device::pci::PciPath>().ok();
    let mut rescanned = false;
    let mut deadline = Instant::now()
        + if iface.devicePath.is_empty() {
            Duration::ZERO
        } else {
            hotplug_wait
        };
    let (links, found) = loop {
        let links = nl
            .links()
            .await
            .map_err(|e| Error::kernel(&object, "list links", e))?;
        if let Some(i) = links
            .iter()
            .position(|l| l.hwaddr() == cfg.hwaddr.as_slice())
        {
            break (links, i);
        }
        if Instant::now() >= deadline {
            // A NIC at a PCI path whose hot-plug notification was lost is
            // found by a rescan: once, with a short grace.
            if let (Some(p), false) = (&pci_path, rescanned) {
                rescanned = true;
                log::warn!("{object}: not seen at PCI path {p}, rescanning");
                devices.rescan_pci();
                deadline = Instant::now() + AFTER_RESCAN;
                continue;
            }
            let at = match &pci_path {
                Some(p) => {
                    let (looked, found) =
                        crate::device::Target::NetPci(p.clone()).report(devices.sysfs());
                    format!(" (PCI path {p}: looked for {looked}; found {found})")
                }
                None => String::new(),
            };
            // The Go runtime retries UpdateInterface (a NIC still being
            // hot-plugged) only when the text says "Link not found".
            return Err(Error::NotFound {
                object,
                reason: format!("{LINK_NOT_FOUND}: no interface has this hardware address{at}"),
            });
        }
        tokio::time::sleep(HOTPLUG_POLL).await;
    };
    let link = &links[found];
    let index = link.index();

    let ipv6 = ipv6_enabled();
    let (addresses, skipped): (Vec<wire::Prefix>, Vec<wire::Prefix>) =
        cfg.addresses.iter().partition(|p| ipv6 || p.addr.is_ipv4());
    if !skipped.is_empty() {
        log::info!("{object}: IPv6 is disabled in the guest: skipping {skipped:?}");
    }

    // Addresses and the name change while the link is down.
    if link.is_up() {
        nl.set_link(link.change(None, 0, None, false))
            .await
            .map_err(|e| Error::kernel(&object, "bring down", e))?;
    }
    let old = nl
        .addresses()
        .await
        .map_err(|e| Error::kernel(&object, "list addresses", e))?;
    for a in old.into_iter().filter(|a| a.header.index == index) {
        if let Err(e) = nl.del_address(a).await {
            if !already_gone(&e) {
                return Err(Error::kernel(&object, "delete address", e));
            }
        }
    }
    for p in &addresses {
        nl.add_address(index, *p)
            .await
            .map_err(|e| Error::kernel(&object, format!("add address {p}"), e))?;
    }

    let rename = !cfg.name.is_empty() && cfg.name != link.name();
    // A link that already has the name is parked under a temporary one
    // (renaming needs it down) and then given this link's old name.
    let holder = if rename {
        links.iter().find(|l| l.name() == cfg.name)
    } else {
        None
    };
    if let Some(h) = holder {
        let tmp = format!("tmp{}", h.index());
        nl.set_link(h.change(Some(&tmp), 0, None, false))
            .await
            .map_err(|e| Error::kernel(&object, format!("rename {:?} to {tmp:?}", h.name()), e))?;
    }
    nl.set_link(link.change(
        rename.then_some(cfg.name.as_str()),
        cfg.mtu,
        Some(!cfg.noarp),
        true,
    ))
    .await
    .map_err(|e| Error::kernel(&object, "set name, mtu and flags", e))?;
    if let Some(h) = holder {
        nl.set_link(h.change(Some(link.name()), 0, None, h.is_up()))
            .await
            .map_err(|e| {
                Error::kernel(
                    &object,
                    format!("rename {:?} to {:?}", h.name(), link.name()),
                    e,
                )
            })?;
    }
    log::info!(
        "{object}: configured (index {index}, {} addresses)",
        addresses.len()
    );

    let links = nl
        .links()
        .await
        .map_err(|e| Error::kernel(&object, "list links", e))?;
    let addresses = nl
        .addresses()
        .await
        .map_err(|e| Error::kernel(&object, "list addresses", e))?;
    let mut now = links
        .iter()
        .find(|l| l.index() == index)
        .map(|l| l.to_wire(&addresses))
        .ok_or_else(|| Error::NotFound {
            object: object.clone(),
            reason: "interface vanished during the update".into(),
        })?;
    now.devicePath = iface.devicePath.clone();
    Ok(now)
}

/// Every link with its addresses.
pub async fn list_interfaces() -> Result<Vec<Interface>, Error> {
    let object = "interfaces";
    let nl = connect(object)?;
    let links = nl
        .links()
        .await
        .map_err(|e| Error::kernel(object, "list links", e))?;
    let addresses = nl
        .addresses()
        .await
        .map_err(|e| Error::kernel(object, "list addresses", e))?;
    Ok(links.iter().map(|l| l.to_wire(&addresses)).collect())
}

fn link_names(links: &[Link]) -> HashMap<u32, String> {
    links
        .iter()
        .map(|l| (l.index(), l.name().to_string()))
        .collect()
}

async fn current_routes(nl: &Netlink, object: &str) -> Result<Vec<Route>, Error> {
    let links = nl
        .links()
        .await
        .map_err(|e| Error::kernel(object, "list links", e))?;
    let names = link_names(&links);
    let routes = nl
        .routes()
        .await
        .map_err(|e| Error::kernel(object, "list routes", e))?;
    Ok(routes
        .iter()
        .map(|r| netlink::route_to_wire(r, &names))
        .collect())
}

/// The main routing table, IPv4 then IPv6.
pub async fn list_routes() -> Result<Vec<Route>, Error> {
    let object = "routes";
    current_routes(&connect(object)?, object).await
}

/// Replaces the main table's routes with `routes`: removes the routes
/// present (except those [`wire::keep_on_update`] keeps), then adds the new
/// ones, device routes first. Returns the table as it now is.
pub async fn update_routes(routes: &[Route]) -> Result<Vec<Route>, Error> {
    let object = "routes";
    let configs = routes
        .iter()
        .map(RouteConfig::from_wire)
        .collect::<Result<Vec<_>, _>>()?;
    let configs = wire::order_routes(configs);
    let _changes = CHANGES.lock().await;
    let nl = connect(object)?;
    let links = nl
        .links()
        .await
        .map_err(|e| Error::kernel(object, "list links", e))?;
    let names = link_names(&links);
    let mut plan = Vec::with_capacity(configs.len());
    for r in configs {
        let oif = link_index(&links, &r.label, &r.device)?;
        plan.push((r, oif));
    }
    let loopbacks: HashSet<u32> = links
        .iter()
        .filter(|l| l.is_loopback())
        .map(Link::index)
        .collect();

    let old = nl
        .routes()
        .await
        .map_err(|e| Error::kernel(object, "list routes", e))?;
    // What was removed and added so far, to undo it if the kernel refuses
    // a new route: a refused update leaves the table as it was.
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for m in old {
        let f = netlink::route_facts(&m);
        let on_loopback = f.oif.is_some_and(|i| loopbacks.contains(&i));
        if wire::keep_on_update(f.kernel_made, f.dest.as_ref(), on_loopback, f.oif.is_some()) {
            continue;
        }
        let label = wire::route_label(&netlink::route_to_wire(&m, &names));
        match nl.del_route(m.clone()).await {
            Ok(()) => removed.push(m),
            Err(e) if already_gone(&e) => {}
            Err(e) => {
                undo_routes(&nl, added, removed).await;
                return Err(Error::kernel(&label, "delete", e));
            }
        }
    }
    for (r, oif) in &plan {
        let m = netlink::route_message(r, *oif);
        match nl.add_route(m.clone()).await {
            Ok(true) => added.push(m),
            Ok(false) => {}
            Err(e) => {
                undo_routes(&nl, added, removed).await;
                return Err(Error::kernel(&r.label, "add", e));
            }
        }
    }
    log::info!(
        "routes: removed {}, added {} of {}",
        removed.len(),
        added.len(),
        plan.len()
    );
    current_routes(&nl, object).await
}

/// Best effort: removes the routes `added` and puts back the `removed` ones.
async fn undo_routes(
    nl: &Netlink,
    added: Vec<rtnetlink::packet_route::route::RouteMessage>,
    mut removed: Vec<rtnetlink::packet_route::route::RouteMessage>,
) {
    // As when adding: a gateway needs its device route back first.
    removed.sort_by_key(|m| netlink::route_facts(m).via_gateway);
    for m in added.into_iter().rev() {
        if let Err(e) = nl.del_route(m).await {
            log::warn!("routes: undo: delete a new route: {e}");
        }
    }
    for m in removed {
        if let Err(e) = nl.add_route(netlink::restorable(m)).await {
            log::warn!("routes: undo: restore a removed route: {e}");
        }
    }
}

/// Adds or replaces a neighbour entry for each of `neighbors`.
pub async fn add_arp_neighbors(neighbors: &[ARPNeighbor]) -> Result<(), Error> {
    let object = "arp neighbors";
    let configs = neighbors
        .iter()
        .map(NeighborConfig::from_wire)
        .collect::<Result<Vec<_>, _>>()?;
    if configs.is_empty() {
        return Ok(());
    }
    let _changes = CHANGES.lock().await;
    let nl = connect(object)?;
    let links = nl
        .links()
        .await
        .map_err(|e| Error::kernel(object, "list links", e))?;
    let mut plan = Vec::with_capacity(configs.len());
    for n in configs {
        let index = link_index(&links, &n.label, &n.device)?;
        plan.push((n, index));
    }
    for (n, index) in &plan {
        nl.add_neighbor(*index, n)
            .await
            .map_err(|e| Error::kernel(&n.label, "add", e))?;
    }
    log::info!("arp neighbors: added {}", plan.len());
    Ok(())
}
