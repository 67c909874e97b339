//! The control plane: the `Fleet` gRPC service (package `flotilla.v1`) that agents join and
//! keep a session with, and that admins use to invite, list, command and revoke nodes.
//!
//! Everything the head knows of a node lives in two places: the [`Registry`] (SQLite: identity,
//! credential hashes, state-change events, the contribution ledger) and an in-memory table of
//! live nodes (the latest report, the session's command channel, the standing pause). Reports
//! arrive every second from every node, so they only touch memory; the registry is written when
//! a node's state or reason changes and when contribution records arrive. The snapshot is built
//! from memory, which keeps it cheap at thousands of nodes.
//!
//! Authentication: an agent sends `authorization: Node <id>:<credential in hex>` on every call
//! after `Join`; admin calls carry `authorization: Admin <admin token>` (the format is
//! [`flotilla_proto::auth`]'s). Both are compared against hashes (the registry) or in constant
//! time (the admin token).
//!
//! Exactly-once ledger: every contribution record carries a sequence number from the agent's
//! outbox; the registry ignores a `(node, seq)` it already holds, and the head acknowledges the
//! highest number it stored so the agent can drop what is delivered.
//!
//! The parts: [`ControlPlane`] (here) holds the configuration and the shared state; `live.rs`
//! the table of live nodes, reports, commands and the snapshot; `auth.rs` who a call is from
//! and the join attempts per address; `join.rs` enrollment; `invites.rs` join codes;
//! `metrics.rs` the Prometheus text; `service.rs` the gRPC service, the only place that
//! speaks `tonic::Status`. Callers in the head's process get a [`FleetError`].

mod auth;
mod error;
mod invites;
mod join;
mod live;
mod metrics;
mod service;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_proto::v1::{self as pb, fleet_server::FleetServer};
use flotilla_proto::{Fingerprint, HeadAddress};
use flotilla_ray::RayToken;
use flotilla_secrets::Secret;
use tokio::sync::watch;

use crate::registry::{self, NodeId, Registry};

pub use error::FleetError;
pub use flotilla_proto::auth::encode_hex;
pub use join::python_refusal;
pub use live::{AgentView, RayView, sanitize_report};

/// The control plane's default port.
pub const DEFAULT_CONTROL_PORT: u16 = 7470;
/// The largest message either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The deadline of every unary call the head serves.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Join attempts one address may make at once, then one more every [`JOIN_REFILL`].
pub const JOIN_BURST: f64 = 10.0;
pub const JOIN_REFILL: Duration = Duration::from_secs(6);
/// The most contribution records the head takes from one report.
pub const MAX_RECORDS_PER_REPORT: usize = 256;
/// How long an invite lasts when the admin does not say.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long an invite may be valid.
pub const INVITE_TTL: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(366 * 24 * 3600);

/// How many machines an invite may admit.
pub const INVITE_USES: std::ops::RangeInclusive<u32> = 1..=10_000;

/// How long a join that asked to be confirmed waits for its agent's word before it is undone.
pub const CONFIRM_JOIN_WITHIN: Duration = Duration::from_secs(120);

/// A new join code and what the head will enforce for it.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub code: String,
    pub id: registry::InviteId,
    pub uses: u32,
    pub expires_unix: u64,
}

/// The secret-store name of the head's admin token.
pub const ADMIN_TOKEN_SECRET: &str = "flotilla.admin-token";

/// What the control plane tells joining nodes about Ray.
#[derive(Debug, Clone)]
pub struct RayInfo {
    pub gcs_addresses: Vec<String>,
    pub ray_version: String,
    pub python_version: String,
    pub token: RayToken,
}

/// How the control plane runs.
#[derive(Debug)]
pub struct FleetConfig {
    pub registry: Arc<Registry>,
    pub ray: RayInfo,
    /// Where agents reach the control plane: goes into join codes.
    pub addresses: Vec<HeadAddress>,
    pub fingerprint: Fingerprint,
    pub admin_token: Secret,
    /// The fleet's `[policy]` defaults as TOML (empty: the agents' own defaults).
    pub policy_toml: String,
}

/// The control plane; cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: FleetConfig,
    nodes: Mutex<HashMap<NodeId, live::Live>>,
    /// Bumped on every change of what the snapshot shows.
    version: watch::Sender<u64>,
    joins: Mutex<HashMap<IpAddr, auth::Bucket>>,
    next_session: std::sync::atomic::AtomicU64,
    /// Cancelled when the head stops: every session ends.
    closing: tokio_util::sync::CancellationToken,
    ray: Mutex<RayView>,
    /// Joins and revocations as they happen, for the head's alerts.
    happenings: tokio::sync::broadcast::Sender<Happening>,
    /// The alert targets' queues, whose counts `/metrics` serves.
    alerts: Mutex<Option<crate::alerts::Delivery>>,
}

/// Something that happened in the fleet that the head's alerts tell (see
/// [`ControlPlane::happenings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happening {
    /// A machine joined with a join code (once its join is final).
    Joined { name: String, hostname: String },
    /// An admin revoked a node.
    Revoked { name: String },
}

fn now_ms() -> i64 {
    ms_of(SystemTime::now())
}

fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs blocking registry work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FleetError> + Send + 'static,
) -> Result<T, FleetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FleetError::Internal(format!("registry task failed: {e}")))?
}

impl ControlPlane {
    /// A control plane over `config.registry`, knowing every node enrolled there.
    pub fn new(config: FleetConfig) -> registry::Result<ControlPlane> {
        let mut nodes = HashMap::new();
        for record in config.registry.list_nodes()? {
            if record.is_revoked() {
                continue;
            }
            let last_seen_ms = ms_of(record.last_seen);
            nodes.insert(record.id, live::Live::new(record, last_seen_ms));
        }
        Ok(ControlPlane {
            inner: Arc::new(Inner {
                config,
                nodes: Mutex::new(nodes),
                version: watch::channel(0).0,
                joins: Mutex::new(HashMap::new()),
                next_session: 1.into(),
                closing: tokio_util::sync::CancellationToken::new(),
                ray: Mutex::new(RayView::default()),
                happenings: tokio::sync::broadcast::channel(64).0,
                alerts: Mutex::new(None),
            }),
        })
    }

    /// The gRPC service, with the message-size caps set.
    pub fn service(&self) -> FleetServer<ControlPlane> {
        FleetServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Serves the control plane with TLS on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: rustls::ServerConfig,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = flotilla_proto::transport::TlsIncoming::new(listener, tls);
        tonic::transport::Server::builder()
            .timeout(CALL_TIMEOUT)
            .concurrency_limit_per_connection(64)
            .max_concurrent_streams(256)
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .tcp_nodelay(true)
            .add_service(self.service())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// How nodes join Ray now (the token included: only for enrolled nodes).
    fn ray_spec(&self) -> pb::RaySpec {
        let ray = &self.inner.config.ray;
        pb::RaySpec {
            gcs_addresses: ray.gcs_addresses.clone(),
            ray_version: ray.ray_version.clone(),
            python_version: ray.python_version.clone(),
            ray_token: ray.token.expose().to_string(),
        }
    }

    /// The cluster's Python version (the head's, `3.11.7`).
    pub fn python_version(&self) -> String {
        self.inner.config.ray.python_version.clone()
    }

    /// Takes Ray's latest view of the cluster for the snapshot.
    pub fn set_ray_view(&self, view: RayView) {
        let changed = {
            let mut current = lock(&self.inner.ray);
            let changed = *current != view;
            *current = view;
            changed
        };
        if changed {
            self.changed();
        }
    }

    /// Ends every session (the head is stopping): their streams close, so a graceful shutdown
    /// of the server does not wait for agents that would never hang up.
    pub fn close_sessions(&self) {
        self.inner.closing.cancel();
        for live in self.nodes().values_mut() {
            live.session = None;
        }
    }

    /// Cancelled when the head stops.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.inner.closing.clone()
    }

    /// A receiver that changes whenever the snapshot would.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Joins and revocations from now on. The channel never holds the control plane up: a
    /// receiver that falls more than 64 behind loses the oldest.
    pub fn happenings(&self) -> tokio::sync::broadcast::Receiver<Happening> {
        self.inner.happenings.subscribe()
    }

    /// The head's alert queues, for `/metrics`.
    pub fn attach_alerts(&self, delivery: crate::alerts::Delivery) {
        *lock(&self.inner.alerts) = Some(delivery);
    }

    fn happened(&self, h: Happening) {
        let _ = self.inner.happenings.send(h);
    }

    fn changed(&self) {
        self.inner.version.send_modify(|v| *v += 1);
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<NodeId, live::Live>> {
        lock(&self.inner.nodes)
    }

    fn registry(&self) -> Arc<Registry> {
        self.inner.config.registry.clone()
    }

    /// State-change events from the registry after event `since` (at most `limit`).
    pub async fn events(&self, since: i64, limit: u32) -> Result<Vec<registry::Event>, FleetError> {
        let registry = self.registry();
        blocking(move || registry.events(since, limit).map_err(FleetError::internal)).await
    }

    /// The id of the newest registry event.
    pub async fn last_event_id(&self) -> Result<i64, FleetError> {
        let registry = self.registry();
        blocking(move || registry.last_event_id().map_err(FleetError::internal)).await
    }
}

/// A reason for the protocol.
pub fn reason(code: &str, en: &str, es: &str) -> pb::Reason {
    pb::Reason {
        code: code.into(),
        text_en: en.into(),
        text_es: es.into(),
    }
}
