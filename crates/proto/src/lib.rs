//! Flotilla's control-plane protocol and join code.
//!
//! [`v1`] is the code generated from `proto/flotilla/v1/fleet.proto` (package `flotilla.v1`):
//! the messages and the `Fleet` service's client ([`v1::fleet_client`]) and server
//! ([`v1::fleet_server`]) that the head and the agents speak over gRPC with TLS. [`joincode`]
//! is the string an admin hands to a machine so it can join: the head's addresses, a join
//! secret and the fingerprint of the head's certificate. [`auth`] writes and reads the
//! `authorization` header of the calls (and owns the hex of credentials); [`state`] names the
//! node states for people and programs.
//!
//! The generated types are wire types: they never leak past `flotilla-agent` and
//! `flotilla-head`, which convert them to their own types at the edge, so the rest of the code
//! does not depend on protobuf's conventions (zero for unset, enums as `i32`). Key decision:
//! the `.proto` is compiled by protox, in pure Rust, so building needs no `protoc`.
//!
//! Messages that carry secrets (`JoinRequest`, `JoinReply`, `RaySpec`, `InviteReply`) have a
//! `Debug` that redacts them.

pub mod auth;
pub mod joincode;
mod redact;
pub mod state;
pub mod transport;

pub use joincode::{Fingerprint, HeadAddress, Host, JoinCode, JoinCodeError};

/// Package `flotilla.v1`, generated from `proto/flotilla/v1/fleet.proto`.
///
/// Enum fields are `i32`: a value from a newer peer that this version does not know decodes
/// without error, and `NodeState::try_from(value)` tells it apart; handle the `Err` case as
/// the enum's comment in the `.proto` says.
#[allow(clippy::all, missing_docs, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("flotilla.v1");
}
