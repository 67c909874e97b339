//! `Debug` for the generated messages that carry secrets: the secret fields show as
//! `<redacted>` (or `<empty>` when unset, which helps debugging without revealing anything).

use std::fmt;

use crate::v1::{FinishJoinRequest, InviteReply, JoinReply, JoinRequest, PreviousNode, RaySpec};

fn secret(empty: bool) -> &'static str {
    if empty { "<empty>" } else { "<redacted>" }
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("join_secret", &secret(self.join_secret.is_empty()))
            .field("node_name", &self.node_name)
            .field("hostname", &self.hostname)
            .field("previous", &self.previous)
            .field("confirms", &self.confirms)
            .field("os", &self.os)
            .field("arch", &self.arch)
            .field("cpus", &self.cpus)
            .field("memory_bytes", &self.memory_bytes)
            .field("agent_version", &self.agent_version)
            .finish()
    }
}

impl fmt::Debug for JoinReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinReply")
            .field("node_id", &self.node_id)
            .field("node_credential", &secret(self.node_credential.is_empty()))
            .field("node_name", &self.node_name)
            .field("notice", &self.notice)
            .field("confirm_within_secs", &self.confirm_within_secs)
            .field("ray", &self.ray)
            .field("policy", &self.policy)
            .finish()
    }
}

impl fmt::Debug for RaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaySpec")
            .field("gcs_addresses", &self.gcs_addresses)
            .field("ray_version", &self.ray_version)
            .field("python_version", &self.python_version)
            .field("ray_token", &secret(self.ray_token.is_empty()))
            .finish()
    }
}

impl fmt::Debug for InviteReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviteReply")
            .field("code", &secret(self.code.is_empty()))
            .field("expires_unix", &self.expires_unix)
            .field("invite_id", &self.invite_id)
            .field("uses", &self.uses)
            .finish()
    }
}

impl fmt::Debug for PreviousNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreviousNode")
            .field("node_id", &self.node_id)
            .field("credential", &secret(self.credential.is_empty()))
            .finish()
    }
}

impl fmt::Debug for FinishJoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FinishJoinRequest")
            .field("node_id", &self.node_id)
            .field("node_credential", &secret(self.node_credential.is_empty()))
            .field("kept", &self.kept)
            .finish()
    }
}
