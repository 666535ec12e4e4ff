//! CopyFile: the request decoded and handled by the real handler, in the
//! private world of `fuzz/run.sh`, with a symlink planted in the shared
//! directory that points out of it. Whatever the request, nothing may be
//! written outside `/run/kata-containers/shared/containers/`: the target
//! checks that the planted decoy directory outside stays empty and that
//! nothing but the shared directory appeared elsewhere under `/run`.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use guest_agent_fuzz::{agent, assert_private_world, runtime};
use protobuf::Message;
use protocols::agent::CopyFileRequest;
use protocols::agent_ttrpc::AgentService;
use ttrpc::r#async::TtrpcContext;

const SHARED: &str = "/run/kata-containers/shared/containers";
const OUTSIDE: &str = "/run/outside";

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        assert_private_world();
        std::fs::create_dir_all(SHARED).unwrap();
        std::fs::create_dir_all(OUTSIDE).unwrap();
        // Planted as a container sharing the directory could.
        let _ = std::os::unix::fs::symlink(OUTSIDE, Path::new(SHARED).join("link"));
        let _ = std::os::unix::fs::symlink("../../..", Path::new(SHARED).join("up"));
    });
}

fn entries(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    setup();
    let Ok(mut req) = CopyFileRequest::parse_from_bytes(data) else {
        return;
    };
    // Bounded: the data is written as given.
    req.data.truncate(64 * 1024);
    req.file_size = req.file_size.clamp(-1, 128 * 1024);
    req.offset = req.offset.clamp(-1, 128 * 1024);
    let run_before = entries("/run");
    runtime().block_on(async {
        let a = agent();
        let _ = a.copy_file(&TtrpcContext::default(), req).await;
    });
    assert!(
        entries(OUTSIDE).is_empty(),
        "written through a symlink: {:?}",
        entries(OUTSIDE)
    );
    assert_eq!(
        entries("/run"),
        run_before,
        "written outside the shared directory"
    );
    assert!(
        entries("/run/kata-containers") == ["shared"]
            && entries("/run/kata-containers/shared") == ["containers"],
        "written outside the shared directory: {:?}",
        entries("/run/kata-containers")
    );
    // Keep the directory small: what a request created goes.
    for name in entries(SHARED) {
        if name != "link" && name != "up" {
            let _ = std::fs::remove_dir_all(Path::new(SHARED).join(&name))
                .or_else(|_| std::fs::remove_file(Path::new(SHARED).join(&name)));
        }
    }
});
