//! How errors reach the host: each domain error type (storage, guest files,
//! network, containers, copy, ...) has one `code()` next to it and a
//! `From<E> for ttrpc::Error` built from it, so a handler's `?` answers
//! with the right status. The rule for codes, everywhere:
//! - a bad request (invalid id, path, field): `INVALID_ARGUMENT`;
//! - a missing object: `NOT_FOUND`;
//! - a conflict with what exists: `ALREADY_EXISTS`, or
//!   `FAILED_PRECONDITION` when the state forbids the call;
//! - an I/O or kernel failure: `INTERNAL`.
//!
//! Codes are never chosen by reading a message's text.

/// A ttrpc error status.
pub fn status(code: ttrpc::Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

/// Implements `From<$t> for ttrpc::Error` with the type's own `code()` and
/// its message.
macro_rules! into_status {
    ($t:ty) => {
        impl From<$t> for ttrpc::Error {
            fn from(e: $t) -> ttrpc::Error {
                $crate::error::status(e.code(), e.to_string())
            }
        }
    };
}
pub(crate) use into_status;

/// `Operation not permitted (os error 1)` -> `operation not permitted`: an
/// I/O error as the message style wants it (lower case, no code).
pub fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => lower_first(nix::errno::Errno::from_raw(n).desc()),
        None => lower_first(&e.to_string()),
    }
}

/// The text with its first letter in lower case.
pub fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
