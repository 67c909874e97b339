//! Hosting a cluster on this machine: the Ray head (a coordinator with 0 CPUs), the control
//! plane, the cluster API and, unless told otherwise, this machine's own worker, enrolled with
//! the control plane directly. What `flotilla up` runs, and the desktop app when it hosts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use flotilla_agent::{Agent, AgentConfig, Deps};
use flotilla_head::{Head, HeadConfig, HeadInfo};
use flotilla_host::Dirs;
use flotilla_ray::ports::{
    DEFAULT_CLIENT_SERVER_PORT, DEFAULT_GCS_PORT, DEFAULT_HEAD_NODE_BASE,
    DEFAULT_RAY_DASHBOARD_PORT, DEFAULT_WORKER_NODE_BASE,
};
use flotilla_ray::{NodePorts, RuntimeManager, RuntimeSpec};
use tokio_util::sync::CancellationToken;

use crate::{Event, Events};

/// How the cluster is hosted. The errors about ports name the `flotilla up` option that
/// sets each one.
#[derive(Debug, Clone, PartialEq)]
pub struct HostOptions {
    /// Port of the cluster API (`/api/v1/cluster`, `/healthz`).
    pub api_port: u16,
    /// Address the cluster API listens on (loopback keeps it private to this machine).
    pub api_host: IpAddr,
    /// How other machines reach the head.
    pub network: flotilla_net::Mode,
    /// The address other machines reach the head at, overriding `network`.
    pub node_ip: Option<IpAddr>,
    /// Port of the control plane (gRPC with TLS).
    pub control_port: u16,
    /// Port of the Ray GCS.
    pub ray_port: u16,
    /// Port of Ray's own dashboard (loopback only).
    pub ray_dashboard_port: u16,
    /// Port of the Ray client server (`ray://` addresses).
    pub ray_client_port: u16,
    /// First of the head node's own ports (BASE..BASE+5 and BASE+20..BASE+49).
    pub head_node_ports: u16,
    /// First of the local worker node's ports (BASE..BASE+5 and BASE+20..BASE+275).
    pub node_ports: u16,
    /// CPUs the local worker offers; `None`: all logical cores.
    pub cpus: Option<u32>,
    /// Object store size of each node in MiB; `None`: 10% of memory for the head, 20% for the
    /// worker, between 256 MiB and 4 GiB.
    pub object_store_mb: Option<u64>,
    /// Run only the head (no local worker node).
    pub no_worker: bool,
    /// Name of the local worker node; `None`: this machine's host name.
    pub name: Option<String>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            api_port: flotilla_head::DEFAULT_API_PORT,
            api_host: IpAddr::from([127, 0, 0, 1]),
            network: flotilla_net::Mode::Auto,
            node_ip: None,
            control_port: flotilla_head::fleet::DEFAULT_CONTROL_PORT,
            ray_port: DEFAULT_GCS_PORT,
            ray_dashboard_port: DEFAULT_RAY_DASHBOARD_PORT,
            ray_client_port: DEFAULT_CLIENT_SERVER_PORT,
            head_node_ports: DEFAULT_HEAD_NODE_BASE,
            node_ports: DEFAULT_WORKER_NODE_BASE,
            cpus: None,
            object_store_mb: None,
            no_worker: false,
            name: None,
        }
    }
}

impl HostOptions {
    /// The defaults with the environment's `FLOTILLA_*` settings on top, as `flotilla up`
    /// with no options has them (ports, network, CPUs, object store).
    pub fn from_env() -> HostOptions {
        let d = HostOptions::default();
        HostOptions {
            api_port: crate::env("FLOTILLA_API_PORT").unwrap_or(d.api_port),
            network: crate::env("FLOTILLA_NETWORK").unwrap_or(d.network),
            control_port: crate::env("FLOTILLA_CONTROL_PORT").unwrap_or(d.control_port),
            ray_port: crate::env("FLOTILLA_RAY_PORT").unwrap_or(d.ray_port),
            ray_dashboard_port: crate::env("FLOTILLA_RAY_DASHBOARD_PORT")
                .unwrap_or(d.ray_dashboard_port),
            ray_client_port: crate::env("FLOTILLA_RAY_CLIENT_PORT").unwrap_or(d.ray_client_port),
            head_node_ports: crate::env("FLOTILLA_HEAD_NODE_PORTS").unwrap_or(d.head_node_ports),
            node_ports: crate::env("FLOTILLA_NODE_PORTS").unwrap_or(d.node_ports),
            cpus: crate::env("FLOTILLA_CPUS")
                .filter(|n| (1..=4096).contains(n))
                .or(d.cpus),
            object_store_mb: crate::env("FLOTILLA_OBJECT_STORE_MB")
                .filter(|mb| *mb >= 80)
                .or(d.object_store_mb),
            ..d
        }
    }

    /// The local worker's name: the one given, else this machine's host name as a node name.
    pub fn worker_name(&self) -> String {
        self.name.clone().unwrap_or_else(crate::join::default_name)
    }
}

const MIB: u64 = 1024 * 1024;

fn object_store(fraction: f64, explicit: Option<u64>) -> u64 {
    if let Some(mb) = explicit {
        return mb * MIB;
    }
    let total = total_memory().unwrap_or(8 * 1024 * MIB);
    ((total as f64 * fraction) as u64).clamp(256 * MIB, 4096 * MIB)
}

/// The machine's memory, as the host's sensors read it on every OS.
fn total_memory() -> Option<u64> {
    flotilla_host::sensors::Sensors::new().memory().total_bytes
}

fn check_ports(o: &HostOptions) -> anyhow::Result<()> {
    let head = NodePorts::from_base(o.head_node_ports, 30);
    let worker = NodePorts::from_base(o.node_ports, 256);
    let ranges = [
        ("--head-node-ports", o.head_node_ports, head.max_worker),
        ("--node-ports", o.node_ports, worker.max_worker),
    ];
    for (name, lo, hi) in ranges {
        if hi < lo || hi == u16::MAX {
            anyhow::bail!("{name} {lo} leaves no room for the node's ports: choose a lower base");
        }
    }
    let singles = [
        ("--api-port", o.api_port),
        ("--control-port", o.control_port),
        ("--ray-port", o.ray_port),
        ("--ray-dashboard-port", o.ray_dashboard_port),
        ("--ray-client-port", o.ray_client_port),
    ];
    for (name, p) in singles {
        for (range, lo, hi) in ranges {
            if (lo..=hi).contains(&p) && !(o.no_worker && range == "--node-ports") {
                anyhow::bail!(
                    "{name} {p} falls inside the ports of {range} ({lo}-{hi}): choose another"
                );
            }
        }
    }
    if !o.no_worker && head.max_worker >= o.node_ports && worker.max_worker >= o.head_node_ports {
        anyhow::bail!("--head-node-ports and --node-ports overlap: keep them at least 300 apart");
    }
    Ok(())
}

/// How other machines reach the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Tailscale,
    Lan,
    /// The address given (`node_ip`).
    Given,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Tailscale => "tailscale",
            Network::Lan => "lan",
            Network::Given => "given",
        }
    }
}

/// Where other machines reach the head: its address, names that also reach it, and how they
/// were chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub ip: Option<IpAddr>,
    pub names: Vec<String>,
    pub network: Network,
}

async fn choose_reach(o: &HostOptions) -> anyhow::Result<Reach> {
    use flotilla_net::Mode;
    if let Some(ip) = o.node_ip {
        return Ok(Reach {
            ip: Some(ip),
            names: vec![],
            network: Network::Given,
        });
    }
    let status = match o.network {
        Mode::Lan => None,
        mode => match tokio::time::timeout(Duration::from_secs(5), flotilla_net::status()).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) if mode == Mode::Tailscale => anyhow::bail!("--network tailscale: {e}"),
            Err(_) if mode == Mode::Tailscale => {
                anyhow::bail!("--network tailscale: Tailscale did not answer in 5 s")
            }
            _ => None,
        },
    };
    Ok(reach_from(
        o.network,
        status.as_ref(),
        flotilla_host::addr::lan_address,
    )?)
}

/// [`choose_reach`]'s decision, given Tailscale's status (`None`: not asked or not there).
fn reach_from(
    mode: flotilla_net::Mode,
    status: Option<&flotilla_net::Status>,
    lan: impl Fn() -> Option<IpAddr>,
) -> Result<Reach, flotilla_net::NetError> {
    use flotilla_net::Mode;
    let on_tailnet = match mode {
        Mode::Tailscale => true,
        Mode::Auto => status.is_some_and(|s| {
            s.is_running() && (s.self_ipv4().is_some() || s.self_ipv6().is_some())
        }),
        Mode::Lan => false,
    };
    if !on_tailnet {
        return Ok(Reach {
            ip: lan(),
            names: vec![],
            network: Network::Lan,
        });
    }
    let ip = flotilla_net::choose_bind(Mode::Tailscale, None, status)?;
    let names = status
        .and_then(|s| s.self_node.as_ref().filter(|_| s.magic_dns_enabled))
        .map(|me| me.dns_name.trim_end_matches('.').to_string())
        .filter(|n| !n.is_empty())
        .into_iter()
        .collect();
    Ok(Reach {
        ip: Some(ip),
        names,
        network: Network::Tailscale,
    })
}

/// A hosted cluster: the head and, unless `no_worker`, this machine's worker.
#[derive(Debug)]
pub struct Hosted {
    dirs: Dirs,
    reach: Reach,
    head: Head,
    worker: Option<LocalWorker>,
    policy_toml: String,
}

/// The head machine's own worker, enrolled with its control plane directly.
#[derive(Debug)]
pub struct LocalWorker {
    pub name: String,
    pub cpus: u32,
    agent: Agent,
}

/// Starts the head (Ray head, control plane, cluster API) and the local worker. The runtime
/// is provisioned first; `events` hear how far it is and each step in words. An error leaves
/// nothing running.
pub async fn start(options: &HostOptions, events: &Events) -> anyhow::Result<Hosted> {
    check_ports(options)?;
    let reach = choose_reach(options).await?;
    let dirs = Dirs::from_env();
    dirs.create_all()
        .context("cannot create Flotilla's directories")?;
    let (config, token, identity, admin_token, (policy_toml, backup), alerts, notice) =
        tokio::task::spawn_blocking(|| {
            let (dirs, config, store) = crate::secrets::load_store()?;
            let notice = crate::secrets::fallback_notice(&config, &store);
            let token = flotilla_head::cluster_token(&store)?;
            let identity = flotilla_head::tls::Identity::load_or_create(
                &dirs,
                &store,
                &[flotilla_host::hostname()],
            )?;
            let admin = flotilla_head::admin_token(&store)?;
            // The head's own `[policy]` is the fleet's default for every machine that joins.
            let text = std::fs::read_to_string(dirs.config.join(flotilla_agent::config::FILE_NAME))
                .unwrap_or_default();
            let policy = flotilla_agent::config::policy_section(&text)
                .map_err(|e| anyhow::anyhow!("flotilla.toml: {e}"))?;
            // `[alerts]`, with the targets' URLs from the store: checked before anything starts.
            let alerts = crate::alerts::setup(&text, &store)?;
            let backup = backup_plan(&dirs, &config.backup, &store);
            anyhow::Ok((
                config,
                token,
                identity,
                admin,
                (policy, backup),
                alerts,
                notice,
            ))
        })
        .await??;
    if let Some(notice) = notice {
        events(Event::Info(notice));
    }
    let backup = match backup {
        Ok(plan) => {
            if let Some((schedule, _)) = &plan {
                events(Event::Info(format!(
                    "Backing up the head every {} into {} (the newest {} kept).",
                    flotilla_agent::config::format_every(schedule.every),
                    schedule.dir.display(),
                    schedule.keep
                )));
            }
            plan
        }
        Err(warning) => {
            events(Event::Warning(warning));
            None
        }
    };

    let spec = RuntimeSpec::default();
    let runtime = RuntimeManager::new(&dirs.data)
        .ensure(&spec, crate::runtime_progress(events))
        .await?;

    if let Some(a) = &alerts {
        let names: Vec<String> = a
            .targets
            .iter()
            .map(|t| format!("{} ({})", t.name, t.kind.as_str()))
            .collect();
        events(Event::Info(format!("Alerts go to {}.", names.join(", "))));
    }
    events(Event::Info("Starting the Ray head...".into()));
    let head = Head::start(HeadConfig {
        dirs: dirs.clone(),
        runtime: runtime.clone(),
        api_addr: SocketAddr::new(options.api_host, options.api_port),
        gcs_port: options.ray_port,
        ray_dashboard_port: options.ray_dashboard_port,
        client_server_port: options.ray_client_port,
        node_ports: NodePorts::from_base(options.head_node_ports, 30),
        object_store_bytes: object_store(0.10, options.object_store_mb),
        node_name: "head".into(),
        env: vec![],
        token,
        control_port: options.control_port,
        node_ip: reach.ip,
        control_names: reach.names.clone(),
        network: reach.network.as_str().into(),
        identity,
        admin_token,
        policy_toml: policy_toml.clone(),
        alerts,
        backup,
    })
    .await?;
    {
        let info = head.info();
        tracing::info!(
            ray = info.ray_address,
            api = info.api_url,
            control = ?info.control_addresses,
            ray_version = info.ray_version,
            python = info.python_version,
            "head started"
        );
    }
    let worker = if options.no_worker {
        None
    } else {
        let started = start_worker(
            options,
            &dirs,
            &head,
            runtime,
            config,
            policy_toml.clone(),
            events,
        )
        .await;
        match started {
            Ok(w) => Some(w),
            Err(e) => {
                head.stop(&dirs).await;
                return Err(e);
            }
        }
    };
    Ok(Hosted {
        dirs,
        reach,
        head,
        worker,
        policy_toml,
    })
}

/// The head's backup schedule from `[backup]`, with its passphrase from the store; a schedule
/// that cannot run is a warning (the head runs, without scheduled backups).
fn backup_plan(
    dirs: &Dirs,
    settings: &flotilla_agent::config::BackupSettings,
    store: &flotilla_secrets::SecretStore,
) -> Result<Option<(flotilla_head::backup::Schedule, flotilla_secrets::Secret)>, String> {
    let Some(every) = settings.period() else {
        return Ok(None);
    };
    let passphrase = match store.get(flotilla_head::backup::PASSPHRASE_SECRET) {
        Ok(p) => p,
        Err(flotilla_secrets::Error::NotFound { .. }) => {
            return Err(
                "[backup] in flotilla.toml schedules backups, but no backup passphrase is \
                 stored: run `flotilla head backup-passphrase`, then restart the head"
                    .into(),
            );
        }
        Err(e) => return Err(format!("no scheduled backups: {e}")),
    };
    let dir = settings
        .dir
        .clone()
        .unwrap_or_else(|| dirs.state.join("backups"));
    Ok(Some((
        flotilla_head::backup::Schedule {
            every,
            keep: settings.keep as usize,
            dir,
        },
        passphrase,
    )))
}

async fn start_worker(
    options: &HostOptions,
    dirs: &Dirs,
    head: &Head,
    runtime: flotilla_ray::Runtime,
    config: flotilla_agent::config::FileConfig,
    policy_toml: String,
    events: &Events,
) -> anyhow::Result<LocalWorker> {
    let info = head.info();
    let name = options.worker_name();
    let cpus = options
        .cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    events(Event::Info(format!(
        "Starting the local worker node {name} ({})...",
        cpus_text(cpus)
    )));
    let head_addr: SocketAddr = info
        .ray_address
        .parse()
        .with_context(|| format!("the head reported an unusable address {}", info.ray_address))?;
    // The local worker reports to the head like any other node, enrolled directly.
    let (node_id, given, credential) = head
        .fleet()
        .enroll_local(&name, cpus)
        .await
        .map_err(|s| anyhow::anyhow!("cannot enroll the local worker: {}", s.message()))?;
    if given != name {
        events(Event::Info(format!(
            "The name {name} belongs to another machine of the fleet; this machine's worker is {given}."
        )));
    }
    let name = given;
    let session = flotilla_agent::SessionSetup {
        config: flotilla_agent::session::SessionConfig::new(
            info.control_addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            info.fingerprint
                .parse()
                .context("the head's fingerprint is unreadable")?,
            node_id.to_string(),
            credential,
        ),
        outbox: dirs.state.join(format!("outbox-{name}.sqlite")),
    };
    let agent = Agent::start(
        AgentConfig {
            node_name: name.clone(),
            head: head_addr,
            node_ip: Some(head_addr.ip()),
            num_cpus: Some(cpus),
            object_store_bytes: object_store(0.20, options.object_store_mb),
            ports: NodePorts::from_base(options.node_ports, 256),
            token: head.token().clone(),
            run_dir: dirs.run.clone(),
            control_socket: flotilla_agent::control::socket_path(dirs),
            log_dir: dirs.logs.clone(),
            env: vec![],
            cluster_state: Some(head.ray_state().clone()),
            policy: config.policy.clone(),
            config_file: Some(dirs.config.join(flotilla_agent::config::FILE_NAME)),
            fleet_policy: policy_toml,
            session: Some(session),
        },
        Deps { runtime },
    )
    .await?;
    Ok(LocalWorker { name, cpus, agent })
}

impl Hosted {
    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn info(&self) -> &HeadInfo {
        self.head.info()
    }

    pub fn worker(&self) -> Option<&LocalWorker> {
        self.worker.as_ref()
    }

    /// Where other machines reach the head.
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// The fleet's `[policy]` defaults, as the head read them from `flotilla.toml` at start.
    pub fn fleet_policy(&self) -> &str {
        &self.policy_toml
    }

    /// Follows the head's and the worker's Ray nodes until `shutdown`, telling `events` when
    /// one exits, comes back or fails.
    pub async fn watch(&self, shutdown: &CancellationToken, events: &Events) {
        let mut worker_status = self
            .worker
            .as_ref()
            .map(|w| w.agent.supervisor().subscribe());
        let mut head_status = self.head.ray_supervisor().map(|s| s.subscribe());
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(s) = changed(&mut worker_status) => report("worker", &s),
                Some(s) = changed(&mut head_status) => report("head", &s),
            };
            if let Some(event) = event {
                events(event);
            }
        }
    }

    /// Stops the local worker (its Ray node drains), then the head and its Ray node.
    pub async fn stop(self) {
        if let Some(w) = self.worker {
            w.agent.stop().await;
        }
        self.head.stop(&self.dirs).await;
    }
}

/// "1 CPU", "8 CPUs".
pub fn cpus_text(n: u32) -> String {
    if n == 1 {
        "1 CPU".into()
    } else {
        format!("{n} CPUs")
    }
}

async fn changed(
    rx: &mut Option<tokio::sync::watch::Receiver<flotilla_ray::NodeStatus>>,
) -> Option<flotilla_ray::NodeStatus> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(r.borrow_and_update().clone()),
            Err(_) => {
                *rx = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

fn report(role: &str, s: &flotilla_ray::NodeStatus) -> Option<Event> {
    use flotilla_ray::NodePhase as P;
    match &s.phase {
        P::Restarting { in_secs, last_exit } => Some(Event::Info(format!(
            "The {role} node exited ({last_exit}); restarting in {in_secs:.1} s."
        ))),
        P::Ready if s.restarts > 0 => Some(Event::Info(format!(
            "The {role} node is back (restart {}).",
            s.restarts
        ))),
        P::Failed { error } => Some(Event::Problem(format!("The {role} node failed: {error}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str) -> flotilla_net::Status {
        let path = format!(
            "{}/../net/tests/fixtures/tailscale/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        flotilla_net::Status::from_json(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn the_head_binds_its_tailnet_address_and_offers_its_magicdns_name() {
        use flotilla_net::Mode;
        let lan = || Some("192.168.1.20".parse().unwrap());
        let running = status("running");
        for mode in [Mode::Auto, Mode::Tailscale] {
            let r = reach_from(mode, Some(&running), lan).unwrap();
            assert_eq!(r.ip, Some("100.101.7.12".parse().unwrap()));
            assert_eq!(r.names, ["atlas.tail4e2a1.ts.net"]);
            assert_eq!(r.network, Network::Tailscale);
        }
        // MagicDNS off: the address only.
        let r = reach_from(Mode::Tailscale, Some(&status("magicdns-off")), lan).unwrap();
        assert!(
            r.names.is_empty() && r.network == Network::Tailscale,
            "{r:?}"
        );
        // LAN mode, or auto without a running Tailscale: the LAN address.
        let r = reach_from(Mode::Lan, Some(&running), lan).unwrap();
        assert_eq!((r.ip, r.network), (lan(), Network::Lan));
        let out = status("logged-out");
        let r = reach_from(Mode::Auto, Some(&out), lan).unwrap();
        assert_eq!((r.ip, r.network), (lan(), Network::Lan));
        let r = reach_from(Mode::Auto, None, lan).unwrap();
        assert_eq!((r.ip, r.network), (lan(), Network::Lan));
        // Tailscale asked for but logged out: what to do.
        let e = reach_from(Mode::Tailscale, Some(&out), lan)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tailscale up"), "{e}");
    }

    #[test]
    fn default_ports_are_consistent() {
        check_ports(&HostOptions::default()).unwrap();
    }

    #[test]
    fn a_port_inside_a_node_range_is_refused_with_its_option() {
        let o = HostOptions {
            api_port: 7500,
            ..HostOptions::default()
        };
        let err = check_ports(&o).unwrap_err().to_string();
        assert!(
            err.contains("--api-port") && err.contains("--node-ports"),
            "{err}"
        );
        let o = HostOptions {
            node_ports: 6400,
            ..HostOptions::default()
        };
        let err = check_ports(&o).unwrap_err().to_string();
        assert!(err.contains("overlap"), "{err}");
    }

    #[test]
    fn object_store_defaults_are_bounded() {
        assert_eq!(object_store(0.2, Some(100)), 100 * MIB);
        let d = object_store(0.2, None);
        assert!((256 * MIB..=4096 * MIB).contains(&d));
    }
}
