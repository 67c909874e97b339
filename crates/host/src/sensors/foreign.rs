//! The macOS and Windows formats the sensors read, parsed by plain functions that build on every
//! OS, so that they are tested here against recorded values.

use std::time::Duration;

use super::{IdleReading, PowerReading, PowerSource};

/// `pmset -g batt` (macOS): the power source on the first line, then one line per battery:
///
/// ```text
/// Now drawing from 'Battery Power'
///  -InternalBattery-0 (id=4653155)<TAB>42%; discharging; 3:12 remaining present: true
/// ```
///
/// (`<TAB>` is a tab character.) A desktop Mac says `'AC Power'` and lists no battery. A UPS shows up as a second entry and is
/// not mistaken for the machine's own battery.
pub fn power_from_pmset(text: &str) -> PowerReading {
    let from = "pmset -g batt";
    let mut lines = text.lines();
    let source = match lines.next().map(str::trim) {
        Some(l) if l.contains("'AC Power'") => PowerSource::Ac,
        Some(l) if l.contains("'Battery Power'") => PowerSource::Battery,
        Some(l) if l.contains("'UPS Power'") => PowerSource::Battery,
        _ => return PowerReading::unknown(format!("{from}: unrecognised output")),
    };
    let percent = lines
        .filter(|l| l.contains("-InternalBattery"))
        .find_map(|l| {
            let (_, rest) = l.split_once('\t').or_else(|| l.split_once(')'))?;
            let pct = rest.trim().split('%').next()?;
            pct.trim().parse::<u16>().ok().map(|p| p.min(100) as u8)
        });
    PowerReading {
        source,
        battery_percent: percent,
        from: from.into(),
    }
}

/// `ioreg -c IOHIDSystem -d 4 -k HIDIdleTime` (macOS): nanoseconds since the last input, as
/// `"HIDIdleTime" = 123456789`. Readable by a daemon outside the owner's session.
pub fn idle_from_ioreg(text: &str) -> IdleReading {
    let ns = text.lines().find_map(|l| {
        let (_, value) = l.split_once("\"HIDIdleTime\" =")?;
        value.trim().parse::<u64>().ok()
    });
    match ns {
        Some(ns) => IdleReading {
            idle: Some(Duration::from_nanos(ns)),
            from: "iokit:HIDIdleTime".into(),
        },
        None => IdleReading::unknown("iokit:HIDIdleTime: not in ioreg's output"),
    }
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

    #[test]
    fn pmset_on_battery_ac_and_desktop() {
        let battery = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=4653155)\t42%; discharging; 3:12 remaining present: true\n";
        let r = power_from_pmset(battery);
        assert_eq!(
            (r.source, r.battery_percent),
            (PowerSource::Battery, Some(42))
        );
        let charging = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=4653155)\t87%; charging; 0:45 remaining present: true\n";
        let r = power_from_pmset(charging);
        assert_eq!((r.source, r.battery_percent), (PowerSource::Ac, Some(87)));
        let desktop = "Now drawing from 'AC Power'\n";
        let r = power_from_pmset(desktop);
        assert_eq!((r.source, r.battery_percent), (PowerSource::Ac, None));
        let ups = "Now drawing from 'UPS Power'\n -Back-UPS ES 700 (id=123)\t91%; discharging; (no estimate) present: true\n";
        let r = power_from_pmset(ups);
        assert_eq!((r.source, r.battery_percent), (PowerSource::Battery, None));
        assert_eq!(power_from_pmset("garbage").source, PowerSource::Unknown);
    }

    #[test]
    fn ioreg_idle_time_is_nanoseconds() {
        let text = "+-o IOHIDSystem  <class IOHIDSystem, id 0x100000483>\n    {\n      \"HIDIdleTime\" = 5123456789\n    }\n";
        assert_eq!(
            idle_from_ioreg(text).idle,
            Some(Duration::from_nanos(5_123_456_789))
        );
        assert_eq!(idle_from_ioreg("{}").idle, None);
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
