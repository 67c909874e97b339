//! What the CLI tests share: running the real `flotilla` binary with a private home.
#![allow(dead_code)] // Each test binary uses its own part.

use std::path::Path;
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// `flotilla` with its own `FLOTILLA_HOME`, sharing the provisioned runtime between tests (and
/// with the test command's cache) through `FLOTILLA_DATA_DIR`.
pub fn flotilla(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("FLOTILLA_HOME", home)
        .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
        .stdin(Stdio::null());
    c
}
