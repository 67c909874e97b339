//! Platforms other than Linux, macOS and Windows: no backend, so [`prepare`] fails with
//! [`ThrottleError::Unsupported`] and the other types cannot be built.

use std::path::PathBuf;
use std::time::Duration;

use super::{Guarantees, MemoryCeiling, Result, ThrottleConfig, ThrottleError};

#[derive(Debug)]
pub enum Prepared {}

#[derive(Debug)]
pub enum Backend {}

/// No backend, so nothing can be left behind.
pub fn remove_stale(_config: &ThrottleConfig, _node: &str) -> Vec<PathBuf> {
    Vec::new()
}

pub fn prepare(_config: &ThrottleConfig, _name: &str) -> Result<Prepared> {
    Err(ThrottleError::Unsupported)
}

impl Prepared {
    pub fn procs_files(&self) -> &[PathBuf] {
        match *self {}
    }

    pub fn idle_group(&self) -> bool {
        match *self {}
    }

    pub fn guarantees(&self) -> Guarantees {
        match *self {}
    }

    pub fn attach(self, _leader: u32, _marker: &str) -> Result<Backend> {
        match self {}
    }
}

impl Backend {
    pub fn set_cap(&self, _cap: Option<f64>) -> Result<()> {
        match *self {}
    }

    pub fn freeze(&self, _on: bool) -> Result<()> {
        match *self {}
    }

    pub fn cpu_time(&self) -> Option<Duration> {
        match *self {}
    }

    pub fn guarantees(&self) -> Guarantees {
        match *self {}
    }

    pub fn set_memory_limit(&self, _limit: Option<u64>) -> Result<MemoryCeiling> {
        match *self {}
    }

    pub fn memory_used(&self) -> Option<u64> {
        match *self {}
    }

    pub fn processes_by_memory(&self) -> Vec<(u32, u64)> {
        match *self {}
    }

    pub fn kill(&self) {
        match *self {}
    }
}
