//! The agent built without its policy engine (`--no-default-features`, so
//! without the `agent-policy` feature, as upstream's agent can be built):
//! no Rego engine and no request serializer in the binary.
//!
//! Without a policy file in the image nothing is checked, as with the
//! engine. An image that has one asked for a policy this agent cannot
//! enforce, so every request is refused (`PERMISSION_DENIED`, naming the
//! request) rather than run unchecked; SetPolicy answers `UNIMPLEMENTED`.

use std::path::Path;

use protobuf::MessageDyn;

/// Where upstream's guest image keeps the policy in force at start.
pub const DEFAULT_POLICY_FILE: &str = "/etc/kata-opa/default-policy.rego";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{ep} is blocked by policy: the image has a policy and this agent has no policy engine (built without agent-policy)")]
    Blocked { ep: String },
    #[error("{0}: this agent is built without the policy engine (cargo feature agent-policy)")]
    Unsupported(&'static str),
}

impl PolicyError {
    pub fn code(&self) -> ttrpc::Code {
        match self {
            PolicyError::Blocked { .. } => ttrpc::Code::PERMISSION_DENIED,
            PolicyError::Unsupported(_) => ttrpc::Code::UNIMPLEMENTED,
        }
    }
}

crate::error::into_status!(PolicyError);

/// What stands in for a policy: all allowed, or (a policy file was found)
/// all refused.
#[derive(Default)]
pub struct Policy {
    refuse_all: bool,
}

impl Policy {
    /// No policy: nothing is checked.
    pub fn allow_all() -> Self {
        Policy { refuse_all: false }
    }

    /// No file at `path`: nothing is checked. A file there (or one whose
    /// presence cannot be told): every request refused.
    pub fn load(path: &Path) -> Self {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::info!(
                    "no policy file {}: every request is allowed (no policy engine built in)",
                    path.display()
                );
                Policy::allow_all()
            }
            found => {
                log::error!(
                    "policy file {}{}: this agent is built without the policy engine \
                     (agent-policy); every request is refused",
                    path.display(),
                    match found {
                        Ok(_) => String::new(),
                        Err(e) => format!(" ({})", crate::error::describe_io(&e)),
                    }
                );
                Policy { refuse_all: true }
            }
        }
    }

    /// Whether requests are checked at all.
    pub fn is_enforcing(&self) -> bool {
        self.refuse_all
    }

    /// `Ok` unless a policy file asked for a policy this agent cannot apply.
    pub fn check_request(&self, req: &dyn MessageDyn) -> Result<(), PolicyError> {
        if !self.refuse_all {
            return Ok(());
        }
        let ep = req.descriptor_dyn().name().to_string();
        log::warn!("policy: {ep}: blocked (no policy engine, and the image has a policy)");
        Err(PolicyError::Blocked { ep })
    }

    /// SetPolicy: there is no engine to give the policy to.
    pub fn set(&self, _text: &str) -> Result<(), PolicyError> {
        Err(PolicyError::Unsupported("SetPolicy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocols::agent::{CopyFileRequest, ListInterfacesRequest};

    #[test]
    fn without_a_policy_file_everything_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let p = Policy::load(&dir.path().join("default-policy.rego"));
        assert!(!p.is_enforcing());
        assert!(p.check_request(&CopyFileRequest::new()).is_ok());
    }

    #[test]
    fn a_policy_file_refuses_every_request_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("default-policy.rego");
        std::fs::write(
            &file,
            "package agent_policy\ndefault CopyFileRequest := true\n",
        )
        .unwrap();
        let p = Policy::load(&file);
        assert!(p.is_enforcing());
        let err = p.check_request(&CopyFileRequest::new()).unwrap_err();
        assert_eq!(err.code(), ttrpc::Code::PERMISSION_DENIED);
        assert!(
            err.to_string()
                .starts_with("CopyFileRequest is blocked by policy: "),
            "{err}"
        );
        assert!(p.check_request(&ListInterfacesRequest::new()).is_err());
    }

    #[test]
    fn set_policy_is_unimplemented() {
        let err = Policy::allow_all().set("package agent_policy").unwrap_err();
        assert_eq!(err.code(), ttrpc::Code::UNIMPLEMENTED);
        assert!(err.to_string().contains("agent-policy"), "{err}");
    }
}
