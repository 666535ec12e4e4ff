//! One owner of child processes: children started from every site of the
//! agent (the namespace holder, iptables tools, rustjail's hooks, container
//! inits and exec'd processes) while containers exit all around them; every
//! exit status arrives where it belongs, none is lost to another waiter.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use integration_tests::*;
use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::oci;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn hook(args: &[&str]) -> oci::Hook {
    let mut h = oci::Hook::new();
    h.Path = "/bin/sh".into();
    h.Args = args.iter().map(|a| a.to_string()).collect();
    h
}

async fn run(c: &AgentServiceClient, parent: &str, rootfs: &str, cid: &str, args: &[&str]) -> i32 {
    let mut spec = busybox_spec(rootfs, cid, args, parent);
    let mut hooks = oci::Hooks::new();
    // Hooks run in the agent: children of the agent, waited for through
    // its reaper.
    hooks.Prestart = vec![hook(&["sh", "-c", "exit 0"])];
    hooks.Poststart = vec![hook(&["sh", "-c", "exit 0"])];
    hooks.Poststop = vec![hook(&["sh", "-c", "exit 0"])];
    spec.Hooks = Some(hooks).into();
    let mut req = CreateContainerRequest::new();
    req.container_id = cid.into();
    req.OCI = Some(spec).into();
    c.create_container(ctx(), &req).await.unwrap();
    let mut req = StartContainerRequest::new();
    req.container_id = cid.into();
    c.start_container(ctx(), &req).await.unwrap();
    let mut req = WaitProcessRequest::new();
    req.container_id = cid.into();
    let status = c.wait_process(ctx(), &req).await.unwrap().status;
    let mut req = RemoveContainerRequest::new();
    req.container_id = cid.into();
    c.remove_container(ctx(), &req).await.unwrap();
    status
}

async fn exec(c: &AgentServiceClient, cid: &str, eid: &str, code: i32) -> i32 {
    let mut p = oci::Process::new();
    p.Args = vec!["sh".into(), "-c".into(), format!("exit {code}")];
    p.Env = vec!["PATH=/bin".into()];
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    let mut req = ExecProcessRequest::new();
    req.container_id = cid.into();
    req.exec_id = eid.into();
    req.process = Some(p).into();
    c.exec_process(ctx(), &req).await.unwrap();
    let mut req = WaitProcessRequest::new();
    req.container_id = cid.into();
    req.exec_id = eid.into();
    c.wait_process(ctx(), &req).await.unwrap().status
}

#[test]
fn no_exit_status_is_lost_between_spawn_sites() {
    if !can_run_containers() {
        return;
    }
    let cgroups = CgroupParent::new();
    let parent = cgroups.name.clone();
    let mut agent = Agent::start_isolated();
    let rootfs = Rootfs::new();
    let root = rootfs.path().display().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let uri = agent.uri();
    let c = rt.block_on(async {
        AgentServiceClient::new(ttrpc::asynchronous::Client::connect(&uri).await.unwrap())
    });
    let has_iptables = std::process::Command::new("iptables-save")
        .arg("--version")
        .output()
        .is_ok();
    rt.block_on(async {
        // The namespace holder: a child that forks and exits at once.
        let mut req = CreateSandboxRequest::new();
        req.sandbox_id = unique("sb");
        c.create_sandbox(ctx(), &req).await.unwrap();

        let long = unique("long");
        let mut spec = busybox_spec(&root, &long, &["sleep", "1000"], &parent);
        spec.Process.as_mut().unwrap().Terminal = false;
        let mut req = CreateContainerRequest::new();
        req.container_id = long.clone();
        req.OCI = Some(spec).into();
        c.create_container(ctx(), &req).await.unwrap();
        let mut req = StartContainerRequest::new();
        req.container_id = long.clone();
        c.start_container(ctx(), &req).await.unwrap();

        let mut tasks = Vec::new();
        for i in 0..4 {
            // One rootfs each: containers that share one race for its /dev.
            let c = c.clone();
            let parent = parent.clone();
            tasks.push(tokio::spawn(async move {
                let rootfs = Rootfs::new();
                let root = rootfs.path().display().to_string();
                for k in 0..3 {
                    let code = 10 + i * 3 + k;
                    let cid = unique("exit");
                    let arg = format!("exit {code}");
                    assert_eq!(
                        run(&c, &parent, &root, &cid, &["sh", "-c", &arg]).await,
                        code
                    );
                }
            }));
        }
        for i in 0..2 {
            let (c, long) = (c.clone(), long.clone());
            tasks.push(tokio::spawn(async move {
                for k in 0..5 {
                    let code = 40 + i * 5 + k;
                    let eid = unique("e");
                    assert_eq!(exec(&c, &long, &eid, code).await, code);
                }
            }));
        }
        if has_iptables {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    let r = c.get_ip_tables(ctx(), &GetIPTablesRequest::new()).await;
                    if let Err(e) = r {
                        // A missing table module is the kernel's; a lost
                        // status would be the agent's.
                        assert!(!format!("{e:?}").contains("ECHILD"), "{e:?}");
                        assert!(!format!("{e:?}").contains("No child"), "{e:?}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut req = RemoveContainerRequest::new();
        req.container_id = long.clone();
        c.remove_container(ctx(), &req).await.unwrap();
        // Only the namespace holder is left while the sandbox lives.
        let kids = children_of(agent.pid());
        assert!(kids.len() <= 1, "children left behind: {kids:?}");
        c.destroy_sandbox(ctx(), &DestroySandboxRequest::new())
            .await
            .unwrap();
    });
    let status = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "agent exit after DestroySandbox"
    );
}
