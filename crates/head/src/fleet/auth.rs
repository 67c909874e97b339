//! Who a call is from: the `authorization` header (its format is
//! [`flotilla_proto::auth`]'s), a node's credential checked against the registry, the admin
//! token compared in constant time, and the join attempts each address may make.

use std::net::IpAddr;
use std::time::Instant;

use flotilla_proto::auth::{self as header, Scheme};
use flotilla_secrets::Secret;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use super::{ControlPlane, FleetError, JOIN_BURST, JOIN_REFILL, blocking, lock};
use crate::registry::{self, NodeId, NodeRecord};

/// One address's join attempts: a token bucket of [`JOIN_BURST`], refilled one per
/// [`JOIN_REFILL`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The value of `authorization: <scheme> <value>`.
fn bearer(metadata: &MetadataMap, scheme: Scheme) -> Result<&str, FleetError> {
    let value = metadata
        .get(header::HEADER)
        .ok_or_else(|| FleetError::Unauthenticated("this call needs credentials".into()))?
        .to_str()
        .map_err(|_| FleetError::Unauthenticated("unreadable credentials".into()))?;
    scheme.strip(value).ok_or_else(|| {
        FleetError::Unauthenticated(format!("this call needs `{scheme}` credentials"))
    })
}

impl ControlPlane {
    /// Whether `given` is the head's admin token, compared in constant time: the one check
    /// behind admin calls over gRPC (`Admin <token>`) and over HTTP (`Bearer <token>`).
    pub fn is_admin_token(&self, given: &str) -> bool {
        let want = self.inner.config.admin_token.expose();
        !want.is_empty() && bool::from(given.as_bytes().ct_eq(want))
    }

    /// Refuses a call that does not carry the admin token.
    pub(super) fn check_admin(&self, metadata: &MetadataMap) -> Result<(), FleetError> {
        if self.is_admin_token(bearer(metadata, Scheme::Admin)?) {
            Ok(())
        } else {
            Err(FleetError::PermissionDenied(
                "wrong admin token: admin commands run on the head's machine, as the user who \
                 runs the head"
                    .into(),
            ))
        }
    }

    /// Cluster views are for the fleet: an admin, or an enrolled node.
    pub(super) async fn check_reader(&self, metadata: &MetadataMap) -> Result<(), FleetError> {
        if bearer(metadata, Scheme::Admin).is_ok() {
            self.check_admin(metadata)
        } else {
            self.authenticate(metadata).await.map(|_| ())
        }
    }

    /// Takes one join attempt from `ip`'s bucket, or refuses when it is empty. A call whose
    /// address is not known is not counted.
    pub(super) fn take_join_token(&self, ip: Option<IpAddr>) -> Result<(), FleetError> {
        let Some(ip) = ip else { return Ok(()) };
        let mut joins = lock(&self.inner.joins);
        let now = Instant::now();
        if joins.len() > 10_000 {
            joins.retain(|_, b| now.duration_since(b.at) < JOIN_REFILL * JOIN_BURST as u32);
        }
        let b = joins.entry(ip).or_insert(Bucket {
            tokens: JOIN_BURST,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() / JOIN_REFILL.as_secs_f64();
        b.tokens = (b.tokens + refill).min(JOIN_BURST);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(FleetError::ResourceExhausted(format!(
                "too many join attempts from {ip}; wait a minute and try again"
            )));
        }
        b.tokens -= 1.0;
        Ok(())
    }

    /// Authenticates a node's call; returns its record.
    pub(super) async fn authenticate(
        &self,
        metadata: &MetadataMap,
    ) -> Result<NodeRecord, FleetError> {
        let given = header::parse_node(bearer(metadata, Scheme::Node)?)
            .map_err(|e| FleetError::Unauthenticated(e.to_string()))?;
        self.authenticate_node(NodeId(given.id), Secret::from_bytes(given.credential))
            .await
    }

    /// Checks node `id`'s credential. A node still pending that calls with its credential has
    /// kept it: its join becomes final here.
    pub(super) async fn authenticate_node(
        &self,
        id: NodeId,
        credential: Secret,
    ) -> Result<NodeRecord, FleetError> {
        let registry = self.registry();
        let (record, replaced) = blocking(move || {
            let record = registry.authenticate(id, &credential).map_err(auth_error)?;
            if !record.pending {
                return Ok((record, None));
            }
            match registry.confirm_join(id, &credential).map_err(auth_error)? {
                Some((record, replaced)) => Ok((record, Some(replaced))),
                None => Ok((record, None)),
            }
        })
        .await?;
        if let Some(replaced) = replaced {
            self.confirmed(record.clone(), replaced);
        }
        Ok(record)
    }
}

/// A failed credential check as the node is told.
fn auth_error(e: registry::AuthError) -> FleetError {
    match e {
        registry::AuthError::Revoked => FleetError::PermissionDenied(
            "this node was revoked by the head's admin; join again with a new code".into(),
        ),
        registry::AuthError::UnknownNode | registry::AuthError::BadCredential => {
            FleetError::Unauthenticated(
                "the head does not know this node or its credential; join again with a new \
                 code"
                    .into(),
            )
        }
        registry::AuthError::Registry(e) => FleetError::internal(e),
    }
}
