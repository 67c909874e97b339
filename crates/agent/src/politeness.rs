//! The sensing -> policy -> enforcement loop: every tick, read the machine, decide what it lends
//! to the cluster and why, apply that to the node ([`crate::enforce`]), and publish it.
//!
//! The owner's input, where the OS reports it event by event ([`InputFeed`]), wakes the loop at
//! once: the event counts as idle time zero, so the decision (owner active) and the OS cap it
//! brings are made in the same wake-up, without waiting for the tick; Ray's advertised CPUs
//! follow in the same round, after the cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_host::sensors::Sensors;
use flotilla_policy::{ClockTime, Decision, Lang, Manual, Policy, Settings};
use flotilla_ray::Supervisor;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::enforce::{Enforcement, Enforcer};
use crate::sampler::{
    IdleFeed, InputFeed, ManualFeed, ManualRequest, PolicyFeed, Sampler, SensorReport,
};
use crate::sleep::{HAND_BACK_WITHIN, SleepFeed, SleepReport};

/// How often the loop senses, decides and enforces while the node works.
pub const TICK: Duration = Duration::from_millis(250);
/// How often it does so while the node is quiet (using under [`QUIET_BELOW`] cores): there is
/// nothing to hold back then, so owner input need not be seen within a tick, and a node that
/// starts working is seen within this long. A pause, resume or new settings asked for are
/// still taken at the next tick.
pub const QUIET_TICK: Duration = Duration::from_secs(1);
/// The node's CPU use, in cores, below which it counts as quiet (an idle Ray node uses about
/// 0.01; one task, a whole core).
pub const QUIET_BELOW: f64 = 0.05;
/// An input event wakes the loop unless the last round already saw input this recent: the
/// owner was active then, the node is already held back, and the tick carries on from there (a
/// moving pointer would otherwise run a round every few tens of milliseconds).
pub const INPUT_SEEN_WITHIN: Duration = Duration::from_secs(1);
/// `FLOTILLA_POLITENESS_TICK_MS`: a tick other than [`TICK`] (tests set it long, to show that
/// input does not wait for the tick). The quiet tick is then never shorter.
pub const TICK_ENV: &str = "FLOTILLA_POLITENESS_TICK_MS";
/// How often the list of Flotilla's own processes is refreshed (it walks the process table).
const OWN_EVERY: Duration = Duration::from_secs(5);

/// What the loop publishes each tick.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Published {
    pub decision: Decision,
    /// The reason in English and Spanish.
    pub reason_en: String,
    pub reason_es: String,
    /// What was done about it, when the loop drives a node.
    pub enforcement: Option<Enforcement>,
    #[serde(default)]
    pub sensors: SensorReport,
    /// Sleep and wake: an announced sleep under way, the last wake, `keep_awake`.
    #[serde(default)]
    pub sleep: SleepReport,
}

impl Published {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain data")
    }
}

/// The node the loop drives, with what drives it.
#[derive(Debug)]
pub struct Driven {
    pub node: Arc<Supervisor>,
    pub enforcer: Enforcer,
}

/// Where the loop's inputs come from.
#[derive(Debug)]
pub struct Inputs {
    pub sensors: Sensors,
    pub idle: IdleFeed,
    pub manual: ManualFeed,
    pub policy: PolicyFeed,
    /// What the OS announced ([`crate::sleep::watch`]).
    pub sleep: Arc<SleepFeed>,
    /// The owner's input events ([`flotilla_host::input::InputWatch`]), when the OS gives them.
    pub input: Arc<InputFeed>,
    /// The tick while the node works ([`TICK`], or [`tick_from_env`]).
    pub tick: Duration,
}

/// The tick [`TICK_ENV`] asks for, else [`TICK`].
pub fn tick_from_env() -> Duration {
    std::env::var(TICK_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(TICK, Duration::from_millis)
}

/// Runs the loop until `shutdown`. `own` returns the pids of Flotilla's own processes.
pub async fn run(
    settings: Settings,
    inputs: Inputs,
    own: impl Fn() -> Vec<u32> + Send + 'static,
    mut driven: Option<Driven>,
    tx: watch::Sender<Option<Arc<Published>>>,
    shutdown: CancellationToken,
) {
    let mut policy = Policy::new(settings);
    let mut sampler = Sampler::new(inputs.sensors, inputs.idle);
    sampler.set_input(inputs.input.clone());
    let (tick, quiet_tick) = (inputs.tick, QUIET_TICK.max(inputs.tick));
    sampler.set_read_apps(!policy.settings().exclusive_apps.is_empty());
    let epoch = Instant::now();
    let mut manual = Manual::None;
    let mut own_pids = Vec::new();
    let mut own_at: Option<Instant> = None;
    let mut last_line = String::new();
    let mut last_round: Option<Instant> = None;
    // The owner's idle time as the last round saw it.
    let mut last_idle: Option<Duration> = None;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let prompted = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => false,
            _ = inputs.sleep.changed.notified() => true,
            _ = inputs.input.woke.notified() => {
                if last_idle.is_some_and(|i| i < INPUT_SEEN_WITHIN) {
                    continue;
                }
                true
            }
        };
        let now = Instant::now();
        let asked = prompted || is_waiting(&inputs.manual) || is_waiting(&inputs.policy);
        let quiet = sampler.own_cores().is_some_and(|c| c < QUIET_BELOW);
        if !asked
            && quiet
            && last_round.is_some_and(|t| now.duration_since(t) + tick / 2 < quiet_tick)
        {
            continue;
        }
        last_round = Some(now);
        // The node's throttle counts its tree's CPU in one read; without it, the tree's pids
        // (refreshed every few seconds, since finding them walks the process table).
        let node = driven.as_ref().map(|d| d.node.clone());
        let (mut readings, report) =
            sampler.sample_own(now, || match node.as_ref().and_then(|n| n.cpu_time()) {
                Some(t) => crate::sampler::Own::CpuTime(t),
                None => {
                    if own_at.is_none_or(|t| now.duration_since(t) >= OWN_EVERY) {
                        own_pids = own();
                        own_at = Some(now);
                    }
                    crate::sampler::Own::Pids(&own_pids)
                }
            });
        last_idle = readings.idle;
        // The node lends at most the CPUs it was started with, however many the machine has.
        readings.node_cpus = driven.as_ref().map(|d| d.enforcer.node_cpus());
        let mono = now.duration_since(epoch);
        let settings = inputs
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(s) = settings {
            tracing::info!("politeness settings changed");
            policy.set_settings(s);
            sampler.set_read_apps(!policy.settings().exclusive_apps.is_empty());
        }
        let request = inputs
            .manual
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = request {
            manual = to_manual(r, mono, readings.local_time);
            tracing::info!(?manual, "manual pause changed");
        }
        if !manual.is_active(mono) {
            manual = Manual::None;
        }
        let (leaving, hand_back, back) = inputs.sleep.take();
        policy.set_leaving(leaving);
        let decision = policy.decide(&readings, &manual, mono);
        let enforcement = match driven.as_mut() {
            Some(d) if hand_back.is_some() && policy.hands_back() => {
                let why = decision.reason.text(Lang::En);
                let e = d.enforcer.hand_back(&d.node, HAND_BACK_WITHIN, &why).await;
                Some(e.clone())
            }
            Some(d) => {
                d.enforcer
                    .set_machine_memory(sampler.memory(), policy.settings());
                d.enforcer.apply(&decision, &d.node).await;
                Some(
                    d.enforcer
                        .keep_warm(&decision, quiet, &d.node)
                        .await
                        .clone(),
                )
            }
            None => None,
        };
        if let Some(done) = hand_back {
            let _ = done.send(());
        }
        let sleep = SleepReport {
            leaving,
            back,
            keep_awake: flotilla_policy::keeps_awake(policy.settings(), &readings, &decision),
        };
        let published = Published {
            reason_en: decision.reason.text(Lang::En),
            reason_es: decision.reason.text(Lang::Es),
            decision,
            enforcement,
            sensors: report,
            sleep,
        };
        let line = format!(
            "{} CPUs: {}",
            published.decision.target_cpus, published.reason_en
        );
        if line != last_line {
            tracing::info!(target_cpus = published.decision.target_cpus, pause = ?published.decision.pause, "politeness: {}", published.reason_en);
            last_line = line;
        }
        let _ = tx.send(Some(Arc::new(published)));
    }
}

/// Whether a feed holds a request the loop has not taken yet.
fn is_waiting<T>(feed: &std::sync::Mutex<Option<T>>) -> bool {
    feed.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

fn to_manual(r: ManualRequest, now: Duration, local: flotilla_policy::LocalTime) -> Manual {
    match r {
        ManualRequest::Finish => Manual::finish_then_pause(),
        ManualRequest::Indefinite => Manual::indefinite(),
        ManualRequest::For(d) => Manual::for_duration(now, local, d),
        ManualRequest::UntilNext { hour, minute } => match ClockTime::new(hour, minute) {
            Some(at) => Manual::until_next(now, local, at),
            None => Manual::indefinite(),
        },
        ManualRequest::Resume => Manual::None,
    }
}
