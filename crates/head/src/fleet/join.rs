//! Enrollment: a machine joining with a join code (all or nothing: the code's use and the new
//! node are one registry transaction), its confirmation or undoing, and the head's own worker
//! enrolled without a code.

use std::time::SystemTime;

use flotilla_proto::v1 as pb;
use flotilla_secrets::Secret;
use rand::RngCore;

use super::{CONFIRM_JOIN_WITHIN, ControlPlane, FleetError, blocking, reason};
use crate::registry::{self, NodeId, NodeRecord};

/// A join request, checked: what the machine asks for.
#[derive(Debug)]
pub(super) struct Joining {
    /// Trimmed, and acceptable as a node name.
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpus: u32,
    pub secret: Secret,
    /// The node this machine was, with its current credential: proof that lets it keep its
    /// name.
    pub previous: Option<(NodeId, Secret)>,
    /// The agent will confirm that it stored its credential (`FinishJoin`).
    pub confirms: bool,
    pub python_versions: Vec<String>,
    pub python_downloads: bool,
}

impl Joining {
    /// Checks a request's name and texts; refuses what the registry would not store.
    pub(super) fn of(req: pb::JoinRequest) -> Result<Joining, FleetError> {
        let name = req.node_name.trim().to_string();
        if name.is_empty() {
            return Err(FleetError::InvalidArgument("the node name is empty".into()));
        }
        registry::check_node_name(&name).map_err(enroll_error)?;
        check_text("hostname", &req.hostname)?;
        check_text("operating system", &req.os)?;
        check_text("architecture", &req.arch)?;
        let previous = match req.previous {
            Some(p) => Some((
                p.node_id.parse::<i64>().map(NodeId).map_err(|_| {
                    FleetError::InvalidArgument("the previous node id is not a number".into())
                })?,
                Secret::from_bytes(p.credential),
            )),
            None => None,
        };
        Ok(Joining {
            name,
            hostname: req.hostname,
            os: req.os,
            arch: req.arch,
            cpus: req.cpus,
            secret: Secret::from_bytes(req.join_secret),
            previous,
            confirms: req.confirms,
            python_versions: req.python_versions,
            python_downloads: req.python_downloads,
        })
    }
}

/// A machine that joined: its node, credential and name, and why it did not get the name it
/// asked for.
#[derive(Debug)]
pub(super) struct Joined {
    pub id: NodeId,
    pub credential: Secret,
    pub name: String,
    pub notice: Option<pb::Reason>,
}

impl ControlPlane {
    /// Enrolls a node of the head's own machine without an invite (the local worker of
    /// `flotilla up`): returns its id, the name it got and a fresh credential, kept in memory by
    /// the caller. The head's own earlier worker of the same name is replaced; a joined machine
    /// that holds the name keeps it, and this node gets another one.
    pub async fn enroll_local(
        &self,
        name: &str,
        cpus: u32,
    ) -> Result<(NodeId, String, Secret), FleetError> {
        let credential = new_credential();
        let registry = self.registry();
        let (name, cred) = (name.to_string(), credential.clone());
        let (record, replaced) = blocking(move || {
            let hostname = flotilla_host::hostname();
            let node = registry::NewNode {
                name: &name,
                hostname: &hostname,
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
                cpus,
            };
            let enrolled = registry
                .enroll(&node, &cred, registry::Admission::Local, SystemTime::now())
                .map_err(redeem_error)?;
            Ok((new_record(&registry, enrolled.id)?, enrolled.replaced))
        })
        .await?;
        let (id, name) = (record.id, record.name.clone());
        self.insert(record, replaced);
        Ok((id, name, credential))
    }

    /// Enrolls a machine with a join code. A machine whose Pythons cannot run the cluster's
    /// is refused after the code is checked, without using it; a join that will be confirmed
    /// stays out of the live table until it is.
    pub(super) async fn join(&self, joining: Joining) -> Result<Joined, FleetError> {
        let cluster_python = &self.inner.config.ray.python_version;
        let refusal = python_refusal(
            &joining.python_versions,
            joining.python_downloads,
            cluster_python,
        );
        let credential = new_credential();
        let registry = self.registry();
        let (pending, wanted, hostname) = (
            joining.confirms,
            joining.name.clone(),
            joining.hostname.clone(),
        );
        let cred = credential.clone();
        let (record, enrolled) = blocking(move || {
            if let Some(why) = refusal {
                // Said only to holders of a usable code, and the code stays unused.
                registry
                    .check_invite(&joining.secret, SystemTime::now())
                    .map_err(redeem_error)?;
                return Err(FleetError::FailedPrecondition(why));
            }
            enroll_joiner(&registry, &joining, &cred)
        })
        .await?;
        let id = record.id;
        let notice = enrolled.name_held_by.map(|holder| {
            self.tell_name_taken(holder, &hostname, &wanted, &enrolled.name);
            name_taken(&wanted, holder, &enrolled.name)
        });
        if !pending {
            self.happened(super::Happening::Joined {
                name: record.name.clone(),
                hostname: record.hostname.clone(),
            });
            self.insert(record, enrolled.replaced);
        }
        tracing::info!(node = %id, name = enrolled.name, pending, "node joined");
        Ok(Joined {
            id,
            credential,
            name: enrolled.name,
            notice,
        })
    }

    /// The agent's word on a pending join: it stored its credential (`kept`), and the join
    /// becomes final, or it could not, and the join is undone.
    pub(super) async fn finish_join(
        &self,
        id: NodeId,
        credential: Secret,
        kept: bool,
    ) -> Result<(), FleetError> {
        let registry = self.registry();
        let confirmed = blocking(move || {
            let auth = |e: registry::AuthError| match e {
                registry::AuthError::Registry(e) => FleetError::internal(e),
                e => FleetError::Unauthenticated(format!(
                    "{e} (a join not confirmed within {} s is undone; join again)",
                    CONFIRM_JOIN_WITHIN.as_secs()
                )),
            };
            if !kept {
                registry.abandon_join(id, &credential).map_err(auth)?;
                return Ok(None);
            }
            registry.confirm_join(id, &credential).map_err(auth)
        })
        .await?;
        if let Some((record, replaced)) = confirmed {
            self.confirmed(record, replaced);
        } else if !kept {
            tracing::info!(node = %id, "join undone: the machine could not keep its credential");
        }
        Ok(())
    }
}

/// The registry's half of a join (blocking): joins whose agents never confirmed are undone
/// first, so their names and uses are free again; then the code is used and the node made.
fn enroll_joiner(
    registry: &registry::Registry,
    joining: &Joining,
    credential: &Secret,
) -> Result<(NodeRecord, registry::Enrolled), FleetError> {
    registry
        .expire_pending(SystemTime::now(), CONFIRM_JOIN_WITHIN)
        .map_err(FleetError::internal)?;
    let node = registry::NewNode {
        name: &joining.name,
        hostname: &joining.hostname,
        os: &joining.os,
        arch: &joining.arch,
        cpus: joining.cpus,
    };
    let admission = registry::Admission::Invite {
        secret: &joining.secret,
        previous: joining.previous.as_ref().map(|(id, c)| (*id, c)),
        pending: joining.confirms,
    };
    let enrolled = registry
        .enroll(&node, credential, admission, SystemTime::now())
        .map_err(redeem_error)?;
    Ok((new_record(registry, enrolled.id)?, enrolled))
}

/// The record of a node just enrolled.
fn new_record(registry: &registry::Registry, id: NodeId) -> Result<NodeRecord, FleetError> {
    registry
        .node(id)
        .map_err(FleetError::internal)?
        .ok_or_else(|| FleetError::Internal("the new node vanished".into()))
}

/// What a joiner is told when the name it asked for is `holder`'s, and it got `given`.
fn name_taken(wanted: &str, holder: NodeId, given: &str) -> pb::Reason {
    let name = wanted;
    reason(
        "name_taken",
        &format!(
            "The name {name:?} belongs to another machine of the fleet (node {holder}), so this \
             one is {given:?}. To take the name, the fleet's admin revokes node {holder} \
             (`flotilla revoke {holder}`) and this machine joins again with `--name {name}`."
        ),
        &format!(
            "El nombre {name:?} es de otra máquina de la flota (nodo {holder}), así que esta se \
             llama {given:?}. Para quedarse con el nombre, el administrador revoca el nodo \
             {holder} (`flotilla revoke {holder}`) y esta máquina se vuelve a unir con \
             `--name {name}`."
        ),
    )
}

/// A join code the registry did not take, as the joiner is told.
fn redeem_error(e: registry::RedeemError) -> FleetError {
    let denied = |m: &str| FleetError::PermissionDenied(m.into());
    match e {
        registry::RedeemError::Unknown => denied(
            "the head does not know this join code (it was made by another head, or mistyped); \
             ask for a new one",
        ),
        registry::RedeemError::Expired => denied(
            "this join code has expired; ask the head's admin for a new one (`flotilla invite`)",
        ),
        registry::RedeemError::UsedUp => denied(
            "this join code has already been used as many times as it allows; ask for a new \
             one (`flotilla invite --uses N`)",
        ),
        registry::RedeemError::Withdrawn => {
            denied("this join code has been withdrawn by the head's admin; ask for a new one")
        }
        registry::RedeemError::Registry(e) => enroll_error(e),
    }
}

/// A registry error of an enrollment as the joiner sees it: a name or field it sent that is
/// not acceptable is its to fix.
fn enroll_error(e: registry::Error) -> FleetError {
    match e {
        registry::Error::Invalid { .. } => FleetError::InvalidArgument(e.to_string()),
        e => FleetError::internal(e),
    }
}

fn new_credential() -> Secret {
    let mut credential = vec![0u8; 32];
    rand::rng().fill_bytes(&mut credential);
    Secret::from_bytes(credential)
}

fn check_text(what: &str, value: &str) -> Result<(), FleetError> {
    if value.chars().count() > registry::MAX_TEXT_CHARS || value.chars().any(char::is_control) {
        return Err(FleetError::InvalidArgument(format!(
            "the {what} must be at most {} characters, without control characters",
            registry::MAX_TEXT_CHARS
        )));
    }
    Ok(())
}

/// Why a machine offering `offered` Pythons (and downloads, or not) cannot run a node of a
/// cluster on Python `cluster` (`3.11.7`): Ray accepts another patch of the same minor, never
/// another minor. `None` when it can, or when the machine did not say (an older agent).
pub fn python_refusal(offered: &[String], downloads: bool, cluster: &str) -> Option<String> {
    let minor = flotilla_ray::versions::minor_of;
    let wanted = minor(cluster);
    if offered.is_empty() || downloads || offered.iter().any(|v| minor(v) == wanted) {
        return None;
    }
    let mut has: Vec<&str> = offered.iter().map(String::as_str).collect();
    has.sort_unstable();
    has.dedup();
    Some(format!(
        "this machine has Python {} and cannot download another, but the fleet runs Python \
         {cluster}, and Ray needs the same minor version ({wanted}) on every node. Install Python \
         {wanted} (from python.org, `brew install python@{wanted}`, `apt install python{wanted}`, \
         or `uv python install {cluster}`) and join again with the same code: it was not used",
        has.join(", ")
    ))
}
