//! The rules, their precedence, and the memory that keeps the offer steady.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manual::Manual;
use crate::readings::{Power, Readings};
use crate::reason::{Lang, Reason, elapsed};
use crate::settings::{BatteryMode, OnSleep, Settings};
use crate::time::Until;

/// Free memory must climb this far above the minimum before CPUs are
/// offered again, so a reading hovering at the line does not toggle it.
pub const MEMORY_RELEASE_MARGIN: f64 = 0.05;
/// Degrees below `max_temperature_c` the machine must cool to before CPUs
/// are offered again.
pub const TEMPERATURE_RELEASE_MARGIN_C: f64 = 5.0;
/// Percentage points above `pause_below_battery_percent` the charge must
/// reach, still on battery, before the low-battery pause lifts.
pub const BATTERY_RELEASE_MARGIN_PERCENT: u8 = 5;

/// How hard to stop. Ordered from mildest to strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    /// Keep running; offer `target_cpus`.
    None,
    /// Take no new tasks, let running ones finish.
    Finish,
    /// Stop running tasks now.
    Now,
}

/// What the caller should do this tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// CPUs to offer the cluster; `0` whenever `pause` is not `None`.
    pub target_cpus: u32,
    pub pause: Pause,
    pub reason: Reason,
}

/// The rules in precedence order: when several are equally strict, the
/// earliest one gives the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The OS announced sleep or shutdown.
    Sleep,
    /// The owner's pause from the menu.
    Manual,
    /// Allowed hours.
    Schedule,
    /// Programs that need the whole machine.
    ExclusiveApps,
    /// Battery power and charge.
    Battery,
    /// Temperature.
    Temperature,
    /// Available memory.
    Memory,
    /// Recent input, or the owner's own programs keeping the CPU busy.
    Owner,
    /// Idle, but not yet for the ramp-up period.
    Ramp,
    /// The offer went up less than a ramp-up period ago.
    Settle,
}

impl Rule {
    /// Every rule, in precedence order.
    pub const ALL: [Rule; 10] = [
        Rule::Sleep,
        Rule::Manual,
        Rule::Schedule,
        Rule::ExclusiveApps,
        Rule::Battery,
        Rule::Temperature,
        Rule::Memory,
        Rule::Owner,
        Rule::Ramp,
        Rule::Settle,
    ];

    /// Stable identifier, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Sleep => "sleep",
            Rule::Manual => "manual",
            Rule::Schedule => "schedule",
            Rule::ExclusiveApps => "exclusive_apps",
            Rule::Battery => "battery",
            Rule::Temperature => "temperature",
            Rule::Memory => "memory",
            Rule::Owner => "owner",
            Rule::Ramp => "ramp",
            Rule::Settle => "settle",
        }
    }
}

/// The same sentence in every supported language.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Text {
    pub en: String,
    pub es: String,
}

impl Text {
    fn new(en: impl Into<String>, es: impl Into<String>) -> Text {
        Text {
            en: en.into(),
            es: es.into(),
        }
    }

    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::Es => &self.es,
        }
    }
}

/// One rule's view of the current tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub rule: Rule,
    /// Whether the rule limits the offer this tick.
    pub fired: bool,
    /// The most CPUs the rule allows, when it fired.
    pub target_cpus: Option<u32>,
    /// The pause the rule asks for (`None` when it did not fire).
    pub pause: Pause,
    /// What the rule saw, and what it asks for if it fired.
    pub detail: Text,
}

/// Every rule's verdict and the decision they add up to, for
/// `flotilla policy explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub decision: Decision,
    /// One per rule, in [`Rule::ALL`] order.
    pub verdicts: Vec<Verdict>,
}

/// What [`Policy`] remembers between ticks. Instants are monotonic.
#[derive(Debug, Clone, Default)]
struct State {
    last_target: Option<u32>,
    /// What was offered when the OS announced sleep or shutdown: after wake the offer comes
    /// back up to it at once, since the machine left for its own reasons, not the owner's.
    before_leaving: Option<u32>,
    last_raise: Option<Duration>,
    load_above_since: Option<Duration>,
    load_below_since: Option<Duration>,
    owner_busy: bool,
    battery_low: bool,
    too_hot: bool,
    memory_low: bool,
}

/// The CPUs the reasons speak of.
#[derive(Debug, Clone, Copy)]
struct Cpus {
    /// The most this node lends: its own count, or the machine's when that is smaller.
    node: u32,
    /// The machine's logical CPUs.
    machine: u32,
}

impl Cpus {
    fn of(r: &Readings) -> Cpus {
        Cpus {
            node: r.node_cpus.map_or(r.total_cpus, |n| n.min(r.total_cpus)),
            machine: r.total_cpus,
        }
    }
}

/// What a fired rule asks for.
#[derive(Debug, Clone)]
struct Proposal {
    target: u32,
    pause: Pause,
    reason: Reason,
}

impl Proposal {
    /// Stopping harder is stricter than offering fewer CPUs.
    fn stricter_than(&self, other: &Proposal) -> bool {
        (self.pause, std::cmp::Reverse(self.target))
            > (other.pause, std::cmp::Reverse(other.target))
    }
}

/// A rule's result before it becomes a [`Verdict`].
type Outcome = (Option<Proposal>, Text);

fn quiet(detail: Text) -> Outcome {
    (None, detail)
}

fn fire(target: u32, pause: Pause, reason: Reason) -> Outcome {
    let detail = effect(&reason, target, pause);
    (
        Some(Proposal {
            target,
            pause,
            reason,
        }),
        detail,
    )
}

/// "zoom is running: no new tasks".
fn effect(reason: &Reason, target: u32, pause: Pause) -> Text {
    let (en, es) = match pause {
        Pause::Now => ("pause now".to_owned(), "pausa inmediata".to_owned()),
        Pause::Finish => ("no new tasks".to_owned(), "sin tareas nuevas".to_owned()),
        Pause::None => (
            format!(
                "at most {target} {}",
                if target == 1 { "CPU" } else { "CPUs" }
            ),
            format!("como máximo {target} CPU"),
        ),
    };
    Text::new(
        format!("{}: {en}", reason.text(Lang::En)),
        format!("{}: {es}", reason.text(Lang::Es)),
    )
}

fn percent(fraction: f64) -> u8 {
    (fraction.clamp(0.0, 1.0) * 100.0).round() as u8
}

fn whole_secs_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Case and a Windows `.exe` suffix are not part of a program's identity.
fn program_key(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    match lower.strip_suffix(".exe") {
        Some(stem) => stem.to_owned(),
        None => lower,
    }
}

/// Whether `keep_awake` holds the machine's own idle sleep back now: it is set, the machine
/// is on mains power (an unknown source counts as mains, as everywhere in the policy),
/// `decision` lends CPUs without a pause, and the owner has been away for
/// `active_after_input_secs` at least.
pub fn keeps_awake(settings: &Settings, readings: &Readings, decision: &Decision) -> bool {
    let mains = matches!(readings.power, Power::Ac | Power::Unknown);
    let away = readings
        .idle
        .is_some_and(|idle| idle >= Duration::from_secs(settings.active_after_input_secs));
    settings.keep_awake
        && mains
        && away
        && decision.pause == Pause::None
        && decision.target_cpus > 0
}

/// Decides, tick after tick, how much of this computer to offer.
///
/// Each rule, given the readings, proposes a ceiling: a number of CPUs and
/// a [`Pause`]. The strictest proposal wins (any pause beats none, `Now`
/// beats `Finish`, fewer CPUs beat more); among equally strict ones the
/// reason comes from the earliest rule in this precedence order:
///
/// 1. the OS announced sleep or shutdown ([`Policy::set_leaving`]; `Now`,
///    unless `on_sleep = "ignore"`),
/// 2. manual pause (`Now` for a pause, `Finish` for "finish then pause"),
/// 3. outside the schedule's hours (`Finish`),
/// 4. an exclusive app running (`Finish`),
/// 5. battery (low charge `Now`; otherwise per `on_battery`),
/// 6. too hot (0 CPUs),
/// 7. low memory (0 CPUs),
/// 8. owner active or busy (`active_cpus`),
/// 9. idle ramp, not yet idle for `ramp_up_after_secs` (`active_cpus`),
/// 10. settle: the offer rose less than `ramp_up_after_secs` ago.
///
/// With none of them limiting, every CPU but `keep_cpus_for_owner` is
/// offered. Strictest-wins rather than first-wins means no rule can loosen
/// another: keeping 4 CPUs on battery never overrides the 2 kept while the
/// owner types.
///
/// Decreases take effect on the tick they are seen. Increases are spaced
/// at least `ramp_up_after_secs` apart, whatever caused them, and the
/// memory, temperature, battery and owner-load rules have hysteresis of
/// their own, so readings that hover at a threshold cannot make the offer
/// flap.
#[derive(Debug, Clone)]
pub struct Policy {
    settings: Settings,
    state: State,
    leaving: Option<Leaving>,
}

/// What the OS announced the machine is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leaving {
    /// Sleep (suspend or hibernate).
    Sleep,
    /// Shut down, restart or log the owner out.
    ShutDown,
}

impl Policy {
    /// A policy with no history: the first decision is taken as it comes.
    /// Settings should have passed [`Settings::validate`]; invalid ones
    /// still never cause a panic.
    pub fn new(settings: Settings) -> Policy {
        Policy {
            settings,
            state: State::default(),
            leaving: None,
        }
    }

    /// What the OS announced the machine is about to do, until it is over (`None` after wake,
    /// or when a shutdown was called off). While set, and unless `on_sleep = "ignore"`, the
    /// decision is to stop at once ([`Pause::Now`]) so that the cluster reruns this machine's
    /// tasks elsewhere before it goes.
    pub fn set_leaving(&mut self, leaving: Option<Leaving>) {
        match (self.leaving, leaving) {
            (None, Some(_)) => self.state.before_leaving = self.state.last_target,
            (Some(_), None) => {
                if let Some(before) = self.state.before_leaving.take() {
                    self.state.last_target = Some(before);
                }
            }
            _ => {}
        }
        self.leaving = leaving;
    }

    /// Whether this machine hands its work back before it sleeps or shuts down now: it is
    /// announced and `on_sleep` is `"hand_back"`.
    pub fn hands_back(&self) -> bool {
        self.leaving.is_some() && self.settings.on_sleep == OnSleep::HandBack
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Applies reloaded settings, keeping the history so a reload neither
    /// restarts the ramp nor forgets a recent increase.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// The decision for monotonic instant `now`, remembered for later ticks.
    ///
    /// `now` should never go backwards; if it does, elapsed times count as
    /// zero (so nothing speeds up).
    pub fn decide(&mut self, readings: &Readings, manual: &Manual, now: Duration) -> Decision {
        let (explanation, state) = self.evaluate(readings, manual, now);
        self.state = state;
        explanation.decision
    }

    /// What [`decide`](Self::decide) would return and why, rule by rule,
    /// without remembering anything.
    pub fn explain(&self, readings: &Readings, manual: &Manual, now: Duration) -> Explanation {
        self.evaluate(readings, manual, now).0
    }

    fn evaluate(&self, r: &Readings, manual: &Manual, now: Duration) -> (Explanation, State) {
        let s = &self.settings;
        let mut next = self.state.clone();
        let cpus = Cpus::of(r);
        // The owner's share counts from the machine's cores; the node lends no more than its own.
        let max = r
            .total_cpus
            .saturating_sub(s.keep_cpus_for_owner)
            .min(cpus.node);
        let active = s.active_cpus.min(max);

        let outcomes = [
            (Rule::Sleep, sleep_rule(s, self.leaving)),
            (Rule::Manual, manual_rule(manual, now)),
            (Rule::Schedule, schedule_rule(s, r)),
            (Rule::ExclusiveApps, exclusive_rule(s, r)),
            (Rule::Battery, battery_rule(s, r, max, &mut next)),
            (Rule::Temperature, temperature_rule(s, r, &mut next)),
            (Rule::Memory, memory_rule(s, r, &mut next)),
            (Rule::Owner, owner_rule(s, r, active, now, &mut next)),
            (Rule::Ramp, ramp_rule(s, r, active, max, cpus)),
        ];

        let mut verdicts = Vec::with_capacity(Rule::ALL.len());
        let mut winner = Proposal {
            target: max,
            pause: Pause::None,
            reason: Reason::Contributing {
                cpus: max,
                total: cpus.node,
                machine: cpus.machine,
            },
        };
        let mut any_fired = false;
        for (rule, (proposal, detail)) in outcomes {
            verdicts.push(Verdict {
                rule,
                fired: proposal.is_some(),
                target_cpus: proposal.as_ref().map(|p| p.target),
                pause: proposal.as_ref().map_or(Pause::None, |p| p.pause),
                detail,
            });
            if let Some(mut proposal) = proposal {
                // A rule cannot offer more than the machine has to give, and
                // a paused machine offers nothing.
                proposal.target = if proposal.pause == Pause::None {
                    proposal.target.min(max)
                } else {
                    0
                };
                // Strictly stricter only: ties keep the earlier rule's reason.
                if !any_fired || proposal.stricter_than(&winner) {
                    winner = proposal;
                    any_fired = true;
                }
            }
        }

        let (decision, settle) = self.settle(winner, cpus, now, &mut next);
        verdicts.push(settle);
        next.last_target = Some(decision.target_cpus);
        (Explanation { decision, verdicts }, next)
    }

    /// Lets decreases through and spaces increases a ramp-up period apart.
    fn settle(
        &self,
        winner: Proposal,
        cpus: Cpus,
        now: Duration,
        next: &mut State,
    ) -> (Decision, Verdict) {
        let period = Duration::from_secs(self.settings.ramp_up_after_secs);
        let decision = |p: Proposal| Decision {
            target_cpus: p.target,
            pause: p.pause,
            reason: p.reason,
        };
        let verdict = |fired: bool, target: Option<u32>, detail: Text| Verdict {
            rule: Rule::Settle,
            fired,
            target_cpus: target,
            pause: Pause::None,
            detail,
        };
        let previous = match self.state.last_target {
            Some(previous) if winner.target > previous => previous,
            _ => {
                let detail = Text::new("No increase to space out", "Ningún aumento que espaciar");
                return (decision(winner), verdict(false, None, detail));
            }
        };
        let since_raise = self.state.last_raise.map(|at| now.saturating_sub(at));
        match since_raise {
            Some(since) if since < period => {
                let reason = Reason::Settling {
                    cpus: previous,
                    total: cpus.node,
                    machine: cpus.machine,
                    in_secs: whole_secs_up(period - since),
                };
                let detail = Text::new(
                    format!(
                        "Last increase {} ago, less than {}: {}",
                        elapsed(since.as_secs()),
                        elapsed(period.as_secs()),
                        reason.text(Lang::En)
                    ),
                    format!(
                        "Último aumento hace {}, menos de {}: {}",
                        elapsed(since.as_secs()),
                        elapsed(period.as_secs()),
                        reason.text(Lang::Es)
                    ),
                );
                let held = Decision {
                    target_cpus: previous,
                    pause: Pause::None,
                    reason,
                };
                (held, verdict(true, Some(previous), detail))
            }
            _ => {
                next.last_raise = Some(now);
                let detail = Text::new(
                    format!("Increasing from {previous} to {} CPUs", winner.target),
                    format!("Aumentando de {previous} a {} CPU", winner.target),
                );
                (decision(winner), verdict(false, None, detail))
            }
        }
    }
}

fn sleep_rule(s: &Settings, leaving: Option<Leaving>) -> Outcome {
    match (leaving, s.on_sleep) {
        (None, _) => quiet(Text::new(
            "No sleep or shutdown announced",
            "No se ha anunciado reposo ni apagado",
        )),
        (Some(_), OnSleep::Ignore) => quiet(Text::new(
            "Sleep or shutdown announced; on_sleep = \"ignore\" keeps the work here",
            "Reposo o apagado anunciado; on_sleep = \"ignore\" deja el trabajo aquí",
        )),
        (Some(Leaving::Sleep), OnSleep::HandBack) => fire(0, Pause::Now, Reason::GoingToSleep),
        (Some(Leaving::ShutDown), OnSleep::HandBack) => fire(0, Pause::Now, Reason::ShuttingDown),
    }
}

fn manual_rule(manual: &Manual, now: Duration) -> Outcome {
    match *manual {
        Manual::None => quiet(Text::new("No manual pause", "Sin pausa manual")),
        Manual::PausedUntil { deadline, ends_at } if now < deadline => {
            let until = Until::new(ends_at, (deadline - now).as_secs());
            fire(0, Pause::Now, Reason::PausedUntil { until })
        }
        Manual::PausedUntil { ends_at, .. } => {
            let ended = Until::new(ends_at, 0);
            quiet(Text::new(
                format!("Manual pause ended at {}", ended.text(Lang::En)),
                format!("La pausa manual terminó a {}", ended.text(Lang::Es)),
            ))
        }
        Manual::Paused => fire(0, Pause::Now, Reason::PausedIndefinitely),
        Manual::FinishThenPause => fire(0, Pause::Finish, Reason::Finishing),
    }
}

fn schedule_rule(s: &Settings, r: &Readings) -> Outcome {
    match &s.schedule {
        None => quiet(Text::new(
            "No schedule: every hour is allowed",
            "Sin horario: se permite cualquier hora",
        )),
        Some(schedule) if schedule.allows(r.local_time) => quiet(Text::new(
            "Within allowed hours",
            "Dentro del horario permitido",
        )),
        Some(schedule) => {
            let until = schedule
                .next_start(r.local_time)
                .map(|(at, away)| Until::new(at, away));
            fire(0, Pause::Finish, Reason::OutsideHours { until })
        }
    }
}

fn exclusive_rule(s: &Settings, r: &Readings) -> Outcome {
    let running: Vec<String> = r.running_apps.iter().map(|p| program_key(p)).collect();
    let found = s.exclusive_apps.iter().find(|app| {
        let key = program_key(app);
        !key.is_empty() && running.contains(&key)
    });
    match found {
        Some(app) => fire(
            0,
            Pause::Finish,
            Reason::ExclusiveApp {
                app: app.trim().to_owned(),
            },
        ),
        None if s.exclusive_apps.is_empty() => quiet(Text::new(
            "No exclusive apps configured",
            "No hay aplicaciones exclusivas configuradas",
        )),
        None => {
            let list = s.exclusive_apps.join(", ");
            quiet(Text::new(
                format!("None running of: {list}"),
                format!("Ninguna en ejecución de: {list}"),
            ))
        }
    }
}

fn battery_rule(s: &Settings, r: &Readings, max: u32, next: &mut State) -> Outcome {
    let percent = match r.power {
        Power::Battery { percent } => percent.map(|p| p.min(100)),
        Power::Ac => {
            next.battery_low = false;
            return quiet(Text::new("On mains power", "Conectado a la corriente"));
        }
        Power::Unknown => {
            next.battery_low = false;
            return quiet(Text::new(
                "Power source unknown; treated as mains power",
                "Fuente de alimentación desconocida; se trata como conectado a la corriente",
            ));
        }
    };
    let threshold = s.pause_below_battery_percent;
    next.battery_low = threshold > 0
        && match percent {
            Some(p) if next.battery_low => {
                p < threshold.saturating_add(BATTERY_RELEASE_MARGIN_PERCENT)
            }
            Some(p) => p < threshold,
            // A charge that stops being reported keeps the verdict it had.
            None => next.battery_low,
        };
    if next.battery_low {
        return fire(0, Pause::Now, Reason::BatteryLow { percent });
    }
    let reason = Reason::OnBattery { percent };
    match s.on_battery {
        BatteryMode::Finish => fire(0, Pause::Finish, reason),
        BatteryMode::PauseNow => fire(0, Pause::Now, reason),
        BatteryMode::Keep => fire(s.battery_cpus.min(max), Pause::None, reason),
        BatteryMode::Ignore => quiet(Text::new(
            format!("{}, ignored as configured", reason.text(Lang::En)),
            format!("{}, ignorada según la configuración", reason.text(Lang::Es)),
        )),
    }
}

fn temperature_rule(s: &Settings, r: &Readings, next: &mut State) -> Outcome {
    let limit = s.max_temperature_c.filter(|c| c.is_finite());
    let reading = r.temperature_c.filter(|c| c.is_finite());
    let (limit, celsius) = match (limit, reading) {
        (None, _) => {
            next.too_hot = false;
            return quiet(Text::new(
                "No temperature limit",
                "Sin límite de temperatura",
            ));
        }
        (Some(_), None) => {
            next.too_hot = false;
            return quiet(Text::new(
                "Temperature unknown; not limiting",
                "Temperatura desconocida; sin límite",
            ));
        }
        (Some(limit), Some(celsius)) => (limit, celsius),
    };
    next.too_hot = if next.too_hot {
        celsius > limit - TEMPERATURE_RELEASE_MARGIN_C
    } else {
        celsius > limit
    };
    if next.too_hot {
        fire(
            0,
            Pause::None,
            Reason::TooHot {
                celsius: celsius.round() as i32,
            },
        )
    } else {
        quiet(Text::new(
            format!("{celsius:.0} °C, limit {limit:.0} °C"),
            format!("{celsius:.0} °C, límite {limit:.0} °C"),
        ))
    }
}

fn memory_rule(s: &Settings, r: &Readings, next: &mut State) -> Outcome {
    let Some(free) = r
        .available_memory_fraction
        .filter(|f| f.is_finite())
        .map(|f| f.clamp(0.0, 1.0))
    else {
        next.memory_low = false;
        return quiet(Text::new(
            "Free memory unknown; not limiting",
            "Memoria libre desconocida; sin límite",
        ));
    };
    let minimum = s.min_free_memory_fraction;
    next.memory_low = minimum > 0.0
        && if next.memory_low {
            free < minimum + MEMORY_RELEASE_MARGIN
        } else {
            free < minimum
        };
    if next.memory_low {
        fire(
            0,
            Pause::None,
            Reason::LowMemory {
                free_percent: percent(free),
            },
        )
    } else {
        quiet(Text::new(
            format!("{}% free, minimum {}%", percent(free), percent(minimum)),
            format!("{} % libre, mínimo {} %", percent(free), percent(minimum)),
        ))
    }
}

fn owner_rule(s: &Settings, r: &Readings, active: u32, now: Duration, next: &mut State) -> Outcome {
    let load = r
        .owner_cpu_load
        .filter(|l| l.is_finite())
        .map(|l| l.clamp(0.0, 1.0));
    if load.is_some_and(|l| l > s.owner_load_threshold) {
        next.load_below_since = None;
        let since = *next.load_above_since.get_or_insert(now);
        if now.saturating_sub(since) >= Duration::from_secs(s.owner_load_trigger_secs) {
            next.owner_busy = true;
        }
    } else {
        next.load_above_since = None;
        let since = *next.load_below_since.get_or_insert(now);
        if now.saturating_sub(since) >= Duration::from_secs(s.owner_load_release_secs) {
            next.owner_busy = false;
        }
    }

    let active_after = Duration::from_secs(s.active_after_input_secs);
    match r.idle {
        None => {
            let (proposal, effect) = fire(active, Pause::None, Reason::OwnerActive);
            let detail = Text::new(
                format!("Idle time unknown, taken as in use. {}", effect.en),
                format!(
                    "Tiempo sin uso desconocido; se supone en uso. {}",
                    effect.es
                ),
            );
            (proposal, detail)
        }
        Some(idle) if idle < active_after => fire(active, Pause::None, Reason::OwnerActive),
        Some(_) if next.owner_busy => fire(active, Pause::None, Reason::OwnerBusy),
        Some(idle) => {
            let load_en = load.map_or("unknown".to_owned(), |l| format!("{}%", percent(l)));
            let load_es = load.map_or("desconocida".to_owned(), |l| format!("{} %", percent(l)));
            quiet(Text::new(
                format!(
                    "Idle for {}; your own CPU load {load_en}",
                    elapsed(idle.as_secs())
                ),
                format!(
                    "Sin uso desde hace {}; tu carga de CPU {load_es}",
                    elapsed(idle.as_secs())
                ),
            ))
        }
    }
}

fn ramp_rule(s: &Settings, r: &Readings, active: u32, max: u32, cpus: Cpus) -> Outcome {
    let active_after = Duration::from_secs(s.active_after_input_secs);
    let ramp_up = Duration::from_secs(s.ramp_up_after_secs);
    match r.idle {
        Some(idle) if idle >= ramp_up => quiet(Text::new(
            format!(
                "Idle for {}, at least the {} ramp-up",
                elapsed(idle.as_secs()),
                elapsed(ramp_up.as_secs())
            ),
            format!(
                "Sin uso desde hace {}, al menos la rampa de {}",
                elapsed(idle.as_secs()),
                elapsed(ramp_up.as_secs())
            ),
        )),
        _ if active >= max => quiet(Text::new(
            "Nothing to ramp up: the active level is already every CPU on offer",
            "Nada que aumentar: el nivel activo ya es todo lo que se ofrece",
        )),
        Some(idle) if idle >= active_after => fire(
            active,
            Pause::None,
            Reason::RampingUp {
                idle_secs: idle.as_secs(),
                full_in_secs: whole_secs_up(ramp_up - idle),
                cpus: max,
                total: cpus.node,
                machine: cpus.machine,
            },
        ),
        _ => quiet(Text::new("Not idle yet", "Todavía hay actividad reciente")),
    }
}
