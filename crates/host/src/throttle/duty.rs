//! The fallback without cgroups: a `SIGSTOP`/`SIGCONT` duty cycle over the tree's processes.
//!
//! Each [`PERIOD`] a background thread finds the tree's processes again (by the marker, so new
//! ones are caught within a period), lets them run for a fraction of the period, then stops
//! them for the rest.
//!
//! The approximation: a cap of `c` cores on an `N`-core machine must leave the tree `c` cores'
//! worth of time per period, but while it runs each of its processes can use a core. So the
//! fraction of the period it runs is `c / min(N, busy)`, where `busy` is the number of its
//! processes that used CPU during the previous period (a process that ran only briefly counts
//! as busy, which errs towards throttling harder). The time is not exact: a process keeps its
//! core until the signal reaches it, the estimate lags a change in the tree by a period, and
//! the accounting has clock-tick (10 ms) resolution. A freeze is `SIGSTOP` to each process in
//! turn, so not atomic, and a process forked during it is stopped at the next period.
//!
//! Signals are sent only to positive pids other than the agent's own, so a stale or bogus pid
//! never becomes a process-group or self signal.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{BackendKind, Guarantees, PERIOD};
use crate::process::marked_processes;

/// `leader` and every live process carrying `marker`, the agent itself excluded.
pub fn tree_pids(leader: u32, marker: &str) -> Vec<u32> {
    let mut pids = marked_processes(marker);
    if !pids.contains(&leader) && std::path::Path::new(&format!("/proc/{leader}")).exists() {
        pids.push(leader);
    }
    let me = std::process::id();
    pids.retain(|&p| p != me && p != 0);
    pids
}

/// Sends `signal` to each pid; ones that have exited are skipped silently.
pub fn signal(pids: &[u32], signal: i32) {
    for target in pids.iter().filter_map(|&pid| signallable(pid)) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(target, signal) };
    }
}

/// `pid` as a `kill` target, unless it would address a process group (0, or negative once
/// converted) or the agent itself.
fn signallable(pid: u32) -> Option<i32> {
    i32::try_from(pid)
        .ok()
        .filter(|&target| target > 0 && pid != std::process::id())
}

/// CPU times of one process from `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticks {
    /// `utime + stime`: the process's own.
    pub own: u64,
    /// `cutime + cstime`: its children that have exited and that it has waited for.
    pub children: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The name (field 2) may hold spaces and parentheses,
/// so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Ticks> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; utime is field 14.
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    match fields[..] {
        [utime, stime, cutime, cstime] => Some(Ticks {
            own: utime + stime,
            children: cutime + cstime,
        }),
        _ => None,
    }
}

fn ticks(pid: u32) -> Option<Ticks> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// The CPU time of `pids` and of the children they have waited for; `None` if none could be
/// read.
pub fn cpu_time_of(pids: &[u32]) -> Option<Duration> {
    let all: Vec<Ticks> = pids.iter().filter_map(|&p| ticks(p)).collect();
    if all.is_empty() && !pids.is_empty() {
        return None;
    }
    let total: u64 = all.iter().map(|t| t.own + t.children).sum();
    let hz = ticks_per_second();
    Some(Duration::from_secs(total / hz) + Duration::from_nanos(total % hz * 1_000_000_000 / hz))
}

/// The resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`); `None` for a
/// process that is gone or has no memory of its own (a kernel thread, a zombie).
pub fn resident(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// The resident memory of `pids` together; `None` if none could be read.
pub fn resident_of(pids: &[u32]) -> Option<u64> {
    let all: Vec<u64> = pids.iter().filter_map(|&p| resident(p)).collect();
    (!all.is_empty() || pids.is_empty()).then(|| all.iter().sum())
}

/// `pids` with their resident memory, largest first; those gone are left out.
pub fn by_memory(pids: &[u32]) -> Vec<(u32, u64)> {
    let mut all: Vec<(u32, u64)> = pids
        .iter()
        .filter_map(|&p| Some((p, resident(p)?)))
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all
}

/// The fraction of each period the tree may run: see the module's documentation.
pub fn duty_fraction(cpus: f64, cores: usize, busy: usize) -> f64 {
    let usable = busy.min(cores).max(1) as f64;
    (cpus / usable).clamp(0.0, 1.0)
}

#[derive(Debug)]
struct State {
    cap: Option<f64>,
    frozen: bool,
    stop: bool,
    /// Bumped on every change, so a waiting thread can tell a change from a timeout.
    generation: u64,
    /// Every process this backend has stopped and not yet continued.
    stopped: BTreeSet<u32>,
}

impl State {
    fn stop_all(&mut self, pids: &[u32]) {
        signal(pids, libc::SIGSTOP);
        self.stopped.extend(pids);
    }

    fn continue_all(&mut self) {
        let pids: Vec<u32> = std::mem::take(&mut self.stopped).into_iter().collect();
        signal(&pids, libc::SIGCONT);
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every field is valid alone.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The duty cycle of one tree; dropping it continues every process it stopped.
#[derive(Debug)]
pub struct DutyCycle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    leader: u32,
    marker: String,
}

impl DutyCycle {
    pub fn start(leader: u32, marker: &str) -> std::io::Result<DutyCycle> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                cap: None,
                frozen: false,
                stop: false,
                generation: 0,
                stopped: BTreeSet::new(),
            }),
            changed: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let marker = marker.to_owned();
            std::thread::Builder::new()
                .name(format!("throttle-{leader}"))
                .spawn(move || run(&shared, leader, &marker))?
        };
        Ok(DutyCycle {
            shared,
            thread: Some(thread),
            leader,
            marker: marker.into(),
        })
    }

    pub fn set_cap(&self, cap: Option<f64>) {
        let mut state = self.shared.lock();
        state.cap = cap;
        state.generation += 1;
        if cap.is_none() && !state.frozen {
            // Release at once rather than at the thread's next turn.
            state.continue_all();
        }
        self.shared.changed.notify_all();
    }

    pub fn freeze(&self, on: bool) {
        let mut state = self.shared.lock();
        state.frozen = on;
        state.generation += 1;
        // Done here, not by the thread, so the tree is stopped (or running) when this returns.
        if on {
            state.stop_all(&tree_pids(self.leader, &self.marker));
        } else {
            state.continue_all();
        }
        self.shared.changed.notify_all();
    }

    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time_of(&tree_pids(self.leader, &self.marker))
    }

    pub fn guarantees(&self) -> Guarantees {
        Guarantees {
            backend: BackendKind::Signals.name(),
            hard_cap: false,
            atomic_freeze: false,
            memory_ceiling: false,
        }
    }

    pub fn memory_used(&self) -> Option<u64> {
        resident_of(&tree_pids(self.leader, &self.marker))
    }

    pub fn processes_by_memory(&self) -> Vec<(u32, u64)> {
        by_memory(&tree_pids(self.leader, &self.marker))
    }

    pub fn kill(&self) {
        // SIGKILL ends stopped processes too.
        signal(&tree_pids(self.leader, &self.marker), libc::SIGKILL);
    }
}

impl Drop for DutyCycle {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stop = true;
            state.generation += 1;
            self.shared.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut state = self.shared.lock();
        state.continue_all();
        // Also whatever a stop raced with: SIGCONT to a running process does nothing.
        signal(&tree_pids(self.leader, &self.marker), libc::SIGCONT);
    }
}

/// The thread: holds the lock except while waiting, so its signals never interleave with
/// [`DutyCycle::set_cap`] and [`DutyCycle::freeze`].
fn run(shared: &Shared, leader: u32, marker: &str) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut busy_estimate: Option<usize> = None;
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        let generation = state.generation;
        let unchanged = |s: &mut State| s.generation == generation;
        if state.frozen {
            // Catches processes started since the freeze.
            state.stop_all(&tree_pids(leader, marker));
            state = shared
                .changed
                .wait_timeout_while(state, PERIOD, unchanged)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        let Some(cpus) = state.cap else {
            state.continue_all();
            last.clear();
            busy_estimate = None;
            state = shared
                .changed
                .wait_while(state, unchanged)
                .unwrap_or_else(|e| e.into_inner());
            continue;
        };
        // The scan runs while the tree is stopped (at the end of the previous period), and
        // its time is taken from the next stopped phase, so the period stays [`PERIOD`].
        let scan_start = Instant::now();
        let pids = tree_pids(leader, marker);
        let now: HashMap<u32, u64> = pids
            .iter()
            .filter_map(|&p| Some((p, ticks(p)?.own)))
            .collect();
        let ran = now
            .iter()
            .filter(|(p, t)| last.get(p).is_some_and(|before| *t > before))
            .count();
        // Nobody ran (the first period, or a period too short for a clock tick): keep the last
        // estimate, or assume every process is busy.
        let busy = if ran > 0 {
            ran
        } else {
            busy_estimate.unwrap_or(pids.len())
        };
        busy_estimate = Some(busy);
        last = now;
        let duty = duty_fraction(cpus, cores, busy);
        let run_for = PERIOD.mul_f64(duty);
        let rest = PERIOD.saturating_sub(run_for + scan_start.elapsed());
        state.continue_all();
        let (next, timeout) = shared
            .changed
            .wait_timeout_while(state, run_for, unchanged)
            .unwrap_or_else(|e| e.into_inner());
        state = next;
        if !timeout.timed_out() || duty >= 1.0 {
            continue;
        }
        // The processes known are stopped first; the scan for new ones would delay them.
        state.stop_all(&pids);
        let newcomers: Vec<u32> = tree_pids(leader, marker)
            .into_iter()
            .filter(|p| !pids.contains(p))
            .collect();
        state.stop_all(&newcomers);
        state = shared
            .changed
            .wait_timeout_while(state, rest, unchanged)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "1234 (ray::IDLE (x) y) R 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Ticks {
                own: 300,
                children: 10
            })
        );
        assert_eq!(parse_stat("1 (short) S 0 1"), None);
    }

    #[test]
    fn the_duty_is_the_cap_over_the_cores_the_tree_can_use() {
        assert_eq!(duty_fraction(1.0, 2, 2), 0.5);
        assert_eq!(
            duty_fraction(1.0, 2, 8),
            0.5,
            "at most one core per process"
        );
        assert_eq!(
            duty_fraction(1.0, 8, 1),
            1.0,
            "one busy process fits in one core"
        );
        assert_eq!(duty_fraction(0.5, 8, 1), 0.5);
        assert_eq!(
            duty_fraction(0.5, 4, 0),
            0.5,
            "an idle tree counts as one process"
        );
        assert_eq!(duty_fraction(16.0, 4, 4), 1.0);
    }

    #[test]
    fn pids_that_would_address_a_group_or_the_agent_are_never_signalled() {
        assert_eq!(signallable(0), None);
        assert_eq!(signallable(u32::MAX), None, "-1: every process");
        assert_eq!(signallable(1 << 31), None);
        assert_eq!(signallable(std::process::id()), None);
        let other = if std::process::id() == 4321 {
            4322
        } else {
            4321
        };
        assert_eq!(signallable(other), Some(other as i32));
    }

    #[test]
    fn cpu_time_adds_own_and_waited_children_ticks() {
        let me = std::process::id();
        assert!(cpu_time_of(&[me]).is_some());
        assert_eq!(cpu_time_of(&[]), Some(Duration::ZERO));
        assert_eq!(cpu_time_of(&[u32::MAX]), None);
    }
}
