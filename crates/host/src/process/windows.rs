//! Windows: each tree lives in a Job Object with `KILL_ON_JOB_CLOSE`, so the tree ends when the
//! agent's handle closes, however the agent exits.

use std::io;
use std::os::windows::io::AsRawHandle;
use std::os::windows::process::CommandExt;
use std::process::{Child, Command};

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
    SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, IDLE_PRIORITY_CLASS, OpenProcess,
    PROCESS_TERMINATE, TerminateProcess,
};

pub const CAN_SCAN_MARKED: bool = false;

#[derive(Debug)]
pub struct Tree {
    job: Job,
}

#[derive(Debug)]
struct Job(HANDLE);

// SAFETY: a job handle is a kernel handle usable from any thread.
unsafe impl Send for Job {}
// SAFETY: the handle is only passed to thread-safe kernel calls.
unsafe impl Sync for Job {}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: the handle came from CreateJobObjectW and is closed once, here.
        unsafe { CloseHandle(self.0) };
    }
}

pub fn spawn(mut cmd: Command, opts: &super::SpawnOptions) -> io::Result<(Child, Tree)> {
    // SAFETY: null attributes and name are allowed and create an anonymous job.
    let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    let job = Job(handle);
    // SAFETY: the struct is plain data; all-zero is a valid value.
    let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: `info` is the structure named by the class and outlives the call.
    let ok = unsafe {
        SetInformationJobObject(
            job.0,
            JobObjectExtendedLimitInformation,
            (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let priority = if opts.background {
        IDLE_PRIORITY_CLASS
    } else {
        0
    };
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW | priority);
    let mut child = cmd.spawn()?;
    // The leader is a Python program that takes far longer to start a child than this call
    // takes, so assigning right after the spawn covers the whole tree.
    // SAFETY: both handles are valid for the duration of the call.
    if unsafe { AssignProcessToJobObject(job.0, child.as_raw_handle() as HANDLE) } == 0 {
        let err = io::Error::last_os_error();
        let _ = child.kill();
        return Err(err);
    }
    Ok((child, Tree { job }))
}

pub fn terminate(pid: u32, _tree: &Tree) {
    // SAFETY: plain call; the leader has its own console process group whose id is its pid.
    unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid) };
}

pub fn kill_tree(_pid: u32, tree: &Tree) {
    // SAFETY: the job handle is valid while `tree` lives.
    unsafe { TerminateJobObject(tree.job.0, 1) };
}

pub fn kill_pid(pid: u32) {
    // SAFETY: the handle is checked and closed; TerminateProcess has no other preconditions.
    unsafe {
        let h = OpenProcess(PROCESS_TERMINATE, 0, pid);
        if !h.is_null() {
            TerminateProcess(h, 1);
            CloseHandle(h);
        }
    }
}

pub fn marked_processes(_marker: &str) -> Vec<u32> {
    Vec::new()
}

/// The tree's leader runs the program itself.
pub fn leader(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
) -> (std::path::PathBuf, Vec<std::ffi::OsString>) {
    (program.to_path_buf(), args.to_vec())
}
