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
    let name = args.node.name.clone().unwrap_or_else(default_name);
    eprintln!("Joining the fleet as {name}...");
    let enrolled = enroll(&code, name.clone(), args.node.cpus).await?;
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
    crate::worker::run_enrolled(enrolled, node).await
}

/// The name a machine joins under when none is given: its host name, with `-` for any
/// character a node name cannot have and `node-` before one that is all digits (which would
/// read as a node id).
pub fn default_name() -> String {
    name_from_host(&flotilla_host::hostname())
}

fn name_from_host(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| {
            let mut buf = [0u8; 4];
            if c == ' ' || flotilla_secrets::ambiguous_character(c.encode_utf8(&mut buf)).is_some()
            {
                '-'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "node".to_string()
    } else if name.chars().all(|c| c.is_ascii_digit()) {
        format!("node-{name}")
    } else {
        name
    }
}

/// The secret-store name written and removed to prove the store takes writes before a join.
const WRITE_CHECK: &str = "flotilla.join-check";

/// Joins the fleet of `code` as `name` and stores the enrollment (credentials in the secret
/// store); the worker is not started. All or nothing: the store is checked before the head is
/// asked, and when storing fails after all, the head is told to forget the node and give the
/// code's use back.
pub async fn enroll(
    code: &str,
    name: String,
    cpus: Option<u32>,
) -> anyhow::Result<enrollment::Enrollment> {
    let mut machine = Machine::this(name, cpus);
    // The store must take writes before the code is used.
    let (dirs, store) = tokio::task::spawn_blocking(|| {
        let unusable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "the secret store cannot keep this machine's credential, so it did not join \
                 (the join code is unused): {e}"
            )
        };
        let (dirs, _, store) =
            crate::secret_cmd::load_store().map_err(|e| unusable(&crate::errors::describe(&e)))?;
        let check = flotilla_secrets::Secret::from(format!("{:?}", std::time::SystemTime::now()));
        store
            .set(WRITE_CHECK, &check)
            .and_then(|()| store.remove(WRITE_CHECK).map(|_| ()))
            .map_err(|e| unusable(&e))?;
        // A machine that joins again proves which node it is, to keep its name.
        let previous = match enrollment::Enrollment::load(&dirs) {
            Ok(Some(e)) => store
                .get(enrollment::CREDENTIAL_SECRET)
                .ok()
                .map(|c| (e, c)),
            _ => None,
        };
        anyhow::Ok((dirs, (store, previous)))
    })
    .await??;
    let (store, previous) = store;
    machine.previous = previous;
    // The head refuses, before the code is used, a machine that cannot run its Python.
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
    let joined = enrollment::join(code, &machine).await?;
    if let Some(notice) = &joined.notice {
        eprintln!("{notice}");
    }
    let saved = tokio::task::spawn_blocking({
        let (enrollment, credential, token) = (
            joined.enrollment.clone(),
            joined.credential.clone(),
            joined.token.clone(),
        );
        move || {
            enrollment
                .save(&dirs, &store, &credential, &token)
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
    .and_then(|r| r);
    if let Err(e) = saved {
        let undone = match enrollment::finish(&joined, false).await {
            Ok(()) => "the head has forgotten this machine and the join code is unused".to_string(),
            Err(f) => format!(
                "the head could not be told ({f}); it forgets this machine and gives the code's \
                 use back by itself within a few minutes"
            ),
        };
        anyhow::bail!(
            "cannot store the enrollment: {e}\n  Nothing was joined: {undone}. Fix the secret \
             store (`flotilla doctor` says how) and join again with the same code."
        );
    }
    enrollment::finish(&joined, true).await.map_err(|e| {
        anyhow::anyhow!(
            "the head did not confirm the join: {e}\n  Join again with a new code \
             (`flotilla invite` on the head)."
        )
    })?;
    Ok(joined.enrollment)
}

#[cfg(test)]
mod tests {
    use super::name_from_host;

    #[test]
    fn a_host_name_becomes_a_name_the_head_accepts() {
        for (host, name) in [
            ("studio", "studio"),
            ("Ana’s MacBook Pro", "Ana’s-MacBook-Pro"),
            ("1234", "node-1234"),
            ("vm\u{200b}", "vm-"),
            ("", "node"),
        ] {
            assert_eq!(name_from_host(host), name);
        }
    }
}
