//! The Linux sleep watch against a private bus and a stand-in for logind.
//!
//! The bus is a `dbus-daemon` of the test's own (its config allows everything for this user),
//! and `org.freedesktop.login1` on it is a stand-in written here with `zbus`, not systemd's
//! logind: it hands out `Inhibit` locks as one end of a socket pair, whose other end tells
//! whether the watch still holds the lock, and emits the manager's signals when told to.
//! `dbus-daemon` comes with the `dbus` package that `tests/run` installs; without it the test
//! fails.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_host::power::{KeepAwake, PowerEvent, PowerWatch, WatchConfig};

const PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";

/// A private bus, killed on drop.
struct Bus {
    daemon: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn private_bus() -> Bus {
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
struct Lock {
    args: (String, String, String, String),
    kept: UnixStream,
}

impl Lock {
    /// Whether every copy of the watch's end has been closed, waiting up to `wait` for a close
    /// to show.
    fn closed_within(&self, wait: Duration) -> bool {
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

    fn closed(&self) -> bool {
        self.closed_within(Duration::from_secs(2))
    }

    fn open(&self) -> bool {
        !self.closed_within(Duration::from_millis(200))
    }
}

/// The stand-in for logind's manager object.
struct StandInLogind {
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

async fn stand_in_logind(bus: &Bus, locks: Arc<Mutex<Vec<Lock>>>) -> zbus::Connection {
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

async fn emit(connection: &zbus::Connection, member: &str, start: bool) {
    connection
        .emit_signal(None::<()>, PATH, MANAGER, member, &(start,))
        .await
        .unwrap();
}

async fn next(watch: &mut PowerWatch) -> PowerEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("no event within 10 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_sleep_until_released_and_again_after_wake() {
    let bus = private_bus();
    let locks = Arc::new(Mutex::new(Vec::new()));
    let logind = stand_in_logind(&bus, locks.clone()).await;

    let mut config = WatchConfig::new("flotilla-test");
    config.bus_address = Some(bus.address.clone());
    let mut watch = PowerWatch::start(&config).await.unwrap();
    assert!(watch.holds_sleep());
    {
        let locks = locks.lock().unwrap();
        assert_eq!(locks.len(), 1);
        let (what, who, why, mode) = &locks[0].args;
        assert_eq!(
            (what.as_str(), who.as_str(), mode.as_str()),
            ("sleep:shutdown", "flotilla-test", "delay")
        );
        assert_eq!(why, &config.why);
        assert!(locks[0].open(), "the lock was closed before any sleep");
    }

    // Sleep is announced; the lock holds it back until the watch releases it.
    emit(&logind, "PrepareForSleep", true).await;
    assert_eq!(next(&mut watch).await, PowerEvent::WillSleep);
    assert!(watch.holds_sleep());
    assert!(
        locks.lock().unwrap()[0].open(),
        "sleep was let go before release"
    );
    watch.release();
    assert!(!watch.holds_sleep());
    assert!(
        locks.lock().unwrap()[0].closed(),
        "release did not close the lock"
    );

    // After wake, the next sleep is held back again with a new lock.
    emit(&logind, "PrepareForSleep", false).await;
    assert_eq!(next(&mut watch).await, PowerEvent::Woke);
    assert!(watch.holds_sleep());
    assert_eq!(locks.lock().unwrap().len(), 2);
    assert!(locks.lock().unwrap()[1].open());

    // A signal with logind's path and interface from another connection is not heard.
    let impostor = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    emit(&impostor, "PrepareForSleep", true).await;
    // A shutdown is held back by the same lock, and a called-off one takes the lock again.
    emit(&logind, "PrepareForShutdown", true).await;
    assert_eq!(next(&mut watch).await, PowerEvent::WillShutDown);
    watch.release();
    assert!(locks.lock().unwrap()[1].closed());
    emit(&logind, "PrepareForShutdown", false).await;
    assert_eq!(next(&mut watch).await, PowerEvent::ShutdownCalledOff);
    assert!(watch.holds_sleep());
    assert_eq!(locks.lock().unwrap().len(), 3);

    // Dropping the watch lets sleep proceed.
    drop(watch);
    assert!(
        locks.lock().unwrap()[2].closed(),
        "dropping the watch kept the lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeping_awake_blocks_idle_sleep_until_dropped() {
    let bus = private_bus();
    let locks = Arc::new(Mutex::new(Vec::new()));
    let _logind = stand_in_logind(&bus, locks.clone()).await;
    let mut config = WatchConfig::new("flotilla-test");
    config.bus_address = Some(bus.address.clone());
    let awake = KeepAwake::hold(&config).await.unwrap();
    {
        let locks = locks.lock().unwrap();
        assert_eq!(locks.len(), 1);
        let (what, who, _, mode) = &locks[0].args;
        // Idle only: a sleep the owner asks for is never held back.
        assert_eq!(
            (what.as_str(), who.as_str(), mode.as_str()),
            ("idle", "flotilla-test", "block")
        );
        assert!(locks[0].open());
    }
    drop(awake);
    assert!(locks.lock().unwrap()[0].closed());
}

#[tokio::test]
async fn fails_without_logind() {
    let bus = private_bus();
    let mut config = WatchConfig::new("flotilla-test");
    config.bus_address = Some(bus.address.clone());
    let err = PowerWatch::start(&config).await.unwrap_err();
    assert!(err.to_string().contains("logind"), "{err}");
}
