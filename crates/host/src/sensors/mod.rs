//! Machine readings for the throttle: power source, memory, CPU load, running programs and how
//! long the owner has been away (idle time).
//!
//! The throttle decides how hard Flotilla may work from what the owner's machine is doing, so
//! every reading says where it came from (`from`), and a reading the OS cannot give is a value
//! ([`PowerSource::Unknown`], `None`), never a panic or an error: the policy decides what to do
//! with "unknown", not this crate.
//!
//! [`Sensors`] is the facade. [`Sensors::new`] reads the real system; [`Sensors::with_root`]
//! reads a directory laid out like `/` (`<root>/proc`, `<root>/sys/class/power_supply`), which
//! is how tests point it at recorded fixture trees. [`Sensors::with_display`] reads the real
//! system with an explicit X display instead of `DISPLAY`.
//!
//! CPU figures are in clock ticks of [`TICKS_PER_SECOND`], the unit of Linux's `/proc/stat` and
//! `/proc/<pid>/stat` (`USER_HZ`); the other systems' counters are converted to it, so the
//! machine's load and Flotilla's own share compare directly: [`owner_busy_fraction`] is "machine
//! load minus Flotilla's own tree".
//!
//! # Platform behavior
//!
//! - Linux: power from `/sys/class/power_supply` (see [`kernel::power_from_dir`] for how
//!   mains, batteries, peripherals and UPSes are told apart), memory from `/proc/meminfo`, CPU
//!   from `/proc/stat` and `/proc/<pid>/stat`, running programs from `/proc/*/comm`: the files
//!   `sysinfo` would read, read directly so that [`Sensors::with_root`] can point them at
//!   recorded fixture trees. Idle time from the X display's screen saver extension (libX11 and
//!   libXss loaded at run time, the connection kept open), else from terminal access times under
//!   `/dev` as BOINC does on headless machines, else unknown ([`NO_IDLE_SOURCE`]). Wayland
//!   (`ext-idle-notify-v1`, Mutter's `IdleMonitor`) and logind's `IdleSinceHint` are later
//!   additions: they need D-Bus or a Wayland client.
//! - macOS: power and battery from IOKit's power sources (`starship-battery`), idle time from
//!   IOKit's `HIDIdleTime`, which unlike `CGEventSource` a daemon can read, the machine's CPU
//!   times from `host_statistics(HOST_CPU_LOAD_INFO)`; memory, each process's CPU time and the
//!   running programs from the process table through `sysinfo`. No tool is spawned.
//! - Windows: power from `GetSystemPowerStatus`, idle time from `GetLastInputInfo`
//!   (`GetTickCount() - dwTime` in wrapping u32 arithmetic: both wrap every 49.7 days; a
//!   service in session 0 cannot see the desktop's input, so the desktop app feeds it), the
//!   machine's CPU times from `GetSystemTimes`; memory, each process's CPU time and the running
//!   programs through `sysinfo` (`GlobalMemoryStatusEx`, `NtQuerySystemInformation`).
//! - Elsewhere: every reading is unknown, `from` = [`UNSUPPORTED`].
//!
//! The macOS and Windows values are turned into readings by plain functions in [`foreign`], which
//! build everywhere so that recorded values are tested on any machine.
//!
//! [`IS_SUPPORTED`] says at compile time whether the readings can be anything but unknown, as
//! `sysinfo::IS_SUPPORTED_SYSTEM` does.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(target_os = "linux")]
mod idle;
pub mod kernel;

/// The `from` of an idle reading with neither a display nor a terminal to read.
#[cfg(target_os = "linux")]
pub use idle::NO_IDLE_SOURCE;
/// The `from` of an idle reading with neither a display nor a terminal to read.
#[cfg(not(target_os = "linux"))]
pub const NO_IDLE_SOURCE: &str = "no display and no terminals";

pub mod foreign;
#[cfg(any(target_os = "macos", windows))]
mod table;

crate::os_module!();

#[cfg(test)]
mod tests;

/// Whether this OS gives real readings; where it is `false`, every reading is unknown.
pub const IS_SUPPORTED: bool = imp::IS_SUPPORTED;

/// The `from` of every reading on an OS that has no sensors yet.
pub const UNSUPPORTED: &str = "unsupported on this OS";

/// The unit of every CPU time here: clock ticks of 1/100 s, as Linux's `/proc` counts them
/// (`USER_HZ`). Other systems' counters are converted to it.
pub const TICKS_PER_SECOND: u64 = 100;

/// Where the machine's power comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerSource {
    /// Mains power (a desktop, a laptop on its charger, a desktop whose UPS is on line).
    Ac,
    /// A battery the machine itself runs on: a laptop's, or a UPS that is discharging.
    Battery,
    Unknown,
}

/// A power reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerReading {
    pub source: PowerSource,
    /// Charge of the machine's own battery (or of the discharging UPS), 0 to 100, when known.
    pub battery_percent: Option<u8>,
    /// What the reading was made from, e.g. `"sysfs:/sys/class/power_supply/BAT0"`.
    pub from: String,
}

impl PowerReading {
    pub fn unknown(from: impl Into<String>) -> PowerReading {
        PowerReading {
            source: PowerSource::Unknown,
            battery_percent: None,
            from: from.into(),
        }
    }
}

/// A memory reading, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryReading {
    pub total_bytes: Option<u64>,
    /// Memory that can be given to new work without swapping (`MemAvailable` on Linux).
    pub available_bytes: Option<u64>,
    pub from: String,
}

impl MemoryReading {
    pub fn unknown(from: impl Into<String>) -> MemoryReading {
        MemoryReading {
            total_bytes: None,
            available_bytes: None,
            from: from.into(),
        }
    }

    /// `available / total`, from 0 to 1; `None` when either is unknown or the total is 0.
    pub fn available_fraction(&self) -> Option<f64> {
        let total = self.total_bytes.filter(|&t| t > 0)?;
        let available = self.available_bytes?.min(total);
        Some(available as f64 / total as f64)
    }
}

/// The machine's cumulative CPU times since boot, summed over all CPUs, in clock ticks.
///
/// `guest` and `guest_nice` are left out: the kernel already counts them in `user` and `nice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Every tick, busy or not.
    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }

    /// Ticks spent running something. `iowait` counts as idle (the CPU was free to run other
    /// work); `steal` counts as busy (the CPU was not ours to use).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }
}

/// The fraction of all CPUs that was busy between two samples, from 0 to 1.
///
/// `None` when no time passed or the counters went backwards (the samples are from different
/// boots, or in the wrong order).
pub fn busy_fraction(earlier: &CpuTimes, later: &CpuTimes) -> Option<f64> {
    let total = later.total().checked_sub(earlier.total())?;
    let busy = later.busy().checked_sub(earlier.busy())?;
    if total == 0 {
        return None;
    }
    Some((busy as f64 / total as f64).min(1.0))
}

/// The fraction of all CPUs that was busy with work other than Flotilla's between two samples:
/// the machine's busy ticks minus `own_earlier..own_later`, the ticks of Flotilla's own tree
/// (see [`Sensors::processes_cpu`]), over all ticks. From 0 to 1.
///
/// A process of the tree that exits between the samples takes its ticks with it, so the tree's
/// delta can come out smaller than it was, or negative: a negative delta counts as 0 (which
/// overstates the owner's load for one sample rather than understating it).
pub fn owner_busy_fraction(
    earlier: &CpuTimes,
    later: &CpuTimes,
    own_earlier: u64,
    own_later: u64,
) -> Option<f64> {
    let total = later.total().checked_sub(earlier.total())?;
    let busy = later.busy().checked_sub(earlier.busy())?;
    if total == 0 {
        return None;
    }
    let own = own_later.saturating_sub(own_earlier);
    Some((busy.saturating_sub(own) as f64 / total as f64).min(1.0))
}

/// A sample of the machine's CPU times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuReading {
    pub times: Option<CpuTimes>,
    pub from: String,
}

impl CpuReading {
    pub fn unknown(from: impl Into<String>) -> CpuReading {
        CpuReading {
            times: None,
            from: from.into(),
        }
    }
}

/// The CPU time one process (all its threads) has used, user plus system, in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessCpuReading {
    pub pid: u32,
    /// `None` when the process does not exist (any more) or the OS cannot tell.
    pub ticks: Option<u64>,
    pub from: String,
}

impl ProcessCpuReading {
    pub fn unknown(pid: u32, from: impl Into<String>) -> ProcessCpuReading {
        ProcessCpuReading {
            pid,
            ticks: None,
            from: from.into(),
        }
    }
}

/// The CPU time a set of processes has used, summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessesCpuReading {
    /// Sum over the processes that could be read; `None` when none could (on an unsupported OS,
    /// or when every process is gone).
    pub ticks: Option<u64>,
    /// How many of the processes were read.
    pub counted: usize,
    /// How many were asked for (duplicates counted once).
    pub asked: usize,
    pub from: String,
}

/// The names of the programs running on the machine, for "exclusive apps" (a game, a video
/// call) that make Flotilla step aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsReading {
    /// Sorted, without duplicates. `None` when the OS cannot tell, which is not the same as
    /// "nothing is running".
    pub names: Option<Vec<String>>,
    pub from: String,
}

impl AppsReading {
    pub fn unknown(from: impl Into<String>) -> AppsReading {
        AppsReading {
            names: None,
            from: from.into(),
        }
    }

    /// Whether a program called `name` is running; `None` when unknown.
    ///
    /// Linux keeps only the first [`kernel::COMM_MAX_BYTES`] bytes of a program's name, so a
    /// longer `name` matches its cut-down form.
    pub fn contains(&self, name: &str) -> Option<bool> {
        let names = self.names.as_ref()?;
        let short = kernel::comm_of(name);
        Some(names.iter().any(|n| n == name || n == short))
    }
}

/// How long since the owner last used the machine (keyboard, mouse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleReading {
    /// `None` when no source could tell.
    pub idle: Option<Duration>,
    /// What the reading was made from, e.g. `"x11-screensaver::0"` or
    /// `"tty-atime:/dev/pts/3"`.
    pub from: String,
}

impl IdleReading {
    pub fn unknown(from: impl Into<String>) -> IdleReading {
        IdleReading {
            idle: None,
            from: from.into(),
        }
    }
}

/// The facade over the machine's readings. Cheap to create and to keep: it holds paths and, once
/// idle time was read from an X display, that display's connection (shared by clones). Every
/// method reads afresh.
#[derive(Debug, Clone)]
pub struct Sensors {
    paths: Paths,
    /// What the OS's backend keeps between readings (an X connection, a process table).
    os: imp::Source,
}

/// Where the readings come from: the real system, or a tree laid out like it. Only Linux reads
/// files; the other systems answer system calls.
#[derive(Debug, Clone)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Paths {
    proc: PathBuf,
    power_supply: PathBuf,
    dev: PathBuf,
}

impl Default for Sensors {
    fn default() -> Self {
        Sensors::new()
    }
}

impl Sensors {
    /// Reads the real system, and idle time from the X display named by `DISPLAY` (read now),
    /// if any.
    pub fn new() -> Sensors {
        Sensors::at(Path::new("/"), std::env::var("DISPLAY").ok())
    }

    /// Reads the real system, and idle time from the X display `display` (e.g. `":0"`)
    /// whatever `DISPLAY` says.
    pub fn with_display(display: impl Into<String>) -> Sensors {
        Sensors::at(Path::new("/"), Some(display.into()))
    }

    /// Reads `<root>/proc`, `<root>/sys/class/power_supply` and `<root>/dev` instead of the real
    /// ones (only where [`IS_SUPPORTED`]; elsewhere every reading stays unknown), and no X
    /// display, so that a test reads the same on a desktop as on a server.
    pub fn with_root(root: impl AsRef<Path>) -> Sensors {
        Sensors::at(root.as_ref(), None)
    }

    fn at(root: &Path, display: Option<String>) -> Sensors {
        Sensors {
            paths: Paths {
                proc: root.join("proc"),
                power_supply: root.join("sys/class/power_supply"),
                dev: root.join("dev"),
            },
            os: imp::Source::new(display),
        }
    }

    pub fn power(&self) -> PowerReading {
        imp::power(&self.paths, &self.os)
    }

    pub fn memory(&self) -> MemoryReading {
        imp::memory(&self.paths, &self.os)
    }

    pub fn cpu_times(&self) -> CpuReading {
        imp::cpu_times(&self.paths, &self.os)
    }

    pub fn process_cpu(&self, pid: u32) -> ProcessCpuReading {
        imp::processes_cpu(&self.paths, &self.os, &[pid])
            .pop()
            .unwrap_or_else(|| ProcessCpuReading::unknown(pid, UNSUPPORTED))
    }

    /// The CPU time of `pids` summed, e.g. Flotilla's own tree. Processes that are gone are left
    /// out of the sum (see [`ProcessesCpuReading::counted`]).
    pub fn processes_cpu(&self, pids: impl IntoIterator<Item = u32>) -> ProcessesCpuReading {
        let mut pids: Vec<u32> = pids.into_iter().collect();
        pids.sort_unstable();
        pids.dedup();
        let mut sum = 0u64;
        let mut counted = 0;
        for reading in imp::processes_cpu(&self.paths, &self.os, &pids) {
            if let Some(ticks) = reading.ticks {
                sum = sum.saturating_add(ticks);
                counted += 1;
            }
        }
        ProcessesCpuReading {
            ticks: (counted > 0).then_some(sum),
            counted,
            asked: pids.len(),
            from: imp::processes_from(&self.paths),
        }
    }

    pub fn running_apps(&self) -> AppsReading {
        imp::running_apps(&self.paths, &self.os)
    }

    /// The time since the owner's last input (see the module documentation for each OS).
    pub fn idle(&self) -> IdleReading {
        imp::idle(&self.paths, &self.os)
    }
}
