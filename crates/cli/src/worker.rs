//! `flotilla worker`: run this machine's agent ([`flotilla_app::worker`]). An enrolled machine
//! (after `flotilla join`) runs against its fleet with a control session; `--address` runs a
//! node against a head whose Ray token this machine already holds (the head's own machine),
//! without one.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flotilla_agent::enrollment::Enrollment;
use flotilla_app::worker::{self, NodeOptions, WorkerEnd};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Run against this Ray address (`ip:port`, as `flotilla up` prints it) with the Ray token
    /// stored on this machine, without joining [default: the fleet this machine joined].
    #[arg(long, value_name = "IP:PORT")]
    address: Option<SocketAddr>,
    /// The fleet's head moved (restored on another machine): reach its control plane at this
    /// address from now on (`host:port`, the `Control plane` line `flotilla up` prints). The
    /// head must prove to be the same one (the fingerprint this machine pinned when it joined)
    /// and know this node; then the address is saved and the worker runs.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "address")]
    head: Option<worker::HeadAddress>,
    #[command(flatten)]
    node: NodeArgs,
}

/// How this machine's node runs.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// Name of this worker node [default: this machine's host name].
    #[arg(long)]
    pub name: Option<String>,
    /// CPUs this node offers at most [default: all logical cores].
    #[arg(long, env = "FLOTILLA_CPUS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cpus: Option<u32>,
    /// Object store size in MiB.
    #[arg(long, value_name = "MIB", env = "FLOTILLA_OBJECT_STORE_MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(80..))]
    pub object_store_mb: u64,
    /// First of this node's ports (BASE..BASE+5 and BASE+20..BASE+275).
    #[arg(long, value_name = "BASE", env = "FLOTILLA_NODE_PORTS", default_value_t = flotilla_ray::ports::DEFAULT_WORKER_NODE_BASE)]
    pub node_ports: u16,
    /// Seconds between reports to the head.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = positive_secs)]
    pub report_every: f64,
    /// Seconds a contribution record stays open before it is queued for the head.
    #[arg(long, value_name = "SECS", default_value_t = 300.0, value_parser = positive_secs)]
    pub record_every: f64,
}

impl NodeArgs {
    /// The options as [`flotilla_app::worker`] takes them.
    pub fn options(&self) -> NodeOptions {
        NodeOptions {
            name: self.name.clone(),
            cpus: self.cpus,
            object_store_mb: self.object_store_mb,
            node_ports: self.node_ports,
            report_every: Duration::from_secs_f64(self.report_every),
            record_every: Duration::from_secs_f64(self.record_every),
        }
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected seconds between 0.1 and 86400")),
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    match args.address {
        Some(address) => {
            let terminal = crate::progress::Terminal::new();
            let ran = worker::run_at(
                address,
                args.node.options(),
                flotilla_app::shutdown_signal(),
                terminal.events(),
            )
            .await;
            terminal.clear();
            ran.map(|()| ExitCode::SUCCESS)
        }
        None => {
            let mut enrolled = worker::enrollment().await?.context(
                "this machine has not joined a fleet: run `flotilla join CODE` with a code from \
                 the head's admin (`flotilla invite`), or give --address to run against a head \
                 whose Ray token this machine holds",
            )?;
            if let Some(head) = &args.head {
                enrolled = worker::follow_head(enrolled, head).await?;
                println!(
                    "The head at {head} is this fleet's head (fingerprint checked); this machine \
                     reaches it there from now on."
                );
            }
            run_enrolled(enrolled, &args.node).await
        }
    }
}

/// Runs the worker of an enrolled machine until Ctrl-C, or until the head removes it (success)
/// or refuses it (failure).
pub async fn run_enrolled(enrolled: Enrollment, node: &NodeArgs) -> anyhow::Result<ExitCode> {
    let terminal = crate::progress::Terminal::new();
    let ended = worker::run_enrolled(
        enrolled,
        node.options(),
        flotilla_app::shutdown_signal(),
        terminal.events(),
    )
    .await;
    terminal.clear();
    Ok(match ended? {
        WorkerEnd::Shutdown | WorkerEnd::Left(_) => ExitCode::SUCCESS,
        WorkerEnd::Refused(_) => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        node: NodeArgs,
    }

    #[test]
    fn the_node_options_reach_the_worker_as_given() {
        let node = T::parse_from(["t", "--report-every", "0.5", "--record-every", "60"]).node;
        let o = node.options();
        assert_eq!(o.report_every, Duration::from_millis(500));
        assert_eq!(o.record_every, Duration::from_secs(60));
        assert!(T::try_parse_from(["t", "--report-every", "0"]).is_err());
    }
}
