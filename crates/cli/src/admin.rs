//! Admin commands, run on the head's machine: `flotilla invite`, `flotilla nodes`,
//! `flotilla revoke`, and `flotilla pause/resume --node`, printed from
//! [`flotilla_app::admin`]'s answers.

use std::process::ExitCode;

use clap::Args;
use flotilla_app::admin::{Admin, InviteRow, NodeCommand};

#[derive(Debug, Args)]
pub struct InviteArgs {
    /// How many machines may join with the code (1 to 10000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    uses: u32,
    /// How long the code is valid, from a second to 366 days, e.g. `30m`, `24h`, `7d`.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_validity)]
    expires: u64,
    /// List the join codes the head has made (never their secrets): id, state, uses, expiry and
    /// who joined with each.
    #[arg(long, conflicts_with_all = ["revoke", "uses", "expires", "no_qr"])]
    list: bool,
    /// Withdraw the join code with this id (from `--list`): no machine can join with it from
    /// now on. Machines that already joined stay.
    #[arg(long, value_name = "ID", conflicts_with_all = ["uses", "expires", "no_qr"])]
    revoke: Option<String>,
    /// Print JSON instead of text and a QR code.
    #[arg(long)]
    json: bool,
    /// Do not draw the QR code.
    #[arg(long)]
    no_qr: bool,
}

/// The most an invite may be valid: what the head enforces.
const MAX_VALIDITY_SECS: u64 = 366 * 86_400;

/// A join code's validity: a duration ([`crate::pause::parse_duration`]) from a second to 366
/// days, refused outside that range rather than changed, so what is printed is what the head
/// applies.
fn parse_validity(text: &str) -> Result<u64, String> {
    let secs = crate::pause::parse_duration(text)?;
    if secs == 0 {
        return Err(format!(
            "{text:?}: a join code must be valid for at least a second"
        ));
    }
    if secs > MAX_VALIDITY_SECS {
        return Err(format!(
            "{text:?}: a join code is valid for at most 366 days (366d)"
        ));
    }
    Ok(secs)
}

pub async fn invite(args: InviteArgs) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect().await?;
    if args.list {
        return list_invites(&mut admin, args.json).await;
    }
    if let Some(id) = args.revoke {
        let revoked = admin.revoke_invite(&id).await?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"invite_id": id, "revoked": revoked})
            );
        } else if revoked {
            println!("Join code {id} is withdrawn: no machine can join with it.");
        } else {
            println!("Join code {id} was already withdrawn.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reply = admin.invite(args.uses, args.expires).await?;
    let uses = reply.uses;
    if args.json {
        println!("{}", serde_json::to_value(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !args.no_qr {
        match qrcode::QrCode::new(reply.code.as_bytes()) {
            Ok(qr) => println!(
                "{}",
                qr.render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build()
            ),
            Err(e) => eprintln!("(no QR code: {e})"),
        }
    }
    println!("{}", reply.code);
    println!();
    let machines = if uses == 1 {
        "one machine".to_string()
    } else {
        format!("{uses} machines")
    };
    let now = unix_now();
    println!(
        "On the machine to add, run `flotilla join <code>` (or paste it in the app). Valid for \
         {machines} until {} ({}). Treat it like a password; withdraw it with \
         `flotilla invite --revoke {}`.",
        flotilla_host::clock::format_utc(reply.expires_unix),
        human_secs(reply.expires_unix.saturating_sub(now)),
        reply.invite_id,
    );
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn list_invites(admin: &mut Admin, json: bool) -> anyhow::Result<ExitCode> {
    let invites = admin.invites().await?;
    let state = |i: &InviteRow| i.state.clone();
    if json {
        println!("{}", serde_json::to_value(&invites)?);
        return Ok(ExitCode::SUCCESS);
    }
    if invites.is_empty() {
        println!("The head has made no join codes yet; make one with `flotilla invite`.");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<4} {:<9} {:<7} {:<21} JOINED",
        "ID", "STATE", "USES", "EXPIRES"
    );
    for i in &invites {
        let used = if i.uses == 0 {
            format!("{} left", i.uses_left)
        } else {
            format!("{}/{}", i.uses - i.uses_left.min(i.uses), i.uses)
        };
        println!(
            "{:<4} {:<9} {:<7} {:<21} {}",
            i.invite_id,
            state(i),
            used,
            flotilla_host::clock::format_utc(i.expires_unix),
            if i.joined.is_empty() {
                "-".to_string()
            } else {
                i.joined.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A validity in words, to the nearest minute past a minute: `1 day`, `1 day 12 hours`,
/// `90 minutes` reads `1 hour 30 minutes`.
fn human_secs(s: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if s < 60 {
        return plural(s, "second");
    }
    let minutes = (s + 30) / 60;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let parts: Vec<String> = [(days, "day"), (hours, "hour"), (minutes, "minute")]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, unit)| plural(n, unit))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::{human_secs, parse_validity};

    #[test]
    fn validities_are_refused_out_of_range_and_said_as_the_head_applies_them() {
        assert_eq!(parse_validity("24h"), Ok(86_400));
        assert_eq!(parse_validity("366d"), Ok(366 * 86_400));
        assert_eq!(parse_validity("1s"), Ok(1));
        for bad in [
            "0s",
            "0d",
            "367d",
            "999999d",
            "99999999999999999999d",
            "5y",
            "-1h",
        ] {
            assert!(parse_validity(bad).is_err(), "{bad}");
        }
        assert_eq!(human_secs(86_399), "1 day");
        assert_eq!(human_secs(129_600), "1 day 12 hours");
        assert_eq!(human_secs(5_400), "1 hour 30 minutes");
        assert_eq!(human_secs(30), "30 seconds");
        assert_eq!(human_secs(366 * 86_400), "366 days");
    }
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn nodes(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect().await?;
    let nodes = admin.nodes().await?;
    let rows: Vec<serde_json::Value> = nodes
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No nodes yet. Add one with `flotilla invite`, then `flotilla join` there.");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<4} {:<20} {:<13} {:>9}  {:<10} {:<9} REASON",
        "ID", "NAME", "STATE", "CPUS", "LAST SEEN", "PYTHON"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for r in rows {
        let seen = r["last_seen_unix_ms"].as_i64().unwrap_or(0);
        let ago = if seen == 0 {
            "never".to_string()
        } else {
            let s = (now - seen).max(0) / 1000;
            match s {
                0..=59 => format!("{s}s ago"),
                60..=3599 => format!("{}m ago", s / 60),
                _ => format!("{}h ago", s / 3600),
            }
        };
        let python = match (r["python_version"].as_str(), r["python_differs"].as_bool()) {
            (Some(p), Some(true)) => format!("{p}*"),
            (Some(p), _) => p.to_string(),
            (None, _) => "-".into(),
        };
        println!(
            "{:<4} {:<20} {:<13} {:>4}/{:<4}  {:<10} {:<9} {}",
            r["node_id"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["cpus_advertised"].as_f64().unwrap_or(0.0),
            r["cpus_total"].as_f64().unwrap_or(0.0),
            ago,
            python,
            r["reason_en"].as_str().unwrap_or(""),
        );
    }
    if nodes.iter().any(|n| n.python_differs == Some(true)) {
        let python = admin.python_version();
        println!(
            "* another patch of the cluster's Python {python}: Ray accepts it; install {python} there to match exactly."
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The node's name or id (see `flotilla nodes`).
    node: String,
}

pub async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let (node_id, name) = Admin::connect().await?.revoke(&args.node).await?;
    println!(
        "Revoked node {} ({}): its credential no longer works and its session was ended. A Ray \
         token it already holds stays valid until `flotilla head rotate-ray-token`.",
        node_id, name
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends a pause or a resume to a node and says whether it got it.
pub async fn command(node: String, command: NodeCommand) -> anyhow::Result<ExitCode> {
    let reply = Admin::connect().await?.command(&node, command).await?;
    let what = if matches!(command, NodeCommand::Pause { .. }) {
        "Paused"
    } else {
        "Resumed"
    };
    if reply.delivered {
        println!("{what} node {} ({}).", reply.node_id, reply.name);
    } else {
        println!(
            "{what} node {} ({}): it is offline, and gets the command when it reconnects.",
            reply.node_id, reply.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `flotilla head ...`: maintenance of the head's own state and secrets.
#[derive(Debug, clap::Subcommand)]
pub enum HeadCommand {
    /// Save the head (running or not) to one file encrypted with a passphrase: its registry
    /// (nodes, contribution ledger), TLS identity, Ray and admin tokens, and flotilla.toml.
    Backup(crate::backup_cmd::BackupArgs),
    /// Put a head saved by `backup` into this home (this machine or another), then start it
    /// with `flotilla up`: the same fleet, fingerprint and tokens. Refuses to replace a head
    /// this home has unless --force.
    Restore(crate::backup_cmd::RestoreArgs),
    /// Store the passphrase scheduled backups are made with (`[backup]` in flotilla.toml).
    BackupPassphrase(crate::backup_cmd::PassphraseArgs),
    /// Replace the cluster's Ray token (with the head stopped). Joined machines receive the
    /// new one when they reconnect and restart their Ray nodes with it; a machine revoked
    /// earlier never receives it. Drivers and scripts need the new token too.
    RotateRayToken,
}

pub async fn head(cmd: HeadCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HeadCommand::Backup(args) => crate::backup_cmd::backup(args).await,
        HeadCommand::Restore(args) => crate::backup_cmd::restore(args).await,
        HeadCommand::BackupPassphrase(args) => crate::backup_cmd::set_passphrase(args).await,
        HeadCommand::RotateRayToken => {
            tokio::task::spawn_blocking(|| {
                let backend = flotilla_app::admin::rotate_ray_token()?;
                println!(
                    "A new Ray token is stored ({}). Start the head with `flotilla up`: joined \
                 machines get the new token when they reconnect. Drivers need it too: `flotilla \
                 secret get {} --reveal`.",
                    backend,
                    flotilla_head::RAY_TOKEN_SECRET
                );
                anyhow::Ok(ExitCode::SUCCESS)
            })
            .await?
        }
    }
}
