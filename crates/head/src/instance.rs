//! One head per machine: the lock, the discovery file, the Ray token and the running services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_host::Dirs;
use flotilla_ray::supervisor::{Backoff, NodeConfig, Role};
use flotilla_ray::{NodePorts, RayToken, Runtime, StateClient, Supervisor};
use flotilla_secrets::{Secret, SecretStore};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result, io};

/// What a running head publishes about itself in `<state>/head.json`, for `flotilla status`,
/// `flotilla demo` and a second `flotilla up`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadInfo {
    pub pid: u32,
    pub started_unix: u64,
    pub api_url: String,
    /// `ip:port` of the Ray GCS, what `ray.init(address=...)` takes.
    pub ray_address: String,
    /// Ray's own dashboard and job API, on the head's loopback.
    pub ray_dashboard: String,
    pub ray_version: String,
    pub python_version: String,
    pub runtime_dir: PathBuf,
}

impl HeadInfo {
    pub fn path(dirs: &Dirs) -> PathBuf {
        dirs.state.join("head.json")
    }

    /// The runtime the cluster runs (its Python runs drivers and job clients).
    pub fn runtime(&self) -> Runtime {
        Runtime {
            spec: flotilla_ray::RuntimeSpec {
                ray: self.ray_version.clone(),
                python: self
                    .python_version
                    .split('.')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("."),
            },
            dir: self.runtime_dir.clone(),
            python_full: self.python_version.clone(),
        }
    }

    /// The published info of the head running with these dirs, if one runs.
    pub fn read(dirs: &Dirs) -> Option<HeadInfo> {
        let bytes = std::fs::read(Self::path(dirs)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// How to run the head.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    pub dirs: Dirs,
    pub runtime: Runtime,
    pub api_addr: SocketAddr,
    pub gcs_port: u16,
    pub ray_dashboard_port: u16,
    pub client_server_port: u16,
    pub node_ports: NodePorts,
    pub object_store_bytes: u64,
    pub node_name: String,
    /// Extra environment for the Ray head (tests shorten health checks through it).
    pub env: Vec<(String, String)>,
    /// The cluster's Ray token (see [`cluster_token`]).
    pub token: RayToken,
}

/// A running head.
#[derive(Debug)]
pub struct Head {
    info: HeadInfo,
    ray: Option<Supervisor>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    api_cancel: CancellationToken,
    dashboard: StateClient,
    token: RayToken,
    _lock: std::fs::File,
}

/// The name the cluster's Ray token is stored under in the secret store.
pub const RAY_TOKEN_SECRET: &str = "flotilla.ray-token";

/// Reads the cluster's Ray token from the secret store, or makes and stores one.
pub fn cluster_token(store: &SecretStore) -> Result<RayToken> {
    if let Some(t) = read_cluster_token(store)? {
        return Ok(t);
    }
    let token = RayToken::generate();
    store.set(RAY_TOKEN_SECRET, &Secret::from(token.expose()))?;
    Ok(token)
}

/// Reads the cluster's Ray token if the head has made one.
pub fn read_cluster_token(store: &SecretStore) -> Result<Option<RayToken>> {
    match store.get(RAY_TOKEN_SECRET) {
        Ok(s) => Ok(s.expose_str().and_then(RayToken::new)),
        Err(flotilla_secrets::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl Head {
    /// Takes the machine's head lock, binds the API, starts the Ray head and waits until it is
    /// ready.
    pub async fn start(config: HeadConfig) -> Result<Head> {
        config
            .dirs
            .create_all()
            .map_err(io("cannot create Flotilla's directories"))?;
        let lock = take_lock(&config.dirs)?;
        let listener = match tokio::net::TcpListener::bind(config.api_addr).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(Error::ApiPortInUse {
                    port: config.api_addr.port(),
                });
            }
            Err(e) => return Err(io(format!("cannot listen on {}", config.api_addr))(e)),
        };
        let api_addr = listener
            .local_addr()
            .map_err(io("cannot read the API address"))?;
        let token = config.token.clone();
        let temp_dir = config.dirs.run.join("head");
        let node = NodeConfig {
            role: Role::Head {
                gcs_port: config.gcs_port,
                dashboard_port: config.ray_dashboard_port,
                client_server_port: config.client_server_port,
            },
            runtime: config.runtime.clone(),
            node_name: config.node_name.clone(),
            node_ip: None,
            num_cpus: Some(0),
            object_store_bytes: config.object_store_bytes,
            ports: config.node_ports,
            temp_dir,
            log: config.dirs.logs.join("ray-head.log"),
            token: Some(token.clone()),
            labels: Default::default(),
            env: config.env.clone(),
            backoff: Backoff::default(),
            ready_timeout: Duration::from_secs(90),
            cluster_state: None,
            background: false,
            throttle: None,
        };
        let dashboard = node.dashboard().expect("a head node has a dashboard");
        let ray = Supervisor::start(node).await?;
        ray.wait_ready(Duration::from_secs(120)).await?;
        let head_ip = dashboard
            .nodes()
            .await?
            .into_iter()
            .find(|n| n.is_head_node && n.is_alive())
            .map(|n| n.node_ip)
            .unwrap_or_else(|| "127.0.0.1".into());
        let ray_address = format!("{head_ip}:{}", config.gcs_port);
        let api_cancel = CancellationToken::new();
        let gcs = ray_address.parse().ok().map(|a| (a, token.clone()));
        let api = tokio::spawn(crate::api::serve(
            listener,
            dashboard.clone(),
            ray_address.clone(),
            gcs,
            api_cancel.clone(),
        ));
        let info = HeadInfo {
            pid: std::process::id(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            api_url: format!("http://{api_addr}"),
            ray_address,
            ray_dashboard: dashboard.base().to_string(),
            ray_version: config.runtime.spec.ray.clone(),
            python_version: config.runtime.python_full.clone(),
            runtime_dir: config.runtime.dir.clone(),
        };
        let path = HeadInfo::path(&config.dirs);
        write_private(
            &path,
            &serde_json::to_vec_pretty(&info).expect("plain struct"),
        )
        .map_err(io(format!("cannot write {}", path.display())))?;
        Ok(Head {
            info,
            ray: Some(ray),
            api,
            api_cancel,
            dashboard,
            token,
            _lock: lock,
        })
    }

    pub fn info(&self) -> &HeadInfo {
        &self.info
    }

    pub fn token(&self) -> &RayToken {
        &self.token
    }

    /// Client for the Ray dashboard on the head's loopback.
    pub fn ray_state(&self) -> &StateClient {
        &self.dashboard
    }

    pub fn ray_supervisor(&self) -> Option<&Supervisor> {
        self.ray.as_ref()
    }

    /// Stops the API and the Ray head, and withdraws `head.json`.
    pub async fn stop(mut self, dirs: &Dirs) {
        self.api_cancel.cancel();
        if let Some(ray) = self.ray.take() {
            ray.stop().await;
        }
        let _ = (&mut self.api).await;
        let _ = std::fs::remove_file(HeadInfo::path(dirs));
    }
}

/// The lock is held for the head's lifetime; the OS releases it when the process dies, however
/// it dies, so a stale `head.json` never blocks a new head.
fn take_lock(dirs: &Dirs) -> Result<std::fs::File> {
    let path = dirs.state.join("head.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            let info = HeadInfo::read(dirs);
            Err(Error::AlreadyRunning {
                pid: info.as_ref().map_or(0, |i| i.pid),
                api_url: info
                    .as_ref()
                    .map_or_else(|| "(starting)".into(), |i| i.api_url.clone()),
                ray_address: info.map_or_else(|| "(starting)".into(), |i| i.ray_address),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io(format!("cannot lock {}", path.display()))(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_and_kept_in_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = flotilla_secrets::StoreConfig::new(tmp.path());
        cfg.backend = flotilla_secrets::Backend::File;
        let store = SecretStore::open(&cfg).unwrap();
        assert!(read_cluster_token(&store).unwrap().is_none());
        let a = cluster_token(&store).unwrap();
        let b = cluster_token(&store).unwrap();
        assert_eq!(a, b);
        assert_eq!(read_cluster_token(&store).unwrap(), Some(a));
        let names: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, [RAY_TOKEN_SECRET]);
    }

    #[test]
    fn a_second_lock_names_the_running_head() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs::under(tmp.path());
        dirs.create_all().unwrap();
        let _held = take_lock(&dirs).unwrap();
        let info = HeadInfo {
            pid: 4242,
            started_unix: 0,
            api_url: "http://127.0.0.1:7471".into(),
            ray_address: "10.1.2.3:6379".into(),
            ray_dashboard: "http://127.0.0.1:8265".into(),
            ray_version: "2.60.0".into(),
            python_version: "3.11.7".into(),
            runtime_dir: "/rt".into(),
        };
        std::fs::write(HeadInfo::path(&dirs), serde_json::to_vec(&info).unwrap()).unwrap();
        let err = take_lock(&dirs).unwrap_err().to_string();
        assert!(
            err.contains("already running") && err.contains("4242"),
            "{err}"
        );
        assert!(
            err.contains("http://127.0.0.1:7471") && err.contains("10.1.2.3:6379"),
            "{err}"
        );
    }
}
