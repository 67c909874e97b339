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

use crate::fleet::{ADMIN_TOKEN_SECRET, ControlPlane, FleetConfig, RayInfo};
use crate::registry::Registry;
use crate::{Error, Result, io};
use flotilla_proto::HeadAddress;

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
    /// Where agents and admin commands reach the control plane (`host:port`, TLS).
    #[serde(default)]
    pub control_addresses: Vec<String>,
    /// The SHA-256 fingerprint of the control plane's certificate, hex.
    #[serde(default)]
    pub fingerprint: String,
    /// How other machines reach the head: `tailscale`, `lan`, or `given` (`--node-ip`).
    #[serde(default)]
    pub network: String,
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
                python: flotilla_ray::versions::minor_of(&self.python_version),
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
    /// The control plane's port (0: any free port); it listens on the head's Ray address.
    pub control_port: u16,
    /// The address the head offers other machines (Ray's `--node-ip-address`, the control
    /// plane's listening address, the join codes' address); `None` lets Ray choose.
    pub node_ip: Option<std::net::IpAddr>,
    /// Names that also reach the head (its MagicDNS name on a tailnet): join codes carry them
    /// after the address, for a machine whose route to the address fails.
    pub control_names: Vec<String>,
    /// How the address was chosen (`tailscale`, `lan`, `given`), for `flotilla doctor`.
    pub network: String,
    /// The head's TLS identity (see [`crate::tls::Identity::load_or_create`]).
    pub identity: crate::tls::Identity,
    /// The admin token admin calls must carry (see [`admin_token`]).
    pub admin_token: Secret,
    /// The fleet's politeness defaults (a `[policy]` TOML document; empty for none).
    pub policy_toml: String,
    /// Alerts (`[alerts]` of the head's `flotilla.toml`, URLs resolved); `None`: none.
    pub alerts: Option<crate::alerts::Setup>,
    /// Scheduled backups, with the passphrase they are made with (`[backup]`).
    pub backup: Option<(crate::backup::Schedule, Secret)>,
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
    fleet: ControlPlane,
    control: tokio::task::JoinHandle<()>,
    alerts: Option<crate::alerts::Delivery>,
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

/// Reads the head's admin token from the secret store, or makes and stores one.
pub fn admin_token(store: &SecretStore) -> Result<Secret> {
    match store.get(ADMIN_TOKEN_SECRET) {
        Ok(s) if !s.is_empty() => return Ok(s),
        Ok(_) | Err(flotilla_secrets::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let token = Secret::from(RayToken::generate().expose());
    store.set(ADMIN_TOKEN_SECRET, &token)?;
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
        let listener = match listen(config.api_addr, API_BACKLOG) {
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
        let node = head_node(&config, &token);
        let dashboard = node.dashboard().expect("a head node has a dashboard");
        let ray = Supervisor::start(node).await?;
        // No fixed limit: the supervisor gives up once the node stops making progress, and a
        // failed start ends this with Ray's reason.
        if let Err(e) = ray
            .wait_ready(flotilla_ray::supervisor::START_AT_MOST)
            .await
        {
            ray.stop().await;
            return Err(e.into());
        }
        let head_ip = dashboard
            .nodes()
            .await?
            .into_iter()
            .find(|n| n.is_head_node && n.is_alive())
            .map(|n| n.node_ip)
            .unwrap_or_else(|| "127.0.0.1".into());
        let ray_address = format!("{head_ip}:{}", config.gcs_port);
        let api_cancel = CancellationToken::new();
        let (fleet, control, control_addresses) =
            start_control(&config, &head_ip, &ray_address, &api_cancel).await?;
        let gcs = ray_address.parse().ok().map(|a| (a, token.clone()));
        // Ray's side of the snapshot ([`read_ray`]).
        let (snapshots_tx, snapshots) = tokio::sync::watch::channel(crate::Latest::default());
        tokio::spawn(flotilla_host::memory::keep_releasing(
            api_cancel.clone().cancelled_owned(),
        ));
        tokio::spawn(read_ray(
            fleet.clone(),
            dashboard.clone(),
            ray_address.clone(),
            gcs.clone(),
            snapshots_tx,
            api_cancel.clone(),
        ));
        let alerts = config.alerts.clone().map(|setup| {
            crate::alerts::spawn(
                setup,
                fleet.clone(),
                snapshots.clone(),
                config.dirs.state.clone(),
                flotilla_host::hostname(),
                api_cancel.clone(),
            )
        });
        if let Some((schedule, passphrase)) = config.backup.clone() {
            tokio::spawn(crate::backup::run_schedule(
                backup_source(&config),
                schedule,
                passphrase,
                api_cancel.clone(),
            ));
        }
        let hosts = api_hosts(&config, api_addr, &head_ip);
        let api = tokio::spawn(crate::api::serve(
            listener,
            crate::Api {
                ray: dashboard.clone(),
                fleet: Some(fleet.clone()),
                snapshots,
                hosts,
                limits: crate::Limits::default(),
            },
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
            control_addresses,
            fingerprint: config.identity.fingerprint.to_hex(),
            network: config.network.clone(),
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
            fleet,
            control,
            alerts,
            _lock: lock,
        })
    }

    /// The control plane.
    pub fn fleet(&self) -> &ControlPlane {
        &self.fleet
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

    /// The alert targets' queues, when `[alerts]` has targets.
    pub fn alerts(&self) -> Option<&crate::alerts::Delivery> {
        self.alerts.as_ref()
    }

    pub fn ray_supervisor(&self) -> Option<&Supervisor> {
        self.ray.as_ref()
    }

    /// Stops the API and the Ray head, and withdraws `head.json`.
    pub async fn stop(mut self, dirs: &Dirs) {
        // Sessions and event streams never end by themselves: close them, so that the servers'
        // graceful shutdown does not wait for them.
        self.fleet.close_sessions();
        self.api_cancel.cancel();
        if let Some(ray) = self.ray.take() {
            ray.stop().await;
        }
        let _ = (&mut self.api).await;
        if tokio::time::timeout(Duration::from_secs(5), &mut self.control)
            .await
            .is_err()
        {
            self.control.abort();
        }
        let _ = std::fs::remove_file(HeadInfo::path(dirs));
    }
}

/// The environment variable naming more hosts the API answers to (comma-separated names or
/// addresses), for a head reached through a name it cannot know: a reverse proxy's, a DNS
/// alias.
pub const API_HOSTS_ENV: &str = "FLOTILLA_API_HOSTS";
/// The head's Ray node: a coordinator with 0 CPUs.
fn head_node(config: &HeadConfig, token: &RayToken) -> NodeConfig {
    NodeConfig {
        role: Role::Head {
            gcs_port: config.gcs_port,
            dashboard_port: config.ray_dashboard_port,
            client_server_port: config.client_server_port,
        },
        runtime: config.runtime.clone(),
        node_name: config.node_name.clone(),
        node_ip: config.node_ip,
        follow_route: false,
        num_cpus: Some(0),
        object_store_bytes: config.object_store_bytes,
        ports: config.node_ports,
        temp_dir: config.dirs.run.join("head"),
        log: config.dirs.logs.join("ray-head.log"),
        token: Some(token.clone()),
        labels: Default::default(),
        env: config.env.clone(),
        backoff: Backoff::default(),
        ready_timeout: Duration::from_secs(90),
        cluster_state: None,
        background: false,
        throttle: None,
    }
}

/// Ray's side of the control plane's snapshot (tasks, jobs, CPUs in use), every 2 s; the
/// latest read is all the API serves (no request asks Ray), and the whole snapshot also goes
/// to the dashboards' event streams.
async fn read_ray(
    fleet: ControlPlane,
    dashboard: StateClient,
    address: String,
    gcs: Option<(std::net::SocketAddr, RayToken)>,
    snapshots: tokio::sync::watch::Sender<crate::Latest>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match crate::snapshot(&dashboard, &address, gcs.as_ref()).await {
            Ok(snap) => {
                fleet.set_ray_view(crate::fleet::RayView::of(&snap));
                snapshots.send_replace(crate::Latest::read(snap));
            }
            Err(e) => {
                tracing::debug!("cannot read Ray's state: {e}");
                snapshots.send_modify(|l| *l = l.failed(&e));
            }
        }
    }
}

/// What the head's scheduled backups save: its registry, identity, tokens and settings.
fn backup_source(config: &HeadConfig) -> crate::backup::Source {
    crate::backup::Source {
        registry: config.dirs.state.join(crate::backup::REGISTRY_FILE),
        cert_der: config.identity.cert_der.to_vec(),
        secrets: vec![
            (
                crate::tls::TLS_KEY_SECRET.to_string(),
                config.identity.key_der.clone(),
            ),
            (
                RAY_TOKEN_SECRET.to_string(),
                Secret::from(config.token.expose()),
            ),
            (ADMIN_TOKEN_SECRET.to_string(), config.admin_token.clone()),
        ],
        settings: config.dirs.config.join("flotilla.toml"),
    }
}

/// The names and addresses the API answers to besides loopback: the address it listens on
/// (and, listening on every interface, the machine's interface addresses), the address it offers
/// other machines and Ray's address for the head, its Tailscale names, the machine's host name
/// (and `<name>.local`), and `FLOTILLA_API_HOSTS`.
fn api_hosts(config: &HeadConfig, api_addr: SocketAddr, head_ip: &str) -> crate::AllowedHosts {
    served_hosts(
        api_addr,
        config.node_ip,
        head_ip,
        &config.control_names,
        &flotilla_host::hostname(),
        &std::env::var(API_HOSTS_ENV).unwrap_or_default(),
        flotilla_host::addr::interface_addresses,
    )
}

fn served_hosts(
    api_addr: SocketAddr,
    node_ip: Option<std::net::IpAddr>,
    head_ip: &str,
    names: &[String],
    machine: &str,
    extra: &str,
    interfaces: impl FnOnce() -> Vec<std::net::IpAddr>,
) -> crate::AllowedHosts {
    let mut hosts = crate::AllowedHosts::default();
    // `head.json`'s `api_url` names the bind address, `0.0.0.0` included.
    hosts.add(&api_addr.ip().to_string());
    if api_addr.ip().is_unspecified() {
        for ip in interfaces() {
            hosts.add(&ip.to_string());
        }
    }
    if let Some(ip) = node_ip {
        hosts.add(&ip.to_string());
    }
    hosts.add(head_ip);
    for name in names {
        hosts.add(name);
    }
    if !machine.is_empty() {
        hosts.add(machine);
        hosts.add(&format!("{machine}.local"));
    }
    for name in extra.split(',') {
        hosts.add(name);
    }
    hosts
}

/// Connections the kernel queues for the API before it accepts them: a burst of dashboards and
/// scrapers larger than the usual 128 would otherwise wait for the client's SYN retry (1 s).
const API_BACKLOG: u32 = 1024;

/// A listening socket with this accept queue.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As the standard library does: a restarted head binds at once despite TIME_WAIT (on
    // Windows the option would let another program take the port).
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Opens the registry and serves the control plane on the head's Ray IP.
async fn start_control(
    config: &HeadConfig,
    head_ip: &str,
    ray_address: &str,
    cancel: &CancellationToken,
) -> Result<(ControlPlane, tokio::task::JoinHandle<()>, Vec<String>)> {
    let ip: std::net::IpAddr = head_ip
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let listener = match tokio::net::TcpListener::bind((ip, config.control_port)).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(Error::ControlPortInUse {
                port: config.control_port,
            });
        }
        Err(e) => return Err(io(format!("cannot listen on {ip}:{}", config.control_port))(e)),
    };
    let port = listener
        .local_addr()
        .map_err(io("cannot read the control plane's address"))?
        .port();
    let address = HeadAddress::new(&ip.to_string(), port).map_err(|e| {
        io("the head's address cannot go into a join code")(std::io::Error::other(e))
    })?;
    let addresses: Vec<HeadAddress> = std::iter::once(address)
        .chain(
            config
                .control_names
                .iter()
                .filter_map(|name| HeadAddress::new(name, port).ok()),
        )
        .collect();
    let path = config.dirs.state.join("registry.sqlite");
    let registry = tokio::task::spawn_blocking(move || Registry::open(path))
        .await
        .map_err(|e| io("the registry task failed")(std::io::Error::other(e)))??;
    let fleet = ControlPlane::new(FleetConfig {
        registry: std::sync::Arc::new(registry),
        ray: RayInfo {
            gcs_addresses: vec![ray_address.to_string()],
            ray_version: config.runtime.spec.ray.clone(),
            python_version: config.runtime.python_full.clone(),
            token: config.token.clone(),
        },
        addresses: addresses.clone(),
        fingerprint: config.identity.fingerprint,
        admin_token: config.admin_token.clone(),
        policy_toml: config.policy_toml.clone(),
    })?;
    let tls = config.identity.server_config()?;
    let serving = fleet.clone();
    let cancel = cancel.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = serving
            .serve(listener, tls, async move { cancel.cancelled().await })
            .await
        {
            tracing::error!("the control plane stopped: {e}");
        }
    });
    Ok((
        fleet,
        task,
        addresses.iter().map(ToString::to_string).collect(),
    ))
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
    fn the_api_answers_to_the_addresses_and_names_the_head_serves_on() {
        let names = vec!["studio.tail1234.ts.net".to_string()];
        let hosts = served_hosts(
            "127.0.0.1:7471".parse().unwrap(),
            Some("100.64.0.5".parse().unwrap()),
            "100.64.0.5",
            &names,
            "studio",
            " proxy.example, other.example:8080 ,",
            || panic!("bound to loopback: no interface is asked"),
        );
        for allowed in [
            "127.0.0.1:7471",
            "100.64.0.5:7471",
            "studio.tail1234.ts.net",
            "studio:7471",
            "studio.local",
            "proxy.example",
            "other.example",
        ] {
            assert!(hosts.allows(allowed), "{allowed}");
        }
        for refused in [
            "192.168.1.20",
            "evil.example",
            "0.0.0.0:7471",
            "tail1234.ts.net",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        // Bound to every interface: their addresses, and the bind address `head.json` names.
        let hosts = served_hosts(
            "0.0.0.0:7471".parse().unwrap(),
            None,
            "192.168.1.20",
            &[],
            "",
            "",
            || vec!["192.168.1.20".parse().unwrap(), "10.8.0.3".parse().unwrap()],
        );
        for allowed in ["192.168.1.20:7471", "10.8.0.3", "0.0.0.0:7471"] {
            assert!(hosts.allows(allowed), "{allowed}");
        }
        assert!(!hosts.allows("10.8.0.4"));
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
            control_addresses: vec![],
            fingerprint: String::new(),
            network: "lan".into(),
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
