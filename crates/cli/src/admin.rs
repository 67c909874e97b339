//! Admin commands, run on the head's machine: `flotilla invite`, `flotilla nodes`,
//! `flotilla revoke`, and `flotilla pause/resume --node`. They talk to the head's control
//! plane over TLS (pinned to the head's own certificate) with the admin token from the secret
//! store.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flotilla_head::HeadInfo;
use flotilla_proto::v1::{self as pb, fleet_client::FleetClient, head_command::Command as Cmd};
use tonic::transport::Channel;

struct Admin {
    /// The cluster's Python version (the head's).
    python_version: String,
    client: FleetClient<Channel>,
    auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl Admin {
    async fn connect() -> anyhow::Result<Admin> {
        let (info, token) = tokio::task::spawn_blocking(|| {
            let (dirs, _, store) = flotilla_app::secrets::load_store()?;
            let info = HeadInfo::read(&dirs).context(
                "no head runs on this machine: admin commands run where `flotilla up` runs",
            )?;
            let token = store
                .get(flotilla_head::fleet::ADMIN_TOKEN_SECRET)
                .context("the head's admin token is not in this user's secret store")?;
            anyhow::Ok((info, token))
        })
        .await??;
        let addresses: Vec<_> = info
            .control_addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        anyhow::ensure!(
            !addresses.is_empty(),
            "the running head publishes no control-plane address (is it an older Flotilla?)"
        );
        let fingerprint = info
            .fingerprint
            .parse()
            .context("the head's fingerprint in head.json is unreadable")?;
        let channel =
            flotilla_proto::transport::connect(&addresses, fingerprint, Duration::from_secs(5))
                .await?;
        let token = token.expose_str().context("the admin token is not text")?;
        Ok(Admin {
            python_version: info.python_version.clone(),
            client: FleetClient::new(channel),
            auth: format!("Admin {token}")
                .parse()
                .context("the admin token is malformed")?,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert("authorization", self.auth.clone());
        r.set_timeout(Duration::from_secs(30));
        r
    }
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

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
        let request = admin.request(pb::RevokeInviteRequest {
            invite_id: id.clone(),
        });
        let reply = admin
            .client
            .revoke_invite(request)
            .await
            .map_err(status_error)?
            .into_inner();
        if args.json {
            println!(
                "{}",
                serde_json::json!({"invite_id": id, "revoked": reply.revoked})
            );
        } else if reply.revoked {
            println!("Join code {id} is withdrawn: no machine can join with it.");
        } else {
            println!("Join code {id} was already withdrawn.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let request = admin.request(pb::InviteRequest {
        uses: args.uses,
        expires_secs: args.expires,
    });
    let reply = admin
        .client
        .invite(request)
        .await
        .map_err(status_error)?
        .into_inner();
    // What the head applied, not what was asked (an older head changes out-of-range values).
    let uses = if reply.uses == 0 {
        args.uses
    } else {
        reply.uses
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "code": reply.code,
                "invite_id": reply.invite_id,
                "expires_unix": reply.expires_unix,
                "uses": uses,
            })
        );
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
    let request = admin.request(pb::ListInvitesRequest {});
    let invites = admin
        .client
        .list_invites(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .invites;
    let state = |i: &pb::InviteRecord| i.state.clone();
    if json {
        let rows: Vec<_> = invites
            .iter()
            .map(|i| {
                serde_json::json!({
                    "invite_id": i.invite_id,
                    "state": state(i),
                    "created_unix": i.created_unix,
                    "expires_unix": i.expires_unix,
                    "uses": i.uses,
                    "uses_left": i.uses_left,
                    "revoked_unix": (i.revoked_unix > 0).then_some(i.revoked_unix),
                    "joined": i.joined,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
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
    let request = admin.request(pb::ClusterRequest {});
    let snap = admin
        .client
        .cluster(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let rows: Vec<serde_json::Value> = snap
        .nodes
        .iter()
        .map(|n| {
            let reason = n.reason.clone().unwrap_or_default();
            let python = (!n.python_version.is_empty()).then_some(n.python_version.as_str());
            serde_json::json!({
                "node_id": n.node_id,
                "name": n.name,
                "state": state_name(n.state),
                "python_version": python,
                // Another patch of the cluster's Python: Ray accepts it, and says so in its log.
                "python_differs": python.map(|p| p != admin.python_version),
                "reason_code": reason.code,
                "reason_en": reason.text_en,
                "reason_es": reason.text_es,
                "cpus_advertised": n.cpus_advertised,
                "cpus_total": n.cpus_total,
                "owner_active": n.owner_active,
                "battery_percent": n.battery_percent,
                "last_seen_unix_ms": n.last_seen_unix_ms,
            })
        })
        .collect();
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
    if snap
        .nodes
        .iter()
        .any(|n| !n.python_version.is_empty() && n.python_version != admin.python_version)
    {
        println!(
            "* another patch of the cluster's Python {}: Ray accepts it; install {} there to match exactly.",
            admin.python_version, admin.python_version
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn state_name(state: i32) -> &'static str {
    match pb::NodeState::try_from(state) {
        Ok(pb::NodeState::Contributing) => "contributing",
        Ok(pb::NodeState::Throttled) => "throttled",
        Ok(pb::NodeState::Paused) => "paused",
        Ok(pb::NodeState::Draining) => "draining",
        Ok(pb::NodeState::Offline) => "offline",
        Ok(pb::NodeState::Error) => "error",
        Ok(pb::NodeState::Unspecified) => "connecting",
        Err(_) => "unknown",
    }
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The node's name or id (see `flotilla nodes`).
    node: String,
}

pub async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect().await?;
    let request = admin.request(pb::RevokeRequest { node: args.node });
    let reply = admin
        .client
        .revoke(request)
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "Revoked node {} ({}): its credential no longer works and its session was ended. A Ray \
         token it already holds stays valid until `flotilla head rotate-ray-token`.",
        reply.node_id, reply.name
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends a pause (`until_unix_ms` 0 = until resumed) or resume to a node.
pub async fn command(
    node: String,
    pause: Option<(pb::PauseMode, u64)>,
) -> anyhow::Result<ExitCode> {
    let mut admin = Admin::connect().await?;
    let command = match pause {
        Some((mode, until_unix_ms)) => Cmd::Pause(pb::Pause {
            until_unix_ms,
            mode: mode as i32,
            reason: None,
        }),
        None => Cmd::Resume(pb::Resume {}),
    };
    let request = admin.request(pb::NodeCommandRequest {
        node,
        command: Some(pb::HeadCommand {
            command: Some(command),
        }),
    });
    let reply = admin
        .client
        .command(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let what = if pause.is_some() { "Paused" } else { "Resumed" };
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
                let (dirs, _, store) = flotilla_app::secrets::load_store()?;
                let lock = dirs.state.join("head.lock");
                if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock)
                    && let Err(std::fs::TryLockError::WouldBlock) = file.try_lock()
                {
                    anyhow::bail!(
                        "the head is running: stop it first (Ctrl-C in its terminal), rotate, then \
                     start it again"
                    );
                }
                let token = flotilla_ray::RayToken::generate();
                store.set(
                    flotilla_head::RAY_TOKEN_SECRET,
                    &flotilla_secrets::Secret::from(token.expose()),
                )?;
                println!(
                    "A new Ray token is stored ({}). Start the head with `flotilla up`: joined \
                 machines get the new token when they reconnect. Drivers need it too: `flotilla \
                 secret get {} --reveal`.",
                    store.backend_name(),
                    flotilla_head::RAY_TOKEN_SECRET
                );
                anyhow::Ok(ExitCode::SUCCESS)
            })
            .await?
        }
    }
}
