//! The owner's knobs. Every field has a default, so an empty config is a
//! complete one; unknown fields are rejected so a typo is not silently ignored.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Schedule;

/// What to do while the computer runs on battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatteryMode {
    /// `"finish"`: take no new work, let running tasks end, then stay paused.
    #[default]
    Finish,
    /// `"pause_now"`: stop at once.
    PauseNow,
    /// `"keep"`: keep contributing, but at most `battery_cpus` CPUs.
    Keep,
    /// `"ignore"`: behave as on mains power.
    Ignore,
}

/// What to do when the OS announces sleep or shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSleep {
    /// `"hand_back"`: tell the cluster the node is leaving, so its tasks run elsewhere at once,
    /// and come back right after wake.
    #[default]
    HandBack,
    /// `"ignore"`: let the machine sleep with its tasks; the cluster finds out when its health
    /// checks fail.
    Ignore,
}

/// Throttling settings, usually read from the owner's config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Input (keyboard, mouse, touch) within this many seconds means the
    /// owner is at the computer. Default `60`; accepted `1` to `86400`, and
    /// no more than `ramp_up_after_secs`.
    pub active_after_input_secs: u64,

    /// CPUs offered while the owner is active, busy, or idle for less than
    /// `ramp_up_after_secs`. Default `2`; any number, `0` stepping aside
    /// entirely. Never more than the machine's CPUs minus `keep_cpus_for_owner`,
    /// nor than the node's own CPUs.
    pub active_cpus: u32,

    /// Logical CPUs never offered, even when the owner is away. Default
    /// `0`; any number (as many as the machine has means nothing is offered).
    /// Counted from the machine's CPUs, whatever the node was started with: a
    /// node then lends the smaller of its own CPUs and the machine's others.
    pub keep_cpus_for_owner: u32,

    /// Seconds without input before contributing every CPU; also the least
    /// time between two increases of the offer, whatever their cause, which
    /// is what keeps the offer from flapping. Default `180`; accepted from
    /// `active_after_input_secs` to `86400`.
    pub ramp_up_after_secs: u64,

    /// What to do on battery power: `"finish"` (default: finish running
    /// tasks, then pause), `"pause_now"`, `"keep"` (offer at most
    /// `battery_cpus`) or `"ignore"`. `pause_below_battery_percent`
    /// applies whichever is chosen.
    pub on_battery: BatteryMode,

    /// CPUs offered on battery when `on_battery = "keep"`. Default `1`; any
    /// number, capped like `active_cpus`.
    pub battery_cpus: u32,

    /// On battery below this charge, pause at once. Default `20`; accepted
    /// `0` (never) to `100`.
    pub pause_below_battery_percent: u8,

    /// The owner's own CPU load (a fraction of the whole machine, without
    /// Flotilla's processes) above which the owner counts as busy. Default
    /// `0.5`; accepted above `0` up to `1`.
    pub owner_load_threshold: f64,

    /// Seconds the owner's load must stay above the threshold before the
    /// offer drops to `active_cpus`. Default `10`; accepted `0` to `3600`.
    pub owner_load_trigger_secs: u64,

    /// Seconds the owner's load must stay below the threshold before the
    /// owner stops counting as busy. Default `20`; accepted `0` to `3600`.
    pub owner_load_release_secs: u64,

    /// Below this fraction of memory available, offer no CPUs (without
    /// pausing: the caller shrinks Ray's share). Default `0.15`; accepted
    /// `0` (never) to `0.9`.
    pub min_free_memory_fraction: f64,

    /// Above this temperature in °C, offer no CPUs. Default `90`; accepted
    /// `40` to `120`, or absent (`null` in JSON) for no limit.
    pub max_temperature_c: Option<f64>,

    /// Allowed hours per weekday, e.g. `{ monday = ["09:00-12:00",
    /// "22:00-06:00"] }`; days are `monday`..`sunday` or `mon`..`sun`,
    /// windows `"HH:MM-HH:MM"`, an end before the start wrapping past
    /// midnight, `24:00` allowed as an end. A day left out has no hours of
    /// its own. Default: absent, meaning every hour is allowed.
    pub schedule: Option<Schedule>,

    /// Programs during which Flotilla steps aside (takes no new work and
    /// offers no CPUs), e.g. `["zoom", "teams"]`. Compared with running
    /// process names ignoring case and a trailing `.exe`. Default empty;
    /// names may not be blank.
    pub exclusive_apps: Vec<String>,

    /// What to do when the OS announces sleep or shutdown: `"hand_back"`
    /// (default: the cluster reruns this machine's tasks elsewhere at once,
    /// and the node is back right after wake) or `"ignore"`.
    pub on_sleep: OnSleep,

    /// Keep the machine from sleeping by itself while it is on mains
    /// power, lends CPUs and the owner is away. A sleep the owner asks for
    /// (closing the lid) still happens. Default `false`.
    pub keep_awake: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            active_after_input_secs: 60,
            active_cpus: 2,
            keep_cpus_for_owner: 0,
            ramp_up_after_secs: 180,
            on_battery: BatteryMode::Finish,
            battery_cpus: 1,
            pause_below_battery_percent: 20,
            owner_load_threshold: 0.5,
            owner_load_trigger_secs: 10,
            owner_load_release_secs: 20,
            min_free_memory_fraction: 0.15,
            max_temperature_c: Some(90.0),
            schedule: None,
            exclusive_apps: Vec::new(),
            on_sleep: OnSleep::HandBack,
            keep_awake: false,
        }
    }
}

/// How a `[policy]` key is written in `flotilla.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A whole number (`active_cpus = 2`).
    Whole,
    /// A number that may have a fraction (`owner_load_threshold = 0.5`).
    Fraction,
    /// A word from a list (`on_battery = "finish"`).
    Text,
    /// `true` or `false`.
    Flag,
    /// A list of words (`exclusive_apps = ["zoom"]`).
    List,
    /// The `[policy.schedule]` table.
    Schedule,
}

impl Settings {
    /// Every key of `[policy]`, in the order of the fields, with how it is written: the one
    /// list that the desktop's write-back and its form follow (a test holds it to the fields).
    pub const KEYS: [(&'static str, KeyKind); 16] = [
        ("active_after_input_secs", KeyKind::Whole),
        ("active_cpus", KeyKind::Whole),
        ("keep_cpus_for_owner", KeyKind::Whole),
        ("ramp_up_after_secs", KeyKind::Whole),
        ("on_battery", KeyKind::Text),
        ("battery_cpus", KeyKind::Whole),
        ("pause_below_battery_percent", KeyKind::Whole),
        ("owner_load_threshold", KeyKind::Fraction),
        ("owner_load_trigger_secs", KeyKind::Whole),
        ("owner_load_release_secs", KeyKind::Whole),
        ("min_free_memory_fraction", KeyKind::Fraction),
        ("max_temperature_c", KeyKind::Fraction),
        ("schedule", KeyKind::Schedule),
        ("exclusive_apps", KeyKind::List),
        ("on_sleep", KeyKind::Text),
        ("keep_awake", KeyKind::Flag),
    ];
}

/// One rejected setting, with what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The field's name as written in the config, e.g. `"exclusive_apps[2]"`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SettingError {}

const DAY_SECS: u64 = 86_400;
const HOUR_SECS: u64 = 3_600;

impl Settings {
    /// Checks every field and reports all problems at once, each saying
    /// what is accepted. The policy copes with any values (it never
    /// panics), but invalid ones would not do what their name promises.
    pub fn validate(&self) -> Result<(), Vec<SettingError>> {
        let mut errors = Vec::new();
        let mut reject = |field: &str, message: String| {
            errors.push(SettingError {
                field: field.to_owned(),
                message,
            });
        };

        if !(1..=DAY_SECS).contains(&self.active_after_input_secs) {
            reject(
                "active_after_input_secs",
                format!(
                    "must be from 1 to {DAY_SECS} seconds, not {}",
                    self.active_after_input_secs
                ),
            );
        }
        if self.ramp_up_after_secs > DAY_SECS {
            reject(
                "ramp_up_after_secs",
                format!(
                    "must be at most {DAY_SECS} seconds, not {}",
                    self.ramp_up_after_secs
                ),
            );
        } else if self.ramp_up_after_secs < self.active_after_input_secs {
            reject(
                "ramp_up_after_secs",
                format!(
                    "must be at least active_after_input_secs ({}), not {}: the owner has to count as away before contributing fully",
                    self.active_after_input_secs, self.ramp_up_after_secs
                ),
            );
        }
        if self.pause_below_battery_percent > 100 {
            reject(
                "pause_below_battery_percent",
                format!(
                    "must be from 0 (never) to 100, not {}",
                    self.pause_below_battery_percent
                ),
            );
        }
        let threshold = self.owner_load_threshold;
        if !(threshold.is_finite() && threshold > 0.0 && threshold <= 1.0) {
            reject(
                "owner_load_threshold",
                format!(
                    "must be a fraction above 0 and at most 1 (0.5 means half the machine), not {threshold}"
                ),
            );
        }
        for (field, secs) in [
            ("owner_load_trigger_secs", self.owner_load_trigger_secs),
            ("owner_load_release_secs", self.owner_load_release_secs),
        ] {
            if secs > HOUR_SECS {
                reject(
                    field,
                    format!("must be from 0 to {HOUR_SECS} seconds, not {secs}"),
                );
            }
        }
        let memory = self.min_free_memory_fraction;
        if !(memory.is_finite() && (0.0..=0.9).contains(&memory)) {
            reject(
                "min_free_memory_fraction",
                format!("must be a fraction from 0 (never) to 0.9 (0.15 means 15 %), not {memory}"),
            );
        }
        if let Some(celsius) = self.max_temperature_c
            && !(celsius.is_finite() && (40.0..=120.0).contains(&celsius))
        {
            reject(
                "max_temperature_c",
                format!("must be from 40 to 120 °C, or left out for no limit, not {celsius}"),
            );
        }
        for (index, app) in self.exclusive_apps.iter().enumerate() {
            if app.trim().is_empty() {
                reject(
                    &format!("exclusive_apps[{index}]"),
                    "must name a program, such as \"zoom\"; it is blank".into(),
                );
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_an_empty_config() {
        assert_eq!(Settings::default().validate(), Ok(()));
        let empty: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Settings::default());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::default();
        assert_eq!(s.active_after_input_secs, 60);
        assert_eq!(s.active_cpus, 2);
        assert_eq!(s.keep_cpus_for_owner, 0);
        assert_eq!(s.ramp_up_after_secs, 180);
        assert_eq!(s.on_battery, BatteryMode::Finish);
        assert_eq!(s.pause_below_battery_percent, 20);
        assert_eq!(s.owner_load_threshold, 0.5);
        assert_eq!(s.owner_load_trigger_secs, 10);
        assert_eq!(s.owner_load_release_secs, 20);
        assert_eq!(s.min_free_memory_fraction, 0.15);
        assert_eq!(s.max_temperature_c, Some(90.0));
        assert_eq!(s.schedule, None);
        assert!(s.exclusive_apps.is_empty());
        assert_eq!(s.on_sleep, OnSleep::HandBack);
        assert!(!s.keep_awake);
    }

    #[test]
    fn the_list_of_keys_is_the_fields() {
        let json = serde_json::to_value(Settings::default()).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys: Vec<&str> = Settings::KEYS.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        let mut sorted = fields.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        // Each kind is what the field holds.
        for (key, kind) in Settings::KEYS {
            let v = &json[key];
            let fits = match kind {
                KeyKind::Whole => v.is_u64(),
                KeyKind::Fraction => v.is_f64(),
                KeyKind::Text => v.is_string(),
                KeyKind::Flag => v.is_boolean(),
                KeyKind::List => v.is_array(),
                KeyKind::Schedule => v.is_null() || v.is_object(),
            };
            assert!(fits, "{key}: {kind:?} but the default is {v}");
        }
    }

    #[test]
    fn partial_config_keeps_other_defaults() {
        let s: Settings = serde_json::from_str(
            r#"{"on_battery": "keep", "battery_cpus": 3, "exclusive_apps": ["zoom"],
                "schedule": {"mon": ["09:00-17:00"]}, "max_temperature_c": null}"#,
        )
        .unwrap();
        assert_eq!(s.on_battery, BatteryMode::Keep);
        assert_eq!(s.battery_cpus, 3);
        assert_eq!(s.max_temperature_c, None);
        assert_eq!(s.active_cpus, 2);
        assert!(s.schedule.is_some());
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_and_values_are_rejected() {
        let typo = serde_json::from_str::<Settings>(r#"{"active_cpu": 2}"#).unwrap_err();
        assert!(typo.to_string().contains("active_cpu"), "{typo}");
        let mode = serde_json::from_str::<Settings>(r#"{"on_battery": "sleep"}"#).unwrap_err();
        assert!(mode.to_string().contains("pause_now"), "{mode}");
        let sleep = serde_json::from_str::<Settings>(r#"{"on_sleep": "stay"}"#).unwrap_err();
        assert!(sleep.to_string().contains("hand_back"), "{sleep}");
        let s: Settings =
            serde_json::from_str(r#"{"on_sleep": "ignore", "keep_awake": true}"#).unwrap();
        assert_eq!((s.on_sleep, s.keep_awake), (OnSleep::Ignore, true));
    }

    #[test]
    fn validation_reports_every_problem_with_what_is_accepted() {
        let s = Settings {
            active_after_input_secs: 0,
            ramp_up_after_secs: 90_000,
            pause_below_battery_percent: 101,
            owner_load_threshold: f64::NAN,
            owner_load_trigger_secs: 4000,
            owner_load_release_secs: 4000,
            min_free_memory_fraction: 0.95,
            max_temperature_c: Some(20.0),
            exclusive_apps: vec!["zoom".into(), "  ".into()],
            ..Settings::default()
        };
        let errors = s.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "active_after_input_secs",
                "ramp_up_after_secs",
                "pause_below_battery_percent",
                "owner_load_threshold",
                "owner_load_trigger_secs",
                "owner_load_release_secs",
                "min_free_memory_fraction",
                "max_temperature_c",
                "exclusive_apps[1]",
            ]
        );
        for error in &errors {
            assert!(error.message.contains("must"), "{error}");
        }
    }

    #[test]
    fn ramp_up_cannot_come_before_idle() {
        let s = Settings {
            active_after_input_secs: 120,
            ramp_up_after_secs: 60,
            ..Settings::default()
        };
        let errors = s.validate().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "ramp_up_after_secs");
        assert!(
            errors[0]
                .to_string()
                .starts_with("ramp_up_after_secs: must be at least")
        );
    }

    #[test]
    fn boundaries_are_accepted() {
        let s = Settings {
            active_after_input_secs: 1,
            ramp_up_after_secs: 1,
            pause_below_battery_percent: 100,
            owner_load_threshold: 1.0,
            owner_load_trigger_secs: 3600,
            owner_load_release_secs: 0,
            min_free_memory_fraction: 0.0,
            max_temperature_c: Some(40.0),
            ..Settings::default()
        };
        assert_eq!(s.validate(), Ok(()));
    }
}
