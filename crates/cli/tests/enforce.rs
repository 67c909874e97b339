//! Politeness enforced on a real Ray cluster: the owner's activity caps the node's process tree
//! and shrinks the CPUs Ray advertises; "finish" and "now" pauses drain the node without losing
//! a task. A one-machine cluster (`flotilla up`, worker `w1` with 2 CPUs) plus a second worker
//! (`flotilla worker`, `w2` with 1 CPU), with the owner's idle time fed over the agent's control
//! channel as the desktop app feeds it.
#![cfg(target_os = "linux")]

mod common;
use common::flotilla;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BASE: u16 = 22000;

struct Cluster {
    home: tempfile::TempDir,
    up: Child,
    worker: Option<Child>,
    /// The idle time (ms) fed to w1's agent every 500 ms; u64::MAX stops feeding.
    idle_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.home.path().join("up.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- the end of `flotilla up`'s log:");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        for c in self.worker.iter_mut().chain([&mut self.up]) {
            // SAFETY: plain kill of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}

/// One request to w1's agent over its control socket.
fn ask(home: &Path, req: &str) -> serde_json::Value {
    let mut s =
        std::os::unix::net::UnixStream::connect(flotilla_host::Dirs::under(home).agent_socket())
            .unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn cluster_json(home: &Path) -> serde_json::Value {
    let out = flotilla(home).args(["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn node<'a>(c: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    c["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name && n["state"] == "ALIVE")
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    t.elapsed()
}

fn start() -> Cluster {
    start_with(BASE, &[])
}

/// [`start`] on ports from `base`, with extra environment for `flotilla up`.
fn start_with(base: u16, env: &[(&str, &str)]) -> Cluster {
    let home = tempfile::Builder::new()
        .prefix("fl")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    // Active = input in the last 2 s; one CPU then; full again 2 s after the owner leaves.
    std::fs::write(
        home.path().join("config/flotilla.toml"),
        "[policy]\nactive_after_input_secs = 2\nramp_up_after_secs = 2\nactive_cpus = 1\n\
         owner_load_threshold = 1.0\nmin_free_memory_fraction = 0\n",
    )
    .unwrap();
    let mut up = flotilla(home.path());
    up.args([
        "up",
        "--cpus",
        "2",
        "--object-store-mb",
        "100",
        "--name",
        "w1",
    ]);
    up.args(common::port_args(base));
    up.envs(env.iter().copied());
    let log = std::fs::File::create(home.path().join("up.log")).unwrap();
    let up = up.stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let idle_ms = Arc::new(AtomicU64::new(600_000));
    let stop = Arc::new(AtomicBool::new(false));
    let mut c = Cluster {
        home,
        up,
        worker: None,
        idle_ms: idle_ms.clone(),
        stop: stop.clone(),
    };
    wait_for("the one-machine cluster", Duration::from_secs(180), || {
        flotilla_host::Dirs::under(c.home.path())
            .agent_socket()
            .exists()
            && node(&cluster_json(c.home.path()), "w1").is_some()
    });
    let address = cluster_json(c.home.path())["ray_address"]
        .as_str()
        .unwrap()
        .to_string();
    c.worker = Some(
        flotilla(c.home.path())
            .args([
                "worker",
                "--address",
                &address,
                "--name",
                "w2",
                "--cpus",
                "1",
            ])
            .args([
                "--object-store-mb",
                "100",
                "--node-ports",
                &(base + 900).to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the second worker", Duration::from_secs(120), || {
        node(&cluster_json(c.home.path()), "w2").is_some()
    });
    // The desktop session's feed: the owner's idle time, refreshed twice a second.
    let home = c.home.path().to_path_buf();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let ms = idle_ms.load(Ordering::SeqCst);
            if ms != u64::MAX && flotilla_host::Dirs::under(&home).agent_socket().exists() {
                let _ = std::panic::catch_unwind(|| {
                    ask(&home, &format!(r#"{{"idle_ms": {ms}, "source": "test"}}"#))
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    c
}

/// CPU time (in clock ticks) of the processes of node `name`'s tree.
fn tree_ticks(name: &str) -> u64 {
    tree_pids(name)
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            Some(rest[11].parse::<u64>().ok()? + rest[12].parse::<u64>().ok()?)
        })
        .sum()
}

/// The processes of node `name`'s tree.
fn tree_pids(name: &str) -> Vec<u32> {
    let prefix = format!("FLOTILLA_TREE={name}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|&b| b == 0)
                        .any(|kv| kv.starts_with(prefix.as_bytes()))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The idle Python workers of node `name` (Ray titles them `ray::IDLE`).
fn idle_workers(name: &str) -> usize {
    tree_pids(name)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"ray::IDLE") && !c.starts_with(b"ray::IDLE_"))
        })
        .count()
}

/// The warm workers w1's agent counts.
fn warm(home: &Path) -> Option<u64> {
    ask(home, r#"{"get": "decision"}"#)["decision"]["enforcement"]["warm_workers"].as_u64()
}

/// Rewrites w1's politeness settings and has its agent read them again.
fn set_policy(home: &Path, policy: &str) {
    std::fs::write(home.join("config/flotilla.toml"), policy).unwrap();
    let r = ask(home, r#"{"reload": "policy"}"#);
    assert_eq!(r["ok"], true, "{r}");
}

fn tree_cores(name: &str, over: Duration) -> f64 {
    let a = tree_ticks(name);
    std::thread::sleep(over);
    let b = tree_ticks(name);
    // Clock ticks are 1/100 s on Linux.
    b.saturating_sub(a) as f64 / 100.0 / over.as_secs_f64()
}

/// A driver that runs `n` busy tasks of `secs` each (all on node `pin`, if given) and prints
/// one JSON line per task: which node ran it and when it started.
fn driver(c: &Cluster, n: u32, secs: f64, pin: Option<&str>) -> (Child, PathBuf) {
    let script = c.home.path().join(format!("driver-{n}-{secs}.py"));
    let options = match pin {
        Some(name) => format!(
            "ids = [x['NodeID'] for x in ray.nodes() if x['Alive'] and x.get('NodeName') == {name:?}]\n\
             from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy\n\
             busy = busy.options(scheduling_strategy=NodeAffinitySchedulingStrategy(ids[0], soft=False))\n"
        ),
        None => String::new(),
    };
    std::fs::write(
        &script,
        format!(
            "import json, os, time, ray\n\
             ray.init(log_to_driver=False)\n\
             @ray.remote(num_cpus=1, max_retries=5)\n\
             def busy(i):\n\
             \x20   t0 = time.time(); x = 0\n\
             \x20   while time.time() - t0 < {secs}:\n\
             \x20       x += 1\n\
             \x20   return {{'i': i, 'node': os.environ['FLOTILLA_TREE'].split('-')[0], 'start': t0}}\n\
             {options}\
             for r in ray.get([busy.remote(i) for i in range({n})]):\n\
             \x20   print(json.dumps(r), flush=True)\n"
        ),
    )
    .unwrap();
    let token = {
        let out = flotilla(c.home.path())
            .args(["secret", "get", "flotilla.ray-token", "--reveal"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.home.path().join("state/head.json")).unwrap())
            .unwrap();
    let python = PathBuf::from(info["runtime_dir"].as_str().unwrap()).join("bin/python");
    let child = Command::new(python)
        .arg(&script)
        .env("RAY_ADDRESS", info["ray_address"].as_str().unwrap())
        .env("RAY_AUTH_MODE", "token")
        .env("RAY_AUTH_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, script)
}

fn results(child: Child) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn advertised(c: &Cluster, name: &str) -> Option<f64> {
    node(&cluster_json(c.home.path()), name)?["cpus_total"].as_f64()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn the_owners_activity_caps_the_node_and_pauses_lose_no_task() {
    let _one = common::CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let c = start();
    let home = c.home.path();
    assert_eq!(advertised(&c, "w1"), Some(2.0));

    // Owner away, nothing running: w1 keeps a warm worker per CPU it lends, ready for the next
    // job. When it lends nothing (the owner is back and `active_cpus = 0`), they are ended;
    // when it lends again, the agent starts them again.
    wait_for("two warm workers on w1", Duration::from_secs(60), || {
        warm(home) == Some(2) && idle_workers("w1") == 2
    });
    let policy = std::fs::read_to_string(home.join("config/flotilla.toml")).unwrap();
    set_policy(home, &policy.replace("active_cpus = 1", "active_cpus = 0"));
    c.idle_ms.store(0, Ordering::SeqCst);
    wait_for(
        "w1 lends nothing and keeps no warm worker",
        Duration::from_secs(30),
        || advertised(&c, "w1") == Some(0.0) && warm(home) == Some(0) && idle_workers("w1") == 0,
    );
    set_policy(home, &policy);
    c.idle_ms.store(600_000, Ordering::SeqCst);
    wait_for("w1's warm workers back", Duration::from_secs(60), || {
        warm(home) == Some(2) && idle_workers("w1") == 2
    });

    // The owner starts typing: Ray's advertised CPUs follow (nothing runs, so the shrink is
    // immediate), and come back when they leave. How long it took is printed, not judged
    // (about 2 s: a tick of the agent, then the head's 2 s read of Ray; the politeness
    // benchmark measures relief): the bound only says it happened.
    c.idle_ms.store(0, Ordering::SeqCst);
    let took = wait_for("w1 advertises 1 CPU", Duration::from_secs(20), || {
        advertised(&c, "w1") == Some(1.0)
    });
    eprintln!("advertised CPUs followed the owner in {took:?}");
    let d = ask(home, r#"{"get": "decision"}"#);
    assert_eq!(d["decision"]["decision"]["target_cpus"], 1, "{d}");
    assert_eq!(d["decision"]["enforcement"]["state"], "cap", "{d}");
    c.idle_ms.store(600_000, Ordering::SeqCst);
    wait_for(
        "w1 advertises 2 CPUs again",
        Duration::from_secs(10),
        || advertised(&c, "w1") == Some(2.0),
    );

    // A saturating workload: w1 busy on both CPUs. The owner comes back: the OS cap holds the
    // tree to one core at once, and no running task is killed by the shrink.
    let (job, _) = driver(&c, 2, 25.0, Some("w1"));
    wait_for("both tasks running on w1", Duration::from_secs(60), || {
        node(&cluster_json(home), "w1").is_some_and(|n| n["cpus_used"] == 2.0)
    });
    // The tasks run at the lowest priority: on a machine busy with other work they get less than
    // two cores, which is the point; the cap below must hold either way.
    let before = tree_cores("w1", Duration::from_secs(3));
    eprintln!("w1 saturated, uncapped: {before:.2} cores");
    c.idle_ms.store(0, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(750));
    let capped = tree_cores("w1", Duration::from_secs(5));
    eprintln!("w1 under the 1-CPU cap: {capped:.2} cores over 5 s");
    assert!(capped <= 1.25, "the capped tree used {capped:.2} cores");
    let done = results(job);
    assert_eq!(
        done.len(),
        2,
        "every task of the saturating job completed: {done:?}"
    );
    wait_for(
        "w1 advertises 1 CPU once its tasks are done",
        Duration::from_secs(10),
        || advertised(&c, "w1") == Some(1.0),
    );
    c.idle_ms.store(600_000, Ordering::SeqCst);
    wait_for("w1 back to 2 CPUs", Duration::from_secs(10), || {
        advertised(&c, "w1") == Some(2.0)
    });

    // "Finish": the running tasks complete, none starts on w1 afterwards, w1 leaves, and the
    // job completes on w2.
    let (job, _) = driver(&c, 6, 6.0, None);
    wait_for("both of w1's CPUs leased", Duration::from_secs(30), || {
        node(&cluster_json(home), "w1").is_some_and(|n| n["cpus_used"] == 2.0)
    });
    assert_eq!(ask(home, r#"{"pause": "finish"}"#)["ok"], true);
    let paused_at = unix_now();
    let done = results(job);
    assert_eq!(done.len(), 6, "{done:?}");
    // The two tasks leased before the pause run there (they may begin a moment later, on a
    // busy machine several seconds, while a worker process starts); no task of a later wave
    // does.
    let on_w1: Vec<_> = done.iter().filter(|r| r["node"] == "w1").collect();
    assert!(
        on_w1.len() <= 2,
        "tasks ran on w1 after the pause (paused at {paused_at:.1}): {on_w1:?}"
    );
    assert!(done.iter().any(|r| r["node"] == "w2"));
    wait_for("w1 left the cluster", Duration::from_secs(30), || {
        advertised(&c, "w1").is_none()
    });
    let d = ask(home, r#"{"get": "decision"}"#);
    assert_eq!(d["decision"]["enforcement"]["state"], "paused", "{d}");

    // Resume: w1 comes back.
    assert_eq!(ask(home, r#"{"resume": true}"#)["ok"], true);
    wait_for("w1 back after resume", Duration::from_secs(60), || {
        advertised(&c, "w1") == Some(2.0)
    });

    // "Now": w1 stops contributing at once; Ray reruns its tasks on w2, and every task completes.
    let (job, _) = driver(&c, 4, 6.0, None);
    wait_for("both of w1's CPUs leased", Duration::from_secs(30), || {
        node(&cluster_json(home), "w1").is_some_and(|n| n["cpus_used"] == 2.0)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ask(home, r#"{"pause": "now"}"#)["ok"], true);
    std::thread::sleep(Duration::from_millis(500));
    let paused = tree_cores("w1", Duration::from_secs(2));
    eprintln!("w1 right after pause now: {paused:.2} cores");
    assert!(
        paused < 0.3,
        "w1 still used {paused:.2} cores after pause now"
    );
    let done = results(job);
    assert_eq!(done.len(), 4, "every task completed: {done:?}");
    let mut ids: Vec<i64> = done.iter().map(|r| r["i"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 3], "each task exactly once");
    wait_for("w1 left after pause now", Duration::from_secs(30), || {
        advertised(&c, "w1").is_none()
    });
}

/// For Ray versions without the live resize (forced here with `FLOTILLA_RAY_RESIZE=restart`,
/// since Ray 2.60 has it): the node restarts with its new CPU count, but only once no task runs
/// on it, so the running task is not killed.
#[test]
fn without_live_resize_the_idle_node_restarts_with_its_new_cpu_count() {
    let _one = common::CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let c = start_with(
        BASE + 2000,
        &[("FLOTILLA_RAY_RESIZE", "restart"), ("FLOTILLA_LOG", "info")],
    );
    let home = c.home.path();
    let d = ask(home, r#"{"get": "decision"}"#);
    assert_eq!(d["decision"]["enforcement"]["resize"], "restart", "{d}");
    assert_eq!(advertised(&c, "w1"), Some(2.0));

    // A task runs on w1 when the owner comes back: the restart waits for it.
    let (job, _) = driver(&c, 1, 10.0, Some("w1"));
    wait_for("the task running on w1", Duration::from_secs(60), || {
        node(&cluster_json(home), "w1").is_some_and(|n| n["cpus_used"] == 1.0)
    });
    c.idle_ms.store(0, Ordering::SeqCst);
    let owner_back = unix_now();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        advertised(&c, "w1"),
        Some(2.0),
        "w1 must not restart while its task runs"
    );
    // The task is pinned to w1's node id: had a restart killed it, its retries could run
    // nowhere (the new incarnation has another id) and the driver would fail.
    let done = results(job);
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["node"], "w1", "{done:?}");
    let ended = unix_now();
    eprintln!(
        "the task ran {:.1} s and ended {:.1} s after the owner came back",
        ended - done[0]["start"].as_f64().unwrap(),
        ended - owner_back
    );
    let took = wait_for("w1 restarted with 1 CPU", Duration::from_secs(90), || {
        advertised(&c, "w1") == Some(1.0)
    });
    eprintln!("w1 advertised 1 CPU {took:?} after its task ended");
    // The owner leaves: idle, so it restarts at once with both CPUs.
    c.idle_ms.store(600_000, Ordering::SeqCst);
    let took = wait_for("w1 back to 2 CPUs", Duration::from_secs(90), || {
        advertised(&c, "w1") == Some(2.0)
    });
    eprintln!("w1 advertised 2 CPUs again {took:?} after the owner left");
    let d = ask(home, r#"{"get": "decision"}"#);
    assert_eq!(d["decision"]["enforcement"]["state"], "full", "{d}");
}
