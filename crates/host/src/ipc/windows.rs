//! Windows: a named pipe per channel path, first instance exclusive, no remote clients.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeServer, ServerOptions};

/// ERROR_PIPE_BUSY: every instance is connected; another comes when the server accepts.
const PIPE_BUSY: i32 = 231;

pub type Stream = tokio::io::DuplexStream;

#[derive(Debug)]
pub struct Listener {
    name: String,
    next: NamedPipeServer,
}

fn pipe_name(path: &Path) -> String {
    let text = path.to_string_lossy().to_lowercase();
    format!(
        r"\\.\pipe\flotilla-{:016x}",
        super::stable_hash(text.as_bytes())
    )
}

impl Listener {
    pub fn bind(path: &Path) -> io::Result<Listener> {
        let name = pipe_name(path);
        let taken = || {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another process answers on {name}"),
            )
        };
        // The exclusive first instance below is the guarantee on Windows; Wine ignores that
        // flag, so a listener that answers (or is busy answering) is looked for first too.
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&name)
        {
            Ok(_) => return Err(taken()),
            Err(e) if e.raw_os_error() == Some(PIPE_BUSY) => return Err(taken()),
            Err(_) => {}
        }
        let next = ServerOptions::new()
            .first_pipe_instance(true)
            .reject_remote_clients(true)
            .create(&name)
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => taken(),
                _ => e,
            })?;
        Ok(Listener { name, next })
    }

    pub async fn accept(&mut self) -> io::Result<Stream> {
        self.next.connect().await?;
        let fresh = ServerOptions::new()
            .reject_remote_clients(true)
            .create(&self.name)?;
        let pipe = std::mem::replace(&mut self.next, fresh);
        Ok(bridge(pipe))
    }
}

pub async fn connect(path: &Path) -> io::Result<Stream> {
    let name = pipe_name(path);
    loop {
        match ClientOptions::new().open(&name) {
            Ok(pipe) => return Ok(bridge(pipe)),
            Err(e) if e.raw_os_error() == Some(PIPE_BUSY) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One stream type for both ends: the pipe's bytes copied both ways through an in-memory
/// duplex until either side closes.
fn bridge<P>(pipe: P) -> Stream
where
    P: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut pipe = pipe;
        let _ = tokio::io::copy_bidirectional(&mut pipe, &mut theirs).await;
    });
    ours
}

pub fn describe(path: &Path) -> String {
    pipe_name(path)
}

#[cfg(test)]
mod naming {
    use super::pipe_name;
    use crate::Dirs;

    #[test]
    fn each_home_has_its_own_pipe_and_one_path_one_name() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let home = |name: &str| Dirs {
            run: run.clone(),
            ..Dirs::under(&tmp.path().join(name))
        };
        let (a, b) = (home("a").agent_socket(), home("b").agent_socket());
        assert_ne!(pipe_name(&a), pipe_name(&b));
        assert!(
            pipe_name(&a).starts_with(r"\\.\pipe\flotilla-"),
            "{}",
            pipe_name(&a)
        );
        // Windows paths ignore case, and so does the pipe's name.
        let upper = std::path::PathBuf::from(a.to_string_lossy().to_uppercase());
        assert_eq!(pipe_name(&upper), pipe_name(&a));
    }
}
