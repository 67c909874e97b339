//! The arithmetic of the macOS and Windows backends, apart from their system calls so that it is
//! compiled and tested on every OS.

use std::time::Duration;

use super::{MIN_QUOTA_US, PERIOD_US};

/// A Job Object's `CpuRate` for the whole machine: the unit is 1/100 of a percent of all its
/// logical processors together.
pub const WINDOWS_RATE_FULL: u32 = 10_000;

/// The smallest `CpuRate` Windows accepts (it refuses 0).
pub const WINDOWS_RATE_MIN: u32 = 1;

/// The smallest share of a period a duty cycle lets the tree run: as the kernel's smallest CFS
/// quota, 1 ms of each 100 ms.
pub const MIN_DUTY: f64 = MIN_QUOTA_US as f64 / PERIOD_US as f64;

/// `cpus` cores as a share of `total`, in `[0, 1]`: more than `total` is all of it; zero,
/// negative and NaN are 0, which the callers raise to their minimum. `total` 0 counts as 1.
fn share(cpus: f64, total: u32) -> f64 {
    let share = cpus / f64::from(total.max(1));
    if share.is_nan() {
        0.0
    } else {
        share.clamp(0.0, 1.0)
    }
}

/// The Job Object `CpuRate` that lets a tree use `cpus` cores of a machine with `logical`
/// logical processors: `round(cpus / logical * 10000)`, at least [`WINDOWS_RATE_MIN`] and at
/// most [`WINDOWS_RATE_FULL`].
pub fn windows_cpu_rate(cpus: f64, logical: u32) -> u32 {
    let rate = (share(cpus, logical) * f64::from(WINDOWS_RATE_FULL)).round();
    // The share is in [0, 1], so the cast is exact.
    (rate as u32).clamp(WINDOWS_RATE_MIN, WINDOWS_RATE_FULL)
}

/// How a duty cycle splits `period` to hold a tree to `cpus` cores of `total`: it runs for the
/// first part (`cpus / total` of the period, at least [`MIN_DUTY`], to the nanosecond) and is
/// stopped for the rest. The two always add up to `period`.
///
/// The share assumes the tree could keep every core busy, so a tree with fewer busy processes
/// than cores gets less than `cpus`, never more.
pub fn duty_split(cpus: f64, total: u32, period: Duration) -> (Duration, Duration) {
    let fraction = share(cpus, total).max(MIN_DUTY);
    let nanos = (period.as_nanos() as f64 * fraction).round();
    let run = Duration::from_nanos(nanos as u64).min(period);
    (run, period - run)
}

/// Mach absolute-time ticks (`ri_user_time` of `proc_pid_rusage`) as a duration: `ticks * numer
/// / denom` nanoseconds, with `numer`/`denom` from `mach_timebase_info` (1/1 on Intel, 125/3 on
/// Apple silicon). A zero `denom` (no timebase) counts as 1/1; a result past `u64` nanoseconds
/// saturates.
pub fn mach_ticks_to_duration(ticks: u64, numer: u32, denom: u32) -> Duration {
    let (numer, denom) = if denom == 0 { (1, 1) } else { (numer, denom) };
    let nanos = u128::from(ticks) * u128::from(numer) / u128::from(denom);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// `PRIO_DARWIN_BG` of macOS's `<sys/resource.h>`.
pub const DARWIN_BG: i32 = 0x1000;

/// Whether `getpriority(PRIO_DARWIN_PROCESS, pid)` says the process runs in the Darwin
/// background band: the kernel answers with flags, `PRIO_DARWIN_BG` among them (alone, or with
/// `PRIO_DARWIN_NONUI` for a background process without UI), and 0 for an ordinary process;
/// -1 is an error (no such process, not permitted).
pub fn darwin_background(getpriority: i32) -> bool {
    getpriority != -1 && getpriority & DARWIN_BG != 0
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_background_band_is_read_from_getprioritys_flags() {
        // What macOS answers for a process after setpriority(PRIO_DARWIN_PROCESS, pid,
        // PRIO_DARWIN_BG), with and without PRIO_DARWIN_NONUI, for an ordinary process, and on
        // an error.
        assert!(darwin_background(0x1000));
        assert!(darwin_background(0x1001));
        assert!(!darwin_background(0));
        assert!(!darwin_background(0x0001));
        assert!(!darwin_background(-1));
    }
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_windows_rate_is_the_share_of_the_whole_machine_in_hundredths_of_a_percent() {
        assert_eq!(windows_cpu_rate(1.0, 4), 2_500);
        assert_eq!(windows_cpu_rate(0.5, 8), 625);
        assert_eq!(windows_cpu_rate(1.5, 16), 938, "937.5 rounds up");
        assert_eq!(windows_cpu_rate(1.0, 3), 3_333, "3333.3 rounds down");
        assert_eq!(windows_cpu_rate(2.0, 3), 6_667, "6666.7 rounds up");
        assert_eq!(windows_cpu_rate(0.5, 0), 5_000, "no processor count: one");
    }

    #[test]
    fn the_windows_rate_never_leaves_one_to_ten_thousand() {
        assert_eq!(
            windows_cpu_rate(0.000_01, 64),
            WINDOWS_RATE_MIN,
            "0.0016 rounds up to 1"
        );
        for nothing in [0.0, -0.0, -1.0, f64::NEG_INFINITY, f64::NAN] {
            assert_eq!(windows_cpu_rate(nothing, 8), WINDOWS_RATE_MIN, "{nothing}");
        }
        for all in [8.0, 8.000_1, 100.0, f64::INFINITY] {
            assert_eq!(windows_cpu_rate(all, 8), WINDOWS_RATE_FULL, "{all}");
        }
    }

    #[test]
    fn the_duty_runs_the_share_of_the_period_and_stops_for_the_rest() {
        let period = Duration::from_millis(100);
        assert_eq!(duty_split(1.0, 4, period), (25 * MS, 75 * MS));
        assert_eq!(duty_split(3.0, 4, period), (75 * MS, 25 * MS));
        assert_eq!(
            duty_split(1.0, 3, period),
            (
                Duration::from_nanos(33_333_333),
                Duration::from_nanos(66_666_667)
            )
        );
        assert_eq!(
            duty_split(2.0, 3, period),
            (
                Duration::from_nanos(66_666_667),
                Duration::from_nanos(33_333_333)
            )
        );
        assert_eq!(
            duty_split(0.5, 0, period),
            (50 * MS, 50 * MS),
            "no core count: one"
        );
        assert_eq!(
            duty_split(1.0, 4, Duration::from_secs(1)),
            (250 * MS, 750 * MS)
        );
    }

    #[test]
    fn the_duty_runs_at_least_the_minimum_and_at_most_the_whole_period() {
        let period = Duration::from_millis(100);
        for nothing in [0.0, -1.0, 1e-9, f64::NEG_INFINITY, f64::NAN] {
            assert_eq!(duty_split(nothing, 8, period), (MS, 99 * MS), "{nothing}");
        }
        for all in [8.0, 9.5, f64::INFINITY] {
            assert_eq!(
                duty_split(all, 8, period),
                (period, Duration::ZERO),
                "{all}"
            );
        }
        for cpus in [0.1, 0.7, 1.3, 2.9, 3.999] {
            let (run, stopped) = duty_split(cpus, 4, period);
            assert_eq!(run + stopped, period, "{cpus}");
        }
    }

    #[test]
    fn mach_ticks_are_scaled_by_the_timebase() {
        assert_eq!(
            mach_ticks_to_duration(1_500, 1, 1),
            Duration::from_nanos(1_500)
        );
        assert_eq!(
            mach_ticks_to_duration(24_000_000, 125, 3),
            Duration::from_secs(1),
            "Apple silicon: 24 MHz ticks"
        );
        assert_eq!(mach_ticks_to_duration(7, 125, 3), Duration::from_nanos(291));
        assert_eq!(mach_ticks_to_duration(42, 5, 0), Duration::from_nanos(42));
        assert_eq!(
            mach_ticks_to_duration(u64::MAX, 125, 3),
            Duration::from_nanos(u64::MAX),
            "saturates"
        );
    }
}
