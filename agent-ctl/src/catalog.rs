//! Every service, method and message the agent speaks, read from the
//! protobuf descriptors compiled into `protocols`: no per-method code here.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use protobuf::descriptor::field_descriptor_proto::Type;
use protobuf::reflect::{
    FieldDescriptor, FileDescriptor, MessageDescriptor, RuntimeFieldType, RuntimeType,
};

/// One callable method.
#[derive(Clone)]
pub struct Method {
    /// Full service name as sent on the wire, e.g. `grpc.AgentService`.
    pub service: String,
    /// Method name, e.g. `CreateContainer`.
    pub name: String,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub streaming: bool,
}

impl Method {
    /// `grpc.AgentService/CreateContainer`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.service, self.name)
    }
}

pub struct Catalog {
    /// Sorted by service, then method name.
    methods: Vec<Method>,
    /// Every message in the files and their dependencies, by full name.
    messages: BTreeMap<String, MessageDescriptor>,
}

impl Catalog {
    /// The catalog of the agent's protocol.
    pub fn load() -> Self {
        Self::from_files(protocols::file_descriptors())
    }

    pub fn from_files(files: Vec<FileDescriptor>) -> Self {
        let mut seen = HashSet::new();
        let mut methods = Vec::new();
        let mut messages = BTreeMap::new();
        let mut stack = files;
        while let Some(file) = stack.pop() {
            if !seen.insert(file.proto().name().to_string()) {
                continue;
            }
            stack.extend(file.deps().iter().cloned());
            let package = file.package();
            for service in file.services() {
                let service_name = if package.is_empty() {
                    service.proto().name().to_string()
                } else {
                    format!("{package}.{}", service.proto().name())
                };
                for m in service.methods() {
                    methods.push(Method {
                        service: service_name.clone(),
                        name: m.proto().name().to_string(),
                        input: m.input_type(),
                        output: m.output_type(),
                        streaming: m.proto().client_streaming() || m.proto().server_streaming(),
                    });
                }
            }
            let mut pending: Vec<MessageDescriptor> = file.messages().collect();
            while let Some(msg) = pending.pop() {
                pending.extend(msg.nested_messages());
                if !msg.is_map_entry() {
                    messages.insert(msg.full_name().to_string(), msg);
                }
            }
        }
        methods.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        Self { methods, messages }
    }

    /// Finds a method by `Method`, `Service/Method` or `pkg.Service/Method`
    /// (a leading `/` is allowed, as on the wire). Exact case first; a
    /// case-insensitive match is taken when it is unique.
    pub fn find(&self, spec: &str) -> Result<&Method, String> {
        let spec = spec.trim().trim_start_matches('/');
        let (service, name) = match spec.rsplit_once('/') {
            Some((s, n)) => (Some(s), n),
            None => (None, spec),
        };
        if name.is_empty() {
            return Err(format!("invalid method {spec:?}: empty method name"));
        }
        let service_matches = |m: &Method, ignore_case: bool| match service {
            None => true,
            Some(s) => {
                let short = m.service.rsplit('.').next().unwrap_or(&m.service);
                if ignore_case {
                    m.service.eq_ignore_ascii_case(s) || short.eq_ignore_ascii_case(s)
                } else {
                    m.service == s || short == s
                }
            }
        };
        for ignore_case in [false, true] {
            let found: Vec<&Method> = self
                .methods
                .iter()
                .filter(|m| {
                    service_matches(m, ignore_case)
                        && if ignore_case {
                            m.name.eq_ignore_ascii_case(name)
                        } else {
                            m.name == name
                        }
                })
                .collect();
            match found.as_slice() {
                [] => continue,
                [one] => return Ok(one),
                many => {
                    let names: Vec<String> = many.iter().map(|m| m.path()).collect();
                    return Err(format!(
                        "method {spec:?} is ambiguous: {}",
                        names.join(", ")
                    ));
                }
            }
        }
        let lower = name.to_ascii_lowercase();
        let close: Vec<String> = self
            .methods
            .iter()
            .filter(|m| m.name.to_ascii_lowercase().contains(&lower))
            .map(|m| m.path())
            .take(5)
            .collect();
        let hint = if close.is_empty() {
            "run 'agent-ctl list' to see every method".to_string()
        } else {
            format!("did you mean {}?", close.join(", "))
        };
        Err(format!("unknown method {spec:?}: {hint}"))
    }

    /// Finds a message by full name (`grpc.Spec`), or by its short name when
    /// that is unique.
    pub fn message(&self, name: &str) -> Option<&MessageDescriptor> {
        let name = name.trim_start_matches('.');
        if let Some(m) = self.messages.get(name) {
            return Some(m);
        }
        let mut short = self.messages.values().filter(|m| m.name() == name);
        match (short.next(), short.next()) {
            (Some(m), None) => Some(m),
            _ => None,
        }
    }

    /// `agent-ctl list`: one line per method, `service/method  input -> output`.
    pub fn list(&self) -> String {
        let width = self
            .methods
            .iter()
            .map(|m| m.service.len() + 1 + m.name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for m in &self.methods {
            let _ = writeln!(
                out,
                "  {:<width$}  {} -> {}{}",
                m.path(),
                m.input.full_name(),
                m.output.full_name(),
                if m.streaming { "  (streaming)" } else { "" }
            );
        }
        out
    }

    /// `agent-ctl describe`: a method's input fields, or any message's fields.
    pub fn describe(&self, spec: &str) -> Result<String, String> {
        let mut out = String::new();
        let msg = match self.find(spec) {
            Ok(m) => {
                let _ = writeln!(
                    out,
                    "{}: {} -> {}",
                    m.path(),
                    m.input.full_name(),
                    m.output.full_name()
                );
                m.input.clone()
            }
            Err(method_err) => match self.message(spec) {
                Some(m) => m.clone(),
                None => return Err(format!("{method_err} (nor is it a message name)")),
            },
        };
        let _ = writeln!(out, "message {} {{", msg.full_name());
        let fields: Vec<FieldDescriptor> = msg.fields().collect();
        let width = fields.iter().map(|f| f.name().len()).max().unwrap_or(0);
        for f in &fields {
            let json = if f.json_name() != f.name() {
                format!("  (json: {})", f.json_name())
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {:<width$} = {:<3} {}{json}",
                f.name(),
                f.number(),
                field_type(f)
            );
        }
        let _ = writeln!(out, "}}");
        if let Some(nested) = fields.iter().find_map(|f| match f.runtime_field_type() {
            RuntimeFieldType::Singular(RuntimeType::Message(m))
            | RuntimeFieldType::Repeated(RuntimeType::Message(m)) => Some(m),
            _ => None,
        }) {
            let _ = writeln!(
                out,
                "(agent-ctl describe {} shows a nested message's fields)",
                nested.full_name()
            );
        }
        Ok(out)
    }
}

/// A field's type as written in a .proto file: `string`, `repeated uint32`,
/// `map<string, string>`, `grpc.Spec`, `types.IPFamily`.
pub fn field_type(f: &FieldDescriptor) -> String {
    match f.runtime_field_type() {
        RuntimeFieldType::Map(k, v) => format!("map<{}, {}>", runtime_name(&k), runtime_name(&v)),
        RuntimeFieldType::Repeated(_) => format!("repeated {}", proto_type_name(f)),
        RuntimeFieldType::Singular(_) => {
            let optional = if f.proto().proto3_optional() {
                "optional "
            } else {
                ""
            };
            format!("{optional}{}", proto_type_name(f))
        }
    }
}

fn proto_type_name(f: &FieldDescriptor) -> String {
    let p = f.proto();
    match p.type_() {
        Type::TYPE_MESSAGE | Type::TYPE_ENUM | Type::TYPE_GROUP => match f.runtime_field_type() {
            RuntimeFieldType::Singular(t) | RuntimeFieldType::Repeated(t) => runtime_name(&t),
            RuntimeFieldType::Map(..) => p.type_name().trim_start_matches('.').to_string(),
        },
        Type::TYPE_DOUBLE => "double".into(),
        Type::TYPE_FLOAT => "float".into(),
        Type::TYPE_INT64 => "int64".into(),
        Type::TYPE_UINT64 => "uint64".into(),
        Type::TYPE_INT32 => "int32".into(),
        Type::TYPE_FIXED64 => "fixed64".into(),
        Type::TYPE_FIXED32 => "fixed32".into(),
        Type::TYPE_BOOL => "bool".into(),
        Type::TYPE_STRING => "string".into(),
        Type::TYPE_BYTES => "bytes".into(),
        Type::TYPE_UINT32 => "uint32".into(),
        Type::TYPE_SFIXED32 => "sfixed32".into(),
        Type::TYPE_SFIXED64 => "sfixed64".into(),
        Type::TYPE_SINT32 => "sint32".into(),
        Type::TYPE_SINT64 => "sint64".into(),
    }
}

fn runtime_name(t: &RuntimeType) -> String {
    match t {
        RuntimeType::I32 => "int32".into(),
        RuntimeType::I64 => "int64".into(),
        RuntimeType::U32 => "uint32".into(),
        RuntimeType::U64 => "uint64".into(),
        RuntimeType::F32 => "float".into(),
        RuntimeType::F64 => "double".into(),
        RuntimeType::Bool => "bool".into(),
        RuntimeType::String => "string".into(),
        RuntimeType::VecU8 => "bytes".into(),
        RuntimeType::Enum(e) => e.full_name().into(),
        RuntimeType::Message(m) => m.full_name().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(c: &Catalog, spec: &str) -> Result<String, String> {
        c.find(spec).map(|m| m.path())
    }

    #[test]
    fn every_method_is_listed() {
        let c = Catalog::load();
        let agent = c
            .methods
            .iter()
            .filter(|m| m.service == "grpc.AgentService");
        assert_eq!(agent.count(), 42);
        let health: Vec<String> = c
            .methods
            .iter()
            .filter(|m| m.service == "grpc.Health")
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(health, ["Check", "Version"]);
        let list = c.list();
        assert_eq!(list.lines().count(), 44);
        let squeezed: Vec<String> = list
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(squeezed.contains(
            &"grpc.AgentService/CreateContainer grpc.CreateContainerRequest -> google.protobuf.Empty"
                .to_string()
        ));
        assert!(list.contains("grpc.Health/Check"));
    }

    #[test]
    fn find_accepts_every_spelling() {
        let c = Catalog::load();
        let want = Ok("grpc.AgentService/CreateContainer".to_string());
        for spec in [
            "CreateContainer",
            "AgentService/CreateContainer",
            "grpc.AgentService/CreateContainer",
            "/grpc.AgentService/CreateContainer",
            "createcontainer",
        ] {
            assert_eq!(path(&c, spec), want, "{spec}");
        }
        assert_eq!(path(&c, "Check"), Ok("grpc.Health/Check".to_string()));
        assert_eq!(
            path(&c, "grpc.Health/Check"),
            Ok("grpc.Health/Check".to_string())
        );
        assert_eq!(
            path(&c, "Health/Version"),
            Ok("grpc.Health/Version".to_string())
        );
    }

    #[test]
    fn unknown_methods_get_hints() {
        let c = Catalog::load();
        let err = path(&c, "Container").unwrap_err();
        assert!(err.contains("unknown method \"Container\""), "{err}");
        assert!(err.contains("did you mean"), "{err}");
        let err = path(&c, "Nothing").unwrap_err();
        assert!(err.contains("agent-ctl list"), "{err}");
        assert!(path(&c, "grpc.Health/CreateContainer").is_err());
        assert!(path(&c, "grpc.AgentService/").is_err());
    }

    #[test]
    fn messages_by_full_or_short_name() {
        let c = Catalog::load();
        for name in [
            "grpc.Spec",
            "Spec",
            "types.Interface",
            "google.protobuf.Empty",
        ] {
            assert!(c.message(name).is_some(), "{name}");
        }
        assert!(c.message("grpc.HealthCheckResponse").is_some());
        assert!(c.message("NoSuchMessage").is_none());
    }

    #[test]
    fn describe_shows_fields() {
        let c = Catalog::load();
        let text = c.describe("CreateContainer").unwrap();
        assert!(text.starts_with(
            "grpc.AgentService/CreateContainer: grpc.CreateContainerRequest -> google.protobuf.Empty\n"
        ));
        assert!(
            text.contains("message grpc.CreateContainerRequest {"),
            "{text}"
        );
        let line = |name: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(&format!("{name} ")))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        assert_eq!(
            line("container_id").as_deref(),
            Some("container_id = 1 string (json: containerId)")
        );
        assert_eq!(line("OCI").as_deref(), Some("OCI = 6 grpc.Spec"));
        assert_eq!(
            line("storages").as_deref(),
            Some("storages = 5 repeated grpc.Storage")
        );

        let spec = c.describe("grpc.Spec").unwrap();
        assert!(spec.contains("map<string, string>"), "{spec}");
        assert!(c.describe("NoSuchThing").is_err());
    }
}
