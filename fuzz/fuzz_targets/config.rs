//! Configuration parsing: the kernel command line's `agent.*` parameters,
//! the flat config file, the command-line flags, the environment's values,
//! and what PID 1 reads at boot (the module load order, module parameters
//! from the command line, a module's `depends=`, the cgroup mode and
//! `/proc/cgroups`). The first byte picks the parser; the rest is its text.
#![no_main]

use std::path::Path;

use kata_agent::config::{self, Config, Level, ServerAddr};
use kata_agent::pid1::{cgroupfs, modules};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 8 {
        0 => {
            let mut cfg = Config::default();
            let _ = cfg.apply_cmdline(&text);
        }
        1 => {
            let mut cfg = Config::default();
            let _ = cfg.apply_file_text(Path::new("/fuzz/agent.toml"), &text);
        }
        2 => {
            // Flags, NUL-separated as in /proc/<pid>/cmdline.
            let args = text.split('\0').map(str::to_owned);
            let _ = config::parse_args(args);
        }
        3 => {
            let _ = ServerAddr::parse(&text).map(|a| a.to_uri());
            let _ = Level::parse(&text);
            let mut cfg = Config::default();
            let _ = cfg.apply_env(|k| match k {
                "KATA_AGENT_SERVER_ADDR" | "KATA_AGENT_LOG_LEVEL" => Some(text.to_string()),
                _ => None,
            });
        }
        4 => {
            let (list, release) = text.split_once('\n').unwrap_or((&text, "6.1.0"));
            let _ = modules::entries(list, release);
        }
        5 => {
            let (cmdline, name) = text.rsplit_once('\n').unwrap_or((&text, "virtio_blk"));
            let _ = modules::cmdline_params(cmdline, name);
        }
        6 => {
            let _ = modules::depends_of(rest);
        }
        _ => {
            if let cgroupfs::Mode::Legacy { disabled } = cgroupfs::Mode::from_cmdline(&text, false)
            {
                let controllers = cgroupfs::parse_proc_cgroups(&text);
                let _ = cgroupfs::v1_groups(&controllers, &disabled);
            }
        }
    }
});
