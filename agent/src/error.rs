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
