//! Windows: tailscaled's named pipe.
//!
//! UNTESTED HERE: Flotilla's build machines run Linux. The pipe name is Tailscale's as of 2025.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient};

use super::Endpoint;

/// The CLI's program name (`.exe` is added when searching `PATH`).
pub(super) const CLI_NAME: &str = "tailscale";

/// What to tell the person at the machine.
pub(crate) mod advice {
    pub(crate) const INSTALL: &str =
        "the Tailscale app from https://tailscale.com/download/windows";
    pub(crate) const START: &str = "start the Tailscale app, or `net start Tailscale` as an \
         administrator";
    pub(crate) const RESTART: &str = "`net stop Tailscale` then `net start Tailscale` as an \
         administrator";
}

const PIPE: &str = r"\\.\pipe\ProtectedPrefix\Administrators\Tailscale\tailscaled";
/// Win32 `ERROR_PIPE_BUSY`: every instance of the pipe is in use; try again shortly.
const ERROR_PIPE_BUSY: i32 = 231;

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::NamedPipe(PIPE.to_owned())]
}

/// The CLI where the installer puts it.
pub(super) fn extra_cli() -> Vec<PathBuf> {
    let base = std::env::var_os("ProgramFiles")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\Program Files"));
    vec![base.join(r"Tailscale\tailscale.exe")]
}

/// Opens the pipe, waiting briefly while all its instances are busy.
pub(super) async fn open_pipe(name: &str) -> io::Result<NamedPipeClient> {
    let mut tries = 0;
    loop {
        match ClientOptions::new().open(name) {
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}
