//! Unix: a socket file, `0600`, checked peer by peer.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

pub type Stream = UnixStream;

#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    uid: libc::uid_t,
    /// The socket file's device and inode: what is removed on drop, if still there.
    file: (u64, u64),
}

impl Listener {
    pub fn bind(path: &Path) -> io::Result<Listener> {
        if path.exists() {
            // A live listener answers; a socket left by one that died refuses the connection.
            if let Ok(live) = std::os::unix::net::UnixStream::connect(path) {
                let who = match peer_pid(&live) {
                    Some(pid) => format!("another process (pid {pid})"),
                    None => "another process".to_string(),
                };
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{who} answers on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Listener {
            listener,
            path: path.to_path_buf(),
            file: (meta.dev(), meta.ino()),
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
        // Only the file this listener made: one removed and bound again by another listener
        // (after this one was taken for dead) is that listener's.
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The process at the other end of a connected socket, where the OS tells it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_pid(stream: &std::os::unix::net::UnixStream) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is a live socket and `cred`/`len` describe a writable ucred.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid)
}

/// The process at the other end of a connected socket, where the OS tells it.
#[cfg(target_os = "macos")]
fn peer_pid(stream: &std::os::unix::net::UnixStream) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let mut pid: libc::pid_t = 0;
    let mut len = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
    // SAFETY: the fd is a live socket and `pid`/`len` describe a writable pid_t.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERPID,
            (&raw mut pid).cast(),
            &mut len,
        )
    };
    (rc == 0 && pid > 0).then_some(pid)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
fn peer_pid(_: &std::os::unix::net::UnixStream) -> Option<i32> {
    None
}

pub async fn connect(path: &Path) -> io::Result<Stream> {
    UnixStream::connect(path).await
}

pub fn describe(path: &Path) -> String {
    path.display().to_string()
}
