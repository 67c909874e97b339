//! The generated `Fleet` client and server talking over a real loopback connection (plain
//! HTTP/2 here; TLS is the head's and agent's business).

use std::pin::Pin;

use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::fleet_server::{Fleet, FleetServer};
use flotilla_proto::v1::{
    self, AgentReport, ClusterRequest, ClusterSnapshot, HeadCommand, InviteReply, InviteRequest,
    JoinReply, JoinRequest, ListNodesReply, ListNodesRequest, RevokeReply, RevokeRequest,
    head_command::Command,
};
use tonic::codegen::tokio_stream::{self, Stream, StreamExt, wrappers::TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Admits one secret; acknowledges every report; sends two snapshots.
struct TestHead;

#[tonic::async_trait]
impl Fleet for TestHead {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let r = request.into_inner();
        if r.join_secret != [1; 32] {
            return Err(Status::permission_denied("unknown join secret"));
        }
        Ok(Response::new(JoinReply {
            node_id: format!("n-{}", r.node_name),
            node_credential: vec![2; 32],
            ..Default::default()
        }))
    }

    async fn finish_join(
        &self,
        _: Request<v1::FinishJoinRequest>,
    ) -> Result<Response<v1::FinishJoinReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type SessionStream = BoxStream<HeadCommand>;

    async fn session(
        &self,
        request: Request<Streaming<AgentReport>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let acks = request.into_inner().map(|report| {
            report.map(|r| HeadCommand {
                command: Some(Command::Ack(v1::Ack { up_to_seq: r.seq })),
            })
        });
        Ok(Response::new(Box::pin(acks)))
    }

    async fn cluster(
        &self,
        _: Request<ClusterRequest>,
    ) -> Result<Response<ClusterSnapshot>, Status> {
        Ok(Response::new(snapshot(1)))
    }

    type WatchClusterStream = BoxStream<ClusterSnapshot>;

    async fn watch_cluster(
        &self,
        _: Request<ClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        let snapshots = tokio_stream::iter([Ok(snapshot(1)), Ok(snapshot(2))]);
        Ok(Response::new(Box::pin(snapshots)))
    }

    async fn invite(&self, _: Request<InviteRequest>) -> Result<Response<InviteReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn revoke(&self, _: Request<RevokeRequest>) -> Result<Response<RevokeReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_nodes(
        &self,
        _: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_invites(
        &self,
        _: Request<v1::ListInvitesRequest>,
    ) -> Result<Response<v1::ListInvitesReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn revoke_invite(
        &self,
        _: Request<v1::RevokeInviteRequest>,
    ) -> Result<Response<v1::RevokeInviteReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn command(
        &self,
        _: Request<v1::NodeCommandRequest>,
    ) -> Result<Response<v1::NodeCommandReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

fn snapshot(time_unix_ms: i64) -> ClusterSnapshot {
    ClusterSnapshot {
        time_unix_ms,
        ..Default::default()
    }
}

#[tokio::test]
async fn client_and_server_speak_fleet() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FleetServer::new(TestHead))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = FleetClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let joined = client
        .join(JoinRequest {
            join_secret: vec![1; 32],
            node_name: "studio".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.node_id, "n-studio");
    assert_eq!(joined.node_credential, vec![2; 32]);

    let refused = client
        .join(JoinRequest {
            join_secret: vec![0; 32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let reports = (1..=3).map(|seq| AgentReport {
        node_id: "n-studio".into(),
        seq,
        ..Default::default()
    });
    let acks: Vec<u64> = client
        .session(tokio_stream::iter(reports))
        .await
        .unwrap()
        .into_inner()
        .map(|c| match c.unwrap().command {
            Some(Command::Ack(a)) => a.up_to_seq,
            other => panic!("expected an ack, got {other:?}"),
        })
        .collect()
        .await;
    assert_eq!(acks, [1, 2, 3]);

    let watched: Vec<i64> = client
        .watch_cluster(ClusterRequest {})
        .await
        .unwrap()
        .into_inner()
        .map(|s| s.unwrap().time_unix_ms)
        .collect()
        .await;
    assert_eq!(watched, [1, 2]);

    let unimplemented = client.invite(InviteRequest::default()).await.unwrap_err();
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);

    server.abort();
}
