//! Errors of the network edge. Every message says what happened and what to do about it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::localapi::advice;

/// Why Tailscale's status could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TailscaleError {
    /// Neither a LocalAPI endpoint nor the `tailscale` command was found on this machine.
    #[error(
        "Tailscale does not seem to be installed on this machine (looked for {looked})\n  \
         Install it: {}; then run `tailscale up`",
        advice::INSTALL
    )]
    NotInstalled {
        /// What was looked for, for the message.
        looked: String,
    },

    /// Tailscale is installed but its daemon does not answer.
    #[error(
        "Tailscale is installed but its daemon is not running ({detail})\n  \
         Start it: {}; then run `tailscale up`",
        advice::START
    )]
    DaemonNotRunning {
        /// What showed it (a refused socket, what the CLI said).
        detail: String,
    },

    /// One LocalAPI endpoint could not be reached: nothing listens there.
    #[error(
        "cannot reach tailscaled at {endpoint}: {detail}\n  \
         Check that Tailscale is installed and its daemon runs ({})",
        advice::START
    )]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// The OS's word on it.
        detail: String,
    },

    /// The OS refused access to the LocalAPI endpoint.
    #[error(
        "permission denied talking to tailscaled at {endpoint}: {detail}\n  \
         Run Flotilla as a user who may use Tailscale (`tailscale status` works for them), \
         or as an administrator"
    )]
    PermissionDenied {
        /// The endpoint tried.
        endpoint: String,
        /// The OS's word on it.
        detail: String,
    },

    /// The LocalAPI answered, but not with a status.
    #[error(
        "tailscaled at {endpoint} did not give its status: {detail}\n  \
         Check that `tailscale status` works; if it does, please report this to Flotilla"
    )]
    LocalApi {
        /// The endpoint tried.
        endpoint: String,
        /// What went wrong in the exchange.
        detail: String,
    },

    /// The LocalAPI or the CLI took too long.
    #[error(
        "{what} did not answer within {} s\n  \
         tailscaled may be hung: restart it ({})",
        after.as_secs_f64(),
        advice::RESTART
    )]
    Timeout {
        /// What was asked.
        what: String,
        /// The time limit.
        after: Duration,
    },

    /// `tailscale status --json` failed for a reason other than a stopped daemon.
    #[error(
        "`{program} status --json` failed: {detail}\n  \
         Run it yourself to see what Tailscale says"
    )]
    Cli {
        /// The program run.
        program: String,
        /// Its exit status and what it printed on stderr.
        detail: String,
    },

    /// The status document could not be read.
    #[error(
        "cannot read Tailscale's status from {origin}: {detail}\n  \
         Run `tailscale status --json` to see it; if Tailscale itself works, this version's \
         format may be new to Flotilla: please report it"
    )]
    Parse {
        /// Where the document came from.
        origin: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// Why no address to bind could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Tailscale was asked for, but its status is not known.
    #[error(
        "Tailscale networking was chosen but Tailscale's status could not be read\n  \
         Check `tailscale status`, or choose LAN networking instead"
    )]
    TailscaleUnknown,

    /// Tailscale was asked for, but it is not running.
    #[error("Tailscale networking was chosen but Tailscale is not ready ({state}): {guidance}")]
    TailscaleNotReady {
        /// The backend state Tailscale reports.
        state: String,
        /// What to do, from [`crate::Status::guidance`].
        guidance: String,
    },

    /// Tailscale runs but reports no address for this machine.
    #[error(
        "Tailscale is running but reports no Tailscale address for this machine\n  \
         Check `tailscale ip`; if it prints nothing, run `tailscale up` again"
    )]
    NoTailscaleAddress,

    /// The OS has no route to the head.
    #[error(
        "this machine has no route to the head at {dest}: {source}\n  \
         Check the network connection and the head's address"
    )]
    NoRoute {
        /// The head's address.
        dest: SocketAddr,
        /// The OS's word on it.
        source: io::Error,
    },

    /// The OS has no default route, so there is no LAN address to offer.
    #[error(
        "this machine has no default route, so it has no LAN address to offer: {source}\n  \
         Connect it to a network, give the head's address, or use Tailscale"
    )]
    NoDefaultRoute {
        /// The OS's word on it.
        source: io::Error,
    },
}
