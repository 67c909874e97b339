//! Pauses the owner asks for from the menu.

use std::time::Duration;

use serde::Serialize;

use crate::time::{ClockTime, LocalTime, SECS_PER_DAY};

/// The owner's manual override, kept by the caller between ticks (and
/// reset to [`Manual::None`] on "resume").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Manual {
    /// No override.
    #[default]
    None,
    /// Paused until the monotonic `deadline`, shown to the owner as
    /// `ends_at`. Once `now` reaches the deadline it no longer applies, so
    /// the caller need not clear it on time.
    PausedUntil {
        deadline: Duration,
        ends_at: LocalTime,
    },
    /// Paused until the owner resumes; never ends by itself.
    Paused,
    /// Take no new work, let running tasks end, then stay paused until the
    /// owner resumes.
    FinishThenPause,
}

impl Manual {
    /// "Pause for 1 hour", pressed at monotonic `now` and local time `local`.
    ///
    /// The pause ends on the minute its label shows (at most 59 s early),
    /// so "until 14:00" never turns out to mean 14:00:40.
    pub fn for_duration(now: Duration, local: LocalTime, length: Duration) -> Manual {
        let ends_at = local.plus(length);
        let past_the_minute = Duration::from_secs(u64::from(ends_at.seconds_of_day() % 60));
        let ends_at = LocalTime::from_seconds(
            ends_at.weekday(),
            ends_at.seconds_of_day() - ends_at.seconds_of_day() % 60,
        )
        .unwrap_or(ends_at);
        Manual::PausedUntil {
            deadline: now.saturating_add(length.saturating_sub(past_the_minute)),
            ends_at,
        }
    }

    /// "Pause until tomorrow 08:00": until the next time the clock reads
    /// `at`. Pressed in the evening that is tomorrow morning; pressed after
    /// midnight it is this morning, which is what people mean by "until
    /// tomorrow morning" at 01:00. Pressed exactly at `at`, a day later.
    ///
    /// The deadline is measured on the monotonic clock, so a daylight-saving
    /// change overnight shifts the real end by that hour; the label keeps
    /// saying `at`.
    pub fn until_next(now: Duration, local: LocalTime, at: ClockTime) -> Manual {
        let target = u32::from(at.hour()) * 3600 + u32::from(at.minute()) * 60;
        let away = match (target + SECS_PER_DAY - local.seconds_of_day()) % SECS_PER_DAY {
            0 => SECS_PER_DAY,
            secs => secs,
        };
        let away = Duration::from_secs(u64::from(away));
        Manual::PausedUntil {
            deadline: now.saturating_add(away),
            ends_at: local.plus(away),
        }
    }

    /// "Pause until I resume".
    pub fn indefinite() -> Manual {
        Manual::Paused
    }

    /// "Finish current tasks, then pause".
    pub fn finish_then_pause() -> Manual {
        Manual::FinishThenPause
    }

    /// Whether this override holds at monotonic `now`.
    pub fn is_active(&self, now: Duration) -> bool {
        match self {
            Manual::None => false,
            Manual::PausedUntil { deadline, .. } => now < *deadline,
            Manual::Paused | Manual::FinishThenPause => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Weekday;

    fn local(day: Weekday, hour: u8, minute: u8, second: u8) -> LocalTime {
        LocalTime::new(day, hour, minute, second).unwrap()
    }

    const T0: Duration = Duration::from_secs(1_000);

    #[test]
    fn one_hour_ends_on_the_labelled_minute() {
        let manual = Manual::for_duration(
            T0,
            local(Weekday::Monday, 13, 0, 40),
            Duration::from_secs(3600),
        );
        assert_eq!(
            manual,
            Manual::PausedUntil {
                deadline: T0 + Duration::from_secs(3600 - 40),
                ends_at: local(Weekday::Monday, 14, 0, 0),
            }
        );
        assert!(manual.is_active(T0 + Duration::from_secs(3559)));
        assert!(!manual.is_active(T0 + Duration::from_secs(3560)));
    }

    #[test]
    fn duration_crossing_midnight_moves_the_weekday() {
        let Manual::PausedUntil { ends_at, .. } = Manual::for_duration(
            T0,
            local(Weekday::Sunday, 23, 30, 0),
            Duration::from_secs(3600),
        ) else {
            panic!("expected a timed pause");
        };
        assert_eq!(ends_at, local(Weekday::Monday, 0, 30, 0));
    }

    #[test]
    fn until_tomorrow_morning() {
        let eight = ClockTime::new(8, 0).unwrap();
        let evening = Manual::until_next(T0, local(Weekday::Tuesday, 22, 0, 0), eight);
        assert_eq!(
            evening,
            Manual::PausedUntil {
                deadline: T0 + Duration::from_secs(10 * 3600),
                ends_at: local(Weekday::Wednesday, 8, 0, 0),
            }
        );
        let after_midnight = Manual::until_next(T0, local(Weekday::Wednesday, 1, 0, 0), eight);
        assert_eq!(
            after_midnight,
            Manual::PausedUntil {
                deadline: T0 + Duration::from_secs(7 * 3600),
                ends_at: local(Weekday::Wednesday, 8, 0, 0),
            }
        );
        let on_the_dot = Manual::until_next(T0, local(Weekday::Wednesday, 8, 0, 0), eight);
        assert_eq!(
            on_the_dot,
            Manual::PausedUntil {
                deadline: T0 + Duration::from_secs(86_400),
                ends_at: local(Weekday::Thursday, 8, 0, 0),
            }
        );
    }

    #[test]
    fn indefinite_and_finish_never_end_by_themselves() {
        let forever = Duration::from_secs(u64::MAX / 2);
        assert!(Manual::indefinite().is_active(forever));
        assert!(Manual::finish_then_pause().is_active(forever));
        assert!(!Manual::None.is_active(T0));
    }

    #[test]
    fn huge_lengths_saturate_instead_of_overflowing() {
        let manual = Manual::for_duration(
            Duration::MAX,
            local(Weekday::Monday, 0, 0, 0),
            Duration::MAX,
        );
        assert!(manual.is_active(Duration::from_secs(0)));
    }
}
