//! Joining a fleet with a join code, and what a joined machine keeps.
//!
//! [`join`] checks the code locally (format, expiry), opens a TLS connection that accepts only
//! the certificate whose fingerprint the code carries, and calls `Join`. The answer splits in
//! two: the secrets (the node credential and the cluster's Ray token) go to the secret store,
//! and the rest ([`Enrollment`]: node id and name, the head's addresses and fingerprint, the
//! Ray versions and GCS addresses) to `enrollment.json` in the config directory, which holds
//! nothing secret.
//!
//! Joining is all or nothing: the head keeps the enrollment pending until [`finish`] says the
//! credential was stored (or could not be, and the head forgets the node and gives the code's
//! use back). A machine that joins again sends its current credential as proof that it is the
//! node of its name; without it a taken name goes to the other machine and this one gets
//! another name, which the head's answer says.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_host::Dirs;
use flotilla_proto::transport::{self, ConnectError};
use flotilla_proto::v1::{self as pb, fleet_client::FleetClient};
use flotilla_proto::{Fingerprint, HeadAddress, JoinCode};
use flotilla_ray::RayToken;
use flotilla_secrets::{Secret, SecretStore};
use serde::{Deserialize, Serialize};

/// The secret-store name of this machine's node credential.
pub const CREDENTIAL_SECRET: &str = "flotilla.node-credential";
/// The secret-store name of the cluster's Ray token (the same name the head uses).
pub const RAY_TOKEN_SECRET: &str = "flotilla.ray-token";

/// What a joined machine knows of its fleet (nothing secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Enrollment {
    pub node_id: String,
    pub node_name: String,
    /// The control plane's addresses (`host:port`), in order of preference.
    pub head: Vec<String>,
    /// The head certificate's SHA-256 fingerprint, hex.
    pub fingerprint: String,
    pub gcs_addresses: Vec<String>,
    pub ray_version: String,
    pub python_version: String,
    /// The fleet's `[policy]` defaults.
    #[serde(default)]
    pub policy_toml: String,
    pub joined_unix: u64,
}

/// Why joining failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Code(#[from] flotilla_proto::JoinCodeError),
    #[error(
        "this join code expired at {}; ask the head's admin for a new one (`flotilla invite`)",
        flotilla_host::clock::format_utc(*.at)
    )]
    Expired { at: u64 },
    #[error(
        "{0}\n  Someone may be impersonating the head, or the head was reinstalled; ask its \
         admin for a new code and do not join this one"
    )]
    Impostor(String),
    #[error(
        "{0}\n  Check that the head is running (`flotilla up` on its machine), that this \
         machine can reach it (same LAN or tailnet), and that port {1} is open"
    )]
    Unreachable(ConnectError, u16),
    #[error("the head refused to let this machine join: {0}")]
    Refused(String),
    #[error("{0}")]
    Tailnet(String),
    #[error("the head's answer is incomplete ({0}); the head may run a different Flotilla version")]
    BadReply(&'static str),
}

/// The path of `enrollment.json`.
pub fn path(dirs: &Dirs) -> PathBuf {
    dirs.config.join("enrollment.json")
}

impl Enrollment {
    /// The enrollment of this machine, if it joined a fleet.
    pub fn load(dirs: &Dirs) -> std::io::Result<Option<Enrollment>> {
        match std::fs::read(path(dirs)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is unreadable ({e}); join again", path(dirs).display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores the enrollment: secrets first, so a saved `enrollment.json` always has them.
    pub fn save(
        &self,
        dirs: &Dirs,
        store: &SecretStore,
        credential: &Secret,
        token: &RayToken,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        store.set(CREDENTIAL_SECRET, credential)?;
        store.set(RAY_TOKEN_SECRET, &Secret::from(token.expose()))?;
        self.write(dirs)
    }

    fn write(&self, dirs: &Dirs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        std::fs::create_dir_all(&dirs.config)?;
        let tmp = path(dirs).with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path(dirs))?;
        Ok(())
    }

    /// Takes the head's new Ray settings: the token to the store, the rest to the file.
    pub fn update_ray(
        &mut self,
        dirs: &Dirs,
        store: &SecretStore,
        ray: &crate::session::RaySettings,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        store.set(RAY_TOKEN_SECRET, &Secret::from(ray.token.expose()))?;
        self.gcs_addresses = ray.gcs_addresses.clone();
        self.ray_version = ray.ray_version.clone();
        self.python_version = ray.python_version.clone();
        self.write(dirs)
    }

    /// Points this enrollment at `address`, the head's control plane after a move (a head
    /// restored on another machine), once the head there has proved to be the same one: the
    /// TLS handshake accepts only the pinned fingerprint, and the head must know this node by
    /// its credential. The head's current Ray settings come with its answer (the session's
    /// first command), so the node joins Ray where the head now runs. The new address goes
    /// first; the old ones stay after it. No new code or credential is involved, so nothing but
    /// the real head can take the worker over.
    pub async fn follow_head(
        &mut self,
        dirs: &Dirs,
        store: &SecretStore,
        address: &HeadAddress,
        credential: &Secret,
    ) -> Result<(), String> {
        let new = address.to_string();
        // Only the new address is tried: an answer from an old one proves nothing about it.
        let fingerprint = self
            .fingerprint()
            .ok_or("the head's fingerprint in enrollment.json is unreadable: join again")?;
        let channel = transport::connect(
            std::slice::from_ref(address),
            fingerprint,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| match e {
            ConnectError::Impostor(why) => format!(
                "{why}\n  The head at {new} is not the one this machine joined: nothing was \
                 changed. Check the address (the `Control plane` line `flotilla up` prints)"
            ),
            ConnectError::Unreachable { .. } => format!(
                "{e}\n  Check that the head runs there (`flotilla up`) and that its control \
                 port is open; nothing was changed"
            ),
        })?;
        let refused = |why: &str| {
            format!(
                "the head at {new} is this fleet's head but refuses this node ({why}): nothing \
                 was changed; join again with a new code (`flotilla invite` on the head)"
            )
        };
        // A session with no report: the head's first command is always `UpdateRay`.
        let (_reports, rx) = tokio::sync::mpsc::channel::<pb::AgentReport>(1);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let auth = crate::session::node_authorization(&self.node_id, credential);
        request.metadata_mut().insert(
            flotilla_proto::auth::HEADER,
            auth.parse()
                .map_err(|_| "the node credential is malformed".to_string())?,
        );
        let asked = async {
            let mut inbound = FleetClient::new(channel)
                .session(request)
                .await
                .map_err(|s| refused(s.message()))?
                .into_inner();
            while let Some(command) = inbound.message().await.map_err(|s| refused(s.message()))? {
                if let Some(pb::head_command::Command::UpdateRay(u)) = command.command {
                    return u
                        .ray
                        .as_ref()
                        .and_then(crate::session::RaySettings::from_spec)
                        .ok_or_else(|| refused("its Ray settings are incomplete"));
                }
            }
            Err(refused("it ended the session"))
        };
        let ray = tokio::time::timeout(Duration::from_secs(15), asked)
            .await
            .map_err(|_| {
                format!("the head at {new} did not answer in 15 s: nothing was changed")
            })??;
        let mut moved = self.clone();
        moved.head.retain(|a| *a != new);
        moved.head.insert(0, new);
        moved
            .update_ray(dirs, store, &ray)
            .map_err(|e| format!("cannot update {}: {e}", path(dirs).display()))?;
        *self = moved;
        Ok(())
    }

    /// Forgets the enrollment and its credential (after `Leave` or `flotilla leave`).
    pub fn forget(dirs: &Dirs, store: &SecretStore) {
        let _ = std::fs::remove_file(path(dirs));
        let _ = store.remove(CREDENTIAL_SECRET);
    }

    /// The head's addresses, parsed.
    pub fn addresses(&self) -> Vec<HeadAddress> {
        self.head.iter().filter_map(|a| a.parse().ok()).collect()
    }

    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint.parse().ok()
    }

    /// The fleet as its control plane sees it (every node's state and reason, totals, jobs),
    /// read with this node's credential: what a worker's desktop app shows.
    pub async fn cluster(&self, credential: &Secret) -> Result<pb::ClusterSnapshot, String> {
        let fingerprint = self
            .fingerprint()
            .ok_or("the head's fingerprint in enrollment.json is unreadable: join again")?;
        let channel = transport::connect(&self.addresses(), fingerprint, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        let mut client = FleetClient::new(channel);
        let mut request = tonic::Request::new(pb::ClusterRequest::default());
        request.set_timeout(Duration::from_secs(10));
        let auth = crate::session::node_authorization(&self.node_id, credential);
        request.metadata_mut().insert(
            "authorization",
            auth.parse()
                .map_err(|_| "the node credential is malformed".to_string())?,
        );
        client
            .cluster(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_string())
    }
}

/// What this machine tells the head when it joins.
#[derive(Debug, Clone)]
pub struct Machine {
    pub node_name: String,
    pub hostname: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// The Python versions this machine can run a node on (`3.11.2`), and whether it can
    /// download others: the head refuses a machine that cannot run its Python's minor version
    /// before the code is used. Empty: not known.
    pub python_versions: Vec<String>,
    pub python_downloads: bool,
    /// The node this machine is now (its id and credential), when it joins again: proof that
    /// lets it keep its name. Sent only to the head that issued it (same fingerprint).
    pub previous: Option<(Enrollment, Secret)>,
}

impl Machine {
    /// This machine, named `node_name`.
    pub fn this(node_name: String, cpus: Option<u32>) -> Machine {
        Machine {
            node_name,
            hostname: flotilla_host::hostname(),
            cpus: cpus.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
            }),
            memory_bytes: 0,
            python_versions: Vec::new(),
            python_downloads: false,
            previous: None,
        }
    }
}

/// What joining gave: the enrollment, the credential and the Ray token to store, and what the
/// head said about the join. Pass it to [`finish`] once the secrets are stored (or could not
/// be).
#[derive(Debug)]
pub struct Joined {
    pub enrollment: Enrollment,
    pub credential: Secret,
    pub token: RayToken,
    /// Something the owner should read (the name asked for was taken, so the node has another).
    pub notice: Option<String>,
    channel: tonic::transport::Channel,
}

/// Joins the fleet of `code` (found in the text around it, see [`JoinCode::find`]). The head
/// keeps the enrollment pending: store the secrets ([`Enrollment::save`]), then call
/// [`finish`].
pub async fn join(code: &str, machine: &Machine) -> Result<Joined, JoinError> {
    let code = JoinCode::find(code)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if code.is_expired(now) {
        return Err(JoinError::Expired {
            at: code.expires_unix().unwrap_or(0),
        });
    }
    let port = code.addresses()[0].port();
    crate::session::precheck(code.addresses())
        .await
        .map_err(JoinError::Tailnet)?;
    let channel = transport::connect(
        code.addresses(),
        *code.fingerprint(),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| match e {
        ConnectError::Impostor(m) => JoinError::Impostor(m),
        e => JoinError::Unreachable(e, port),
    })?;
    let mut client = FleetClient::new(channel.clone());
    // The proof goes only to the head that issued it.
    let previous = machine
        .previous
        .as_ref()
        .filter(|(e, _)| e.fingerprint == code.fingerprint().to_hex())
        .map(|(e, credential)| pb::PreviousNode {
            node_id: e.node_id.clone(),
            credential: credential.expose().to_vec(),
        });
    let mut request = tonic::Request::new(pb::JoinRequest {
        join_secret: code.secret().to_vec(),
        node_name: machine.node_name.clone(),
        hostname: machine.hostname.clone(),
        previous,
        confirms: true,
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        cpus: machine.cpus,
        memory_bytes: machine.memory_bytes,
        python_versions: machine.python_versions.clone(),
        python_downloads: machine.python_downloads,
        agent_version: env!("CARGO_PKG_VERSION").into(),
    });
    request.set_timeout(Duration::from_secs(30));
    let reply = client
        .join(request)
        .await
        .map_err(|s| JoinError::Refused(s.message().to_string()))?
        .into_inner();
    let ray = reply.ray.ok_or(JoinError::BadReply("no Ray settings"))?;
    let token = RayToken::new(&ray.ray_token).ok_or(JoinError::BadReply("no Ray token"))?;
    if reply.node_credential.len() < 16 {
        return Err(JoinError::BadReply("no node credential"));
    }
    if ray.gcs_addresses.is_empty() {
        return Err(JoinError::BadReply("no Ray address"));
    }
    let node_name = if reply.node_name.is_empty() {
        machine.node_name.clone()
    } else {
        reply.node_name
    };
    let enrollment = Enrollment {
        node_id: reply.node_id,
        node_name,
        head: code.addresses().iter().map(ToString::to_string).collect(),
        fingerprint: code.fingerprint().to_hex(),
        gcs_addresses: ray.gcs_addresses,
        ray_version: ray.ray_version,
        python_version: ray.python_version,
        policy_toml: reply.policy.map(|p| p.toml).unwrap_or_default(),
        joined_unix: now,
    };
    Ok(Joined {
        enrollment,
        credential: Secret::from_bytes(reply.node_credential),
        token,
        notice: reply.notice.map(|n| n.text_en).filter(|t| !t.is_empty()),
        channel,
    })
}

/// Tells the head whether the join's secrets were stored (`kept`): the enrollment becomes
/// final, or the head forgets the node and gives the code's use back. If the head cannot be
/// told, it undoes an unconfirmed join by itself after a couple of minutes.
pub async fn finish(joined: &Joined, kept: bool) -> Result<(), JoinError> {
    let mut client = FleetClient::new(joined.channel.clone());
    let mut request = tonic::Request::new(pb::FinishJoinRequest {
        node_id: joined.enrollment.node_id.clone(),
        node_credential: joined.credential.expose().to_vec(),
        kept,
    });
    request.set_timeout(Duration::from_secs(15));
    client
        .finish_join(request)
        .await
        .map(|_| ())
        .map_err(|s| JoinError::Refused(s.message().to_string()))
}
