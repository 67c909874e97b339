//! What the control plane's operations refuse with, for callers in the head's process (the
//! HTTP API, `flotilla up`, the desktop app); the gRPC service turns it into a `Status` at its
//! edge ([`super::service`]).

/// Why a control-plane operation did not happen. The text is what the caller is told, the
/// same whichever front end tells it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The call carries no credentials, or ones the head does not know.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known, and not allowed: a revoked node, a wrong admin token, a join code
    /// that no longer admits anyone.
    #[error("{0}")]
    PermissionDenied(String),
    /// Something the caller sent is not acceptable; theirs to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// The node or invite named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is well-formed, but the fleet cannot do it as things are.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too many attempts from one place; try again later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The head failed (the registry, a task); logged where it happened.
    #[error("{0}")]
    Internal(String),
}

impl FleetError {
    /// The text the caller is told.
    pub fn message(&self) -> &str {
        match self {
            FleetError::Unauthenticated(m)
            | FleetError::PermissionDenied(m)
            | FleetError::InvalidArgument(m)
            | FleetError::NotFound(m)
            | FleetError::FailedPrecondition(m)
            | FleetError::ResourceExhausted(m)
            | FleetError::Internal(m) => m,
        }
    }

    /// A failure of the head itself, logged now.
    pub(crate) fn internal(e: impl std::fmt::Display) -> FleetError {
        tracing::error!("control plane: {e}");
        FleetError::Internal(e.to_string())
    }
}
