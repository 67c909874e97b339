//! The memory ceiling against the real kernel: a tree that holds memory in a real cgroup (v1 on
//! the build machines), with an "owner" process outside it. Modest sizes (a few hundred MiB):
//! the machine is shared.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flotilla_host::process::{ProcessTree, TreeSpec, marked_processes};
use flotilla_host::throttle::{BackendKind, MemoryCeiling, Throttle, ThrottleConfig};

const MIB: u64 = 1 << 20;

fn unique(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Python that takes `mib` MiB, writes every page (so it is really held) and waits.
fn holder(mib: u64) -> String {
    format!(
        "python3 -c 'import time; b = bytearray({mib} << 20); \
         [b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; time.sleep(600)'"
    )
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory of the memory cgroup `pid` is in, from `/proc/<pid>/cgroup`.
fn memory_cgroup_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _ = parts.next()?;
        let controllers = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| parts.next().map(str::to_string))?
    })?;
    Some(Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_ceiling_presses_the_tree_and_never_the_owner() {
    let marker = unique("mem");
    let name = unique("mem");
    let config = ThrottleConfig {
        force_backend: Some(BackendKind::CgroupV1),
        ..ThrottleConfig::default()
    };
    let prepared = Throttle::prepare_with(&config, &name).unwrap_or_else(|e| {
        panic!("this test needs a real cgroup v1 with the memory controller and root: {e}")
    });
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let grown = tmp.path().join("grown");
    // Two workers of 120 and 200 MiB; on `go`, a third tries to take 400 MiB more.
    let script = format!(
        "{} & {} & while [ ! -e {go} ]; do sleep 0.05; done; {}; echo $? > {grown}; sleep 600",
        holder(120),
        holder(200),
        holder(400).replace("time.sleep(600)", "time.sleep(0)"),
        go = go.display(),
        grown = grown.display(),
    );
    let spec = prepared.wrap_spec(TreeSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        marker: marker.clone(),
        ..TreeSpec::default()
    });
    let tree = ProcessTree::spawn(spec).unwrap();
    let mut throttle = prepared.attach(tree.pid(), &marker).unwrap();
    assert!(
        throttle.guarantees().memory_ceiling,
        "{:?}",
        throttle.guarantees()
    );
    let dir = memory_cgroup_of(tree.pid()).expect("the tree's memory cgroup");
    assert!(
        dir.ends_with(format!("flotilla-{name}")),
        "the tree joined the throttle's memory group: {}",
        dir.display()
    );
    wait_until("the tree holds its 320 MiB", || {
        throttle.memory_used().is_some_and(|u| u >= 320 * MIB)
    });
    let used = throttle.memory_used().unwrap();
    let kernel = read_number(&dir.join("memory.usage_in_bytes"));
    assert!(used <= kernel, "{used} > {kernel}");

    // The owner, outside the tree, takes memory too.
    let mut owner = std::process::Command::new("/bin/sh")
        .args(["-c", &holder(150)])
        .spawn()
        .unwrap();

    // A ceiling above what the tree holds is in force as written.
    let roomy = used + 64 * MIB;
    assert_eq!(
        throttle.set_memory_limit(Some(roomy)).unwrap(),
        MemoryCeiling::Held
    );
    let limit_file = dir.join("memory.limit_in_bytes");
    let page = 4096;
    assert_eq!(read_number(&limit_file) / page, roomy / page);
    assert_eq!(
        read_number(&dir.join("memory.soft_limit_in_bytes")) / page,
        (roomy - roomy / 16) / page
    );
    assert_eq!(throttle.memory_limit(), Some(roomy));

    // Below what it holds: nothing to reclaim (anonymous pages, no swap), so the kernel refuses
    // and the last ceiling stays; the caller sheds the largest process.
    let tight = 200 * MIB;
    assert_eq!(
        throttle.set_memory_limit(Some(tight)).unwrap(),
        MemoryCeiling::Refused
    );
    assert_eq!(throttle.memory_limit(), Some(roomy));
    assert_eq!(read_number(&limit_file) / page, roomy / page);
    let by_memory = throttle.processes_by_memory();
    let (largest, bytes) = by_memory[0];
    assert!(bytes >= 190 * MIB, "{by_memory:?}");
    assert!(by_memory.windows(2).all(|w| w[0].1 >= w[1].1));
    flotilla_host::process::kill(largest);
    wait_until("the shed worker's memory is given back", || {
        throttle.memory_used().is_some_and(|u| u < tight)
    });
    assert_eq!(
        throttle.set_memory_limit(Some(tight)).unwrap(),
        MemoryCeiling::Held
    );

    // In force, the ceiling holds: a process of the tree that grows past it is killed inside
    // the tree, and the owner's process outside it lives on.
    std::fs::write(&go, "").unwrap();
    wait_until("the growing process ends", || grown.exists());
    let status: i32 = std::fs::read_to_string(&grown)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        status,
        128 + libc::SIGKILL,
        "killed by the kernel at the ceiling"
    );
    assert!(throttle.memory_used().unwrap() <= tight);
    assert!(owner.try_wait().unwrap().is_none(), "the owner was killed");
    assert!(
        marked_processes(&marker).len() >= 2,
        "the rest of the tree runs"
    );

    // Lifted, the tree may grow again.
    assert_eq!(
        throttle.set_memory_limit(None).unwrap(),
        MemoryCeiling::Held
    );
    assert!(read_number(&limit_file) > 1 << 60);
    assert_eq!(throttle.memory_limit(), None);

    throttle.kill();
    drop(throttle);
    assert!(!dir.exists(), "{} left behind", dir.display());
    owner.kill().unwrap();
    owner.wait().unwrap();
}

#[test]
fn the_signal_backend_reads_the_trees_memory_but_holds_no_ceiling() {
    let marker = unique("mem-signals");
    let tree = ProcessTree::spawn(TreeSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), holder(64).into()],
        marker: marker.clone(),
        ..TreeSpec::default()
    })
    .unwrap();
    let config = ThrottleConfig {
        force_backend: Some(BackendKind::Signals),
        ..ThrottleConfig::default()
    };
    let mut throttle =
        Throttle::attach_with(&config, &unique("mem-signals"), tree.pid(), &marker).unwrap();
    assert!(!throttle.guarantees().memory_ceiling);
    wait_until("the tree holds its 64 MiB", || {
        throttle.memory_used().is_some_and(|u| u >= 64 * MIB)
    });
    assert_eq!(
        throttle.set_memory_limit(Some(16 * MIB)).unwrap(),
        MemoryCeiling::NotHeld
    );
    assert_eq!(throttle.memory_limit(), Some(16 * MIB));
    let (_, largest) = throttle.processes_by_memory()[0];
    assert!(largest >= 64 * MIB);
    throttle.kill();
}
