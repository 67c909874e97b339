//! Flotilla's head: the Ray head node plus the cluster API.
//!
//! [`Head::start`] takes the machine's head lock (one head per machine and state dir), binds the
//! API port, starts the Ray head through [`flotilla_ray::Supervisor`], serves the control plane
//! ([`fleet`]: join codes, agent sessions, admin commands, over gRPC with TLS) and the merged
//! [`ClusterSnapshot`] over HTTP, with the dashboard (`ui/`, embedded at build time by
//! `build.rs`) and its admin endpoints.
//!
//! Its key decision is that one task reads Ray's state through the Ray dashboard on the head's
//! loopback every 2 s and the API serves the latest read: a request never waits on Ray, and a
//! burst of them costs Ray nothing (the snapshot is at most one read, 2 s, old).

pub mod alerts;
mod api;
pub mod backup;
pub mod dto;
pub mod fleet;
mod instance;
pub mod registry;
mod snapshot;
pub mod tls;
mod ui;

pub use api::{
    AllowedHosts, Api, Latest, Limits, ReadFailure, STALE_AFTER, Snapshots, qr_svg, router, serve,
};
pub use instance::{
    API_HOSTS_ENV, Head, HeadConfig, HeadInfo, RAY_TOKEN_SECRET, admin_token, cluster_token,
    read_cluster_token,
};
pub use snapshot::{ClusterSnapshot, JobView, NodeView, TaskTotals, Totals, snapshot};

/// The cluster API's default port.
pub const DEFAULT_API_PORT: u16 = 7471;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Flotilla is already running on this machine (pid {pid}): API at {api_url}, Ray at \
         {ray_address}\n  Use that one (`flotilla status`), or stop it first (Ctrl-C in its \
         terminal, or `kill {pid}`)"
    )]
    AlreadyRunning {
        pid: u32,
        api_url: String,
        ray_address: String,
    },
    #[error(
        "port {port} (Flotilla API) is already in use on this machine\n  Stop the program \
         that uses it, or choose another port with --api-port"
    )]
    ApiPortInUse { port: u16 },
    #[error(
        "port {port} (Flotilla control plane) is already in use on this machine\n  Stop the \
         program that uses it, or choose another port with --control-port"
    )]
    ControlPortInUse { port: u16 },
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Ray(#[from] flotilla_ray::Error),
    #[error(transparent)]
    Secrets(#[from] flotilla_secrets::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
