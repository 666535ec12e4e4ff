//! `rustjail` runs OCI containers in guest namespaces.
//!
//! It knows OCI runtime specs, the kernel and cgroups, never the agent's wire
//! protocol: the agent converts requests into OCI types before calling it.
