//! macOS: the Tailscale app's localhost port and token, then the open-source tailscaled's
//! socket.
//!
//! UNTESTED HERE: Flotilla's build machines run Linux. The file parsing is shared with the
//! other platforms (`app_token`) and tested there with a fake directory tree; the paths below
//! are Tailscale's as of 2025 and are the part that only a Mac can confirm.

use std::path::{Path, PathBuf};

use super::{Endpoint, app_token};

/// The CLI's program name.
pub(super) const CLI_NAME: &str = "tailscale";

/// What to tell the person at the machine.
pub(crate) mod advice {
    pub(crate) const INSTALL: &str = "the Tailscale app from https://tailscale.com/download/mac \
         or the Mac App Store";
    pub(crate) const START: &str = "open the Tailscale app (or, for the open-source \
         tailscaled, `sudo brew services start tailscale`)";
    pub(crate) const RESTART: &str = "quit and reopen the Tailscale app";
}

/// The standalone app's files live here.
const MACSYS_DIR: &str = "/Library/Tailscale";
/// The open-source tailscaled's socket (Homebrew, `go install`).
const OSS_SOCKET: &str = "/var/run/tailscaled.socket";

pub(super) fn endpoints() -> Vec<Endpoint> {
    let group_containers =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join("Library/Group Containers"));
    let mut out = app_token::endpoints(Path::new(MACSYS_DIR), group_containers.as_deref());
    out.push(Endpoint::UnixSocket(PathBuf::from(OSS_SOCKET)));
    out
}

/// The CLI inside the app bundle.
pub(super) fn extra_cli() -> Vec<PathBuf> {
    vec![PathBuf::from(
        "/Applications/Tailscale.app/Contents/MacOS/Tailscale",
    )]
}
