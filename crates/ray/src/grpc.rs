//! The few Ray gRPC calls Flotilla makes: live CPU resizing on a raylet, and draining, node
//! states and taking a node out of the node table on the GCS.
//!
//! The messages come from Flotilla's own minimal `.proto` files (`proto/`), whose names and field
//! numbers match Ray 2.60's wire format; fields Ray adds are skipped. Every call carries the
//! cluster token as `authorization: Bearer <token>` metadata and has a deadline, so a wrong
//! token, a missing call or a dead node turns into an [`Error`] that says what to do, never a
//! hang.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, RayToken, Result};

/// Code generated from `proto/*.proto`.
#[allow(clippy::all, missing_docs, missing_debug_implementations)]
pub mod proto {
    /// Package `ray.rpc`: the raylet's node manager.
    pub mod rpc {
        tonic::include_proto!("ray.rpc");

        /// Package `ray.rpc.autoscaler`: the GCS's autoscaler state service.
        pub mod autoscaler {
            tonic::include_proto!("ray.rpc.autoscaler");
        }
    }
}

use proto::rpc::autoscaler as pa;
use proto::rpc::autoscaler::autoscaler_state_service_client::AutoscalerStateServiceClient;
use proto::rpc::node_info_gcs_service_client::NodeInfoGcsServiceClient;
use proto::rpc::node_manager_service_client::NodeManagerServiceClient;

/// How long connecting and each call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

const RAYLET: &str = "raylet";
const GCS: &str = "GCS";

async fn channel(service: &'static str, addr: SocketAddr) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::RpcUnreachable {
            service,
            addr,
            detail: e.to_string(),
        })?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true);
    match tokio::time::timeout(CALL_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(Error::RpcUnreachable {
            service,
            addr,
            detail: error_chain(&e),
        }),
        Err(_) => Err(Error::RpcUnreachable {
            service,
            addr,
            detail: format!("no connection within {} s", CALL_TIMEOUT.as_secs()),
        }),
    }
}

/// The error and its sources on one line (tonic's transport errors hide the cause otherwise).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The bearer value for the token, marked sensitive so that it is never logged.
fn bearer(token: Option<&RayToken>) -> Option<MetadataValue<tonic::metadata::Ascii>> {
    token.and_then(|t| {
        let mut v: MetadataValue<_> = format!("Bearer {}", t.expose()).parse().ok()?;
        v.set_sensitive(true);
        Some(v)
    })
}

/// Where a call went, for its error.
#[derive(Debug, Clone, Copy)]
struct Target {
    service: &'static str,
    addr: SocketAddr,
    call: &'static str,
    /// What a Ray without this call lacks, for [`Error::RpcUnsupported`].
    feature: &'static str,
    /// Whether the call carries a token, for [`Error::RpcAuth`].
    with_token: bool,
}

impl Target {
    fn request<T>(
        &self,
        msg: T,
        auth: &Option<MetadataValue<tonic::metadata::Ascii>>,
    ) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(CALL_TIMEOUT);
        if let Some(v) = auth {
            req.metadata_mut().insert("authorization", v.clone());
        }
        req
    }

    /// Runs one call with a deadline and maps its failure to an [`Error`].
    async fn run<T>(
        &self,
        call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(self.status_error(&status)),
            Err(_) => Err(Error::RpcUnreachable {
                service: self.service,
                addr: self.addr,
                detail: format!(
                    "{} got no answer within {} s",
                    self.call,
                    CALL_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    fn status_error(&self, status: &tonic::Status) -> Error {
        let detail = if status.message().is_empty() {
            status.code().description().to_string()
        } else {
            status.message().to_string()
        };
        let (service, addr) = (self.service, self.addr);
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => Error::RpcAuth {
                service,
                addr,
                problem: if self.with_token {
                    "the token is wrong for this cluster"
                } else {
                    "no token was sent, and this cluster requires one"
                },
                detail,
            },
            Code::Unimplemented => Error::RpcUnsupported {
                service,
                addr,
                call: self.call,
                what: self.feature,
            },
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Error::RpcUnreachable {
                service,
                addr,
                detail: format!("{}: {detail}", self.call),
            },
            code => Error::Rpc {
                service,
                addr,
                call: self.call,
                code: format!("{code:?}"),
                detail,
            },
        }
    }
}

/// Client for one raylet's node manager (the node's `--node-manager-port`).
#[derive(Debug, Clone)]
pub struct RayletClient {
    addr: SocketAddr,
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    inner: NodeManagerServiceClient<Channel>,
}

impl RayletClient {
    /// Connects to the raylet at `addr`; fails within [`CALL_TIMEOUT`] if nothing answers.
    pub async fn connect(addr: SocketAddr, token: Option<RayToken>) -> Result<Self> {
        let ch = channel(RAYLET, addr).await?;
        Ok(RayletClient {
            addr,
            auth: bearer(token.as_ref()),
            inner: NodeManagerServiceClient::new(ch),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the CPUs the node advertises to `cpus`, live, and returns the node's CPU total as
    /// the raylet reports it afterwards. Growing always works. A shrink takes back only CPUs
    /// that are free at the time of the call, so running tasks are never touched: with every
    /// CPU busy the total stays as it was (Ray 2.60 does not remember the request), and the
    /// caller asks again later until the returned total is `cpus`.
    pub async fn resize_cpus(&mut self, cpus: f64) -> Result<f64> {
        if !(cpus.is_finite() && cpus >= 0.0) {
            return Err(Error::InvalidArgument {
                what: "CPU count",
                value: cpus.to_string(),
                expected: "a number of CPUs of 0 or more",
            });
        }
        let t = Target {
            service: RAYLET,
            addr: self.addr,
            call: "ResizeLocalResourceInstances",
            feature: "live resizing of a node's resources",
            with_token: self.auth.is_some(),
        };
        let req = t.request(
            proto::rpc::ResizeLocalResourceInstancesRequest {
                resources: [("CPU".to_string(), cpus)].into(),
            },
            &self.auth,
        );
        let reply = t
            .run(self.inner.resize_local_resource_instances(req))
            .await?;
        Ok(reply.total_resources.get("CPU").copied().unwrap_or(0.0))
    }

    /// Asks the raylet to start `count` Python workers now, bound to no job and to the empty
    /// runtime environment, so that the next job's first tasks on this node find a worker
    /// ready instead of waiting for one to start (a second or more of importing Ray). The
    /// raylet keeps them at least `keep_alive` while no task takes them. Returns once the
    /// raylet has taken the request; the workers start in the background.
    pub async fn prestart_workers(&mut self, count: u32, keep_alive: Duration) -> Result<()> {
        let t = Target {
            service: RAYLET,
            addr: self.addr,
            call: "PrestartWorkers",
            feature: "starting workers ahead of tasks",
            with_token: self.auth.is_some(),
        };
        let req = t.request(
            proto::rpc::PrestartWorkersRequest {
                language: proto::rpc::Language::Python as i32,
                job_id: Vec::new(),
                keep_alive_duration_secs: keep_alive.as_secs(),
                num_workers: u64::from(count),
            },
            &self.auth,
        );
        t.run(self.inner.prestart_workers(req)).await?;
        Ok(())
    }
}

/// Why a node is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    /// The machine is taken back: running tasks finish, no new ones arrive, then the node exits.
    Preemption,
    /// The node is idle and may go; Ray rejects this if the node is busy.
    IdleTermination,
}

/// Ray's answer to a drain request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReply {
    pub accepted: bool,
    /// Why Ray refused, when it did.
    pub rejection: String,
}

/// A node's state as the GCS's autoscaler view reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeLifecycle {
    Running,
    Idle,
    Draining,
    Dead,
    /// A value this version of Flotilla does not know.
    Other(i32),
}

impl NodeLifecycle {
    fn from_wire(v: i32) -> NodeLifecycle {
        match pa::NodeStatus::try_from(v) {
            Ok(pa::NodeStatus::Running) => NodeLifecycle::Running,
            Ok(pa::NodeStatus::Idle) => NodeLifecycle::Idle,
            Ok(pa::NodeStatus::Draining) => NodeLifecycle::Draining,
            Ok(pa::NodeStatus::Dead) => NodeLifecycle::Dead,
            _ => NodeLifecycle::Other(v),
        }
    }
}

/// One node of `GetClusterStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// The node id as hex, as the dashboard shows it.
    pub node_id_hex: String,
    pub instance_id: String,
    pub node_ip: String,
    pub state: NodeLifecycle,
    pub idle_ms: i64,
    pub total_resources: BTreeMap<String, f64>,
    pub available_resources: BTreeMap<String, f64>,
}

impl NodeState {
    pub fn cpus_total(&self) -> f64 {
        self.total_resources.get("CPU").copied().unwrap_or(0.0)
    }
}

/// Client for the GCS's autoscaler state service (the head's GCS port).
#[derive(Debug, Clone)]
pub struct GcsClient {
    addr: SocketAddr,
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    inner: AutoscalerStateServiceClient<Channel>,
    nodes: NodeInfoGcsServiceClient<Channel>,
}

impl GcsClient {
    /// Connects to the GCS at `addr`; fails within [`CALL_TIMEOUT`] if nothing answers.
    pub async fn connect(addr: SocketAddr, token: Option<RayToken>) -> Result<Self> {
        let ch = channel(GCS, addr).await?;
        Ok(GcsClient {
            addr,
            auth: bearer(token.as_ref()),
            inner: AutoscalerStateServiceClient::new(ch.clone()),
            nodes: NodeInfoGcsServiceClient::new(ch),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks Ray to drain the node `node_id_hex`. With [`DrainReason::Preemption`] its running
    /// tasks finish, no new ones are scheduled there, and the node exits once idle (or at
    /// `deadline`): the GCS marks it DEAD and its raylet and agents exit. Ray 2.60's
    /// `ray start --block` launcher stays behind, so its supervisor must end it. A node the GCS
    /// does not know counts as drained (accepted).
    pub async fn drain_node(
        &mut self,
        node_id_hex: &str,
        reason: DrainReason,
        message: &str,
        deadline: Option<SystemTime>,
    ) -> Result<DrainReply> {
        let node_id = hex_decode(node_id_hex).ok_or_else(|| Error::InvalidArgument {
            what: "Ray node id",
            value: node_id_hex.to_string(),
            expected: "the node id in hex, as the dashboard shows it",
        })?;
        let deadline_timestamp_ms = deadline.map_or(0, |d| {
            d.duration_since(UNIX_EPOCH).map_or(1, |t| {
                i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1)
            })
        });
        let reason = match reason {
            DrainReason::Preemption => pa::DrainNodeReason::Preemption,
            DrainReason::IdleTermination => pa::DrainNodeReason::IdleTermination,
        };
        let t = Target {
            service: GCS,
            addr: self.addr,
            call: "DrainNode",
            feature: "draining nodes",
            with_token: self.auth.is_some(),
        };
        let req = t.request(
            pa::DrainNodeRequest {
                node_id,
                reason: reason.into(),
                reason_message: message.to_string(),
                deadline_timestamp_ms,
            },
            &self.auth,
        );
        let reply = t.run(self.inner.drain_node(req)).await?;
        Ok(DrainReply {
            accepted: reply.is_accepted,
            rejection: reply.rejection_reason_message,
        })
    }

    /// Takes the node `node_id_hex` out of Ray's node table at once, as its raylet does when it
    /// stops gracefully: the GCS marks it DEAD as preempted (`message` is the reason Ray
    /// shows) and tells every owner, which reruns the node's tasks elsewhere without waiting for
    /// failed health checks. The node's own processes are the caller's to end right after.
    pub async fn unregister_node(&mut self, node_id_hex: &str, message: &str) -> Result<()> {
        let node_id = hex_decode(node_id_hex).ok_or_else(|| Error::InvalidArgument {
            what: "Ray node id",
            value: node_id_hex.to_string(),
            expected: "the node id in hex, as the dashboard shows it",
        })?;
        let t = Target {
            service: GCS,
            addr: self.addr,
            call: "UnregisterNode",
            feature: "taking a node out of the node table",
            with_token: self.auth.is_some(),
        };
        let req = t.request(
            proto::rpc::UnregisterNodeRequest {
                node_id,
                node_death_info: Some(proto::rpc::NodeDeathInfo {
                    reason: proto::rpc::node_death_info::Reason::AutoscalerDrainPreempted.into(),
                    reason_message: message.to_string(),
                }),
            },
            &self.auth,
        );
        let reply = t.run(self.nodes.unregister_node(req)).await?;
        match reply.status {
            Some(s) if s.code != 0 => Err(Error::Rpc {
                service: GCS,
                addr: self.addr,
                call: "UnregisterNode",
                code: format!("Ray status {}", s.code),
                detail: s.message,
            }),
            _ => Ok(()),
        }
    }

    /// Every node the GCS's autoscaler view knows, with its state and resources.
    pub async fn node_states(&mut self) -> Result<Vec<NodeState>> {
        let t = Target {
            service: GCS,
            addr: self.addr,
            call: "GetClusterStatus",
            feature: "the autoscaler's cluster status",
            with_token: self.auth.is_some(),
        };
        let req = t.request(pa::GetClusterStatusRequest {}, &self.auth);
        let reply = t.run(self.inner.get_cluster_status(req)).await?;
        Ok(reply
            .cluster_resource_state
            .map(|s| s.node_states.into_iter().map(node_state).collect())
            .unwrap_or_default())
    }
}

fn node_state(n: pa::NodeState) -> NodeState {
    NodeState {
        node_id_hex: hex_encode(&n.node_id),
        instance_id: n.instance_id,
        node_ip: n.node_ip_address,
        state: NodeLifecycle::from_wire(n.status),
        idle_ms: n.idle_duration_ms,
        total_resources: n.total_resources.into_iter().collect(),
        available_resources: n.available_resources.into_iter().collect(),
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn node_ids_round_trip_through_hex() {
        let id = "028db802e178b41676ab148447dfa80e2407f67e7f753d9e6d7fc94f";
        let b = hex_decode(id).unwrap();
        assert_eq!(b.len(), 28);
        assert_eq!(hex_encode(&b), id);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("zz").is_none());
        assert!(hex_decode("").is_none());
    }

    #[test]
    fn drain_request_has_rays_field_numbers() {
        let req = pa::DrainNodeRequest {
            node_id: vec![0xab],
            reason: pa::DrainNodeReason::Preemption.into(),
            reason_message: "x".into(),
            deadline_timestamp_ms: 5,
        };
        // field 1 bytes, field 2 varint 2, field 3 string, field 4 varint 5.
        assert_eq!(
            req.encode_to_vec(),
            vec![0x0a, 1, 0xab, 0x10, 2, 0x1a, 1, b'x', 0x20, 5]
        );
    }

    #[test]
    fn unregister_request_has_rays_field_numbers() {
        let req = proto::rpc::UnregisterNodeRequest {
            node_id: vec![0xab],
            node_death_info: Some(proto::rpc::NodeDeathInfo {
                reason: proto::rpc::node_death_info::Reason::AutoscalerDrainPreempted.into(),
                reason_message: "x".into(),
            }),
        };
        // field 1 bytes; field 2 a message of: field 1 varint 3, field 2 string.
        assert_eq!(
            req.encode_to_vec(),
            vec![0x0a, 1, 0xab, 0x12, 5, 0x08, 3, 0x12, 1, b'x']
        );
    }

    #[test]
    fn unknown_fields_of_rays_node_state_are_skipped() {
        // node_id (1), ray_node_type_name (3, not declared here), status (8) = DRAINING.
        let wire = [0x0a, 2, 0x01, 0xff, 0x1a, 1, b't', 0x40, 4];
        let n = node_state(pa::NodeState::decode(&wire[..]).unwrap());
        assert_eq!(n.node_id_hex, "01ff");
        assert_eq!(n.state, NodeLifecycle::Draining);
        assert_eq!(NodeLifecycle::from_wire(9), NodeLifecycle::Other(9));
    }

    #[test]
    fn statuses_become_errors_that_say_what_to_do() {
        let t = Target {
            service: RAYLET,
            addr: "127.0.0.1:1".parse().unwrap(),
            call: "ResizeLocalResourceInstances",
            feature: "live resizing of a node's resources",
            with_token: true,
        };
        let e = t
            .status_error(&tonic::Status::unauthenticated("bad token"))
            .to_string();
        assert!(e.contains("token is wrong"), "{e}");
        let e = t
            .status_error(&tonic::Status::unimplemented(""))
            .to_string();
        assert!(e.contains("lacks live resizing"), "{e}");
        let anonymous = Target {
            with_token: false,
            ..t
        };
        let e = anonymous
            .status_error(&tonic::Status::unauthenticated("missing token"))
            .to_string();
        assert!(e.contains("no token was sent"), "{e}");
        let e = t
            .status_error(&tonic::Status::unavailable("down"))
            .to_string();
        assert!(e.contains("cannot reach"), "{e}");
    }
}
