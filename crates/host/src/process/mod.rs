//! Process trees that cannot outlive the agent.
//!
//! A Ray node is a tree: `ray start --block` starts the GCS or raylet, which start workers. If
//! the agent dies, that tree must not keep running unthrottled on the owner's machine, and when
//! one node stops, the other nodes on the same machine must not be touched (so never `ray stop`).
//!
//! [`ProcessTree::spawn`] starts the leader in a process group of its own and makes the OS end
//! the tree when the agent ends:
//!
//! # Platform behavior
//!
//! - Linux: the leader is a small guard that gets `PR_SET_PDEATHSIG`, set in the child before
//!   exec from a spawner thread that lives as long as the process (the signal follows the
//!   *thread* that forked); on that signal the guard kills its whole process group. Every process
//!   of the tree also carries the environment variable [`MARKER_ENV`], so [`kill_marked`] finds
//!   members that left the group.
//! - macOS: a small watchdog process kills the group once the agent's pid is gone.
//! - Windows: the leader is put in a Job Object with `KILL_ON_JOB_CLOSE`; the handle closes when
//!   the agent exits, however it exits.
//! - Elsewhere: the group kill on [`ProcessTree::kill`] and on drop only.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::watch;

crate::os_module!();

/// Environment variable that tags every process of a tree with the tree's marker.
pub const MARKER_ENV: &str = "FLOTILLA_TREE";

/// Whether this OS can find a tree's processes by their marker ([`marked_processes`]).
pub const CAN_SCAN_MARKED: bool = imp::CAN_SCAN_MARKED;

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct TreeSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment variables for the tree (added to the agent's own environment).
    pub env: Vec<(OsString, OsString)>,
    /// Environment variables removed from the tree's environment.
    pub env_remove: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    /// File that receives the leader's stdout and stderr (appended); null when `None`.
    pub log: Option<PathBuf>,
    /// A string unique to this tree, exported as [`MARKER_ENV`].
    pub marker: String,
    /// Run the tree at the lowest priority the OS offers (Linux: nice 19 and `SCHED_IDLE`;
    /// macOS: nice 19; Windows: `IDLE_PRIORITY_CLASS`), set before exec.
    pub background: bool,
    /// Make the tree the first the kernel ends when memory runs out (Linux: `oom_score_adj`
    /// 1000, inherited), set before exec; nothing elsewhere.
    pub oom_first: bool,
    /// `cgroup.procs` files the leader writes itself into before exec (Linux), so that the whole
    /// tree is born inside a throttle's cgroups (see `throttle::Prepared::procs_files`).
    pub cgroup_procs: Vec<PathBuf>,
}

/// What the per-OS spawners need beyond the command itself.
pub(crate) struct SpawnOptions {
    pub background: bool,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub oom_first: bool,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub cgroup_procs: Vec<PathBuf>,
}

/// A running (or finished) process tree. Dropping it kills the whole tree.
#[derive(Debug)]
pub struct ProcessTree {
    pid: u32,
    marker: String,
    exit: watch::Receiver<Option<ExitStatus>>,
    inner: imp::Tree,
}

impl ProcessTree {
    /// Starts `spec.program` as the leader of a new tree.
    pub fn spawn(spec: TreeSpec) -> std::io::Result<ProcessTree> {
        let (program, args) = imp::leader(&spec.program, &spec.args);
        let mut cmd = std::process::Command::new(program);
        cmd.args(&args)
            .env(MARKER_ENV, &spec.marker)
            .stdin(std::process::Stdio::null());
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        match &spec.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                cmd.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
            }
        }
        let opts = SpawnOptions {
            background: spec.background,
            oom_first: spec.oom_first,
            cgroup_procs: spec.cgroup_procs.clone(),
        };
        let (mut child, inner) = imp::spawn(cmd, &opts)?;
        let pid = child.id();
        let (tx, exit) = watch::channel(None);
        // std's Child::wait blocks; a thread per tree is cheap (a machine runs one or two).
        std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .spawn(move || {
                let status = child.wait();
                let _ = tx.send(Some(status.unwrap_or_else(|_| failed_status())));
            })?;
        Ok(ProcessTree {
            pid,
            marker: spec.marker,
            exit,
            inner,
        })
    }

    /// The leader's process id (on Linux, the guard's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The leader's exit status, if it has exited.
    pub fn try_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Waits for the leader to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        loop {
            if let Some(status) = *self.exit.borrow_and_update() {
                return status;
            }
            if self.exit.changed().await.is_err() {
                return self.try_status().unwrap_or_else(failed_status);
            }
        }
    }

    /// Asks the leader to shut its tree down (SIGTERM on Unix).
    pub fn terminate(&self) {
        if self.try_status().is_none() {
            imp::terminate(self.pid, &self.inner);
        }
    }

    /// Kills every process of the tree at once, including members that left the group.
    pub fn kill(&self) {
        imp::kill_tree(self.pid, &self.inner);
        kill_marked(&self.marker);
    }

    /// Stops the tree: [`terminate`](Self::terminate), up to `grace` for the leader to exit, then
    /// [`kill`](Self::kill) for whatever is left. Returns the leader's status.
    pub async fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.terminate();
        let status = match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(pid = self.pid, "tree did not stop in {grace:?}; killing it");
                self.kill();
                self.wait().await
            }
        };
        // The leader's exit does not prove its descendants exited.
        self.kill();
        status
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Makes this process end quietly when a pipe it writes to is closed (`flotilla nodes | head`),
/// as command-line tools do, instead of failing on the write.
///
/// # Platform behavior
///
/// - Unix: `SIGPIPE` goes back to its default action (Rust starts programs with it ignored).
///   Only for commands that print and exit: a long-running process keeps it ignored, so that a
///   peer closing a socket is an error to handle, not the end of the process.
/// - Windows: a closed pipe is already an error on the write, nothing to change.
pub fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Process ids of the live processes that carry `marker` (empty where the OS cannot tell; see
/// [`CAN_SCAN_MARKED`]).
pub fn marked_processes(marker: &str) -> Vec<u32> {
    if marker.is_empty() {
        return Vec::new();
    }
    imp::marked_processes(marker)
}

/// The command line of process `pid`, where the OS lets Flotilla read it (Linux).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    if !CAN_SCAN_MARKED {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Kills process `pid` at once (`SIGKILL`; `TerminateProcess` on Windows).
pub fn kill(pid: u32) {
    imp::kill_pid(pid);
}

/// Kills every live process that carries `marker`; returns how many were signalled.
pub fn kill_marked(marker: &str) -> usize {
    let pids = marked_processes(marker);
    for pid in &pids {
        imp::kill_pid(*pid);
    }
    pids.len()
}

fn failed_status() -> ExitStatus {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus::from_raw(255 << 8)
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::ExitStatusExt;
        ExitStatus::from_raw(255)
    }
    #[cfg(not(any(unix, windows)))]
    {
        unreachable!("no other platform can spawn processes")
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn sh(script: &str, marker: &str) -> TreeSpec {
        TreeSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            marker: marker.into(),
            ..TreeSpec::default()
        }
    }

    fn unique(name: &str) -> String {
        format!(
            "test-{name}-{}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        )
    }

    async fn settle(marker: &str) -> Vec<u32> {
        for _ in 0..50 {
            let left = marked_processes(marker);
            if left.is_empty() {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        marked_processes(marker)
    }

    #[tokio::test]
    async fn stop_ends_the_leader_and_its_descendants() {
        let marker = unique("stop");
        let mut tree = ProcessTree::spawn(sh("sleep 300 & sleep 300 & wait", &marker)).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            marked_processes(&marker).len() >= 3,
            "leader and two children"
        );
        tree.stop(Duration::from_secs(2)).await;
        assert_eq!(settle(&marker).await, Vec::<u32>::new());
    }

    #[tokio::test]
    async fn members_that_leave_the_group_are_still_killed() {
        let marker = unique("setsid");
        let tree = ProcessTree::spawn(sh("setsid sleep 300 & sleep 300; wait", &marker)).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(marked_processes(&marker).len() >= 2);
        drop(tree);
        assert_eq!(settle(&marker).await, Vec::<u32>::new());
    }

    #[tokio::test]
    async fn a_background_tree_runs_at_nice_19_in_the_idle_class() {
        let mut spec = sh("sleep 300 & wait", &unique("bg"));
        spec.background = true;
        let mut tree = ProcessTree::spawn(spec).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pids = marked_processes(tree.marker());
        assert!(pids.len() >= 2, "the guard and sleep: {pids:?}");
        for pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // Fields after the command name: nice is the 19th field, policy the 41st.
            let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            assert_eq!(rest[19 - 3], "19", "nice of {pid}");
            assert_eq!(rest[41 - 3], "5", "SCHED_IDLE is policy 5, pid {pid}");
        }
        tree.stop(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn an_oom_first_tree_is_the_first_the_kernel_would_end() {
        let mut spec = sh("sleep 300 & wait", &unique("oom"));
        spec.oom_first = true;
        let mut tree = ProcessTree::spawn(spec).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pids = marked_processes(tree.marker());
        assert!(pids.len() >= 2, "the guard and sleep: {pids:?}");
        for pid in pids {
            let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
            assert_eq!(adj.trim(), "1000", "pid {pid}");
        }
        tree.stop(Duration::from_secs(2)).await;
        let plain = ProcessTree::spawn(sh("sleep 300 & wait", &unique("plain"))).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        for pid in marked_processes(plain.marker()) {
            let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
            assert_eq!(adj.trim(), own.trim(), "pid {pid} keeps the agent's score");
        }
    }

    #[tokio::test]
    async fn a_missing_cgroup_stops_the_spawn_rather_than_run_outside_it() {
        let mut spec = sh("exit 0", &unique("cg"));
        spec.cgroup_procs = vec!["/nonexistent/cgroup.procs".into()];
        assert!(ProcessTree::spawn(spec).is_err());
    }

    #[tokio::test]
    async fn wait_reports_the_exit_code() {
        let mut tree = ProcessTree::spawn(sh("exit 7", &unique("exit"))).unwrap();
        assert_eq!(tree.wait().await.code(), Some(7));
        assert_eq!(tree.try_status().and_then(|s| s.code()), Some(7));
    }

    #[tokio::test]
    async fn the_marker_reaches_the_tree_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let marker = unique("env");
        let mut spec = sh(&format!("echo ${MARKER_ENV}"), &marker);
        spec.log = Some(out.clone());
        let mut tree = ProcessTree::spawn(spec).unwrap();
        tree.wait().await;
        assert_eq!(std::fs::read_to_string(out).unwrap().trim(), marker);
    }
}
