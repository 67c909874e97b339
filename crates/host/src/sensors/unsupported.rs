//! Other platforms: no sensors; every reading is unknown.

use std::path::Path;

use super::{
    AppsReading, CpuReading, IdleReading, MemoryReading, PowerReading, ProcessCpuReading,
    UNSUPPORTED,
};

pub const IS_SUPPORTED: bool = false;

pub fn power(_power_supply: &Path) -> PowerReading {
    PowerReading::unknown(UNSUPPORTED)
}

pub fn memory(_proc: &Path) -> MemoryReading {
    MemoryReading::unknown(UNSUPPORTED)
}

pub fn cpu_times(_proc: &Path) -> CpuReading {
    CpuReading::unknown(UNSUPPORTED)
}

pub fn process_cpu(_proc: &Path, pid: u32) -> ProcessCpuReading {
    ProcessCpuReading::unknown(pid, UNSUPPORTED)
}

pub fn processes_from(_proc: &Path) -> String {
    UNSUPPORTED.to_owned()
}

pub fn running_apps(_proc: &Path) -> AppsReading {
    AppsReading::unknown(UNSUPPORTED)
}

/// Nothing to keep: idle time is unknown here.
#[derive(Debug, Clone, Default)]
pub struct IdleSource;

impl IdleSource {
    pub fn new(_display: Option<String>) -> IdleSource {
        IdleSource
    }
}

pub fn idle(_dev: &Path, _source: &IdleSource) -> IdleReading {
    IdleReading::unknown(UNSUPPORTED)
}
