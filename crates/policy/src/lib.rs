//! How much of this computer Flotilla may lend to the team's Ray cluster
//! right now, and why, in words the owner can read.
//!
//! The crate is pure decision logic: it does no I/O, reads no clock and
//! touches no operating system. The caller measures the machine (idle time,
//! power, load, memory, temperature, running programs), supplies both a
//! monotonic `now` and the local wall-clock time, keeps the owner's manual
//! pause, and acts on the returned [`Decision`]. The same inputs in the
//! same order always give the same decisions, which is what lets the
//! behaviour be pinned down by table and property tests.
//!
//! The key design decision is that every rule proposes a ceiling and the
//! strictest one wins, with a documented precedence only choosing which
//! reason is shown when several are equally strict (see [`Policy`]). Offers
//! go down on the tick a reason appears and go up at most once per ramp-up
//! period, so the owner gets the machine back at once and the cluster never
//! sees the offer flap.
//!
//! ```
//! use std::time::Duration;
//! use flotilla_policy::{Lang, LocalTime, Manual, Pause, Policy, Power, Readings, Settings, Weekday};
//!
//! let mut policy = Policy::new(Settings::default());
//! let mut readings = Readings {
//!     total_cpus: 8,
//!     node_cpus: None,
//!     idle: Some(Duration::from_secs(600)),
//!     power: Power::Ac,
//!     owner_cpu_load: Some(0.1),
//!     available_memory_fraction: Some(0.5),
//!     temperature_c: None,
//!     running_apps: vec![],
//!     local_time: LocalTime::new(Weekday::Monday, 10, 0, 0).unwrap(),
//! };
//! let decision = policy.decide(&readings, &Manual::None, Duration::from_secs(42));
//! assert_eq!((decision.target_cpus, decision.pause), (8, Pause::None));
//! assert_eq!(decision.reason.text(Lang::Es), "Aportando las 8 CPU");
//!
//! readings.idle = Some(Duration::ZERO);
//! let decision = policy.decide(&readings, &Manual::None, Duration::from_secs(43));
//! assert_eq!(decision.target_cpus, 2);
//! assert_eq!(decision.reason.code(), "owner_active");
//! ```

mod manual;
mod memory;
mod policy;
mod readings;
mod reason;
mod settings;
mod time;

pub use manual::Manual;
pub use memory::{MEMORY_FLOOR, MEMORY_STEP, MemoryReadings, memory_ceiling};
pub use policy::{
    BATTERY_RELEASE_MARGIN_PERCENT, Decision, Explanation, Leaving, MEMORY_RELEASE_MARGIN, Pause,
    Policy, Rule, TEMPERATURE_RELEASE_MARGIN_C, Text, Verdict, keeps_awake,
};
pub use readings::{Power, Readings};
pub use reason::{Lang, Reason};
pub use settings::{BatteryMode, KeyKind, OnSleep, SettingError, Settings};
pub use time::{ClockTime, LocalTime, Schedule, TimeWindow, Until, Weekday};
