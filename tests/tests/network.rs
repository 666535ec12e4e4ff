//! The network calls (UpdateInterface, UpdateRoutes, ListInterfaces,
//! ListRoutes, AddARPNeighbors) against an agent in a network namespace of
//! its own, with dummy interfaces made there: nothing here touches the
//! host's network. Results are checked through the API and with `ip -j`.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::*;
use protocols::agent::*;
use protocols::types::{ARPNeighbor, IPAddress, IPFamily, Interface, Route};
use serde_json::Value;

const MAC: &str = "02:00:00:00:00:a1";
const OTHER_MAC: &str = "02:00:00:00:00:b2";
const HOT_MAC: &str = "02:00:00:00:00:c3";

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(20).as_nanos() as i64)
}

fn status_of(e: &ttrpc::Error) -> (ttrpc::Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code.enum_value_or_default(), s.message.clone()),
        other => (ttrpc::Code::UNKNOWN, format!("{other:?}")),
    }
}

/// Whether these tests can run here; says why not.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("network tests need root");
        return false;
    }
    for tool in ["ip", "nsenter", "unshare"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            skip(&format!(
                "{tool} missing (apt-get install iproute2 util-linux)"
            ));
            return false;
        }
    }
    true
}

/// Starts the agent in namespaces of its own (network included) and
/// checks that it really is not in ours.
fn start_in_own_netns() -> Agent {
    let agent = Agent::start_isolated();
    // Everything below changes the agent's namespace: make sure it is not ours.
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        ns(&agent.pid().to_string()),
        ns("self"),
        "the agent shares the host's network namespace"
    );
    agent
}

/// Runs `ip <args>` in the agent's network namespace; returns stdout.
fn ip(agent: &Agent, args: &[&str]) -> String {
    ip_in(agent.pid(), args)
}

/// Runs `ip <args>` in the network namespace of process `pid`.
fn ip_in(pid: u32, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip"])
        .args(args)
        .output()
        .expect("run nsenter ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Makes a link `name` with hardware address `mac`: a dummy, or where the
/// kernel has no dummy driver, one end of a veth pair whose other end
/// (`<name>p`) is up. Returns the kind made.
fn add_link(pid: u32, name: &str, mac: &str) -> &'static str {
    let dummy = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip", "link", "add"])
        .args([name, "type", "dummy"])
        .stderr(Stdio::null())
        .status()
        .expect("run nsenter ip");
    let kind = if dummy.success() {
        "dummy"
    } else {
        let peer = format!("{name}p");
        ip_in(
            pid,
            &["link", "add", name, "type", "veth", "peer", "name", &peer],
        );
        ip_in(pid, &["link", "set", &peer, "up"]);
        "veth"
    };
    ip_in(pid, &["link", "set", name, "address", mac]);
    kind
}

fn ip_json(agent: &Agent, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let text = ip(agent, &all);
    if text.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(&text).unwrap() {
        Value::Array(v) => v,
        other => panic!("ip {args:?}: not a JSON array: {other}"),
    }
}

/// NETLINK_ROUTE sockets the agent holds, from its fds and the netlink
/// table of its namespace.
fn route_netlink_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    // Columns: sk Eth Pid Groups Rmem Wmem Dump Locks Drop Inode; Eth 0 is
    // NETLINK_ROUTE.
    std::fs::read_to_string(format!("/proc/{pid}/net/netlink"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 10 && f[1] == "0" && inodes.iter().any(|i| i == f[9]))
        .count()
}

fn addr(a: &str, mask: &str, v6: bool) -> IPAddress {
    let mut ip = IPAddress::new();
    ip.address = a.into();
    ip.mask = mask.into();
    ip.family = if v6 { IPFamily::v6 } else { IPFamily::v4 }.into();
    ip
}

fn iface_req(mac: &str, name: &str, mtu: u64, addrs: Vec<IPAddress>) -> UpdateInterfaceRequest {
    let mut i = Interface::new();
    i.hwAddr = mac.into();
    i.name = name.into();
    i.mtu = mtu;
    i.IPAddresses = addrs;
    let mut r = UpdateInterfaceRequest::new();
    r.interface = Some(i).into();
    r
}

fn route(dest: &str, gw: &str, dev: &str, scope: u32) -> Route {
    let mut r = Route::new();
    r.dest = dest.into();
    r.gateway = gw.into();
    r.device = dev.into();
    r.scope = scope;
    r.family = if dest.contains(':') || gw.contains(':') {
        IPFamily::v6
    } else {
        IPFamily::v4
    }
    .into();
    r
}

fn routes_req(routes: Vec<Route>) -> UpdateRoutesRequest {
    let mut list = Routes::new();
    list.Routes = routes;
    let mut r = UpdateRoutesRequest::new();
    r.routes = Some(list).into();
    r
}

fn neighbors_req(to: &str, dev: &str, lladdr: &str) -> AddARPNeighborsRequest {
    let mut n = ARPNeighbor::new();
    n.toIPAddress = Some(addr(to, "", to.contains(':'))).into();
    n.device = dev.into();
    n.lladdr = lladdr.into();
    let mut list = ARPNeighbors::new();
    list.ARPNeighbors = vec![n];
    let mut r = AddARPNeighborsRequest::new();
    r.neighbors = Some(list).into();
    r
}

/// `(dest, gateway, device)` of each route, sorted.
fn route_set(routes: &[Route]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = routes
        .iter()
        .map(|r| (r.dest.clone(), r.gateway.clone(), r.device.clone()))
        .collect();
    v.sort();
    v
}

fn has(routes: &[Route], dest: &str, gw: &str, dev: &str) -> bool {
    routes
        .iter()
        .any(|r| r.dest == dest && r.gateway == gw && r.device == dev)
}

fn addresses_of(link: &Value) -> Vec<String> {
    let mut v: Vec<String> = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .filter(|a| !a.starts_with("fe80:"))
        .collect();
    v.sort();
    v
}

#[test]
fn network_calls_configure_the_agents_namespace() {
    if !can_run() {
        return;
    }
    let agent = start_in_own_netns();
    let pid = agent.pid();
    let kind = add_link(pid, "dummy0", MAC);
    // A link that already has the name the interface is to get.
    add_link(pid, "eth0", OTHER_MAC);
    ip(&agent, &["link", "set", "eth0", "up"]);

    let (rt, c) = agent_client(&agent);
    rt.block_on(async {
        // The netlink socket is opened on the first network call, once.
        assert_eq!(
            route_netlink_sockets(pid),
            0,
            "netlink socket before any call"
        );

        // UpdateInterface by MAC, given in upper case: rename, MTU, two
        // addresses, up.
        let req = iface_req(
            &MAC.to_uppercase(),
            "eth0",
            1400,
            vec![
                addr("10.10.0.2", "24", false),
                addr("fd00:10::2", "64", true),
            ],
        );
        let got = c.update_interface(ctx(), &req).await.unwrap();
        assert_eq!(route_netlink_sockets(pid), 1);
        assert_eq!(
            (got.name.as_str(), got.hwAddr.as_str(), got.mtu),
            ("eth0", MAC, 1400)
        );
        assert_eq!(got.type_, kind);
        assert_ne!(got.raw_flags & libc::IFF_UP as u32, 0, "{got:?}");
        let mut got_addrs: Vec<String> = got
            .IPAddresses
            .iter()
            .map(|a| format!("{}/{}", a.address, a.mask))
            .filter(|a| !a.starts_with("fe80:"))
            .collect();
        got_addrs.sort();
        assert_eq!(got_addrs, ["10.10.0.2/24", "fd00:10::2/64"]);

        let links = ip_json(&agent, &["addr", "show"]);
        let eth0 = links.iter().find(|l| l["ifname"] == "eth0").unwrap();
        assert_eq!(eth0["address"], MAC);
        assert_eq!(eth0["mtu"], 1400);
        assert!(
            eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{eth0}"
        );
        assert_eq!(addresses_of(eth0), ["10.10.0.2/24", "fd00:10::2/64"]);
        // The link that had the name now has the interface's old one, and
        // is up again.
        let other = links.iter().find(|l| l["address"] == OTHER_MAC).unwrap();
        assert_eq!(other["ifname"], "dummy0");
        assert!(other["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

        // ListInterfaces agrees.
        let list = c
            .list_interfaces(ctx(), &ListInterfacesRequest::new())
            .await
            .unwrap()
            .Interfaces;
        assert!(list.iter().any(|i| i.name == "lo"), "{list:?}");
        let e = list.iter().find(|i| i.name == "eth0").unwrap();
        assert_eq!((e.hwAddr.as_str(), e.mtu), (MAC, 1400));
        assert!(e.IPAddresses.iter().any(|a| a.address == "10.10.0.2"
            && a.mask == "24"
            && a.family.enum_value() == Ok(IPFamily::v4)));
        assert!(e.IPAddresses.iter().any(|a| a.address == "fd00:10::2"
            && a.mask == "64"
            && a.family.enum_value() == Ok(IPFamily::v6)));
        assert!(list
            .iter()
            .any(|i| i.name == "dummy0" && i.hwAddr == OTHER_MAC));

        // UpdateRoutes: the gateway route comes first in the request, but is
        // reachable only through the device route, so the device route must
        // be added first. A static route present before is removed; the
        // kernel's subnet route stays.
        ip(&agent, &["route", "add", "10.99.0.0/16", "dev", "eth0"]);
        let routes = vec![
            route("", "10.20.0.1", "eth0", 0),
            route("10.20.0.0/16", "", "eth0", 253),
            route("fd00:20::/64", "", "eth0", 0),
        ];
        let got = c
            .update_routes(ctx(), &routes_req(routes))
            .await
            .unwrap()
            .Routes;
        assert!(has(&got, "", "10.20.0.1", "eth0"), "{got:?}");
        assert!(has(&got, "10.20.0.0/16", "", "eth0"), "{got:?}");
        assert!(has(&got, "fd00:20::/64", "", "eth0"), "{got:?}");
        assert!(
            has(&got, "10.10.0.0/24", "", "eth0"),
            "kernel route kept: {got:?}"
        );
        assert!(!got.iter().any(|r| r.dest == "10.99.0.0/16"), "{got:?}");
        let scoped = got.iter().find(|r| r.dest == "10.20.0.0/16").unwrap();
        assert_eq!(scoped.scope, 253);
        let default = got.iter().find(|r| r.gateway == "10.20.0.1").unwrap();
        assert_eq!(default.family.enum_value(), Ok(IPFamily::v4));

        let listed = c
            .list_routes(ctx(), &ListRoutesRequest::new())
            .await
            .unwrap()
            .Routes;
        assert_eq!(route_set(&listed), route_set(&got));

        let v4 = ip_json(&agent, &["route", "show"]);
        let find = |dst: &str| v4.iter().find(|r| r["dst"] == dst).cloned();
        let d = find("default").expect("default route");
        assert_eq!(
            (d["gateway"].as_str(), d["dev"].as_str()),
            (Some("10.20.0.1"), Some("eth0"))
        );
        // `proto boot`, which `ip` leaves out as the default.
        assert!(d.get("protocol").is_none(), "{d}");
        let s = find("10.20.0.0/16").expect("device route");
        assert_eq!(s["scope"], "link");
        assert!(find("10.10.0.0/24").is_some());
        assert!(find("10.99.0.0/16").is_none());
        let v6 = ip_json(&agent, &["-6", "route", "show"]);
        assert!(
            v6.iter()
                .any(|r| r["dst"] == "fd00:20::/64" && r["dev"] == "eth0"),
            "{v6:?}"
        );

        // AddARPNeighbors adds, then replaces.
        c.add_arp_neighbors(
            ctx(),
            &neighbors_req("10.10.0.9", "eth0", "02:00:00:00:00:c9"),
        )
        .await
        .unwrap();
        let neigh = ip_json(&agent, &["neigh", "show", "dev", "eth0"]);
        let n = neigh.iter().find(|n| n["dst"] == "10.10.0.9").unwrap();
        assert_eq!(n["lladdr"], "02:00:00:00:00:c9");
        assert!(
            n["state"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "PERMANENT"),
            "{n}"
        );
        c.add_arp_neighbors(
            ctx(),
            &neighbors_req("10.10.0.9", "eth0", "02:00:00:00:00:d9"),
        )
        .await
        .unwrap();
        let neigh = ip_json(&agent, &["neigh", "show", "dev", "eth0"]);
        let n = neigh.iter().find(|n| n["dst"] == "10.10.0.9").unwrap();
        assert_eq!(n["lladdr"], "02:00:00:00:00:d9");

        // A hot-plugged NIC (the request has its PCI path) may appear after
        // the request: it is waited for.
        let plug = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            add_link(pid, "hot0", HOT_MAC);
        });
        let mut req = iface_req(HOT_MAC, "eth1", 1500, vec![addr("10.50.0.2", "24", false)]);
        if let Some(i) = req.interface.as_mut() {
            i.devicePath = "02/00".into();
        }
        let hot = c.update_interface(ctx(), &req).await.unwrap();
        plug.join().unwrap();
        assert_eq!(
            (hot.name.as_str(), hot.devicePath.as_str()),
            ("eth1", "02/00")
        );
        assert!(hot.IPAddresses.iter().any(|a| a.address == "10.50.0.2"));

        // Bad input: the right code, a message naming the object and the
        // cause, and nothing changed.
        let routes_before = c
            .list_routes(ctx(), &ListRoutesRequest::new())
            .await
            .unwrap()
            .Routes;
        let e = c
            .update_interface(ctx(), &iface_req("02:00:00:00:00:ff", "eth1", 1500, vec![]))
            .await
            .unwrap_err();
        let (code, msg) = status_of(&e);
        assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
        assert!(msg.contains("02:00:00:00:00:ff"), "{msg}");
        // The text the Go runtime's retry looks for.
        assert!(msg.contains("Link not found"), "{msg}");

        let bad = iface_req(MAC, "eth0", 1500, vec![addr("10.10.0.300", "24", false)]);
        let e = c.update_interface(ctx(), &bad).await.unwrap_err();
        let (code, msg) = status_of(&e);
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
        assert!(
            msg.contains("\"10.10.0.300\"") && msg.contains("interface \"eth0\""),
            "{msg}"
        );

        let e = c
            .update_interface(ctx(), &UpdateInterfaceRequest::new())
            .await
            .unwrap_err();
        assert_eq!(status_of(&e).0, ttrpc::Code::INVALID_ARGUMENT);

        let e = c
            .update_routes(
                ctx(),
                &routes_req(vec![route("10.30.0.0/16", "", "nope0", 0)]),
            )
            .await
            .unwrap_err();
        let (code, msg) = status_of(&e);
        assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
        assert!(
            msg.contains("nope0") && msg.contains("Link not found"),
            "{msg}"
        );

        let e = c
            .update_routes(
                ctx(),
                &routes_req(vec![route("10.30.0.0/40", "", "eth0", 0)]),
            )
            .await
            .unwrap_err();
        let (code, msg) = status_of(&e);
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains("10.30.0.0/40"), "{msg}");

        let e = c
            .add_arp_neighbors(ctx(), &neighbors_req("10.10.0.9", "eth0", "02:00:zz"))
            .await
            .unwrap_err();
        let (code, msg) = status_of(&e);
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains("02:00:zz"), "{msg}");

        // None of the refused requests changed anything.
        let links = ip_json(&agent, &["addr", "show", "dev", "eth0"]);
        assert_eq!(addresses_of(&links[0]), ["10.10.0.2/24", "fd00:10::2/64"]);
        assert_eq!(links[0]["mtu"], 1400);
        let after = c
            .list_routes(ctx(), &ListRoutesRequest::new())
            .await
            .unwrap()
            .Routes;
        assert_eq!(route_set(&after), route_set(&routes_before));

        // A route the kernel refuses (no route to its gateway): the message
        // names the route, and the table is put back as it was.
        let e = c
            .update_routes(ctx(), &routes_req(vec![route("", "10.40.0.1", "eth0", 0)]))
            .await
            .unwrap_err();
        let (code, msg) = status_of(&e);
        assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
        assert!(
            msg.contains("route \"default via 10.40.0.1 dev eth0\""),
            "{msg}"
        );
        let restored = c
            .list_routes(ctx(), &ListRoutesRequest::new())
            .await
            .unwrap()
            .Routes;
        assert_eq!(route_set(&restored), route_set(&routes_before));

        // Still one netlink socket.
        assert_eq!(route_netlink_sockets(pid), 1);
    });
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the agent died"
    );
}
