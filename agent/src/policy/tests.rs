use super::*;

use protocols::agent::{
    CopyFileRequest, CreateContainerRequest, ExecProcessRequest, MemAgentMemcgConfig,
    SetIPTablesRequest, Storage, UpdateInterfaceRequest,
};
use protocols::oci::{LinuxSyscall, Mount, Process, Root, Spec, User};
use protocols::types::{IPAddress, IPFamily, Interface};
use serde_json::{json, Value as Json};

fn parse(s: &str) -> Json {
    match serde_json::from_str(s) {
        Ok(v) => v,
        Err(e) => panic!("not JSON: {e}: {s}"),
    }
}

fn process() -> Process {
    Process {
        Terminal: false,
        User: Some(User {
            UID: 1000,
            GID: 1000,
            AdditionalGids: vec![10, 20],
            ..Default::default()
        })
        .into(),
        Args: vec!["sh".into(), "-c".into(), "echo \"hi\"\n".into()],
        Env: vec!["PATH=/bin".into()],
        Cwd: "/".into(),
        OOMScoreAdj: -999,
        ..Default::default()
    }
}

/// The process as upstream's serde derive writes it: every field, absent
/// messages as null.
fn process_json() -> Json {
    json!({
        "Terminal": false,
        "ConsoleSize": null,
        "User": {"UID": 1000, "GID": 1000, "AdditionalGids": [10, 20], "Username": ""},
        "Args": ["sh", "-c", "echo \"hi\"\n"],
        "Env": ["PATH=/bin"],
        "Cwd": "/",
        "Capabilities": null,
        "Rlimits": [],
        "NoNewPrivileges": false,
        "ApparmorProfile": "",
        "OOMScoreAdj": -999,
        "SelinuxLabel": ""
    })
}

#[test]
fn exec_process_input_has_every_field_as_upstream() {
    let req = ExecProcessRequest {
        container_id: "c1".into(),
        exec_id: "e1".into(),
        process: Some(process()).into(),
        ..Default::default()
    };
    let got = parse(&input::to_json(&req));
    let want = json!({
        "container_id": "c1",
        "exec_id": "e1",
        "string_user": null,
        "process": process_json(),
        "stdin_port": 0,
        "stdout_port": 0,
        "stderr_port": 0
    });
    assert_eq!(got, want);
}

#[test]
fn create_container_input_spells_oci_fields_as_upstream() {
    let mut spec = Spec {
        Version: "1.1.0".into(),
        Process: Some(process()).into(),
        Root: Some(Root {
            Path: "/run/kata-containers/shared/containers/c1/rootfs".into(),
            Readonly: true,
            ..Default::default()
        })
        .into(),
        Hostname: "pod".into(),
        Mounts: vec![Mount {
            destination: "/proc".into(),
            source: "proc".into(),
            type_: "proc".into(),
            options: vec!["nosuid".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    spec.Annotations.insert(
        "io.kubernetes.cri.container-type".into(),
        "container".into(),
    );
    let req = CreateContainerRequest {
        container_id: "c1".into(),
        storages: vec![Storage {
            driver: "virtio-fs".into(),
            source: "kataShared".into(),
            ..Default::default()
        }],
        OCI: Some(spec).into(),
        sandbox_pidns: true,
        ..Default::default()
    };
    let got = parse(&input::to_json(&req));
    let want = json!({
        "container_id": "c1",
        "exec_id": "",
        "string_user": null,
        "devices": [],
        "storages": [{
            "driver": "virtio-fs",
            "driver_options": [],
            "source": "kataShared",
            "fstype": "",
            "options": [],
            "mount_point": "",
            "fs_group": null,
            "shared": false
        }],
        "OCI": {
            "Version": "1.1.0",
            "Process": process_json(),
            "Root": {"Path": "/run/kata-containers/shared/containers/c1/rootfs", "Readonly": true},
            "Hostname": "pod",
            "Mounts": [{"destination": "/proc", "source": "proc", "type_": "proc", "options": ["nosuid"]}],
            "Hooks": null,
            "Annotations": {"io.kubernetes.cri.container-type": "container"},
            "Linux": null,
            "Solaris": null,
            "Windows": null
        },
        "sandbox_pidns": true,
        "shared_mounts": [],
        "stdin_port": 0,
        "stdout_port": 0,
        "stderr_port": 0
    });
    assert_eq!(got, want);
}

#[test]
fn enums_are_numbers_bytes_are_arrays() {
    let req = UpdateInterfaceRequest {
        interface: Some(Interface {
            name: "eth0".into(),
            IPAddresses: vec![IPAddress {
                family: IPFamily::v6.into(),
                address: "fd00::2".into(),
                mask: "64".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let got = parse(&input::to_json(&req));
    assert_eq!(got["interface"]["IPAddresses"][0]["family"], json!(1));
    assert_eq!(got["interface"]["name"], json!("eth0"));

    let req = SetIPTablesRequest {
        is_ipv6: true,
        data: vec![0, 1, 255],
        ..Default::default()
    };
    assert_eq!(
        parse(&input::to_json(&req)),
        json!({"is_ipv6": true, "data": [0, 1, 255]})
    );
}

#[test]
fn oneof_and_optional_fields_as_serde_writes_them() {
    let mut syscall = LinuxSyscall {
        Names: vec!["mkdir".into()],
        Action: "SCMP_ACT_ERRNO".into(),
        ..Default::default()
    };
    assert_eq!(
        parse(&input::to_json(&syscall)),
        json!({"Names": ["mkdir"], "Action": "SCMP_ACT_ERRNO", "Args": [], "ErrnoRet": null})
    );
    syscall.set_errnoret(0);
    assert_eq!(
        parse(&input::to_json(&syscall))["ErrnoRet"],
        json!({"Errnoret": 0})
    );

    let cfg = MemAgentMemcgConfig {
        swap: Some(true),
        period_secs: Some(u64::MAX),
        ..Default::default()
    };
    assert_eq!(
        parse(&input::to_json(&cfg)),
        json!({
            "disabled": null,
            "swap": true,
            "swappiness_max": null,
            "period_secs": u64::MAX,
            "period_psi_percent_limit": null,
            "eviction_psi_percent_limit": null,
            "eviction_run_aging_count_min": null
        })
    );
}

#[test]
fn strings_are_escaped_as_serde_json_does() {
    let tricky = "q\"b\\n\n\t\r\u{1}\u{8}\u{c}é😀";
    let req = protocols::agent::SetPolicyRequest {
        policy: tricky.into(),
        ..Default::default()
    };
    let ours = input::to_json(&req);
    let serde = format!(
        "{{\"policy\":{}}}",
        serde_json::to_string(tricky).unwrap_or_default()
    );
    assert_eq!(ours, serde);
}

#[test]
fn copy_file_input_as_upstream() {
    let regular = CopyFileRequest {
        path: "/run/kata-containers/shared/containers/f".into(),
        file_mode: libc::S_IFREG | 0o644,
        file_size: 3,
        data: b"abc".to_vec(),
        uid: -1,
        ..Default::default()
    };
    let got = parse(&input::copy_file(&regular).unwrap_or_default());
    assert_eq!(
        got,
        json!({
            "path": "/run/kata-containers/shared/containers/f",
            "file_type": "Regular",
            "symlink_target": null,
            "file_size": 3,
            "file_mode": libc::S_IFREG | 0o644,
            "dir_mode": 0,
            "uid": -1,
            "gid": 0,
            "offset": 0
        })
    );
    let link = CopyFileRequest {
        path: "/p/l".into(),
        file_mode: libc::S_IFLNK,
        data: b"..data/token".to_vec(),
        ..Default::default()
    };
    let got = parse(&input::copy_file(&link).unwrap_or_default());
    assert_eq!(got["file_type"], json!("Symlink"));
    assert_eq!(got["symlink_target"], json!("..data/token"));
    for (mode, name) in [
        (libc::S_IFDIR, "Directory"),
        (libc::S_IFSOCK, "Unknown"),
        (libc::S_IFMT, "Unknown"),
        (0, "Unknown"),
    ] {
        let req = CopyFileRequest {
            file_mode: mode,
            ..Default::default()
        };
        let got = parse(&input::copy_file(&req).unwrap_or_default());
        assert_eq!(got["file_type"], json!(name), "mode {mode:o}");
    }
    let bad = CopyFileRequest {
        path: "/p/bad".into(),
        file_mode: libc::S_IFLNK,
        data: vec![0xff, 0xfe],
        ..Default::default()
    };
    assert!(input::copy_file(&bad).is_err());
}

/// upstream's `allow-all.rego` (src/kata-opa), rule for rule.
pub(crate) const UPSTREAM_ALLOW_ALL: &str = super::ALLOW_ALL_REGO;

fn policy(text: &str) -> Policy {
    match Policy::from_rego(text) {
        Ok(p) => p,
        Err(e) => panic!("policy does not compile: {e}"),
    }
}

fn blocked(r: Result<(), PolicyError>) -> String {
    match r {
        Err(e @ PolicyError::Blocked { .. }) => {
            assert_eq!(e.code(), ttrpc::Code::PERMISSION_DENIED);
            e.to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn no_policy_allows_everything_without_a_look() {
    let p = Policy::allow_all();
    assert!(!p.is_enforcing());
    assert!(p.check_request(&CopyFileRequest::default()).is_ok());
    assert!(p.check_json("Anything", "not even json").is_ok());
}

#[test]
fn upstream_allow_all_allows_its_rules_and_refuses_unlisted_ones() {
    let p = policy(UPSTREAM_ALLOW_ALL);
    assert!(p.is_enforcing());
    assert!(p.check_request(&CreateContainerRequest::default()).is_ok());
    assert!(p.check_request(&CopyFileRequest::default()).is_ok());
    // Not listed in allow-all.rego: undefined, so refused (as upstream).
    let msg = blocked(p.check_request(&SetIPTablesRequest::default()));
    assert!(
        msg.starts_with("SetIPTablesRequest is blocked by policy"),
        "{msg}"
    );
}

#[test]
fn a_false_rule_blocks_with_upstreams_message() {
    let p = policy(&UPSTREAM_ALLOW_ALL.replace(
        "default CopyFileRequest := true",
        "default CopyFileRequest := false",
    ));
    let msg = blocked(p.check_request(&CopyFileRequest::default()));
    assert_eq!(msg, "CopyFileRequest is blocked by policy: ");
    assert!(p.check_request(&ExecProcessRequest::default()).is_ok());
}

#[test]
fn prints_of_the_rule_come_with_the_refusal() {
    let p = policy(
        "package agent_policy
import future.keywords.if
default ExecProcessRequest := false
ExecProcessRequest if {
    print(\"args\", input.process.Args)
    input.process.Args == [\"ls\"]
}",
    );
    let mut req = ExecProcessRequest {
        process: Some(process()).into(),
        ..Default::default()
    };
    let msg = blocked(p.check_request(&req));
    assert!(msg.contains("args"), "{msg}");
    req.process.mut_or_insert_default().Args = vec!["ls".into()];
    assert!(p.check_request(&req).is_ok());
}

#[test]
fn allow_requests_failing_policy_lets_refusals_through() {
    let p = policy(
        "package agent_policy
default CopyFileRequest := false
default AllowRequestsFailingPolicy := true",
    );
    assert!(p.check_request(&CopyFileRequest::default()).is_ok());
    // Undefined rules too, as upstream.
    assert!(p.check_request(&ExecProcessRequest::default()).is_ok());
}

#[test]
fn garbage_is_refused_and_the_old_policy_stays() {
    let p = policy(&UPSTREAM_ALLOW_ALL.replace(
        "default CopyFileRequest := true",
        "default CopyFileRequest := false",
    ));
    for bad in [
        "this is not rego {",
        "package other\ndefault CopyFileRequest := true",
        "",
        "\u{0}\u{1}",
    ] {
        let e = match p.set(bad) {
            Err(e) => e,
            Ok(()) => panic!("{bad:?} accepted"),
        };
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{bad:?}: {e}");
        assert!(e.to_string().starts_with("policy: "), "{e}");
        blocked(p.check_request(&CopyFileRequest::default()));
        assert!(p.check_request(&ExecProcessRequest::default()).is_ok());
    }
    p.set(UPSTREAM_ALLOW_ALL).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.check_request(&CopyFileRequest::default()).is_ok());
}

#[test]
fn rego_v1_policies_compile_too() {
    let p = policy(
        "package agent_policy
default ExecProcessRequest := false
ExecProcessRequest if { \"ls\" in input.process.Args }",
    );
    let mut req = ExecProcessRequest {
        process: Some(process()).into(),
        ..Default::default()
    };
    blocked(p.check_request(&req));
    req.process.mut_or_insert_default().Args = vec!["ls".into()];
    assert!(p.check_request(&req).is_ok());
}

#[test]
fn decision_objects_update_the_policy_state() {
    // As genpolicy's rules: the first CreateContainer records the pod's
    // namespace in data.pstate, later ones must match it.
    let p = policy(
        r#"package agent_policy
import future.keywords.if

default CreateContainerRequest := {"allowed": false}

ns := input.OCI.Annotations["io.kubernetes.cri.sandbox-namespace"]

CreateContainerRequest := {"allowed": true, "ops": [{"op": "add", "path": "/pstate/namespace", "value": ns}]} if {
    not data.pstate.namespace
}
CreateContainerRequest := {"allowed": true, "ops": []} if {
    data.pstate.namespace == ns
}
"#,
    );
    let req = |ns: &str| {
        let mut spec = Spec::default();
        spec.Annotations
            .insert("io.kubernetes.cri.sandbox-namespace".into(), ns.into());
        CreateContainerRequest {
            OCI: Some(spec).into(),
            ..Default::default()
        }
    };
    assert!(p.check_request(&req("a")).is_ok());
    assert!(p.check_request(&req("a")).is_ok());
    blocked(p.check_request(&req("b")));
}

#[test]
fn json_patch_operations() {
    let mut doc = json!({"pstate": {"a": 1, "l": [1, 2]}});
    patch_one(
        &mut doc,
        &json!({"op": "add", "path": "/pstate/b", "value": "x"}),
    )
    .unwrap_or_default();
    patch_one(
        &mut doc,
        &json!({"op": "replace", "path": "/pstate/a", "value": 2}),
    )
    .unwrap_or_default();
    patch_one(
        &mut doc,
        &json!({"op": "add", "path": "/pstate/l/-", "value": 3}),
    )
    .unwrap_or_default();
    patch_one(&mut doc, &json!({"op": "remove", "path": "/pstate/l/0"})).unwrap_or_default();
    assert_eq!(doc, json!({"pstate": {"a": 2, "b": "x", "l": [2, 3]}}));
    assert!(patch_one(&mut doc, &json!({"op": "remove", "path": "/pstate/zz"})).is_err());
    assert!(patch_one(&mut doc, &json!({"op": "move", "path": "/pstate/a"})).is_err());
    assert!(patch_one(
        &mut doc,
        &json!({"op": "add", "path": "/nope/x", "value": 1})
    )
    .is_err());
}

#[test]
fn a_missing_default_file_allows_and_a_broken_one_refuses() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = Policy::load(&dir.path().join("none.rego"));
    assert!(!missing.is_enforcing());
    let broken = dir.path().join("broken.rego");
    std::fs::write(&broken, "package agent_policy\nthis is { not rego").unwrap_or_default();
    let p = Policy::load(&broken);
    assert!(p.is_enforcing());
    blocked(p.check_request(&CreateContainerRequest::default()));
    let good = dir.path().join("good.rego");
    std::fs::write(&good, UPSTREAM_ALLOW_ALL).unwrap_or_default();
    let p = Policy::load(&good);
    assert!(p.check_request(&CreateContainerRequest::default()).is_ok());
}

#[test]
fn a_policy_check_costs_microseconds() {
    // Measured, not asserted: printed for the README's figure.
    let p = policy(UPSTREAM_ALLOW_ALL);
    let req = ExecProcessRequest {
        container_id: "c1".into(),
        exec_id: "e1".into(),
        process: Some(process()).into(),
        ..Default::default()
    };
    let n = 2000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(p.check_request(&req).is_ok());
    }
    let per = start.elapsed() / n;
    println!("allow-all policy check of ExecProcessRequest (debug build): {per:?}");
}

#[test]
fn floats_are_written_as_serde_json_writes_each_width() {
    use protobuf::reflect::ReflectValueRef;
    assert_eq!(input::float_json(ReflectValueRef::F32(0.1)), "0.1");
    assert_eq!(input::float_json(ReflectValueRef::F64(0.1)), "0.1");
    assert_eq!(input::float_json(ReflectValueRef::F64(1e21)), "1e+21");
    assert_eq!(input::float_json(ReflectValueRef::F64(3.0)), "3.0");
    assert_eq!(input::float_json(ReflectValueRef::F64(f64::NAN)), "null");
    assert_eq!(
        input::float_json(ReflectValueRef::F32(f32::INFINITY)),
        "null"
    );
}
