//! Flotilla's network edge: how this machine is reachable by the rest of the cluster.
//!
//! A Flotilla cluster runs either over Tailscale (the team's machines share a tailnet, wherever
//! they are) or over a LAN. This crate answers the questions that choice needs:
//!
//! - **What does Tailscale say?** [`status`] reads Tailscale's status on this machine and
//!   returns it as Flotilla's own types ([`Status`], [`Peer`], [`BackendState`]), and
//!   [`Status::guidance`] says what the person at the machine must do when Tailscale is not
//!   ready (log in, switch it on, wait for an admin's approval).
//! - **Which address do we bind?** [`choose_bind`] picks the Tailscale address, or the LAN
//!   address that routes to the head, per [`Mode`].
//! - **Am I still on the same network?** [`NetWatch`] notices link, address and route changes
//!   (netlink on Linux, polling elsewhere) and sleep (the wall clock jumping past the monotonic
//!   one), so the agent rechecks its session and its Ray node at once.
//!
//! # Key decisions
//!
//! - **The LocalAPI first, the CLI as a fallback.** tailscaled serves its status as JSON over a
//!   local transport (a unix socket on Linux, a token-guarded localhost port for the macOS app,
//!   a named pipe on Windows). Asking it directly needs no `tailscale` program on `PATH` and no
//!   process per query; `tailscale status --json` prints the same document and is the fallback
//!   where the transport is unknown or unreachable. See [`localapi`].
//! - **A hand-written HTTP/1.1 `GET`** (with `Content-Length`, chunked encoding, size bounds and
//!   a time limit) rather than hyper: one request on a local stream does not justify the
//!   dependency, and it works over any tokio stream.
//! - **Our own types, not a mirror of Go's.** Only the fields Flotilla uses are read; unknown
//!   fields are ignored and every field read may be missing or `null`, so newer and older
//!   Tailscale versions parse. Bad input is an error that says what to do, never a panic.
//! - **Routes, not interface lists, for the LAN.** The address that routes to the head is the
//!   one the head can answer; finding it with a connected UDP socket sends nothing.
//!
//! # Not here yet
//!
//! - Binding: this crate chooses an address, the caller binds it. Nothing here listens.
//! - The macOS and Windows LocalAPI transports are written from Tailscale's published layout but
//!   are untested here (the build machines run Linux); the CLI fallback covers them if they are
//!   wrong.

mod error;
mod http;
pub mod lan;
pub mod localapi;
pub mod tailscale;
pub mod watch;

pub use error::{NetError, TailscaleError};
pub use lan::{Mode, choose_bind, route_to};
pub use localapi::{Discovery, Endpoint, status, status_at};
pub use tailscale::{BackendState, Peer, Status, is_tailscale_ip};
pub use watch::{Change, NetWatch, WokeHandle};
