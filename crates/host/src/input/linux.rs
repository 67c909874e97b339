//! Linux: XInput2 raw events from an X display, on a connection of the watch's own
//! ([`crate::x11::Connection`]). The thread sleeps in `poll` on the connection's socket and an
//! `eventfd`; a write to the latter stops it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;

use super::REOPEN_EVERY;
use crate::x11::Connection;

#[derive(Debug)]
pub(super) struct Watch {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

type Note = Box<dyn FnMut() + Send>;

/// A connection to `display` that receives raw input events.
fn open(display: &str) -> Result<Connection, String> {
    let mut conn = Connection::open(display)?;
    conn.select_raw_input()?;
    Ok(conn)
}

impl Watch {
    pub(super) fn start(display: Option<String>, note: Note) -> Result<(Watch, String), String> {
        let display = display.ok_or("no X display configured")?;
        let conn = open(&display).map_err(|e| format!("x11 {display}: {e}"))?;
        // SAFETY: plain eventfd(2); the result is checked before it is owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(fd) };
        let stop_fd = stop.as_raw_fd();
        let source = format!("xinput2:{display}");
        let thread = std::thread::Builder::new()
            .name("flotilla-input".into())
            .spawn(move || watch(conn, &display, stop_fd, note))
            .map_err(|e| format!("cannot start the input thread: {e}"))?;
        Ok((
            Watch {
                stop,
                thread: Some(thread),
            },
            source,
        ))
    }

    pub(super) fn stop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to our own eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until `fds` has something to read or `timeout_ms` passed (-1: no limit); which of them
/// are readable (or hung up).
fn wait(fds: &[i32], timeout_ms: i32) -> Vec<bool> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polled` is a valid array of `polled.len()` pollfds.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        // EINTR: nothing is ready; the caller polls again.
        return vec![false; fds.len()];
    }
    polled.iter().map(|p| p.revents != 0).collect()
}

/// The watch's thread: drain the connection's events, call back on input, sleep until the
/// server sends more or `stop` is written; on a lost display, try again every [`REOPEN_EVERY`].
fn watch(conn: Connection, name: &str, stop: i32, mut note: Note) {
    let mut conn = Some(conn);
    loop {
        match conn.as_mut() {
            Some(c) => match c.drain_input() {
                Some(n) => {
                    if n > 0 {
                        note();
                    }
        let ready = wait(&[stop, c.fd()], -1);
                    if ready[0] {
                        return;
                    }
                }
                None => {
                    tracing::warn!("input watch: the X display {name} is gone");
                    conn = None;
                }
            },
            None => {
                let ready = wait(&[stop], REOPEN_EVERY.as_millis() as i32);
                if ready[0] {
                    return;
                }
                if let Ok(c) = open(name) {
                    tracing::info!("input watch: the X display {name} is back");
                    conn = Some(c);
                }
            }
        }
    }
}
