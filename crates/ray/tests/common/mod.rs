//! What the Ray integration tests share: the runtime, node configurations, and reading a node's
//! processes and state.
#![allow(dead_code)] // Each test binary uses its own part.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flotilla_ray::supervisor::{Backoff, NodeConfig, Role};
use flotilla_ray::{
    NodePorts, RayToken, Runtime, RuntimeManager, RuntimeSpec, StateClient, Supervisor,
};

pub fn data_dir() -> std::path::PathBuf {
    flotilla_host::Dirs::from_env().data
}

/// The shared runtime (`FLOTILLA_DATA_DIR`, or the platform data dir), installed if needed.
pub async fn runtime() -> Runtime {
    RuntimeManager::new(data_dir())
        .ensure(
            &RuntimeSpec::default(),
            flotilla_ray::runtime::no_progress(),
        )
        .await
        .expect("the runtime installs")
}

/// A small node (1 CPU, 100 MB object store) with its files under `tmp`.
pub fn node(
    role: Role,
    rt: &Runtime,
    name: &str,
    base: u16,
    tmp: &Path,
    token: &RayToken,
) -> NodeConfig {
    NodeConfig {
        role,
        runtime: rt.clone(),
        node_name: name.into(),
        node_ip: None,
        follow_route: false,
        num_cpus: Some(1),
        object_store_bytes: 100 * 1024 * 1024,
        ports: NodePorts::from_base(base, 20),
        temp_dir: tmp.join(name),
        log: tmp.join(format!("{name}.log")),
        token: Some(token.clone()),
        labels: BTreeMap::new(),
        env: vec![],
        backoff: Backoff {
            initial: Duration::from_millis(500),
            ..Backoff::default()
        },
        ready_timeout: Duration::from_secs(90),
        cluster_state: None,
        background: false,
        throttle: None,
    }
}

/// Ids of the ALIVE nodes named `name` in Ray's node table.
pub async fn alive_named(state: &StateClient, name: &str) -> Vec<String> {
    state
        .nodes()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.is_alive() && n.node_name == name)
        .map(|n| n.node_id)
        .collect()
}

/// The raylet of the tree with `marker`.
pub fn raylet_of(marker: &str) -> Option<u32> {
    flotilla_host::process::marked_processes(marker)
        .into_iter()
        .find(|&pid| {
            flotilla_host::process::cmdline(pid)
                .and_then(|args| args.first().map(|a| a.ends_with("/raylet")))
                .unwrap_or(false)
        })
}

/// A running test head: its supervisor, its dashboard, and its node address.
pub struct TestHead {
    pub head: Supervisor,
    pub state: StateClient,
    pub ip: String,
}

/// Starts a head with GCS port `gcs`, dashboard port `gcs + 1886`, client port `gcs - 378`
/// and node ports from `gcs + 1`, and waits until it is ready.
pub async fn start_head(rt: &Runtime, tmp: &Path, token: &RayToken, gcs: u16) -> TestHead {
    let cfg = node(
        Role::Head {
            gcs_port: gcs,
            dashboard_port: gcs + 1886,
            client_server_port: gcs - 378,
        },
        rt,
        "head",
        gcs + 1,
        tmp,
        token,
    );
    let state = cfg.dashboard().unwrap();
    let head = Supervisor::start(cfg).await.unwrap();
    head.wait_ready(Duration::from_secs(120)).await.unwrap();
    let ip = state
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.is_head_node)
        .unwrap()
        .node_ip;
    TestHead { head, state, ip }
}
