//! `rustjail` runs OCI containers in guest namespaces.
//!
//! It knows OCI runtime specs (`oci-spec`), the kernel and cgroups
//! (`cgroups-rs`), never the agent's wire protocol: the agent converts
//! requests into OCI types before calling it. Every call is synchronous;
//! the agent runs them off its async threads.
//!
//! # Process model
//!
//! The caller is multi-threaded, so it never forks to run Rust code.
//! [`Container::create`] spawns the caller's own executable (by default
//! `/proc/self/exe`) with the argument [`helper::INIT_ARG`]; that executable's
//! `main` must call [`helper::run_if_requested`] before it starts any thread:
//!
//! ```no_run
//! rustjail::helper::run_if_requested(); // returns unless argv[1] == "init"
//! // ... start the async runtime, serve requests
//! ```
//!
//! The re-exec'd *init helper* is single threaded: it joins the namespaces
//! the spec names by path, clones the container init into new ones (PID 1
//! of a new pid namespace), writes uid/gid maps, reports the init's pid and
//! exits. The init sets up the rootfs (module `rootfs`: mounts,
//! devices, `pivot_root`, masked and readonly paths) and the process
//! (rlimits, user, capabilities, no_new_privs, seccomp, terminal), reports
//! `created` and blocks until [`Container::start`]. Errors come back as text
//! naming the object and the cause:
//! `container "abc": rootfs /x: no such file or directory`.
//!
//! The helper exits once it has reported, so container processes are
//! re-parented to the caller, which must be PID 1 or a child subreaper
//! ([`set_child_subreaper`]) and reaps them (exit codes via
//! [`wait_status_to_code`]). The children rustjail starts in the caller
//! (re-exec'd helpers, hooks) go through the caller's [`Reap`]
//! ([`CreateOpts::reap`]), so one reaper owns every child.
//!
//! # Modules
//! - [`container`]: the caller's API: create, start, exec, kill, pause,
//!   resume, update, stats, OOM events, destroy.
//! - [`helper`]: the re-exec'd side: the init helper and the container init.
//! - `protocol`: the messages between the caller and the helper.
//! - [`cgroups`]: the container's cgroup, v1 or v2.
//! - [`devices`]: the device cgroup's default allow-list, and on v2 the
//!   eBPF program that enforces it.
//! - [`oom`]: OOM-kill notification without a thread.

pub mod cgroups;
pub mod container;
pub mod devices;
mod error;
pub mod helper;
mod hooks;
pub mod oom;
mod process;
mod protocol;
pub mod reap;
mod rootfs;
mod seccomp;
mod seccomp_table;
mod tty;
mod utils;
pub mod zygote;

pub use container::{
    set_child_subreaper, Container, CreateOpts, Error, Result, Spawned, Status, Stdio,
};
pub use oci_spec;
pub use reap::{ChildExit, ChildProc, DirectReap, Reap};
pub use tty::open_pty_pair;
pub use tty::set_window_size;
pub use utils::{default_signals, validate_id, wait_status_to_code};
