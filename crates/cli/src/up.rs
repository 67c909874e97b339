//! `flotilla up`: a one-machine cluster (Ray head + local worker + cluster API), hosted by
//! [`flotilla_app::host`]; this module parses its options and prints what it says.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;
use flotilla_app::host::{self, HostOptions, Hosted, Network};
use flotilla_ray::ports::{
    DEFAULT_CLIENT_SERVER_PORT, DEFAULT_GCS_PORT, DEFAULT_HEAD_NODE_BASE,
    DEFAULT_RAY_DASHBOARD_PORT, DEFAULT_WORKER_NODE_BASE,
};

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

impl UpArgs {
    /// The options as [`flotilla_app::host`] takes them.
    pub fn options(&self) -> HostOptions {
        HostOptions {
            api_port: self.api_port,
            api_host: self.api_host,
            network: self.network,
            node_ip: self.node_ip,
            control_port: self.control_port,
            ray_port: self.ray_port,
            ray_dashboard_port: self.ray_dashboard_port,
            ray_client_port: self.ray_client_port,
            head_node_ports: self.head_node_ports,
            node_ports: self.node_ports,
            cpus: self.cpus,
            object_store_mb: self.object_store_mb,
            no_worker: self.no_worker,
            name: self.name.clone(),
        }
    }
}

/// What `flotilla up` prints once the cluster is up: where everything is and how to use it.
fn summary(hosted: &Hosted) -> String {
    use std::fmt::Write;
    let info = hosted.info();
    let reach = hosted.reach();
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
            Network::Tailscale => "Tailscale",
            Network::Given => "the address given (--node-ip)",
            Network::Lan => "LAN",
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
    match hosted.worker() {
        Some(w) => {
            let _ = writeln!(
                out,
                "  Nodes         head (coordinator, 0 CPUs) + {} ({})",
                w.name,
                host::cpus_text(w.cpus)
            );
        }
        None => {
            let _ = writeln!(out, "  Nodes         head (coordinator, 0 CPUs), no worker");
        }
    }
    let _ = writeln!(out, "  Logs          {}", hosted.dirs().logs.display());
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

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    // Before anything starts: a Ctrl-C while the cluster comes up stops it cleanly once it is
    // up, rather than killing this process with its nodes half-started.
    let shutdown = flotilla_app::shutdown_signal();
    let terminal = crate::progress::Terminal::new();
    let events = terminal.events();
    let hosted = host::start(&args.options(), &events).await;
    terminal.clear();
    let hosted = hosted?;
    println!();
    print!("{}", summary(&hosted));
    println!();
    println!(
        "Try `flotilla demo` and `flotilla status` in another terminal. Ctrl-C stops the cluster."
    );
    hosted.watch(&shutdown, &events).await;
    eprintln!("Stopping...");
    hosted.stop().await;
    eprintln!("Stopped. No Ray process of this cluster is left running.");
    Ok(ExitCode::SUCCESS)
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

    #[test]
    fn the_options_reach_the_host_as_given() {
        let o = parse(&[
            "--api-port",
            "9000",
            "--network",
            "lan",
            "--no-worker",
            "--name",
            "atlas",
            "--cpus",
            "3",
        ])
        .options();
        assert_eq!(o.api_port, 9000);
        assert_eq!(o.network, flotilla_net::Mode::Lan);
        assert!(o.no_worker);
        assert_eq!((o.name.as_deref(), o.cpus), (Some("atlas"), Some(3)));
    }
}
