//! A private X server for tests: Xvfb on the first free display from :90, killed when dropped
//! (also when the test panics). Shared by the idle sensor's test and the desktop app's tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Xvfb, killed when dropped (also when the test panics).
#[derive(Debug)]
pub struct Xvfb {
    child: Child,
    pub display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM lets the server remove its lock file and socket; a killed one leaves them,
        // and the display looks taken to the next test.
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether display `n` is taken: its lock file names a live process. A lock left by a server
/// that died is removed, with its socket.
fn taken(n: u32) -> bool {
    let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
    let Ok(text) = std::fs::read_to_string(&lock) else {
        return socket_of(n).exists();
    };
    let alive = text
        .trim()
        .parse::<i32>()
        // SAFETY: signal 0 only checks that the process exists.
        .is_ok_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
    if !alive {
        let _ = std::fs::remove_file(&lock);
        let _ = std::fs::remove_file(socket_of(n));
    }
    alive
}

fn socket_of(n: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/.X11-unix/X{n}"))
}

/// Starts Xvfb on the first free display from :90, and waits for its socket.
pub fn start_xvfb(log: &Path) -> Xvfb {
    let mut tried = Vec::new();
    for n in 90..130 {
        if taken(n) {
            continue;
        }
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([
                display.as_str(),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start Xvfb ({e}): install the xvfb package (tests/run does)")
            });
        let mut xvfb = Xvfb { child, display };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if socket_of(n).exists() {
                return xvfb;
            }
            if let Some(status) = xvfb.child.try_wait().unwrap() {
                // Most likely another server took the display meanwhile: try the next one.
                let err = std::fs::read_to_string(log).unwrap_or_default();
                tried.push(format!("{}: exited {status}: {}", xvfb.display, err.trim()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Xvfb {} did not create {} in 15 s",
                xvfb.display,
                socket_of(n).display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not start Xvfb on any display :90..:129: {tried:#?}");
}
