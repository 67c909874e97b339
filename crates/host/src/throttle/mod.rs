//! CPU and memory limits on one process tree (a Ray node), enforced by the OS.
//!
//! Ray's `num_cpus` is bookkeeping only: what the machine's owner feels is what the OS lets the
//! tree run. The politeness loop decides a [`Limit`] every 250 ms; [`Throttle::set`] makes the OS
//! enforce it before the next tick, without waiting for Ray to notice anything.
//!
//! [`Throttle::attach`] chooses a backend at run time (what the machine offers, not what the
//! build assumed) and moves every process of the tree into it. [`Throttle::prepare`] creates the
//! backend before the tree exists, so that the tree's program enters the cgroup before it runs
//! at all ([`Prepared::wrap_spec`]); [`Prepared::attach`] then sweeps in anything that raced it.
//!
//! Dropping a [`Throttle`] thaws the tree and removes what it created; the processes keep
//! running, unthrottled. It never leaves a process frozen or stopped. An agent killed with
//! `SIGKILL` drops nothing, so [`Throttle::prepare_node`] first removes the node's groups that
//! such agents left, once they hold no process ([`remove_stale`]).
//!
//! # Platform behavior
//!
//! - Linux, tried in this order (or the one [`ThrottleConfig::force_backend`] names):
//!   1. cgroup v2: `<own cgroup>/flotilla-<name>` (or under [`ThrottleConfig::cgroup_v2_root`]),
//!      with the `cpu` controller enabled in the parent's `cgroup.subtree_control`; `cpu.max`,
//!      `cpu.idle`, `cgroup.freeze`, `cgroup.kill`. A hard cap and an atomic freeze.
//!   2. cgroup v1: `flotilla-<name>` in the `cpu` hierarchy (`cpu.cfs_quota_us`,
//!      `cpu.cfs_period_us`, `cpu.idle`), the `cpuacct` one for the CPU time, the `freezer` one
//!      (`freezer.state`). A hard cap; an atomic freeze where the freezer is mounted.
//!   3. Signals, when no cgroup can be had (no permission): a `SIGSTOP`/`SIGCONT` duty cycle
//!      over the tree's processes, found by their marker every period. Neither the cap nor the
//!      freeze is atomic or exact; see [`Guarantees`] and the `duty` module for the
//!      approximation.
//! - macOS (`macos` module): one backend, `BackendKind::DarwinBackground`. At attach (with
//!   [`ThrottleConfig::idle`]), every process of the tree's process group goes into the Darwin
//!   background band (`setpriority(PRIO_DARWIN_PROCESS, pid, PRIO_DARWIN_BG)`: lowest CPU
//!   priority, throttled I/O; children inherit it). [`Limit::Cap`] and [`Limit::Freeze`] are a
//!   `SIGSTOP`/`SIGCONT` duty cycle over the process group (`killpg`): each [`PERIOD`] the tree
//!   runs `cpus / cores` of it, so it never exceeds the cap but gets less when it has fewer busy
//!   processes than the machine has cores. Neither the cap nor the freeze is hard or atomic, and
//!   a process that leaves the group (`setsid`) escapes both, as macOS cannot find processes by
//!   their marker. The background band stays after the throttle is dropped.
//! - Windows (`windows` module): one backend, `BackendKind::JobObject`. The throttle creates a
//!   Job Object of its own and assigns the tree's leader to it, nested inside the job the tree
//!   already lives in (Windows 8 and later); the leader's later children join it at creation.
//!   [`Limit::Cap`] is `JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP` at `cpus / logical processors` of
//!   the machine, enforced by the kernel. Windows cannot suspend a job without the undocumented
//!   `NtSuspendProcess`, so [`Limit::Freeze`] is the smallest rate there is (0.01 % of the
//!   machine): nearly stopped, not stopped. The leader gets `IDLE_PRIORITY_CLASS` (with
//!   [`ThrottleConfig::idle`]), which its later children inherit and which stays after the
//!   throttle is dropped. Children the leader started before the attach are outside the
//!   throttle (the supervisor attaches right after the spawn, long before Ray's Python starts
//!   one).
//! - Elsewhere: [`ThrottleError::Unsupported`].
//!
//! # Memory
//!
//! [`Throttle::set_memory_limit`] puts a ceiling on the memory of the whole tree, which the
//! agent lowers when the machine's owner needs memory and raises when they free it;
//! [`Throttle::memory_used`] reads what the tree holds. What stands behind the ceiling depends
//! on the backend ([`MemoryCeiling`] says which held):
//!
//! - cgroup v2: `memory.max` at the ceiling and `memory.high` a sixteenth below it (the memory
//!   controller enabled in the parent's `cgroup.subtree_control`). Above `memory.high` the kernel
//!   reclaims the group's pages and slows its allocations; at `memory.max` it reclaims, then
//!   kills a process inside the group (never one outside). Ray gives its task workers
//!   `oom_score_adj` 1000, so the kernel picks a worker before the raylet.
//! - cgroup v1: `flotilla-<name>` in the `memory` hierarchy too, which the tree joins with the
//!   others; `memory.limit_in_bytes` at the ceiling and `memory.soft_limit_in_bytes` a sixteenth
//!   below it (where global reclaim presses the group first). A limit below what the group holds
//!   makes the kernel reclaim first, and when it cannot (anonymous memory and no swap) the
//!   write fails with `EBUSY` and the old limit stays: [`MemoryCeiling::Refused`], and the
//!   caller sheds work. Once in force, the kernel kills inside the group at the limit.
//! - Windows: the job's `JobMemoryLimit` (`JOB_OBJECT_LIMIT_JOB_MEMORY`): the tree cannot commit
//!   more; a commit past it fails inside the tree. Memory committed before a lower limit stays
//!   committed, so above it the caller sheds work.
//! - macOS and the Linux signal backend: no ceiling the OS enforces ([`MemoryCeiling::NotHeld`]);
//!   the tree's memory is the sum of its processes' resident memory, and the caller keeps the
//!   tree under the ceiling by shedding work.
//!
//! What the tree holds ([`Throttle::memory_used`]) leaves out the file pages the kernel can drop
//! at once (a group's inactive file cache), as the machine's available memory counts them as
//! available.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::TreeSpec;

#[cfg(target_os = "linux")]
mod cgroup;
#[cfg(target_os = "linux")]
mod duty;
// Each backend uses its own part, so on any one OS the others' parts serve only the tests.
#[cfg_attr(not(test), allow(dead_code))]
mod plan;

crate::os_module!();

/// The enforcement period: a cap of `c` cores lets the tree run `c * PERIOD` of CPU time per
/// period. 100 ms is the kernel's default CFS period and well inside one 250 ms policy tick.
pub const PERIOD: Duration = Duration::from_millis(100);

/// [`PERIOD`] in microseconds, the unit of `cpu.max` and `cpu.cfs_*_us`.
pub const PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel accepts (1 ms per period); smaller caps are rounded up to it.
pub const MIN_QUOTA_US: u64 = 1_000;

/// What the tree may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// No cap (and not frozen).
    Full,
    /// At most `cpus` cores' worth of CPU time per period (and not frozen). `cpus` may be
    /// fractional; it must be positive and finite.
    Cap { cpus: f64 },
    /// Every process of the tree stopped at once; the cap is kept for [`Limit::Thaw`].
    Freeze,
    /// Undoes [`Limit::Freeze`]: the tree runs again under the cap it had before.
    Thaw,
}

/// What a backend promises, for `flotilla doctor` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarantees {
    /// The backend's name, as in [`BackendKind::name`].
    pub backend: &'static str,
    /// Whether the kernel itself enforces [`Limit::Cap`] (no process can exceed it even briefly).
    pub hard_cap: bool,
    /// Whether [`Limit::Freeze`] stops every process of the tree at the same instant, new ones
    /// included.
    pub atomic_freeze: bool,
    /// Whether the OS itself holds the tree under [`Throttle::set_memory_limit`]'s ceiling
    /// (cgroup memory controller, Job Object memory limit); otherwise the caller must shed work.
    pub memory_ceiling: bool,
}

/// What [`Throttle::set_memory_limit`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryCeiling {
    /// The OS holds the tree under the ceiling (or there is no ceiling): it reclaims the tree's
    /// pages, refuses or kills inside the tree, never outside it.
    Held,
    /// The OS refused the ceiling because the tree holds more than it and could not give it
    /// back (cgroup v1 without swap); the previous ceiling stays. Shed work and set it again.
    Refused,
    /// This backend has no ceiling the OS enforces (macOS, Linux without cgroups): the caller
    /// keeps the tree under it by shedding work.
    NotHeld,
}

/// A backend, to force one ([`ThrottleConfig::force_backend`]) or to name it. The cgroup and
/// signal backends work on Linux only (forcing one elsewhere fails with
/// [`ThrottleError::Unavailable`]); the macOS and Windows variants exist only on their OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    CgroupV2,
    CgroupV1,
    Signals,
    /// macOS: the Darwin background band and a `SIGSTOP`/`SIGCONT` duty cycle.
    #[cfg(target_os = "macos")]
    DarwinBackground,
    /// Windows: a Job Object with a hard CPU rate cap.
    #[cfg(windows)]
    JobObject,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::CgroupV2 => "cgroup v2",
            BackendKind::CgroupV1 => "cgroup v1",
            BackendKind::Signals => "signals",
            #[cfg(target_os = "macos")]
            BackendKind::DarwinBackground => "darwin background",
            #[cfg(windows)]
            BackendKind::JobObject => "job object",
        }
    }
}

/// Where the cgroups go and which backend to use. The default detects everything.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// The cgroup2 directory under which `flotilla-<name>` is created; default: the agent's own
    /// cgroup, from `/proc/self/cgroup` and `/proc/self/mountinfo`.
    pub cgroup_v2_root: Option<PathBuf>,
    /// The cgroup v1 `cpu` directory under which `flotilla-<name>` is created; default: the
    /// agent's own cgroup in the mounted `cpu` hierarchy.
    pub cgroup_v1_cpu: Option<PathBuf>,
    /// As [`cgroup_v1_cpu`](Self::cgroup_v1_cpu) for the `cpuacct` hierarchy (the tree's CPU
    /// time). Unused when `cpuacct` is mounted together with `cpu`.
    pub cgroup_v1_cpuacct: Option<PathBuf>,
    /// As [`cgroup_v1_cpu`](Self::cgroup_v1_cpu) for the `freezer` hierarchy.
    pub cgroup_v1_freezer: Option<PathBuf>,
    /// As [`cgroup_v1_cpu`](Self::cgroup_v1_cpu) for the `memory` hierarchy (the memory
    /// ceiling). Without it the tree has no ceiling the kernel enforces.
    pub cgroup_v1_memory: Option<PathBuf>,
    /// Use this backend or fail, instead of trying each in turn.
    pub force_backend: Option<BackendKind>,
    /// Give the tree the lowest scheduling weight (`cpu.idle` = 1, like `SCHED_IDLE`; macOS: the
    /// Darwin background band; Windows: `IDLE_PRIORITY_CLASS`), so that the owner's programs win
    /// every contended core even under the cap. Default `true`.
    pub idle: bool,
}

impl ThrottleConfig {
    /// The default, with `FLOTILLA_CGROUP_PARENT` (cgroup v2 only: a directory delegated to the agent,
    /// such as a service's `Delegate=yes` cgroup or one a benchmark caps) as the parent of the
    /// node's group when it is set.
    pub fn from_env() -> Self {
        ThrottleConfig {
            cgroup_v2_root: std::env::var_os("FLOTILLA_CGROUP_PARENT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            ..Default::default()
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            cgroup_v2_root: None,
            cgroup_v1_cpu: None,
            cgroup_v1_cpuacct: None,
            cgroup_v1_freezer: None,
            cgroup_v1_memory: None,
            force_backend: None,
            idle: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error(
        "CPU throttling of a process tree is not supported on this OS yet (Linux, macOS and \
         Windows only); the tree would run unthrottled"
    )]
    Unsupported,
    #[error(
        "invalid throttle name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.' \
         (it names a cgroup directory)"
    )]
    InvalidName(String),
    #[error("invalid CPU cap {0}: give a positive, finite number of cores")]
    InvalidCap(f64),
    #[error("invalid memory ceiling of {0} bytes: give at least one page")]
    InvalidMemoryLimit(u64),
    #[error("the {backend} backend is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("no throttle backend is available ({0})")]
    NoBackend(String),
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = ThrottleError> = std::result::Result<T, E>;

/// A backend made ready before the tree exists: see [`Throttle::prepare`].
#[derive(Debug)]
pub struct Prepared {
    inner: imp::Prepared,
}

impl Prepared {
    /// The `cgroup.procs` files a process must write `0` into to enter the throttle itself
    /// (writing `0` moves the writer, in cgroup v1 and v2), for spawners with their own
    /// `pre_exec`. Empty for a backend without cgroups.
    pub fn procs_files(&self) -> &[PathBuf] {
        self.inner.procs_files()
    }

    /// `spec`, changed so that its program first enters the throttle's cgroups and only then
    /// `exec`s the real program: everything it starts is born inside. If it cannot enter, it
    /// exits with status 126 instead of running unthrottled. Unchanged for a backend without
    /// cgroups.
    pub fn wrap_spec(&self, spec: TreeSpec) -> TreeSpec {
        wrap_spec(self.procs_files(), spec)
    }

    pub fn guarantees(&self) -> Guarantees {
        self.inner.guarantees()
    }

    /// Whether the kernel gives the whole group the lowest weight against all other work
    /// (cgroup `cpu.idle`). Its processes then need no lowest priority of their own, and keep
    /// the priorities they set among themselves (Ray's raylet over its task workers).
    pub fn idle_group(&self) -> bool {
        self.inner.idle_group()
    }

    /// Moves the tree of `leader_pid` (and every process carrying `marker`) into the throttle.
    /// The tree starts at [`Limit::Full`].
    pub fn attach(self, leader_pid: u32, marker: &str) -> Result<Throttle> {
        Ok(Throttle {
            inner: self.inner.attach(leader_pid, marker)?,
            cap: None,
            frozen: false,
            memory_limit: None,
        })
    }
}

/// The CPU limit of one process tree. Dropping it thaws the tree and removes the cgroups it
/// created.
#[derive(Debug)]
pub struct Throttle {
    pub(crate) inner: imp::Backend,
    cap: Option<f64>,
    frozen: bool,
    memory_limit: Option<u64>,
}

/// The smallest memory ceiling accepted: one page of the most common size.
pub const MIN_MEMORY_LIMIT: u64 = 4096;

impl Throttle {
    /// Throttles the running tree of `leader_pid`, whose processes carry `marker` (see
    /// [`crate::process::MARKER_ENV`]), with the first backend this machine offers. `name`
    /// names the cgroup (`flotilla-<name>`). The tree starts at [`Limit::Full`].
    pub fn attach(name: &str, leader_pid: u32, marker: &str) -> Result<Throttle> {
        Throttle::attach_with(&ThrottleConfig::default(), name, leader_pid, marker)
    }

    /// [`attach`](Self::attach) with explicit cgroup roots or backend.
    pub fn attach_with(
        config: &ThrottleConfig,
        name: &str,
        leader_pid: u32,
        marker: &str,
    ) -> Result<Throttle> {
        Throttle::prepare_with(config, name)?.attach(leader_pid, marker)
    }

    /// [`prepare_with`](Self::prepare_with) for node `node` of this agent process: the group is
    /// [`node_group_name`] of the node and this process (`flotilla-<node>-<pid>`: two agents on
    /// one machine may run nodes of one name, and one must not remove the other's group). The
    /// node's groups that agents killed before they could remove them left behind are removed
    /// first ([`remove_stale`]).
    pub fn prepare_node(config: &ThrottleConfig, node: &str) -> Result<Prepared> {
        for dir in remove_stale(config, node) {
            tracing::info!(
                node,
                "removed the cgroup {} a killed agent left",
                dir.display()
            );
        }
        Throttle::prepare_with(config, &node_group_name(node, std::process::id()))
    }

    /// Creates the throttle before the tree exists; see [`Prepared::wrap_spec`].
    pub fn prepare(name: &str) -> Result<Prepared> {
        Throttle::prepare_with(&ThrottleConfig::default(), name)
    }

    /// [`prepare`](Self::prepare) with explicit cgroup roots or backend.
    pub fn prepare_with(config: &ThrottleConfig, name: &str) -> Result<Prepared> {
        check_name(name)?;
        Ok(Prepared {
            inner: imp::prepare(config, name)?,
        })
    }

    /// Applies `limit`. [`Limit::Full`] and [`Limit::Cap`] also thaw a frozen tree (the new cap
    /// is in force before it runs again); [`Limit::Thaw`] resumes under the last cap.
    pub fn set(&mut self, limit: Limit) -> Result<()> {
        match limit {
            Limit::Full => {
                self.inner.set_cap(None)?;
                self.cap = None;
                self.thaw()
            }
            Limit::Cap { cpus } => {
                if !(cpus.is_finite() && cpus > 0.0) {
                    return Err(ThrottleError::InvalidCap(cpus));
                }
                self.inner.set_cap(Some(cpus))?;
                self.cap = Some(cpus);
                self.thaw()
            }
            Limit::Freeze => {
                self.inner.freeze(true)?;
                self.frozen = true;
                Ok(())
            }
            Limit::Thaw => self.thaw(),
        }
    }

    fn thaw(&mut self) -> Result<()> {
        if self.frozen {
            self.inner.freeze(false)?;
            self.frozen = false;
        }
        Ok(())
    }

    /// The cap in force (`None`: no cap), frozen or not.
    pub fn cap(&self) -> Option<f64> {
        self.cap
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// The tree's CPU time, all cores together; compare two readings. With a cgroup or a Job
    /// Object, the time used inside it (so since the tree entered it), exited processes
    /// included; with signals (Linux, and macOS over the process group), the time of the live
    /// processes and of the children they have waited for, which drops when a process exits
    /// unwaited. `None` if it cannot be read.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.inner.cpu_time()
    }

    pub fn guarantees(&self) -> Guarantees {
        self.inner.guarantees()
    }

    /// Puts a ceiling of `bytes` on the memory of the whole tree (`None`: no ceiling); see the
    /// module's documentation for what holds it on each OS. A refused ceiling
    /// ([`MemoryCeiling::Refused`]) is not recorded: [`memory_limit`](Self::memory_limit) keeps
    /// the one in force.
    pub fn set_memory_limit(&mut self, bytes: Option<u64>) -> Result<MemoryCeiling> {
        if let Some(b) = bytes
            && b < MIN_MEMORY_LIMIT
        {
            return Err(ThrottleError::InvalidMemoryLimit(b));
        }
        let outcome = self.inner.set_memory_limit(bytes)?;
        if outcome != MemoryCeiling::Refused {
            self.memory_limit = bytes;
        }
        Ok(outcome)
    }

    /// The memory ceiling in force, as last set (`None`: none).
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// The memory the tree holds now, in bytes, without the file pages the kernel can drop at
    /// once; `None` if it cannot be read.
    pub fn memory_used(&self) -> Option<u64> {
        self.inner.memory_used()
    }

    /// The tree's processes with their resident memory in bytes, largest first (for choosing
    /// which to end when the tree must give memory back).
    pub fn processes_by_memory(&self) -> Vec<(u32, u64)> {
        self.inner.processes_by_memory()
    }

    /// Kills every process of the tree at once (`cgroup.kill` where the kernel has it;
    /// `TerminateJobObject` on Windows; `SIGKILL` to the process group on macOS), frozen ones
    /// included. For when the agent must not leave the tree behind.
    pub fn kill(&self) {
        self.inner.kill();
    }
}

/// Limits on a name that becomes a directory: no separators, no `..`, nothing a shell or a
/// cgroup file system would treat specially.
/// The throttle name of node `node`'s group owned by the agent process `owner`: `<node>-<owner>`,
/// so its cgroups are `flotilla-<node>-<owner>`.
pub fn node_group_name(node: &str, owner: u32) -> String {
    format!("{node}-{owner}")
}

/// Removes the groups of node `node` ([`node_group_name`]) that agents which are gone left
/// behind (an agent killed with `SIGKILL` cannot remove its own), in every place a throttle with
/// `config` creates them, and returns the directories removed.
///
/// A group is removed only when nothing could still be using it: it and every group below it
/// hold no process, and its owner is not running: no process has its pid, or the one that has
/// it started after the group was made (the pid was reused), or it is a zombie. This process's
/// own groups and a live agent's are never touched, nor are groups of other nodes. Linux only:
/// on other systems a killed agent leaves nothing behind.
pub fn remove_stale(config: &ThrottleConfig, node: &str) -> Vec<PathBuf> {
    if check_name(node).is_err() {
        return Vec::new();
    }
    imp::remove_stale(config, node)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ThrottleError::InvalidName(name.into()))
    }
}

/// The process writes `0` into each file given (which moves it into that cgroup), then becomes
/// the real program. `$1` is how many files follow.
const ENTER: &str = "n=$1; shift; \
while [ \"$n\" -gt 0 ]; do \
printf 0 > \"$1\" || { echo \"flotilla: cannot enter the throttle cgroup $1\" >&2; exit 126; }; \
shift; n=$((n - 1)); done; \
exec \"$@\"";

fn wrap_spec(procs: &[PathBuf], mut spec: TreeSpec) -> TreeSpec {
    if procs.is_empty() {
        return spec;
    }
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        ENTER.into(),
        "flotilla-enter".into(),
        procs.len().to_string().into(),
    ];
    args.extend(procs.iter().map(|p| p.as_os_str().to_owned()));
    args.push(spec.program.into_os_string());
    args.append(&mut spec.args);
    spec.program = Path::new("/bin/sh").to_path_buf();
    spec.args = args;
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_directory_names_are_refused() {
        for bad in ["", "a/b", "..", ".hidden", "x y", "a\nb", &"n".repeat(65)] {
            assert!(
                matches!(check_name(bad), Err(ThrottleError::InvalidName(_))),
                "{bad:?}"
            );
        }
        for good in ["node-1", "ray_worker.2", "A"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_spec_without_cgroups_is_unchanged() {
        let spec = TreeSpec {
            program: "/bin/echo".into(),
            args: vec!["hi".into()],
            ..TreeSpec::default()
        };
        let wrapped = wrap_spec(&[], spec);
        assert_eq!(wrapped.program, Path::new("/bin/echo"));
        assert_eq!(wrapped.args, vec![OsString::from("hi")]);
    }

    #[test]
    fn a_wrapped_spec_enters_every_cgroup_then_runs_the_program() {
        let spec = TreeSpec {
            program: "/bin/echo".into(),
            args: vec!["a b".into(), "c".into()],
            marker: "m".into(),
            ..TreeSpec::default()
        };
        let procs = [
            PathBuf::from("/cg/cpu/x/cgroup.procs"),
            PathBuf::from("/cg/f/x/cgroup.procs"),
        ];
        let wrapped = wrap_spec(&procs, spec);
        assert_eq!(wrapped.program, Path::new("/bin/sh"));
        let args: Vec<&str> = wrapped.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-c",
                ENTER,
                "flotilla-enter",
                "2",
                "/cg/cpu/x/cgroup.procs",
                "/cg/f/x/cgroup.procs",
                "/bin/echo",
                "a b",
                "c"
            ]
        );
        assert_eq!(wrapped.marker, "m");
    }

    #[cfg(unix)]
    #[test]
    fn the_enter_script_writes_zero_into_each_file_and_execs_with_the_arguments_intact() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a.procs");
        let b = tmp.path().join("b.procs");
        let spec = TreeSpec {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "printf '%s|' \"$@\"".into(),
                "sh".into(),
                "x y".into(),
                "z".into(),
            ],
            ..TreeSpec::default()
        };
        let wrapped = wrap_spec(&[a.clone(), b.clone()], spec);
        let out = std::process::Command::new(&wrapped.program)
            .args(&wrapped.args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x y|z|");
        assert_eq!(std::fs::read_to_string(a).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(b).unwrap(), "0");
    }

    #[cfg(unix)]
    #[test]
    fn the_enter_script_refuses_to_run_the_program_outside_the_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let ran = tmp.path().join("ran");
        let spec = TreeSpec {
            program: "/usr/bin/touch".into(),
            args: vec![ran.clone().into()],
            ..TreeSpec::default()
        };
        let missing = tmp.path().join("no-such-dir").join("cgroup.procs");
        let wrapped = wrap_spec(&[missing], spec);
        let out = std::process::Command::new(&wrapped.program)
            .args(&wrapped.args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot enter the throttle cgroup"));
        assert!(!ran.exists());
    }
}
