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

/// The port options of one test's cluster, from a base, so tests never collide.
pub fn port_args(base: u16) -> Vec<String> {
    [
        ("--api-port", base),
        ("--ray-port", base + 1),
        ("--ray-dashboard-port", base + 2),
        ("--ray-client-port", base + 3),
        ("--head-node-ports", base + 100),
        ("--node-ports", base + 500),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect()
}
