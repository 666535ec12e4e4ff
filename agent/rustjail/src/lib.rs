//! `rustjail` runs OCI containers in guest namespaces.
//!
//! It knows OCI runtime specs (`oci-spec`), the kernel and cgroups
//! (`cgroups-rs`), never the agent's wire protocol: the agent converts
//! requests into OCI types before calling it.
//!
//! How the pieces fit:
//! - [`container`]: the caller's API. [`Container::create`] spawns the
//!   caller's own executable as an *init helper*, [`Container::start`],
//!   [`Container::exec`], [`Container::kill`], [`Container::destroy`].
//! - [`init`]: the re-exec'd side. The executable's `main` must call
//!   [`init::run_if_requested`] before it starts threads; the helper then
//!   sets namespaces up and clones the container init, which prepares the
//!   rootfs ([`rootfs`](crate::rootfs)) and the process, and execs.
//! - [`cgroups`]: the container's cgroup, v1 or v2.
//!
//! The caller reaps container processes (the agent is PID 1 or a child
//! subreaper: see [`set_child_subreaper`]) and turns their wait status into
//! an exit code with [`wait_status_to_code`].

pub mod cgroups;
pub mod container;
mod error;
mod hooks;
pub mod init;
pub mod oom;
mod process;
mod rootfs;
mod seccomp;
mod seccomp_table;
mod sync;
mod tty;
mod utils;

pub use container::{
    set_child_subreaper, Container, CreateOpts, Error, Result, Spawned, Status, Stdio,
};
pub use oci_spec;
pub use tty::set_window_size;
pub use utils::wait_status_to_code;
