//! Linux cgroups, v2 and v1: finding the agent's own cgroup, creating `flotilla-<name>` under
//! it, and the files that cap, freeze and account the tree.
//!
//! Every value is written with a fresh `open` + one `write`, as the kernel wants (a `cgroup.procs`
//! write takes one pid). Files are opened without `O_CREAT`, so a missing file is an error, as it
//! is on a real cgroup file system; this is also what lets tests lay out a fake tree of plain
//! files and read back exactly what was written.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    BackendKind, Guarantees, MIN_QUOTA_US, MemoryCeiling, PERIOD_US, Result, ThrottleError, duty,
};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The path inside the file system that is mounted (field 4).
    pub root: String,
    pub point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// The mounts in the text of `/proc/self/mountinfo`; malformed lines are skipped.
///
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`: the
/// optional fields before `-` vary in number, so the line is split there.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let super_options = right.next().unwrap_or("");
            Some(Mount {
                root: unescape(left.get(3)?),
                point: PathBuf::from(unescape(left.get(4)?)),
                fstype: fstype.into(),
                super_options: super_options.split(',').map(String::from).collect(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path` (v2: `0::/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                hierarchy,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
                path: path.into(),
            })
        })
        .collect()
}

/// The directory of the process's own cgroup in the cgroup2 hierarchy, if one is mounted.
pub fn own_v2_dir(mountinfo: &str, proc_cgroup: &str) -> Option<PathBuf> {
    let mounts = parse_mountinfo(mountinfo);
    let mount = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    let member = parse_proc_cgroup(proc_cgroup)
        .into_iter()
        .find(|m| m.hierarchy == 0 && m.controllers.is_empty())?;
    Some(under_mount(mount, &member.path))
}

/// The directory of the process's own cgroup in the v1 hierarchy that has `controller`
/// (which may be mounted together with others, as `cpu,cpuacct`).
pub fn own_v1_dir(mountinfo: &str, proc_cgroup: &str, controller: &str) -> Option<PathBuf> {
    let mounts = parse_mountinfo(mountinfo);
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))?;
    let member = parse_proc_cgroup(proc_cgroup)
        .into_iter()
        .find(|m| m.controllers.iter().any(|c| c == controller))?;
    Some(under_mount(mount, &member.path))
}

/// `path` is relative to the hierarchy's root; the mount may show only a subtree of it
/// (containers), whose own path is the mount's `root`.
fn under_mount(mount: &Mount, path: &str) -> PathBuf {
    let rel = if mount.root == "/" {
        path
    } else if path == mount.root {
        ""
    } else {
        path.strip_prefix(&mount.root)
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path)
    };
    mount.point.join(rel.trim_start_matches('/'))
}

/// The quota for `cpus` cores per [`PERIOD_US`], at least the kernel's minimum.
pub fn quota_us(cpus: f64) -> u64 {
    // `as` saturates, so an absurdly large cap is just "all of it".
    ((cpus * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US)
}

/// `cpu.max` for a cap (`None`: no cap).
pub fn cpu_max(cap: Option<f64>) -> String {
    match cap {
        Some(cpus) => format!("{} {PERIOD_US}", quota_us(cpus)),
        None => format!("max {PERIOD_US}"),
    }
}

/// `usage_usec` from the text of a cgroup2 `cpu.stat`.
pub fn parse_usage_usec(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("usage_usec"))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// A value of `name` in the text of a cgroup's `memory.stat` (`name value` lines).
pub fn stat_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(name))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// What a group holds without the file pages the kernel can drop at once: its usage
/// (`memory.current`, `memory.usage_in_bytes`) minus its inactive file pages from `memory.stat`
/// (`inactive_file` on v2; on v1 `total_inactive_file`, which counts the groups below too).
pub fn memory_held(usage: u64, stat: &str, v2: bool) -> u64 {
    let name = if v2 {
        "inactive_file"
    } else {
        "total_inactive_file"
    };
    usage.saturating_sub(stat_value(stat, name).unwrap_or(0))
}

/// The soft point a sixteenth under a ceiling (`memory.high`, `memory.soft_limit_in_bytes`):
/// where the kernel starts to reclaim the group's pages before the hard ceiling.
pub fn soft_point(limit: u64) -> u64 {
    limit - limit / 16
}

fn write(path: &Path, value: &str) -> Result<()> {
    write_raw(path, value).map_err(|source| ThrottleError::Io {
        op: "write",
        path: path.into(),
        source,
    })
}

fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?
        .write_all(value.as_bytes())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ThrottleError::Io {
        op: "read",
        path: path.into(),
        source,
    })
}

fn read_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Writes `pid` into `dir/cgroup.procs`; a process that has exited meanwhile is not an error.
fn move_pid(dir: &Path, pid: u32) -> Result<()> {
    let path = dir.join("cgroup.procs");
    match write_raw(&path, &pid.to_string()) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other.map_err(|source| ThrottleError::Io {
            op: "move a process into",
            path,
            source,
        }),
    }
}

/// Creates `dir`, or takes it over if a previous agent that crashed left it (the name is the
/// node's own, so nobody else uses it).
fn make_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(ThrottleError::Io {
            op: "create the cgroup",
            path: dir.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Removes a cgroup directory. The kernel refuses (`EBUSY`) while processes are still leaving;
/// it never says "not empty" for its own files, so a directory that is not empty is a plain
/// one laid out like a cgroup (a test's fake tree): its cgroup-named files are removed first.
fn remove_dir(dir: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty && tries == 0 => {
                tries += 1;
                for entry in std::fs::read_dir(dir)?.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    let ours = ["cgroup.", "cpu.", "cpuacct.", "freezer.", "memory."]
                        .iter()
                        .any(|p| name.starts_with(p))
                        || name == "tasks"
                        || name == "notify_on_release";
                    if ours && entry.file_type()?.is_file() {
                        std::fs::remove_file(entry.path())?;
                    }
                }
            }
            other => return other,
        }
    }
}

/// Removes the `flotilla-<node>-<pid>` directories under `parent` whose owner `pid` is gone and
/// that hold no process, deepest first; see [`super::remove_stale`]. Returns those removed.
pub fn remove_stale(parent: &Path, node: &str) -> Vec<PathBuf> {
    let prefix = format!("flotilla-{node}-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        // The whole rest must be the pid: `flotilla-<node>-1-<pid>` is another node's.
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|rest| rest.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        if owner == 0
            || owner == std::process::id()
            || !entry.file_type().is_ok_and(|t| t.is_dir())
            || owner_running(owner, &dir)
            || !holds_no_process(&dir)
        {
            continue;
        }
        match remove_tree(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) => tracing::warn!("cannot remove the stale cgroup {}: {e}", dir.display()),
        }
    }
    removed
}

/// Whether process `pid` runs and may have made `dir`: it exists, is no zombie, and did not
/// start after `dir` was made (a pid reused since). When a time cannot be read, it may have.
fn owner_running(pid: u32, dir: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The fields after the command, which may itself hold spaces and parentheses.
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect())
        .unwrap_or_default();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return false;
    }
    let started = fields.get(19).and_then(|t| t.parse::<u64>().ok());
    let made = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    match (started.and_then(started_at), made) {
        // Whole seconds of boot time: allow one either way.
        (Some(started), Some(made)) => started <= made + Duration::from_secs(2),
        _ => true,
    }
}

/// The wall-clock time of `ticks` clock ticks after boot (`starttime` in `/proc/<pid>/stat`).
fn started_at(ticks: u64) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0)?;
    let since_boot =
        Duration::from_secs(ticks / hz) + Duration::from_nanos(ticks % hz * 1_000_000_000 / hz);
    Some(std::time::UNIX_EPOCH + Duration::from_secs(boot) + since_boot)
}

/// Whether `dir` is a cgroup (it has `cgroup.procs`) that, with every cgroup below it, holds
/// no process.
fn holds_no_process(dir: &Path) -> bool {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return false;
    };
    if !procs.trim().is_empty() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .all(|e| holds_no_process(&e.path()))
}

/// Removes the cgroup `dir` and the cgroups below it, deepest first. The kernel refuses to
/// remove one that still holds a process.
fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    remove_dir(dir)
}

/// `flotilla-<name>` in one cgroup hierarchy (v2) or several (v1: cpu, cpuacct, freezer).
/// Dropping it thaws it, moves any process left to the parent and removes the directories.
#[derive(Debug)]
pub struct Group {
    kind: BackendKind,
    /// Every directory this group owns; the first holds the cpu files.
    dirs: Vec<PathBuf>,
    /// The directory with `cgroup.freeze` (v2) or `freezer.state` (v1).
    freezer: Option<PathBuf>,
    /// The directory with `cpu.stat` (v2) or `cpuacct.usage` (v1).
    usage: Option<PathBuf>,
    /// Whether `cpu.idle` is 1: the group as a whole has the lowest weight.
    idle: bool,
    /// The directory with the memory controller's files (`memory.max` on v2,
    /// `memory.limit_in_bytes` on v1), when the group has one.
    memory: Option<PathBuf>,
}

impl Group {
    /// `<parent>/flotilla-<name>` in a cgroup2 hierarchy, with no cap.
    pub fn create_v2(parent: &Path, name: &str, idle: bool) -> Result<Group> {
        let unavailable = |reason: String| ThrottleError::Unavailable {
            backend: BackendKind::CgroupV2.name(),
            reason,
        };
        let controllers = read(&parent.join("cgroup.controllers"))?;
        if !controllers.split_whitespace().any(|c| c == "cpu") {
            return Err(unavailable(format!(
                "the cpu controller is not available in {} (it lists {:?}); enable it in the \
                 parent's cgroup.subtree_control, or delegate a cgroup with it to the agent",
                parent.display(),
                controllers.trim()
            )));
        }
        let subtree = parent.join("cgroup.subtree_control");
        let enabled = read(&subtree)?;
        if !enabled.split_whitespace().any(|c| c == "cpu") {
            write(&subtree, "+cpu").map_err(|e| {
                unavailable(format!(
                    "{e}; a cgroup that holds processes itself cannot enable controllers for \
                     its children: run the agent in a delegated cgroup of its own (systemd \
                     Delegate=yes) or set cgroup_v2_root"
                ))
            })?;
        }
        let dir = parent.join(format!("flotilla-{name}"));
        make_dir(&dir)?;
        // From here on, an error drops the group, which removes the directory.
        let group = Group {
            kind: BackendKind::CgroupV2,
            dirs: vec![dir.clone()],
            freezer: dir.join("cgroup.freeze").exists().then(|| dir.clone()),
            usage: Some(dir.clone()),
            idle: false,
            memory: None,
        };
        let mut group = group;
        write(&dir.join("cpu.max"), &cpu_max(None))?;
        if idle && dir.join("cpu.idle").exists() {
            write(&dir.join("cpu.idle"), "1")?;
            group.idle = true;
        }
        if controllers.split_whitespace().any(|c| c == "memory") {
            if !enabled.split_whitespace().any(|c| c == "memory")
                && let Err(e) = write(&subtree, "+memory")
            {
                tracing::warn!("no memory ceiling for the tree: {e}");
            }
            if dir.join("memory.max").exists() {
                // A directory left by a crashed agent may still hold a ceiling.
                write(&dir.join("memory.high"), "max")?;
                write(&dir.join("memory.max"), "max")?;
                group.memory = Some(dir.clone());
            }
        }
        Ok(group)
    }

    /// `flotilla-<name>` under each v1 parent given, with no cap. Without `cpuacct` (and not
    /// mounted with `cpu`) the CPU time is summed from `/proc`; without `freezer`, a freeze is
    /// `SIGSTOP` to each process.
    pub fn create_v1(
        cpu_parent: &Path,
        cpuacct_parent: Option<&Path>,
        freezer_parent: Option<&Path>,
        memory_parent: Option<&Path>,
        name: &str,
        idle: bool,
    ) -> Result<Group> {
        let dir_name = format!("flotilla-{name}");
        let cpu = cpu_parent.join(&dir_name);
        make_dir(&cpu)?;
        let mut group = Group {
            kind: BackendKind::CgroupV1,
            dirs: vec![cpu.clone()],
            freezer: None,
            usage: None,
            idle: false,
            memory: None,
        };
        write(&cpu.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
        write(&cpu.join("cpu.cfs_quota_us"), "-1")?;
        if idle && cpu.join("cpu.idle").exists() {
            write(&cpu.join("cpu.idle"), "1")?;
            group.idle = true;
        }
        if cpu.join("cpuacct.usage").exists() {
            group.usage = Some(cpu.clone());
        } else if let Some(parent) = cpuacct_parent {
            let dir = parent.join(&dir_name);
            match make_dir(&dir) {
                Ok(()) => {
                    group.dirs.push(dir.clone());
                    group.usage = Some(dir);
                }
                Err(e) => tracing::warn!("no cpuacct cgroup, CPU time from /proc: {e}"),
            }
        }
        if let Some(parent) = freezer_parent {
            let dir = parent.join(&dir_name);
            match make_dir(&dir) {
                Ok(()) => {
                    group.dirs.push(dir.clone());
                    // A directory left frozen by a crashed agent must not freeze the new tree.
                    write(&dir.join("freezer.state"), "THAWED")?;
                    group.freezer = Some(dir);
                }
                Err(e) => tracing::warn!("no freezer cgroup, freezing with SIGSTOP: {e}"),
            }
        }
        if let Some(parent) = memory_parent {
            let dir = parent.join(&dir_name);
            match make_dir(&dir) {
                Ok(()) => {
                    group.dirs.push(dir.clone());
                    // A directory left by a crashed agent may still hold a ceiling.
                    write(&dir.join("memory.limit_in_bytes"), "-1")?;
                    write(&dir.join("memory.soft_limit_in_bytes"), "-1")?;
                    group.memory = Some(dir);
                }
                Err(e) => tracing::warn!("no memory cgroup, no memory ceiling for the tree: {e}"),
            }
        }
        Ok(group)
    }

    /// The `cgroup.procs` of every directory, for a process to enter all of them.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Moves `leader` and every process carrying `marker` in, again until a pass finds
    /// nobody new: a process forked while its parent was being moved may have been born
    /// outside.
    pub fn move_tree(&self, leader: u32, marker: &str) -> Result<()> {
        for _ in 0..3 {
            let inside = read_pids(&self.dirs[0]);
            let missing: Vec<u32> = duty::tree_pids(leader, marker)
                .into_iter()
                .filter(|p| !inside.contains(p))
                .collect();
            if missing.is_empty() {
                break;
            }
            for pid in missing {
                for dir in &self.dirs {
                    move_pid(dir, pid)?;
                }
            }
        }
        Ok(())
    }

    pub fn set_cap(&self, cap: Option<f64>) -> Result<()> {
        let cpu = &self.dirs[0];
        match self.kind {
            BackendKind::CgroupV2 => write(&cpu.join("cpu.max"), &cpu_max(cap)),
            _ => {
                let quota = cap.map_or_else(|| "-1".to_string(), |c| quota_us(c).to_string());
                write(&cpu.join("cpu.cfs_quota_us"), &quota)
            }
        }
    }

    pub fn freeze(&self, on: bool) -> Result<()> {
        match (&self.freezer, self.kind) {
            (Some(dir), BackendKind::CgroupV2) => {
                write(&dir.join("cgroup.freeze"), if on { "1" } else { "0" })
            }
            (Some(dir), _) => write(
                &dir.join("freezer.state"),
                if on { "FROZEN" } else { "THAWED" },
            ),
            (None, _) => {
                let signal = if on { libc::SIGSTOP } else { libc::SIGCONT };
                duty::signal(&read_pids(&self.dirs[0]), signal);
                Ok(())
            }
        }
    }

    pub fn cpu_time(&self) -> Option<Duration> {
        match (&self.usage, self.kind) {
            (Some(dir), BackendKind::CgroupV2) => {
                let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                parse_usage_usec(&text).map(Duration::from_micros)
            }
            (Some(dir), _) => {
                let text = std::fs::read_to_string(dir.join("cpuacct.usage")).ok()?;
                text.trim().parse().ok().map(Duration::from_nanos)
            }
            (None, _) => duty::cpu_time_of(&read_pids(&self.dirs[0])),
        }
    }

    /// Puts the memory ceiling in force; see the throttle's documentation. When lowering, the
    /// soft point is written first, so the kernel starts reclaiming before the hard ceiling.
    pub fn set_memory_limit(&self, limit: Option<u64>) -> Result<MemoryCeiling> {
        let Some(dir) = &self.memory else {
            return Ok(MemoryCeiling::NotHeld);
        };
        let v2 = self.kind == BackendKind::CgroupV2;
        let (hard, soft) = if v2 {
            (dir.join("memory.max"), dir.join("memory.high"))
        } else {
            (
                dir.join("memory.limit_in_bytes"),
                dir.join("memory.soft_limit_in_bytes"),
            )
        };
        let unlimited = if v2 { "max" } else { "-1" };
        let Some(limit) = limit else {
            write(&hard, unlimited)?;
            write(&soft, unlimited)?;
            return Ok(MemoryCeiling::Held);
        };
        write(&soft, &soft_point(limit).to_string())?;
        match write_raw(&hard, &limit.to_string()) {
            Ok(()) => Ok(MemoryCeiling::Held),
            // v1: the group holds more than the limit and reclaim could not take it back.
            Err(e) if !v2 && e.raw_os_error() == Some(libc::EBUSY) => Ok(MemoryCeiling::Refused),
            Err(source) => Err(ThrottleError::Io {
                op: "write",
                path: hard,
                source,
            }),
        }
    }

    /// What the group holds, without the file pages the kernel can drop at once; from the
    /// processes' resident memory when the group has no memory controller.
    pub fn memory_used(&self) -> Option<u64> {
        let Some(dir) = &self.memory else {
            return duty::resident_of(&read_pids(&self.dirs[0]));
        };
        let v2 = self.kind == BackendKind::CgroupV2;
        let usage = if v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        let usage: u64 = std::fs::read_to_string(dir.join(usage))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        Some(memory_held(usage, &stat, v2))
    }

    /// The group's processes with their resident memory, largest first.
    pub fn processes_by_memory(&self) -> Vec<(u32, u64)> {
        duty::by_memory(&read_pids(&self.dirs[0]))
    }

    /// Whether the group has the lowest weight against everything outside it (`cpu.idle`).
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    pub fn guarantees(&self) -> Guarantees {
        Guarantees {
            backend: self.kind.name(),
            hard_cap: true,
            atomic_freeze: self.freezer.is_some(),
            memory_ceiling: self.memory.is_some(),
        }
    }

    pub fn kill(&self) {
        let dir = &self.dirs[0];
        if self.kind == BackendKind::CgroupV2 && dir.join("cgroup.kill").exists() {
            match write(&dir.join("cgroup.kill"), "1") {
                Ok(()) => return,
                Err(e) => tracing::warn!("{e}; killing each process instead"),
            }
        }
        let mut pids = Vec::new();
        for dir in &self.dirs {
            pids.extend(read_pids(dir));
        }
        duty::signal(&pids, libc::SIGKILL);
        // A task frozen by the v1 freezer acts on SIGKILL only once thawed.
        if self.freezer.is_some()
            && let Err(e) = self.freeze(false)
        {
            tracing::warn!("cannot thaw the killed tree: {e}");
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.freezer.is_some()
            && let Err(e) = self.freeze(false)
        {
            tracing::warn!("cannot thaw the throttled tree: {e}");
        }
        for dir in self.dirs.iter().rev() {
            let Some(parent) = dir.parent() else { continue };
            for pid in read_pids(dir) {
                if let Err(e) = move_pid(parent, pid) {
                    tracing::warn!("cannot move pid {pid} out of the throttle: {e}");
                }
            }
            if let Err(e) = remove_dir(dir) {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This build machine's (a v1 hybrid), trimmed.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "\
6:freezer:/
4:memory:/process_api/8fb5
2:cpuacct:/
1:cpu:/agents
0::/
";

    #[test]
    fn mountinfo_lines_are_split_at_the_separator_and_unescaped() {
        let text = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\nbroken line\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            vec![Mount {
                root: "/mnt1".into(),
                point: "/mnt two".into(),
                fstype: "ext3".into(),
                super_options: vec!["rw".into(), "errors=continue".into()],
            }]
        );
    }

    #[test]
    fn own_cgroups_are_found_in_a_hybrid_layout() {
        assert_eq!(
            own_v1_dir(HYBRID, HYBRID_SELF, "cpu"),
            Some("/sys/fs/cgroup/cpu/agents".into())
        );
        assert_eq!(
            own_v1_dir(HYBRID, HYBRID_SELF, "cpuacct"),
            Some("/sys/fs/cgroup/cpuacct".into())
        );
        assert_eq!(
            own_v1_dir(HYBRID, HYBRID_SELF, "freezer"),
            Some("/sys/fs/cgroup/freezer".into())
        );
        assert_eq!(
            own_v2_dir(HYBRID, HYBRID_SELF),
            Some("/sys/fs/cgroup/unified".into())
        );
        assert_eq!(
            own_v1_dir(HYBRID, HYBRID_SELF, "memory"),
            None,
            "not mounted"
        );
    }

    #[test]
    fn comounted_controllers_and_pure_v2_are_found() {
        let mounts = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let own = "3:cpu,cpuacct:/user.slice\n";
        assert_eq!(
            own_v1_dir(mounts, own, "cpuacct"),
            Some("/sys/fs/cgroup/cpu,cpuacct/user.slice".into())
        );
        let v2 = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/flotilla.service\n";
        assert_eq!(
            own_v2_dir(v2, own),
            Some(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/flotilla.service"
                    .into()
            )
        );
        assert_eq!(own_v1_dir(v2, own, "cpu"), None);
    }

    #[test]
    fn a_mount_of_a_subtree_is_joined_without_its_root() {
        let mounts = "40 30 0:30 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_v2_dir(mounts, "0::/docker/abc/inner\n"),
            Some("/sys/fs/cgroup/inner".into())
        );
        assert_eq!(
            own_v2_dir(mounts, "0::/docker/abc\n"),
            Some("/sys/fs/cgroup".into())
        );
        // A sibling whose name merely starts with the root is not under it.
        assert_eq!(
            own_v2_dir(mounts, "0::/docker/abcd\n"),
            Some("/sys/fs/cgroup/docker/abcd".into())
        );
    }

    #[test]
    fn quotas_are_cores_times_the_period_with_the_kernel_minimum() {
        assert_eq!(quota_us(1.0), 100_000);
        assert_eq!(quota_us(1.5), 150_000);
        assert_eq!(quota_us(0.25), 25_000);
        assert_eq!(quota_us(0.001), MIN_QUOTA_US);
        assert_eq!(cpu_max(Some(0.5)), "50000 100000");
        assert_eq!(cpu_max(None), "max 100000");
    }

    #[test]
    fn memory_held_leaves_out_the_inactive_file_pages() {
        let v2 = "anon 1000\nfile 700\ninactive_file 300\nactive_file 400\n";
        assert_eq!(memory_held(2000, v2, true), 1700);
        let v1 = "cache 50\ninactive_file 40\ntotal_cache 700\ntotal_inactive_file 300\n";
        assert_eq!(memory_held(2000, v1, false), 1700);
        // Unknown or larger than the usage (the readings are not atomic): never below zero.
        assert_eq!(memory_held(2000, "", true), 2000);
        assert_eq!(memory_held(200, v2, true), 0);
        assert_eq!(stat_value(v2, "file"), Some(700));
        assert_eq!(stat_value(v2, "fil"), None);
    }

    #[test]
    fn the_soft_point_is_a_sixteenth_under_the_ceiling() {
        assert_eq!(soft_point(16 << 20), 15 << 20);
        assert_eq!(soft_point(4096), 3840);
    }

    #[test]
    fn usage_is_read_from_cpu_stat() {
        let text = "usage_usec 1808419232\nuser_usec 1517405892\nsystem_usec 291013340\n";
        assert_eq!(parse_usage_usec(text), Some(1_808_419_232));
        assert_eq!(parse_usage_usec("nr_periods 0\n"), None);
    }

    /// A reused pid cannot be had on demand, so plain directories laid out like cgroups stand in
    /// for the groups, with their times set as the kernel's would be; the owners are real.
    #[test]
    fn a_group_is_stale_when_its_owner_is_gone_or_younger_than_it_and_it_holds_no_process() {
        let tmp = tempfile::tempdir().unwrap();
        let group = |name: String, procs: &str| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
            dir
        };
        let sleep = || {
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap()
        };
        let mut dead = sleep();
        let dead_pid = dead.id();
        dead.kill().unwrap();
        dead.wait().unwrap();
        let reused = sleep();
        let live = sleep();

        let gone = group(format!("flotilla-n-{dead_pid}"), "");
        std::fs::create_dir(gone.join("ray")).unwrap();
        std::fs::write(gone.join("ray").join("cgroup.procs"), "").unwrap();
        // Made an hour before its owner's pid went to the process that has it now.
        let older = group(format!("flotilla-n-{}", reused.id()), "");
        std::fs::File::open(&older)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        let kept = [
            group(format!("flotilla-n-{}", live.id()), ""),
            group(format!("flotilla-n-{}", std::process::id()), ""),
            group(format!("flotilla-n-1-{dead_pid}"), ""),
            group(format!("flotilla-m-{dead_pid}"), ""),
        ];
        let busy = group(format!("flotilla-n-{}", dead_pid + 1_000_000), "");
        std::fs::create_dir(busy.join("ray")).unwrap();
        std::fs::write(busy.join("ray").join("cgroup.procs"), "4242\n").unwrap();
        let plain = tmp
            .path()
            .join(format!("flotilla-n-{}", dead_pid + 2_000_000));
        std::fs::create_dir(&plain).unwrap();

        let mut removed = remove_stale(tmp.path(), "n");
        removed.sort();
        let mut expected = vec![gone, older];
        expected.sort();
        assert_eq!(removed, expected);
        for dir in kept.iter().chain([&busy, &plain]) {
            assert!(dir.exists(), "{} was removed", dir.display());
        }
        for mut child in [reused, live] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn a_plain_directory_laid_out_like_a_cgroup_is_removed_but_foreign_files_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("flotilla-x");
        std::fs::create_dir(&dir).unwrap();
        for f in ["cgroup.procs", "cpu.max", "tasks"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        remove_dir(&dir).unwrap();
        assert!(!dir.exists());

        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("cpu.max"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        assert!(remove_dir(&dir).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "mine"
        );
    }
}
