//! The agent's live link to the head: a `Session` stream that carries a report up every
//! second and commands down, kept up across sleep, network changes and head restarts.
//!
//! - **Reconnection**: capped exponential backoff with jitter (1 s doubling to
//!   [`MAX_BACKOFF`], ±20 %), reset once a session is up. While offline the task sleeps; there
//!   is no busy loop.
//! - **Reports**: built from the politeness loop's latest [`Published`] decision, numbered from
//!   the outbox's sequence, each carrying the oldest unacknowledged contribution records.
//! - **Ledger**: a separate task adds the CPU time of the node's process tree to the
//!   [`Outbox`] every [`LEDGER_EVERY`], online or not; records close every `record_every` and wait on
//!   disk until the head acknowledges them.
//! - **Commands**: `Pause`/`Resume` go to the same manual feed as the owner's own pause;
//!   `Ack` drops records; `Leave` (the head revoked this node) ends the session for good.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_proto::transport::{self, ConnectError};
use flotilla_proto::v1::{self as pb, fleet_client::FleetClient, head_command::Command as Cmd};
use flotilla_proto::{Fingerprint, HeadAddress};
use flotilla_secrets::Secret;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use crate::politeness::Published;
use crate::sampler::{ManualFeed, ManualRequest};

/// The longest wait between reconnection attempts: short enough that a machine is back within
/// seconds of its network, long enough that a head restarting under thousands of agents is not
/// stormed (the jitter spreads them).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the ledger adds the node's CPU time to the outbox (a write each time; the counter it
/// reads is cumulative, so nothing is lost between writes, and the last one is written when the
/// agent stops).
pub const LEDGER_EVERY: Duration = Duration::from_secs(10);
/// The most contribution records one report carries.
pub const RECORDS_PER_REPORT: usize = 64;
/// While nothing a person would see changes (state, reason, CPUs, owner, power), a report goes
/// every this many ticks instead of every tick: a heartbeat. A change, a record to send or CPU
/// time worth showing goes at the next tick.
pub const STEADY_EVERY: u32 = 5;
/// CPU-seconds of the node's work that make a report worth sending before the heartbeat.
const CONTRIBUTED_WORTH_SENDING: f64 = 0.5;

/// How the session runs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub addresses: Vec<HeadAddress>,
    pub fingerprint: Fingerprint,
    pub node_id: String,
    pub credential: Secret,
    /// How often a report goes up.
    pub report_every: Duration,
    /// How long a contribution record stays open.
    pub record_every: Duration,
    /// The Ray settings the node runs with; when the head sends others, the session ends
    /// with [`Ended::RayChanged`]. `None`: the node follows the head directly (its own machine).
    pub ray: Option<RaySettings>,
    /// This machine's own `flotilla.toml` text: its `[policy]` keys override the fleet's.
    pub local_config: String,
    /// The Python version the node's runtime runs (`3.11.2`), reported to the head.
    pub node_python: String,
}

/// How a node joins Ray.
#[derive(Debug, Clone, PartialEq)]
pub struct RaySettings {
    pub gcs_addresses: Vec<String>,
    pub ray_version: String,
    pub python_version: String,
    pub token: flotilla_ray::RayToken,
}

impl RaySettings {
    /// The settings a `RaySpec` carries, if it is complete.
    pub fn from_spec(spec: &pb::RaySpec) -> Option<RaySettings> {
        Some(RaySettings {
            gcs_addresses: spec.gcs_addresses.clone(),
            ray_version: spec.ray_version.clone(),
            python_version: spec.python_version.clone(),
            token: flotilla_ray::RayToken::new(&spec.ray_token)?,
        })
        .filter(|s| !s.gcs_addresses.is_empty() && !s.ray_version.is_empty())
    }
}

impl SessionConfig {
    /// Defaults: a report every second, a record every five minutes.
    pub fn new(
        addresses: Vec<HeadAddress>,
        fingerprint: Fingerprint,
        node_id: String,
        credential: Secret,
    ) -> SessionConfig {
        SessionConfig {
            addresses,
            fingerprint,
            node_id,
            credential,
            report_every: Duration::from_secs(1),
            record_every: Duration::from_secs(300),
            ray: None,
            local_config: String::new(),
            node_python: String::new(),
        }
    }
}

/// The link's state, for `flotilla status`, the tray and notifications.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "link")]
pub enum Link {
    Connecting {
        attempt: u32,
    },
    Connected {
        head: String,
        since_unix_ms: u64,
    },
    Offline {
        error: String,
        retry_in_ms: u64,
    },
    /// The head refused this node (revoked, or its credential unknown): no more attempts.
    Refused {
        error: String,
    },
}

/// What the person at the machine may want to hear about: the desktop app shows these as
/// notifications, the headless agent logs them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// The session has been down for [`LOST_AFTER`] (shorter blips are not worth a word).
    ConnectionLost { error: String },
    /// It is back, after `after_secs` away.
    ConnectionRestored { after_secs: u64 },
}

/// How long the session must be down before [`Notice::ConnectionLost`].
pub const LOST_AFTER: Duration = Duration::from_secs(10);

/// Follows the session's link: calls `restored` whenever it comes back after a loss, and sends
/// [`Notice`]s for losses longer than [`LOST_AFTER`] and their end.
pub async fn watch_link(
    mut link: watch::Receiver<Link>,
    notices: tokio::sync::broadcast::Sender<Notice>,
    restored: Arc<dyn Fn() + Send + Sync>,
    shutdown: CancellationToken,
) {
    let mut was_up = false;
    let mut down: Option<(std::time::Instant, String)> = None;
    let mut told = false;
    loop {
        let lost_at = match (&down, told) {
            (Some((since, _)), false) => Some(*since + LOST_AFTER),
            _ => None,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async {
                match lost_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((_, error)) = &down {
                    tracing::warn!("connection to the head lost: {error}");
                    let _ = notices.send(Notice::ConnectionLost { error: error.clone() });
                    told = true;
                }
            }
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
                match &*link.borrow_and_update() {
                    Link::Connected { .. } => {
                        if let Some((since, _)) = down.take() {
                            restored();
                            if told {
                                let after_secs = since.elapsed().as_secs();
                                tracing::info!("connection to the head restored after {after_secs} s");
                                let _ = notices.send(Notice::ConnectionRestored { after_secs });
                            }
                        }
                        was_up = true;
                        told = false;
                    }
                    Link::Offline { error, .. } if was_up => match &mut down {
                        Some((_, e)) => *e = error.clone(),
                        None => down = Some((std::time::Instant::now(), error.clone())),
                    },
                    Link::Connecting { .. } | Link::Offline { .. } | Link::Refused { .. } => {}
                }
            }
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    Shutdown,
    /// The head removed this node (`Leave`), with its reason.
    Left(String),
    /// The head refuses this node's credential.
    Refused(String),
    /// The head's Ray settings changed (a rotated token, a new address): the node must restart
    /// with these.
    RayChanged(Box<RaySettings>),
}

/// What the session reads from the rest of the agent.
#[derive(Clone)]
pub struct Sources {
    pub published: watch::Receiver<Option<Arc<Published>>>,
    pub manual: ManualFeed,
    /// Where the fleet's policy goes, merged with this machine's own settings.
    pub policy: crate::sampler::PolicyFeed,
    /// The fleet's latest defaults and this machine's file as last reloaded.
    pub policy_source: crate::control::PolicySource,
    /// The node's Ray node id, when it runs.
    pub ray_node_id: Arc<dyn Fn() -> Option<String> + Send + Sync>,
    /// The CPU time of the node's process tree so far, when it can be measured.
    pub cpu_time: Arc<dyn Fn() -> Option<Duration> + Send + Sync>,
    /// Network changes and wakes from sleep ([`flotilla_net::NetWatch`]): an offline session
    /// retries at once instead of finishing its backoff, and a live one whose route to the head
    /// moved to another address reconnects from the new one.
    pub network: Option<watch::Receiver<flotilla_net::watch::Seen>>,
    /// Called when the session comes back after a loss: the agent then checks its Ray node
    /// (Ray may have declared it dead while the link was down).
    pub restored: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Adds the node's CPU time to the outbox every second until `shutdown`.
pub async fn run_ledger(
    outbox: Arc<Mutex<Outbox>>,
    cpu_time: Arc<dyn Fn() -> Option<Duration> + Send + Sync>,
    record_every: Duration,
    shutdown: CancellationToken,
) {
    let mut last = cpu_time();
    let mut ticker = tokio::time::interval(LEDGER_EVERY.min(record_every));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let now = cpu_time();
        let delta = match (last, now) {
            (Some(a), Some(b)) if b >= a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        last = now.or(last);
        let result = outbox.lock().unwrap_or_else(|e| e.into_inner()).add(
            delta,
            SystemTime::now(),
            record_every,
        );
        if let Err(e) = result {
            tracing::warn!("cannot write the outbox: {e}");
        }
        if stopping {
            return;
        }
    }
}

/// Keeps the session up until `shutdown`, the head's `Leave`, or a refusal.
pub async fn run(
    config: SessionConfig,
    sources: Sources,
    outbox: Arc<Mutex<Outbox>>,
    link: watch::Sender<Link>,
    shutdown: CancellationToken,
) -> Ended {
    let mut attempt: u32 = 0;
    loop {
        let _ = link.send(Link::Connecting { attempt });
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            r = one_session(&config, &sources, &outbox, &link, &shutdown) => r,
        };
        let error = match result {
            Ok(ended) => return ended,
            Err(Failure::Refused(e)) => {
                let _ = link.send(Link::Refused { error: e.clone() });
                return Ended::Refused(e);
            }
            Err(Failure::WasUp(e)) => {
                attempt = 0;
                e
            }
            Err(Failure::Down(e)) => e,
        };
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tracing::info!("control session down ({error}); retrying in {wait:?}");
        let _ = link.send(Link::Offline {
            error,
            retry_in_ms: wait.as_millis() as u64,
        });
        let mut network = sources.network.clone();
        tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            _ = tokio::time::sleep(wait) => {}
            () = network_changed(&mut network) => {
                tracing::info!("the network changed; retrying the head now");
            }
        }
    }
}

/// Over a tailnet, Tailscale knows whether the head's machine is online: its word makes a better
/// reason to show than a connection timeout ([`flotilla_net::tailscale::precheck_head`]).
pub(crate) async fn precheck(addresses: &[HeadAddress]) -> Result<(), String> {
    let hosts: Vec<String> = addresses.iter().map(|a| a.host().to_string()).collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    flotilla_net::tailscale::precheck_head(&hosts).await?;
    local_network_precheck(addresses).await
}

/// On macOS 15 and later, Local Network privacy refuses a LAN peer as though it had no route,
/// which would show as a timeout; one plain connection to each of the head's LAN addresses tells
/// that apart and gives the reason to show (in `flotilla status`, the window and the tray).
/// Elsewhere it returns at once.
async fn local_network_precheck(addresses: &[HeadAddress]) -> Result<(), String> {
    let Some(major) = flotilla_host::macos_major().filter(|&m| m >= 15) else {
        return Ok(());
    };
    for a in addresses {
        let Ok(mut found) = tokio::net::lookup_host(a.to_string()).await else {
            continue;
        };
        let Some(dest) = found.next() else { continue };
        let tried =
            tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(dest))
                .await;
        if let Ok(Err(e)) = tried
            && let Some(hint) = flotilla_net::lan::local_network_privacy_hint(
                Some(major),
                e.raw_os_error(),
                dest.ip(),
            )
        {
            return Err(format!("{dest}: {hint}"));
        }
    }
    Ok(())
}

/// Resolves on the next change a network watch reports; never without one.
pub async fn network_changed(rx: &mut Option<watch::Receiver<flotilla_net::watch::Seen>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The local address that routes to the first of the head's addresses that resolves.
async fn route_source(addresses: &[HeadAddress]) -> Option<std::net::IpAddr> {
    for a in addresses {
        if let Ok(mut found) = tokio::net::lookup_host(a.to_string()).await
            && let Some(dest) = found.next()
            && let Ok(ip) = flotilla_host::addr::route_to(dest)
        {
            return Some(ip);
        }
    }
    None
}

/// The wait before attempt `attempt + 1`: 1 s doubling up to [`MAX_BACKOFF`], ±20 %.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_BACKOFF);
    let jitter = 0.8 + 0.4 * rand::random::<f64>();
    base.mul_f64(jitter)
}

enum Failure {
    /// The head refuses the credential: stop.
    Refused(String),
    /// A session was up, then broke.
    WasUp(String),
    /// No session came up.
    Down(String),
}

fn is_refusal(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}

async fn one_session(
    config: &SessionConfig,
    sources: &Sources,
    outbox: &Arc<Mutex<Outbox>>,
    link: &watch::Sender<Link>,
    shutdown: &CancellationToken,
) -> Result<Ended, Failure> {
    precheck(&config.addresses).await.map_err(Failure::Down)?;
    let channel = transport::connect(
        &config.addresses,
        config.fingerprint,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| match e {
        ConnectError::Impostor(m) => Failure::Refused(m),
        e => Failure::Down(e.to_string()),
    })?;
    let mut client = FleetClient::new(channel)
        .max_decoding_message_size(1 << 20)
        .max_encoding_message_size(1 << 20);
    let (tx, rx) = mpsc::channel::<pb::AgentReport>(8);
    // The first report goes with the request, so the head sees the node's state at once.
    let first = report(config, sources, outbox, 0.0)
        .and_then(|r| numbered(outbox, r))
        .map_err(Failure::Down)?;
    tx.try_send(first)
        .map_err(|e| Failure::Down(e.to_string()))?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let auth = node_authorization(&config.node_id, &config.credential);
    request.metadata_mut().insert(
        flotilla_proto::auth::HEADER,
        auth.parse()
            .map_err(|_| Failure::Refused("the node credential is malformed".into()))?,
    );
    let mut inbound = match client.session(request).await {
        Ok(r) => r.into_inner(),
        Err(s) if is_refusal(&s) => return Err(Failure::Refused(s.message().to_string())),
        Err(s) => return Err(Failure::Down(s.message().to_string())),
    };
    let head = config
        .addresses
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let _ = link.send(Link::Connected {
        head,
        since_unix_ms: unix_ms(),
    });
    tracing::info!("control session up");
    let mut network = sources.network.clone();
    if let Some(n) = network.as_mut() {
        n.mark_unchanged();
    }
    let source = route_source(&config.addresses).await;
    let mut ticker = tokio::time::interval(config.report_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_cpu = (sources.cpu_time)();
    let mut steady = Steady::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
            _ = ticker.tick() => {
                let cpu = (sources.cpu_time)();
                let delta = match (last_cpu, cpu) {
                    (Some(a), Some(b)) if b >= a => (b - a).as_secs_f64(),
                    _ => 0.0,
                };
                last_cpu = cpu.or(last_cpu);
                let mut r = report(config, sources, outbox, delta).map_err(Failure::WasUp)?;
                if !steady.due(&mut r) {
                    continue;
                }
                let r = numbered(outbox, r).map_err(Failure::WasUp)?;
                if tx.send(r).await.is_err() {
                    return Err(Failure::WasUp("the head closed the session".into()));
                }
            }
            message = inbound.message() => match message {
                Ok(Some(command)) => {
                    if let Some(ended) = apply(command, config, sources, outbox) {
                        return Ok(ended);
                    }
                }
                Ok(None) => return Err(Failure::WasUp("the head ended the session".into())),
                Err(s) if is_refusal(&s) => return Err(Failure::Refused(s.message().to_string())),
                Err(s) => return Err(Failure::WasUp(s.message().to_string())),
            },
            () = network_changed(&mut network) => {
                // A connection made from an address this machine no longer has is dead, though
                // nothing says so until keepalives time out: start over from the new one.
                let now = route_source(&config.addresses).await;
                if now.is_some() && now != source {
                    return Err(Failure::WasUp(format!(
                        "this machine's address changed from {} to {}",
                        source.map_or("none".into(), |ip| ip.to_string()),
                        now.map_or("none".into(), |ip| ip.to_string()),
                    )));
                }
            }
        }
    }
}

/// The `authorization` header value a node's calls carry.
pub(crate) fn node_authorization(node_id: &str, credential: &Secret) -> String {
    flotilla_proto::auth::node(node_id, credential.expose())
}

/// Applies one command; `Some` ends the session.
fn apply(
    command: pb::HeadCommand,
    config: &SessionConfig,
    sources: &Sources,
    outbox: &Arc<Mutex<Outbox>>,
) -> Option<Ended> {
    let set = |r: ManualRequest| {
        *sources.manual.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    match command.command {
        Some(Cmd::Pause(p)) => {
            let request = match pb::PauseMode::try_from(p.mode) {
                Ok(pb::PauseMode::Now) if p.until_unix_ms > 0 => ManualRequest::For(
                    Duration::from_millis(p.until_unix_ms.saturating_sub(unix_ms())),
                ),
                Ok(pb::PauseMode::Now) => ManualRequest::Indefinite,
                // FINISH, unspecified, or a mode from a newer head: the gentle one.
                _ => ManualRequest::Finish,
            };
            tracing::info!(?request, "the head paused this node");
            set(request);
            None
        }
        Some(Cmd::Notice(n)) => {
            if let Some(r) = n.reason {
                tracing::warn!(code = r.code, "the head says: {}", r.text_en);
            }
            None
        }
        Some(Cmd::Resume(_)) => {
            tracing::info!("the head resumed this node");
            set(ManualRequest::Resume);
            None
        }
        Some(Cmd::Ack(a)) => {
            if let Err(e) = outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ack(a.up_to_seq)
            {
                tracing::warn!("cannot update the outbox: {e}");
            }
            None
        }
        Some(Cmd::Leave(l)) => {
            let why = l
                .reason
                .map_or_else(|| "removed by the head".to_string(), |r| r.text_en);
            tracing::warn!("the head removed this node: {why}");
            Some(Ended::Left(why))
        }
        Some(Cmd::UpdateRay(u)) => {
            let new = u.ray.as_ref().and_then(RaySettings::from_spec)?;
            match &config.ray {
                Some(running) if *running != new => {
                    tracing::warn!("the head's Ray settings changed; restarting the Ray node");
                    Some(Ended::RayChanged(Box::new(new)))
                }
                _ => None,
            }
        }
        Some(Cmd::SetPolicy(p)) => {
            match sources
                .policy_source
                .set_fleet(&p.toml, &config.local_config)
            {
                Ok(settings) => {
                    tracing::info!(
                        "the fleet's policy defaults apply (this machine's own settings win)"
                    );
                    *sources.policy.lock().unwrap_or_else(|e| e.into_inner()) = Some(settings);
                }
                Err(e) => tracing::warn!("the fleet's policy defaults are unusable here: {e}"),
            }
            None
        }
        None => None,
    }
}

/// The report for now.
/// Which ticks send their report: every tick while something changes, else a heartbeat.
#[derive(Debug, Default)]
struct Steady {
    /// What people see of the last report sent.
    last: Option<pb::AgentReport>,
    skipped: u32,
    /// CPU-seconds of the node not yet reported.
    contributed: f64,
}

impl Steady {
    /// Whether `r` goes now; when it does, it carries the CPU time of the ticks skipped.
    fn due(&mut self, r: &mut pb::AgentReport) -> bool {
        self.contributed += r.contributed_cpu_seconds;
        let seen = pb::AgentReport {
            state: r.state,
            reason: r.reason.clone(),
            advertised_cpus: r.advertised_cpus,
            capped_cpus: r.capped_cpus,
            owner_active: r.owner_active,
            power_source: r.power_source,
            battery_percent: r.battery_percent.map(f64::round),
            ray_node_id: r.ray_node_id.clone(),
            ..Default::default()
        };
        let go = self.last.as_ref() != Some(&seen)
            || !r.contributions.is_empty()
            || self.contributed >= CONTRIBUTED_WORTH_SENDING
            || self.skipped + 1 >= STEADY_EVERY;
        if go {
            r.contributed_cpu_seconds = std::mem::take(&mut self.contributed);
            self.last = Some(seen);
            self.skipped = 0;
        } else {
            self.skipped += 1;
        }
        go
    }
}

/// `r` with the next report sequence number.
fn numbered(
    outbox: &Arc<Mutex<Outbox>>,
    mut r: pb::AgentReport,
) -> Result<pb::AgentReport, String> {
    r.seq = outbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .next_seq()
        .map_err(|e| format!("outbox: {e}"))?;
    Ok(r)
}

/// A report of this moment, without its sequence number (taken only when it is sent).
fn report(
    config: &SessionConfig,
    sources: &Sources,
    outbox: &Arc<Mutex<Outbox>>,
    contributed: f64,
) -> Result<pb::AgentReport, String> {
    let records = outbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pending(RECORDS_PER_REPORT)
        .map_err(|e| format!("outbox: {e}"))?;
    let published = sources.published.borrow().clone();
    let mut r = pb::AgentReport {
        node_id: config.node_id.clone(),
        time_unix_ms: unix_ms() as i64,
        ray_node_id: (sources.ray_node_id)().unwrap_or_default(),
        python_version: config.node_python.clone(),
        contributed_cpu_seconds: contributed,
        contributions: records
            .iter()
            .map(|c| pb::ContributionRecord {
                hour_start_unix: c.hour_start,
                cpu_seconds: c.cpu_seconds,
                seq: c.seq,
            })
            .collect(),
        ..Default::default()
    };
    if let Some(p) = published {
        fill(&mut r, &p);
    }
    Ok(r)
}

/// The state, reason and readings of a report, from the politeness loop's decision.
pub fn fill(r: &mut pb::AgentReport, p: &Published) {
    use flotilla_policy::Pause;
    let e = p.enforcement.as_ref();
    // The node offers at most the CPUs it was started with, however many the machine has.
    let total = f64::from(
        e.map(|e| e.node_cpus)
            .filter(|&n| n > 0)
            .unwrap_or(p.sensors.total_cpus),
    );
    let target = f64::from(p.decision.target_cpus).min(total);
    use crate::enforce::EnforcementState as S;
    let state = match (e.map(|e| e.state), p.decision.pause) {
        (Some(S::Paused), _) => pb::NodeState::Paused,
        (Some(S::Draining), _) => pb::NodeState::Draining,
        (Some(S::Cap), _) => pb::NodeState::Throttled,
        (Some(S::Full), _) => pb::NodeState::Contributing,
        (_, Pause::Finish) => pb::NodeState::Draining,
        (_, Pause::Now) => pb::NodeState::Paused,
        (_, Pause::None) if target < total => pb::NodeState::Throttled,
        (_, Pause::None) => pb::NodeState::Contributing,
    };
    let code = p.decision.reason.code();
    r.state = state as i32;
    r.reason = Some(pb::Reason {
        code: code.into(),
        text_en: p.reason_en.clone(),
        text_es: p.reason_es.clone(),
    });
    if let Some(f) = e
        .filter(|e| e.state == S::Error)
        .and_then(|e| e.failure.as_ref())
    {
        // Ray's own words: they have no Spanish, so the Spanish text says what they are.
        r.state = pb::NodeState::Error as i32;
        r.reason = Some(pb::Reason {
            code: f.kind.code().into(),
            text_en: format!("Ray cannot run this node: {}", f.reason),
            text_es: format!("Ray no puede ejecutar este nodo: {}", f.reason),
        });
    }
    r.advertised_cpus = e.and_then(|e| e.advertised_cpus).unwrap_or(target);
    r.capped_cpus = e.and_then(|e| e.cap_cpus).unwrap_or(total);
    r.owner_active = p
        .sensors
        .idle_secs
        .value
        .map(|_| matches!(code, "owner_active" | "owner_busy"));
    r.power_source = match p.sensors.power.value.as_deref() {
        Some("ac") => pb::PowerSource::Ac,
        Some("battery") => pb::PowerSource::Battery,
        _ => pb::PowerSource::Unspecified,
    } as i32;
    r.battery_percent = p.sensors.battery_percent.value.map(f64::from);
    r.owner_load = p.sensors.owner_load.value.unwrap_or(0.0) * total;
}

/// How long ago a link came up, for people.
pub fn describe(link: &Link) -> String {
    match link {
        Link::Connecting { attempt: 0 } => "connecting to the head".into(),
        Link::Connecting { attempt } => format!("connecting to the head (attempt {})", attempt + 1),
        Link::Connected { head, .. } => format!("connected to the head at {head}"),
        Link::Offline { error, retry_in_ms } => format!(
            "offline ({error}); retrying in {:.0} s",
            (*retry_in_ms as f64 / 1000.0).ceil()
        ),
        Link::Refused { error } => format!("refused by the head: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_report(contributed: f64) -> pb::AgentReport {
        pb::AgentReport {
            state: pb::NodeState::Contributing as i32,
            advertised_cpus: 4.0,
            owner_load: 0.37,
            contributed_cpu_seconds: contributed,
            ..Default::default()
        }
    }

    #[test]
    fn steady_reports_go_as_a_heartbeat_and_changes_go_at_once() {
        let mut steady = Steady::default();
        let sent: Vec<bool> = (0..11)
            .map(|_| steady.due(&mut idle_report(0.01)))
            .collect();
        // The first at once, then every STEADY_EVERY ticks.
        let expected: Vec<bool> = (0..11).map(|i| i % STEADY_EVERY as usize == 0).collect();
        assert_eq!(sent, expected);

        // A new state goes at the next tick.
        let mut changed = idle_report(0.0);
        changed.state = pb::NodeState::Throttled as i32;
        changed.advertised_cpus = 2.0;
        assert!(steady.due(&mut changed));
        assert!(!steady.due(&mut changed.clone()));

        // A record for the ledger goes at once too.
        let mut with_record = changed.clone();
        with_record
            .contributions
            .push(pb::ContributionRecord::default());
        assert!(steady.due(&mut with_record));

        // CPU time of skipped ticks is carried into the next report sent; enough of it makes
        // that report go early.
        let mut busy = changed.clone();
        busy.contributed_cpu_seconds = 0.2;
        assert!(!steady.due(&mut busy.clone()));
        assert!(!steady.due(&mut busy.clone()));
        assert!(steady.due(&mut busy));
        assert!(
            (busy.contributed_cpu_seconds - 0.6).abs() < 1e-9,
            "{busy:?}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        for attempt in 0..20 {
            let b = backoff(attempt);
            let base = Duration::from_secs(1 << attempt.min(10)).min(MAX_BACKOFF);
            assert!(
                b >= base.mul_f64(0.79) && b <= base.mul_f64(1.21),
                "{attempt}: {b:?}"
            );
        }
        assert!(backoff(30) <= MAX_BACKOFF.mul_f64(1.21));
    }
}
