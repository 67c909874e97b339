//! The ports a Ray node listens on.
//!
//! Ray picks most of its ports at random by default, which defeats LAN firewalls and makes two
//! nodes on one machine collide (the dashboard agent's 52365, for one). Flotilla pins every port
//! of a node from one base: `base + 0..=5` for the node's services and a block above for the
//! worker processes (one port each).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::{Error, Result};

/// The Ray head's GCS port (Ray's default).
pub const DEFAULT_GCS_PORT: u16 = 6379;
/// The Ray dashboard port, bound to the head's loopback only.
pub const DEFAULT_RAY_DASHBOARD_PORT: u16 = 8265;
/// The Ray client server port on the head (Ray's default).
pub const DEFAULT_CLIENT_SERVER_PORT: u16 = 10001;
/// Base of the head node's own ports.
pub const DEFAULT_HEAD_NODE_BASE: u16 = 6380;
/// Base of a worker node's ports: 7480-7485, worker processes 7500-7755.
pub const DEFAULT_WORKER_NODE_BASE: u16 = 7480;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    pub node_manager: u16,
    pub object_manager: u16,
    pub dashboard_agent_http: u16,
    pub dashboard_agent_grpc: u16,
    pub metrics_export: u16,
    pub runtime_env_agent: u16,
    pub min_worker: u16,
    pub max_worker: u16,
}

impl NodePorts {
    /// Ports from `base`: six service ports, then `workers` worker ports starting at `base + 20`.
    pub fn from_base(base: u16, workers: u16) -> NodePorts {
        NodePorts {
            node_manager: base,
            object_manager: base + 1,
            dashboard_agent_http: base + 2,
            dashboard_agent_grpc: base + 3,
            metrics_export: base + 4,
            runtime_env_agent: base + 5,
            min_worker: base + 20,
            max_worker: base + 20 + workers.max(1) - 1,
        }
    }

    /// The head node's defaults (it runs no tasks, but drivers on the head machine take worker
    /// ports).
    pub fn head_default() -> NodePorts {
        NodePorts::from_base(DEFAULT_HEAD_NODE_BASE, 30)
    }

    /// A worker node's defaults: room for 256 worker processes.
    pub fn worker_default() -> NodePorts {
        NodePorts::from_base(DEFAULT_WORKER_NODE_BASE, 256)
    }

    /// The service ports with their names (worker ports are checked lazily by Ray itself).
    pub fn services(&self) -> [(u16, &'static str); 6] {
        [
            (self.node_manager, "Ray node manager"),
            (self.object_manager, "Ray object manager"),
            (self.dashboard_agent_http, "Ray dashboard agent"),
            (self.dashboard_agent_grpc, "Ray dashboard agent gRPC"),
            (self.metrics_export, "Ray metrics"),
            (self.runtime_env_agent, "Ray runtime-env agent"),
        ]
    }
}

/// Fails with [`Error::PortInUse`] if `port` cannot be bound on any interface.
pub fn ensure_free(port: u16, what: &'static str, option: &'static str) -> Result<()> {
    match TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(Error::PortInUse { port, what, option })
        }
        Err(e) => Err(Error::io(format!("cannot check port {port} ({what})"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_blocks_do_not_overlap() {
        let h = NodePorts::head_default();
        let w = NodePorts::worker_default();
        assert!(h.max_worker < w.node_manager);
        assert!(h.node_manager > DEFAULT_GCS_PORT);
        assert_eq!(w.max_worker - w.min_worker + 1, 256);
        assert!(h.max_worker < DEFAULT_RAY_DASHBOARD_PORT);
    }

    #[test]
    fn a_port_in_use_is_named_with_its_option() {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let err = ensure_free(port, "Ray GCS", "--ray-port")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&port.to_string()) && err.contains("--ray-port"),
            "{err}"
        );
        drop(l);
        ensure_free(port, "Ray GCS", "--ray-port").unwrap();
    }
}
