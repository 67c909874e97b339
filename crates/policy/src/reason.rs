//! Why a decision came out the way it did, in words for the person at the
//! computer and in codes for programs.

use serde::{Deserialize, Serialize};

use crate::time::Until;

/// Language of user-facing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    Es,
}

impl Lang {
    /// Reads a language tag or POSIX locale such as `"es"`, `"es-ES"` or
    /// `"es_ES.UTF-8"`; `None` for languages without a translation.
    pub fn from_locale(locale: &str) -> Option<Lang> {
        let primary = locale
            .split(['-', '_', '.', '@'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "es" => Some(Lang::Es),
            _ => None,
        }
    }
}

/// The single reason shown with a [`Decision`](crate::Decision).
///
/// Serialised with its [`code`](Reason::code) under `"code"` next to the
/// variant's fields, so programs can match on the code and render their
/// own text if they wish.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// The OS announced sleep: the work goes back to the cluster first.
    GoingToSleep,
    /// The OS announced a shutdown, restart or log-out.
    ShuttingDown,
    /// Paused from the menu until a set time.
    PausedUntil { until: Until },
    /// Paused from the menu until the person resumes.
    PausedIndefinitely,
    /// Asked from the menu to finish running tasks and then pause.
    Finishing,
    /// Outside the schedule's allowed hours; `until` is when they reopen,
    /// `None` if the schedule allows no hours at all.
    OutsideHours { until: Option<Until> },
    /// A program from `exclusive_apps` is running (named as configured).
    ExclusiveApp { app: String },
    /// Running on battery; the percentage when known.
    OnBattery { percent: Option<u8> },
    /// On battery and below `pause_below_battery_percent` (the charge is
    /// unknown only when it stopped being reported after going low).
    BatteryLow { percent: Option<u8> },
    /// Above `max_temperature_c`.
    TooHot { celsius: i32 },
    /// Available memory below `min_free_memory_fraction`.
    LowMemory { free_percent: u8 },
    /// Keyboard or mouse used recently (or idle time unknown).
    OwnerActive,
    /// The owner's own programs keep the CPU busy.
    OwnerBusy,
    /// Idle, but not yet for `ramp_up_after_secs`; `cpus` of `total` will be
    /// offered in `full_in_secs`.
    RampingUp {
        idle_secs: u64,
        full_in_secs: u64,
        cpus: u32,
        total: u32,
        machine: u32,
    },
    /// Held at `cpus` because the offer went up less than a ramp-up period
    /// ago; it may rise in `in_secs`.
    Settling {
        cpus: u32,
        total: u32,
        machine: u32,
        in_secs: u64,
    },
    /// Offering `cpus` of the `total` this node can lend, the rest of the
    /// machine kept for the owner.
    Contributing { cpus: u32, total: u32, machine: u32 },
}

// In every variant with CPU counts, `total` is the most this node lends (the
// CPUs its Ray node was started with, or the machine's when fewer) and
// `machine` the machine's logical CPUs. The text names the node's count, and
// says "of this node" when it is below the machine's.

impl Reason {
    /// A stable identifier, for logs, the status API and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::GoingToSleep => "going_to_sleep",
            Reason::ShuttingDown => "shutting_down",
            Reason::PausedUntil { .. } => "paused_until",
            Reason::PausedIndefinitely => "paused_indefinitely",
            Reason::Finishing => "finishing",
            Reason::OutsideHours { .. } => "outside_hours",
            Reason::ExclusiveApp { .. } => "exclusive_app",
            Reason::OnBattery { .. } => "on_battery",
            Reason::BatteryLow { .. } => "battery_low",
            Reason::TooHot { .. } => "too_hot",
            Reason::LowMemory { .. } => "low_memory",
            Reason::OwnerActive => "owner_active",
            Reason::OwnerBusy => "owner_busy",
            Reason::RampingUp { .. } => "ramping_up",
            Reason::Settling { .. } => "settling",
            Reason::Contributing { .. } => "contributing",
        }
    }

    /// One short sentence for the tray menu or `flotilla status`.
    pub fn text(&self, lang: Lang) -> String {
        match lang {
            Lang::En => self.english(),
            Lang::Es => self.spanish(),
        }
    }

    fn english(&self) -> String {
        match self {
            Reason::GoingToSleep => "Going to sleep".into(),
            Reason::ShuttingDown => "Shutting down".into(),
            Reason::PausedUntil { until } => {
                format!("Paused by you until {}", until.text(Lang::En))
            }
            Reason::PausedIndefinitely => "Paused by you until you resume".into(),
            Reason::Finishing => "Finishing current tasks, then pausing".into(),
            Reason::OutsideHours { until: Some(until) } => {
                format!("Outside allowed hours until {}", until.text(Lang::En))
            }
            Reason::OutsideHours { until: None } => "Outside allowed hours".into(),
            Reason::ExclusiveApp { app } => format!("{app} is running"),
            Reason::OnBattery { percent: Some(p) } => format!("On battery ({p}%)"),
            Reason::OnBattery { percent: None } => "On battery".into(),
            Reason::BatteryLow { percent: Some(p) } => format!("Battery low ({p}%)"),
            Reason::BatteryLow { percent: None } => "Battery low".into(),
            Reason::TooHot { celsius } => format!("Too hot ({celsius} °C)"),
            Reason::LowMemory { free_percent } => format!("Low memory ({free_percent}% free)"),
            Reason::OwnerActive => "You're using this computer".into(),
            Reason::OwnerBusy => "Busy with your own programs".into(),
            Reason::RampingUp {
                idle_secs,
                full_in_secs,
                cpus,
                total,
                machine,
            } => format!(
                "Idle for {}, contributing {} in {}",
                elapsed(*idle_secs),
                share_en(*cpus, *total, *machine),
                remaining(*full_in_secs)
            ),
            Reason::Settling {
                cpus: 0, in_secs, ..
            } => format!("Resuming in {}", remaining(*in_secs)),
            Reason::Settling {
                cpus,
                total,
                machine,
                in_secs,
            } => format!(
                "Contributing {}, more in {}",
                share_en(*cpus, *total, *machine),
                remaining(*in_secs)
            ),
            Reason::Contributing {
                cpus,
                total,
                machine,
            } if cpus >= total => {
                format!("Contributing {}", share_en(*cpus, *total, *machine))
            }
            Reason::Contributing {
                cpus,
                total,
                machine,
            } => format!(
                "Contributing {} (keeping {} for you)",
                share_en(*cpus, *total, *machine),
                kept(*cpus, *total, *machine)
            ),
        }
    }

    fn spanish(&self) -> String {
        match self {
            Reason::GoingToSleep => "Entrando en reposo".into(),
            Reason::ShuttingDown => "Apagándose".into(),
            Reason::PausedUntil { until } => {
                format!("Pausado por ti hasta {}", until.text(Lang::Es))
            }
            Reason::PausedIndefinitely => "Pausado por ti hasta que lo reanudes".into(),
            Reason::Finishing => "Terminando las tareas en curso antes de pausar".into(),
            Reason::OutsideHours { until: Some(until) } => {
                format!("Fuera del horario permitido hasta {}", until.text(Lang::Es))
            }
            Reason::OutsideHours { until: None } => "Fuera del horario permitido".into(),
            Reason::ExclusiveApp { app } => format!("{app} está en ejecución"),
            Reason::OnBattery { percent: Some(p) } => format!("Con batería ({p} %)"),
            Reason::OnBattery { percent: None } => "Con batería".into(),
            Reason::BatteryLow { percent: Some(p) } => format!("Batería baja ({p} %)"),
            Reason::BatteryLow { percent: None } => "Batería baja".into(),
            Reason::TooHot { celsius } => format!("Temperatura demasiado alta ({celsius} °C)"),
            Reason::LowMemory { free_percent } => {
                format!("Poca memoria libre ({free_percent} %)")
            }
            Reason::OwnerActive => "Estás usando este ordenador".into(),
            Reason::OwnerBusy => "Ocupado con tus propios programas".into(),
            Reason::RampingUp {
                idle_secs,
                full_in_secs,
                cpus,
                total,
                machine,
            } => format!(
                "Sin uso desde hace {}; aportará {} dentro de {}",
                elapsed(*idle_secs),
                share_es(*cpus, *total, *machine),
                remaining(*full_in_secs)
            ),
            Reason::Settling {
                cpus: 0, in_secs, ..
            } => format!("Se reanuda dentro de {}", remaining(*in_secs)),
            Reason::Settling {
                cpus,
                total,
                machine,
                in_secs,
            } => format!(
                "Aportando {}; más dentro de {}",
                share_es(*cpus, *total, *machine),
                remaining(*in_secs)
            ),
            Reason::Contributing {
                cpus,
                total,
                machine,
            } if cpus >= total => {
                format!("Aportando {}", share_es(*cpus, *total, *machine))
            }
            Reason::Contributing {
                cpus,
                total,
                machine,
            } => {
                let kept = kept(*cpus, *total, *machine);
                let reserved = if kept == 1 { "reservada" } else { "reservadas" };
                format!(
                    "Aportando {} ({kept} {reserved} para ti)",
                    share_es(*cpus, *total, *machine)
                )
            }
        }
    }
}

fn cpu_word_en(count: u32) -> &'static str {
    if count == 1 { "CPU" } else { "CPUs" }
}

/// The machine's CPUs left to the owner: all it has but what the node takes.
fn kept(cpus: u32, total: u32, machine: u32) -> u32 {
    machine.max(total).saturating_sub(cpus)
}

/// "all 10 CPUs" or "6 of 10 CPUs"; for a node started with fewer CPUs than
/// the machine has, "all 4 CPUs of this node" or "2 of this node's 4 CPUs".
fn share_en(cpus: u32, total: u32, machine: u32) -> String {
    let node = total < machine;
    match (cpus >= total, total, node) {
        (true, 1, false) => "its only CPU".into(),
        (true, _, false) => format!("all {total} CPUs"),
        (false, _, false) => format!("{cpus} of {total} {}", cpu_word_en(total)),
        (true, 1, true) => "this node's only CPU".into(),
        (true, _, true) => format!("all {total} CPUs of this node"),
        (false, _, true) => format!("{cpus} of this node's {total} {}", cpu_word_en(total)),
    }
}

/// "las 10 CPU" or "6 de 10 CPU" (acronyms do not take a plural in Spanish);
/// for a node started with fewer CPUs than the machine has, "las 4 CPU de
/// este nodo" or "2 de las 4 CPU de este nodo".
fn share_es(cpus: u32, total: u32, machine: u32) -> String {
    let node = total < machine;
    match (cpus >= total, total, node) {
        (true, 1, false) => "su única CPU".into(),
        (true, _, false) => format!("las {total} CPU"),
        (false, _, false) => format!("{cpus} de {total} CPU"),
        (true, 1, true) => "la única CPU de este nodo".into(),
        (true, _, true) => format!("las {total} CPU de este nodo"),
        (false, 1, true) => format!("{cpus} de la única CPU de este nodo"),
        (false, _, true) => format!("{cpus} de las {total} CPU de este nodo"),
    }
}

/// Time already spent, rounded down so "idle for 1 min" is never early.
pub(crate) fn elapsed(secs: u64) -> String {
    duration(secs, false)
}

/// Time still to wait, rounded up so "in 2 min" never promises too soon.
pub(crate) fn remaining(secs: u64) -> String {
    duration(secs, true)
}

/// "45 s", "3 min", "2 h", "1 h 5 min": the same symbols in both languages.
fn duration(secs: u64, round_up: bool) -> String {
    if secs < 60 {
        return format!("{secs} s");
    }
    let minutes = if round_up {
        secs.div_ceil(60)
    } else {
        secs / 60
    };
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{LocalTime, Weekday};

    fn until(hour: u8, minute: u8) -> Until {
        Until::new(
            LocalTime::new(Weekday::Monday, hour, minute, 0).unwrap(),
            60,
        )
    }

    /// One of every variant; `variant_index` below fails to compile when a
    /// variant is added without extending this list.
    fn every_variant() -> Vec<Reason> {
        vec![
            Reason::GoingToSleep,
            Reason::ShuttingDown,
            Reason::PausedUntil {
                until: until(14, 0),
            },
            Reason::PausedIndefinitely,
            Reason::Finishing,
            Reason::OutsideHours {
                until: Some(until(8, 0)),
            },
            Reason::ExclusiveApp { app: "zoom".into() },
            Reason::OnBattery { percent: Some(42) },
            Reason::BatteryLow { percent: Some(12) },
            Reason::TooHot { celsius: 93 },
            Reason::LowMemory { free_percent: 9 },
            Reason::OwnerActive,
            Reason::OwnerBusy,
            Reason::RampingUp {
                idle_secs: 60,
                full_in_secs: 120,
                cpus: 10,
                total: 10,
                machine: 10,
            },
            Reason::Settling {
                cpus: 2,
                total: 10,
                machine: 10,
                in_secs: 90,
            },
            Reason::Contributing {
                cpus: 10,
                total: 10,
                machine: 10,
            },
        ]
    }

    fn variant_index(reason: &Reason) -> usize {
        match reason {
            Reason::PausedUntil { .. } => 0,
            Reason::PausedIndefinitely => 1,
            Reason::Finishing => 2,
            Reason::OutsideHours { .. } => 3,
            Reason::ExclusiveApp { .. } => 4,
            Reason::OnBattery { .. } => 5,
            Reason::BatteryLow { .. } => 6,
            Reason::TooHot { .. } => 7,
            Reason::LowMemory { .. } => 8,
            Reason::OwnerActive => 9,
            Reason::OwnerBusy => 10,
            Reason::RampingUp { .. } => 11,
            Reason::Settling { .. } => 12,
            Reason::Contributing { .. } => 13,
            Reason::GoingToSleep => 14,
            Reason::ShuttingDown => 15,
        }
    }

    /// Variants whose wording depends on their fields, in every wording.
    fn every_wording() -> Vec<Reason> {
        let mut all = every_variant();
        all.extend([
            Reason::OutsideHours { until: None },
            Reason::OnBattery { percent: None },
            Reason::BatteryLow { percent: None },
            Reason::RampingUp {
                idle_secs: 75,
                full_in_secs: 105,
                cpus: 6,
                total: 10,
                machine: 10,
            },
            Reason::Settling {
                cpus: 0,
                total: 10,
                machine: 10,
                in_secs: 30,
            },
            Reason::Contributing {
                cpus: 6,
                total: 10,
                machine: 10,
            },
            Reason::Contributing {
                cpus: 1,
                total: 1,
                machine: 1,
            },
        ]);
        all.extend(node_wordings().into_iter().map(|(reason, _, _)| reason));
        all
    }

    /// Every wording of a node started with fewer CPUs than the machine has.
    fn node_wordings() -> Vec<(Reason, &'static str, &'static str)> {
        let contributing = |cpus, total, machine| Reason::Contributing {
            cpus,
            total,
            machine,
        };
        let ramping = |cpus, total, machine| Reason::RampingUp {
            idle_secs: 65,
            full_in_secs: 115,
            cpus,
            total,
            machine,
        };
        let settling = |cpus, total, machine| Reason::Settling {
            cpus,
            total,
            machine,
            in_secs: 90,
        };
        vec![
            (
                contributing(1, 1, 2),
                "Contributing this node's only CPU",
                "Aportando la única CPU de este nodo",
            ),
            (
                contributing(4, 4, 10),
                "Contributing all 4 CPUs of this node",
                "Aportando las 4 CPU de este nodo",
            ),
            (
                contributing(4, 6, 10),
                "Contributing 4 of this node's 6 CPUs (keeping 6 for you)",
                "Aportando 4 de las 6 CPU de este nodo (6 reservadas para ti)",
            ),
            (
                contributing(0, 1, 2),
                "Contributing 0 of this node's 1 CPU (keeping 2 for you)",
                "Aportando 0 de la única CPU de este nodo (2 reservadas para ti)",
            ),
            (
                ramping(1, 1, 2),
                "Idle for 1 min, contributing this node's only CPU in 2 min",
                "Sin uso desde hace 1 min; aportará la única CPU de este nodo dentro de 2 min",
            ),
            (
                ramping(4, 4, 10),
                "Idle for 1 min, contributing all 4 CPUs of this node in 2 min",
                "Sin uso desde hace 1 min; aportará las 4 CPU de este nodo dentro de 2 min",
            ),
            (
                settling(2, 4, 10),
                "Contributing 2 of this node's 4 CPUs, more in 2 min",
                "Aportando 2 de las 4 CPU de este nodo; más dentro de 2 min",
            ),
            (
                settling(1, 2, 8),
                "Contributing 1 of this node's 2 CPUs, more in 2 min",
                "Aportando 1 de las 2 CPU de este nodo; más dentro de 2 min",
            ),
        ]
    }

    #[test]
    fn a_node_below_the_machines_count_is_named_with_its_own() {
        for (reason, en, es) in node_wordings() {
            assert_eq!(reason.text(Lang::En), en, "{reason:?}");
            assert_eq!(reason.text(Lang::Es), es, "{reason:?}");
        }
    }

    #[test]
    fn every_variant_is_listed_once() {
        let mut seen: Vec<usize> = every_variant().iter().map(variant_index).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn every_reason_has_spanish_text_different_from_english() {
        for reason in every_wording() {
            let en = reason.text(Lang::En);
            let es = reason.text(Lang::Es);
            assert!(!en.is_empty() && !es.is_empty(), "{reason:?}");
            assert_ne!(en, es, "{reason:?} has no Spanish text");
        }
    }

    #[test]
    fn codes_are_distinct_snake_case_and_match_serialisation() {
        let mut codes = Vec::new();
        for reason in every_variant() {
            let code = reason.code();
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            let json = serde_json::to_value(&reason).unwrap();
            assert_eq!(json["code"], code, "{reason:?}");
            codes.push(code);
        }
        let count = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), count);
    }

    #[test]
    fn texts_from_the_issue() {
        let cases: [(Reason, &str, &str); 9] = [
            (
                Reason::OwnerActive,
                "You're using this computer",
                "Estás usando este ordenador",
            ),
            (
                Reason::OnBattery { percent: Some(42) },
                "On battery (42%)",
                "Con batería (42 %)",
            ),
            (
                Reason::PausedUntil {
                    until: until(14, 0),
                },
                "Paused by you until 14:00",
                "Pausado por ti hasta las 14:00",
            ),
            (
                Reason::PausedIndefinitely,
                "Paused by you until you resume",
                "Pausado por ti hasta que lo reanudes",
            ),
            (
                Reason::OutsideHours {
                    until: Some(until(8, 0)),
                },
                "Outside allowed hours until 08:00",
                "Fuera del horario permitido hasta las 08:00",
            ),
            (
                Reason::ExclusiveApp { app: "zoom".into() },
                "zoom is running",
                "zoom está en ejecución",
            ),
            (
                Reason::Contributing {
                    cpus: 10,
                    total: 10,
                    machine: 10,
                },
                "Contributing all 10 CPUs",
                "Aportando las 10 CPU",
            ),
            (
                Reason::Contributing {
                    cpus: 6,
                    total: 10,
                    machine: 10,
                },
                "Contributing 6 of 10 CPUs (keeping 4 for you)",
                "Aportando 6 de 10 CPU (4 reservadas para ti)",
            ),
            (
                Reason::RampingUp {
                    idle_secs: 65,
                    full_in_secs: 115,
                    cpus: 10,
                    total: 10,
                    machine: 10,
                },
                "Idle for 1 min, contributing all 10 CPUs in 2 min",
                "Sin uso desde hace 1 min; aportará las 10 CPU dentro de 2 min",
            ),
        ];
        for (reason, en, es) in cases {
            assert_eq!(reason.text(Lang::En), en);
            assert_eq!(reason.text(Lang::Es), es);
        }
    }

    #[test]
    fn durations_round_towards_the_polite_side() {
        assert_eq!(elapsed(59), "59 s");
        assert_eq!(elapsed(119), "1 min");
        assert_eq!(remaining(61), "2 min");
        assert_eq!(remaining(3600), "1 h");
        assert_eq!(remaining(3601), "1 h 1 min");
        assert_eq!(elapsed(3 * 3600 + 5 * 60 + 59), "3 h 5 min");
    }

    #[test]
    fn locales() {
        assert_eq!(Lang::from_locale("es_ES.UTF-8"), Some(Lang::Es));
        assert_eq!(Lang::from_locale("ES-mx"), Some(Lang::Es));
        assert_eq!(Lang::from_locale("en"), Some(Lang::En));
        assert_eq!(Lang::from_locale("fr_FR"), None);
        assert_eq!(Lang::from_locale(""), None);
    }
}
