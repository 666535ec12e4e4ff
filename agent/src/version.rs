//! Versions reported by `Health.Version` and `GetGuestDetails`.

/// The agent's own version.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The agent API version Kata's shim expects to read back.
pub const API_VERSION: &str = "0.0.1";
