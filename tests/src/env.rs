//! A test's agent with a client, a busybox rootfs and a cgroup parent of
//! its own, and the calls container tests make through it.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use protocols::agent::*;
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::oci;
use ttrpc::Code;

use crate::*;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub struct Env {
    pub agent: Agent,
    pub client: AgentServiceClient,
    pub rootfs: Rootfs,
    pub rt: tokio::runtime::Runtime,
    /// Last: removed once the agent is gone.
    pub cgroups: CgroupParent,
}

impl Env {
    pub fn new() -> Option<Env> {
        Env::with_cmdline("")
    }

    /// As [`Env::new`], the agent reading `cmdline` as its kernel
    /// command line (`agent.hotplug_timeout=1`, ...).
    pub fn with_cmdline(cmdline: &str) -> Option<Env> {
        if !can_run_containers() {
            return None;
        }
        let cgroups = CgroupParent::new();
        let agent = Agent::start_with(&bin("kata-agent"), cmdline, &[]);
        let rt = rt();
        let uri = agent.uri();
        let client = rt.block_on(async {
            AgentServiceClient::new(ttrpc::asynchronous::Client::connect(&uri).await.unwrap())
        });
        Some(Env {
            agent,
            client,
            rootfs: Rootfs::new(),
            rt,
            cgroups,
        })
    }

    /// The test spec for a busybox container in this test's cgroup parent.
    pub fn spec(&self, rootfs: &Path, cid: &str, args: &[&str]) -> oci::Spec {
        let mut s = busybox_spec(&rootfs.display().to_string(), cid, args, &self.cgroups.name);
        s.Hostname = "box".into();
        s
    }

    /// As [`Env::spec`], with memory and memory+swap capped at `bytes`.
    pub fn spec_with_memory(
        &self,
        rootfs: &Path,
        cid: &str,
        args: &[&str],
        bytes: i64,
    ) -> oci::Spec {
        let mut s = self.spec(rootfs, cid, args);
        let mut mem = oci::LinuxMemory::new();
        mem.Limit = bytes;
        mem.Swap = bytes;
        let mut res = oci::LinuxResources::new();
        res.Memory = Some(mem).into();
        s.Linux.as_mut().unwrap().Resources = Some(res).into();
        s
    }

    /// Starts a GetOOMEvent long poll in the background: its result is
    /// the next OOM event the agent reports.
    pub fn watch_oom(&self) -> tokio::task::JoinHandle<ttrpc::Result<protocols::agent::OOMEvent>> {
        let client = self.client.clone();
        self.rt.spawn(async move {
            client
                .get_oom_event(ctx(), &GetOOMEventRequest::new())
                .await
        })
    }

    pub fn create(&self, cid: &str, s: oci::Spec) -> ttrpc::Result<()> {
        let mut req = CreateContainerRequest::new();
        req.container_id = cid.into();
        req.exec_id = cid.into();
        req.OCI = Some(s).into();
        self.rt
            .block_on(self.client.create_container(ctx(), &req))
            .map(|_| ())
    }

    pub fn start(&self, cid: &str) -> ttrpc::Result<()> {
        let mut req = StartContainerRequest::new();
        req.container_id = cid.into();
        self.rt
            .block_on(self.client.start_container(ctx(), &req))
            .map(|_| ())
    }

    pub fn run(&self, cid: &str, args: &[&str]) {
        self.create(cid, self.spec(self.rootfs.path(), cid, args))
            .unwrap();
        self.start(cid).unwrap();
    }

    pub fn wait(&self, cid: &str, eid: &str) -> ttrpc::Result<i32> {
        let mut req = WaitProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        self.rt
            .block_on(self.client.wait_process(ctx(), &req))
            .map(|r| r.status)
    }

    pub fn read(&self, cid: &str, eid: &str, stderr: bool, len: u32) -> ttrpc::Result<Vec<u8>> {
        let mut req = ReadStreamRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        req.len = len;
        let r = if stderr {
            self.rt.block_on(self.client.read_stderr(ctx(), &req))
        } else {
            self.rt.block_on(self.client.read_stdout(ctx(), &req))
        };
        r.map(|r| r.data)
    }

    /// Reads a stream until EOF.
    pub fn read_all(&self, cid: &str, eid: &str, stderr: bool, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match self.read(cid, eid, stderr, len) {
                Ok(d) => out.extend_from_slice(&d),
                Err(e) => {
                    assert_eq!(code(&e), Code::OUT_OF_RANGE, "read: {e:?}");
                    return out;
                }
            }
        }
    }

    pub fn exec(&self, cid: &str, eid: &str, args: &[&str]) -> ttrpc::Result<()> {
        let mut p = oci::Process::new();
        p.Args = args.iter().map(|a| a.to_string()).collect();
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/".into();
        p.User = Some(oci::User::new()).into();
        let mut req = ExecProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        req.process = Some(p).into();
        self.rt
            .block_on(self.client.exec_process(ctx(), &req))
            .map(|_| ())
    }

    pub fn signal(&self, cid: &str, eid: &str, sig: u32) -> ttrpc::Result<()> {
        let mut req = SignalProcessRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        req.signal = sig;
        self.rt
            .block_on(self.client.signal_process(ctx(), &req))
            .map(|_| ())
    }

    pub fn write(&self, cid: &str, eid: &str, data: &[u8]) -> ttrpc::Result<u32> {
        let mut req = WriteStreamRequest::new();
        req.container_id = cid.into();
        req.exec_id = eid.into();
        req.data = data.to_vec();
        self.rt
            .block_on(self.client.write_stdin(ctx(), &req))
            .map(|r| r.len)
    }

    pub fn remove(&self, cid: &str) -> ttrpc::Result<()> {
        let mut req = RemoveContainerRequest::new();
        req.container_id = cid.into();
        req.timeout = 30;
        self.rt
            .block_on(self.client.remove_container(ctx(), &req))
            .map(|_| ())
    }

    /// Checks that nothing of container `cid` is left.
    pub fn assert_gone(&mut self, cid: &str) {
        assert!(
            !self.agent.path("/run/kata-containers").join(cid).exists(),
            "bundle of {cid} left behind"
        );
        for ctrl in ["memory", "pids", "cpu", "freezer"] {
            let p = Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(&self.cgroups.name)
                .join(cid);
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
        let kids = children_of(self.agent.pid());
        assert!(kids.is_empty(), "agent still has children {kids:?}");
        assert!(self.agent.alive());
    }
}

pub fn code(e: &ttrpc::Error) -> Code {
    match e {
        ttrpc::Error::RpcStatus(s) => s.code.enum_value_or_default(),
        _ => Code::UNKNOWN,
    }
}

pub fn message(e: &ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => s.message.clone(),
        other => other.to_string(),
    }
}
