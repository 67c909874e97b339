//! Other platforms: no sensors; every reading is unknown.

use crate::sensors::{
    AppsReading, CpuReading, IdleReading, MemoryReading, Paths, PowerReading, ProcessCpuReading,
    UNSUPPORTED,
};

pub const IS_SUPPORTED: bool = false;

/// Nothing to keep between readings.
#[derive(Debug, Clone, Default)]
pub struct Source;

impl Source {
    pub fn new(_display: Option<String>) -> Source {
        Source
    }
}

pub fn power(_: &Paths, _: &Source) -> PowerReading {
    PowerReading::unknown(UNSUPPORTED)
}

pub fn memory(_: &Paths, _: &Source) -> MemoryReading {
    MemoryReading::unknown(UNSUPPORTED)
}

pub fn cpu_times(_: &Paths, _: &Source) -> CpuReading {
    CpuReading::unknown(UNSUPPORTED)
}

pub fn processes_cpu(_: &Paths, _: &Source, pids: &[u32]) -> Vec<ProcessCpuReading> {
    pids.iter()
        .map(|&pid| ProcessCpuReading::unknown(pid, UNSUPPORTED))
        .collect()
}

pub fn processes_from(_: &Paths) -> String {
    UNSUPPORTED.to_owned()
}

pub fn running_apps(_: &Paths, _: &Source) -> AppsReading {
    AppsReading::unknown(UNSUPPORTED)
}

pub fn idle(_: &Paths, _: &Source) -> IdleReading {
    IdleReading::unknown(UNSUPPORTED)
}
