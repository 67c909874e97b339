//! Unix: a socket file, `0600`, checked peer by peer.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

pub type Stream = UnixStream;

#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    uid: libc::uid_t,
}

impl Listener {
    pub fn bind(path: &Path) -> io::Result<Listener> {
        if path.exists() {
            // A live listener answers; a socket left by one that died refuses the connection.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process answers on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Listener {
            listener,
            path: path.to_path_buf(),
            // SAFETY: getuid cannot fail and has no preconditions.
            uid: unsafe { libc::getuid() },
        })
    }

    pub async fn accept(&mut self) -> io::Result<Stream> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let uid = stream.peer_cred().map(|c| c.uid()).ok();
            if uid == Some(self.uid) {
                return Ok(stream);
            }
            tracing::warn!(
                ?uid,
                path = %self.path.display(),
                "local channel: refused a connection from another user"
            );
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub async fn connect(path: &Path) -> io::Result<Stream> {
    UnixStream::connect(path).await
}

pub fn describe(path: &Path) -> String {
    path.display().to_string()
}
