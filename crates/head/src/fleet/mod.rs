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
//! after `Join`; admin calls carry `authorization: Admin <admin token>`. Both are compared
//! against hashes (the registry) or in constant time (the admin token).
//!
//! Exactly-once ledger: every contribution record carries a sequence number from the agent's
//! outbox; the registry ignores a `(node, seq)` it already holds, and the head acknowledges the
//! highest number it stored so the agent can drop what is delivered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_proto::v1::fleet_server::{Fleet, FleetServer};
use flotilla_proto::v1::{self as pb, head_command::Command as Cmd};
use flotilla_proto::{Fingerprint, HeadAddress, JoinCode};
use flotilla_ray::RayToken;
use flotilla_secrets::Secret;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::{self, NodeId, NodeRecord, Registry};

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

/// What Ray says about the cluster, refreshed by the head every few seconds and merged into the
/// snapshot with the agents' reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RayView {
    pub running_tasks: u32,
    /// CPUs Ray's tasks use, by Ray node id (hex).
    pub cpus_used: HashMap<String, f64>,
    pub jobs: Vec<pb::JobSummary>,
}

impl RayView {
    /// The parts of a Ray snapshot the control plane serves.
    pub fn of(snapshot: &crate::ClusterSnapshot) -> RayView {
        RayView {
            running_tasks: u32::try_from(snapshot.tasks.running).unwrap_or(u32::MAX),
            cpus_used: snapshot
                .nodes
                .iter()
                .filter(|n| n.state == "ALIVE")
                .map(|n| (n.node_id.clone(), n.cpus_used))
                .collect(),
            jobs: snapshot
                .jobs
                .iter()
                .map(|j| pb::JobSummary {
                    id: j.id.clone(),
                    status: match j.status.as_str() {
                        "PENDING" => pb::JobStatus::Pending,
                        "RUNNING" => pb::JobStatus::Running,
                        "STOPPED" => pb::JobStatus::Stopped,
                        "SUCCEEDED" => pb::JobStatus::Succeeded,
                        "FAILED" => pb::JobStatus::Failed,
                        _ => pb::JobStatus::Unspecified,
                    } as i32,
                    entrypoint: j.entrypoint.clone(),
                    reason: j.reason.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// The control plane; cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: FleetConfig,
    nodes: Mutex<HashMap<NodeId, Live>>,
    /// Bumped on every change of what the snapshot shows.
    version: watch::Sender<u64>,
    joins: Mutex<HashMap<IpAddr, Bucket>>,
    next_session: std::sync::atomic::AtomicU64,
    /// Cancelled when the head stops: every session ends.
    closing: tokio_util::sync::CancellationToken,
    ray: Mutex<RayView>,
}

/// What the head holds in memory for one node.
#[derive(Debug)]
struct Live {
    record: NodeRecord,
    report: Option<pb::AgentReport>,
    last_seen_ms: i64,
    last_seq: u64,
    session: Option<(u64, mpsc::Sender<Result<pb::HeadCommand, Status>>)>,
    /// The latest pause or resume an admin sent: replayed when the node reconnects.
    standing: Option<pb::HeadCommand>,
    /// The node's state as last written to the registry, with its reason code.
    stored: (registry::NodeState, String),
    /// CPU-seconds the node reported giving Ray since the head started.
    contributed: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs blocking registry work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("registry task failed: {e}")))?
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!("control plane: {e}");
    Status::internal(e.to_string())
}

impl ControlPlane {
    /// A control plane over `config.registry`, knowing every node enrolled there.
    pub fn new(config: FleetConfig) -> registry::Result<ControlPlane> {
        let mut nodes = HashMap::new();
        for record in config.registry.list_nodes()? {
            if record.is_revoked() {
                continue;
            }
            let stored = (record.state, record.reason.clone());
            nodes.insert(
                record.id,
                Live {
                    last_seen_ms: ms_of(record.last_seen),
                    record,
                    report: None,
                    last_seq: 0,
                    session: None,
                    standing: None,
                    stored,
                    contributed: 0.0,
                },
            );
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

    fn changed(&self) {
        self.inner.version.send_modify(|v| *v += 1);
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<NodeId, Live>> {
        lock(&self.inner.nodes)
    }

    /// What the head knows of every node now: for the HTTP API and the snapshot.
    pub fn agents(&self) -> Vec<AgentView> {
        let now = now_ms();
        let mut out: Vec<AgentView> = self
            .nodes()
            .values()
            .map(|l| AgentView::of(l, now))
            .collect();
        out.sort_by_key(|a| a.node_id);
        out
    }

    /// State-change events from the registry after event `since` (at most `limit`).
    pub async fn events(&self, since: i64, limit: u32) -> Result<Vec<registry::Event>, Status> {
        let registry = self.inner.config.registry.clone();
        blocking(move || registry.events(since, limit).map_err(internal)).await
    }

    /// The id of the newest registry event.
    pub async fn last_event_id(&self) -> Result<i64, Status> {
        let registry = self.inner.config.registry.clone();
        blocking(move || registry.last_event_id().map_err(internal)).await
    }

    /// The fleet's figures in Prometheus' text format (version 0.0.4).
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let agents = self.agents();
        let contributed: HashMap<i64, f64> = self
            .nodes()
            .iter()
            .map(|(id, l)| (id.0, l.contributed))
            .collect();
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "flotilla_nodes",
            "gauge",
            "Enrolled nodes by state.",
        );
        let mut by_state: std::collections::BTreeMap<&str, u32> = [
            "contributing",
            "throttled",
            "paused",
            "draining",
            "offline",
            "error",
        ]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
        for a in &agents {
            *by_state.entry(a.state.as_str()).or_default() += 1;
        }
        for (state, n) in by_state {
            let _ = writeln!(out, "flotilla_nodes{{state=\"{}\"}} {n}", label(state));
        }
        type Pick = fn(&AgentView) -> f64;
        let totals: [(&str, &str, Pick); 3] = [
            (
                "flotilla_cpus_advertised",
                "CPUs the nodes offer Ray now.",
                |a| a.cpus_advertised,
            ),
            (
                "flotilla_cpus_capped",
                "CPU caps of the nodes' Ray processes, in cores.",
                |a| a.cpus_capped,
            ),
            (
                "flotilla_cpus_logical",
                "Logical CPUs of the enrolled nodes.",
                |a| f64::from(a.cpus),
            ),
        ];
        for (name, help, pick) in totals {
            head(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", agents.iter().map(pick).sum::<f64>());
        }
        let per_node: [(&str, &str, &str, Pick); 5] = [
            (
                "flotilla_node_cpus_advertised",
                "gauge",
                "CPUs a node offers Ray now.",
                |a| a.cpus_advertised,
            ),
            (
                "flotilla_node_owner_active",
                "gauge",
                "1 while the node's owner uses it.",
                |a| f64::from(u8::from(a.owner_active == Some(true))),
            ),
            (
                "flotilla_node_on_battery",
                "gauge",
                "1 while the node runs on battery.",
                |a| f64::from(u8::from(a.on_battery)),
            ),
            (
                "flotilla_node_connected",
                "gauge",
                "1 while the node has a session with the head.",
                |a| f64::from(u8::from(a.connected)),
            ),
            (
                "flotilla_node_contributed_cpu_seconds_total",
                "counter",
                "CPU-seconds a node gave Ray since the head started.",
                |_| 0.0,
            ),
        ];
        for (name, kind, help, pick) in per_node {
            head(&mut out, name, kind, help);
            for a in &agents {
                let value = if kind == "counter" {
                    contributed.get(&a.node_id).copied().unwrap_or(0.0)
                } else {
                    pick(a)
                };
                let _ = writeln!(out, "{name}{{node=\"{}\"}} {value}", label(&a.name));
            }
        }
        out
    }

    /// Enrolls a node of the head's own machine without an invite (the local worker of
    /// `flotilla up`): returns its id, the name it got and a fresh credential, kept in memory by
    /// the caller. The head's own earlier worker of the same name is replaced; a joined machine
    /// that holds the name keeps it, and this node gets another one.
    pub async fn enroll_local(
        &self,
        name: &str,
        cpus: u32,
    ) -> Result<(NodeId, String, Secret), Status> {
        let credential = new_credential();
        let registry = self.inner.config.registry.clone();
        let (name, cred) = (name.to_string(), credential.clone());
        let record = blocking(move || {
            let hostname = flotilla_host::hostname();
            let node = registry::NewNode {
                name: &name,
                hostname: &hostname,
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
                cpus,
            };
            let enrolled = registry
                .enroll(&node, &cred, registry::Admission::Local, SystemTime::now())
                .map_err(enroll_status)?;
            let record = registry
                .node(enrolled.id)
                .map_err(internal)?
                .ok_or_else(|| Status::internal("the new node vanished"))?;
            Ok((record, enrolled.replaced))
        })
        .await?;
        let (record, replaced) = record;
        let (id, name) = (record.id, record.name.clone());
        self.insert(record, replaced);
        Ok((id, name, credential))
    }

    /// A join became final: the node goes into the live table in place of the one it replaced.
    fn confirmed(&self, record: NodeRecord, replaced: Option<NodeId>) {
        tracing::info!(node = %record.id, name = record.name, "join confirmed");
        self.insert(record, replaced);
    }

    /// Adds a newly enrolled node to the live table, dropping the node it replaced (whose
    /// session ends).
    fn insert(&self, record: NodeRecord, replaced: Option<NodeId>) {
        let mut nodes = self.nodes();
        if let Some(old) = replaced.and_then(|id| nodes.remove(&id)) {
            drop(old.session);
        }
        nodes.insert(
            record.id,
            Live {
                stored: (record.state, record.reason.clone()),
                last_seen_ms: now_ms(),
                record,
                report: None,
                last_seq: 0,
                session: None,
                standing: None,
                contributed: 0.0,
            },
        );
        drop(nodes);
        self.changed();
    }

    /// Makes an invite for `uses` machines, valid for `ttl`: both must be in range
    /// ([`INVITE_USES`], [`INVITE_TTL`]), never quietly changed, so what the admin is told is
    /// what the head enforces.
    pub async fn invite(&self, uses: u32, ttl: Duration) -> Result<Invitation, Status> {
        if !INVITE_USES.contains(&uses) {
            return Err(Status::invalid_argument(format!(
                "an invite allows {} to {} uses, not {uses}",
                INVITE_USES.start(),
                INVITE_USES.end()
            )));
        }
        if !INVITE_TTL.contains(&ttl) {
            return Err(Status::invalid_argument(format!(
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
        .map_err(|e| Status::failed_precondition(format!("cannot make a join code: {e}")))?;
        let registry = self.inner.config.registry.clone();
        let stored = Secret::from_bytes(secret.to_vec());
        let id = blocking(move || {
            registry
                .create_invite(&stored, uses, expires)
                .map_err(internal)
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

    /// Tells node `holder`, if it is connected, that a machine asked for its name and got
    /// `given` instead (the registry keeps the same as an event).
    fn tell_name_taken(&self, holder: NodeId, hostname: &str, wanted: &str, given: &str) {
        let nodes = self.nodes();
        let Some((_, tx)) = nodes.get(&holder).and_then(|l| l.session.as_ref()) else {
            return;
        };
        let _ = tx.try_send(Ok(pb::HeadCommand {
            command: Some(Cmd::Notice(pb::Notice {
                reason: Some(reason(
                    "name_taken",
                    &format!(
                        "Another machine ({hostname}) asked to join the fleet as {wanted:?}, \
                         this node's name; it was named {given:?}, and this node keeps its name."
                    ),
                    &format!(
                        "Otra máquina ({hostname}) pidió unirse a la flota como {wanted:?}, el \
                         nombre de este nodo; se llama {given:?} y este nodo conserva su nombre."
                    ),
                )),
            })),
        }));
    }

    /// Every invite the head made, newest first; joins never confirmed are undone first, so
    /// their uses show as left.
    pub async fn invites(&self) -> Result<Vec<registry::InviteRecord>, Status> {
        let registry = self.inner.config.registry.clone();
        blocking(move || {
            registry
                .expire_pending(SystemTime::now(), CONFIRM_JOIN_WITHIN)
                .map_err(internal)?;
            registry.list_invites().map_err(internal)
        })
        .await
    }

    /// Withdraws an invite; `false` if it was withdrawn already.
    pub async fn revoke_invite(&self, id: &str) -> Result<bool, Status> {
        let id = id
            .trim()
            .trim_start_matches('#')
            .parse::<i64>()
            .map(registry::InviteId)
            .map_err(|_| {
                Status::invalid_argument(format!(
                    "{id:?} is not an invite id; see `flotilla invite --list`"
                ))
            })?;
        let registry = self.inner.config.registry.clone();
        blocking(move || {
            registry
                .revoke_invite(id, SystemTime::now())
                .map_err(|e| match e {
                    registry::Error::UnknownInvite(_) => Status::not_found(e.to_string()),
                    e => internal(e),
                })
        })
        .await
    }

    /// Whether `given` is the head's admin token, compared in constant time: the one check
    /// behind admin calls over gRPC (`Admin <token>`) and over HTTP (`Bearer <token>`).
    pub fn is_admin_token(&self, given: &str) -> bool {
        let want = self.inner.config.admin_token.expose();
        !want.is_empty() && bool::from(given.as_bytes().ct_eq(want))
    }

    fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.is_admin_token(bearer(request, "Admin")?) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "wrong admin token: admin commands run on the head's machine, as the user who \
                 runs the head",
            ))
        }
    }

    /// Cluster views are for the fleet: an admin, or an enrolled node.
    async fn check_reader<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if bearer(request, "Admin").is_ok() {
            self.check_admin(request)
        } else {
            self.authenticate(request).await.map(|_| ())
        }
    }

    fn take_join_token(&self, ip: Option<IpAddr>) -> Result<(), Status> {
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
            return Err(Status::resource_exhausted(format!(
                "too many join attempts from {ip}; wait a minute and try again"
            )));
        }
        b.tokens -= 1.0;
        Ok(())
    }

    /// Authenticates a node's call; returns its id.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<NodeRecord, Status> {
        let value = bearer(request, "Node")?;
        let (id, credential) = value.split_once(':').ok_or_else(|| {
            Status::unauthenticated("malformed node credential: expected `Node <id>:<hex>`")
        })?;
        let id = NodeId(
            id.parse()
                .map_err(|_| Status::unauthenticated("malformed node id"))?,
        );
        let credential = Secret::from_bytes(
            decode_hex(credential)
                .ok_or_else(|| Status::unauthenticated("malformed node credential"))?,
        );
        let registry = self.inner.config.registry.clone();
        let record = blocking(move || {
            let map = |e| match e {
                registry::AuthError::Revoked => Status::permission_denied(
                    "this node was revoked by the head's admin; join again with a new code",
                ),
                registry::AuthError::UnknownNode | registry::AuthError::BadCredential => {
                    Status::unauthenticated(
                        "the head does not know this node or its credential; join again \
                             with a new code",
                    )
                }
                registry::AuthError::Registry(e) => internal(e),
            };
            let record = registry.authenticate(id, &credential).map_err(map)?;
            if !record.pending {
                return Ok((record, None));
            }
            // A node that calls with its credential has kept it: its join is final.
            match registry.confirm_join(id, &credential).map_err(map)? {
                Some((record, replaced)) => Ok((record, Some(replaced))),
                None => Ok((record, None)),
            }
        })
        .await?;
        match record {
            (record, Some(replaced)) => {
                self.confirmed(record.clone(), replaced);
                Ok(record)
            }
            (record, None) => Ok(record),
        }
    }

    /// Applies one report from an authenticated session; returns the acknowledgement to send.
    async fn apply_report(
        &self,
        node: NodeId,
        mut report: pb::AgentReport,
    ) -> Result<Option<pb::HeadCommand>, Status> {
        sanitize_report(&mut report);
        let now = now_ms();
        let records: Vec<registry::ContributionRecord> = report
            .contributions
            .iter()
            .take(MAX_RECORDS_PER_REPORT)
            .filter(|r| r.cpu_seconds.is_finite() && r.cpu_seconds >= 0.0)
            .map(|r| registry::ContributionRecord {
                seq: r.seq,
                hour_start: UNIX_EPOCH
                    + Duration::from_secs(
                        u64::try_from(r.hour_start_unix).unwrap_or(0) / 3600 * 3600,
                    ),
                cpu_seconds: r.cpu_seconds,
            })
            .collect();
        let ack = records.iter().map(|r| r.seq).max();
        let state_change = {
            let mut nodes = self.nodes();
            let Some(live) = nodes.get_mut(&node) else {
                return Err(Status::permission_denied("this node was revoked"));
            };
            live.last_seen_ms = now;
            let mut change = None;
            if report.seq > live.last_seq {
                live.last_seq = report.seq;
                if report.contributed_cpu_seconds.is_finite()
                    && report.contributed_cpu_seconds > 0.0
                {
                    live.contributed += report.contributed_cpu_seconds;
                }
                let state = registry_state(report.state);
                let code = report
                    .reason
                    .as_ref()
                    .map(|r| r.code.clone())
                    .unwrap_or_default();
                if live.stored != (state, code.clone()) {
                    live.stored = (state, code.clone());
                    change = Some((state, code));
                }
                live.report = Some(report);
            }
            change
        };
        let registry = self.inner.config.registry.clone();
        if state_change.is_some() || !records.is_empty() {
            blocking(move || {
                if let Some((state, code)) = state_change {
                    registry
                        .record_state(node, state, &code, SystemTime::now())
                        .map_err(internal)?;
                }
                if !records.is_empty() {
                    registry
                        .add_contributions(node, &records)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                }
                Ok(())
            })
            .await?;
        }
        self.changed();
        Ok(ack.map(|up_to_seq| pb::HeadCommand {
            command: Some(Cmd::Ack(pb::Ack { up_to_seq })),
        }))
    }

    /// Ends the session `id` of `node` (if it is still the current one) and marks it offline.
    async fn session_ended(&self, node: NodeId, id: u64) {
        let went_offline = {
            let mut nodes = self.nodes();
            match nodes.get_mut(&node) {
                Some(live) if live.session.as_ref().is_some_and(|(s, _)| *s == id) => {
                    live.session = None;
                    live.stored = (registry::NodeState::Offline, "disconnected".into());
                    true
                }
                _ => false,
            }
        };
        if went_offline {
            let registry = self.inner.config.registry.clone();
            let _ = blocking(move || {
                match registry.record_state(
                    node,
                    registry::NodeState::Offline,
                    "disconnected",
                    SystemTime::now(),
                ) {
                    Ok(_) | Err(registry::Error::Revoked(_)) => Ok(()),
                    Err(e) => Err(internal(e)),
                }
            })
            .await;
            self.changed();
        }
    }

    /// Finds a node by id or name.
    /// The node `node` names: its id (`7` or `#7`) or its name (in any ASCII case). A text
    /// that is one node's id and another's name is refused rather than guessed.
    fn find(&self, node: &str) -> Result<NodeId, Status> {
        let nodes = self.nodes();
        let text = node.trim();
        let by_id = text
            .strip_prefix('#')
            .unwrap_or(text)
            .parse::<i64>()
            .ok()
            .map(NodeId)
            .filter(|id| nodes.contains_key(id));
        let by_name = if text.starts_with('#') {
            None
        } else {
            nodes
                .iter()
                .find(|(_, l)| l.record.name.eq_ignore_ascii_case(text))
                .map(|(id, _)| *id)
        };
        match (by_id, by_name) {
            (Some(a), Some(b)) if a != b => Err(Status::invalid_argument(format!(
                "{text:?} is node {a}'s id and node {b}'s name; write #{a} for the first, \
                 #{b} for the second"
            ))),
            (Some(id), _) | (None, Some(id)) => Ok(id),
            (None, None) => Err(Status::not_found(format!(
                "no node named {node:?}; see `flotilla nodes`"
            ))),
        }
    }

    /// Sends `command` to a node now if it is connected, and keeps it as the node's standing
    /// pause state for when it reconnects. Returns the node's name and whether it was sent.
    pub fn command(
        &self,
        node: &str,
        command: pb::HeadCommand,
    ) -> Result<(NodeId, String, bool), Status> {
        let id = self.find(node)?;
        let mut nodes = self.nodes();
        let live = nodes
            .get_mut(&id)
            .expect("found above under the same lock order");
        live.standing = Some(command.clone());
        let sent = live
            .session
            .as_ref()
            .is_some_and(|(_, tx)| tx.try_send(Ok(command)).is_ok());
        Ok((id, live.record.name.clone(), sent))
    }

    /// Revokes a node: its credential stops working and its session ends with `Leave`.
    pub async fn revoke(&self, node: &str) -> Result<(NodeId, String), Status> {
        let id = self.find(node)?;
        let registry = self.inner.config.registry.clone();
        blocking(move || registry.revoke(id, SystemTime::now()).map_err(internal)).await?;
        let live = self.nodes().remove(&id);
        self.changed();
        let name = live
            .as_ref()
            .map(|l| l.record.name.clone())
            .unwrap_or_default();
        if let Some((_, tx)) = live.and_then(|l| l.session) {
            let _ = tx.try_send(Ok(pb::HeadCommand {
                command: Some(Cmd::Leave(pb::Leave {
                    reason: Some(reason(
                        "revoked",
                        "revoked by the head's admin",
                        "revocado por el administrador",
                    )),
                })),
            }));
        }
        Ok((id, name))
    }

    /// The snapshot as the protocol carries it.
    pub fn snapshot(&self) -> pb::ClusterSnapshot {
        let now = now_ms();
        let ray = lock(&self.inner.ray).clone();
        let nodes = self.nodes();
        let mut out: Vec<pb::NodeSummary> = nodes
            .iter()
            .map(|(id, l)| {
                let view = AgentView::of(l, now);
                pb::NodeSummary {
                    node_id: id.to_string(),
                    name: l.record.name.clone(),
                    state: view.proto_state,
                    reason: l.report.as_ref().and_then(|r| r.reason.clone()),
                    python_version: view.python_version.clone(),
                    cpus_advertised: view.cpus_advertised,
                    cpus_total: f64::from(l.record.cpus),
                    cpus_used: l
                        .report
                        .as_ref()
                        .filter(|_| view.connected)
                        .and_then(|r| ray.cpus_used.get(&r.ray_node_id))
                        .copied()
                        .unwrap_or(0.0),
                    owner_active: view.owner_active,
                    battery_percent: view.battery_percent,
                    last_seen_unix_ms: l.last_seen_ms,
                }
            })
            .collect();
        drop(nodes);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let totals = pb::ClusterTotals {
            nodes: out.len() as u32,
            nodes_contributing: out
                .iter()
                .filter(|n| {
                    matches!(
                        pb::NodeState::try_from(n.state),
                        Ok(pb::NodeState::Contributing | pb::NodeState::Throttled)
                    )
                })
                .count() as u32,
            cpus_advertised: out.iter().map(|n| n.cpus_advertised).sum(),
            cpus_total: out.iter().map(|n| n.cpus_total).sum(),
            cpus_used: out.iter().map(|n| n.cpus_used).sum(),
            running_tasks: ray.running_tasks,
        };
        pb::ClusterSnapshot {
            time_unix_ms: now,
            nodes: out,
            totals: Some(totals),
            jobs: ray.jobs,
        }
    }
}

/// A node as the head sees it, for the HTTP API and `flotilla nodes`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AgentView {
    pub node_id: i64,
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpus: u32,
    /// `contributing`, `throttled`, `paused`, `draining`, `offline`, `error` or `unknown`.
    pub state: String,
    pub reason_code: String,
    pub reason_en: String,
    pub reason_es: String,
    pub connected: bool,
    pub cpus_advertised: f64,
    pub cpus_capped: f64,
    pub owner_active: Option<bool>,
    pub on_battery: bool,
    pub battery_percent: Option<f64>,
    pub ray_node_id: String,
    pub last_seen_unix_ms: i64,
    /// The Python version the node's runtime runs (`3.11.2`; empty until it reports one).
    #[serde(default)]
    pub python_version: String,
    #[serde(skip)]
    proto_state: i32,
}

impl AgentView {
    /// A node of the control plane's snapshot (what an enrolled agent may read of its fleet,
    /// e.g. the desktop app of a worker) in the dashboard's form. What the summary does not
    /// carry (hostname, OS, capped CPUs, power) stays empty.
    pub fn of_summary(n: &pb::NodeSummary) -> AgentView {
        let state = pb::NodeState::try_from(n.state).unwrap_or(pb::NodeState::Unspecified);
        let connected = state != pb::NodeState::Offline;
        let reason = n.reason.clone().unwrap_or_default();
        AgentView {
            node_id: n.node_id.parse().unwrap_or_default(),
            name: n.name.clone(),
            hostname: String::new(),
            os: String::new(),
            arch: String::new(),
            cpus: n.cpus_total as u32,
            state: match state {
                pb::NodeState::Contributing => "contributing",
                pb::NodeState::Throttled => "throttled",
                pb::NodeState::Paused => "paused",
                pb::NodeState::Draining => "draining",
                pb::NodeState::Offline => "offline",
                pb::NodeState::Error => "error",
                pb::NodeState::Unspecified => "unknown",
            }
            .into(),
            reason_code: reason.code,
            reason_en: reason.text_en,
            reason_es: reason.text_es,
            connected,
            cpus_advertised: n.cpus_advertised,
            cpus_capped: n.cpus_total,
            owner_active: n.owner_active,
            on_battery: false,
            battery_percent: n.battery_percent,
            ray_node_id: String::new(),
            last_seen_unix_ms: n.last_seen_unix_ms,
            python_version: n.python_version.clone(),
            proto_state: n.state,
        }
    }

    fn of(l: &Live, _now: i64) -> AgentView {
        let connected = l.session.is_some();
        let r = l.report.as_ref();
        let proto_state = match (connected, r) {
            (true, Some(r)) => r.state,
            (true, None) => pb::NodeState::Unspecified as i32,
            (false, _) => pb::NodeState::Offline as i32,
        };
        let state = match pb::NodeState::try_from(proto_state) {
            Ok(pb::NodeState::Contributing) => "contributing",
            Ok(pb::NodeState::Throttled) => "throttled",
            Ok(pb::NodeState::Paused) => "paused",
            Ok(pb::NodeState::Draining) => "draining",
            Ok(pb::NodeState::Offline) => "offline",
            Ok(pb::NodeState::Error) => "error",
            Ok(pb::NodeState::Unspecified) if connected => "connecting",
            _ => "unknown",
        };
        let reason = r.and_then(|r| r.reason.clone()).filter(|_| connected);
        AgentView {
            node_id: l.record.id.0,
            name: l.record.name.clone(),
            hostname: l.record.hostname.clone(),
            os: l.record.os.clone(),
            arch: l.record.arch.clone(),
            cpus: l.record.cpus,
            state: state.into(),
            reason_code: reason.as_ref().map_or_else(
                || {
                    if connected {
                        String::new()
                    } else {
                        "disconnected".into()
                    }
                },
                |r| r.code.clone(),
            ),
            reason_en: reason.as_ref().map_or_else(
                || {
                    if connected {
                        String::new()
                    } else {
                        "not connected to the head".into()
                    }
                },
                |r| r.text_en.clone(),
            ),
            reason_es: reason.as_ref().map_or_else(
                || {
                    if connected {
                        String::new()
                    } else {
                        "sin conexión con el nodo principal".into()
                    }
                },
                |r| r.text_es.clone(),
            ),
            connected,
            cpus_advertised: r.filter(|_| connected).map_or(0.0, |r| r.advertised_cpus),
            cpus_capped: r.filter(|_| connected).map_or(0.0, |r| r.capped_cpus),
            owner_active: r.and_then(|r| r.owner_active),
            on_battery: r.is_some_and(|r| r.power_source == pb::PowerSource::Battery as i32),
            battery_percent: r.and_then(|r| r.battery_percent),
            ray_node_id: r.map(|r| r.ray_node_id.clone()).unwrap_or_default(),
            last_seen_unix_ms: l.last_seen_ms,
            python_version: r.map(|r| r.python_version.clone()).unwrap_or_default(),
            proto_state,
        }
    }
}

fn redeem_status(e: registry::RedeemError) -> Status {
    match e {
        registry::RedeemError::Unknown => Status::permission_denied(
            "the head does not know this join code (it was made by another head, or mistyped); \
             ask for a new one",
        ),
        registry::RedeemError::Expired => Status::permission_denied(
            "this join code has expired; ask the head's admin for a new one (`flotilla invite`)",
        ),
        registry::RedeemError::UsedUp => Status::permission_denied(
            "this join code has already been used as many times as it allows; ask for a new \
             one (`flotilla invite --uses N`)",
        ),
        registry::RedeemError::Withdrawn => Status::permission_denied(
            "this join code has been withdrawn by the head's admin; ask for a new one",
        ),
        registry::RedeemError::Registry(e) => enroll_status_of(e),
    }
}

/// A registry error of an enrollment as the joiner sees it: a name or field it sent that is
/// not acceptable is its to fix.
fn enroll_status_of(e: registry::Error) -> Status {
    match e {
        registry::Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
        e => internal(e),
    }
}

fn enroll_status(e: registry::RedeemError) -> Status {
    redeem_status(e)
}

fn new_credential() -> Secret {
    let mut credential = vec![0u8; 32];
    rand::rng().fill_bytes(&mut credential);
    Secret::from_bytes(credential)
}

/// Why a machine offering `offered` Pythons (and downloads, or not) cannot run a node of a
/// cluster on Python `cluster` (`3.11.7`): Ray accepts another patch of the same minor, never
/// another minor. `None` when it can, or when the machine did not say (an older agent).
pub fn python_refusal(offered: &[String], downloads: bool, cluster: &str) -> Option<String> {
    let minor = flotilla_ray::versions::minor_of;
    let wanted = minor(cluster);
    if offered.is_empty() || downloads || offered.iter().any(|v| minor(v) == wanted) {
        return None;
    }
    let mut has: Vec<&str> = offered.iter().map(String::as_str).collect();
    has.sort_unstable();
    has.dedup();
    Some(format!(
        "this machine has Python {} and cannot download another, but the fleet runs Python \
         {cluster}, and Ray needs the same minor version ({wanted}) on every node. Install Python \
         {wanted} (from python.org, `brew install python@{wanted}`, `apt install python{wanted}`, \
         or `uv python install {cluster}`) and join again with the same code: it was not used",
        has.join(", ")
    ))
}

fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn registry_state(state: i32) -> registry::NodeState {
    match pb::NodeState::try_from(state) {
        Ok(pb::NodeState::Paused) => registry::NodeState::Paused,
        Ok(pb::NodeState::Draining) => registry::NodeState::Draining,
        Ok(pb::NodeState::Offline) => registry::NodeState::Offline,
        _ => registry::NodeState::Online,
    }
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A reason for the protocol.
pub fn reason(code: &str, en: &str, es: &str) -> pb::Reason {
    pb::Reason {
        code: code.into(),
        text_en: en.into(),
        text_es: es.into(),
    }
}

/// The value of `authorization: <scheme> <value>`.
fn bearer<'a, T>(request: &'a Request<T>, scheme: &str) -> Result<&'a str, Status> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("this call needs credentials"))?
        .to_str()
        .map_err(|_| Status::unauthenticated("unreadable credentials"))?;
    value
        .strip_prefix(scheme)
        .and_then(|v| v.strip_prefix(' '))
        .ok_or_else(|| Status::unauthenticated(format!("this call needs `{scheme}` credentials")))
}

/// Lower-case hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 512 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Makes a report's figures safe to add up and show: a value that is not a finite number (or
/// a negative count) from a broken or hostile agent becomes 0 or absent, and a battery reading
/// is kept within 0-100. Records are filtered where they are read.
pub fn sanitize_report(r: &mut pb::AgentReport) {
    let count = |v: f64| if v.is_finite() && v >= 0.0 { v } else { 0.0 };
    r.advertised_cpus = count(r.advertised_cpus);
    r.capped_cpus = count(r.capped_cpus);
    r.owner_load = count(r.owner_load);
    r.contributed_cpu_seconds = count(r.contributed_cpu_seconds);
    r.battery_percent = r
        .battery_percent
        .filter(|b| b.is_finite())
        .map(|b| b.clamp(0.0, 100.0));
}

fn check_text(what: &str, value: &str) -> Result<(), Status> {
    if value.chars().count() > registry::MAX_TEXT_CHARS || value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "the {what} must be at most {} characters, without control characters",
            registry::MAX_TEXT_CHARS
        )));
    }
    Ok(())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Fleet for ControlPlane {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinReply>, Status> {
        self.take_join_token(request.remote_addr().map(|a| a.ip()))?;
        let req = request.into_inner();
        let name = req.node_name.trim().to_string();
        if name.is_empty() {
            return Err(Status::invalid_argument("the node name is empty"));
        }
        registry::check_node_name(&name).map_err(enroll_status_of)?;
        check_text("hostname", &req.hostname)?;
        check_text("operating system", &req.os)?;
        check_text("architecture", &req.arch)?;
        let secret = Secret::from_bytes(req.join_secret.clone());
        let previous = match &req.previous {
            Some(p) => Some((
                p.node_id.parse::<i64>().map(NodeId).map_err(|_| {
                    Status::invalid_argument("the previous node id is not a number")
                })?,
                Secret::from_bytes(p.credential.clone()),
            )),
            None => None,
        };
        let credential = new_credential();
        let registry = self.inner.config.registry.clone();
        let pending = req.confirms;
        let wanted = name.clone();
        let (record, enrolled, cred) = {
            let credential = credential.clone();
            let (hostname, os, arch, cpus) = (
                req.hostname.clone(),
                req.os.clone(),
                req.arch.clone(),
                req.cpus,
            );
            let cluster_python = self.inner.config.ray.python_version.clone();
            let refusal =
                python_refusal(&req.python_versions, req.python_downloads, &cluster_python);
            blocking(move || {
                if let Some(why) = refusal {
                    // Said only to holders of a usable code, and the code stays unused.
                    registry
                        .check_invite(&secret, SystemTime::now())
                        .map_err(redeem_status)?;
                    return Err(Status::failed_precondition(why));
                }
                // Joins whose agents never confirmed are undone first: their names and uses
                // are free again.
                registry
                    .expire_pending(SystemTime::now(), CONFIRM_JOIN_WITHIN)
                    .map_err(internal)?;
                let node = registry::NewNode {
                    name: &name,
                    hostname: &hostname,
                    os: &os,
                    arch: &arch,
                    cpus,
                };
                let admission = registry::Admission::Invite {
                    secret: &secret,
                    previous: previous.as_ref().map(|(id, c)| (*id, c)),
                    pending,
                };
                let enrolled = registry
                    .enroll(&node, &credential, admission, SystemTime::now())
                    .map_err(enroll_status)?;
                let record = registry
                    .node(enrolled.id)
                    .map_err(internal)?
                    .ok_or_else(|| Status::internal("the new node vanished"))?;
                Ok((record, enrolled, credential))
            })
            .await?
        };
        let id = record.id;
        let notice = enrolled.name_held_by.map(|holder| {
            let name = &wanted;
            self.tell_name_taken(holder, &req.hostname, name, &enrolled.name);
            reason(
                "name_taken",
                &format!(
                    "The name {name:?} belongs to another machine of the fleet (node {holder}), \
                     so this one is {:?}. To take the name, the fleet's admin revokes node \
                     {holder} (`flotilla revoke {holder}`) and this machine joins again with \
                     `--name {name}`.",
                    enrolled.name
                ),
                &format!(
                    "El nombre {name:?} es de otra máquina de la flota (nodo {holder}), así que \
                     esta se llama {:?}. Para quedarse con el nombre, el administrador revoca el \
                     nodo {holder} (`flotilla revoke {holder}`) y esta máquina se vuelve a unir \
                     con `--name {name}`.",
                    enrolled.name
                ),
            )
        });
        if !pending {
            self.insert(record, enrolled.replaced);
        }
        tracing::info!(node = %id, name = enrolled.name, pending, "node joined");
        Ok(Response::new(pb::JoinReply {
            node_id: id.to_string(),
            node_credential: cred.expose().to_vec(),
            node_name: enrolled.name,
            notice,
            confirm_within_secs: CONFIRM_JOIN_WITHIN.as_secs(),
            ray: Some(self.ray_spec()),
            policy: Some(pb::PolicyDefaults {
                toml: self.inner.config.policy_toml.clone(),
            }),
        }))
    }

    async fn finish_join(
        &self,
        request: Request<pb::FinishJoinRequest>,
    ) -> Result<Response<pb::FinishJoinReply>, Status> {
        let req = request.into_inner();
        let id = req
            .node_id
            .parse::<i64>()
            .map(NodeId)
            .map_err(|_| Status::invalid_argument("the node id is not a number"))?;
        let credential = Secret::from_bytes(req.node_credential);
        let registry = self.inner.config.registry.clone();
        let kept = req.kept;
        let confirmed = blocking(move || {
            let auth = |e: registry::AuthError| match e {
                registry::AuthError::Registry(e) => internal(e),
                e => Status::unauthenticated(format!(
                    "{e} (a join not confirmed within {} s is undone; join again)",
                    CONFIRM_JOIN_WITHIN.as_secs()
                )),
            };
            if !kept {
                registry.abandon_join(id, &credential).map_err(auth)?;
                return Ok(None);
            }
            registry.confirm_join(id, &credential).map_err(auth)
        })
        .await?;
        if let Some((record, replaced)) = confirmed {
            self.confirmed(record, replaced);
        } else if !kept {
            tracing::info!(node = %id, "join undone: the machine could not keep its credential");
        }
        Ok(Response::new(pb::FinishJoinReply {}))
    }

    type SessionStream = BoxStream<pb::HeadCommand>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentReport>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let record = self.authenticate(&request).await?;
        let node = record.id;
        let (tx, rx) = mpsc::channel(32);
        let id = self
            .inner
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut nodes = self.nodes();
            let live = nodes.entry(node).or_insert_with(|| Live {
                stored: (record.state, record.reason.clone()),
                last_seen_ms: now_ms(),
                record: record.clone(),
                report: None,
                last_seq: 0,
                session: None,
                standing: None,
                contributed: 0.0,
            });
            // A newer session replaces an older one: dropping its sender ends its stream.
            live.session = Some((id, tx.clone()));
            live.last_seen_ms = now_ms();
            let _ = tx.try_send(Ok(pb::HeadCommand {
                command: Some(Cmd::UpdateRay(pb::UpdateRay {
                    ray: Some(self.ray_spec()),
                })),
            }));
            if !self.inner.config.policy_toml.is_empty() {
                let _ = tx.try_send(Ok(pb::HeadCommand {
                    command: Some(Cmd::SetPolicy(pb::SetPolicy {
                        toml: self.inner.config.policy_toml.clone(),
                    })),
                }));
            }
            if let Some(c) = live.standing.clone() {
                let _ = tx.try_send(Ok(c));
            }
        }
        self.changed();
        tracing::info!(node = %node, name = record.name, "session up");
        let mut inbound = request.into_inner();
        let this = self.clone();
        let closing = self.inner.closing.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = closing.cancelled() => break,
                    message = inbound.message() => match message {
                        Ok(Some(report)) => match this.apply_report(node, report).await {
                            Ok(Some(ack)) => {
                                if tx.send(Ok(ack)).await.is_err() {
                                    break;
                                }
                            }
                            Ok(None) => {}
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                break;
                            }
                        },
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            this.session_ended(node, id).await;
            tracing::info!(node = %node, "session ended");
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cluster(
        &self,
        request: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::ClusterSnapshot>, Status> {
        self.check_reader(&request).await?;
        Ok(Response::new(self.snapshot()))
    }

    type WatchClusterStream = BoxStream<pb::ClusterSnapshot>;

    async fn watch_cluster(
        &self,
        request: Request<pb::ClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        self.check_reader(&request).await?;
        let (tx, rx) = mpsc::channel(2);
        let mut version = self.subscribe();
        let this = self.clone();
        let closing = self.inner.closing.clone();
        tokio::spawn(async move {
            loop {
                version.borrow_and_update();
                if closing.is_cancelled() {
                    return;
                }
                if tx.send(Ok(this.snapshot())).await.is_err() || version.changed().await.is_err() {
                    return;
                }
                // At most four snapshots a second, however busy the fleet.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn invite(
        &self,
        request: Request<pb::InviteRequest>,
    ) -> Result<Response<pb::InviteReply>, Status> {
        self.check_admin(&request)?;
        let req = request.into_inner();
        let ttl = if req.expires_secs == 0 {
            DEFAULT_INVITE_TTL
        } else {
            Duration::from_secs(req.expires_secs)
        };
        let uses = if req.uses == 0 { 1 } else { req.uses };
        let made = ControlPlane::invite(self, uses, ttl).await?;
        Ok(Response::new(pb::InviteReply {
            code: made.code,
            expires_unix: made.expires_unix,
            invite_id: made.id.to_string(),
            uses: made.uses,
        }))
    }

    async fn list_invites(
        &self,
        request: Request<pb::ListInvitesRequest>,
    ) -> Result<Response<pb::ListInvitesReply>, Status> {
        self.check_admin(&request)?;
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let now = SystemTime::now();
        let invites = self
            .invites()
            .await?
            .into_iter()
            .map(|i| pb::InviteRecord {
                invite_id: i.id.to_string(),
                created_unix: unix(i.created_at),
                expires_unix: unix(i.expires_at),
                uses: i.uses,
                uses_left: i.uses_left,
                revoked_unix: i.revoked_at.map_or(0, unix),
                state: i.status(now).to_string(),
                joined: i.joined,
            })
            .collect();
        Ok(Response::new(pb::ListInvitesReply { invites }))
    }

    async fn revoke_invite(
        &self,
        request: Request<pb::RevokeInviteRequest>,
    ) -> Result<Response<pb::RevokeInviteReply>, Status> {
        self.check_admin(&request)?;
        let revoked = ControlPlane::revoke_invite(self, &request.into_inner().invite_id).await?;
        if revoked {
            self.changed();
        }
        Ok(Response::new(pb::RevokeInviteReply { revoked }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeReply>, Status> {
        self.check_admin(&request)?;
        let (id, name) = ControlPlane::revoke(self, &request.into_inner().node).await?;
        Ok(Response::new(pb::RevokeReply {
            node_id: id.to_string(),
            name,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesReply>, Status> {
        self.check_admin(&request)?;
        let now = now_ms();
        let nodes = self.nodes();
        let mut out: Vec<pb::NodeRecord> = nodes
            .values()
            .map(|l| {
                let view = AgentView::of(l, now);
                pb::NodeRecord {
                    node_id: l.record.id.to_string(),
                    name: l.record.name.clone(),
                    hostname: l.record.hostname.clone(),
                    state: view.proto_state,
                    os: l.record.os.clone(),
                    arch: l.record.arch.clone(),
                    cpus: l.record.cpus,
                    memory_bytes: 0,
                    agent_version: String::new(),
                    joined_unix: l
                        .record
                        .enrolled_at
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                    last_seen_unix_ms: l.last_seen_ms,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListNodesReply { nodes: out }))
    }

    async fn command(
        &self,
        request: Request<pb::NodeCommandRequest>,
    ) -> Result<Response<pb::NodeCommandReply>, Status> {
        self.check_admin(&request)?;
        let req = request.into_inner();
        let command = req
            .command
            .filter(|c| matches!(c.command, Some(Cmd::Pause(_) | Cmd::Resume(_))))
            .ok_or_else(|| {
                Status::invalid_argument("only pause and resume can be sent to a node")
            })?;
        let (id, name, delivered) = ControlPlane::command(self, &req.node, command)?;
        Ok(Response::new(pb::NodeCommandReply {
            node_id: id.to_string(),
            name,
            delivered,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_the_clusters_minor_python_is_refused_with_what_to_install() {
        let v = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Another patch of the same minor, several Pythons, or one it can download: accepted.
        assert_eq!(python_refusal(&v(&["3.11.2"]), false, "3.11.7"), None);
        assert_eq!(
            python_refusal(&v(&["3.12.1", "3.11.9"]), false, "3.11.7"),
            None
        );
        assert_eq!(python_refusal(&v(&["3.12.1"]), true, "3.11.7"), None);
        // Not said (an older agent): accepted, as before.
        assert_eq!(python_refusal(&[], false, "3.11.7"), None);
        // Only other minors, no downloads: refused, naming both sides and the fix.
        let why = python_refusal(&v(&["3.12.1", "3.10.13", "3.12.1"]), false, "3.11.7").unwrap();
        for part in [
            "Python 3.10.13, 3.12.1",
            "the fleet runs Python 3.11.7",
            "same minor version (3.11)",
            "Install Python 3.11",
            "uv python install 3.11.7",
            "it was not used",
        ] {
            assert!(why.contains(part), "{part:?} in {why}");
        }
        // 3.1 is not 3.11.
        assert!(python_refusal(&v(&["3.1.4"]), false, "3.11.7").is_some());
    }

    fn plane() -> ControlPlane {
        ControlPlane::new(FleetConfig {
            registry: Arc::new(Registry::open_in_memory().unwrap()),
            ray: RayInfo {
                gcs_addresses: vec!["10.0.0.1:6379".into()],
                ray_version: "2.60.0".into(),
                python_version: "3.11.7".into(),
                token: RayToken::generate(),
            },
            addresses: vec!["10.0.0.1:7470".parse().unwrap()],
            fingerprint: flotilla_proto::Fingerprint([7; 32]),
            admin_token: Secret::from("admin"),
            policy_toml: String::new(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_heads_own_worker_enrolled_again_replaces_its_earlier_self_in_the_live_table() {
        let plane = plane();
        let (first, name, _) = plane.enroll_local("studio", 8).await.unwrap();
        assert_eq!(name, "studio");
        let (tx, mut rx) = mpsc::channel(4);
        plane.nodes().get_mut(&first).unwrap().session = Some((1, tx));
        let (second, name, _) = plane.enroll_local("studio", 8).await.unwrap();
        assert_eq!(name, "studio");
        assert_ne!(first, second);
        let names: Vec<_> = plane.agents().into_iter().map(|a| a.name).collect();
        assert_eq!(names, vec!["studio".to_string()]);
        // The replaced node's session is over.
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_node_is_named_by_id_or_name_and_never_by_a_guess() {
        let plane = plane();
        let (studio, _, _) = plane.enroll_local("studio", 8).await.unwrap();
        let (boxed, _, _) = plane.enroll_local("Box", 8).await.unwrap();
        // A numeric name from before names were checked, held by another node than the id.
        let mut legacy = plane.nodes().get(&boxed).unwrap().record.clone();
        legacy.id = NodeId(70);
        legacy.name = studio.to_string();
        plane.insert(legacy, None);

        assert_eq!(plane.find("studio").unwrap(), studio);
        assert_eq!(plane.find("BOX").unwrap(), boxed);
        assert_eq!(plane.find(&format!("#{boxed}")).unwrap(), boxed);
        assert_eq!(plane.find(&format!("{boxed}")).unwrap(), boxed);
        assert_eq!(plane.find(&format!("#{studio}")).unwrap(), studio);
        assert_eq!(plane.find("#70").unwrap(), NodeId(70));
        let both = plane.find(&studio.to_string()).unwrap_err();
        assert_eq!(both.code(), tonic::Code::InvalidArgument);
        assert!(both.message().contains(&format!("#{studio}")), "{both:?}");
        assert!(both.message().contains("#70"), "{both:?}");
        let none = plane.find("nobody").unwrap_err();
        assert_eq!(none.code(), tonic::Code::NotFound);
        // A pause for the ambiguous text reaches nobody.
        assert!(
            plane
                .command(&studio.to_string(), pb::HeadCommand::default())
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_snapshot_merges_reports_with_rays_view() {
        let plane = plane();
        let (id, _, _) = plane.enroll_local("studio", 8).await.unwrap();
        // A connected node (a session sender stands in for the stream).
        let (tx, _rx) = mpsc::channel(4);
        plane.nodes().get_mut(&id).unwrap().session = Some((1, tx));
        let report = pb::AgentReport {
            seq: 1,
            state: pb::NodeState::Throttled as i32,
            reason: Some(reason(
                "owner_active",
                "You're using this computer",
                "Estás usando este ordenador",
            )),
            advertised_cpus: 2.0,
            capped_cpus: 2.0,
            ray_node_id: "abc123".into(),
            contributions: vec![pb::ContributionRecord {
                hour_start_unix: 1_800_000_000 / 3600 * 3600,
                cpu_seconds: 12.5,
                seq: 1,
            }],
            ..Default::default()
        };
        let ack = plane.apply_report(id, report.clone()).await.unwrap();
        assert!(matches!(
            ack,
            Some(pb::HeadCommand {
                command: Some(Cmd::Ack(pb::Ack { up_to_seq: 1 }))
            })
        ));
        // The same report again (a resend after a reconnect) counts once.
        plane.apply_report(id, report).await.unwrap();
        assert_eq!(
            plane.inner.config.registry.total_cpu_seconds(id).unwrap(),
            12.5
        );

        let ray = crate::ClusterSnapshot {
            nodes: vec![crate::NodeView {
                node_id: "abc123".into(),
                state: "ALIVE".into(),
                cpus_used: 1.5,
                ..Default::default()
            }],
            tasks: crate::TaskTotals {
                running: 3,
                ..Default::default()
            },
            jobs: vec![crate::JobView {
                id: "raysubmit_1".into(),
                status: "RUNNING".into(),
                entrypoint: "python sweep.py".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        plane.set_ray_view(RayView::of(&ray));
        let snap = plane.snapshot();
        let node = &snap.nodes[0];
        assert_eq!(node.name, "studio");
        assert_eq!(node.state, pb::NodeState::Throttled as i32);
        assert_eq!(node.cpus_used, 1.5);
        assert_eq!(node.cpus_advertised, 2.0);
        assert_eq!(node.cpus_total, 8.0);
        let totals = snap.totals.unwrap();
        assert_eq!((totals.running_tasks, totals.nodes_contributing), (3, 1));
        assert_eq!(snap.jobs.len(), 1);
        assert_eq!(snap.jobs[0].status, pb::JobStatus::Running as i32);
        let metrics = plane.metrics();
        assert!(
            metrics.contains("flotilla_nodes{state=\"throttled\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("flotilla_node_cpus_advertised{node=\"studio\"} 2"),
            "{metrics}"
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(decode_hex(&encode_hex(&bytes)).unwrap(), bytes);
        assert!(decode_hex("abc").is_none());
        assert!(decode_hex("zz").is_none());
        assert!(decode_hex("é1").is_none());
    }

    /// Issue 10 (fuzzing): a report whose figures are NaN or infinite must not turn the
    /// cluster's totals into NaN (which JSON cannot even carry).
    #[test]
    fn regression_10_reports_with_non_finite_figures_are_made_safe() {
        let mut r = pb::AgentReport {
            advertised_cpus: f64::NAN,
            capped_cpus: f64::INFINITY,
            owner_load: -3.0,
            battery_percent: Some(f64::NAN),
            contributed_cpu_seconds: f64::NEG_INFINITY,
            ..Default::default()
        };
        sanitize_report(&mut r);
        assert_eq!(
            (
                r.advertised_cpus,
                r.capped_cpus,
                r.owner_load,
                r.contributed_cpu_seconds
            ),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert_eq!(r.battery_percent, None);
        let mut r = pb::AgentReport {
            advertised_cpus: 4.0,
            battery_percent: Some(140.0),
            ..Default::default()
        };
        sanitize_report(&mut r);
        assert_eq!((r.advertised_cpus, r.battery_percent), (4.0, Some(100.0)));
    }

    #[test]
    fn report_states_map_to_registry_states() {
        assert_eq!(
            registry_state(pb::NodeState::Paused as i32),
            registry::NodeState::Paused
        );
        assert_eq!(
            registry_state(pb::NodeState::Throttled as i32),
            registry::NodeState::Online
        );
        // A state from a newer agent counts as online.
        assert_eq!(registry_state(99), registry::NodeState::Online);
    }
}
