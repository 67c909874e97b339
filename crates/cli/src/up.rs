//! `flotilla up`: a one-machine cluster (Ray head + local worker + cluster API). [`start`] and
//! [`Running::stop`] are the library side, which the desktop app uses to host a cluster.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flotilla_agent::{Agent, AgentConfig, Deps};
use flotilla_head::{Head, HeadConfig, HeadInfo};
use flotilla_host::Dirs;
use flotilla_ray::ports::{
    DEFAULT_CLIENT_SERVER_PORT, DEFAULT_GCS_PORT, DEFAULT_HEAD_NODE_BASE,
    DEFAULT_RAY_DASHBOARD_PORT, DEFAULT_WORKER_NODE_BASE,
};
use flotilla_ray::runtime::ProgressFn;
use flotilla_ray::{NodePorts, RuntimeManager, RuntimeSpec};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Port of the cluster API (`/api/v1/cluster`, `/healthz`).
    #[arg(long, env = "FLOTILLA_API_PORT", default_value_t = flotilla_head::DEFAULT_API_PORT)]
    pub api_port: u16,
    /// Address the cluster API listens on. Loopback keeps it private to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    pub api_host: IpAddr,
    /// How other machines reach this head: `auto` (over Tailscale when it runs here, else the
    /// LAN), `tailscale` (this machine's tailnet address and MagicDNS name; an error saying
    /// what to do when Tailscale is not ready), or `lan` (the address of the default route,
    /// else the first interface that is up).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "auto",
        env = "FLOTILLA_NETWORK"
    )]
    pub network: flotilla_net::Mode,
    /// The address other machines reach this head at, overriding `--network`.
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// Port of the control plane (gRPC with TLS), where other machines join and report.
    #[arg(long, env = "FLOTILLA_CONTROL_PORT", default_value_t = flotilla_head::fleet::DEFAULT_CONTROL_PORT)]
    pub control_port: u16,
    /// Port of the Ray GCS, the address Ray programs and other nodes connect to.
    #[arg(long, env = "FLOTILLA_RAY_PORT", default_value_t = DEFAULT_GCS_PORT)]
    pub ray_port: u16,
    /// Port of Ray's own dashboard (loopback only).
    #[arg(long, env = "FLOTILLA_RAY_DASHBOARD_PORT", default_value_t = DEFAULT_RAY_DASHBOARD_PORT)]
    pub ray_dashboard_port: u16,
    /// Port of the Ray client server (`ray://` addresses).
    #[arg(long, env = "FLOTILLA_RAY_CLIENT_PORT", default_value_t = DEFAULT_CLIENT_SERVER_PORT)]
    pub ray_client_port: u16,
    /// First of the head node's own ports (it uses BASE..BASE+5 and BASE+20..BASE+49).
    #[arg(long, value_name = "BASE", env = "FLOTILLA_HEAD_NODE_PORTS", default_value_t = DEFAULT_HEAD_NODE_BASE)]
    pub head_node_ports: u16,
    /// First of the local worker node's ports (BASE..BASE+5 and BASE+20..BASE+275).
    #[arg(long, value_name = "BASE", env = "FLOTILLA_NODE_PORTS", default_value_t = DEFAULT_WORKER_NODE_BASE)]
    pub node_ports: u16,
    /// CPUs the local worker offers [default: all logical cores].
    #[arg(long, env = "FLOTILLA_CPUS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cpus: Option<u32>,
    /// Object store size of each node, in MiB [default: 10% of memory for the head, 20% for the
    /// worker, between 256 MiB and 4 GiB].
    #[arg(long, value_name = "MIB", env = "FLOTILLA_OBJECT_STORE_MB", value_parser = clap::value_parser!(u64).range(80..))]
    pub object_store_mb: Option<u64>,
    /// Run only the head (no local worker node).
    #[arg(long)]
    pub no_worker: bool,
    /// Name of the local worker node [default: this machine's host name].
    #[arg(long)]
    pub name: Option<String>,
}

impl Default for UpArgs {
    /// The options' defaults, as `flotilla up` with no options has them (the environment's
    /// `FLOTILLA_*` ports, CPUs and object store included).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            up: UpArgs,
        }
        <Defaults as clap::Parser>::parse_from(["flotilla"]).up
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

#[cfg(target_os = "linux")]
fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(not(target_os = "linux"))]
fn total_memory() -> Option<u64> {
    None
}

fn check_ports(args: &UpArgs) -> anyhow::Result<()> {
    let head = NodePorts::from_base(args.head_node_ports, 30);
    let worker = NodePorts::from_base(args.node_ports, 256);
    let ranges = [
        ("--head-node-ports", args.head_node_ports, head.max_worker),
        ("--node-ports", args.node_ports, worker.max_worker),
    ];
    for (name, lo, hi) in ranges {
        if hi < lo || hi == u16::MAX {
            anyhow::bail!("{name} {lo} leaves no room for the node's ports: choose a lower base");
        }
    }
    let singles = [
        ("--api-port", args.api_port),
        ("--control-port", args.control_port),
        ("--ray-port", args.ray_port),
        ("--ray-dashboard-port", args.ray_dashboard_port),
        ("--ray-client-port", args.ray_client_port),
    ];
    for (name, p) in singles {
        for (range, lo, hi) in ranges {
            if (lo..=hi).contains(&p) && !(args.no_worker && range == "--node-ports") {
                anyhow::bail!(
                    "{name} {p} falls inside the ports of {range} ({lo}-{hi}): choose another"
                );
            }
        }
    }
    if !args.no_worker
        && head.max_worker >= args.node_ports
        && worker.max_worker >= args.head_node_ports
    {
        anyhow::bail!("--head-node-ports and --node-ports overlap: keep them at least 300 apart");
    }
    Ok(())
}

/// Where other machines reach the head: its address, names that also reach it, and how they
/// were chosen.
#[derive(Debug, Clone, PartialEq)]
struct Reach {
    ip: Option<IpAddr>,
    names: Vec<String>,
    network: &'static str,
}

async fn choose_reach(args: &UpArgs) -> anyhow::Result<Reach> {
    use flotilla_net::Mode;
    if let Some(ip) = args.node_ip {
        return Ok(Reach {
            ip: Some(ip),
            names: vec![],
            network: "given",
        });
    }
    let status = match args.network {
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
        args.network,
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
            network: "lan",
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
        network: "tailscale",
    })
}

/// A running one-machine cluster: the head and, unless `--no-worker`, this machine's worker.
#[derive(Debug)]
pub struct Running {
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

/// Starts the head (Ray head, control plane, cluster API) and the local worker, as `flotilla
/// up` does: the runtime is provisioned first (`progress` hears how far it is), and `say` is
/// told each step in words. An error leaves nothing running.
pub async fn start(
    args: &UpArgs,
    progress: ProgressFn,
    say: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<Running> {
    check_ports(args)?;
    let reach = choose_reach(args).await?;
    let dirs = Dirs::from_env();
    dirs.create_all()
        .context("cannot create Flotilla's directories")?;
    let (config, token, identity, admin_token, policy_toml) = tokio::task::spawn_blocking(|| {
        let (dirs, config, store) = crate::secret_cmd::load_store()?;
        crate::secret_cmd::notice_fallback(&config, &store);
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
        anyhow::Ok((config, token, identity, admin, policy))
    })
    .await??;

    let spec = RuntimeSpec::default();
    let runtime = RuntimeManager::new(&dirs.data)
        .ensure(&spec, progress)
        .await?;

    say("Starting the Ray head...");
    let head = Head::start(HeadConfig {
        dirs: dirs.clone(),
        runtime: runtime.clone(),
        api_addr: SocketAddr::new(args.api_host, args.api_port),
        gcs_port: args.ray_port,
        ray_dashboard_port: args.ray_dashboard_port,
        client_server_port: args.ray_client_port,
        node_ports: NodePorts::from_base(args.head_node_ports, 30),
        object_store_bytes: object_store(0.10, args.object_store_mb),
        node_name: "head".into(),
        env: vec![],
        token,
        control_port: args.control_port,
        node_ip: reach.ip,
        control_names: reach.names.clone(),
        network: reach.network.into(),
        identity,
        admin_token,
        policy_toml: policy_toml.clone(),
    })
    .await?;
    if args.no_worker {
        return Ok(Running {
            dirs,
            reach,
            head,
            worker: None,
            policy_toml,
        });
    }
    match start_worker(
        args,
        &dirs,
        &head,
        runtime,
        config,
        policy_toml.clone(),
        say,
    )
    .await
    {
        Ok(worker) => Ok(Running {
            dirs,
            reach,
            head,
            worker: Some(worker),
            policy_toml,
        }),
        Err(e) => {
            head.stop(&dirs).await;
            Err(e)
        }
    }
}

async fn start_worker(
    args: &UpArgs,
    dirs: &Dirs,
    head: &Head,
    runtime: flotilla_ray::Runtime,
    config: flotilla_agent::config::FileConfig,
    policy_toml: String,
    say: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<LocalWorker> {
    let info = head.info();
    let name = args.name.clone().unwrap_or_else(crate::join::default_name);
    let cpus = args
        .cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    say(&format!(
        "Starting the local worker node {name} ({})...",
        cpus_text(cpus)
    ));
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
        say(&format!(
            "The name {name} belongs to another machine of the fleet; this machine's worker is {given}."
        ));
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
            object_store_bytes: object_store(0.20, args.object_store_mb),
            ports: NodePorts::from_base(args.node_ports, 256),
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

impl Running {
    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn info(&self) -> &HeadInfo {
        self.head.info()
    }

    pub fn worker(&self) -> Option<&LocalWorker> {
        self.worker.as_ref()
    }

    /// The fleet's `[policy]` defaults, as the head read them from `flotilla.toml` at start.
    pub fn fleet_policy(&self) -> &str {
        &self.policy_toml
    }

    /// What `flotilla up` prints once the cluster is up: where everything is and how to use it.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let info = self.head.info();
        let reach = &self.reach;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Flotilla is up: a one-machine Ray cluster (Ray {}, Python {}).",
            info.ray_version, info.python_version
        );
        let _ = writeln!(out, "  Cluster API   {}/api/v1/cluster", info.api_url);
        let _ = writeln!(
            out,
            "  Network       {}{}",
            match reach.network {
                "tailscale" => "Tailscale",
                "given" => "the address given (--node-ip)",
                _ => "LAN",
            },
            if reach.names.is_empty() {
                String::new()
            } else {
                format!(" ({})", reach.names.join(", "))
            }
        );
        let _ = writeln!(out, "  Ray address   {}", info.ray_address);
        let _ = writeln!(
            out,
            "  Control plane {} (TLS; add machines with `flotilla invite`)",
            info.control_addresses.join(", ")
        );
        match &self.worker {
            Some(w) => {
                let _ = writeln!(
                    out,
                    "  Nodes         head (coordinator, 0 CPUs) + {} ({})",
                    w.name,
                    cpus_text(w.cpus)
                );
            }
            None => {
                let _ = writeln!(out, "  Nodes         head (coordinator, 0 CPUs), no worker");
            }
        }
        let _ = writeln!(out, "  Logs          {}", self.dirs.logs.display());
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Run Ray programs on it as jobs (add --secret NAME to pass an API key):"
        );
        let _ = writeln!(out, "  flotilla submit -- python your_program.py");
        let _ = writeln!(
            out,
            "or connect a driver directly (ray.init() reads these):"
        );
        let _ = writeln!(
            out,
            "  export RAY_ADDRESS={} RAY_AUTH_MODE=token",
            info.ray_address
        );
        let _ = writeln!(
            out,
            "  export RAY_AUTH_TOKEN=\"$(flotilla secret get {} --reveal)\"",
            flotilla_head::RAY_TOKEN_SECRET
        );
        out
    }

    /// Follows the head's and the worker's Ray nodes until `shutdown`, telling `say` when one
    /// exits, comes back or fails.
    pub async fn watch(&self, shutdown: &CancellationToken, say: &(dyn Fn(&str) + Send + Sync)) {
        let mut worker_status = self
            .worker
            .as_ref()
            .map(|w| w.agent.supervisor().subscribe());
        let mut head_status = self.head.ray_supervisor().map(|s| s.subscribe());
        loop {
            let line = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(s) = changed(&mut worker_status) => report("worker", &s),
                Some(s) = changed(&mut head_status) => report("head", &s),
            };
            if let Some(line) = line {
                say(&line);
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

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    // Before anything starts: a Ctrl-C while the cluster comes up stops it cleanly once it is
    // up, rather than killing this process with its nodes half-started.
    let shutdown = shutdown_signal();
    let (progress, bar) = crate::progress::bar();
    let say = |line: &str| eprintln!("{line}");
    let running = start(&args, progress, &say).await;
    bar.finish_and_clear();
    let running = running?;
    println!();
    print!("{}", running.summary());
    println!();
    println!(
        "Try `flotilla demo` and `flotilla status` in another terminal. Ctrl-C stops the cluster."
    );
    running.watch(&shutdown, &say).await;
    eprintln!("Stopping...");
    running.stop().await;
    eprintln!("Stopped. No Ray process of this cluster is left running.");
    Ok(ExitCode::SUCCESS)
}

fn cpus_text(n: u32) -> String {
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

fn report(role: &str, s: &flotilla_ray::NodeStatus) -> Option<String> {
    use flotilla_ray::NodePhase as P;
    match &s.phase {
        P::Restarting { in_secs, last_exit } => Some(format!(
            "The {role} node exited ({last_exit}); restarting in {in_secs:.1} s."
        )),
        P::Ready if s.restarts > 0 => {
            Some(format!("The {role} node is back (restart {}).", s.restarts))
        }
        P::Failed { error } => Some(format!("The {role} node failed: {error}")),
        _ => None,
    }
}

/// Cancelled on Ctrl-C, or on SIGTERM (a service manager stopping us).
pub fn shutdown_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        t.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        up: UpArgs,
    }

    fn parse(args: &[&str]) -> UpArgs {
        T::parse_from(std::iter::once("t").chain(args.iter().copied())).up
    }

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
            assert_eq!(r.network, "tailscale");
        }
        // MagicDNS off: the address only.
        let r = reach_from(Mode::Tailscale, Some(&status("magicdns-off")), lan).unwrap();
        assert!(r.names.is_empty() && r.network == "tailscale", "{r:?}");
        // LAN mode, or auto without a running Tailscale: the LAN address.
        let r = reach_from(Mode::Lan, Some(&running), lan).unwrap();
        assert_eq!((r.ip, r.network), (lan(), "lan"));
        let out = status("logged-out");
        let r = reach_from(Mode::Auto, Some(&out), lan).unwrap();
        assert_eq!((r.ip, r.network), (lan(), "lan"));
        let r = reach_from(Mode::Auto, None, lan).unwrap();
        assert_eq!((r.ip, r.network), (lan(), "lan"));
        // Tailscale asked for but logged out: what to do.
        let e = reach_from(Mode::Tailscale, Some(&out), lan)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tailscale up"), "{e}");
    }

    #[test]
    fn default_ports_are_consistent() {
        check_ports(&parse(&[])).unwrap();
    }

    #[test]
    fn a_port_inside_a_node_range_is_refused_with_its_option() {
        let err = check_ports(&parse(&["--api-port", "7500"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--api-port") && err.contains("--node-ports"),
            "{err}"
        );
        let err = check_ports(&parse(&["--node-ports", "6400"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("overlap"), "{err}");
    }

    #[test]
    fn object_store_defaults_are_bounded() {
        assert_eq!(object_store(0.2, Some(100)), 100 * MIB);
        let d = object_store(0.2, None);
        assert!((256 * MIB..=4096 * MIB).contains(&d));
    }
}
