//! Guest-wide calls through the wire API. Nothing here may change the
//! host: the clock is only given invalid values.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uri = agent.uri();
    rt.block_on(async {
        let c = AgentServiceClient::new(ttrpc::asynchronous::Client::connect(&uri).await.unwrap());

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
