//! `flotilla up`: a one-machine cluster (Ray head + local worker + cluster API).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flotilla_agent::{Agent, AgentConfig, Deps};
use flotilla_head::{Head, HeadConfig};
use flotilla_host::Dirs;
use flotilla_ray::ports::{
    DEFAULT_CLIENT_SERVER_PORT, DEFAULT_GCS_PORT, DEFAULT_HEAD_NODE_BASE,
    DEFAULT_RAY_DASHBOARD_PORT, DEFAULT_WORKER_NODE_BASE,
};
use flotilla_ray::{NodePorts, RuntimeManager, RuntimeSpec};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Port of the cluster API (`/api/v1/cluster`, `/healthz`).
    #[arg(long, default_value_t = flotilla_head::DEFAULT_API_PORT)]
    api_port: u16,
    /// Address the cluster API listens on. Loopback keeps it private to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    api_host: IpAddr,
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
    network: flotilla_net::Mode,
    /// The address other machines reach this head at, overriding `--network`.
    #[arg(long, value_name = "IP")]
    node_ip: Option<IpAddr>,
    /// Port of the control plane (gRPC with TLS), where other machines join and report.
    #[arg(long, default_value_t = flotilla_head::fleet::DEFAULT_CONTROL_PORT)]
    control_port: u16,
    /// Port of the Ray GCS, the address Ray programs and other nodes connect to.
    #[arg(long, default_value_t = DEFAULT_GCS_PORT)]
    ray_port: u16,
    /// Port of Ray's own dashboard (loopback only).
    #[arg(long, default_value_t = DEFAULT_RAY_DASHBOARD_PORT)]
    ray_dashboard_port: u16,
    /// Port of the Ray client server (`ray://` addresses).
    #[arg(long, default_value_t = DEFAULT_CLIENT_SERVER_PORT)]
    ray_client_port: u16,
    /// First of the head node's own ports (it uses BASE..BASE+5 and BASE+20..BASE+49).
    #[arg(long, value_name = "BASE", default_value_t = DEFAULT_HEAD_NODE_BASE)]
    head_node_ports: u16,
    /// First of the local worker node's ports (BASE..BASE+5 and BASE+20..BASE+275).
    #[arg(long, value_name = "BASE", default_value_t = DEFAULT_WORKER_NODE_BASE)]
    node_ports: u16,
    /// CPUs the local worker offers [default: all logical cores].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    cpus: Option<u32>,
    /// Object store size of each node, in MiB [default: 10% of memory for the head, 20% for the
    /// worker, between 256 MiB and 4 GiB].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(80..))]
    object_store_mb: Option<u64>,
    /// Run only the head (no local worker node).
    #[arg(long)]
    no_worker: bool,
    /// Name of the local worker node [default: this machine's host name].
    #[arg(long)]
    name: Option<String>,
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

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    check_ports(&args)?;
    let reach = choose_reach(&args).await?;
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
    let (progress, bar) = crate::progress::bar();
    let runtime = RuntimeManager::new(&dirs.data)
        .ensure(&spec, progress)
        .await;
    bar.finish_and_clear();
    let runtime = runtime?;

    let shutdown = shutdown_signal();
    eprintln!("Starting the Ray head...");
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
        policy_toml,
    })
    .await?;
    let info = head.info().clone();

    let worker = if args.no_worker {
        None
    } else {
        let name = args.name.clone().unwrap_or_else(flotilla_host::hostname);
        let cpus = args
            .cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        eprintln!(
            "Starting the local worker node {name} ({})...",
            cpus_text(cpus)
        );
        let head_addr: SocketAddr = info.ray_address.parse().with_context(|| {
            format!("the head reported an unusable address {}", info.ray_address)
        })?;
        // The local worker reports to the head like any other node, enrolled directly.
        let (node_id, credential) = head
            .fleet()
            .enroll_local(&name, cpus)
            .await
            .map_err(|s| anyhow::anyhow!("cannot enroll the local worker: {}", s.message()))?;
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
                log_dir: dirs.logs.clone(),
                env: vec![],
                cluster_state: Some(head.ray_state().clone()),
                policy: config.policy.clone(),
                session: Some(session),
            },
            Deps {
                runtime: runtime.clone(),
            },
        )
        .await;
        match agent {
            Ok(a) => Some((name, cpus, a)),
            Err(e) => {
                head.stop(&dirs).await;
                return Err(e.into());
            }
        }
    };

    println!();
    println!(
        "Flotilla is up: a one-machine Ray cluster (Ray {}, Python {}).",
        info.ray_version, info.python_version
    );
    println!("  Cluster API   {}/api/v1/cluster", info.api_url);
    println!(
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
    println!("  Ray address   {}", info.ray_address);
    println!(
        "  Control plane {} (TLS; add machines with `flotilla invite`)",
        info.control_addresses.join(", ")
    );
    match &worker {
        Some((name, cpus, _)) => println!(
            "  Nodes         head (coordinator, 0 CPUs) + {name} ({})",
            cpus_text(*cpus)
        ),
        None => println!("  Nodes         head (coordinator, 0 CPUs), no worker"),
    }
    println!("  Logs          {}", dirs.logs.display());
    println!();
    println!("Run Ray programs on it as jobs (add --secret NAME to pass an API key):");
    println!("  flotilla submit -- python your_program.py");
    println!("or connect a driver directly (ray.init() reads these):");
    println!(
        "  export RAY_ADDRESS={} RAY_AUTH_MODE=token",
        info.ray_address
    );
    println!(
        "  export RAY_AUTH_TOKEN=\"$(flotilla secret get {} --reveal)\"",
        flotilla_head::RAY_TOKEN_SECRET
    );
    println!();
    println!(
        "Try `flotilla demo` and `flotilla status` in another terminal. Ctrl-C stops the cluster."
    );

    let mut worker_status = worker.as_ref().map(|(_, _, a)| a.supervisor().subscribe());
    let mut head_status = head.ray_supervisor().map(|s| s.subscribe());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(s) = changed(&mut worker_status) => report("worker", &s),
            Some(s) = changed(&mut head_status) => report("head", &s),
        }
    }

    eprintln!("Stopping...");
    if let Some((_, _, agent)) = worker {
        agent.stop().await;
    }
    head.stop(&dirs).await;
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

fn report(role: &str, s: &flotilla_ray::NodeStatus) {
    use flotilla_ray::NodePhase as P;
    match &s.phase {
        P::Restarting { in_secs, last_exit } => {
            eprintln!("The {role} node exited ({last_exit}); restarting in {in_secs:.1} s.")
        }
        P::Ready if s.restarts > 0 => {
            eprintln!("The {role} node is back (restart {}).", s.restarts)
        }
        P::Failed { error } => eprintln!("The {role} node failed: {error}"),
        _ => {}
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
