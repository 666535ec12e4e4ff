//! A plain-text listing of the wire interface, derived from the descriptors.
//!
//! One line per file, service method, message, field and enum value, e.g.
//!
//! ```text
//! service grpc.AgentService method CreateContainer in grpc.CreateContainerRequest out google.protobuf.Empty
//! message grpc.CreateContainerRequest field 4 devices repeated grpc.Device
//! message grpc.MemoryStats field 6 stats map<string, uint64>
//! enum types.IPFamily value 1 v6
//! ```
//!
//! Lines are sorted by subject, then by number, so a diff of two listings
//! shows exactly which part of the interface changed.

use protobuf::descriptor::field_descriptor_proto::{Label, Type};
use protobuf::reflect::{EnumDescriptor, FieldDescriptor, MessageDescriptor};

use crate::file_descriptors;

/// The whole interface as sorted text, one item per line, ending in `\n`.
pub fn wire_listing() -> String {
    // (subject, number, line): sorting on the first two keeps field 10
    // after field 9 while the text stays plain.
    let mut entries: Vec<(String, i64, String)> = Vec::new();

    for file in file_descriptors() {
        let subject = format!("file {}", file.proto().name());
        entries.push((
            subject.clone(),
            -1,
            format!("{subject} package {}", file.package()),
        ));

        for service in file.services() {
            let service_name = format!("{}.{}", file.package(), service.proto().name());
            for (index, method) in service.methods().enumerate() {
                let subject = format!("service {service_name}");
                let line = format!(
                    "{subject} method {} in {} out {}",
                    method.proto().name(),
                    method.input_type().full_name(),
                    method.output_type().full_name(),
                );
                entries.push((subject, index as i64, line));
            }
        }
        for message in file.messages() {
            list_message(&message, &mut entries);
        }
        for enumeration in file.enums() {
            list_enum(&enumeration, &mut entries);
        }
    }

    entries.sort();
    let mut out = String::new();
    for (_, _, line) in entries {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn list_message(message: &MessageDescriptor, entries: &mut Vec<(String, i64, String)>) {
    if message.is_map_entry() {
        return; // shown as `map<K, V>` on the field that uses it
    }
    let subject = format!("message {}", message.full_name());
    entries.push((subject.clone(), -1, subject.clone()));
    for field in message.fields() {
        let line = format!(
            "{subject} field {} {} {}",
            field.number(),
            field.name(),
            field_type(message, &field)
        );
        entries.push((subject.clone(), i64::from(field.number()), line));
    }
    for nested in message.nested_messages() {
        list_message(&nested, entries);
    }
    for enumeration in message.nested_enums() {
        list_enum(&enumeration, entries);
    }
}

fn list_enum(enumeration: &EnumDescriptor, entries: &mut Vec<(String, i64, String)>) {
    let subject = format!("enum {}", enumeration.full_name());
    for value in enumeration.values() {
        let line = format!("{subject} value {} {}", value.value(), value.name());
        entries.push((subject.clone(), i64::from(value.value()), line));
    }
}

/// `string`, `repeated grpc.Device`, `map<string, uint64>`,
/// `optional bool`, `uint32 oneof ErrnoRet`.
fn field_type(message: &MessageDescriptor, field: &FieldDescriptor) -> String {
    let proto = field.proto();
    let base = scalar_or_named(field);
    if proto.label() == Label::LABEL_REPEATED {
        if let Some(entry) = map_entry(message, field) {
            let key = entry
                .field_by_number(1)
                .map(|f| scalar_or_named(&f))
                .unwrap_or_default();
            let value = entry
                .field_by_number(2)
                .map(|f| scalar_or_named(&f))
                .unwrap_or_default();
            return format!("map<{key}, {value}>");
        }
        return format!("repeated {base}");
    }
    if proto.proto3_optional() {
        return format!("optional {base}");
    }
    match field.containing_oneof() {
        Some(oneof) => format!("{base} oneof {}", oneof.name()),
        None => base,
    }
}

/// The map entry message a repeated field points at, if it is a map.
fn map_entry(message: &MessageDescriptor, field: &FieldDescriptor) -> Option<MessageDescriptor> {
    if field.proto().type_() != Type::TYPE_MESSAGE {
        return None;
    }
    let type_name = field.proto().type_name().trim_start_matches('.');
    message
        .nested_messages()
        .find(|nested| nested.is_map_entry() && nested.full_name() == type_name)
}

fn scalar_or_named(field: &FieldDescriptor) -> String {
    let proto = field.proto();
    let name = match proto.type_() {
        Type::TYPE_DOUBLE => "double",
        Type::TYPE_FLOAT => "float",
        Type::TYPE_INT64 => "int64",
        Type::TYPE_UINT64 => "uint64",
        Type::TYPE_INT32 => "int32",
        Type::TYPE_FIXED64 => "fixed64",
        Type::TYPE_FIXED32 => "fixed32",
        Type::TYPE_BOOL => "bool",
        Type::TYPE_STRING => "string",
        Type::TYPE_GROUP => "group",
        Type::TYPE_BYTES => "bytes",
        Type::TYPE_UINT32 => "uint32",
        Type::TYPE_SFIXED32 => "sfixed32",
        Type::TYPE_SFIXED64 => "sfixed64",
        Type::TYPE_SINT32 => "sint32",
        Type::TYPE_SINT64 => "sint64",
        Type::TYPE_MESSAGE | Type::TYPE_ENUM => {
            return proto.type_name().trim_start_matches('.').to_string()
        }
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_is_sorted_and_has_every_kind_of_line() {
        let text = wire_listing();
        assert!(text.ends_with('\n'));
        for expected in [
            "file agent.proto package grpc",
            "service grpc.AgentService method CreateContainer in grpc.CreateContainerRequest out google.protobuf.Empty",
            "service grpc.Health method Check in grpc.CheckRequest out grpc.HealthCheckResponse",
            "message grpc.CreateContainerRequest field 1 container_id string",
            "message grpc.CreateContainerRequest field 4 devices repeated grpc.Device",
            "message grpc.MemoryStats field 6 stats map<string, uint64>",
            "message grpc.CgroupStats field 5 hugetlb_stats map<string, grpc.HugetlbStats>",
            "message grpc.MemAgentMemcgConfig field 1 disabled optional bool",
            "message grpc.LinuxSyscall field 3 errnoret uint32 oneof ErrnoRet",
            "message grpc.DestroySandboxRequest",
            "enum types.IPFamily value 1 v6",
            "enum grpc.HealthCheckResponse.ServingStatus value 2 NOT_SERVING",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing line: {expected}"
            );
        }
        assert!(
            !text.contains("grpc.MemoryStats.StatsEntry"),
            "map entries are not listed"
        );
    }

    #[test]
    fn fields_are_in_number_order() {
        let text = wire_listing();
        let numbers: Vec<i32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("message grpc.CreateContainerRequest field "))
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect();
        assert_eq!(numbers, (1..=11).collect::<Vec<_>>());
    }
}
