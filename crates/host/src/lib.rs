//! The operating-system edge of Flotilla.
//!
//! This crate owns everything that differs between Linux, macOS and Windows: where Flotilla keeps
//! its files ([`dirs`]) and how it starts a process tree that cannot outlive the process that
//! started it ([`process`]). It knows nothing about Ray, the policy or the control plane: callers
//! hand it a program and arguments.
//!
//! Each capability is one facade type whose behaviour comes from a per-OS module (`linux`,
//! `macos`, `windows`, `unsupported`), chosen at compile time, so that callers never write
//! `cfg` themselves.

pub mod addr;
pub mod clock;
pub mod dirs;
pub mod memory;
pub mod process;
pub mod sensors;
pub mod throttle;

pub use dirs::Dirs;
pub use process::{ProcessTree, TreeSpec};

/// This machine's host name, as a node name: the first label only, or `"node"` if the OS does
/// not say.
pub fn hostname() -> String {
    let raw = raw_hostname().unwrap_or_default();
    let first = raw.split('.').next().unwrap_or("").trim();
    let clean: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "node".into()
    } else {
        clean
    }
}

#[cfg(unix)]
fn raw_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname writes at most that many
    // bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(windows)]
fn raw_hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

#[cfg(not(any(unix, windows)))]
fn raw_hostname() -> Option<String> {
    None
}
