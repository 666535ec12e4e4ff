//! Generates the protobuf messages and the async ttrpc server/client code
//! from `protos/*.proto` into `OUT_DIR`, without a `protoc` binary.
//!
//! The generated files start with inner attributes (`#![allow(..)]`) and
//! `//!` comments, which `include!` does not accept; they are stripped here
//! and `src/lib.rs` puts the equivalent `#[allow(..)]` on each module.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const PROTOS: &[&str] = &[
    "agent.proto",
    "csi.proto",
    "health.proto",
    "oci.proto",
    "types.proto",
];

fn main() -> io::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "CARGO_MANIFEST_DIR is not set")
        })?);
    let out_dir = PathBuf::from(
        env::var_os("OUT_DIR")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "OUT_DIR is not set"))?,
    );
    let proto_dir = manifest_dir.join("protos");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let inputs: Vec<PathBuf> = PROTOS.iter().map(|p| proto_dir.join(p)).collect();
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }

    Codegen::new()
        .out_dir(&out_dir)
        .inputs(&inputs)
        .include(&proto_dir)
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()?;

    for proto in PROTOS {
        let stem = proto.trim_end_matches(".proto");
        strip_inner_attributes(&out_dir.join(format!("{stem}.rs")))?;
        let services = out_dir.join(format!("{stem}_ttrpc.rs"));
        if services.exists() {
            strip_inner_attributes(&services)?;
        }
    }
    Ok(())
}

/// Makes a generated file includable with `include!`.
fn strip_inner_attributes(path: &Path) -> io::Result<()> {
    let text = fs::read_to_string(path)?;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#![") {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("//!") {
            out.push_str("//");
            out.push_str(rest);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    fs::write(path, out)
}
