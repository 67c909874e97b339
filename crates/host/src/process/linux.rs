//! Linux: a guard leader per tree, `PR_SET_PDEATHSIG`, and a `/proc` scan for marked members.
//!
//! The tree's leader is a small `/bin/sh` guard in a process group of its own. It runs the real
//! program as its child and
//! - on SIGTERM (a normal stop) passes the signal on and waits for the program to exit, so Ray
//!   drains and exits as it should;
//! - on SIGHUP, which the kernel sends it when the agent dies (`PR_SET_PDEATHSIG`), kills its
//!   whole process group at once. Ray's processes stay in that group, including the agents the
//!   raylet starts, which a parent-death signal on the launcher alone would leave running.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

pub const CAN_SCAN_MARKED: bool = true;

#[derive(Debug)]
pub struct Tree;

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// The parent-death signal fires when the *thread* that forked the child exits, so every tree is
/// forked from one thread that lives until the process ends.
fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("tree-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the process spawner thread");
        Mutex::new(tx)
    })
}

/// `"$@"` is the real program; traps are set before it starts so no signal is missed.
const GUARD: &str = "trap 'kill -KILL 0' HUP; \
trap 'kill -TERM \"$child\" 2>/dev/null' TERM INT; \
\"$@\" & child=$!; \
while :; do wait \"$child\"; rc=$?; kill -0 \"$child\" 2>/dev/null || exit \"$rc\"; done";

/// The guard's command line around `program args...`.
pub fn leader(program: &Path, args: &[OsString]) -> (PathBuf, Vec<OsString>) {
    let mut all: Vec<OsString> = vec!["-c".into(), GUARD.into(), "flotilla-guard".into()];
    all.push(program.as_os_str().to_owned());
    all.extend(args.iter().cloned());
    (PathBuf::from("/bin/sh"), all)
}

pub fn spawn(mut cmd: Command, opts: &super::SpawnOptions) -> io::Result<(Child, Tree)> {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let agent = unsafe { libc::getpid() };
    // Paths are turned into C strings here: the child may not allocate between fork and exec.
    let cgroups: Vec<std::ffi::CString> = opts
        .cgroup_procs
        .iter()
        .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cgroup path holds a NUL byte",
            )
        })?;
    let background = opts.background;
    let oom_first = opts.oom_first;
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe functions
    // (setpgid, open, write, close, setpriority, sched_setscheduler, signal, prctl, getppid,
    // _exit)
    // without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Enter the throttle's cgroups before exec, so nothing of the tree ever runs outside
            // them; writing "0" moves the writer itself.
            for path in &cgroups {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(io::Error::last_os_error());
                }
            }
            if background {
                // Lowest priority, then the idle scheduling class: the tree only gets CPU time
                // nobody else wants. Both are inherited by every descendant, and an unprivileged
                // process cannot undo them.
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
            }
            if oom_first {
                // The first the kernel ends when memory runs out: the owner's programs are
                // never picked before a process of the tree (Ray gives its task workers the
                // same score; this covers the raylet and its agents too). Inherited, and an
                // unprivileged process can raise it but not lower it.
                let fd = libc::open(
                    c"/proc/self/oom_score_adj".as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                );
                if fd >= 0 {
                    libc::write(fd, b"1000".as_ptr().cast(), 4);
                    libc::close(fd);
                }
            }
            // A shell cannot trap a signal that was ignored when it started, and the agent may
            // run with SIGHUP ignored (under `nohup`, or a parent that ignores it): the guard
            // would then outlive the agent. It starts with the default disposition instead.
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The agent may have died between fork and prctl: then nobody will signal us.
            if libc::getppid() != agent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| io::Error::other("process spawner poisoned"))?
        .send((cmd, tx))
        .map_err(|_| io::Error::other("process spawner stopped"))?;
    let child = rx
        .recv()
        .map_err(|_| io::Error::other("process spawner stopped"))??;
    Ok((child, Tree))
}

pub fn terminate(pid: u32, _tree: &Tree) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

pub fn kill_tree(pid: u32, _tree: &Tree) {
    // The leader made itself the group leader, so its pid is the group id.
    // SAFETY: as above.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}

pub fn kill_pid(pid: u32) {
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

pub fn marked_processes(marker: &str) -> Vec<u32> {
    let needle = format!("{}={marker}", super::MARKER_ENV).into_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // Zombies keep no environment; processes of other users are unreadable: both skipped.
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_slice()))
                .unwrap_or(false)
        })
        .collect()
}
