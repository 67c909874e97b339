//! The table of live nodes: what the head holds in memory for every enrolled node (the latest
//! report, the session's command channel, the standing pause), the reports that update it,
//! the commands sent through it, and the snapshot built from it with Ray's view.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_proto::state;
use flotilla_proto::v1::{self as pb, head_command::Command as Cmd};
use tokio::sync::mpsc;

use super::{ControlPlane, FleetError, MAX_RECORDS_PER_REPORT, blocking, lock, now_ms, reason};
use crate::registry::{self, NodeId, NodeRecord};

/// The sending end of a session's stream of commands; an error ends the agent's session with
/// that refusal.
pub(super) type SessionTx = mpsc::Sender<Result<pb::HeadCommand, FleetError>>;

/// What the head holds in memory for one node.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) record: NodeRecord,
    pub(super) report: Option<pb::AgentReport>,
    pub(super) last_seen_ms: i64,
    pub(super) last_seq: u64,
    pub(super) session: Option<(u64, SessionTx)>,
    /// The latest pause or resume an admin sent: replayed when the node reconnects.
    pub(super) standing: Option<pb::HeadCommand>,
    /// The node's state as last written to the registry, with its reason code.
    pub(super) stored: (registry::NodeState, String),
    /// CPU-seconds the node reported giving Ray since the head started.
    pub(super) contributed: f64,
}

impl Live {
    /// A node without a session or a report yet, last seen at `last_seen_ms`.
    pub(super) fn new(record: NodeRecord, last_seen_ms: i64) -> Live {
        Live {
            stored: (record.state, record.reason.clone()),
            last_seen_ms,
            record,
            report: None,
            last_seq: 0,
            session: None,
            standing: None,
            contributed: 0.0,
        }
    }
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
    pub(super) proto_state: i32,
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
            state: state.name().into(),
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

    /// A node of the live table: what it reported last while its session is up, offline
    /// (and why) when it is not.
    pub(super) fn of(l: &Live) -> AgentView {
        let connected = l.session.is_some();
        let r = l.report.as_ref();
        let proto_state = match (connected, r) {
            (true, Some(r)) => r.state,
            (true, None) => pb::NodeState::Unspecified as i32,
            (false, _) => pb::NodeState::Offline as i32,
        };
        let state = match pb::NodeState::try_from(proto_state) {
            Ok(pb::NodeState::Unspecified) if connected => state::CONNECTING,
            _ => state::name_of(proto_state),
        };
        let (reason_code, reason_en, reason_es) =
            match r.and_then(|r| r.reason.clone()).filter(|_| connected) {
                Some(r) => (r.code, r.text_en, r.text_es),
                None if connected => Default::default(),
                None => (
                    "disconnected".into(),
                    "not connected to the head".into(),
                    "sin conexión con el nodo principal".into(),
                ),
            };
        let live = r.filter(|_| connected);
        AgentView {
            node_id: l.record.id.0,
            name: l.record.name.clone(),
            hostname: l.record.hostname.clone(),
            os: l.record.os.clone(),
            arch: l.record.arch.clone(),
            cpus: l.record.cpus,
            state: state.into(),
            reason_code,
            reason_en,
            reason_es,
            connected,
            cpus_advertised: live.map_or(0.0, |r| r.advertised_cpus),
            cpus_capped: live.map_or(0.0, |r| r.capped_cpus),
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

impl ControlPlane {
    /// What the head knows of every node now: for the HTTP API and the snapshot.
    pub fn agents(&self) -> Vec<AgentView> {
        let mut out: Vec<AgentView> = self.nodes().values().map(AgentView::of).collect();
        out.sort_by_key(|a| a.node_id);
        out
    }

    /// Every enrolled node as `ListNodes` answers, by name.
    pub(super) fn node_records(&self) -> Vec<pb::NodeRecord> {
        let nodes = self.nodes();
        let mut out: Vec<pb::NodeRecord> = nodes
            .values()
            .map(|l| pb::NodeRecord {
                node_id: l.record.id.to_string(),
                name: l.record.name.clone(),
                hostname: l.record.hostname.clone(),
                state: AgentView::of(l).proto_state,
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
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A join became final: the node goes into the live table in place of the one it replaced.
    pub(super) fn confirmed(&self, record: NodeRecord, replaced: Option<NodeId>) {
        tracing::info!(node = %record.id, name = record.name, "join confirmed");
        self.happened(super::Happening::Joined {
            name: record.name.clone(),
            hostname: record.hostname.clone(),
        });
        self.insert(record, replaced);
    }

    /// Adds a newly enrolled node to the live table, dropping the node it replaced (whose
    /// session ends).
    pub(super) fn insert(&self, record: NodeRecord, replaced: Option<NodeId>) {
        let mut nodes = self.nodes();
        if let Some(old) = replaced.and_then(|id| nodes.remove(&id)) {
            drop(old.session);
        }
        nodes.insert(record.id, Live::new(record, now_ms()));
        drop(nodes);
        self.changed();
    }

    /// Starts session `tx` of an authenticated node: it replaces the node's earlier session
    /// (dropping its sender ends that stream) and gets how to join Ray, the fleet's policy and
    /// its standing pause. Returns the session's id.
    pub(super) fn open_session(&self, record: &NodeRecord, tx: &SessionTx) -> u64 {
        let id = self
            .inner
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut nodes = self.nodes();
            let live = nodes
                .entry(record.id)
                .or_insert_with(|| Live::new(record.clone(), now_ms()));
            live.session = Some((id, tx.clone()));
            live.last_seen_ms = now_ms();
            let _ = tx.try_send(Ok(pb::HeadCommand {
                command: Some(Cmd::UpdateRay(pb::UpdateRay {
                    ray: Some(self.ray_spec()),
                })),
            }));
            let policy = &self.inner.config.policy_toml;
            if !policy.is_empty() {
                let _ = tx.try_send(Ok(pb::HeadCommand {
                    command: Some(Cmd::SetPolicy(pb::SetPolicy {
                        toml: policy.clone(),
                    })),
                }));
            }
            if let Some(c) = live.standing.clone() {
                let _ = tx.try_send(Ok(c));
            }
        }
        self.changed();
        tracing::info!(node = %record.id, name = record.name, "session up");
        id
    }

    /// Applies one report from an authenticated session; returns the acknowledgement to send.
    pub(super) async fn apply_report(
        &self,
        node: NodeId,
        mut report: pb::AgentReport,
    ) -> Result<Option<pb::HeadCommand>, FleetError> {
        sanitize_report(&mut report);
        let records = contribution_records(&report);
        let ack = records.iter().map(|r| r.seq).max();
        let state_change = self.take_report(node, report)?;
        if state_change.is_some() || !records.is_empty() {
            let registry = self.registry();
            blocking(move || {
                if let Some((state, code)) = state_change {
                    registry
                        .record_state(node, state, &code, SystemTime::now())
                        .map_err(FleetError::internal)?;
                }
                if !records.is_empty() {
                    registry
                        .add_contributions(node, &records)
                        .map_err(|e| FleetError::InvalidArgument(e.to_string()))?;
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

    /// Puts a report into the live table (unless an earlier one overtook it); returns the
    /// node's new state and reason code when they changed, for the registry.
    fn take_report(
        &self,
        node: NodeId,
        report: pb::AgentReport,
    ) -> Result<Option<(registry::NodeState, String)>, FleetError> {
        let mut nodes = self.nodes();
        let Some(live) = nodes.get_mut(&node) else {
            return Err(FleetError::PermissionDenied("this node was revoked".into()));
        };
        live.last_seen_ms = now_ms();
        if report.seq <= live.last_seq {
            return Ok(None);
        }
        live.last_seq = report.seq;
        if report.contributed_cpu_seconds.is_finite() && report.contributed_cpu_seconds > 0.0 {
            live.contributed += report.contributed_cpu_seconds;
        }
        let state = registry_state(report.state);
        let code = report
            .reason
            .as_ref()
            .map(|r| r.code.clone())
            .unwrap_or_default();
        let mut change = None;
        if live.stored != (state, code.clone()) {
            live.stored = (state, code.clone());
            change = Some((state, code));
        }
        live.report = Some(report);
        Ok(change)
    }

    /// Ends the session `id` of `node` (if it is still the current one) and marks it offline.
    pub(super) async fn session_ended(&self, node: NodeId, id: u64) {
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
            let registry = self.registry();
            let _ = blocking(move || {
                match registry.record_state(
                    node,
                    registry::NodeState::Offline,
                    "disconnected",
                    SystemTime::now(),
                ) {
                    Ok(_) | Err(registry::Error::Revoked(_)) => Ok(()),
                    Err(e) => Err(FleetError::internal(e)),
                }
            })
            .await;
            self.changed();
        }
    }

    /// The node `node` names: its id (`7` or `#7`) or its name (in any ASCII case). A text
    /// that is one node's id and another's name is refused rather than guessed.
    pub(super) fn find(&self, node: &str) -> Result<NodeId, FleetError> {
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
            (Some(a), Some(b)) if a != b => Err(FleetError::InvalidArgument(format!(
                "{text:?} is node {a}'s id and node {b}'s name; write #{a} for the first, \
                 #{b} for the second"
            ))),
            (Some(id), _) | (None, Some(id)) => Ok(id),
            (None, None) => Err(FleetError::NotFound(format!(
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
    ) -> Result<(NodeId, String, bool), FleetError> {
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
    pub async fn revoke(&self, node: &str) -> Result<(NodeId, String), FleetError> {
        let id = self.find(node)?;
        let registry = self.registry();
        blocking(move || {
            registry
                .revoke(id, SystemTime::now())
                .map_err(FleetError::internal)
        })
        .await?;
        let live = self.nodes().remove(&id);
        self.changed();
        let name = live
            .as_ref()
            .map(|l| l.record.name.clone())
            .unwrap_or_default();
        self.happened(super::Happening::Revoked {
            name: if name.is_empty() {
                node.trim().to_string()
            } else {
                name.clone()
            },
        });
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

    /// Tells node `holder`, if it is connected, that a machine asked for its name and got
    /// `given` instead (the registry keeps the same as an event).
    pub(super) fn tell_name_taken(
        &self,
        holder: NodeId,
        hostname: &str,
        wanted: &str,
        given: &str,
    ) {
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

    /// The snapshot as the protocol carries it.
    pub fn snapshot(&self) -> pb::ClusterSnapshot {
        let now = now_ms();
        let ray = lock(&self.inner.ray).clone();
        let nodes = self.nodes();
        let mut out: Vec<pb::NodeSummary> =
            nodes.iter().map(|(id, l)| summary(*id, l, &ray)).collect();
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

/// One node of the snapshot: its live entry, with the CPUs Ray's tasks use on it.
fn summary(id: NodeId, l: &Live, ray: &RayView) -> pb::NodeSummary {
    let view = AgentView::of(l);
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
}

/// The contribution records of a report the ledger takes: at most
/// [`MAX_RECORDS_PER_REPORT`], each a finite, non-negative figure for a whole hour.
fn contribution_records(report: &pb::AgentReport) -> Vec<registry::ContributionRecord> {
    report
        .contributions
        .iter()
        .take(MAX_RECORDS_PER_REPORT)
        .filter(|r| r.cpu_seconds.is_finite() && r.cpu_seconds >= 0.0)
        .map(|r| registry::ContributionRecord {
            seq: r.seq,
            hour_start: UNIX_EPOCH
                + Duration::from_secs(u64::try_from(r.hour_start_unix).unwrap_or(0) / 3600 * 3600),
            cpu_seconds: r.cpu_seconds,
        })
        .collect()
}

pub(super) fn registry_state(state: i32) -> registry::NodeState {
    match pb::NodeState::try_from(state) {
        Ok(pb::NodeState::Paused) => registry::NodeState::Paused,
        Ok(pb::NodeState::Draining) => registry::NodeState::Draining,
        Ok(pb::NodeState::Offline) => registry::NodeState::Offline,
        _ => registry::NodeState::Online,
    }
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
