//! The sandbox operations' error: every message names the sandbox and the
//! cause; [`Error::code`] is the one mapping to a status.

use super::guest_files::GuestFilesError;
use super::ns_holder::HolderError;
use crate::pid1::modules::ModuleError;
use crate::storage::StorageError;

/// A sandbox operation that failed; what it had done is undone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox {id:?}: already created")]
    Exists { id: String },
    #[error("sandbox {id:?}: guest_hook_path {path:?}: {reason}")]
    HookPath {
        id: String,
        path: String,
        reason: String,
    },
    /// The hostname or the DNS configuration.
    #[error("sandbox {id:?}: {source}")]
    Files {
        id: String,
        #[source]
        source: GuestFilesError,
    },
    #[error("sandbox {id:?}: {source}")]
    Module {
        id: String,
        #[source]
        source: ModuleError,
    },
    #[error("sandbox {id:?}: {source}")]
    Storage {
        id: String,
        #[source]
        source: StorageError,
    },
    #[error("sandbox {id:?}: {source}")]
    Holder {
        id: String,
        #[source]
        source: HolderError,
    },
    /// Teardown steps that failed; every step was tried.
    #[error("sandbox {id:?}: destroy: {}", .errors.join("; "))]
    Destroy { id: String, errors: Vec<String> },
}

impl Error {
    /// The status this error answers with: whose fault it was.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            Error::Exists { .. } => ttrpc::Code::ALREADY_EXISTS,
            Error::HookPath { .. } => ttrpc::Code::INVALID_ARGUMENT,
            Error::Files { source, .. } => source.code(),
            Error::Module { source, .. } => source.code(),
            Error::Storage { source, .. } => source.code(),
            Error::Holder { .. } | Error::Destroy { .. } => ttrpc::Code::INTERNAL,
        }
    }
}

crate::error::into_status!(Error);
