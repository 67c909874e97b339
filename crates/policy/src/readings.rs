//! What the caller measured this tick.

use std::time::Duration;

use serde::Serialize;

use crate::time::LocalTime;

/// Where the computer draws its power from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Power {
    /// Mains power (also a desktop without a battery).
    Ac,
    /// Running on battery, with its charge in percent when known.
    Battery { percent: Option<u8> },
    /// Could not be read. Treated as mains power: machines whose power
    /// source cannot be read are nearly always desktops, and treating them
    /// as on battery would stop them contributing for good.
    Unknown,
}

/// One tick's measurements.
///
/// Every reading that can fail to be measured is optional, and each
/// unknown has a fixed, documented meaning, so a missing sensor changes the
/// decision predictably instead of failing it. Non-finite numbers count as
/// unknown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readings {
    /// Logical CPUs on the machine. `0` (unknown) means nothing is offered.
    /// `keep_cpus_for_owner` counts from these.
    pub total_cpus: u32,
    /// The most CPUs this node can lend: the count its Ray node was started with
    /// (`--cpus`). Every offer is clamped to it, and the reasons state it instead of the
    /// machine's count when it is the smaller. `None`: as many as the machine has.
    pub node_cpus: Option<u32>,
    /// Time since the owner's last keyboard, mouse or touch input.
    /// Unknown counts as "in use": the polite guess.
    pub idle: Option<Duration>,
    pub power: Power,
    /// The owner's CPU load: the machine's load minus Flotilla's own
    /// process tree, as a fraction `0..=1` of the whole machine over the
    /// caller's measuring window. Unknown counts as not busy, since idle
    /// time already covers the owner's presence.
    pub owner_cpu_load: Option<f64>,
    /// Available memory as a fraction `0..=1` of the total. Unknown counts
    /// as enough.
    pub available_memory_fraction: Option<f64>,
    /// The hottest relevant sensor in °C. Unknown counts as cool enough:
    /// many machines expose no sensor, and the operating system throttles
    /// on its own long before damage.
    pub temperature_c: Option<f64>,
    /// Names of running processes, compared with `exclusive_apps`.
    pub running_apps: Vec<String>,
    /// Local wall-clock time, for the schedule and for labels.
    pub local_time: LocalTime,
}
