//! A private system bus and a stand-in for logind, for the tests of sleep and wake (the host
//! crate's `tests/power.rs`, the CLI's `tests/sleep.rs` and the `sleep` benchmark).
//!
//! The bus is a `dbus-daemon` of the test's own (its config allows everything for this user),
//! and `org.freedesktop.login1` on it is a stand-in written here with `zbus`, not systemd's
//! logind: it hands out `Inhibit` locks as one end of a socket pair, whose other end tells
//! whether the holder still keeps the lock, and emits the manager's signals when told to.
//! `dbus-daemon` comes with the `dbus` package that `tests/run` installs; without it the tests
//! fail.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PATH: &str = "/org/freedesktop/login1";
pub const MANAGER: &str = "org.freedesktop.login1.Manager";

/// A private bus, killed on drop.
#[derive(Debug)]
pub struct Bus {
    daemon: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

pub fn private_bus() -> Bus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bus.conf");
    std::fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let mut daemon = match Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(daemon) => daemon,
        Err(e) => panic!("cannot start dbus-daemon (install Debian's `dbus` package): {e}"),
    };
    let mut line = String::new();
    BufReader::new(daemon.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.trim().is_empty(), "dbus-daemon printed no address");
    Bus {
        daemon,
        address: line.trim().to_string(),
        _dir: dir,
    }
}

/// One `Inhibit` call as the stand-in saw it, and the end of the lock it kept.
#[derive(Debug)]
pub struct Lock {
    pub args: (String, String, String, String),
    kept: UnixStream,
}

impl Lock {
    /// Whether every copy of the watch's end has been closed, waiting up to `wait` for a close
    /// to show.
    pub fn closed_within(&self, wait: Duration) -> bool {
        self.kept.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + wait;
        loop {
            match (&self.kept).read(&mut [0u8; 1]) {
                Ok(0) => return true,
                Ok(_) => panic!("the lock carried data"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("reading the lock: {e}"),
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn closed(&self) -> bool {
        self.closed_within(Duration::from_secs(2))
    }

    pub fn open(&self) -> bool {
        !self.closed_within(Duration::from_millis(200))
    }
}

/// The stand-in for logind's manager object.
#[derive(Debug)]
pub struct StandInLogind {
    locks: Arc<Mutex<Vec<Lock>>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl StandInLogind {
    async fn inhibit(
        &self,
        what: String,
        who: String,
        why: String,
        mode: String,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        let (kept, given) =
            UnixStream::pair().map_err(|e| zbus::fdo::Error::IOError(e.to_string()))?;
        self.locks.lock().unwrap().push(Lock {
            args: (what, who, why, mode),
            kept,
        });
        Ok(std::os::fd::OwnedFd::from(given).into())
    }
}

pub async fn stand_in_logind(bus: &Bus, locks: Arc<Mutex<Vec<Lock>>>) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.login1")
        .unwrap()
        .serve_at(PATH, StandInLogind { locks })
        .unwrap()
        .build()
        .await
        .unwrap()
}

pub async fn emit(connection: &zbus::Connection, member: &str, start: bool) {
    connection
        .emit_signal(None::<()>, PATH, MANAGER, member, &(start,))
        .await
        .unwrap();
}
