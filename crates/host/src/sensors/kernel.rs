//! Readers for the text the Linux kernel exposes under `/proc` and `/sys/class/power_supply`.
//!
//! They take paths and text rather than assuming `/`, and use only `std`, so they also read
//! recorded trees and text on any OS (the tests' fixtures). [`Sensors`](super::Sensors) uses
//! them on Linux.
//!
//! # Platform behavior
//!
//! The formats are Linux's; the code runs everywhere.

use std::path::Path;

use super::{
    AppsReading, CpuReading, CpuTimes, MemoryReading, PowerReading, PowerSource, ProcessCpuReading,
};

/// How many bytes of a program's name the kernel keeps in `comm` (`TASK_COMM_LEN` minus the
/// terminating NUL).
pub const COMM_MAX_BYTES: usize = 15;

/// `name` as the kernel's `comm` shows it: its first [`COMM_MAX_BYTES`] bytes, cut back to a
/// character boundary (the kernel cuts bytes, and a name cut mid-character is not valid UTF-8
/// anyway, so it could never be compared).
pub fn comm_of(name: &str) -> &str {
    let mut end = name.len().min(COMM_MAX_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// One entry of `/sys/class/power_supply`.
#[derive(Debug)]
struct Supply {
    from: String,
    kind: String,
    online: Option<bool>,
    capacity: Option<u8>,
    status: Option<String>,
    scope: Option<String>,
}

impl Supply {
    fn read(dir: &Path) -> Option<Supply> {
        let attr = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        Some(Supply {
            from: format!("sysfs:{}", dir.display()),
            kind: attr("type")?,
            online: attr("online").map(|s| s != "0"),
            // Some firmware reports a little over 100 on a full battery.
            capacity: attr("capacity")
                .and_then(|s| s.parse::<u32>().ok())
                .map(|c| c.min(100) as u8),
            status: attr("status"),
            scope: attr("scope"),
        })
    }

    /// A mouse's, keyboard's or headset's battery: it says nothing about the machine's power.
    fn is_peripheral(&self) -> bool {
        self.scope.as_deref() == Some("Device")
    }

    /// A supply that feeds the machine from outside: the charger, or a USB(-C) port that
    /// charges it (`USB`, `USB_C`, `USB_PD`, ...).
    fn is_external(&self) -> bool {
        self.kind == "Mains" || self.kind.starts_with("USB")
    }

    fn status_is(&self, wanted: &[&str]) -> bool {
        self.status.as_deref().is_some_and(|s| wanted.contains(&s))
    }
}

/// The machine's power source from a directory laid out like `/sys/class/power_supply` (one
/// directory per supply holding `type`, `online`, `capacity`, `status`, `scope`).
///
/// Supplies with `scope` = `Device` (a wireless mouse's battery) are ignored. Then, first match
/// wins:
/// 1. a `Mains` or `USB*` supply that is online: [`PowerSource::Ac`];
/// 2. a `Battery` that is `Discharging`: [`PowerSource::Battery`];
/// 3. a `UPS` that is `Discharging`: [`PowerSource::Battery`] with the UPS's charge: the
///    desktop is running on the UPS during a power cut, which the owner cares about as much as
///    a laptop off its charger;
/// 4. a `Battery` that is `Charging`, `Full` or `Not charging` (held below a charge limit while
///    plugged in): [`PowerSource::Ac`];
/// 5. a `Battery` and a `Mains` or `USB*` supply that says it is offline:
///    [`PowerSource::Battery`];
/// 6. a `Battery` and nothing else to go by: [`PowerSource::Unknown`];
/// 7. no battery of its own: the machine is running, so it is on mains,
///    [`PowerSource::Ac`]: from the UPS if there is one (on line), otherwise from
///    `"no battery: desktop"`. A UPS is never taken for a laptop's battery.
///
/// `battery_percent` is the mean charge of the machine's batteries (laptops can have two), or
/// the UPS's charge in case 3. A directory that cannot be read gives [`PowerSource::Unknown`]:
/// a missing `/sys` proves nothing about the machine.
pub fn power_from_dir(dir: &Path) -> PowerReading {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return PowerReading::unknown(format!("sysfs:{} ({e})", dir.display())),
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // read_dir's order is the file system's; sorting makes BAT0 come before BAT1 every time.
    paths.sort();
    let supplies: Vec<Supply> = paths
        .iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| Supply::read(p))
        .filter(|s| !s.is_peripheral())
        .collect();
    classify(&supplies)
}

fn classify(supplies: &[Supply]) -> PowerReading {
    let external: Vec<&Supply> = supplies.iter().filter(|s| s.is_external()).collect();
    let batteries: Vec<&Supply> = supplies.iter().filter(|s| s.kind == "Battery").collect();
    let ups: Vec<&Supply> = supplies.iter().filter(|s| s.kind == "UPS").collect();
    let capacities: Vec<u32> = batteries
        .iter()
        .filter_map(|b| b.capacity)
        .map(u32::from)
        .collect();
    let percent = (!capacities.is_empty())
        .then(|| (capacities.iter().sum::<u32>() / capacities.len() as u32) as u8);
    let reading = |source, battery_percent, from: &str| PowerReading {
        source,
        battery_percent,
        from: from.to_owned(),
    };

    if let Some(m) = external.iter().find(|s| s.online == Some(true)) {
        return reading(PowerSource::Ac, percent, &m.from);
    }
    if let Some(b) = batteries.iter().find(|b| b.status_is(&["Discharging"])) {
        return reading(PowerSource::Battery, percent, &b.from);
    }
    if let Some(u) = ups.iter().find(|u| u.status_is(&["Discharging"])) {
        return reading(PowerSource::Battery, u.capacity, &u.from);
    }
    if let Some(b) = batteries
        .iter()
        .find(|b| b.status_is(&["Charging", "Full", "Not charging"]))
    {
        return reading(PowerSource::Ac, percent, &b.from);
    }
    if let Some(b) = batteries.first() {
        let source = if external.is_empty() {
            PowerSource::Unknown
        } else {
            PowerSource::Battery
        };
        return reading(source, percent, &b.from);
    }
    match ups.first() {
        Some(u) => reading(PowerSource::Ac, None, &u.from),
        None => reading(PowerSource::Ac, None, "no battery: desktop"),
    }
}

/// Memory from the text of `/proc/meminfo`.
///
/// `MemAvailable` is the kernel's own estimate of what new work can use without swapping. Kernels
/// before 3.14 lack it; then `MemFree + Buffers + Cached` stands in, and `from` says so.
pub fn memory_from_meminfo(text: &str, from: &str) -> MemoryReading {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            match parts.next() {
                Some("kB") => value.checked_mul(1024),
                None => Some(value),
                Some(_) => None,
            }
        })
    };
    let total_bytes = field("MemTotal");
    let (available_bytes, from) = match field("MemAvailable") {
        Some(available) => (Some(available), from.to_owned()),
        None => {
            let estimate = [field("MemFree"), field("Buffers"), field("Cached")]
                .into_iter()
                .sum::<Option<u64>>();
            (estimate, format!("{from} (MemFree+Buffers+Cached)"))
        }
    };
    MemoryReading {
        total_bytes,
        available_bytes,
        from,
    }
}

/// Memory of a memory cgroup that stands for the machine (a container, or the "laptop" a
/// benchmark confines its cluster in): the total is its limit (`memory.max`, or v1's
/// `memory.limit_in_bytes`), and available is the limit less what the group holds without its
/// inactive file pages (`memory.current` or `memory.usage_in_bytes`, and `memory.stat`).
pub fn memory_of_cgroup(dir: &Path) -> MemoryReading {
    let from = format!("cgroup:{}", dir.display());
    let number = |file: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (limit, usage, inactive) = if dir.join("memory.max").exists() {
        (
            number("memory.max"),
            number("memory.current"),
            "inactive_file",
        )
    } else {
        (
            number("memory.limit_in_bytes"),
            number("memory.usage_in_bytes"),
            "total_inactive_file",
        )
    };
    let Some(limit) = limit.filter(|&l| l > 0 && l < 1 << 60) else {
        return MemoryReading::unknown(format!("{from} (no memory limit)"));
    };
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let dropped = stat
        .lines()
        .find_map(|l| l.strip_prefix(inactive)?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    MemoryReading {
        total_bytes: Some(limit),
        available_bytes: usage.map(|u| limit.saturating_sub(u.saturating_sub(dropped))),
        from,
    }
}

/// Memory from a file in the format of `/proc/meminfo`.
pub fn read_meminfo(path: &Path) -> MemoryReading {
    let from = format!("procfs:{}", path.display());
    match std::fs::read_to_string(path) {
        Ok(text) => memory_from_meminfo(&text, &from),
        Err(e) => MemoryReading::unknown(format!("{from} ({e})")),
    }
}

/// The machine's CPU times from the text of `/proc/stat`: its first line, `cpu  user nice
/// system idle iowait irq softirq steal guest guest_nice` (the per-CPU lines are `cpu0`, ...).
///
/// Old kernels print fewer columns; the missing ones read as 0. `None` without at least the
/// first four.
pub fn parse_cpu_times(text: &str) -> Option<CpuTimes> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 4 {
        return None;
    }
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    Some(CpuTimes {
        user: at(0),
        nice: at(1),
        system: at(2),
        idle: at(3),
        iowait: at(4),
        irq: at(5),
        softirq: at(6),
        steal: at(7),
    })
}

/// The machine's CPU times from a file in the format of `/proc/stat`.
pub fn read_cpu_times(path: &Path) -> CpuReading {
    let from = format!("procfs:{}", path.display());
    match std::fs::read_to_string(path) {
        Ok(text) => CpuReading {
            times: parse_cpu_times(&text),
            from,
        },
        Err(e) => CpuReading::unknown(format!("{from} ({e})")),
    }
}

/// A process's CPU time, `utime + stime` (fields 14 and 15), from the text of
/// `/proc/<pid>/stat`, in clock ticks.
///
/// Field 2 is the program's name in parentheses, and the name itself may hold spaces and
/// parentheses (`(ray::IDLE (x))`), so fields are counted from the *last* `)`.
pub fn parse_process_ticks(text: &str) -> Option<u64> {
    let after_comm = &text[text.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is field 14, the 12th of them.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// A process's CPU time from `<proc>/<pid>/stat`; unknown if the process is gone.
pub fn read_process_cpu(proc: &Path, pid: u32) -> ProcessCpuReading {
    let path = proc.join(pid.to_string()).join("stat");
    let from = format!("procfs:{}", path.display());
    match std::fs::read_to_string(&path) {
        Ok(text) => ProcessCpuReading {
            pid,
            ticks: parse_process_ticks(&text),
            from,
        },
        Err(e) => ProcessCpuReading::unknown(pid, format!("{from} ({e})")),
    }
}

/// The names of the processes under a directory laid out like `/proc`: the `comm` of every
/// numeric entry, sorted, without duplicates.
///
/// A process that exits during the scan is left out. Kernel threads (`kworker/0:1`) are listed
/// too: they are harmless to a caller that looks for named programs.
pub fn read_running_apps(proc: &Path) -> AppsReading {
    let from = format!("procfs:{}/*/comm", proc.display());
    let entries = match std::fs::read_dir(proc) {
        Ok(entries) => entries,
        Err(e) => return AppsReading::unknown(format!("{from} ({e})")),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("comm")).ok())
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\n')
                .to_owned()
        })
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names.dedup();
    AppsReading {
        names: Some(names),
        from,
    }
}
