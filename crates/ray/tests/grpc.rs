//! Flotilla's Ray gRPC calls against a real head and worker on this machine: live CPU resizing
//! on the worker's raylet, and draining plus node states on the GCS.
//!
//! One test starts the cluster and goes through its phases in order (the later ones end worker
//! incarnations, which the supervisor restarts); `cargo test` runs test binaries one after
//! another, so one cluster runs at a time. Its ports differ from tests/nodes.rs's.
//!
//! Linux only, like tests/nodes.rs.
#![cfg(target_os = "linux")]

mod common;

use common::{alive_named, node, raylet_of, runtime};

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_ray::grpc::{DrainReason, GcsClient, NodeLifecycle, NodeState, RayletClient};
use flotilla_ray::supervisor::Role;
use flotilla_ray::{RayToken, Runtime, StateClient, Supervisor};

const GCS_PORT: u16 = 25379;
const WORKER_BASE: u16 = 25480;

/// Waits up to `limit` for `check` to hold; returns how long it took, or `None`.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker's CPU total in Ray's cluster view (what `ray.cluster_resources()` reads).
async fn cluster_cpus(state: &StateClient) -> Option<f64> {
    state
        .resource_usage()
        .await
        .ok()?
        .total
        .get("CPU")
        .map(|(_, total)| *total)
}

async fn gcs_node(gcs: &mut GcsClient, id: &str) -> Option<NodeState> {
    gcs.node_states()
        .await
        .ok()?
        .into_iter()
        .find(|n| n.node_id_hex == id)
}

/// When the GCS and the dashboard first show `cpus` for the worker `id`.
async fn seen(
    gcs: &mut GcsClient,
    state: &StateClient,
    id: &str,
    cpus: f64,
    limit: Duration,
) -> (Option<Duration>, Option<Duration>) {
    let start = Instant::now();
    let (mut g, mut d) = (None, None);
    while start.elapsed() < limit && (g.is_none() || d.is_none()) {
        if g.is_none() && gcs_node(gcs, id).await.map(|n| n.cpus_total()) == Some(cpus) {
            g = Some(start.elapsed());
        }
        if d.is_none() && cluster_cpus(state).await == Some(cpus) {
            d = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (g, d)
}

/// A driver that runs two tasks holding one CPU each for ~6 s, with no retries (a task killed
/// by a shrink or a drain fails the driver). Each task touches `dir/started-<i>` when it starts.
fn start_driver(
    rt: &Runtime,
    address: &str,
    token: &RayToken,
    dir: &Path,
) -> tokio::process::Child {
    let script = "import os, sys, time, ray\n\
                  d = sys.argv[1]\n\
                  ray.init(log_to_driver=False)\n\
                  @ray.remote(num_cpus=1, max_retries=0)\n\
                  def hold(i):\n    \
                      open(os.path.join(d, 'started-%d' % i), 'w').close()\n    \
                      time.sleep(6)\n    \
                      return i + 10\n\
                  print(sum(ray.get([hold.remote(i) for i in range(2)])))\n";
    std::fs::create_dir_all(dir).unwrap();
    tokio::process::Command::new(rt.python())
        .args(["-c", script])
        .arg(dir)
        .env("RAY_ADDRESS", address)
        .envs(token.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn both_started(dir: &Path) -> bool {
    (0..2).all(|i| dir.join(format!("started-{i}")).exists())
}

async fn driver_result(child: tokio::process::Child) -> String {
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the driver ends")
        .unwrap();
    assert!(
        out.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits for the worker named `w1` to be ALIVE with an id not in `old`.
async fn new_worker(state: &StateClient, old: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let found = alive_named(state, "w1")
            .await
            .into_iter()
            .find(|id| !old.contains(id));
        if let Some(id) = found {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no new incarnation of the worker is ALIVE in Ray's node table"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_worker_is_resized_live_and_drained() {
    let rt = runtime().await;
    let tmp = tempfile::Builder::new()
        .prefix("flg")
        .tempdir_in("/tmp")
        .unwrap();
    let token = RayToken::generate();
    let common::TestHead {
        head,
        state,
        ip: head_ip,
    } = common::start_head(&rt, tmp.path(), &token, GCS_PORT).await;
    let address = format!("{head_ip}:{GCS_PORT}");
    let gcs_addr: SocketAddr = address.parse().unwrap();
    let raylet_addr: SocketAddr = format!("{head_ip}:{WORKER_BASE}").parse().unwrap();
    let mut wcfg = node(
        Role::Worker { head: gcs_addr },
        &rt,
        "w1",
        WORKER_BASE,
        tmp.path(),
        &token,
    );
    wcfg.num_cpus = Some(2);
    wcfg.node_ip = Some(head_ip.parse().unwrap());
    wcfg.cluster_state = Some(state.clone());
    let worker = Supervisor::start(wcfg.clone()).await.unwrap();
    worker.wait_ready(Duration::from_secs(120)).await.unwrap();
    let w1 = new_worker(&state, &[]).await;
    assert!(
        within(Duration::from_secs(30), || async {
            cluster_cpus(&state).await == Some(2.0)
        })
        .await
        .is_some(),
        "the worker advertises its 2 CPUs"
    );

    // A wrong or missing token is refused at once, and said to be so.
    let wrong = RayToken::generate();
    let started = Instant::now();
    let mut bad = RayletClient::connect(raylet_addr, Some(wrong.clone()))
        .await
        .unwrap();
    let err = bad.resize_cpus(1.0).await.unwrap_err().to_string();
    assert!(err.contains("token is wrong"), "{err}");
    let mut bad_gcs = GcsClient::connect(gcs_addr, Some(wrong)).await.unwrap();
    let err = bad_gcs.node_states().await.unwrap_err().to_string();
    assert!(err.contains("token is wrong"), "{err}");
    let mut anonymous = RayletClient::connect(raylet_addr, None).await.unwrap();
    let err = anonymous.resize_cpus(1.0).await.unwrap_err().to_string();
    assert!(err.contains("no token was sent"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(cluster_cpus(&state).await, Some(2.0), "nothing changed");

    // Live resize of an idle worker: 2 -> 1 -> 2. The GCS's resource view (what
    // `ray.cluster_resources()` reads) shows it within 3 s; the dashboard's cluster status is
    // refreshed by Ray's autoscaler monitor every ~5 s.
    let mut raylet = RayletClient::connect(raylet_addr, Some(token.clone()))
        .await
        .unwrap();
    let mut gcs = GcsClient::connect(gcs_addr, Some(token.clone()))
        .await
        .unwrap();
    for cpus in [1.0, 2.0] {
        assert_eq!(raylet.resize_cpus(cpus).await.unwrap(), cpus);
        let (g, d) = seen(&mut gcs, &state, &w1, cpus, Duration::from_secs(10)).await;
        println!("resize to {cpus} CPU: in the GCS after {g:?}, on the dashboard after {d:?}");
        assert!(
            g.is_some_and(|t| t <= Duration::from_secs(3)),
            "the GCS shows {cpus} CPU within 3 s: {g:?}"
        );
        assert!(d.is_some(), "the dashboard shows {cpus} CPU within 10 s");
    }

    // A shrink never kills a running task: Ray takes back only free CPUs, so with both busy
    // the total stays 2, both tasks complete, and the same call once they are done shrinks.
    let dir = tmp.path().join("shrink");
    let driver = start_driver(&rt, &address, &token, &dir);
    assert!(
        within(Duration::from_secs(60), || both_started(&dir))
            .await
            .is_some(),
        "both tasks start"
    );
    assert_eq!(
        raylet.resize_cpus(1.0).await.unwrap(),
        2.0,
        "Ray takes no CPU from a running task"
    );
    assert_eq!(driver_result(driver).await, "21", "both tasks complete");
    assert_eq!(raylet.resize_cpus(1.0).await.unwrap(), 1.0);
    let (g, _) = seen(&mut gcs, &state, &w1, 1.0, Duration::from_secs(3)).await;
    println!("shrink after the tasks: in the GCS after {g:?}");
    assert!(
        g.is_some(),
        "the worker advertises 1 CPU once its tasks end"
    );
    assert_eq!(raylet.resize_cpus(2.0).await.unwrap(), 2.0);

    // GetClusterStatus knows both nodes, the worker running or idle.
    let states = gcs.node_states().await.unwrap();
    assert!(states.len() >= 2, "{states:?}");
    let w = states.iter().find(|n| n.node_id_hex == w1).unwrap();
    assert!(
        matches!(w.state, NodeLifecycle::Running | NodeLifecycle::Idle),
        "{w:?}"
    );

    // Drain while two tasks run: both complete, then the node leaves (the GCS marks it DEAD and
    // its raylet exits).
    let dir = tmp.path().join("drain-busy");
    let driver = start_driver(&rt, &address, &token, &dir);
    assert!(
        within(Duration::from_secs(60), || both_started(&dir))
            .await
            .is_some(),
        "both tasks start"
    );
    let drained_at = Instant::now();
    let reply = gcs
        .drain_node(&w1, DrainReason::Preemption, "owner is back", None)
        .await
        .unwrap();
    assert!(reply.accepted, "{reply:?}");
    let draining = within(Duration::from_secs(5), || async {
        gcs_node(&mut gcs.clone(), &w1)
            .await
            .is_some_and(|n| n.state == NodeLifecycle::Draining)
    })
    .await;
    assert!(
        draining.is_some(),
        "GetClusterStatus shows the node DRAINING"
    );
    assert!(
        raylet_of(worker.marker()).is_some(),
        "the raylet still runs"
    );
    assert_eq!(driver_result(driver).await, "21", "both tasks complete");
    let done_at = Instant::now();
    let left = node_leaves(&mut gcs, &state, &worker, &w1).await;
    println!(
        "busy drain: DRAINING after {draining:?}; node left {left:?} after its tasks ended, \
         {:?} after the drain",
        left.map(|l| l + done_at.duration_since(drained_at))
    );
    assert!(left.is_some(), "the drained node leaves once its tasks end");

    // A fresh worker, idle: a drain is accepted and the node leaves at once.
    worker.stop().await;
    let worker = Supervisor::start(wcfg.clone()).await.unwrap();
    worker.wait_ready(Duration::from_secs(120)).await.unwrap();
    let w2 = new_worker(&state, std::slice::from_ref(&w1)).await;
    let drained_at = Instant::now();
    let reply = gcs
        .drain_node(
            &w2,
            DrainReason::Preemption,
            "owner is back",
            Some(std::time::SystemTime::now() + Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(reply.accepted, "{reply:?}");
    let left = node_leaves(&mut gcs, &state, &worker, &w2).await;
    println!("idle drain: node left after {left:?}");
    assert!(left.is_some(), "the idle drained node leaves");
    assert!(drained_at.elapsed() < Duration::from_secs(60));

    // A node the GCS does not know counts as drained already.
    let ghost = "00".repeat(28);
    let reply = gcs
        .drain_node(&ghost, DrainReason::IdleTermination, "test", None)
        .await
        .unwrap();
    assert!(reply.accepted, "{reply:?}");
    let err = gcs
        .drain_node("not-hex", DrainReason::Preemption, "test", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("node id in hex"), "{err}");

    worker.stop().await;
    head.stop().await;
}

/// Waits up to 60 s for a drained node to leave: DEAD (or gone) in GetClusterStatus, DEAD on
/// the dashboard, and its raylet exited. Returns how long that took.
async fn node_leaves(
    gcs: &mut GcsClient,
    state: &StateClient,
    worker: &Supervisor,
    id: &str,
) -> Option<Duration> {
    within(Duration::from_secs(60), || {
        let mut gcs = gcs.clone();
        async move {
            gcs_node(&mut gcs, id)
                .await
                .is_none_or(|n| n.state == NodeLifecycle::Dead)
                && raylet_of(worker.marker()).is_none()
                && state
                    .nodes()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .any(|n| n.node_id == id && !n.is_alive())
        }
    })
    .await
}

#[tokio::test]
async fn unreachable_raylet_and_gcs_fail_fast_naming_the_address() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    let err = RayletClient::connect(addr, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot reach Ray's raylet") && err.contains(&addr.to_string()),
        "{err}"
    );
    let err = GcsClient::connect(addr, Some(RayToken::generate()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot reach Ray's GCS") && err.contains(&addr.to_string()),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(6));
}
