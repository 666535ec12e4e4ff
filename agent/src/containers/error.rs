//! The container layer's error: every message names the container (and the
//! process) and the cause; [`Error::code`] is the one mapping to a status.

use std::io;

use crate::storage::StorageError;

/// A container operation that failed; what it had done is undone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {id:?}: invalid id: {reason}")]
    InvalidId {
        kind: &'static str,
        id: String,
        reason: &'static str,
    },
    /// A field of the request is missing or unusable.
    #[error("container {id:?}: {reason}")]
    Invalid { id: String, reason: String },
    #[error("container {id:?}: not found")]
    NotFound { id: String },
    #[error("container {id:?}: process {exec_id:?}: not found")]
    ProcNotFound { id: String, exec_id: String },
    #[error("container {id:?}: already exists")]
    Exists { id: String },
    #[error("container {id:?}: another create or remove is in progress")]
    Busy { id: String },
    #[error("container {id:?}: process {exec_id:?}: already exists")]
    ProcExists { id: String, exec_id: String },
    #[error("container {id:?}: exec {exec_id:?}: the container has stopped")]
    Stopped { id: String, exec_id: String },
    /// The host closed this stream before.
    #[error("container {id:?}: {what}: closed")]
    StreamClosed { id: String, what: String },
    #[error("container {id:?}: {source}")]
    Storage {
        id: String,
        #[source]
        source: StorageError,
    },
    #[error("container {id:?}: {source}")]
    Device {
        id: String,
        #[source]
        source: Box<crate::device::DeviceError>,
    },
    /// A step on the agent's side: `what` names it (`create bundle`).
    #[error("container {id:?}: {what}: {source}")]
    Io {
        id: String,
        what: String,
        #[source]
        source: io::Error,
    },
    /// rustjail's own error names the container.
    #[error(transparent)]
    Jail(#[from] rustjail::Error),
    #[error("container {id:?}: process {exec_id:?} (pid {pid}) did not exit within {secs}s")]
    NotExited {
        id: String,
        exec_id: String,
        pid: i32,
        secs: u32,
    },
}

impl Error {
    /// The status this error answers with: whose fault it was.
    pub fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        match self {
            Error::InvalidId { .. } | Error::Invalid { .. } => Code::INVALID_ARGUMENT,
            Error::NotFound { .. } | Error::ProcNotFound { .. } => Code::NOT_FOUND,
            Error::Exists { .. } | Error::ProcExists { .. } => Code::ALREADY_EXISTS,
            Error::Busy { .. } | Error::Stopped { .. } | Error::StreamClosed { .. } => {
                Code::FAILED_PRECONDITION
            }
            Error::Storage { source, .. } => source.code(),
            Error::Device { source, .. } => source.code(),
            Error::Io { .. } => Code::INTERNAL,
            Error::Jail(e) => jail_code(e),
            Error::NotExited { .. } => Code::DEADLINE_EXCEEDED,
        }
    }

    pub(crate) fn io(id: &str, what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let (id, what) = (id.to_string(), what.into());
        move |source| Error::Io { id, what, source }
    }
}

crate::error::into_status!(Error);

/// rustjail's errors by whose fault they are (rustjail knows no wire, so
/// its mapping lives here, where the agent wraps it).
fn jail_code(e: &rustjail::Error) -> ttrpc::Code {
    use rustjail::Error as E;
    match e {
        E::InvalidId { .. } | E::InvalidSpec { .. } => ttrpc::Code::INVALID_ARGUMENT,
        E::Rootfs { .. } => ttrpc::Code::NOT_FOUND,
        E::State { .. } => ttrpc::Code::FAILED_PRECONDITION,
        _ => ttrpc::Code::INTERNAL,
    }
}

/// Container and exec ids name directories and cgroups: rustjail's rule
/// (letters, digits, `-`, `_`, `.`, no `..`, at most 256 bytes).
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), Error> {
    rustjail::validate_id(id).map_err(|reason| Error::InvalidId {
        kind,
        id: id.to_string(),
        reason,
    })
}
