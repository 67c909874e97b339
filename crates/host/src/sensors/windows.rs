//! Windows: power from `GetSystemPowerStatus`, idle time from `GetLastInputInfo` (meaningful in
//! the owner's session only: a service in session 0 gets the desktop app's feed instead), and
//! memory from `GlobalMemoryStatusEx`. CPU times and the process list are later additions
//! (`GetSystemTimes`, the Toolhelp snapshot) and read as unknown.

use std::path::Path;

use windows_sys::Win32::System::Power::{GetSystemPowerStatus, SYSTEM_POWER_STATUS};
use windows_sys::Win32::System::SystemInformation::{
    GetTickCount, GlobalMemoryStatusEx, MEMORYSTATUSEX,
};
use windows_sys::Win32::UI::Input::KeyboardAndMouse::{GetLastInputInfo, LASTINPUTINFO};

use super::{IdleReading, MemoryReading, PowerReading, foreign};

#[path = "unsupported.rs"]
mod fallback;
pub use fallback::{IdleSource, cpu_times, process_cpu, processes_from, running_apps};

pub const IS_SUPPORTED: bool = true;

pub fn power(_power_supply: &Path) -> PowerReading {
    // SAFETY: the struct is plain data (all-zero is valid) and outlives the call.
    let mut st: SYSTEM_POWER_STATUS = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { GetSystemPowerStatus(&mut st) } == 0 {
        return PowerReading::unknown("GetSystemPowerStatus failed");
    }
    foreign::power_from_system_power_status(st.ACLineStatus, st.BatteryFlag, st.BatteryLifePercent)
}

pub fn idle(_dev: &Path, _source: &IdleSource) -> IdleReading {
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

pub fn memory(_proc: &Path) -> MemoryReading {
    // SAFETY: plain data; dwLength is set below, as the call requires.
    let mut m: MEMORYSTATUSEX = unsafe { std::mem::zeroed() };
    m.dwLength = std::mem::size_of::<MEMORYSTATUSEX>() as u32;
    // SAFETY: `m` is initialised with its size and outlives the call.
    if unsafe { GlobalMemoryStatusEx(&mut m) } == 0 {
        return MemoryReading::unknown("GlobalMemoryStatusEx failed");
    }
    MemoryReading {
        total_bytes: Some(m.ullTotalPhys),
        available_bytes: Some(m.ullAvailPhys),
        from: "GlobalMemoryStatusEx".into(),
    }
}
