//! macOS: the Darwin background band, and a `SIGSTOP`/`SIGCONT` duty cycle over the tree's
//! process group; see the module's documentation.
//!
//! The tree is its leader's process group (`ProcessTree::spawn` makes the leader a group leader):
//! macOS cannot find processes by their marker. Each [`PERIOD`] a thread lets the group run for
//! [`duty_split`] of it and stops it for the rest. Once a signal finds the group gone, nothing is
//! signalled any more, since its id may then be reused. If the leader exits while the others are
//! stopped, the kernel sends the orphaned group `SIGHUP` and `SIGCONT`; the tree is ending then.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::plan::{darwin_background, duty_split, mach_ticks_to_duration};
use super::{
    BackendKind, Guarantees, MemoryCeiling, PERIOD, Result, ThrottleConfig, ThrottleError,
};

const KIND: BackendKind = BackendKind::DarwinBackground;

#[derive(Debug)]
pub struct Prepared {
    idle: bool,
}

#[derive(Debug)]
pub struct Backend {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    group: libc::pid_t,
}

/// macOS: a throttle leaves nothing behind when its agent is killed (a duty cycle ends with
/// its thread, the background band is per process).
pub fn remove_stale(_config: &ThrottleConfig, _node: &str) -> Vec<PathBuf> {
    Vec::new()
}

pub fn prepare(config: &ThrottleConfig, _name: &str) -> Result<Prepared> {
    match config.force_backend {
        Some(kind) if kind != KIND => Err(ThrottleError::Unavailable {
            backend: kind.name(),
            reason: format!("macOS has only the {} backend", KIND.name()),
        }),
        _ => Ok(Prepared { idle: config.idle }),
    }
}

fn guarantees() -> Guarantees {
    Guarantees {
        backend: KIND.name(),
        hard_cap: false,
        atomic_freeze: false,
        memory_ceiling: false,
    }
}

impl Prepared {
    pub fn procs_files(&self) -> &[PathBuf] {
        &[]
    }

    /// No group weight: each process carries the background band itself.
    pub fn idle_group(&self) -> bool {
        false
    }

    pub fn guarantees(&self) -> Guarantees {
        guarantees()
    }

    pub fn attach(self, leader: u32, _marker: &str) -> Result<Backend> {
        let group = tree_group(leader).ok_or_else(|| ThrottleError::Unavailable {
            backend: KIND.name(),
            reason: format!("process {leader} does not lead a process group of its own"),
        })?;
        if self.idle {
            for pid in group_pids(group) {
                // SAFETY: setpriority has no memory-safety preconditions; `pid` is positive.
                let rc = unsafe {
                    libc::setpriority(
                        libc::PRIO_DARWIN_PROCESS,
                        pid as libc::id_t,
                        libc::PRIO_DARWIN_BG,
                    )
                };
                if rc != 0 {
                    let e = std::io::Error::last_os_error();
                    tracing::warn!(pid, "cannot put the process in the background band: {e}");
                }
            }
            // Read back: the kernel answers for the band it applies, which a sandbox or a
            // policy of the system's may overrule.
            let pids = group_pids(group);
            let outside: Vec<libc::pid_t> = pids
                .iter()
                .copied()
                .filter(|&pid| {
                    // SAFETY: getpriority has no memory-safety preconditions.
                    let v =
                        unsafe { libc::getpriority(libc::PRIO_DARWIN_PROCESS, pid as libc::id_t) };
                    !darwin_background(v)
                })
                .collect();
            if !outside.is_empty() {
                tracing::warn!(
                    ?outside,
                    of = pids.len(),
                    "processes of the node are not in the background band"
                );
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("throttle-{leader}"))
                .spawn(move || run(&shared, group))
                .map_err(|source| ThrottleError::Io {
                    op: "start the duty-cycle thread for",
                    path: PathBuf::from(format!("process group {group}")),
                    source,
                })?
        };
        Ok(Backend {
            shared,
            thread: Some(thread),
            group,
        })
    }
}

/// `leader` as a process group to signal: it must lead its own group, and that group must not
/// be the agent's (nor 0 or 1, which `killpg` treats specially).
fn tree_group(leader: u32) -> Option<libc::pid_t> {
    let pid = libc::pid_t::try_from(leader).ok().filter(|&p| p > 1)?;
    // SAFETY: getpgid and getpgrp have no memory-safety preconditions.
    let (group, own) = unsafe { (libc::getpgid(pid), libc::getpgrp()) };
    (group == pid && group != own).then_some(group)
}

/// The live (or not yet reaped) processes of `group`, up to 4096 (a Ray node has far fewer).
fn group_pids(group: libc::pid_t) -> Vec<libc::pid_t> {
    let mut pids: Vec<libc::pid_t> = vec![0; 4096];
    let bytes = libc::c_int::try_from(std::mem::size_of_val(pids.as_slice())).unwrap_or(0);
    // SAFETY: the buffer is writable for `bytes` bytes and outlives the call.
    let n = unsafe { libc::proc_listpgrppids(group, pids.as_mut_ptr().cast(), bytes) };
    pids.truncate(usize::try_from(n).unwrap_or(0));
    pids.retain(|&p| p > 0);
    pids
}

/// Own and waited-for children's CPU time of `pid`, in Mach absolute-time ticks.
fn rusage_ticks(pid: libc::pid_t) -> Option<u64> {
    // SAFETY: rusage_info_v2 is plain integers; all-zero is a valid value.
    let mut i: libc::rusage_info_v2 = unsafe { std::mem::zeroed() };
    // SAFETY: `i` is the struct RUSAGE_INFO_V2 names, writable and outliving the call.
    let rc = unsafe { libc::proc_pid_rusage(pid, libc::RUSAGE_INFO_V2, (&raw mut i).cast()) };
    let ticks = [
        i.ri_user_time,
        i.ri_system_time,
        i.ri_child_user_time,
        i.ri_child_system_time,
    ];
    (rc == 0).then(|| ticks.iter().fold(0u64, |sum, t| sum.saturating_add(*t)))
}

/// The memory `pid` holds as macOS counts it against the machine (`ri_phys_footprint`: resident
/// and compressed private memory, what Activity Monitor shows).
fn footprint(pid: libc::pid_t) -> Option<u64> {
    // SAFETY: rusage_info_v2 is plain integers; all-zero is a valid value.
    let mut i: libc::rusage_info_v2 = unsafe { std::mem::zeroed() };
    // SAFETY: `i` is the struct RUSAGE_INFO_V2 names, writable and outliving the call.
    let rc = unsafe { libc::proc_pid_rusage(pid, libc::RUSAGE_INFO_V2, (&raw mut i).cast()) };
    (rc == 0).then_some(i.ri_phys_footprint)
}

#[allow(deprecated)] // libc points to the mach2 crate for these; they are still the system's.
fn mach_timebase() -> (u32, u32) {
    let mut base = libc::mach_timebase_info { numer: 0, denom: 0 };
    // SAFETY: `base` is writable and outlives the call.
    let rc = unsafe { libc::mach_timebase_info(&mut base) };
    if rc == 0 {
        (base.numer, base.denom)
    } else {
        (1, 1)
    }
}

#[derive(Debug, Default)]
struct State {
    cap: Option<f64>,
    frozen: bool,
    stop: bool,
    /// Bumped on every change, so a waiting thread can tell a change from a timeout.
    generation: u64,
    /// The group was found gone (`ESRCH`): it is never signalled again, as its id may be reused.
    gone: bool,
}

impl State {
    fn signal(&mut self, group: libc::pid_t, signal: libc::c_int) {
        if self.gone {
            return;
        }
        // SAFETY: killpg has no memory-safety preconditions; `group` passed `tree_group`.
        let rc = unsafe { libc::killpg(group, signal) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            self.gone = true;
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every field is valid alone, so a holder's panic leaves nothing inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn change(&self, group: libc::pid_t, f: impl FnOnce(&mut State) -> Option<libc::c_int>) {
        let mut state = self.lock();
        state.generation += 1;
        // Signalled here, not by the thread, so the change is in force when this returns.
        if let Some(signal) = f(&mut state) {
            state.signal(group, signal);
        }
        self.changed.notify_all();
    }
}

impl Backend {
    pub fn set_cap(&self, cap: Option<f64>) -> Result<()> {
        self.shared.change(self.group, |s| {
            s.cap = cap;
            (cap.is_none() && !s.frozen).then_some(libc::SIGCONT)
        });
        Ok(())
    }

    pub fn freeze(&self, on: bool) -> Result<()> {
        self.shared.change(self.group, |s| {
            s.frozen = on;
            Some(if on { libc::SIGSTOP } else { libc::SIGCONT })
        });
        Ok(())
    }

    /// The live processes of the group and the children they have waited for.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pids = group_pids(self.group);
        let all: Vec<u64> = pids.iter().filter_map(|&p| rusage_ticks(p)).collect();
        if all.is_empty() && !pids.is_empty() {
            return None;
        }
        let (numer, denom) = mach_timebase();
        let ticks = all.iter().fold(0u64, |sum, t| sum.saturating_add(*t));
        Some(mach_ticks_to_duration(ticks, numer, denom))
    }

    pub fn guarantees(&self) -> Guarantees {
        guarantees()
    }

    /// macOS has no memory ceiling for a group of processes: the caller sheds work.
    pub fn set_memory_limit(&self, _limit: Option<u64>) -> Result<MemoryCeiling> {
        Ok(MemoryCeiling::NotHeld)
    }

    /// The footprints of the group's processes together.
    pub fn memory_used(&self) -> Option<u64> {
        let pids = group_pids(self.group);
        let all: Vec<u64> = pids.iter().filter_map(|&p| footprint(p)).collect();
        (!all.is_empty() || pids.is_empty()).then(|| all.iter().sum())
    }

    pub fn processes_by_memory(&self) -> Vec<(u32, u64)> {
        let mut all: Vec<(u32, u64)> = group_pids(self.group)
            .into_iter()
            .filter_map(|p| Some((u32::try_from(p).ok()?, footprint(p)?)))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all
    }

    pub fn kill(&self) {
        self.shared.lock().signal(self.group, libc::SIGKILL);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.change(self.group, |s| {
            s.stop = true;
            None
        });
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.lock().signal(self.group, libc::SIGCONT);
    }
}

/// The duty cycle. It holds the lock except while waiting, so its signals never interleave with
/// [`Backend::set_cap`] and [`Backend::freeze`].
fn run(shared: &Shared, group: libc::pid_t) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = u32::try_from(cores).unwrap_or(u32::MAX);
    let mut state = shared.lock();
    while !state.stop {
        let generation = state.generation;
        let unchanged = |s: &mut State| s.generation == generation;
        let (run_for, stop_for) = match (state.frozen, state.cap) {
            // Stopped again every period: catches a process forked while the group stopped.
            (true, _) => (Duration::ZERO, PERIOD),
            (false, Some(cpus)) => duty_split(cpus, cores, PERIOD),
            (false, None) => (PERIOD, Duration::ZERO),
        };
        if !run_for.is_zero() {
            state.signal(group, libc::SIGCONT);
            if stop_for.is_zero() {
                // Nothing to do until the next change.
                state = shared
                    .changed
                    .wait_while(state, unchanged)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let (next, timeout) = shared
                .changed
                .wait_timeout_while(state, run_for, unchanged)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            if !timeout.timed_out() {
                continue;
            }
        }
        state.signal(group, libc::SIGSTOP);
        state = shared
            .changed
            .wait_timeout_while(state, stop_for, unchanged)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
