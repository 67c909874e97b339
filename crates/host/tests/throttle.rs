//! The throttle against the real kernel (cgroup v1 on the build machines, signals) and against a
//! fake cgroup2 tree whose files are read back.
//!
//! The CPU figures are loose behavioural bounds: the machine is shared and has two cores. Tests
//! that burn CPU take one lock so they do not measure each other.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flotilla_host::process::{ProcessTree, TreeSpec, marked_processes};
use flotilla_host::throttle::{
    BackendKind, Limit, MemoryCeiling, Throttle, ThrottleConfig, ThrottleError, node_group_name,
};

static BURNING: Mutex<()> = Mutex::new(());

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 for user space on Linux).
const USER_HZ: f64 = 100.0;

fn unique(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn sh(script: &str, marker: &str) -> TreeSpec {
    TreeSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        marker: marker.into(),
        ..TreeSpec::default()
    }
}

/// Two busy processes: all of this two-core machine. The machine is shared, so they run at a
/// high priority (the tests run as root), and the measurements are about the throttle, not
/// about whatever else runs meanwhile. With the scheduler's autogroups a nice value counts only
/// inside its session, so the burners get a session of their own and that session the priority.
const BURNER: &str = "exec setsid /bin/sh -c '\
    { echo -15 > /proc/self/autogroup; } 2>/dev/null; renice -n -15 -p $$ >/dev/null; \
    yes >/dev/null & yes >/dev/null & wait'";

fn wait_for_processes(marker: &str, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while marked_processes(marker).len() < at_least {
        assert!(
            Instant::now() < deadline,
            "the tree never reached {at_least} processes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `utime + stime` of one process, in ticks, and its state letter.
fn stat(pid: u32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, state))
}

fn proc_ticks(marker: &str) -> u64 {
    marked_processes(marker)
        .into_iter()
        .filter_map(stat)
        .map(|(ticks, _)| ticks)
        .sum()
}

/// The tree's CPU use in cores over `secs`, after letting the last change settle: from
/// `Throttle::cpu_time` and, as a cross-check, from `/proc/<pid>/stat` of the marked processes.
fn cores_used(throttle: &Throttle, marker: &str, secs: f64) -> (f64, f64) {
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = throttle.cpu_time().expect("the tree's CPU time");
    let ticks0 = proc_ticks(marker);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let cpu1 = throttle.cpu_time().expect("the tree's CPU time");
    let ticks1 = proc_ticks(marker);
    let wall = start.elapsed().as_secs_f64();
    let by_backend = cpu1.saturating_sub(cpu0).as_secs_f64() / wall;
    let by_proc = ticks1.saturating_sub(ticks0) as f64 / USER_HZ / wall;
    (by_backend, by_proc)
}

/// Cores used by the tree over `secs`, from `/proc` alone (for after the throttle is gone).
fn proc_cores(marker: &str, secs: f64) -> f64 {
    let ticks0 = proc_ticks(marker);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    proc_ticks(marker).saturating_sub(ticks0) as f64 / USER_HZ / start.elapsed().as_secs_f64()
}

fn v1_config() -> ThrottleConfig {
    ThrottleConfig {
        force_backend: Some(BackendKind::CgroupV1),
        // The measurements compare against the shared machine's other load; the lowest weight
        // would make "Full" depend on it. `cpu.idle` is checked in its own test.
        idle: false,
        ..ThrottleConfig::default()
    }
}

fn no_cgroup_message(e: ThrottleError) -> String {
    format!("this test needs a real cgroup v1 (cpu and freezer) and root; attach failed: {e}")
}

/// Every marked process runs (none left stopped or frozen) and the tree still burns CPU.
fn assert_running(marker: &str) {
    for pid in marked_processes(marker) {
        if let Some((_, state)) = stat(pid) {
            assert_ne!(state, 'T', "pid {pid} left stopped");
        }
    }
    let rate = proc_cores(marker, 1.0);
    assert!(
        rate > 0.5,
        "the tree used {rate:.2} cores after the throttle was dropped"
    );
}

struct Measured {
    full: (f64, f64),
    cap: (f64, f64),
    freeze: (f64, f64),
    thaw: (f64, f64),
}

fn measure_limits(throttle: &mut Throttle, marker: &str) -> Measured {
    throttle.set(Limit::Full).unwrap();
    let full = cores_used(throttle, marker, 2.0);
    throttle.set(Limit::Cap { cpus: 1.0 }).unwrap();
    let cap = cores_used(throttle, marker, 2.5);
    throttle.set(Limit::Freeze).unwrap();
    let freeze = cores_used(throttle, marker, 2.0);
    throttle.set(Limit::Thaw).unwrap();
    let thaw = cores_used(throttle, marker, 2.0);
    let m = Measured {
        full,
        cap,
        freeze,
        thaw,
    };
    eprintln!(
        "{} cores (backend, /proc): full {:.2?} cap1 {:.2?} freeze {:.3?} thaw {:.2?}",
        throttle.guarantees().backend,
        m.full,
        m.cap,
        m.freeze,
        m.thaw
    );
    m
}

#[test]
fn throttle_detects_a_cgroup_backend_on_this_machine() {
    let marker = unique("detect");
    let tree = ProcessTree::spawn(sh("sleep 60", &marker)).unwrap();
    // Default configuration: the backend is whatever the machine offers; here, as root, a
    // cgroup, so a hard cap.
    let throttle = Throttle::attach(&unique("detect"), tree.pid(), &marker)
        .unwrap_or_else(|e| panic!("{}", no_cgroup_message(e)));
    let g = throttle.guarantees();
    assert!(
        g.backend == "cgroup v1" || g.backend == "cgroup v2",
        "{g:?}"
    );
    assert!(g.hard_cap && g.atomic_freeze, "{g:?}");
}

#[test]
fn throttle_falls_back_past_a_cgroup2_without_the_cpu_controller() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("cgroup.controllers"), "memory pids\n").unwrap();
    std::fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
    let marker = unique("fallback");
    let tree = ProcessTree::spawn(sh("sleep 60", &marker)).unwrap();
    let config = ThrottleConfig {
        cgroup_v2_root: Some(tmp.path().into()),
        ..ThrottleConfig::default()
    };
    let name = unique("fallback");
    let throttle = Throttle::attach_with(&config, &name, tree.pid(), &marker)
        .unwrap_or_else(|e| panic!("{}", no_cgroup_message(e)));
    assert_eq!(throttle.guarantees().backend, "cgroup v1");
    assert!(!tmp.path().join(format!("flotilla-{name}")).exists());

    let forced = ThrottleConfig {
        force_backend: Some(BackendKind::CgroupV2),
        ..config
    };
    let err = Throttle::attach_with(&forced, &unique("fallback"), tree.pid(), &marker).unwrap_err();
    assert!(
        matches!(
            err,
            ThrottleError::Unavailable {
                backend: "cgroup v2",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cpu controller"), "{err}");
}

#[test]
fn throttle_cgroup_v1_caps_freezes_and_thaws_a_burning_tree() {
    let _serial = BURNING.lock().unwrap_or_else(|e| e.into_inner());
    let marker = unique("v1");
    let tree = ProcessTree::spawn(sh(BURNER, &marker)).unwrap();
    wait_for_processes(&marker, 4);
    let name = unique("v1");
    let prepared = Throttle::prepare_with(&v1_config(), &name)
        .unwrap_or_else(|e| panic!("{}", no_cgroup_message(e)));
    // A group competes with other load as one entity: give it the weight its processes' nice
    // value gives them outside, for the same reason.
    let dirs: Vec<PathBuf> = prepared
        .procs_files()
        .iter()
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect();
    assert_eq!(
        dirs.len(),
        4,
        "cpu, cpuacct, freezer and memory here: {dirs:?}"
    );
    std::fs::write(dirs[0].join("cpu.shares"), "32768").unwrap();
    // Attached after the tree started: every running process is moved in.
    let mut throttle = prepared.attach(tree.pid(), &marker).unwrap();
    let g = throttle.guarantees();
    assert_eq!(
        (g.backend, g.hard_cap, g.atomic_freeze),
        ("cgroup v1", true, true)
    );

    let m = measure_limits(&mut throttle, &marker);
    assert!(m.full.0 > 1.3, "full: {:?}", m.full);
    assert!(m.cap.0 <= 1.25 && m.cap.1 <= 1.3, "cap 1.0: {:?}", m.cap);
    assert!(m.cap.0 > 0.3, "cap 1.0 still runs: {:?}", m.cap);
    assert!(
        m.freeze.0 < 0.05 && m.freeze.1 < 0.05,
        "frozen: {:?}",
        m.freeze
    );
    assert!(m.thaw.0 > 0.5 && m.thaw.1 > 0.5, "thawed: {:?}", m.thaw);
    // The backend's figure and the kernel's per-process one agree.
    assert!((m.full.0 - m.full.1).abs() < 0.3, "full: {:?}", m.full);

    // Thaw resumed under the cap, not unthrottled.
    assert!(m.thaw.0 <= 1.25, "thawed under cap 1.0: {:?}", m.thaw);

    // Dropped while frozen: everything runs again, moved back out, nothing left behind.
    throttle.set(Limit::Freeze).unwrap();
    drop(throttle);
    assert_running(&marker);
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn throttle_signals_duty_cycle_caps_freezes_and_thaws_a_burning_tree() {
    let _serial = BURNING.lock().unwrap_or_else(|e| e.into_inner());
    let marker = unique("signals");
    let tree = ProcessTree::spawn(sh(BURNER, &marker)).unwrap();
    wait_for_processes(&marker, 4);
    let config = ThrottleConfig {
        force_backend: Some(BackendKind::Signals),
        ..ThrottleConfig::default()
    };
    let mut throttle = Throttle::attach_with(&config, &unique("signals"), tree.pid(), &marker)
        .expect("the signal backend needs no privilege");
    let g = throttle.guarantees();
    assert_eq!(
        (g.backend, g.hard_cap, g.atomic_freeze),
        ("signals", false, false)
    );

    let m = measure_limits(&mut throttle, &marker);
    assert!(m.full.0 > 1.3, "full: {:?}", m.full);
    // A soft cap: the stops and continues come from a thread of ours, which a busy machine runs
    // late, so the tree gets more than its share then (1.43 cores for a cap of 1 was seen with
    // other tests running). What must hold is that the cap takes a clear share off full speed.
    let under = 0.85 * m.full.0;
    assert!(m.cap.0 < under && m.cap.1 < under, "cap 1.0: {:?}", m.cap);
    assert!(m.cap.0 > 0.3, "cap 1.0 still runs: {:?}", m.cap);
    assert!(
        m.freeze.0 < 0.05 && m.freeze.1 < 0.05,
        "frozen: {:?}",
        m.freeze
    );
    assert!(m.thaw.0 > 0.5, "thawed: {:?}", m.thaw);
    assert!(m.thaw.0 < under, "thawed under cap 1.0: {:?}", m.thaw);

    throttle.set(Limit::Freeze).unwrap();
    drop(throttle);
    assert_running(&marker);
}

#[test]
fn throttle_prepared_cgroup_v1_holds_the_program_before_it_runs() {
    let config = ThrottleConfig {
        force_backend: Some(BackendKind::CgroupV1),
        ..ThrottleConfig::default()
    };
    let name = unique("prepared");
    let prepared = Throttle::prepare_with(&config, &name)
        .unwrap_or_else(|e| panic!("{}", no_cgroup_message(e)));
    let procs = prepared.procs_files().to_vec();
    let cpu_dir = procs[0].parent().unwrap().to_path_buf();
    let read = |file: &str| std::fs::read_to_string(cpu_dir.join(file)).unwrap();
    assert_eq!(read("cpu.cfs_period_us").trim(), "100000");
    assert_eq!(read("cpu.cfs_quota_us").trim(), "-1");
    assert_eq!(read("cpu.idle").trim(), "1", "lowest weight by default");
    assert!(
        procs
            .iter()
            .any(|p| p.starts_with("/sys/fs/cgroup/freezer")),
        "{procs:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let marker = unique("prepared");
    let mut spec = sh("cat /proc/self/cgroup; exec sleep 60", &marker);
    spec.log = Some(out.clone());
    let tree = ProcessTree::spawn(prepared.wrap_spec(spec)).unwrap();
    // The program's very first child was already inside, before any attach.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("freezer:") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let own = format!("/flotilla-{name}");
    for controller in ["cpu", "freezer"] {
        assert!(
            text.lines()
                .any(|l| l.split(':').nth(1) == Some(controller) && l.ends_with(&own)),
            "{controller} not {own} in:\n{text}"
        );
    }

    let mut throttle = prepared.attach(tree.pid(), &marker).unwrap();
    let inside: Vec<u32> = std::fs::read_to_string(cpu_dir.join("cgroup.procs"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    for pid in marked_processes(&marker) {
        assert!(inside.contains(&pid), "{pid} not in {inside:?}");
    }
    throttle.set(Limit::Cap { cpus: 0.5 }).unwrap();
    assert_eq!(read("cpu.cfs_quota_us").trim(), "50000");
    throttle.set(Limit::Full).unwrap();
    assert_eq!(read("cpu.cfs_quota_us").trim(), "-1");

    throttle.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marked_processes(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "kill left {:?}",
            marked_processes(&marker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(throttle);
    assert!(!cpu_dir.exists());
}

/// The directories of a prepared throttle's group, one per hierarchy.
fn group_dirs(prepared: &flotilla_host::throttle::Prepared) -> Vec<PathBuf> {
    prepared
        .procs_files()
        .iter()
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect()
}

/// Removes what a test left in the real hierarchies, once its processes have gone.
fn remove_groups(dirs: &[PathBuf]) {
    for dir in dirs {
        let deadline = Instant::now() + Duration::from_secs(5);
        while dir.exists() && std::fs::remove_dir(dir).is_err() {
            assert!(Instant::now() < deadline, "cannot remove {}", dir.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An agent process to be killed: it runs while its group is made, as a real one does.
fn agent_stand_in() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap()
}

fn kill_9(mut agent: std::process::Child) {
    agent.kill().unwrap();
    agent.wait().unwrap();
}

/// What `kill -9` of an agent leaves, in the real cgroup hierarchies: its node's group, named
/// after its pid, never removed (its `Throttle` was never dropped). The next agent of that node
/// removes it when it prepares its own throttle, but not a group that still holds processes,
/// nor a live agent's, nor another node's.
#[test]
fn throttle_for_a_node_removes_the_empty_groups_of_killed_agents_and_nothing_else() {
    let config = v1_config();
    let node = unique("stale");
    let leave = |owner: u32, node: &str| {
        let prepared = Throttle::prepare_with(&config, &node_group_name(node, owner))
            .unwrap_or_else(|e| panic!("{}", no_cgroup_message(e)));
        let dirs = group_dirs(&prepared);
        // Killed: nothing ran the throttle's drop.
        std::mem::forget(prepared);
        dirs
    };

    // A killed agent whose Ray node is gone: empty, with an empty group of its own below.
    let agent = agent_stand_in();
    let stale = leave(agent.id(), &node);
    std::fs::create_dir(stale[0].join("ray")).unwrap();
    kill_9(agent);

    // A killed agent whose tree still runs.
    let agent = agent_stand_in();
    let prepared = Throttle::prepare_with(&config, &node_group_name(&node, agent.id())).unwrap();
    let busy = group_dirs(&prepared);
    let marker = unique("stale-tree");
    let tree = ProcessTree::spawn(prepared.wrap_spec(sh("exec sleep 60", &marker))).unwrap();
    std::mem::forget(prepared);
    wait_for_processes(&marker, 1);
    kill_9(agent);

    // A live agent whose node is not started yet (or between two starts): empty, but its own.
    let live_agent = agent_stand_in();
    let live = leave(live_agent.id(), &node);

    // Another node's group, whose agent was killed too.
    let agent = agent_stand_in();
    let other = leave(agent.id(), &unique("other"));
    kill_9(agent);

    let prepared = Throttle::prepare_node(&config, &node).unwrap();
    let own = group_dirs(&prepared);
    assert!(
        own[0].ends_with(format!(
            "flotilla-{}",
            node_group_name(&node, std::process::id())
        )),
        "{own:?}"
    );
    for dir in &stale {
        assert!(!dir.exists(), "{} was left", dir.display());
    }
    for dir in busy.iter().chain(&live).chain(&other) {
        assert!(dir.exists(), "{} was removed", dir.display());
    }
    let inside = std::fs::read_to_string(busy[0].join("cgroup.procs")).unwrap();
    assert!(
        marked_processes(&marker)
            .iter()
            .any(|pid| inside.split_whitespace().any(|p| p == pid.to_string())),
        "the tree is not in the group: {inside}"
    );

    drop(prepared);
    drop(tree);
    kill_9(live_agent);
    // Once the tree is gone, the next start removes the killed agent's group after all.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marked_processes(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the tree never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let removed = flotilla_host::throttle::remove_stale(&config, &node);
    for dir in busy.iter().chain(&live) {
        assert!(
            !dir.exists() && removed.contains(dir),
            "{} was left",
            dir.display()
        );
    }
    assert!(other.iter().all(|d| d.exists()));
    remove_groups(&other);
}

/// A directory laid out like a cgroup2 parent with the cpu controller available.
fn fake_v2_parent(subtree_control: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path();
    std::fs::write(
        parent.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    std::fs::write(parent.join("cgroup.subtree_control"), subtree_control).unwrap();
    std::fs::write(parent.join("cgroup.procs"), "").unwrap();
    tmp
}

/// The files the kernel would create in a new cgroup2 directory.
fn fake_v2_child(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(format!("flotilla-{name}"));
    std::fs::create_dir(&dir).unwrap();
    for (file, text) in [
        ("cgroup.procs", ""),
        ("cgroup.freeze", "0\n"),
        ("cgroup.kill", ""),
        ("cpu.max", "max 100000\n"),
        ("cpu.idle", "0\n"),
        (
            "cpu.stat",
            "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
        ),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn v2_config(root: &Path) -> ThrottleConfig {
    ThrottleConfig {
        cgroup_v2_root: Some(root.into()),
        force_backend: Some(BackendKind::CgroupV2),
        ..ThrottleConfig::default()
    }
}

#[test]
fn throttle_cgroup_v2_writes_exactly_the_expected_files() {
    let tmp = fake_v2_parent("memory\n");
    let parent = tmp.path();
    let name = unique("v2");
    let dir = fake_v2_child(parent, &name);
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap();
    let file = |f: &str| read(dir.join(f));

    // A real process to move (into a plain file: it stays where it is), without a marker.
    let mut leader = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = leader.id();
    let mut throttle =
        Throttle::attach_with(&v2_config(parent), &name, pid, &unique("v2-none")).unwrap();
    assert_eq!(read(parent.join("cgroup.subtree_control")), "+cpu");
    assert_eq!(file("cpu.max"), "max 100000");
    assert_eq!(file("cpu.idle"), "1");
    assert_eq!(file("cgroup.procs"), pid.to_string());
    let g = throttle.guarantees();
    assert_eq!(
        (g.backend, g.hard_cap, g.atomic_freeze),
        ("cgroup v2", true, true)
    );
    assert_eq!(throttle.cpu_time(), Some(Duration::from_millis(1500)));

    throttle.set(Limit::Cap { cpus: 1.5 }).unwrap();
    assert_eq!(file("cpu.max"), "150000 100000");
    throttle.set(Limit::Freeze).unwrap();
    assert_eq!(file("cgroup.freeze"), "1");
    assert_eq!(
        file("cpu.max"),
        "150000 100000",
        "the cap survives a freeze"
    );
    throttle.set(Limit::Thaw).unwrap();
    assert_eq!(file("cgroup.freeze"), "0");
    assert_eq!(file("cpu.max"), "150000 100000");
    assert_eq!(throttle.cap(), Some(1.5));

    // A new cap on a frozen tree is written before the thaw, and thaws it.
    throttle.set(Limit::Freeze).unwrap();
    throttle.set(Limit::Cap { cpus: 0.25 }).unwrap();
    assert_eq!(file("cpu.max"), "25000 100000");
    assert_eq!(file("cgroup.freeze"), "0");
    assert!(!throttle.is_frozen());
    throttle.set(Limit::Full).unwrap();
    assert_eq!(file("cpu.max"), "max 100000");

    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = throttle.set(Limit::Cap { cpus: bad }).unwrap_err();
        assert!(matches!(err, ThrottleError::InvalidCap(_)), "{err}");
    }
    assert_eq!(
        file("cpu.max"),
        "max 100000",
        "a refused cap writes nothing"
    );

    throttle.kill();
    assert_eq!(file("cgroup.kill"), "1");

    // Dropped while frozen: thawed, its processes handed to the parent, the directory gone.
    throttle.set(Limit::Freeze).unwrap();
    drop(throttle);
    assert_eq!(read(parent.join("cgroup.procs")), pid.to_string());
    assert!(!dir.exists());

    leader.kill().unwrap();
    leader.wait().unwrap();
}

#[test]
fn throttle_cgroup_v2_writes_the_memory_ceiling_to_memory_max_and_memory_high() {
    let tmp = fake_v2_parent("cpu\n");
    let parent = tmp.path();
    let name = unique("v2-memory");
    let dir = fake_v2_child(parent, &name);
    for (file, text) in [
        ("memory.max", "123\n"),
        ("memory.high", "123\n"),
        ("memory.current", "1000000\n"),
        (
            "memory.stat",
            "anon 900000\nfile 100000\ninactive_file 60000\n",
        ),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let file = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let prepared = Throttle::prepare_with(&v2_config(parent), &name).unwrap();
    assert_eq!(
        std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap(),
        "+memory"
    );
    // A ceiling a crashed agent left is lifted.
    assert_eq!(
        (file("memory.max"), file("memory.high")),
        ("max".into(), "max".into())
    );
    let mut throttle = prepared.attach(std::process::id(), "").unwrap();
    assert!(throttle.guarantees().memory_ceiling);
    assert_eq!(throttle.memory_used(), Some(940_000));
    let ceiling = 64 << 20;
    assert_eq!(
        throttle.set_memory_limit(Some(ceiling)).unwrap(),
        MemoryCeiling::Held
    );
    assert_eq!(file("memory.max"), ceiling.to_string());
    assert_eq!(file("memory.high"), (ceiling - ceiling / 16).to_string());
    assert!(matches!(
        throttle.set_memory_limit(Some(100)),
        Err(ThrottleError::InvalidMemoryLimit(100))
    ));
    assert_eq!(throttle.memory_limit(), Some(ceiling));
    throttle.set_memory_limit(None).unwrap();
    assert_eq!(
        (file("memory.max"), file("memory.high")),
        ("max".into(), "max".into())
    );
    assert_eq!(throttle.memory_limit(), None);
    // The process stays where it is (the parent's procs file is a plain file).
    drop(throttle);
    assert!(!dir.exists());
}

#[test]
fn throttle_cgroup_v2_leaves_an_enabled_cpu_controller_alone() {
    let tmp = fake_v2_parent("cpu memory\n");
    let name = unique("v2-enabled");
    let dir = fake_v2_child(tmp.path(), &name);
    let config = ThrottleConfig {
        idle: false,
        ..v2_config(tmp.path())
    };
    let prepared = Throttle::prepare_with(&config, &name).unwrap();
    assert_eq!(prepared.procs_files(), [dir.join("cgroup.procs")]);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap(),
        "cpu memory\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("cpu.idle")).unwrap(),
        "0\n"
    );
    drop(prepared);
    assert!(
        !dir.exists(),
        "a prepared throttle never attached is removed too"
    );
}

#[test]
fn throttle_cgroup_v2_that_the_kernel_did_not_populate_fails_and_leaves_nothing() {
    let tmp = fake_v2_parent("cpu\n");
    let name = unique("v2-empty");
    let err = Throttle::prepare_with(&v2_config(tmp.path()), &name).unwrap_err();
    assert!(
        matches!(&err, ThrottleError::Io { path, .. } if path.ends_with("cpu.max")),
        "{err}"
    );
    assert!(!tmp.path().join(format!("flotilla-{name}")).exists());
}

#[test]
fn throttle_names_that_are_not_directory_names_are_refused() {
    for bad in ["", "../escape", "a/b"] {
        let err = Throttle::prepare(bad).unwrap_err();
        assert!(
            matches!(err, ThrottleError::InvalidName(_)),
            "{bad:?}: {err}"
        );
    }
}
