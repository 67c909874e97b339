//! macOS and Windows: memory, each process's CPU time and the running programs, from the OS's
//! process table through `sysinfo` (`GlobalMemoryStatusEx` and `NtQuerySystemInformation` on
//! Windows, `host_statistics64` and `proc_pidinfo` on macOS).
//!
//! One `System` is kept and refreshed in place, only for what is asked: the memory figures, the
//! CPU time of the given processes, or the names of all of them.

use std::sync::{Arc, Mutex};

use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{AppsReading, MemoryReading, Paths, ProcessCpuReading, TICKS_PER_SECOND, foreign};

const FROM: &str = "sysinfo";

/// The process table, shared by clones of the sensors.
#[derive(Clone)]
pub struct Table {
    /// `None` when `sysinfo` could not start (every reading then says so).
    sys: Arc<Mutex<Option<System>>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Table")
    }
}

impl Default for Table {
    fn default() -> Table {
        Table {
            sys: Arc::new(Mutex::new(System::new().ok())),
        }
    }
}

impl Table {
    /// The backend state of macOS and Windows: the process table (a display means nothing
    /// there).
    pub fn new(_display: Option<String>) -> Table {
        Table::default()
    }

    fn with<T>(&self, read: impl FnOnce(&mut System) -> T) -> Option<T> {
        let mut sys = self.sys.lock().unwrap_or_else(|e| e.into_inner());
        sys.as_mut().map(read)
    }

    pub fn memory(&self) -> MemoryReading {
        let read = self.with(|sys| {
            sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
            (sys.total_memory(), sys.available_memory())
        });
        match read {
            Some((total, available)) if total > 0 => MemoryReading {
                total_bytes: Some(total),
                available_bytes: Some(available),
                from: format!("{FROM}:memory"),
            },
            Some(_) => MemoryReading::unknown(format!("{FROM}:memory: the OS gave no total")),
            None => MemoryReading::unknown(format!("{FROM}: could not start")),
        }
    }

    /// The CPU time of each of `pids`, in the order given, from one refresh of the table.
    pub fn processes_cpu(&self, pids: &[u32]) -> Vec<ProcessCpuReading> {
        let asked: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
        let ms = self.with(|sys| {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&asked),
                true,
                ProcessRefreshKind::nothing().with_cpu(),
            );
            asked
                .iter()
                .map(|pid| sys.process(*pid).map(|p| p.accumulated_cpu_time()))
                .collect::<Vec<_>>()
        });
        let from = format!("{FROM}:process table");
        pids.iter()
            .enumerate()
            .map(|(i, &pid)| ProcessCpuReading {
                pid,
                ticks: ms
                    .as_ref()
                    .and_then(|ms| ms[i])
                    .map(|ms| ms * TICKS_PER_SECOND / 1000),
                from: from.clone(),
            })
            .collect()
    }

    pub fn running_apps(&self) -> AppsReading {
        let names = self.with(|sys| {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                ProcessRefreshKind::nothing(),
            );
            sys.processes()
                .values()
                .map(|p| p.name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
        match names {
            Some(names) => AppsReading {
                names: Some(foreign::program_names(names)),
                from: format!("{FROM}:process table"),
            },
            None => AppsReading::unknown(format!("{FROM}: could not start")),
        }
    }
}

// The readers macOS and Windows share, with the backend signature of `super::imp`.

pub fn memory(_: &Paths, table: &Table) -> MemoryReading {
    table.memory()
}

pub fn processes_cpu(_: &Paths, table: &Table, pids: &[u32]) -> Vec<ProcessCpuReading> {
    table.processes_cpu(pids)
}

pub fn processes_from(_: &Paths) -> String {
    format!("{FROM}:process table")
}

pub fn running_apps(_: &Paths, table: &Table) -> AppsReading {
    table.running_apps()
}
