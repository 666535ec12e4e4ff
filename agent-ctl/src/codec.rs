//! JSON <-> protobuf for any message, through reflection.

use std::io::Read;

use anyhow::{anyhow, Context, Result};
use protobuf::reflect::MessageDescriptor;
use protobuf::MessageDyn;
use protobuf_json_mapping::{ParseOptions, PrintOptions};

/// Where a request's JSON comes from, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// No argument: the message with every field at its default.
    Empty,
    /// The text itself; `json://{...}` (Kata agent-ctl's spelling) too.
    Inline(String),
    /// `@path` or `file://path`.
    File(String),
    /// `-`.
    Stdin,
}

impl Input {
    pub fn from_arg(arg: Option<&str>) -> Self {
        match arg {
            None => Self::Empty,
            Some("-") => Self::Stdin,
            Some(a) => {
                if let Some(path) = a.strip_prefix('@').or_else(|| a.strip_prefix("file://")) {
                    Self::File(path.to_string())
                } else {
                    Self::Inline(a.strip_prefix("json://").unwrap_or(a).to_string())
                }
            }
        }
    }

    /// The JSON text; an empty source means `{}`.
    pub fn read(&self) -> Result<String> {
        let text = match self {
            Self::Empty => String::new(),
            Self::Inline(s) => s.clone(),
            Self::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("read request JSON from {path}"))?,
            Self::Stdin => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("read request JSON from stdin")?;
                s
            }
        };
        Ok(text)
    }
}

/// Parses JSON into a message of type `desc`. Field names may be the proto
/// names (`container_id`) or lowerCamelCase (`containerId`); missing fields
/// keep their defaults; unknown fields are an error, so typos show.
pub fn parse_json(desc: &MessageDescriptor, json: &str) -> Result<Box<dyn MessageDyn>> {
    if json.trim().is_empty() {
        return Ok(desc.new_instance());
    }
    protobuf_json_mapping::parse_dyn_from_str_with_options(desc, json, &ParseOptions::default())
        .map_err(|e| anyhow!("invalid JSON for {}: {e}", desc.full_name()))
}

/// Encodes a message to its wire bytes.
pub fn encode(msg: &dyn MessageDyn) -> Result<Vec<u8>> {
    msg.write_to_bytes_dyn()
        .map_err(|e| anyhow!("encode {}: {e}", msg.descriptor_dyn().full_name()))
}

/// Decodes wire bytes as a message of type `desc`.
pub fn decode(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Box<dyn MessageDyn>> {
    desc.parse_from_bytes(bytes)
        .map_err(|e| anyhow!("decode response as {}: {e}", desc.full_name()))
}

/// Prints a message as one line of JSON with proto field names. Fields at
/// their default value are left out unless `emit_defaults`.
pub fn to_json(msg: &dyn MessageDyn, emit_defaults: bool) -> Result<String> {
    let options = PrintOptions {
        proto_field_name: true,
        always_output_default_values: emit_defaults,
        ..Default::default()
    };
    protobuf_json_mapping::print_to_string_with_options(msg, &options)
        .map_err(|e| anyhow!("print {} as JSON: {e}", msg.descriptor_dyn().full_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sources() {
        assert_eq!(Input::from_arg(None), Input::Empty);
        assert_eq!(Input::from_arg(Some("-")), Input::Stdin);
        assert_eq!(
            Input::from_arg(Some("@/tmp/x.json")),
            Input::File("/tmp/x.json".into())
        );
        assert_eq!(
            Input::from_arg(Some("file:///tmp/x.json")),
            Input::File("/tmp/x.json".into())
        );
        assert_eq!(
            Input::from_arg(Some("json://{\"a\":1}")),
            Input::Inline("{\"a\":1}".into())
        );
        assert_eq!(Input::from_arg(Some("{}")), Input::Inline("{}".into()));
        assert_eq!(Input::Empty.read().unwrap(), "");
    }

    #[test]
    fn file_input_reads_and_missing_file_is_named() {
        let path =
            std::env::temp_dir().join(format!("agent-ctl-input-{}.json", std::process::id()));
        std::fs::write(&path, "{\"x\": 1}").unwrap();
        let arg = format!("@{}", path.display());
        assert_eq!(Input::from_arg(Some(&arg)).read().unwrap(), "{\"x\": 1}");
        std::fs::remove_file(&path).unwrap();
        let err = Input::from_arg(Some(&arg)).read().unwrap_err();
        assert!(
            format!("{err:#}").contains(&path.display().to_string()),
            "{err:#}"
        );
    }

    use protobuf::{Message as _, MessageFull as _};
    use protocols::agent::CreateContainerRequest;

    fn create_container() -> MessageDescriptor {
        CreateContainerRequest::descriptor()
    }

    const CREATE: &str = r#"{
        "container_id": "c1",
        "exec_id": "c1",
        "OCI": {
            "Version": "1.0.2",
            "Process": {
                "User": {"UID": 1000, "GID": 1000, "AdditionalGids": [10, 20]},
                "Args": ["/bin/sh", "-c", "echo hi"],
                "Env": ["PATH=/bin"],
                "Cwd": "/",
                "OOMScoreAdj": "-500"
            },
            "Root": {"Path": "/run/kata-containers/shared/containers/c1/rootfs"},
            "Hostname": "box",
            "Annotations": {"io.katacontainers.pkg.oci.container_type": "pod_container"},
            "Linux": {"Namespaces": [{"Type": "pid"}, {"Type": "mount"}]}
        },
        "storages": [{
            "driver": "virtio-fs",
            "source": "kataShared",
            "fstype": "virtiofs",
            "options": ["nodev"],
            "mount_point": "/run/kata-containers/shared/containers/"
        }],
        "sandbox_pidns": true
    }"#;

    /// JSON -> dynamic message -> wire bytes -> the generated type, and
    /// back to JSON -> the same message.
    #[test]
    fn nested_request_round_trips() {
        let desc = create_container();
        let msg = parse_json(&desc, CREATE).unwrap();
        let bytes = encode(&*msg).unwrap();

        let typed = CreateContainerRequest::parse_from_bytes(&bytes).unwrap();
        assert_eq!(typed.container_id, "c1");
        assert!(typed.sandbox_pidns);
        let spec = typed.OCI.as_ref().unwrap();
        assert_eq!(spec.Hostname, "box");
        let process = spec.Process.as_ref().unwrap();
        assert_eq!(process.Args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(process.OOMScoreAdj, -500);
        let user = process.User.as_ref().unwrap();
        assert_eq!((user.UID, user.GID), (1000, 1000));
        assert_eq!(user.AdditionalGids, [10, 20]);
        assert_eq!(
            spec.Annotations
                .get("io.katacontainers.pkg.oci.container_type")
                .map(String::as_str),
            Some("pod_container")
        );
        assert_eq!(spec.Linux.as_ref().unwrap().Namespaces.len(), 2);
        assert_eq!(
            typed.storages[0].mount_point,
            "/run/kata-containers/shared/containers/"
        );

        let decoded = decode(&desc, &bytes).unwrap();
        let json = to_json(&*decoded, false).unwrap();
        assert!(json.contains("\"container_id\": \"c1\""), "{json}");
        assert!(json.contains("\"mount_point\": "), "{json}");
        assert!(!json.contains("stdin_port"), "{json}");
        let again = parse_json(&desc, &json).unwrap();
        assert!(desc.eq(&*msg, &*again), "{json}");
        assert_eq!(encode(&*again).unwrap(), bytes);
    }

    #[test]
    fn camel_case_names_and_defaults() {
        let desc = create_container();
        let msg = parse_json(&desc, r#"{"containerId": "a", "sandboxPidns": true}"#).unwrap();
        let typed = CreateContainerRequest::parse_from_bytes(&encode(&*msg).unwrap()).unwrap();
        assert_eq!(typed.container_id, "a");
        assert!(typed.sandbox_pidns);

        for empty in ["", "  ", "{}"] {
            let msg = parse_json(&desc, empty).unwrap();
            assert!(encode(&*msg).unwrap().is_empty());
            assert_eq!(to_json(&*msg, false).unwrap(), "{}");
        }
        let all = to_json(&*desc.new_instance(), true).unwrap();
        assert!(all.contains("\"stdin_port\": 0"), "{all}");
    }

    #[test]
    fn bad_json_names_the_message_and_place() {
        let desc = create_container();
        let err = parse_json(&desc, r#"{"container_idd": "a"}"#).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("grpc.CreateContainerRequest"), "{msg}");
        assert!(msg.contains("container_idd"), "{msg}");
        assert!(parse_json(&desc, "{\"container_id\": 5}").is_err());
        assert!(parse_json(&desc, "{").is_err());
        assert!(parse_json(&desc, "[]").is_err());
    }

    #[test]
    fn enums_print_by_name() {
        let desc = protocols::health::HealthCheckResponse::descriptor();
        let msg = parse_json(&desc, r#"{"status": "SERVING"}"#).unwrap();
        assert_eq!(to_json(&*msg, false).unwrap(), "{\"status\": \"SERVING\"}");
        let by_number = parse_json(&desc, r#"{"status": 1}"#).unwrap();
        assert!(desc.eq(&*msg, &*by_number));
    }
}
