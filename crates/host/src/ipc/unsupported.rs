//! Other systems: no local channel.

use std::io;
use std::path::Path;

pub type Stream = tokio::io::DuplexStream;

#[derive(Debug)]
pub struct Listener;

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this system has no local channel for Flotilla",
    )
}

impl Listener {
    pub fn bind(_path: &Path) -> io::Result<Listener> {
        Err(unsupported())
    }

    pub async fn accept(&mut self) -> io::Result<Stream> {
        Err(unsupported())
    }
}

pub async fn connect(_path: &Path) -> io::Result<Stream> {
    Err(unsupported())
}

pub fn describe(path: &Path) -> String {
    path.display().to_string()
}
