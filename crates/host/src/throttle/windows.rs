//! Windows: a Job Object with a hard CPU rate cap; see the module's documentation.
//!
//! The facade hands [`Prepared::attach`] a process id, not the `ProcessTree`, so the job the
//! tree already lives in (`process::windows`, kill-on-close) is out of reach. The throttle makes
//! its own job and assigns the leader to it; since the leader is already in a job, Windows nests
//! the new one inside (Windows 8 and later). No parent job has a CPU rate control, so the rate is
//! a share of the whole machine. The throttle's job does not kill on close: when it is dropped
//! the cap is lifted and the processes keep running.
//!
//! CPU rate control is unavailable under Remote Desktop Services with Dynamic Fair Share
//! Scheduling; [`Backend::set_cap`] then fails.

use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_CPU_RATE_CONTROL_ENABLE,
    JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP, JOB_OBJECT_LIMIT_JOB_MEMORY,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_BASIC_PROCESS_ID_LIST,
    JOBOBJECT_CPU_RATE_CONTROL_INFORMATION, JOBOBJECT_CPU_RATE_CONTROL_INFORMATION_0,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectBasicAccountingInformation,
    JobObjectBasicProcessIdList, JobObjectCpuRateControlInformation,
    JobObjectExtendedLimitInformation, QueryInformationJobObject, SetInformationJobObject,
    TerminateJobObject,
};
use windows_sys::Win32::System::ProcessStatus::{
    K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS, PROCESS_MEMORY_COUNTERS_EX,
};
use windows_sys::Win32::System::Threading::{
    ALL_PROCESSOR_GROUPS, GetActiveProcessorCount, IDLE_PRIORITY_CLASS, OpenProcess,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SET_INFORMATION, PROCESS_SET_QUOTA,
    PROCESS_TERMINATE, SetPriorityClass,
};

use super::plan::{WINDOWS_RATE_FULL, WINDOWS_RATE_MIN, windows_cpu_rate};
use super::{BackendKind, Guarantees, MemoryCeiling, Result, ThrottleConfig, ThrottleError};

const KIND: BackendKind = BackendKind::JobObject;

const HARD_CAP: u32 = JOB_OBJECT_CPU_RATE_CONTROL_ENABLE | JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP;

/// An open kernel handle, closed on drop.
#[derive(Debug)]
struct Handle(HANDLE);

// SAFETY: a kernel handle is valid in every thread of the process.
unsafe impl Send for Handle {}
// SAFETY: the handle is only passed to kernel calls, which are thread-safe.
unsafe impl Sync for Handle {}

impl Handle {
    fn new(raw: HANDLE) -> io::Result<Handle> {
        if raw.is_null() {
            Err(io::Error::last_os_error())
        } else {
            Ok(Handle(raw))
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is open (checked in `new`) and closed once, here.
        unsafe { CloseHandle(self.0) };
    }
}

#[derive(Debug)]
pub struct Prepared {
    job: Handle,
    name: String,
    idle: bool,
}

#[derive(Debug)]
pub struct Backend {
    job: Handle,
    name: String,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    cap: Option<f64>,
    frozen: bool,
}

fn io_error(op: &'static str, what: String, source: io::Error) -> ThrottleError {
    ThrottleError::Io {
        op,
        path: PathBuf::from(what),
        source,
    }
}

/// Windows: a Job Object goes with its last handle, so a killed agent leaves nothing behind.
pub fn remove_stale(_config: &ThrottleConfig, _node: &str) -> Vec<PathBuf> {
    Vec::new()
}

pub fn prepare(config: &ThrottleConfig, name: &str) -> Result<Prepared> {
    if let Some(kind) = config.force_backend
        && kind != KIND
    {
        return Err(ThrottleError::Unavailable {
            backend: kind.name(),
            reason: format!("Windows has only the {} backend", KIND.name()),
        });
    }
    let name = format!("flotilla-{name}");
    // SAFETY: null attributes and name are allowed and create an anonymous job.
    let job = Handle::new(unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) })
        .map_err(|e| io_error("create", format!("job object {name}"), e))?;
    Ok(Prepared {
        job,
        name,
        idle: config.idle,
    })
}

fn guarantees() -> Guarantees {
    Guarantees {
        backend: KIND.name(),
        hard_cap: true,
        atomic_freeze: false,
        memory_ceiling: true,
    }
}

impl Prepared {
    pub fn procs_files(&self) -> &[PathBuf] {
        &[]
    }

    /// No group weight: each process carries the idle priority class itself.
    pub fn idle_group(&self) -> bool {
        false
    }

    pub fn guarantees(&self) -> Guarantees {
        guarantees()
    }

    pub fn attach(self, leader: u32, _marker: &str) -> Result<Backend> {
        let what = || format!("process {leader}");
        let access = PROCESS_SET_QUOTA | PROCESS_TERMINATE | PROCESS_SET_INFORMATION;
        // SAFETY: OpenProcess has no memory-safety preconditions; `Handle::new` checks the result.
        let process = Handle::new(unsafe { OpenProcess(access, 0, leader) })
            .map_err(|e| io_error("open", what(), e))?;
        // SAFETY: both handles are open for the duration of the call.
        if unsafe { AssignProcessToJobObject(self.job.0, process.0) } == 0 {
            let e = io::Error::last_os_error();
            return Err(io_error("assign the throttle's job object to", what(), e));
        }
        // SAFETY: the handle is open and has PROCESS_SET_INFORMATION.
        if self.idle && unsafe { SetPriorityClass(process.0, IDLE_PRIORITY_CLASS) } == 0 {
            let e = io::Error::last_os_error();
            tracing::warn!(
                pid = leader,
                "cannot give the tree the idle priority class: {e}"
            );
        }
        Ok(Backend {
            job: self.job,
            name: self.name,
            state: Mutex::new(State::default()),
        })
    }
}

/// The private committed memory of process `pid` (`PrivateUsage`).
fn private_bytes(pid: u32) -> Option<u64> {
    // SAFETY: OpenProcess has no memory-safety preconditions; `Handle::new` checks the result.
    let process =
        Handle::new(unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) }).ok()?;
    let mut counters = PROCESS_MEMORY_COUNTERS_EX {
        cb: std::mem::size_of::<PROCESS_MEMORY_COUNTERS_EX>() as u32,
        ..Default::default()
    };
    // SAFETY: the handle is open; `counters` is the extended structure its `cb` names, writable
    // and outliving the call.
    let ok = unsafe {
        K32GetProcessMemoryInfo(
            process.0,
            (&raw mut counters).cast::<PROCESS_MEMORY_COUNTERS>(),
            counters.cb,
        )
    };
    (ok != 0).then_some(counters.PrivateUsage as u64)
}

/// Logical processors in all processor groups.
fn logical_cpus() -> u32 {
    // SAFETY: GetActiveProcessorCount has no preconditions.
    match unsafe { GetActiveProcessorCount(ALL_PROCESSOR_GROUPS) } {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        n => n,
    }
}

impl Backend {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Both fields are valid alone, so a holder's panic leaves nothing inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `next` in force, then records it.
    fn change(&self, f: impl FnOnce(&mut State)) -> Result<()> {
        let mut state = self.lock();
        let mut next = *state;
        f(&mut next);
        self.apply(next)?;
        *state = next;
        Ok(())
    }

    fn apply(&self, state: State) -> Result<()> {
        if state.frozen {
            return self.set_rate(HARD_CAP, WINDOWS_RATE_MIN);
        }
        match state.cap {
            Some(cpus) => self.set_rate(HARD_CAP, windows_cpu_rate(cpus, logical_cpus())),
            // No flags turn the control off; a cap at the whole machine is the same, should
            // Windows refuse that.
            None => self
                .set_rate(0, WINDOWS_RATE_FULL)
                .or_else(|_| self.set_rate(HARD_CAP, WINDOWS_RATE_FULL)),
        }
    }

    fn set_rate(&self, flags: u32, rate: u32) -> Result<()> {
        let info = JOBOBJECT_CPU_RATE_CONTROL_INFORMATION {
            ControlFlags: flags,
            Anonymous: JOBOBJECT_CPU_RATE_CONTROL_INFORMATION_0 { CpuRate: rate },
        };
        // SAFETY: `info` is the structure the class names, and outlives the call.
        let ok = unsafe {
            SetInformationJobObject(
                self.job.0,
                JobObjectCpuRateControlInformation,
                (&raw const info).cast(),
                std::mem::size_of::<JOBOBJECT_CPU_RATE_CONTROL_INFORMATION>() as u32,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            // ERROR_NOT_SUPPORTED, ERROR_INVALID_PARAMETER: the system has no CPU rate control
            // for jobs at all, which no retry changes.
            if matches!(e.raw_os_error(), Some(50 | 87)) {
                return Err(ThrottleError::Unavailable {
                    backend: KIND.name(),
                    reason: format!(
                        "this system refuses CPU rate control on a job ({e}); Wine has none, and \
                         Windows none under Remote Desktop's Dynamic Fair Share Scheduling"
                    ),
                });
            }
            return Err(io_error(
                "set the CPU rate of",
                format!("job object {}", self.name),
                e,
            ));
        }
        Ok(())
    }

    pub fn set_cap(&self, cap: Option<f64>) -> Result<()> {
        self.change(|s| s.cap = cap)
    }

    /// Windows cannot suspend a job (short of the undocumented `NtSuspendProcess` on each
    /// process), so a freeze is the smallest rate: 0.01 % of the machine.
    pub fn freeze(&self, on: bool) -> Result<()> {
        self.change(|s| s.frozen = on)
    }

    /// The job's CPU rate control as Windows holds it: (control flags, rate).
    #[cfg(test)]
    pub fn cpu_rate(&self) -> Option<(u32, u32)> {
        let mut info = JOBOBJECT_CPU_RATE_CONTROL_INFORMATION {
            ControlFlags: 0,
            Anonymous: JOBOBJECT_CPU_RATE_CONTROL_INFORMATION_0 { CpuRate: 0 },
        };
        // SAFETY: `info` is the structure the class names, writable and outliving the call.
        let ok = unsafe {
            QueryInformationJobObject(
                self.job.0,
                JobObjectCpuRateControlInformation,
                (&raw mut info).cast(),
                std::mem::size_of::<JOBOBJECT_CPU_RATE_CONTROL_INFORMATION>() as u32,
                std::ptr::null_mut(),
            )
        };
        // SAFETY: every member of the union is a u32.
        let rate = unsafe { info.Anonymous.CpuRate };
        (ok != 0).then_some((info.ControlFlags, rate))
    }

    /// The time of every process since it entered the job, exited ones included.
    pub fn cpu_time(&self) -> Option<Duration> {
        let mut info = JOBOBJECT_BASIC_ACCOUNTING_INFORMATION::default();
        // SAFETY: `info` is the structure the class names, writable and outliving the call; the
        // returned length may be null.
        let ok = unsafe {
            QueryInformationJobObject(
                self.job.0,
                JobObjectBasicAccountingInformation,
                (&raw mut info).cast(),
                std::mem::size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return None;
        }
        // In 100 ns units.
        let user = u64::try_from(info.TotalUserTime).ok()?;
        let kernel = u64::try_from(info.TotalKernelTime).ok()?;
        Some(Duration::from_nanos(
            user.saturating_add(kernel).saturating_mul(100),
        ))
    }

    pub fn guarantees(&self) -> Guarantees {
        guarantees()
    }

    /// The job's `JobMemoryLimit`: a commit that would take the job past it fails. Memory
    /// committed before a lower limit stays committed; the caller sheds work then.
    pub fn set_memory_limit(&self, limit: Option<u64>) -> Result<MemoryCeiling> {
        let mut info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
        if let Some(bytes) = limit {
            info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_JOB_MEMORY;
            info.JobMemoryLimit = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        // SAFETY: `info` is the structure the class names, and outlives the call.
        let ok = unsafe {
            SetInformationJobObject(
                self.job.0,
                JobObjectExtendedLimitInformation,
                (&raw const info).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            return Err(io_error(
                "set the memory limit of",
                format!("job object {}", self.name),
                e,
            ));
        }
        Ok(MemoryCeiling::Held)
    }

    /// The ids of the job's processes (up to 4,096; a Ray node has far fewer).
    fn pids(&self) -> Vec<u32> {
        const MAX: usize = 4096;
        // The structure's two counts, then the ids: room for MAX of them, as usize-aligned words.
        let mut buf: Vec<usize> = vec![0; MAX + 2];
        let bytes = u32::try_from(std::mem::size_of_val(buf.as_slice())).unwrap_or(u32::MAX);
        // SAFETY: the buffer is writable for `bytes` bytes, aligned for the structure, and
        // outlives the call.
        let ok = unsafe {
            QueryInformationJobObject(
                self.job.0,
                JobObjectBasicProcessIdList,
                buf.as_mut_ptr().cast(),
                bytes,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Vec::new();
        }
        // SAFETY: Windows filled the structure's header at the start of the buffer.
        let list = unsafe { &*buf.as_ptr().cast::<JOBOBJECT_BASIC_PROCESS_ID_LIST>() };
        let n = (list.NumberOfProcessIdsInList as usize).min(MAX);
        let offset = std::mem::offset_of!(JOBOBJECT_BASIC_PROCESS_ID_LIST, ProcessIdList)
            / std::mem::size_of::<usize>();
        buf[offset..offset + n]
            .iter()
            .filter_map(|&id| u32::try_from(id).ok())
            .collect()
    }

    /// The job's processes with their private committed memory, largest first.
    pub fn processes_by_memory(&self) -> Vec<(u32, u64)> {
        let mut all: Vec<(u32, u64)> = self
            .pids()
            .into_iter()
            .filter_map(|pid| Some((pid, private_bytes(pid)?)))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all
    }

    /// The private committed memory of the job's processes together (what `JobMemoryLimit`
    /// counts).
    pub fn memory_used(&self) -> Option<u64> {
        let pids = self.pids();
        let all: Vec<u64> = pids.iter().filter_map(|&p| private_bytes(p)).collect();
        (!all.is_empty() || pids.is_empty()).then(|| all.iter().sum())
    }

    pub fn kill(&self) {
        // SAFETY: the job handle is open while `self` lives.
        unsafe { TerminateJobObject(self.job.0, 1) };
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // The job outlives its handle while it has processes: lift the cap first.
        if let Err(e) = self.apply(State::default()) {
            tracing::warn!("cannot lift the CPU cap of the throttled tree: {e}");
        }
        if let Err(e) = self.set_memory_limit(None) {
            tracing::warn!("cannot lift the memory limit of the throttled tree: {e}");
        }
    }
}
