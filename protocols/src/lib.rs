//! The wire protocol between the Kata host shim and the guest agent.
//!
//! The `.proto` files under `protos/` define the ttrpc services
//! `grpc.AgentService` and `grpc.Health` and their messages, with the same
//! packages, names and field numbers as Kata Containers 3.x, so an unchanged
//! shim can drive our agent. `build.rs` turns them into Rust at build time
//! (rust-protobuf messages plus async ttrpc servers and clients; no `protoc`).
//!
//! How the pieces fit:
//!
//! - Messages live in [`agent`], [`health`], [`oci`], [`types`] and [`csi`],
//!   one module per `.proto` file; `google.protobuf.Empty` is [`empty::Empty`].
//! - The agent implements the async traits [`agent_ttrpc::AgentService`] and
//!   [`health_ttrpc::Health`] and registers them with
//!   [`agent_ttrpc::create_agent_service`] and [`health_ttrpc::create_health`].
//!   The generated default method bodies answer `NOT_FOUND`; an agent that
//!   does not support a method should return [`unimplemented_status`] instead.
//! - Clients (agent-ctl, tests) use [`agent_ttrpc::AgentServiceClient`] and
//!   [`health_ttrpc::HealthClient`], or call any method by name through
//!   protobuf reflection with [`services`], [`find_method`] and
//!   [`file_descriptors`].
//! - [`describe::wire_listing`] prints every method, field and enum value;
//!   the test `tests/golden.rs` keeps it equal to `golden/wire.txt`, so a
//!   change to the interface is always a visible diff.

pub mod describe;

pub use protobuf;
pub use ttrpc;

use protobuf::reflect::{FileDescriptor, MessageDescriptor};

/// Declares a module holding one generated file from `OUT_DIR`.
///
/// Generated code follows the `.proto` names (not Rust style) and uses
/// `unwrap` on descriptors it built itself; its lints are not ours to fix.
macro_rules! generated {
    ($(#[$meta:meta])* $name:ident, $file:literal) => {
        $(#[$meta])*
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::undocumented_unsafe_blocks,
            clippy::unwrap_used,
            clippy::expect_used,
            dead_code,
            missing_docs,
            non_camel_case_types,
            non_snake_case,
            non_upper_case_globals,
            trivial_casts,
            unknown_lints,
            unsafe_code,
            unused_attributes,
            unused_imports,
            unused_mut,
            unused_qualifications,
            unused_results
        )]
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", $file));
        }
    };
}

generated!(
    /// Messages of `agent.proto` (package `grpc`).
    agent,
    "agent.rs"
);
generated!(
    /// The `grpc.AgentService` ttrpc service: async server trait
    /// [`AgentService`](agent_ttrpc::AgentService), its registration function
    /// [`create_agent_service`](agent_ttrpc::create_agent_service) and the
    /// client [`AgentServiceClient`](agent_ttrpc::AgentServiceClient).
    agent_ttrpc,
    "agent_ttrpc.rs"
);
generated!(
    /// Messages of `health.proto` (package `grpc`).
    health,
    "health.rs"
);
generated!(
    /// The `grpc.Health` ttrpc service: server trait
    /// [`Health`](health_ttrpc::Health), registration function
    /// [`create_health`](health_ttrpc::create_health) and client
    /// [`HealthClient`](health_ttrpc::HealthClient).
    health_ttrpc,
    "health_ttrpc.rs"
);
generated!(
    /// The OCI runtime spec as carried on the wire (`oci.proto`, package `grpc`).
    oci,
    "oci.rs"
);
generated!(
    /// Network types (`types.proto`, package `types`).
    types,
    "types.rs"
);
generated!(
    /// Volume statistics (`csi.proto`, package `grpc`).
    csi,
    "csi.rs"
);

/// `google.protobuf.Empty`, the reply of most agent methods.
pub mod empty {
    pub use protobuf::well_known_types::empty::Empty;
}

/// Descriptors of our five `.proto` files, in a fixed order
/// (agent, csi, health, oci, types).
///
/// Their dependency `google/protobuf/empty.proto` is reachable through
/// [`FileDescriptor::deps`].
pub fn file_descriptors() -> Vec<FileDescriptor> {
    vec![
        agent::file_descriptor().clone(),
        csi::file_descriptor().clone(),
        health::file_descriptor().clone(),
        oci::file_descriptor().clone(),
        types::file_descriptor().clone(),
    ]
}

/// One method of a ttrpc service, as the descriptors describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodInfo {
    /// Full service name, e.g. `grpc.AgentService`.
    pub service: String,
    /// Method name, e.g. `CreateContainer`.
    pub name: String,
    /// Full name of the request message, e.g. `grpc.CreateContainerRequest`.
    pub input: String,
    /// Full name of the reply message, e.g. `google.protobuf.Empty`.
    pub output: String,
    /// Request message descriptor; `new_instance()` builds an empty request.
    pub input_type: MessageDescriptor,
    /// Reply message descriptor, to decode the answer.
    pub output_type: MessageDescriptor,
}

impl MethodInfo {
    /// The ttrpc method path, e.g. `/grpc.AgentService/CreateContainer`.
    pub fn path(&self) -> String {
        format!("/{}/{}", self.service, self.name)
    }
}

/// A ttrpc service and its methods, in `.proto` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Full service name, e.g. `grpc.Health`.
    pub name: String,
    /// The methods, in declaration order.
    pub methods: Vec<MethodInfo>,
}

/// Every service defined in our `.proto` files, with its methods.
pub fn services() -> Vec<ServiceInfo> {
    let mut out = Vec::new();
    for file in file_descriptors() {
        for service in file.services() {
            let name = qualify(file.package(), service.proto().name());
            let methods = service
                .methods()
                .map(|method| {
                    let input_type = method.input_type();
                    let output_type = method.output_type();
                    MethodInfo {
                        service: name.clone(),
                        name: method.proto().name().to_string(),
                        input: input_type.full_name().to_string(),
                        output: output_type.full_name().to_string(),
                        input_type,
                        output_type,
                    }
                })
                .collect();
            out.push(ServiceInfo { name, methods });
        }
    }
    out
}

/// Looks a method up by bare name (`CreateContainer`), by
/// `Service.Method` (`AgentService.CreateContainer`,
/// `grpc.Health.Check`) or by ttrpc path (`/grpc.Health/Check`).
///
/// Bare names are unique across our services. Matching is exact
/// (case-sensitive), as on the wire.
pub fn find_method(name: &str) -> Option<MethodInfo> {
    let wanted = name.trim_start_matches('/').replace('/', ".");
    services()
        .into_iter()
        .flat_map(|service| service.methods)
        .find(|method| {
            let short_service = method
                .service
                .rsplit('.')
                .next()
                .unwrap_or(method.service.as_str());
            wanted == method.name
                || wanted == format!("{}.{}", method.service, method.name)
                || wanted == format!("{}.{}", short_service, method.name)
        })
}

/// Finds a message descriptor by full name (`grpc.Storage`,
/// `types.Interface`, `google.protobuf.Empty`), nested ones included
/// (`grpc.HealthCheckResponse`).
pub fn message_descriptor(full_name: &str) -> Option<MessageDescriptor> {
    let name = full_name.trim_start_matches('.');
    let mut files = file_descriptors();
    files.push(protobuf::well_known_types::empty::file_descriptor().clone());
    files
        .iter()
        .find_map(|file| file.message_by_full_name(&format!(".{name}")))
}

/// The status an agent returns for a method it does not support:
/// ttrpc `UNIMPLEMENTED` with a message naming the method, e.g.
/// `unimplemented_status("/grpc.AgentService/MemAgentMemcgSet")`.
pub fn unimplemented_status(method_path: &str) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(
        ttrpc::Code::UNIMPLEMENTED,
        format!("{method_path}: not implemented by this agent"),
    ))
}

fn qualify(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_string()
    } else {
        format!("{package}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method_names(service: &str) -> Vec<String> {
        services()
            .into_iter()
            .find(|s| s.name == service)
            .map(|s| s.methods.into_iter().map(|m| m.name).collect())
            .unwrap_or_default()
    }

    #[test]
    fn agent_service_has_every_kata_method() {
        let names = method_names("grpc.AgentService");
        assert_eq!(names.len(), 42, "methods: {names:?}");
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate method names");
    }

    #[test]
    fn health_service_has_check_and_version() {
        assert_eq!(method_names("grpc.Health"), ["Check", "Version"]);
    }

    #[test]
    fn only_the_two_services_exist() {
        let names: Vec<String> = services().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["grpc.AgentService", "grpc.Health"]);
    }

    #[test]
    fn find_method_accepts_name_service_and_path() {
        for query in [
            "CreateContainer",
            "AgentService.CreateContainer",
            "grpc.AgentService.CreateContainer",
            "/grpc.AgentService/CreateContainer",
        ] {
            let method = find_method(query).expect(query);
            assert_eq!(method.path(), "/grpc.AgentService/CreateContainer");
            assert_eq!(method.input, "grpc.CreateContainerRequest");
            assert_eq!(method.output, "google.protobuf.Empty");
        }
        let check = find_method("/grpc.Health/Check").expect("Check");
        assert_eq!(check.output, "grpc.HealthCheckResponse");
        assert!(find_method("createcontainer").is_none());
        assert!(find_method("NoSuchMethod").is_none());
    }

    #[test]
    fn message_descriptors_resolve_across_files() {
        for name in [
            "grpc.Storage",
            "types.Interface",
            "grpc.Spec",
            "grpc.VolumeStatsResponse",
            "google.protobuf.Empty",
            ".grpc.CheckRequest",
        ] {
            assert!(message_descriptor(name).is_some(), "{name}");
        }
        assert!(message_descriptor("grpc.Nope").is_none());
    }

    #[test]
    fn reflection_round_trips_a_request() {
        let method = find_method("CreateContainer").expect("method");
        let mut msg = method.input_type.new_instance();
        let field = method
            .input_type
            .field_by_name("container_id")
            .expect("field");
        field.set_singular_field(&mut *msg, "abc".to_string().into());
        let bytes = msg.write_to_bytes_dyn().expect("encode");

        let typed: agent::CreateContainerRequest =
            protobuf::Message::parse_from_bytes(&bytes).expect("decode");
        assert_eq!(typed.container_id, "abc");
    }

    #[test]
    fn unimplemented_names_the_method() {
        match unimplemented_status("/grpc.AgentService/SetPolicy") {
            ttrpc::Error::RpcStatus(status) => {
                assert_eq!(status.code(), ttrpc::Code::UNIMPLEMENTED);
                assert!(status.message().contains("/grpc.AgentService/SetPolicy"));
            }
            other => panic!("unexpected error {other:?}"),
        }
    }
}
