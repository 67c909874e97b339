//! Linux: cgroup v2, else cgroup v1, else a signal duty cycle; see the module's documentation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cgroup::{self, Group};
use super::duty::DutyCycle;
use super::{BackendKind, Guarantees, MemoryCeiling, Result, ThrottleConfig, ThrottleError};

const ORDER: [BackendKind; 3] = [
    BackendKind::CgroupV2,
    BackendKind::CgroupV1,
    BackendKind::Signals,
];

#[derive(Debug)]
pub enum Prepared {
    Cgroup { group: Group, procs: Vec<PathBuf> },
    Signals,
}

#[derive(Debug)]
pub enum Backend {
    Cgroup(Group),
    Signals(DutyCycle),
}

pub fn prepare(config: &ThrottleConfig, name: &str) -> Result<Prepared> {
    let order = match config.force_backend {
        Some(kind) => vec![kind],
        None => ORDER.to_vec(),
    };
    let mut skipped = Vec::new();
    for kind in order {
        match prepare_kind(config, name, kind) {
            Ok(prepared) => {
                if !skipped.is_empty() {
                    tracing::info!(
                        backend = kind.name(),
                        skipped = %skipped.join("; "),
                        "throttle backend chosen"
                    );
                }
                return Ok(prepared);
            }
            Err(e) if config.force_backend.is_some() => return Err(e),
            Err(e) => skipped.push(format!("{}: {e}", kind.name())),
        }
    }
    Err(ThrottleError::NoBackend(skipped.join("; ")))
}

/// See [`super::remove_stale`]: every parent a group of `config` may be created under, whichever
/// backend created it.
pub fn remove_stale(config: &ThrottleConfig, node: &str) -> Vec<PathBuf> {
    let own = Own::read();
    let mut parents: Vec<PathBuf> = config
        .cgroup_v2_root
        .clone()
        .or_else(|| cgroup::own_v2_dir(&own.mountinfo, &own.cgroup))
        .into_iter()
        .collect();
    for (configured, controller) in [
        (&config.cgroup_v1_cpu, "cpu"),
        (&config.cgroup_v1_cpuacct, "cpuacct"),
        (&config.cgroup_v1_freezer, "freezer"),
        (&config.cgroup_v1_memory, "memory"),
    ] {
        parents.extend(own.v1(configured, controller));
    }
    parents.sort();
    parents.dedup();
    parents
        .iter()
        .flat_map(|parent| cgroup::remove_stale(parent, node))
        .collect()
}

/// The agent's own place in the cgroup hierarchies, read once per [`prepare`].
struct Own {
    mountinfo: String,
    cgroup: String,
}

impl Own {
    fn read() -> Own {
        Own {
            mountinfo: std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            cgroup: std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        }
    }

    fn v1(&self, configured: &Option<PathBuf>, controller: &str) -> Option<PathBuf> {
        configured
            .clone()
            .or_else(|| cgroup::own_v1_dir(&self.mountinfo, &self.cgroup, controller))
    }
}

fn prepare_kind(config: &ThrottleConfig, name: &str, kind: BackendKind) -> Result<Prepared> {
    let unavailable = |reason: &str| ThrottleError::Unavailable {
        backend: kind.name(),
        reason: reason.into(),
    };
    let group = match kind {
        BackendKind::Signals => return Ok(Prepared::Signals),
        BackendKind::CgroupV2 => {
            let parent = match &config.cgroup_v2_root {
                Some(root) => root.clone(),
                None => {
                    let own = Own::read();
                    cgroup::own_v2_dir(&own.mountinfo, &own.cgroup)
                        .ok_or_else(|| unavailable("no cgroup2 hierarchy is mounted"))?
                }
            };
            Group::create_v2(&parent, name, config.idle)?
        }
        BackendKind::CgroupV1 => {
            let own = Own::read();
            let cpu = own
                .v1(&config.cgroup_v1_cpu, "cpu")
                .ok_or_else(|| unavailable("no cgroup v1 hierarchy has the cpu controller"))?;
            let cpuacct = own.v1(&config.cgroup_v1_cpuacct, "cpuacct");
            let freezer = own.v1(&config.cgroup_v1_freezer, "freezer");
            let memory = own.v1(&config.cgroup_v1_memory, "memory");
            Group::create_v1(
                &cpu,
                cpuacct.as_deref().filter(|d| *d != cpu.as_path()),
                freezer.as_deref(),
                memory.as_deref(),
                name,
                config.idle,
            )?
        }
    };
    let procs = group.procs_files();
    Ok(Prepared::Cgroup { group, procs })
}

impl Prepared {
    pub fn procs_files(&self) -> &[PathBuf] {
        match self {
            Prepared::Cgroup { procs, .. } => procs,
            Prepared::Signals => &[],
        }
    }

    pub fn guarantees(&self) -> Guarantees {
        match self {
            Prepared::Cgroup { group, .. } => group.guarantees(),
            Prepared::Signals => signals_guarantees(),
        }
    }

    pub fn idle_group(&self) -> bool {
        match self {
            Prepared::Cgroup { group, .. } => group.is_idle(),
            Prepared::Signals => false,
        }
    }

    pub fn attach(self, leader: u32, marker: &str) -> Result<Backend> {
        match self {
            Prepared::Cgroup { group, .. } => {
                group.move_tree(leader, marker)?;
                Ok(Backend::Cgroup(group))
            }
            Prepared::Signals => DutyCycle::start(leader, marker)
                .map(Backend::Signals)
                .map_err(|source| ThrottleError::Io {
                    op: "start the duty-cycle thread for",
                    path: Path::new("/proc").join(leader.to_string()),
                    source,
                }),
        }
    }
}

fn signals_guarantees() -> Guarantees {
    Guarantees {
        backend: BackendKind::Signals.name(),
        hard_cap: false,
        atomic_freeze: false,
        memory_ceiling: false,
    }
}

impl Backend {
    pub fn set_cap(&self, cap: Option<f64>) -> Result<()> {
        match self {
            Backend::Cgroup(group) => group.set_cap(cap),
            Backend::Signals(duty) => {
                duty.set_cap(cap);
                Ok(())
            }
        }
    }

    pub fn freeze(&self, on: bool) -> Result<()> {
        match self {
            Backend::Cgroup(group) => group.freeze(on),
            Backend::Signals(duty) => {
                duty.freeze(on);
                Ok(())
            }
        }
    }

    pub fn cpu_time(&self) -> Option<Duration> {
        match self {
            Backend::Cgroup(group) => group.cpu_time(),
            Backend::Signals(duty) => duty.cpu_time(),
        }
    }

    pub fn guarantees(&self) -> Guarantees {
        match self {
            Backend::Cgroup(group) => group.guarantees(),
            Backend::Signals(duty) => duty.guarantees(),
        }
    }

    pub fn set_memory_limit(&self, limit: Option<u64>) -> Result<MemoryCeiling> {
        match self {
            Backend::Cgroup(group) => group.set_memory_limit(limit),
            Backend::Signals(_) => Ok(MemoryCeiling::NotHeld),
        }
    }

    pub fn memory_used(&self) -> Option<u64> {
        match self {
            Backend::Cgroup(group) => group.memory_used(),
            Backend::Signals(duty) => duty.memory_used(),
        }
    }

    pub fn processes_by_memory(&self) -> Vec<(u32, u64)> {
        match self {
            Backend::Cgroup(group) => group.processes_by_memory(),
            Backend::Signals(duty) => duty.processes_by_memory(),
        }
    }

    pub fn kill(&self) {
        match self {
            Backend::Cgroup(group) => group.kill(),
            Backend::Signals(duty) => duty.kill(),
        }
    }
}
