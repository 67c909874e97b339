//! What the Ray integration tests share: the runtime, node configurations, and reading a node's
//! processes and state.
#![allow(dead_code)] // Each test binary uses its own part.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flotilla_ray::supervisor::{Backoff, NodeConfig, Role};
use flotilla_ray::{NodePorts, RayToken, Runtime, RuntimeManager, RuntimeSpec, StateClient};

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
