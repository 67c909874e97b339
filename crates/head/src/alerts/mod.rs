//! Alerts from the head: rules over what the control plane and Ray say about the fleet, sent
//! to webhooks (a generic JSON receiver, Slack, Discord, Telegram's bot API).
//!
//! `[alerts]` in the head's `flotilla.toml` turns them on ([`AlertsConfig`]); the URLs of
//! targets that carry a token live in the secret store and reach [`Setup`] resolved. One task
//! ([`spawn`]) looks at the fleet every `check_every` and hears joins and revocations as they
//! happen ([`crate::fleet::Happening`]); [`rules::Rules`] decides, and [`delivery::Delivery`]
//! sends each alert to every target from a bounded queue of its own, retrying with backoff on
//! its own task, so a receiver that is down never holds up the head.

pub mod config;
pub mod delivery;
pub mod rules;
pub mod targets;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use config::{AlertsConfig, Settings, TargetSpec, UrlFrom};
pub use delivery::{Backoff, Delivery};
pub use targets::{Kind, Target};

use crate::fleet::ControlPlane;
use rules::{JobSeen, NodeSeen, Observation, Rules};

/// What a rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    NodeOffline,
    JobFailed,
    LendableCpusLow,
    JoinCodeUsed,
    NodeRevoked,
    HeadDiskLow,
    HeadMemoryLow,
    /// `flotilla alerts test`.
    Test,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NodeOffline => "node_offline",
            Rule::JobFailed => "job_failed",
            Rule::LendableCpusLow => "lendable_cpus_low",
            Rule::JoinCodeUsed => "join_code_used",
            Rule::NodeRevoked => "node_revoked",
            Rule::HeadDiskLow => "head_disk_low",
            Rule::HeadMemoryLow => "head_memory_low",
            Rule::Test => "test",
        }
    }
}

/// Whether an incident began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Firing,
    Cleared,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Cleared => "cleared",
        }
    }
}

/// One alert, as every target's shape is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: Rule,
    pub state: AlertState,
    /// An event that will not be cleared (a job failed, a join code used, a node revoked).
    pub one_shot: bool,
    pub node: Option<String>,
    pub summary: String,
    pub at_ms: i64,
    /// When the incident began.
    pub since_ms: Option<i64>,
}

impl Alert {
    fn incident(
        rule: Rule,
        state: AlertState,
        node: Option<&str>,
        summary: String,
        at_ms: i64,
        since_ms: i64,
    ) -> Alert {
        Alert {
            rule,
            state,
            one_shot: false,
            node: node.map(str::to_string),
            summary,
            at_ms,
            since_ms: Some(since_ms),
        }
    }

    fn event(rule: Rule, node: Option<&str>, summary: String, at_ms: i64) -> Alert {
        Alert {
            rule,
            state: AlertState::Firing,
            one_shot: true,
            node: node.map(str::to_string),
            summary,
            at_ms,
            since_ms: None,
        }
    }

    /// What `flotilla alerts test` sends.
    pub fn test(fleet: &str) -> Alert {
        Alert::event(
            Rule::Test,
            None,
            format!("a test alert from the head on {fleet}: alerts reach this target"),
            now_ms(),
        )
    }
}

/// Alerts ready to run: the rules' settings and the targets with their URLs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub settings: Settings,
    pub targets: Vec<Target>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The result of one test alert to one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestOutcome {
    pub target: String,
    pub kind: String,
    pub ok: bool,
    /// Why it failed, in the receiver's words where it gave any.
    pub reason: Option<String>,
}

/// Sends one test alert to each target, once (no retries), all at once; the outcomes in the
/// targets' order.
pub async fn send_test(targets: &[Target], fleet: &str) -> Vec<TestOutcome> {
    let client = delivery::client();
    let alert = Alert::test(fleet);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().cloned().enumerate() {
        let (client, alert, fleet) = (client.clone(), alert.clone(), fleet.to_string());
        tasks.spawn(async move {
            let r = delivery::attempt(&client, &t, &alert, &fleet).await;
            (i, t, r)
        });
    }
    let mut out: Vec<(usize, TestOutcome)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((i, t, r)) = joined else { continue };
        out.push((
            i,
            TestOutcome {
                target: t.name.clone(),
                kind: t.kind.as_str().into(),
                ok: r.is_ok(),
                reason: r.err().map(|f| f.reason),
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

/// The head's alert task: the rules over the fleet every `check_every` and at every join or
/// revocation, until `cancel`. `state_dir` is the disk the head's disk rule watches.
pub fn spawn(
    setup: Setup,
    fleet: ControlPlane,
    snapshots: watch::Receiver<crate::Latest>,
    state_dir: PathBuf,
    fleet_name: String,
    cancel: CancellationToken,
) -> Delivery {
    let delivery = Delivery::start(
        setup.targets,
        fleet_name,
        Backoff::with_give_up(setup.settings.give_up_after),
        cancel.clone(),
    );
    fleet.attach_alerts(delivery.clone());
    let sending = delivery.clone();
    let mut happenings = fleet.happenings();
    let check_every = setup.settings.check_every;
    let mut rules = Rules::new(setup.settings, now_ms());
    tokio::spawn(async move {
        let sensors = flotilla_host::sensors::Sensors::new();
        let mut tick = tokio::time::interval(check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    let o = observe(&fleet, &snapshots, &state_dir, &sensors);
                    for alert in rules.observe(&o) {
                        sending.send(&alert);
                    }
                }
                h = happenings.recv() => match h {
                    Ok(h) => {
                        if let Some(alert) = rules.happened(&h, now_ms()) {
                            sending.send(&alert);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("{n} joins or revocations came too fast to alert on");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    delivery
}

/// One look at the fleet, Ray's jobs and the head's machine.
fn observe(
    fleet: &ControlPlane,
    snapshots: &watch::Receiver<crate::Latest>,
    state_dir: &std::path::Path,
    sensors: &flotilla_host::sensors::Sensors,
) -> Observation {
    let nodes = fleet
        .agents()
        .into_iter()
        .map(|a| NodeSeen {
            id: a.node_id,
            name: a.name,
            connected: a.connected,
            last_seen_ms: a.last_seen_unix_ms,
            cpus_advertised: a.cpus_advertised,
        })
        .collect();
    let jobs = snapshots.borrow().snapshot.as_ref().map(|s| {
        s.jobs
            .iter()
            .map(|j| JobSeen {
                id: j.id.clone(),
                status: j.status.clone(),
                entrypoint: j.entrypoint.clone(),
                reason: j.reason.clone(),
            })
            .collect()
    });
    Observation {
        now_ms: now_ms(),
        nodes,
        jobs,
        disk_free: flotilla_host::disk::space(state_dir)
            .ok()
            .and_then(|s| s.available_fraction()),
        memory_free: sensors.memory().available_fraction(),
    }
}
