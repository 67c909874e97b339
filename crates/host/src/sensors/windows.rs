//! Windows: power from `GetSystemPowerStatus`, idle time from `GetLastInputInfo` (meaningful in
//! the owner's session only: a service in session 0 gets the desktop app's feed instead), the
//! machine's CPU times from `GetSystemTimes`, and memory, each process's CPU time and the
//! running programs from the process table ([`super::table`]).

use windows_sys::Win32::Foundation::FILETIME;
use windows_sys::Win32::System::Power::{GetSystemPowerStatus, SYSTEM_POWER_STATUS};
use windows_sys::Win32::System::SystemInformation::GetTickCount;
use windows_sys::Win32::System::Threading::GetSystemTimes;
use windows_sys::Win32::UI::Input::KeyboardAndMouse::{GetLastInputInfo, LASTINPUTINFO};

use super::{CpuReading, IdleReading, Paths, PowerReading, foreign};

pub const IS_SUPPORTED: bool = true;

/// What Windows keeps between readings: the process table.
pub use super::table::Table as Source;
pub use super::table::{memory, processes_cpu, processes_from, running_apps};

pub fn power(_: &Paths, _: &Source) -> PowerReading {
    // SAFETY: the struct is plain data (all-zero is valid) and outlives the call.
    let mut st: SYSTEM_POWER_STATUS = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { GetSystemPowerStatus(&mut st) } == 0 {
        return PowerReading::unknown("GetSystemPowerStatus failed");
    }
    foreign::power_from_system_power_status(st.ACLineStatus, st.BatteryFlag, st.BatteryLifePercent)
}

pub fn idle(_: &Paths, _: &Source) -> IdleReading {
    let mut info = LASTINPUTINFO {
        cbSize: std::mem::size_of::<LASTINPUTINFO>() as u32,
        dwTime: 0,
    };
    // SAFETY: `info` is initialised with its size, as the call requires, and outlives it.
    if unsafe { GetLastInputInfo(&mut info) } == 0 {
        return IdleReading::unknown("GetLastInputInfo failed (no interactive session)");
    }
    // SAFETY: no preconditions.
    let now = unsafe { GetTickCount() };
    foreign::idle_from_ticks(now, info.dwTime)
}

pub fn cpu_times(_: &Paths, _: &Source) -> CpuReading {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut idle, mut kernel, mut user) = (zero, zero, zero);
    // SAFETY: three valid, writable FILETIMEs that outlive the call.
    if unsafe { GetSystemTimes(&mut idle, &mut kernel, &mut user) } == 0 {
        return CpuReading::unknown("GetSystemTimes failed");
    }
    let value = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    CpuReading {
        times: Some(foreign::cpu_times_from_system_times(
            value(idle),
            value(kernel),
            value(user),
        )),
        from: "GetSystemTimes".into(),
    }
}
