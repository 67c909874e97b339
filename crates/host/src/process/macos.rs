//! macOS: a process group per tree and a watchdog process that kills the group once the agent is
//! gone (macOS has no parent-death signal).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

pub const CAN_SCAN_MARKED: bool = false;

#[derive(Debug)]
pub struct Tree {
    watchdog: Option<Child>,
}

pub fn spawn(mut cmd: Command, opts: &super::SpawnOptions) -> io::Result<(Child, Tree)> {
    cmd.process_group(0);
    if opts.background {
        // The Darwin background band (what `taskpolicy -b` sets): lowest CPU and I/O priority
        // and, on Apple Silicon, the efficiency cores only, inherited by every process the
        // leader starts; plus nice 19 for the scheduler's other classes. Set before exec, so no
        // process of the tree ever runs outside it.
        // SAFETY: the closure calls only setpriority, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpriority(libc::PRIO_DARWIN_PROCESS, 0, libc::PRIO_DARWIN_BG);
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    let agent = std::process::id();
    let group = child.id();
    // Polls once a second: cheap, and bounded by the one-second gap it allows.
    let script = format!(
        "while kill -0 {agent} 2>/dev/null && kill -0 -{group} 2>/dev/null; do sleep 1; done; \
         kill -KILL -{group} 2>/dev/null"
    );
    let watchdog = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok();
    Ok((child, Tree { watchdog }))
}

pub fn terminate(pid: u32, _tree: &Tree) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

pub fn kill_tree(pid: u32, tree: &Tree) {
    // SAFETY: as above.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    if let Some(w) = &tree.watchdog {
        // SAFETY: as above.
        unsafe { libc::kill(w.id() as i32, libc::SIGKILL) };
    }
}

pub fn kill_pid(pid: u32) {
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
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
