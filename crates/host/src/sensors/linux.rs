//! Linux: every reading but idle time comes from `/proc` and `/sys` text, read by
//! [`super::kernel`]; idle time comes from [`super::idle`].

use super::idle::IdleSource;
use super::kernel;
use super::{
    AppsReading, CpuReading, IdleReading, MemoryReading, Paths, PowerReading, ProcessCpuReading,
};

pub const IS_SUPPORTED: bool = true;

/// What Linux keeps between readings: the idle sources (an X connection, the last terminals
/// reading).
pub type Source = IdleSource;

pub fn power(paths: &Paths, _: &Source) -> PowerReading {
    kernel::power_from_dir(&paths.power_supply)
}

pub fn memory(paths: &Paths, _: &Source) -> MemoryReading {
    kernel::read_meminfo(&paths.proc.join("meminfo"))
}

pub fn cpu_times(paths: &Paths, _: &Source) -> CpuReading {
    kernel::read_cpu_times(&paths.proc.join("stat"))
}

pub fn processes_cpu(paths: &Paths, _: &Source, pids: &[u32]) -> Vec<ProcessCpuReading> {
    pids.iter()
        .map(|&pid| kernel::read_process_cpu(&paths.proc, pid))
        .collect()
}

pub fn processes_from(paths: &Paths) -> String {
    format!("procfs:{}/<pid>/stat", paths.proc.display())
}

pub fn running_apps(paths: &Paths, _: &Source) -> AppsReading {
    kernel::read_running_apps(&paths.proc)
}

pub fn idle(paths: &Paths, source: &Source) -> IdleReading {
    source.read(&paths.dev)
}
