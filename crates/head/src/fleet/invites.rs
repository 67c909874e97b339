//! Join codes: made with the uses and validity the admin asked for (in range, never quietly
//! changed), listed, and withdrawn.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_proto::JoinCode;
use flotilla_secrets::Secret;
use rand::RngCore;

use super::{
    CONFIRM_JOIN_WITHIN, ControlPlane, FleetError, INVITE_TTL, INVITE_USES, Invitation, blocking,
};
use crate::registry;

impl ControlPlane {
    /// Makes an invite for `uses` machines, valid for `ttl`: both must be in range
    /// ([`INVITE_USES`], [`INVITE_TTL`]), never quietly changed, so what the admin is told is
    /// what the head enforces.
    pub async fn invite(&self, uses: u32, ttl: Duration) -> Result<Invitation, FleetError> {
        if !INVITE_USES.contains(&uses) {
            return Err(FleetError::InvalidArgument(format!(
                "an invite allows {} to {} uses, not {uses}",
                INVITE_USES.start(),
                INVITE_USES.end()
            )));
        }
        if !INVITE_TTL.contains(&ttl) {
            return Err(FleetError::InvalidArgument(format!(
                "an invite is valid for a second to 366 days, not {} seconds",
                ttl.as_secs()
            )));
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let expires = SystemTime::now() + ttl;
        let expires_unix = expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let code = JoinCode::new(
            self.inner.config.addresses.clone(),
            secret,
            self.inner.config.fingerprint,
            Some(expires_unix),
        )
        .map_err(|e| FleetError::FailedPrecondition(format!("cannot make a join code: {e}")))?;
        let registry = self.registry();
        let stored = Secret::from_bytes(secret.to_vec());
        let id = blocking(move || {
            registry
                .create_invite(&stored, uses, expires)
                .map_err(FleetError::internal)
        })
        .await?;
        self.changed();
        Ok(Invitation {
            code: code.encode(),
            id,
            uses,
            expires_unix,
        })
    }

    /// Every invite the head made, newest first; joins never confirmed are undone first, so
    /// their uses show as left.
    pub async fn invites(&self) -> Result<Vec<registry::InviteRecord>, FleetError> {
        let registry = self.registry();
        blocking(move || {
            registry
                .expire_pending(SystemTime::now(), CONFIRM_JOIN_WITHIN)
                .map_err(FleetError::internal)?;
            registry.list_invites().map_err(FleetError::internal)
        })
        .await
    }

    /// Withdraws an invite; `false` if it was withdrawn already.
    pub async fn revoke_invite(&self, id: &str) -> Result<bool, FleetError> {
        let id = id
            .trim()
            .trim_start_matches('#')
            .parse::<i64>()
            .map(registry::InviteId)
            .map_err(|_| {
                FleetError::InvalidArgument(format!(
                    "{id:?} is not an invite id; see `flotilla invite --list`"
                ))
            })?;
        let registry = self.registry();
        blocking(move || {
            registry
                .revoke_invite(id, SystemTime::now())
                .map_err(|e| match e {
                    registry::Error::UnknownInvite(_) => FleetError::NotFound(e.to_string()),
                    e => FleetError::internal(e),
                })
        })
        .await
    }
}
