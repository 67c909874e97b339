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
