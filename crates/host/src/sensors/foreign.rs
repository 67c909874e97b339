//! The macOS and Windows formats the sensors read, parsed by plain functions that build on every
//! OS, so that they are tested here against recorded values.

use std::time::Duration;

use super::{CpuTimes, IdleReading, PowerReading, PowerSource, TICKS_PER_SECOND};

/// One battery as IOKit's power sources describe it (macOS, through `starship-battery`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatteryStatus {
    /// The machine runs on it: no external power is connected (`ExternalConnected` false).
    pub discharging: bool,
    /// Its charge, 0 to 1.
    pub fraction: f32,
}

/// The power reading of a Mac from its batteries: none at all is a desktop (on AC); any
/// battery discharging means the machine runs on battery; otherwise it is on its charger. The
/// charge is the mean of the batteries'.
pub fn power_from_batteries(batteries: &[BatteryStatus], from: &str) -> PowerReading {
    if batteries.is_empty() {
        return PowerReading {
            source: PowerSource::Ac,
            battery_percent: None,
            from: format!("{from}: no battery: desktop"),
        };
    }
    let mean = batteries
        .iter()
        .map(|b| f64::from(b.fraction).clamp(0.0, 1.0))
        .sum::<f64>()
        / batteries.len() as f64;
    PowerReading {
        source: if batteries.iter().any(|b| b.discharging) {
            PowerSource::Battery
        } else {
            PowerSource::Ac
        },
        battery_percent: mean.is_finite().then(|| (mean * 100.0).round() as u8),
        from: from.into(),
    }
}

/// `HIDIdleTime` of IOKit's `IOHIDSystem` (macOS): nanoseconds since the last input, a number
/// on current systems and 8 bytes of data on some older ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HidIdle {
    Number(i64),
    Data(Vec<u8>),
    /// Not readable, and why.
    Missing(&'static str),
}

pub fn idle_from_hid(value: HidIdle) -> IdleReading {
    const FROM: &str = "iokit:HIDIdleTime";
    let ns = match value {
        HidIdle::Number(ns) => u64::try_from(ns).ok(),
        HidIdle::Data(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .ok()
            .map(u64::from_ne_bytes),
        HidIdle::Missing(why) => return IdleReading::unknown(format!("{FROM}: {why}")),
    };
    match ns {
        Some(ns) => IdleReading {
            idle: Some(Duration::from_nanos(ns)),
            from: FROM.into(),
        },
        None => IdleReading::unknown(format!("{FROM}: not a time")),
    }
}

/// `GetSystemTimes` (Windows): idle, kernel and user time of all CPUs in 100 ns units, where
/// kernel time includes the idle time.
pub fn cpu_times_from_system_times(idle: u64, kernel: u64, user: u64) -> CpuTimes {
    let per_tick = 10_000_000 / TICKS_PER_SECOND;
    CpuTimes {
        user: user / per_tick,
        system: kernel.saturating_sub(idle) / per_tick,
        idle: idle / per_tick,
        ..CpuTimes::default()
    }
}

/// `host_statistics(HOST_CPU_LOAD_INFO)` (macOS): ticks of all CPUs in user, system, idle and
/// nice state, in that order, counted at 100 Hz (the `CLK_TCK` of macOS, the same unit as
/// [`TICKS_PER_SECOND`]). The counters are 32 bits and wrap; a pair of samples across a wrap
/// reads as no load figure ([`super::busy_fraction`] returns `None`), not a wrong one.
pub fn cpu_times_from_host_ticks(ticks: [u32; 4]) -> CpuTimes {
    CpuTimes {
        user: u64::from(ticks[0]),
        system: u64::from(ticks[1]),
        idle: u64::from(ticks[2]),
        nice: u64::from(ticks[3]),
        ..CpuTimes::default()
    }
}

/// The running programs' names as the exclusive-apps rule compares them: Windows' `.exe`
/// suffix dropped (`zoom.exe` is `zoom`), sorted, without duplicates or empty names.
pub fn program_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names
        .into_iter()
        .map(|n| {
            let cut = n
                .len()
                .checked_sub(4)
                .filter(|&i| n.is_char_boundary(i) && n[i..].eq_ignore_ascii_case(".exe"));
            match cut {
                Some(i) => n[..i].to_owned(),
                None => n,
            }
        })
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// `GetSystemPowerStatus` (Windows): `ACLineStatus` 0 offline, 1 online, 255 unknown;
/// `BatteryFlag` 128 means no system battery, 255 unknown; `BatteryLifePercent` 0-100 or 255.
pub fn power_from_system_power_status(ac_line: u8, battery_flag: u8, percent: u8) -> PowerReading {
    let from = "GetSystemPowerStatus";
    let no_battery = battery_flag != 255 && battery_flag & 128 != 0;
    let battery_percent = (percent <= 100 && !no_battery).then_some(percent);
    let source = match ac_line {
        1 => PowerSource::Ac,
        0 if no_battery => PowerSource::Ac,
        0 => PowerSource::Battery,
        // A machine without a battery whose line status is unknown is a desktop.
        _ if no_battery => PowerSource::Ac,
        _ => PowerSource::Unknown,
    };
    PowerReading {
        source,
        battery_percent,
        from: if no_battery {
            format!("{from}: no battery: desktop")
        } else {
            from.into()
        },
    }
}

/// Idle time from `GetTickCount()` and `LASTINPUTINFO.dwTime` (Windows), both milliseconds since
/// boot in a `u32` that wraps every 49.7 days: the difference is taken with wrapping arithmetic,
/// so a wrap between the two readings gives the right small value instead of an underflow.
pub fn idle_from_ticks(now_ms: u32, last_input_ms: u32) -> IdleReading {
    IdleReading {
        idle: Some(Duration::from_millis(u64::from(
            now_ms.wrapping_sub(last_input_ms),
        ))),
        from: "GetLastInputInfo".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn battery(discharging: bool, fraction: f32) -> BatteryStatus {
        BatteryStatus {
            discharging,
            fraction,
        }
    }

    #[test]
    fn a_mac_on_battery_on_its_charger_and_a_desktop() {
        let r = power_from_batteries(&[battery(true, 0.42)], "iokit");
        assert_eq!(
            (r.source, r.battery_percent),
            (PowerSource::Battery, Some(42))
        );
        // Charging, full, or held at 80% by the battery's health setting: all on AC.
        let r = power_from_batteries(&[battery(false, 0.8)], "iokit");
        assert_eq!((r.source, r.battery_percent), (PowerSource::Ac, Some(80)));
        let r = power_from_batteries(&[], "iokit");
        assert_eq!((r.source, r.battery_percent), (PowerSource::Ac, None));
        assert!(r.from.contains("desktop"), "{}", r.from);
        // A charge over 100% (IOKit reports it when the capacity estimate is stale) is 100%.
        let r = power_from_batteries(&[battery(false, 1.04)], "iokit");
        assert_eq!(r.battery_percent, Some(100));
        // Two batteries: on battery if either drains; the mean charge.
        let r = power_from_batteries(&[battery(false, 0.9), battery(true, 0.5)], "iokit");
        assert_eq!(
            (r.source, r.battery_percent),
            (PowerSource::Battery, Some(70))
        );
        assert_eq!(
            power_from_batteries(&[battery(true, f32::NAN)], "iokit").battery_percent,
            None
        );
    }

    #[test]
    fn hid_idle_time_is_nanoseconds_as_a_number_or_eight_bytes() {
        assert_eq!(
            idle_from_hid(HidIdle::Number(5_123_456_789)).idle,
            Some(Duration::from_nanos(5_123_456_789))
        );
        let bytes = 7_000_000_000u64.to_ne_bytes().to_vec();
        assert_eq!(
            idle_from_hid(HidIdle::Data(bytes)).idle,
            Some(Duration::from_secs(7))
        );
        assert_eq!(idle_from_hid(HidIdle::Data(vec![1, 2, 3])).idle, None);
        assert_eq!(idle_from_hid(HidIdle::Number(-1)).idle, None);
        let missing = idle_from_hid(HidIdle::Missing("no IOHIDSystem service"));
        assert_eq!(missing.idle, None);
        assert!(missing.from.contains("no IOHIDSystem service"));
    }

    #[test]
    fn system_times_become_ticks_with_idle_taken_out_of_kernel_time() {
        // Idle, kernel (with idle) and user time in 100 ns units, of the size a 4-CPU machine
        // reports after a day up.
        let t = cpu_times_from_system_times(3_125_400_000_000, 3_402_100_000_000, 512_300_000_000);
        // 100 ns is 1/100,000 of a tick of 1/100 s.
        assert_eq!(t.idle, 31_254_000);
        assert_eq!(t.system, 2_767_000);
        assert_eq!(t.user, 5_123_000);
        assert_eq!(t.total(), 31_254_000 + 2_767_000 + 5_123_000);
        // A kernel time below the idle time (never seen, but not trusted) is no system time.
        assert_eq!(cpu_times_from_system_times(10, 5, 0).system, 0);
    }

    #[test]
    fn host_ticks_are_user_system_idle_nice() {
        let t = cpu_times_from_host_ticks([4_000, 1_000, 90_000, 500]);
        assert_eq!(
            (t.user, t.system, t.idle, t.nice),
            (4_000, 1_000, 90_000, 500)
        );
        let later = cpu_times_from_host_ticks([4_100, 1_050, 90_800, 550]);
        let f = super::super::busy_fraction(&t, &later).unwrap();
        assert!((f - 0.2).abs() < 1e-9, "{f}");
        // Across a wrap of a 32-bit counter the pair gives no figure rather than a wrong one.
        let wrapped = cpu_times_from_host_ticks([10, 1_050, 90_800, 550]);
        assert_eq!(super::super::busy_fraction(&later, &wrapped), None);
    }

    #[test]
    fn program_names_lose_the_exe_suffix_and_duplicates() {
        let names = program_names(
            [
                "Zoom.exe",
                "zoom.us",
                "python.EXE",
                "python",
                "",
                ".exe",
                "ré.exe",
            ]
            .map(String::from),
        );
        assert_eq!(names, ["Zoom", "python", "ré", "zoom.us"]);
    }

    #[test]
    fn system_power_status_values() {
        let on_battery = power_from_system_power_status(0, 0, 42);
        assert_eq!(
            (on_battery.source, on_battery.battery_percent),
            (PowerSource::Battery, Some(42))
        );
        let charging = power_from_system_power_status(1, 8, 80);
        assert_eq!(
            (charging.source, charging.battery_percent),
            (PowerSource::Ac, Some(80))
        );
        let desktop = power_from_system_power_status(1, 128, 255);
        assert_eq!(
            (desktop.source, desktop.battery_percent),
            (PowerSource::Ac, None)
        );
        assert!(desktop.from.contains("desktop"));
        let unknown = power_from_system_power_status(255, 255, 255);
        assert_eq!(
            (unknown.source, unknown.battery_percent),
            (PowerSource::Unknown, None)
        );
    }

    #[test]
    fn tick_counts_wrap_after_49_days() {
        assert_eq!(
            idle_from_ticks(10_000, 4_000).idle,
            Some(Duration::from_millis(6_000))
        );
        // Input 1 s before the counter wrapped, read 2 s after it.
        assert_eq!(
            idle_from_ticks(2_000, u32::MAX - 999).idle,
            Some(Duration::from_millis(3_000))
        );
    }
}
