//! The `Fleet` gRPC service: reads each request, calls the control plane, and answers. The
//! only place in the control plane that speaks `tonic::Status` ([`status`]).

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_proto::v1::fleet_server::Fleet;
use flotilla_proto::v1::{self as pb, head_command::Command as Cmd};
use flotilla_secrets::Secret;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::join::Joining;
use super::{CONFIRM_JOIN_WITHIN, ControlPlane, DEFAULT_INVITE_TTL, FleetError};
use crate::registry::{self, NodeId};

/// A control-plane refusal as the wire carries it.
fn status(e: FleetError) -> Status {
    match e {
        FleetError::Unauthenticated(m) => Status::unauthenticated(m),
        FleetError::PermissionDenied(m) => Status::permission_denied(m),
        FleetError::InvalidArgument(m) => Status::invalid_argument(m),
        FleetError::NotFound(m) => Status::not_found(m),
        FleetError::FailedPrecondition(m) => Status::failed_precondition(m),
        FleetError::ResourceExhausted(m) => Status::resource_exhausted(m),
        FleetError::Internal(m) => Status::internal(m),
    }
}

impl From<FleetError> for Status {
    fn from(e: FleetError) -> Status {
        status(e)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The stream of a channel whose refusals become statuses.
fn stream_of<T: Send + 'static>(rx: mpsc::Receiver<Result<T, FleetError>>) -> BoxStream<T> {
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| r.map_err(status)))
}

fn node_id(text: &str, what: &str) -> Result<NodeId, Status> {
    text.parse::<i64>()
        .map(NodeId)
        .map_err(|_| Status::invalid_argument(format!("the {what} is not a number")))
}

impl ControlPlane {
    /// Carries an authenticated node's session: its reports in, acknowledgements and commands
    /// out, until either side hangs up, a report is refused, or the head stops.
    fn run_session(
        &self,
        node: NodeId,
        id: u64,
        mut inbound: Streaming<pb::AgentReport>,
        tx: mpsc::Sender<Result<pb::HeadCommand, FleetError>>,
    ) {
        let this = self.clone();
        let closing = self.inner.closing.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = closing.cancelled() => break,
                    message = inbound.message() => match message {
                        Ok(Some(report)) => match this.apply_report(node, report).await {
                            Ok(Some(ack)) => {
                                if tx.send(Ok(ack)).await.is_err() {
                                    break;
                                }
                            }
                            Ok(None) => {}
                            Err(refusal) => {
                                let _ = tx.send(Err(refusal)).await;
                                break;
                            }
                        },
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            this.session_ended(node, id).await;
            tracing::info!(node = %node, "session ended");
        });
    }
}

#[tonic::async_trait]
impl Fleet for ControlPlane {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinReply>, Status> {
        self.take_join_token(request.remote_addr().map(|a| a.ip()))?;
        let joining = Joining::of(request.into_inner())?;
        let joined = ControlPlane::join(self, joining).await?;
        Ok(Response::new(pb::JoinReply {
            node_id: joined.id.to_string(),
            node_credential: joined.credential.expose().to_vec(),
            node_name: joined.name,
            notice: joined.notice,
            confirm_within_secs: CONFIRM_JOIN_WITHIN.as_secs(),
            ray: Some(self.ray_spec()),
            policy: Some(pb::PolicyDefaults {
                toml: self.inner.config.policy_toml.clone(),
            }),
        }))
    }

    async fn finish_join(
        &self,
        request: Request<pb::FinishJoinRequest>,
    ) -> Result<Response<pb::FinishJoinReply>, Status> {
        let req = request.into_inner();
        let id = node_id(&req.node_id, "node id")?;
        let credential = Secret::from_bytes(req.node_credential);
        ControlPlane::finish_join(self, id, credential, req.kept).await?;
        Ok(Response::new(pb::FinishJoinReply {}))
    }

    type SessionStream = BoxStream<pb::HeadCommand>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentReport>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let record = self.authenticate(request.metadata()).await?;
        let (tx, rx) = mpsc::channel(32);
        let id = self.open_session(&record, &tx);
        self.run_session(record.id, id, request.into_inner(), tx);
        Ok(Response::new(stream_of(rx)))
    }

    async fn cluster(
        &self,
        request: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::ClusterSnapshot>, Status> {
        self.check_reader(request.metadata()).await?;
        Ok(Response::new(self.snapshot()))
    }

    type WatchClusterStream = BoxStream<pb::ClusterSnapshot>;

    async fn watch_cluster(
        &self,
        request: Request<pb::ClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        self.check_reader(request.metadata()).await?;
        let (tx, rx) = mpsc::channel(2);
        let mut version = self.subscribe();
        let this = self.clone();
        let closing = self.inner.closing.clone();
        tokio::spawn(async move {
            loop {
                version.borrow_and_update();
                if closing.is_cancelled() {
                    return;
                }
                if tx.send(Ok(this.snapshot())).await.is_err() || version.changed().await.is_err() {
                    return;
                }
                // At most four snapshots a second, however busy the fleet.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(Response::new(stream_of(rx)))
    }

    async fn invite(
        &self,
        request: Request<pb::InviteRequest>,
    ) -> Result<Response<pb::InviteReply>, Status> {
        self.check_admin(request.metadata())?;
        let req = request.into_inner();
        let ttl = if req.expires_secs == 0 {
            DEFAULT_INVITE_TTL
        } else {
            Duration::from_secs(req.expires_secs)
        };
        let uses = if req.uses == 0 { 1 } else { req.uses };
        let made = ControlPlane::invite(self, uses, ttl).await?;
        Ok(Response::new(pb::InviteReply {
            code: made.code,
            expires_unix: made.expires_unix,
            invite_id: made.id.to_string(),
            uses: made.uses,
        }))
    }

    async fn list_invites(
        &self,
        request: Request<pb::ListInvitesRequest>,
    ) -> Result<Response<pb::ListInvitesReply>, Status> {
        self.check_admin(request.metadata())?;
        let now = SystemTime::now();
        let invites = self
            .invites()
            .await?
            .into_iter()
            .map(|i| invite_record(i, now))
            .collect();
        Ok(Response::new(pb::ListInvitesReply { invites }))
    }

    async fn revoke_invite(
        &self,
        request: Request<pb::RevokeInviteRequest>,
    ) -> Result<Response<pb::RevokeInviteReply>, Status> {
        self.check_admin(request.metadata())?;
        let revoked = ControlPlane::revoke_invite(self, &request.into_inner().invite_id).await?;
        if revoked {
            self.changed();
        }
        Ok(Response::new(pb::RevokeInviteReply { revoked }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeReply>, Status> {
        self.check_admin(request.metadata())?;
        let (id, name) = ControlPlane::revoke(self, &request.into_inner().node).await?;
        Ok(Response::new(pb::RevokeReply {
            node_id: id.to_string(),
            name,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesReply>, Status> {
        self.check_admin(request.metadata())?;
        Ok(Response::new(pb::ListNodesReply {
            nodes: self.node_records(),
        }))
    }

    async fn command(
        &self,
        request: Request<pb::NodeCommandRequest>,
    ) -> Result<Response<pb::NodeCommandReply>, Status> {
        self.check_admin(request.metadata())?;
        let req = request.into_inner();
        let command = req
            .command
            .filter(|c| matches!(c.command, Some(Cmd::Pause(_) | Cmd::Resume(_))))
            .ok_or_else(|| {
                Status::invalid_argument("only pause and resume can be sent to a node")
            })?;
        let (id, name, delivered) = ControlPlane::command(self, &req.node, command)?;
        Ok(Response::new(pb::NodeCommandReply {
            node_id: id.to_string(),
            name,
            delivered,
        }))
    }
}

/// An invite as `ListInvites` answers, its state as of `now`.
fn invite_record(i: registry::InviteRecord, now: SystemTime) -> pb::InviteRecord {
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    pb::InviteRecord {
        invite_id: i.id.to_string(),
        created_unix: unix(i.created_at),
        expires_unix: unix(i.expires_at),
        uses: i.uses,
        uses_left: i.uses_left,
        revoked_unix: i.revoked_at.map_or(0, unix),
        state: i.status(now).to_string(),
        joined: i.joined,
    }
}
