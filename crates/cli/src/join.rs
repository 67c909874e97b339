//! `flotilla join CODE`: join a fleet with a code from its head, then run the worker.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use flotilla_agent::enrollment::{self, Machine};

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
        .unwrap_or_else(flotilla_host::hostname);
    eprintln!("Joining the fleet as {name}...");
    let enrolled = enroll(&code, name.clone(), args.node.cpus).await?;
    eprintln!(
        "Joined as node {} ({name}); Ray {} with Python {}. Credentials are in the secret store.",
        enrolled.node_id, enrolled.ray_version, enrolled.python_version
    );
    if args.no_start {
        eprintln!("Start the worker with `flotilla worker`.");
        return Ok(ExitCode::SUCCESS);
    }
    crate::worker::run_enrolled(enrolled, args.node).await
}

/// Joins the fleet of `code` as `name` and stores the enrollment (credentials in the secret
/// store); the worker is not started.
pub async fn enroll(
    code: &str,
    name: String,
    cpus: Option<u32>,
) -> anyhow::Result<enrollment::Enrollment> {
    let mut machine = Machine::this(name, cpus);
    // The head refuses, before the code is used, a machine that cannot run its Python.
    let dirs = flotilla_host::Dirs::from_env();
    match flotilla_ray::RuntimeManager::new(&dirs.data)
        .pythons()
        .await
    {
        Ok(p) => {
            machine.python_versions = p.versions;
            machine.python_downloads = p.downloads;
        }
        Err(e) => tracing::warn!("cannot list this machine's Pythons: {e}"),
    }
    let (enrolled, credential, token) = enrollment::join(code, &machine).await?;
    let saved = enrolled.clone();
    tokio::task::spawn_blocking(move || {
        let (dirs, _, store) = crate::secret_cmd::load_store()?;
        saved
            .save(&dirs, &store, &credential, &token)
            .map_err(|e| anyhow::anyhow!("cannot store the enrollment: {e}"))
    })
    .await??;
    Ok(enrolled)
}
