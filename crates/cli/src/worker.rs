//! `flotilla worker`: run this machine's agent against a head whose Ray token this machine
//! already holds (the head's own machine, or one where the token was stored with `flotilla
//! secret set flotilla.ray-token`). Joining with a join code comes with the control plane.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use flotilla_agent::{Agent, AgentConfig, Deps};
use flotilla_ray::{NodePorts, RuntimeManager, RuntimeSpec};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The head's Ray address (`ip:port`), as `flotilla up` prints it.
    #[arg(long, value_name = "IP:PORT")]
    address: SocketAddr,
    /// Name of this worker node [default: this machine's host name].
    #[arg(long)]
    name: Option<String>,
    /// CPUs this node offers at most [default: all logical cores].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    cpus: Option<u32>,
    /// Object store size in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(80..))]
    object_store_mb: u64,
    /// First of this node's ports (BASE..BASE+5 and BASE+20..BASE+275).
    #[arg(long, value_name = "BASE", default_value_t = flotilla_ray::ports::DEFAULT_WORKER_NODE_BASE)]
    node_ports: u16,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let (dirs, config, token) = tokio::task::spawn_blocking(|| {
        let (dirs, config, store) = crate::secret_cmd::load_store()?;
        let token = flotilla_head::read_cluster_token(&store)?.context(
            "this machine holds no cluster token: run this on the head's machine, or store the \
             head's token with `flotilla secret set flotilla.ray-token`",
        )?;
        anyhow::Ok((dirs, config, token))
    })
    .await??;
    let (progress, bar) = crate::progress::bar();
    let runtime = RuntimeManager::new(&dirs.data)
        .ensure(&RuntimeSpec::default(), progress)
        .await;
    bar.finish_and_clear();
    let runtime = runtime?;
    let name = args.name.unwrap_or_else(flotilla_host::hostname);
    let shutdown = crate::up::shutdown_signal();
    let agent = Agent::start(
        AgentConfig {
            node_name: name.clone(),
            head: args.address,
            node_ip: None,
            num_cpus: args.cpus,
            object_store_bytes: args.object_store_mb * 1024 * 1024,
            ports: NodePorts::from_base(args.node_ports, 256),
            token,
            run_dir: dirs.run.join(format!("worker-{name}")),
            log_dir: dirs.logs.clone(),
            env: vec![],
            cluster_state: None,
            policy: config.policy,
        },
        Deps { runtime },
    )
    .await?;
    eprintln!(
        "Worker {name} joined the cluster at {}. Ctrl-C stops it.",
        args.address
    );
    shutdown.cancelled().await;
    eprintln!("Stopping...");
    agent.stop().await;
    Ok(ExitCode::SUCCESS)
}
