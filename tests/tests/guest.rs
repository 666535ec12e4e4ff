//! Guest-wide calls through the wire API. Nothing here may change the
//! host: the clock is only given invalid values.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::*;
use protocols::agent::*;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(20).as_nanos() as i64)
}

fn code(e: &ttrpc::Error) -> ttrpc::Code {
    match e {
        ttrpc::Error::RpcStatus(s) => s.code.enum_value_or_default(),
        _ => ttrpc::Code::UNKNOWN,
    }
}

#[test]
fn guest_details_time_entropy_and_online() {
    let agent = Agent::start();
    let (rt, c) = agent_client(&agent);
    rt.block_on(async {
        let mut req = GuestDetailsRequest::new();
        req.mem_block_size = true;
        req.mem_hotplug_probe = true;
        let d = c.get_guest_details(ctx(), &req).await.unwrap();
        let want = std::fs::read_to_string("/sys/devices/system/memory/block_size_bytes")
            .ok()
            .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
            .unwrap_or(0);
        assert_eq!(d.mem_block_size_bytes, want);
        assert_eq!(
            d.support_mem_hotplug_probe,
            std::path::Path::new("/sys/devices/system/memory/probe").exists()
        );
        let a = d.agent_details.as_ref().unwrap();
        assert_eq!(a.version, env!("CARGO_PKG_VERSION"));
        assert!(!a.init_daemon);
        assert!(a.supports_seccomp);
        assert!(a.storage_handlers.iter().any(|h| h == "virtio-fs"), "{a:?}");

        for (sec, usec) in [(-1, 0), (1, -1), (1, 1_000_000)] {
            let mut t = SetGuestDateTimeRequest::new();
            t.Sec = sec;
            t.Usec = usec;
            let e = c.set_guest_date_time(ctx(), &t).await.unwrap_err();
            assert_eq!(
                code(&e),
                ttrpc::Code::INVALID_ARGUMENT,
                "{sec} {usec}: {e:?}"
            );
        }

        let mut r = ReseedRandomDevRequest::new();
        r.data = vec![7u8; 64];
        c.reseed_random_dev(ctx(), &r).await.unwrap();

        let mut o = OnlineCPUMemRequest::new();
        o.wait = true;
        o.cpu_only = true;
        c.online_cpu_mem(ctx(), &o).await.unwrap();

        c.mem_hotplug_by_probe(ctx(), &MemHotplugByProbeRequest::new())
            .await
            .unwrap();
    });
}

#[test]
fn copy_file_in_chunks_and_confined() {
    if !can_run_containers() {
        return;
    }
    let agent = Agent::start();
    let (rt, c) = agent_client(&agent);
    let top = format!(
        "/run/kata-containers/shared/containers/copytest-{}",
        std::process::id()
    );
    rt.block_on(async {
        let copy = |path: String, mode: u32, data: &[u8], offset: i64, size: i64| {
            let mut r = CopyFileRequest::new();
            r.path = path;
            r.file_mode = mode;
            r.dir_mode = 0o750;
            r.uid = 1234;
            r.gid = 5678;
            r.offset = offset;
            r.file_size = size;
            r.data = data.to_vec();
            r
        };
        // A regular file in two chunks, into directories created on the way.
        let f = format!("{top}/a/b/hosts");
        let body = b"127.0.0.1 localhost\n10.0.0.2 pod\n";
        c.copy_file(
            ctx(),
            &copy(f.clone(), 0o100644, &body[..10], 0, body.len() as i64),
        )
        .await
        .unwrap();
        assert!(!agent.path(&f).exists(), "renamed before the last chunk");
        c.copy_file(
            ctx(),
            &copy(f.clone(), 0o100644, &body[10..], 10, body.len() as i64),
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(agent.path(&f)).unwrap(), body);
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(agent.path(&f)).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 1234, 5678));
        let d = std::fs::metadata(agent.path(format!("{top}/a/b"))).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o750);

        // A symlink to outside, then a write through it: refused.
        c.copy_file(ctx(), &copy(format!("{top}/link"), 0o120777, b"/etc", 0, 4))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_link(agent.path(format!("{top}/link")))
                .unwrap()
                .to_str(),
            Some("/etc")
        );
        let evil = format!("evil-{}", std::process::id());
        let e = c
            .copy_file(
                ctx(),
                &copy(format!("{top}/link/{evil}"), 0o100644, b"x", 0, 1),
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION, "{e:?}");
        assert!(!std::path::Path::new("/etc").join(&evil).exists());

        for bad in [
            "/etc/kata-evil".to_string(),
            // Under /run/kata-containers but outside the shared directory,
            // as Kata's own tests expect refused.
            "/run/kata-containers/shared/foo".to_string(),
            "/run/kata-containers/sandbox/kata-evil".to_string(),
            format!("{top}/../../../etc/kata-evil"),
            "relative".to_string(),
        ] {
            let e = c
                .copy_file(ctx(), &copy(bad.clone(), 0o100644, b"x", 0, 1))
                .await
                .unwrap_err();
            assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{bad}: {e:?}");
        }
        assert!(!std::path::Path::new("/etc/kata-evil").exists());
    });
    std::fs::remove_dir_all(agent.path(&top)).unwrap();
}

#[test]
fn metrics_and_volume_stats() {
    let agent = Agent::start();
    let (rt, c) = agent_client(&agent);
    let vol = format!("/run/kata-containers/volstat-{}", std::process::id());
    std::fs::create_dir_all(agent.path(&vol)).unwrap();
    rt.block_on(async {
        let m = c
            .get_metrics(ctx(), &GetMetricsRequest::new())
            .await
            .unwrap();
        // As a Prometheus scraper reads it, with upstream's families.
        let lines = m.metrics.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
        let value = |name: &str, item: Option<(&str, &str)>| -> Option<f64> {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && item.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| match s.value {
                    prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        // The async thread, the blocking thread the read runs on, and the
        // one that ran this connection's accept hook (src/peer.rs) until
        // it retires: 1 to 3.
        let threads = value("kata_agent_threads", None).unwrap();
        assert!((1.0..=3.0).contains(&threads), "{}", m.metrics);
        // A fresh agent: this is its first scrape.
        assert_eq!(value("kata_agent_scrape_count", None), Some(1.0));
        assert!(value("kata_agent_total_rss", None).unwrap() > 0.0);
        assert!(value("kata_agent_total_vm", None).unwrap() > 0.0);
        assert!(value("kata_agent_proc_status", Some(("item", "vmrss"))).unwrap() > 0.0);
        assert!(value("kata_agent_io_stat", Some(("item", "rchar"))).is_some());
        assert!(value("kata_agent_proc_stat", Some(("item", "utime"))).is_some());
        assert!(value("kata_agent_process_open_fds", None).unwrap() > 0.0);
        assert!(value("kata_agent_process_resident_memory_bytes", None).unwrap() > 0.0);
        assert_eq!(value("kata_agent_containers", None), Some(0.0));
        let total = value("kata_guest_meminfo", Some(("item", "mem_total"))).unwrap();
        let kib = std::fs::read_to_string("/proc/meminfo")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert_eq!(total, kib * 1024.0, "bytes, as upstream");
        assert!(value("kata_guest_load", Some(("item", "load1"))).is_some());
        assert!(value("kata_guest_tasks", Some(("item", "max"))).unwrap() > 0.0);
        assert!(value("kata_guest_cpu_time", Some(("cpu", "total"))).is_some());
        assert!(value("kata_guest_vm_stat", Some(("item", "nr_free_pages"))).is_some());
        assert!(value("kata_guest_netdev_stat", Some(("interface", "lo"))).is_some());

        let mut req = VolumeStatsRequest::new();
        req.volume_guest_path = vol.clone();
        let st = c.get_volume_stats(ctx(), &req).await.unwrap();
        assert_eq!(st.usage.len(), 2);
        let bytes = &st.usage[0];
        assert_eq!(
            bytes.unit.enum_value_or_default(),
            protocols::csi::volume_usage::Unit::BYTES
        );
        assert!(bytes.total > 0 && bytes.used <= bytes.total, "{bytes:?}");

        for (path, want) in [
            ("/etc", ttrpc::Code::INVALID_ARGUMENT),
            (
                "/run/kata-containers/../../etc",
                ttrpc::Code::INVALID_ARGUMENT,
            ),
            ("relative", ttrpc::Code::INVALID_ARGUMENT),
            (
                "/run/kata-containers/no-such-volume-here",
                ttrpc::Code::NOT_FOUND,
            ),
        ] {
            req.volume_guest_path = path.into();
            let e = c.get_volume_stats(ctx(), &req).await.unwrap_err();
            assert_eq!(code(&e), want, "{path}: {e:?}");
        }
    });
    std::fs::remove_dir(agent.path(&vol)).unwrap();
}

#[test]
fn ip_tables_round_trip_in_the_agents_own_network_namespace() {
    if !can_run_containers() {
        return;
    }
    if !std::path::Path::new("/usr/sbin/iptables-save").exists() {
        skip("iptables-save missing (apt-get install iptables)");
        return;
    }
    // Its own network namespace: the host's rules are never touched.
    let agent = Agent::start_isolated();
    let (rt, c) = agent_client(&agent);
    rt.block_on(async {
        let mut set = SetIPTablesRequest::new();
        set.data = b"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A INPUT -s 10.99.99.99/32 -j DROP\nCOMMIT\n"
            .to_vec();
        c.set_ip_tables(ctx(), &set).await.unwrap();
        let got = c
            .get_ip_tables(ctx(), &GetIPTablesRequest::new())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&got.data);
        assert!(
            text.contains("-A INPUT -s 10.99.99.99/32 -j DROP"),
            "{text}"
        );

        set.data = b"*filter\n-A NOSUCHCHAIN -j DROP\nCOMMIT\n".to_vec();
        let e = c.set_ip_tables(ctx(), &set).await.unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
        assert!(format!("{e:?}").contains("iptables-restore"), "{e:?}");
    });
    let host = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("10.99.99.99"));
}
