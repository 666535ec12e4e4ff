//! The error type of the container-side setup (init helper and container
//! init). It travels to the caller as text, so it is just a step and a cause.

use std::io;

use nix::errno::Errno;

use crate::utils::{errno_text, io_text};

/// A failed setup step: `what` names the object and the step
/// (`mount proc on /proc`), `cause` the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}")]
pub(crate) struct SetupError {
    pub what: String,
    pub cause: String,
}

impl SetupError {
    pub(crate) fn new(what: impl Into<String>, cause: impl Into<String>) -> Self {
        SetupError {
            what: what.into(),
            cause: cause.into(),
        }
    }
}

pub(crate) type SetupResult<T> = Result<T, SetupError>;

/// Adds the step to a system error.
pub(crate) trait Context<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> SetupResult<T>;
}

impl<T> Context<T> for Result<T, Errno> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> SetupResult<T> {
        self.map_err(|e| SetupError::new(what(), errno_text(e)))
    }
}

impl<T> Context<T> for io::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> SetupResult<T> {
        self.map_err(|e| SetupError::new(what(), io_text(&e)))
    }
}

impl<T> Context<T> for Result<T, caps::errors::CapsError> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> SetupResult<T> {
        self.map_err(|e| SetupError::new(what(), e.to_string().to_lowercase()))
    }
}
