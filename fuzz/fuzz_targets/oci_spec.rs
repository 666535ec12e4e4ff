//! OCI spec conversion: a wire `oci.Spec` (CreateContainer) or
//! `oci.Process` (ExecProcess), decoded from the input as protobuf, then
//! converted and validated into `oci-spec` types as the rpc layer does.
//! The first byte picks which; the rest is the message.
#![no_main]

use kata_agent::rpc::oci;
use protobuf::Message;
use protocols::oci as pb;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(spec) = pb::Spec::parse_from_bytes(rest) {
            let _ = oci::spec_from_proto(&spec);
            if let Some(r) = spec.Linux.as_ref().and_then(|l| l.Resources.as_ref()) {
                let _ = oci::resources(r);
            }
        }
    } else if let Ok(p) = pb::Process::parse_from_bytes(rest) {
        let _ = oci::process_from_proto(&p);
    }
});
