//! Linux: how long the machine's owner has not touched it. The first source that answers wins:
//!
//! 1. the X display ([`crate::x11`]), when one is configured: what the owner's desktop saw;
//! 2. terminal access times, as BOINC does on headless machines: the kernel updates a tty's
//!    atime when input is read from it (at most every 8 s, so this is 8 s coarse), so the most
//!    recent atime among `/dev/tty[0-9]*` (consoles) and `/dev/pts/[0-9]*` (ssh, terminal
//!    emulators) is the last keystroke anywhere;
//! 3. otherwise unknown, `from` = [`NO_IDLE_SOURCE`].
//!
//! Wayland sessions (`ext-idle-notify-v1`, Mutter's `org.gnome.Mutter.IdleMonitor`) and logind's
//! `IdleSinceHint` are later additions; all of them need a D-Bus or Wayland client.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::IdleReading;
use crate::x11::Connection;

/// The `from` of an idle reading with neither a display nor a terminal to read.
pub const NO_IDLE_SOURCE: &str = "no display and no terminals";

/// After a display could not be opened, how long to wait before trying again: opening costs a
/// connection attempt, and the display usually stays away (no session, no extension) for long.
const REOPEN_AFTER: Duration = Duration::from_secs(10);

/// Where idle time comes from: an X display (optional) and its connection, kept open across
/// readings and shared by clones.
#[derive(Debug, Clone, Default)]
pub struct IdleSource {
    display: Option<String>,
    x11: Arc<Mutex<X11State>>,
    /// The last terminals reading and when it was taken.
    terminals: Arc<Mutex<Option<(Instant, IdleReading)>>>,
}

/// How long a terminals reading is reused. The kernel moves a terminal's access time in steps of
/// 8 s (so that keystroke timing does not leak), so reading the terminals more often than this
/// learns little; in between, the idle time grows with the clock.
pub const TERMINALS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
enum X11State {
    #[default]
    Closed,
    Open(Connection),
    /// The last attempt failed, with this reason, at this time.
    Failed(String, Instant),
}

impl IdleSource {
    /// `display` is an X display name such as `":0"`; `None` (or empty) reads terminals only.
    pub fn new(display: Option<String>) -> IdleSource {
        IdleSource {
            display: display.filter(|d| !d.is_empty()),
            x11: Arc::default(),
            terminals: Arc::default(),
        }
    }

    pub fn read(&self, dev: &Path) -> IdleReading {
        let x11_failure = match &self.display {
            Some(display) => match self.read_x11(display) {
                Ok(reading) => return reading,
                Err(why) => Some(format!("x11 {display}: {why}")),
            },
            None => None,
        };
        if let Some(reading) = self.terminals(dev) {
            return match x11_failure {
                // Say why the display was passed over: a desktop machine read from terminals
                // only would look idle while its owner works.
                Some(why) => IdleReading {
                    from: format!("{} ({why})", reading.from),
                    ..reading
                },
                None => reading,
            };
        }
        IdleReading::unknown(match x11_failure {
            Some(why) => format!("{why}; no terminals"),
            None => NO_IDLE_SOURCE.to_owned(),
        })
    }

    /// [`terminals_idle`], read at most every [`TERMINALS_EVERY`].
    fn terminals(&self, dev: &Path) -> Option<IdleReading> {
        let mut cached = self.terminals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, reading)) = &*cached
            && at.elapsed() < TERMINALS_EVERY
        {
            return Some(IdleReading {
                idle: reading.idle.map(|i| i + at.elapsed()),
                ..reading.clone()
            });
        }
        let reading = terminals_idle(dev, SystemTime::now());
        // "No terminals" is cheap to find again, and a terminal may appear at any moment.
        *cached = reading.clone().map(|r| (Instant::now(), r));
        reading
    }

    fn read_x11(&self, display: &str) -> Result<IdleReading, String> {
        let mut state = self.x11.lock().unwrap_or_else(|e| e.into_inner());
        if let X11State::Failed(why, at) = &*state
            && at.elapsed() < REOPEN_AFTER
        {
            return Err(why.clone());
        }
        let mut conn = match std::mem::take(&mut *state) {
            X11State::Open(conn) => conn,
            X11State::Closed | X11State::Failed(..) => match Connection::open_screen_saver(display)
            {
                Ok(conn) => conn,
                Err(why) => {
                    *state = X11State::Failed(why.clone(), Instant::now());
                    return Err(why);
                }
            },
        };
        match conn.idle() {
            Some(idle) => {
                *state = X11State::Open(conn);
                Ok(IdleReading {
                    idle: Some(idle),
                    from: format!("x11-screensaver:{display}"),
                })
            }
            None => {
                // Lost (the session ended, the server died): `conn` is closed as it drops here,
                // and the display is tried again later.
                let why = "connection lost".to_owned();
                *state = X11State::Failed(why.clone(), Instant::now());
                Err(why)
            }
        }
    }
}

/// The time since the most recent access to a terminal under `dev` (`tty<N>` and `pts/<N>`), as
/// of `now`; `None` when there is no such terminal. An atime in the future (a clock step) counts
/// as "just now".
pub fn terminals_idle(dev: &Path, now: SystemTime) -> Option<IdleReading> {
    let numbered = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let candidates = [(dev.to_path_buf(), "tty"), (dev.join("pts"), "")];
    let mut latest: Option<(SystemTime, std::path::PathBuf)> = None;
    for (dir, prefix) in candidates {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_str().is_some_and(|n| numbered(n, prefix)) {
                continue;
            }
            let path = entry.path();
            // `metadata` follows links and stats the device node itself; the atime needs no
            // permission on the terminal.
            let Ok(atime) = std::fs::metadata(&path).and_then(|m| m.accessed()) else {
                continue;
            };
            if latest.as_ref().is_none_or(|(t, _)| atime > *t) {
                latest = Some((atime, path));
            }
        }
    }
    let (atime, path) = latest?;
    Some(IdleReading {
        idle: Some(now.duration_since(atime).unwrap_or(Duration::ZERO)),
        from: format!("tty-atime:{}", path.display()),
    })
}
