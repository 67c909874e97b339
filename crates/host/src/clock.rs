//! The local wall-clock time, for schedules and for labels such as "until 14:00".
//!
//! # Platform behavior
//!
//! - Unix: `localtime_r`, which follows `TZ` and the system's zone database.
//! - Windows: `GetLocalTime`.
//! - Elsewhere: UTC.

/// Local weekday and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalClock {
    /// 0 = Monday ... 6 = Sunday.
    pub weekday: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// The local time now.
pub fn local_now() -> LocalClock {
    imp()
}

#[cfg(unix)]
fn imp() -> LocalClock {
    // SAFETY: time(NULL) has no preconditions; localtime_r writes only into `tm`, which is a
    // plain C struct for which all-zero is a valid value.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return utc();
        }
        LocalClock {
            // tm_wday counts from Sunday = 0.
            weekday: ((tm.tm_wday + 6) % 7) as u8,
            hour: tm.tm_hour as u8,
            minute: tm.tm_min as u8,
            // A leap second (60) is shown as 59.
            second: tm.tm_sec.min(59) as u8,
        }
    }
}

#[cfg(windows)]
fn imp() -> LocalClock {
    use windows_sys::Win32::System::SystemInformation::GetLocalTime;
    // SAFETY: GetLocalTime fills the SYSTEMTIME it is given; all-zero is a valid value.
    let st = unsafe {
        let mut st = std::mem::zeroed();
        GetLocalTime(&mut st);
        st
    };
    LocalClock {
        // wDayOfWeek counts from Sunday = 0.
        weekday: ((st.wDayOfWeek + 6) % 7) as u8,
        hour: st.wHour as u8,
        minute: st.wMinute as u8,
        second: st.wSecond.min(59) as u8,
    }
}

#[cfg(not(any(unix, windows)))]
fn imp() -> LocalClock {
    utc()
}

#[allow(dead_code)] // Unused on Windows.
fn utc() -> LocalClock {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = secs / 86_400;
    let sod = secs % 86_400;
    LocalClock {
        // 1970-01-01 was a Thursday (index 3).
        weekday: ((day + 3) % 7) as u8,
        hour: (sod / 3600) as u8,
        minute: (sod / 60 % 60) as u8,
        second: (sod % 60) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_clock_is_in_range() {
        let c = local_now();
        assert!(
            c.weekday < 7 && c.hour < 24 && c.minute < 60 && c.second < 60,
            "{c:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn agrees_with_the_date_command() {
        // `date` reads the same zone settings; retry across a minute boundary.
        for _ in 0..3 {
            let before = local_now();
            let out = std::process::Command::new("date")
                .arg("+%u %H %M")
                .output()
                .unwrap();
            let after = local_now();
            let f: Vec<u8> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            if before == after || before.minute == after.minute {
                // %u: Monday = 1 ... Sunday = 7.
                assert_eq!(
                    (f[0] - 1, f[1], f[2]),
                    (after.weekday, after.hour, after.minute)
                );
                return;
            }
        }
        panic!("the clock kept crossing minute boundaries");
    }
}

/// A Unix time as a date and time in UTC, to the minute: `2026-12-08 13:05 UTC`. For messages
/// that state when something happens (an expiry), where a Unix number means nothing to a
/// reader and a local time would differ between the machines that show it.
pub fn format_utc(unix_secs: u64) -> String {
    let (year, month, day) = civil_from_days((unix_secs / 86_400) as i64);
    let sod = unix_secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        sod / 3600,
        sod / 60 % 60
    )
}

/// The date of a day counted from 1970-01-01 (negative before it): year, month, day, in the
/// proleptic Gregorian calendar. It counts in 400-year eras (146,097 days each) from
/// 0000-03-01, so that February's leap day ends each year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The inverse of [`civil_from_days`]: the day counted from 1970-01-01 of a date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod format_tests {
    use super::{civil_from_days, days_from_civil, format_utc};

    #[test]
    fn days_and_dates_convert_both_ways() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
        for day in (-800_000..800_000i64).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn unix_times_read_as_utc_dates() {
        for (unix, shown) in [
            (0, "1970-01-01 00:00 UTC"),
            (951_782_400, "2000-02-29 00:00 UTC"),
            (951_868_799, "2000-02-29 23:59 UTC"),
            (1_709_251_199, "2024-02-29 23:59 UTC"),
            (1_796_738_700, "2026-12-08 14:05 UTC"),
            (4_107_542_400, "2100-03-01 00:00 UTC"),
            (253_402_300_799, "9999-12-31 23:59 UTC"),
        ] {
            assert_eq!(format_utc(unix), shown, "{unix}");
        }
    }
}
