//! `flotilla join CODE`: join a fleet with a code from its head, then run the worker.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::worker::NodeArgs;

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The join code from `flotilla invite` on the head (starts with `flot1-`). Read from
    /// standard input when `-`, so it stays out of the shell history and process list.
    code: String,
    /// Join and store the enrollment, but do not start the worker (start it later with
    /// `flotilla worker` or as a service).
    #[arg(long)]
    no_start: bool,
    #[command(flatten)]
    node: NodeArgs,
}

pub async fn run(args: JoinArgs) -> anyhow::Result<ExitCode> {
    let code = if args.code == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s)
            .context("cannot read the join code from standard input")?;
        s
    } else {
        args.code.clone()
    };
    let name = args
        .node
        .name
        .clone()
        .unwrap_or_else(flotilla_app::join::default_name);
    eprintln!("Joining the fleet as {name}...");
    let terminal = crate::progress::Terminal::new();
    let enrolled =
        flotilla_app::join::enroll(&code, name.clone(), args.node.cpus, &terminal.events()).await?;
    if enrolled.node_name != name {
        eprintln!("Joined under another name: {}.", enrolled.node_name);
    }
    eprintln!(
        "Joined as node {} ({}); Ray {} with Python {}. Credentials are in the secret store.",
        enrolled.node_id, enrolled.node_name, enrolled.ray_version, enrolled.python_version
    );
    if args.no_start {
        eprintln!("Start the worker with `flotilla worker`.");
        return Ok(ExitCode::SUCCESS);
    }
    // The node runs under the name the head gave it.
    let mut node = args.node;
    node.name = Some(enrolled.node_name.clone());
    crate::worker::run_enrolled(enrolled, &node).await
}
