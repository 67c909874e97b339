//! A local channel between the processes of one user on one machine: the agent listens, the
//! command line and the desktop app connect. Byte streams; the protocol is the caller's.
//!
//! The channel is named by a path (the agent's [`crate::Dirs::agent_socket`], named after its
//! state dir), so each Flotilla home has its own. [`Listener::bind`] never takes over a channel
//! a live listener answers on: it fails with [`std::io::ErrorKind::AddrInUse`] instead, naming
//! the listener's process where the OS tells it. A channel left by a listener that died is taken
//! over, and a listener that ends removes only its own channel, never one that replaced it.
//!
//! # Platform behavior
//!
//! - Unix: a Unix socket at the path, `0600` (its directory is the caller's to make private),
//!   removed when the listener is dropped if it is still the one this listener made (same device
//!   and inode). Every connection's peer credentials must name this
//!   process's user: another user is refused even if the permissions were loosened.
//! - Windows: a named pipe, `\\.\pipe\flotilla-<hash of the path>`, that refuses remote clients.
//!   Its first instance is created exclusively, so a second listener fails while the first
//!   lives. The pipe's default security lets only its creator's user (and administrators and
//!   the system) write to it; other users may at most open it for reading, and so can send no
//!   request.
//! - Elsewhere: [`Listener::bind`] and [`connect`] fail with `Unsupported`.

use std::io;
use std::path::Path;
use std::time::Duration;

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;
#[cfg(not(any(unix, windows)))]
#[path = "unsupported.rs"]
mod imp;

#[cfg(test)]
mod tests;

/// A connection, either end: read and write it as a tokio byte stream.
pub type Stream = imp::Stream;

/// The listening end of a channel.
#[derive(Debug)]
pub struct Listener {
    inner: imp::Listener,
}

impl Listener {
    /// Listens on the channel named by `path`; see the module's documentation.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        Ok(Listener {
            inner: imp::Listener::bind(path)?,
        })
    }

    /// The next connection of this user; connections from other users are refused and not
    /// returned.
    pub async fn accept(&mut self) -> io::Result<Stream> {
        self.inner.accept().await
    }
}

/// Connects to the channel named by `path`, waiting at most `timeout`.
pub async fn connect(path: &Path, timeout: Duration) -> io::Result<Stream> {
    tokio::time::timeout(timeout, imp::connect(path))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "nothing answered in time"))?
}

/// The name of the channel for `path` on this system (the socket path, or the pipe's name), for
/// messages.
pub fn describe(path: &Path) -> String {
    imp::describe(path)
}

/// A stable 64-bit FNV-1a hash: the same in every build, which std's hasher does not promise.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
