//! [`HostError`]: the one error type of the agent protocol.
//!
//! The agent keeps its own rich error (with I/O sources and command output);
//! what crosses the wire is its message, for the operator log, and a
//! [`HostErrorKind`], for the few cases the control plane acts on. A failure
//! to reach the agent at all is [`HostErrorKind::Unreachable`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::ImportRefusal;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error, JsonSchema)]
#[error("{message}")]
pub struct HostError {
    #[serde(flatten)]
    pub kind: HostErrorKind,
    /// What happened, for the operator: names the VM, file or command
    /// involved. Never holds a key.
    pub message: String,
}

/// What the control plane can act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum HostErrorKind {
    VmNotFound { vm_id: String },
    VolumeNotFound { volume_id: String },
    SnapshotNotFound { snapshot_id: String },
    /// A VM start was not given the key of one of its volumes (its volume
    /// list changed on the host meanwhile).
    MissingVolumeKey { vm_id: String, volume_id: String },
    /// An uploaded disk image was refused; nothing was written.
    ImportRefused { reason: ImportRefusal },
    /// The key given does not open the volume or snapshot.
    WrongKey,
    /// The request contradicts the host's state (VM running, volume in use…).
    Conflict,
    /// The request itself is malformed (bad ID, bad limits…).
    InvalidArgument,
    /// No such method at this protocol version.
    UnknownMethod,
    /// The agent could not be reached, or did not answer in the protocol.
    Unreachable,
    /// Anything else: a command failed, a file is corrupt…
    Internal,
}

impl HostError {
    pub fn new(kind: HostErrorKind, message: impl Into<String>) -> HostError {
        HostError { kind, message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> HostError {
        HostError::new(HostErrorKind::Internal, message)
    }

    pub fn unreachable(message: impl Into<String>) -> HostError {
        HostError::new(HostErrorKind::Unreachable, message)
    }

    /// The HTTP status the server answers this error with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self.kind {
            HostErrorKind::VmNotFound { .. }
            | HostErrorKind::VolumeNotFound { .. }
            | HostErrorKind::SnapshotNotFound { .. }
            | HostErrorKind::UnknownMethod => StatusCode::NOT_FOUND,
            HostErrorKind::InvalidArgument | HostErrorKind::ImportRefused { .. } => StatusCode::BAD_REQUEST,
            HostErrorKind::MissingVolumeKey { .. } | HostErrorKind::WrongKey | HostErrorKind::Conflict => StatusCode::CONFLICT,
            HostErrorKind::Unreachable => StatusCode::BAD_GATEWAY,
            HostErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_keeps_its_kind_across_the_wire() {
        let e = HostError::new(
            HostErrorKind::MissingVolumeKey { vm_id: "i-1".into(), volume_id: "vol-2".into() },
            "VM i-1: no key given for its volume vol-2",
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["code"], "missing_volume_key");
        assert_eq!(json["volume_id"], "vol-2");
        assert_eq!(serde_json::from_value::<HostError>(json).unwrap(), e);
        let refused = HostError::new(HostErrorKind::ImportRefused { reason: ImportRefusal::Encrypted }, "refused");
        assert_eq!(serde_json::from_str::<HostError>(&serde_json::to_string(&refused).unwrap()).unwrap(), refused);
    }
}
