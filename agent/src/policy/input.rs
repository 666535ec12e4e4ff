//! The JSON document a policy rule sees as `input`.
//!
//! Upstream's agent derives serde on its rust-protobuf types and hands the
//! policy `serde_json::to_string(&request)`; a policy written for it reads
//! fields the way that derive spells them. This module writes the same
//! document from protobuf reflection (our `protocols` crate has no serde),
//! so the two agents give a rule the same input:
//!
//! - every field, set or not, under its Rust field name: the `.proto` name
//!   as written (`OCI`, `container_id`, `Process`), a Rust keyword with a
//!   trailing `_` (`type_`);
//! - scalars with their value (a proto3 default when unset), 64-bit
//!   integers as JSON numbers, enums as their number, `bytes` as an array
//!   of numbers;
//! - a message field as an object, or `null` when absent; a proto3
//!   `optional` scalar as its value or `null`;
//! - a repeated field as an array, a map as an object;
//! - a oneof under the oneof's name: `null`, or an object with one key, the
//!   set field's name in CamelCase (`"ErrnoRet": {"Errnoret": 1}`).
//!
//! `CopyFileRequest` is the one exception, as upstream: its policy input is
//! [`copy_file`], which leaves out the file's bytes.

use std::fmt::Write as _;

use protobuf::reflect::{FieldDescriptor, ReflectFieldRef, ReflectValueRef, RuntimeFieldType};
use protobuf::MessageDyn;
use protocols::agent::CopyFileRequest;

use crate::logging::push_json_str;

/// The request as a policy's `input`, in upstream's JSON form.
pub fn to_json(msg: &dyn MessageDyn) -> String {
    let mut out = String::with_capacity(256);
    write_message(&mut out, msg);
    out
}

/// Why a `CopyFileRequest` has no policy input.
#[derive(Debug, thiserror::Error)]
#[error("symlink target of {path:?} is not UTF-8")]
pub struct SymlinkTargetError {
    pub path: String,
}

/// `CopyFileRequest` as upstream gives it to a policy: no `data`, the file
/// type spelled out (`Regular`, `Directory`, `Symlink`, or `Unknown` for any
/// other `S_IFMT` bits) and a symlink's target as a string (`null` for
/// other types).
pub fn copy_file(req: &CopyFileRequest) -> Result<String, SymlinkTargetError> {
    let file_type = match req.file_mode & libc::S_IFMT {
        libc::S_IFREG => "Regular",
        libc::S_IFDIR => "Directory",
        libc::S_IFLNK => "Symlink",
        _ => "Unknown",
    };
    let mut out = String::with_capacity(128 + req.path.len());
    out.push_str("{\"path\":");
    push_json_str(&mut out, &req.path);
    out.push_str(",\"file_type\":");
    push_json_str(&mut out, file_type);
    out.push_str(",\"symlink_target\":");
    if file_type == "Symlink" {
        let target = std::str::from_utf8(&req.data).map_err(|_| SymlinkTargetError {
            path: req.path.clone(),
        })?;
        push_json_str(&mut out, target);
    } else {
        out.push_str("null");
    }
    let _ = write!(
        out,
        ",\"file_size\":{},\"file_mode\":{},\"dir_mode\":{},\"uid\":{},\"gid\":{},\"offset\":{}}}",
        req.file_size, req.file_mode, req.dir_mode, req.uid, req.gid, req.offset
    );
    Ok(out)
}

fn write_message(out: &mut String, msg: &dyn MessageDyn) {
    let desc = msg.descriptor_dyn();
    out.push('{');
    let mut first = true;
    for field in desc.fields() {
        // Members of a real oneof are written under the oneof's name below.
        if field.containing_oneof().is_some() {
            continue;
        }
        key(out, &mut first, &rust_name(field.name()));
        write_field(out, msg, &field);
    }
    for oneof in desc.oneofs() {
        if oneof.is_synthetic() {
            continue;
        }
        key(out, &mut first, &rust_name(oneof.name()));
        let set = oneof
            .fields()
            .find_map(|f| f.get_singular(msg).map(|v| (f, v)));
        match set {
            Some((f, v)) => {
                out.push('{');
                push_json_str(out, &camel_case(f.name()));
                out.push(':');
                write_value(out, v);
                out.push('}');
            }
            None => out.push_str("null"),
        }
    }
    out.push('}');
}

fn write_field(out: &mut String, msg: &dyn MessageDyn, field: &FieldDescriptor) {
    match field.get_reflect(msg) {
        ReflectFieldRef::Optional(opt) => match opt.value() {
            Some(v) => write_value(out, v),
            // Absent message, unset proto3 `optional`: serde's `None`.
            None if has_presence(field) => out.push_str("null"),
            None => write_value(out, field.get_singular_field_or_default(msg)),
        },
        ReflectFieldRef::Repeated(rep) => {
            out.push('[');
            for (i, v) in rep.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, v);
            }
            out.push(']');
        }
        ReflectFieldRef::Map(map) => {
            out.push('{');
            let mut first = true;
            for (k, v) in &map {
                if !first {
                    out.push(',');
                }
                first = false;
                match k {
                    ReflectValueRef::String(s) => push_json_str(out, s),
                    other => {
                        // serde_json writes non-string keys as strings too.
                        let mut s = String::new();
                        write_value(&mut s, other);
                        push_json_str(out, &s);
                    }
                }
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

/// Whether an unset singular field is `null` (messages, proto3 `optional`)
/// rather than its type's default.
fn has_presence(field: &FieldDescriptor) -> bool {
    match field.runtime_field_type() {
        RuntimeFieldType::Singular(rt) => {
            matches!(rt, protobuf::reflect::RuntimeType::Message(_))
                || field.proto().proto3_optional()
        }
        _ => false,
    }
}

fn write_value(out: &mut String, v: ReflectValueRef<'_>) {
    let _ = match v {
        ReflectValueRef::U32(n) => write!(out, "{n}"),
        ReflectValueRef::U64(n) => write!(out, "{n}"),
        ReflectValueRef::I32(n) => write!(out, "{n}"),
        ReflectValueRef::I64(n) => write!(out, "{n}"),
        ReflectValueRef::F32(_) | ReflectValueRef::F64(_) => {
            out.push_str(&float_json(v));
            Ok(())
        }
        ReflectValueRef::Bool(b) => write!(out, "{b}"),
        ReflectValueRef::String(s) => {
            push_json_str(out, s);
            Ok(())
        }
        ReflectValueRef::Bytes(b) => {
            out.push('[');
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{byte}");
            }
            out.push(']');
            Ok(())
        }
        ReflectValueRef::Enum(_, n) => write!(out, "{n}"),
        ReflectValueRef::Message(m) => {
            write_message(out, &*m);
            Ok(())
        }
    };
}

/// A float as serde's derive hands it to serde_json: each width in its own
/// shortest form (`0.1` for an `f32` 0.1, `1e+21`), NaN and infinities as
/// `null`.
pub(super) fn float_json(n: ReflectValueRef<'_>) -> String {
    let json = match n {
        ReflectValueRef::F32(n) => serde_json::to_string(&n),
        ReflectValueRef::F64(n) => serde_json::to_string(&n),
        _ => return "null".to_string(),
    };
    json.unwrap_or_else(|_| "null".to_string())
}

fn key(out: &mut String, first: &mut bool, name: &str) {
    if !*first {
        out.push(',');
    }
    *first = false;
    push_json_str(out, name);
    out.push(':');
}

/// The Rust name rust-protobuf gives a field: a keyword gets a trailing `_`.
fn rust_name(name: &str) -> std::borrow::Cow<'_, str> {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move",
        "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait",
        "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do",
        "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
        "gen",
    ];
    if KEYWORDS.contains(&name) {
        format!("{name}_").into()
    } else {
        name.into()
    }
}

/// A oneof member's variant name: `errno_ret` -> `ErrnoRet`.
fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for part in name.split('_') {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}
