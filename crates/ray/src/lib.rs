//! Flotilla's Ray adapter.
//!
//! This is the only crate that knows Ray's command lines, ports, HTTP responses and quirks. It
//! provisions a Python + Ray runtime with uv ([`runtime`]), supervises one Ray node per
//! [`supervisor::Supervisor`] (start, readiness, restart with backoff, stop without touching the
//! machine's other Ray nodes), and reads the cluster through the Ray dashboard's HTTP API
//! ([`state`]).
//!
//! It deliberately knows nothing about Flotilla's policy, control plane or UI: it is told what to
//! run and reports what Ray does. Its key decision is to drive Ray through `ray start --block`,
//! one process tree per node, so stopping one node is a signal to its own tree and never
//! `ray stop` (which kills every Ray process on the machine).

pub mod error;
pub mod failure;
pub mod grpc;
pub mod ports;
pub mod runtime;
pub mod shed;
pub mod state;
pub mod supervisor;
pub mod token;
pub mod uv;
pub mod versions;

pub use error::{Error, Result};
pub use failure::{Failure, FailureKind};
pub use ports::NodePorts;
pub use runtime::{Progress, Runtime, RuntimeManager};
pub use state::StateClient;
pub use supervisor::{NodeConfig, NodePhase, NodeStatus, Role, Supervisor};
pub use token::RayToken;
pub use versions::RuntimeSpec;
