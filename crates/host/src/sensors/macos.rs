//! macOS: power from `pmset -g batt` and idle time from IOKit's `HIDIdleTime` through `ioreg`
//! (both readable by a daemon outside the owner's session), each cached for a few seconds
//! because they cost a process start. Memory, CPU and the process list are later additions
//! (`host_statistics64`, `host_processor_info`, `proc_pidinfo`) and read as unknown.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{IdleReading, PowerReading, foreign};

#[path = "unsupported.rs"]
mod fallback;
pub use fallback::{IdleSource, cpu_times, memory, process_cpu, processes_from, running_apps};

pub const IS_SUPPORTED: bool = true;

const POWER_EVERY: Duration = Duration::from_secs(5);
const IDLE_EVERY: Duration = Duration::from_secs(1);

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cached<T: Clone>(
    slot: &Mutex<Option<(Instant, T)>>,
    every: Duration,
    read: impl FnOnce() -> T,
) -> T {
    let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
    match &*s {
        Some((at, v)) if at.elapsed() < every => v.clone(),
        _ => {
            let v = read();
            *s = Some((Instant::now(), v.clone()));
            v
        }
    }
}

pub fn power(_power_supply: &Path) -> PowerReading {
    static LAST: Mutex<Option<(Instant, PowerReading)>> = Mutex::new(None);
    cached(&LAST, POWER_EVERY, || {
        match run("/usr/bin/pmset", &["-g", "batt"]) {
            Some(text) => foreign::power_from_pmset(&text),
            None => PowerReading::unknown("pmset -g batt: cannot run it"),
        }
    })
}

pub fn idle(_dev: &Path, _source: &IdleSource) -> IdleReading {
    static LAST: Mutex<Option<(Instant, (Instant, IdleReading))>> = Mutex::new(None);
    let (at, reading) = cached(&LAST, IDLE_EVERY, || {
        let r = match run(
            "/usr/sbin/ioreg",
            &["-c", "IOHIDSystem", "-d", "4", "-k", "HIDIdleTime"],
        ) {
            Some(text) => foreign::idle_from_ioreg(&text),
            None => IdleReading::unknown("ioreg: cannot run it"),
        };
        (Instant::now(), r)
    });
    // A cached reading has aged since it was taken.
    IdleReading {
        idle: reading.idle.map(|d| d + at.elapsed()),
        from: reading.from,
    }
}
