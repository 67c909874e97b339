//! Real Ray nodes through the supervisor: a head and a worker on this machine, provisioned by
//! Flotilla's own runtime manager. The tests share one runtime (`FLOTILLA_DATA_DIR`, or the
//! platform data dir); only one test here starts a cluster, and `cargo test` runs test binaries
//! one after another, so one cluster runs at a time.
//!
//! Linux only: the tests read `/proc` to prove that no process of a cluster is left.
#![cfg(target_os = "linux")]

mod common;

use common::{alive_named, data_dir, node, raylet_of, runtime};

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_host::process::marked_processes;
use flotilla_ray::supervisor::{NodePhase, Role};
use flotilla_ray::{RayToken, Runtime, RuntimeManager, RuntimeSpec, Supervisor};

/// Runs a Ray driver on the cluster that squares 8 numbers as tasks.
async fn run_tasks(rt: &Runtime, address: &str, token: &RayToken) -> String {
    let script = "import ray\nray.init(log_to_driver=False)\n@ray.remote(num_cpus=1)\ndef sq(x):\n    return x * x\nprint(sum(ray.get([sq.remote(i) for i in range(8)])))\n";
    let out = tokio::process::Command::new(rt.python())
        .args(["-c", script])
        .env("RAY_ADDRESS", address)
        .envs(token.env())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn wait_gone(marker: &str) -> Vec<u32> {
    for _ in 0..50 {
        let left = marked_processes(marker);
        if left.is_empty() {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    marked_processes(marker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_worker_run_tasks_survive_a_killed_raylet_and_stop_clean() {
    let rt = runtime().await;
    let tmp = tempfile::Builder::new()
        .prefix("fl")
        .tempdir_in("/tmp")
        .unwrap();
    let token = RayToken::generate();
    let common::TestHead {
        head,
        state,
        ip: head_ip,
    } = common::start_head(&rt, tmp.path(), &token, 26379).await;
    let address = format!("{head_ip}:26379");
    let mut wcfg = node(
        Role::Worker {
            head: address.parse::<SocketAddr>().unwrap(),
        },
        &rt,
        "w1",
        27480,
        tmp.path(),
        &token,
    );
    wcfg.node_ip = Some(head_ip.parse().unwrap());
    wcfg.cluster_state = Some(state.clone());
    let worker = Supervisor::start(wcfg).await.unwrap();
    worker.wait_ready(Duration::from_secs(120)).await.unwrap();

    // Ray sees the worker, with its label and one CPU, and runs tasks on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_ids = loop {
        let ids = alive_named(&state, "w1").await;
        if !ids.is_empty() || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        first_ids.len(),
        1,
        "the worker is ALIVE in Ray's node table"
    );
    let nodes = state.nodes().await.unwrap();
    let w = nodes.iter().find(|n| n.node_id == first_ids[0]).unwrap();
    assert_eq!(
        w.labels.get("flotilla.node").map(String::as_str),
        Some("w1")
    );
    assert_eq!(w.cpus_total(), 1.0);
    assert_eq!(run_tasks(&rt, &address, &token).await, "140");

    // kill -9 of the raylet: the launcher exits, the supervisor restarts the node, and a new
    // incarnation is ALIVE within 30 s.
    let raylet = raylet_of(worker.marker()).expect("the worker has a raylet");
    // SAFETY: plain kill of a pid we just found in our own tree.
    unsafe { libc::kill(raylet as i32, libc::SIGKILL) };
    let killed_at = Instant::now();
    let back = loop {
        let ids = alive_named(&state, "w1").await;
        let s = worker.status();
        if s.restarts >= 1
            && s.phase == NodePhase::Ready
            && ids.iter().any(|id| !first_ids.contains(id))
        {
            break true;
        }
        if killed_at.elapsed() > Duration::from_secs(30) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        back,
        "worker not ALIVE again 30 s after its raylet was killed: {:?}",
        worker.status()
    );
    assert_eq!(run_tasks(&rt, &address, &token).await, "140");

    // A clean stop leaves no process of either tree.
    let (hm, wm) = (head.marker().to_string(), worker.marker().to_string());
    worker.stop().await;
    head.stop().await;
    assert_eq!(
        wait_gone(&wm).await,
        Vec::<u32>::new(),
        "worker processes left"
    );
    assert_eq!(
        wait_gone(&hm).await,
        Vec::<u32>::new(),
        "head processes left"
    );
}

#[tokio::test]
async fn a_port_in_use_is_named_with_the_option_to_change_it() {
    let rt = Runtime {
        spec: RuntimeSpec::default(),
        dir: "/nonexistent".into(),
        python_full: "3.11".into(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let cfg = node(
        Role::Head {
            gcs_port: port,
            dashboard_port: 28266,
            client_server_port: 26002,
        },
        &rt,
        "head",
        26480,
        tmp.path(),
        &RayToken::generate(),
    );
    let err = Supervisor::start(cfg).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("port {port}")) && err.contains("--ray-port"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_head_fails_within_10_s_naming_its_address() {
    let rt = Runtime {
        spec: RuntimeSpec::default(),
        dir: "/nonexistent".into(),
        python_full: "3.11".into(),
    };
    let tmp = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let head: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = node(
        Role::Worker { head },
        &rt,
        "w",
        27580,
        tmp.path(),
        &RayToken::generate(),
    );
    let started = Instant::now();
    let err = Supervisor::start(cfg).await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains(&head.to_string()) && err.contains("cannot reach the Ray head"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_half_installed_runtime_is_repaired() {
    // The shared runtime stays untouched: this one lives in its own data dir, installed from
    // uv's warm cache with the same uv.
    let shared = runtime().await;
    let uv = flotilla_ray::uv::find_uv(&data_dir()).expect("uv was installed with the runtime");
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: set before any other thread of this test reads the environment; the other tests
    // in this binary do not read FLOTILLA_UV.
    unsafe { std::env::set_var("FLOTILLA_UV", &uv) };
    let manager = RuntimeManager::new(tmp.path());
    let spec = RuntimeSpec::default();
    let rt = manager
        .ensure(&spec, flotilla_ray::runtime::no_progress())
        .await
        .unwrap();
    assert_eq!(rt.python_full, shared.python_full);

    // Corrupt: Ray's launcher is gone.
    std::fs::remove_file(rt.ray_bin()).unwrap();
    let events = std::sync::Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let progress: flotilla_ray::runtime::ProgressFn =
        std::sync::Arc::new(move |e| sink.lock().unwrap().push(e));
    let rt = manager.ensure(&spec, progress).await.unwrap();
    assert!(rt.ray_bin().is_file());
    let labels: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            flotilla_ray::Progress::Step { label, .. } => Some(label.clone()),
            _ => None,
        })
        .collect();
    assert!(
        labels.iter().any(|l| l.starts_with("Repairing")),
        "{labels:?}"
    );

    // Half-installed: the marker that ends an install is missing.
    std::fs::remove_file(rt.dir.join("flotilla-runtime.json")).unwrap();
    assert!(manager.installed(&spec).is_err());
    manager
        .ensure(&spec, flotilla_ray::runtime::no_progress())
        .await
        .unwrap();
    assert!(manager.installed(&spec).is_ok());
    assert_eq!(manager.list().unwrap().len(), 1);
    assert!(manager.remove(&spec).await.unwrap());
    assert!(manager.list().unwrap().is_empty());
}
