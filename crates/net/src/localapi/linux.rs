//! Linux: tailscaled's unix socket.

use std::path::{Path, PathBuf};

use super::Endpoint;

/// The CLI's program name.
pub(super) const CLI_NAME: &str = "tailscale";

/// What to tell the person at the machine.
pub(crate) mod advice {
    pub(crate) const INSTALL: &str = "`curl -fsSL https://tailscale.com/install.sh | sh`, or \
         your distribution's package (see https://tailscale.com/download/linux)";
    pub(crate) const START: &str = "`sudo systemctl enable --now tailscaled`";
    pub(crate) const RESTART: &str = "`sudo systemctl restart tailscaled`";
}

/// The socket's usual place, then its place under `/run` when `/var/run` is not the same
/// directory.
pub(super) fn endpoints() -> Vec<Endpoint> {
    let var_run = Path::new("/var/run/tailscale/tailscaled.sock");
    let run = Path::new("/run/tailscale/tailscaled.sock");
    let mut out = vec![Endpoint::UnixSocket(var_run.to_path_buf())];
    let same_dir = matches!(std::fs::canonicalize("/var/run"), Ok(p) if p == Path::new("/run"));
    if !same_dir {
        out.push(Endpoint::UnixSocket(run.to_path_buf()));
    }
    out
}

/// No places for the CLI besides `PATH`.
pub(super) fn extra_cli() -> Vec<PathBuf> {
    Vec::new()
}
