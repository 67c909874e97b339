//! Other operating systems: on a unix (the BSDs), tailscaled's usual socket; then the CLI on
//! `PATH`. Untested here.

use std::path::PathBuf;

use super::Endpoint;

/// The CLI's program name.
pub(super) const CLI_NAME: &str = "tailscale";

/// What to tell the person at the machine.
pub(crate) mod advice {
    pub(crate) const INSTALL: &str = "see https://tailscale.com/download";
    pub(crate) const START: &str = "start tailscaled as your system starts services";
    pub(crate) const RESTART: &str = "restart tailscaled";
}

pub(super) fn endpoints() -> Vec<Endpoint> {
    if cfg!(unix) {
        vec![Endpoint::UnixSocket(PathBuf::from(
            "/var/run/tailscale/tailscaled.sock",
        ))]
    } else {
        Vec::new()
    }
}

pub(super) fn extra_cli() -> Vec<PathBuf> {
    Vec::new()
}
