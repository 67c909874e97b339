//! The head's admin client, for commands run on the head's machine (`flotilla invite`,
//! `nodes`, `revoke`, `pause --node`): the control plane over TLS pinned to the head's own
//! certificate, with the admin token from the secret store. Answers are plain types; the
//! caller prints them.

use std::time::Duration;

use anyhow::Context;
use flotilla_head::HeadInfo;
use flotilla_proto::v1::{self as pb, fleet_client::FleetClient, head_command::Command as Cmd};
use serde::Serialize;
use tonic::transport::Channel;

/// A connection to this machine's head as its administrator.
#[derive(Debug)]
pub struct Admin {
    /// The cluster's Python version (the head's).
    python_version: String,
    client: FleetClient<Channel>,
    auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

/// A join code just made.
#[derive(Debug, Clone, Serialize)]
pub struct Invite {
    pub code: String,
    pub invite_id: String,
    pub expires_unix: u64,
    /// How many machines may join with it, as the head applied it.
    pub uses: u32,
}

/// A join code the head made (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct InviteRow {
    pub invite_id: String,
    /// `active`, `used`, `expired` or `revoked`, as the head says.
    pub state: String,
    pub created_unix: u64,
    pub expires_unix: u64,
    pub uses: u32,
    pub uses_left: u32,
    pub revoked_unix: Option<u64>,
    /// The names of the machines that joined with it.
    pub joined: Vec<String>,
}

/// A node of the fleet as the head sees it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    pub node_id: String,
    pub name: String,
    /// The state's name (`contributing`, `paused`, …: [`flotilla_proto::state`]).
    pub state: &'static str,
    pub python_version: Option<String>,
    /// Another patch of the cluster's Python: Ray accepts it, and says so in its log.
    pub python_differs: Option<bool>,
    pub reason_code: String,
    pub reason_en: String,
    pub reason_es: String,
    pub cpus_advertised: f64,
    pub cpus_total: f64,
    pub owner_active: Option<bool>,
    pub battery_percent: Option<f64>,
    pub last_seen_unix_ms: i64,
}

/// What a command sent to a node came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub node_id: String,
    pub name: String,
    /// False: the node is offline and gets the command when it reconnects.
    pub delivered: bool,
}

/// A command for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeCommand {
    /// `finish`: the running tasks first; `until_unix_ms` 0: until resumed.
    Pause {
        finish: bool,
        until_unix_ms: u64,
    },
    Resume,
}

impl Admin {
    /// Connects to the head running on this machine.
    pub async fn connect() -> anyhow::Result<Admin> {
        let (info, token) = tokio::task::spawn_blocking(|| {
            let (dirs, _, store) = crate::secrets::load_store()?;
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
            auth: flotilla_proto::auth::admin(token)
                .parse()
                .context("the admin token is malformed")?,
        })
    }

    /// The cluster's Python version.
    pub fn python_version(&self) -> &str {
        &self.python_version
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut()
            .insert(flotilla_proto::auth::HEADER, self.auth.clone());
        r.set_timeout(Duration::from_secs(30));
        r
    }

    /// Makes a join code for `uses` machines, valid `expires_secs`.
    pub async fn invite(&mut self, uses: u32, expires_secs: u64) -> anyhow::Result<Invite> {
        let request = self.request(pb::InviteRequest { uses, expires_secs });
        let reply = self
            .client
            .invite(request)
            .await
            .map_err(status_error)?
            .into_inner();
        Ok(Invite {
            code: reply.code,
            invite_id: reply.invite_id,
            expires_unix: reply.expires_unix,
            // What the head applied, not what was asked (an older head says 0).
            uses: if reply.uses == 0 { uses } else { reply.uses },
        })
    }

    /// Withdraws a join code; false when it was withdrawn already.
    pub async fn revoke_invite(&mut self, invite_id: &str) -> anyhow::Result<bool> {
        let request = self.request(pb::RevokeInviteRequest {
            invite_id: invite_id.to_string(),
        });
        Ok(self
            .client
            .revoke_invite(request)
            .await
            .map_err(status_error)?
            .into_inner()
            .revoked)
    }

    /// The join codes the head made.
    pub async fn invites(&mut self) -> anyhow::Result<Vec<InviteRow>> {
        let request = self.request(pb::ListInvitesRequest {});
        let invites = self
            .client
            .list_invites(request)
            .await
            .map_err(status_error)?
            .into_inner()
            .invites;
        Ok(invites
            .into_iter()
            .map(|i| InviteRow {
                invite_id: i.invite_id,
                state: i.state,
                created_unix: i.created_unix,
                expires_unix: i.expires_unix,
                uses: i.uses,
                uses_left: i.uses_left,
                revoked_unix: (i.revoked_unix > 0).then_some(i.revoked_unix),
                joined: i.joined,
            })
            .collect())
    }

    /// Every node of the fleet.
    pub async fn nodes(&mut self) -> anyhow::Result<Vec<NodeRow>> {
        let request = self.request(pb::ClusterRequest {});
        let snap = self
            .client
            .cluster(request)
            .await
            .map_err(status_error)?
            .into_inner();
        Ok(snap
            .nodes
            .into_iter()
            .map(|n| {
                let reason = n.reason.unwrap_or_default();
                let python = (!n.python_version.is_empty()).then_some(n.python_version);
                NodeRow {
                    python_differs: python.as_ref().map(|p| *p != self.python_version),
                    python_version: python,
                    node_id: n.node_id,
                    name: n.name,
                    state: match n.state {
                        0 => flotilla_proto::state::CONNECTING,
                        s => flotilla_proto::state::name_of(s),
                    },
                    reason_code: reason.code,
                    reason_en: reason.text_en,
                    reason_es: reason.text_es,
                    cpus_advertised: n.cpus_advertised,
                    cpus_total: n.cpus_total,
                    owner_active: n.owner_active,
                    battery_percent: n.battery_percent,
                    last_seen_unix_ms: n.last_seen_unix_ms,
                }
            })
            .collect())
    }

    /// Removes a node from the fleet; returns its id and name.
    pub async fn revoke(&mut self, node: &str) -> anyhow::Result<(String, String)> {
        let request = self.request(pb::RevokeRequest {
            node: node.to_string(),
        });
        let reply = self
            .client
            .revoke(request)
            .await
            .map_err(status_error)?
            .into_inner();
        Ok((reply.node_id, reply.name))
    }

    /// Sends a pause or a resume to a node (by name or id).
    pub async fn command(&mut self, node: &str, command: NodeCommand) -> anyhow::Result<Sent> {
        let command = match command {
            NodeCommand::Pause {
                finish,
                until_unix_ms,
            } => Cmd::Pause(pb::Pause {
                until_unix_ms,
                mode: if finish {
                    pb::PauseMode::Finish
                } else {
                    pb::PauseMode::Now
                } as i32,
                reason: None,
            }),
            NodeCommand::Resume => Cmd::Resume(pb::Resume {}),
        };
        let request = self.request(pb::NodeCommandRequest {
            node: node.to_string(),
            command: Some(pb::HeadCommand {
                command: Some(command),
            }),
        });
        let reply = self
            .client
            .command(request)
            .await
            .map_err(status_error)?
            .into_inner();
        Ok(Sent {
            node_id: reply.node_id,
            name: reply.name,
            delivered: reply.delivered,
        })
    }
}

/// The head's own message, without gRPC's wrapping.
fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// Replaces the cluster's Ray token in the store (the head must be stopped); returns the
/// store's backend name.
pub fn rotate_ray_token() -> anyhow::Result<String> {
    let (dirs, _, store) = crate::secrets::load_store()?;
    let lock = dirs.state.join("head.lock");
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock)
        && let Err(std::fs::TryLockError::WouldBlock) = file.try_lock()
    {
        anyhow::bail!(
            "the head is running: stop it first (Ctrl-C in its terminal), rotate, then start it again"
        );
    }
    let token = flotilla_ray::RayToken::generate();
    store.set(
        flotilla_head::RAY_TOKEN_SECRET,
        &flotilla_secrets::Secret::from(token.expose()),
    )?;
    Ok(store.backend_name())
}
