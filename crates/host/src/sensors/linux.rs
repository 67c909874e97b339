//! Linux: every reading but idle time comes from `/proc` and `/sys` text, read by
//! [`super::kernel`]; idle time comes from [`super::idle`].

use std::path::Path;

pub use super::idle::IdleSource;
use super::kernel;
use super::{AppsReading, CpuReading, IdleReading, MemoryReading, PowerReading, ProcessCpuReading};

pub const IS_SUPPORTED: bool = true;

pub fn power(power_supply: &Path) -> PowerReading {
    kernel::power_from_dir(power_supply)
}

pub fn memory(proc: &Path) -> MemoryReading {
    kernel::read_meminfo(&proc.join("meminfo"))
}

pub fn cpu_times(proc: &Path) -> CpuReading {
    kernel::read_cpu_times(&proc.join("stat"))
}

pub fn process_cpu(proc: &Path, pid: u32) -> ProcessCpuReading {
    kernel::read_process_cpu(proc, pid)
}

pub fn processes_from(proc: &Path) -> String {
    format!("procfs:{}/<pid>/stat", proc.display())
}

pub fn running_apps(proc: &Path) -> AppsReading {
    kernel::read_running_apps(proc)
}

pub fn idle(dev: &Path, source: &IdleSource) -> IdleReading {
    source.read(dev)
}
