//! The agent policy through the real agent: a default policy file given
//! with `agent.policy_file`, SetPolicy at run time, and real CopyFile,
//! CreateContainer and ExecProcess requests (busybox) checked against it.
//! The container tests need root; each checks it left nothing behind.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use integration_tests::env::*;
use integration_tests::*;
use protocols::agent::*;
use ttrpc::Code;

/// Upstream's `allow-all.rego` (src/kata-opa), the default policy of its
/// guest images.
const ALLOW_ALL: &str = include_str!("../../agent/src/policy/allow-all.rego");

const SHARED: &str = "/run/kata-containers/shared/containers";

/// A policy file in a directory of its own; `cmdline` points the agent at it.
struct PolicyFile {
    dir: tempfile::TempDir,
}

impl PolicyFile {
    fn new(text: &str) -> PolicyFile {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.rego"), text).unwrap();
        PolicyFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("policy.rego")
    }

    fn cmdline(&self) -> String {
        format!("agent.policy_file={}", self.path().display())
    }
}

fn set_policy(env: &Env, text: &str) -> ttrpc::Result<()> {
    let mut req = SetPolicyRequest::new();
    req.policy = text.into();
    env.rt
        .block_on(env.client.set_policy(ctx(), &req))
        .map(|_| ())
}

fn copy_file(env: &Env, name: &str, data: &[u8]) -> ttrpc::Result<()> {
    let mut req = CopyFileRequest::new();
    req.path = format!("{SHARED}/{name}");
    req.file_size = data.len() as i64;
    req.file_mode = libc::S_IFREG | 0o644;
    req.dir_mode = libc::S_IFDIR | 0o755;
    req.data = data.to_vec();
    env.rt
        .block_on(env.client.copy_file(ctx(), &req))
        .map(|_| ())
}

fn assert_blocked(r: ttrpc::Result<()>, rule: &str) -> String {
    let e = r.expect_err("the policy should have refused the request");
    assert_eq!(code(&e), Code::PERMISSION_DENIED, "{e:?}");
    let msg = message(&e);
    assert!(
        msg.starts_with(&format!("{rule} is blocked by policy")),
        "{msg}"
    );
    msg
}

/// Kata's agent-API check: allow-all, then a policy that blocks CopyFile.
#[test]
fn allow_all_then_a_policy_that_blocks_copy_file() {
    let file = PolicyFile::new(ALLOW_ALL);
    let Some(mut env) = Env::with_cmdline(&file.cmdline()) else {
        return;
    };
    assert!(
        env.agent.log_text().contains("in force"),
        "{}",
        env.agent.log_text()
    );
    set_policy(&env, ALLOW_ALL).unwrap();
    let allowed = unique("copy-allowed");
    copy_file(&env, &allowed, b"hello").unwrap();
    let written = env.agent.path(format!("{SHARED}/{allowed}"));
    assert_eq!(std::fs::read(&written).unwrap(), b"hello");

    let blocking = ALLOW_ALL.replace(
        "default CopyFileRequest := true",
        "default CopyFileRequest := false",
    );
    set_policy(&env, &blocking).unwrap();
    let refused = unique("copy-refused");
    let msg = assert_blocked(copy_file(&env, &refused, b"nope"), "CopyFileRequest");
    assert_eq!(msg, "CopyFileRequest is blocked by policy: ");
    assert!(!env.agent.path(format!("{SHARED}/{refused}")).exists());
    // The decision is logged with the request type.
    assert!(
        env.agent
            .log_text()
            .contains("policy: CopyFileRequest: blocked"),
        "{}",
        env.agent.log_text()
    );
    // Everything else still goes through.
    let cid = unique("after-block");
    env.run(&cid, &["true"]);
    assert_eq!(env.wait(&cid, &cid).unwrap(), 0);
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

/// A pod policy of the kind genpolicy writes, cut down: one image, one
/// command, the container's bundle where the shim puts it; exec only of
/// one command.
const POD_POLICY: &str = r#"package agent_policy

import future.keywords.in
import future.keywords.every
import future.keywords.if

default CreateContainerRequest := false
default ExecProcessRequest := false

default StartContainerRequest := true
default WaitProcessRequest := true
default ReadStreamRequest := true
default RemoveContainerRequest := true
default SignalProcessRequest := true

CreateContainerRequest if {
    some c in policy_data.containers
    input.OCI.Annotations["io.kubernetes.cri.image-name"] == c.image
    input.OCI.Process.Args == c.args
    print("CreateContainerRequest: image and command match", c.image)
}

ExecProcessRequest if {
    some cmd in policy_data.exec_commands
    input.process.Args == cmd
}

policy_data := {
    "containers": [
        {"image": "docker.io/library/busybox:1.36", "args": ["sh", "-c", "echo allowed"]},
        {"image": "docker.io/library/busybox:1.36", "args": ["sleep", "1000"]}
    ],
    "exec_commands": [["cat", "/proc/1/cmdline"]]
}
"#;

fn create_with_image(env: &Env, cid: &str, image: &str, args: &[&str]) -> ttrpc::Result<()> {
    let mut spec = env.spec(env.rootfs.path(), cid, args);
    spec.Annotations
        .insert("io.kubernetes.cri.image-name".into(), image.into());
    env.create(cid, spec)
}

#[test]
fn a_policy_that_allows_one_image_and_command() {
    let file = PolicyFile::new(POD_POLICY);
    let Some(mut env) = Env::with_cmdline(&file.cmdline()) else {
        return;
    };
    let image = "docker.io/library/busybox:1.36";

    let ok = unique("pol-ok");
    create_with_image(&env, &ok, image, &["sh", "-c", "echo allowed"]).unwrap();
    env.start(&ok).unwrap();
    assert_eq!(env.wait(&ok, &ok).unwrap(), 0);
    assert_eq!(env.read_all(&ok, &ok, false, 1024), b"allowed\n");
    env.remove(&ok).unwrap();
    env.assert_gone(&ok);

    // Another command of the same image, the same command of another
    // image: refused before anything is created.
    let other_cmd = unique("pol-cmd");
    assert_blocked(
        create_with_image(&env, &other_cmd, image, &["sh", "-c", "echo sneaky"]),
        "CreateContainerRequest",
    );
    env.assert_gone(&other_cmd);
    let other_image = unique("pol-img");
    assert_blocked(
        create_with_image(
            &env,
            &other_image,
            "evil/busybox",
            &["sh", "-c", "echo allowed"],
        ),
        "CreateContainerRequest",
    );
    env.assert_gone(&other_image);
    // Without the image annotation at all.
    let bare = unique("pol-bare");
    assert_blocked(
        env.create(
            &bare,
            env.spec(env.rootfs.path(), &bare, &["sh", "-c", "echo allowed"]),
        ),
        "CreateContainerRequest",
    );
    env.assert_gone(&bare);
    // A refused request's id is free: nothing of it was kept.
    create_with_image(&env, &other_cmd, image, &["sh", "-c", "echo allowed"]).unwrap();
    env.remove(&other_cmd).unwrap();
    env.assert_gone(&other_cmd);

    // ExecProcess: only the listed command.
    let long = unique("pol-exec");
    create_with_image(&env, &long, image, &["sleep", "1000"]).unwrap();
    env.start(&long).unwrap();
    env.exec(&long, "allowed", &["cat", "/proc/1/cmdline"])
        .unwrap();
    assert_eq!(env.wait(&long, "allowed").unwrap(), 0);
    assert_eq!(
        env.read_all(&long, "allowed", false, 100),
        b"sleep\x001000\x00"
    );
    for args in [
        &["cat", "/etc/shadow"][..],
        &["sh", "-c", "cat /proc/1/cmdline"][..],
        &["cat", "/proc/1/cmdline", "/etc/passwd"][..],
    ] {
        assert_blocked(env.exec(&long, "refused", args), "ExecProcessRequest");
        // No process was started for it.
        let e = env.wait(&long, "refused").unwrap_err();
        assert_eq!(code(&e), Code::NOT_FOUND, "{e:?}");
    }
    env.signal(&long, "", 9).unwrap();
    assert_eq!(env.wait(&long, &long).unwrap(), 137);
    env.remove(&long).unwrap();
    env.assert_gone(&long);
}

#[test]
fn a_policy_that_restricts_exec_arguments() {
    let file = PolicyFile::new(
        r#"package agent_policy
import future.keywords.if
import future.keywords.every

default CreateContainerRequest := true
default StartContainerRequest := true
default WaitProcessRequest := true
default ReadStreamRequest := true
default RemoveContainerRequest := true
default SignalProcessRequest := true
default ExecProcessRequest := false

# echo with lower-case words only, as the container's own user.
ExecProcessRequest if {
    input.process.Args[0] == "echo"
    every a in array.slice(input.process.Args, 1, count(input.process.Args)) {
        regex.match("^[a-z]+$", a)
    }
    input.process.User.UID == 0
    not input.process.Terminal
}
"#,
    );
    let Some(mut env) = Env::with_cmdline(&file.cmdline()) else {
        return;
    };
    let cid = unique("pol-args");
    env.run(&cid, &["sleep", "1000"]);
    env.exec(&cid, "ok", &["echo", "hello", "world"]).unwrap();
    assert_eq!(env.wait(&cid, "ok").unwrap(), 0);
    assert_eq!(env.read_all(&cid, "ok", false, 100), b"hello world\n");
    for (eid, args) in [
        ("upper", &["echo", "Hello"][..]),
        ("semicolon", &["echo", "hi;reboot"][..]),
        ("shell", &["sh", "-c", "echo hi"][..]),
    ] {
        assert_blocked(env.exec(&cid, eid, args), "ExecProcessRequest");
        assert_eq!(code(&env.wait(&cid, eid).unwrap_err()), Code::NOT_FOUND);
    }
    env.signal(&cid, "", 9).unwrap();
    env.wait(&cid, &cid).unwrap();
    env.remove(&cid).unwrap();
    env.assert_gone(&cid);
}

#[test]
fn set_policy_with_garbage_is_refused_and_the_old_policy_stays() {
    let blocking = ALLOW_ALL.replace(
        "default CopyFileRequest := true",
        "default CopyFileRequest := false",
    );
    let file = PolicyFile::new(&blocking);
    let Some(env) = Env::with_cmdline(&file.cmdline()) else {
        return;
    };
    let mut garbage: Vec<String> = vec![
        "package agent_policy\ndefault CopyFileRequest := ".into(),
        "{{{{ not rego".into(),
        "package someone_else\ndefault CopyFileRequest := true".into(),
        String::new(),
    ];
    garbage.push(String::from_utf8_lossy(&[0xde, 0xad, 0xbe, 0xef, 0, 7]).into_owned());
    for text in &garbage {
        let e = set_policy(&env, text).expect_err("garbage accepted");
        assert_eq!(code(&e), Code::INVALID_ARGUMENT, "{text:?}: {e:?}");
        assert!(message(&e).starts_with("policy: "), "{}", message(&e));
        // The policy in force is the one from before.
        assert_blocked(copy_file(&env, &unique("garbage"), b"x"), "CopyFileRequest");
        raw_check(&env.agent.socket);
    }
    // A SetPolicy the policy in force refuses changes nothing either.
    let locked = format!("{blocking}\ndefault CreateSandboxRequest := true\n").replace(
        "default SetPolicyRequest := true",
        "default SetPolicyRequest := false",
    );
    set_policy(&env, &locked).unwrap();
    assert_blocked(set_policy(&env, ALLOW_ALL), "SetPolicyRequest");
    assert_blocked(copy_file(&env, &unique("locked"), b"x"), "CopyFileRequest");
}

/// Every AgentService method, sent as an empty request under a policy whose
/// every rule says why it refused: each is refused by the rule named after
/// its request type, none reaches its handler (DestroySandbox would stop
/// this agent; it keeps serving), and grpc.Health is not checked, as
/// upstream.
#[test]
fn every_request_type_passes_through_the_policy() {
    let methods: Vec<(String, String)> = protocols::services()
        .into_iter()
        .find(|s| s.name == "grpc.AgentService")
        .expect("AgentService")
        .methods
        .into_iter()
        .map(|m| (m.name, m.input_type.name().to_string()))
        .collect();
    assert!(methods.len() >= 42, "{methods:?}");
    let rules: BTreeSet<&str> = methods.iter().map(|(_, r)| r.as_str()).collect();
    let mut text = String::from("package agent_policy\n");
    for r in &rules {
        text.push_str(&format!("default {r} := false\n{r} {{\n  print(\"rule {r} saw\", count(object.keys(input)), \"fields\")\n  false\n}}\n"));
    }
    let file = PolicyFile::new(&text);
    let mut agent = Agent::start_with(&bin("kata-agent"), &file.cmdline(), &[]);
    let mut s = raw_connect(&agent.socket);
    for (i, (method, rule)) in methods.iter().enumerate() {
        let desc = protocols::services()
            .into_iter()
            .flat_map(|s| s.methods)
            .find(|m| &m.name == method)
            .unwrap()
            .input_type;
        let payload = desc.new_instance().write_to_bytes_dyn().unwrap();
        let id = 2 * i as u32 + 1;
        s.write_all(&request_frame(id, "grpc.AgentService", method, &payload))
            .unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.stream_id, id);
        assert_eq!(
            r.code(),
            Code::PERMISSION_DENIED,
            "{method}: {}",
            r.message()
        );
        // The rule's print() output comes with the refusal, as upstream.
        assert!(
            r.message()
                .starts_with(&format!("{rule} is blocked by policy: ")),
            "{method}: {}",
            r.message()
        );
        assert!(
            r.message().contains(&format!(": rule {rule} saw")),
            "{method}: {}",
            r.message()
        );
    }
    // Still serving: none of the requests was acted on.
    raw_check(&agent.socket);
    assert!(agent.alive());
    let log = agent.log_text();
    for r in &rules {
        assert!(log.contains(&format!("policy: {r}: blocked")), "{r}: {log}");
    }
    if is_root() {
        // Nothing was made under the agent's private /run either.
        let run = agent.path("/run/kata-containers");
        let made: Vec<_> = std::fs::read_dir(&run)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(made.is_empty() || made == ["shared"], "{made:?}");
    }
}
