//! The owner's input as it happens: [`InputWatch`] calls back on each key press, button press,
//! pointer move or touch, so that the politeness loop holds the node back on the event itself
//! rather than at its next look at the idle time.
//!
//! One background thread per watch blocks on the OS's own notification and costs nothing while
//! the owner is away; dropping the watch stops it. Input that streams (a moving pointer) is
//! coalesced: the callback runs at most once per [`COALESCE`] ([`Coalescer`]).
//!
//! # Platform behavior
//!
//! - Linux: XInput2 raw events (`XI_RawKeyPress`, `XI_RawButtonPress`, `XI_RawMotion`,
//!   `XI_RawTouchBegin`) of every master device, selected on the root window of the given X
//!   display over a connection of the watch's own (libX11 and libXi loaded at run time, as the
//!   idle sensor loads libX11 and libXss: [`crate::x11`]). The thread waits in `poll` on the
//!   connection's socket and an `eventfd` that stops it. A lost display (the owner logged out)
//!   is opened again every [`REOPEN_EVERY`].
//! - macOS: a listen-only `CGEventTap` at the session level for key, button, scroll and pointer
//!   events, on a run loop of the thread's own. It needs the Input Monitoring permission; without
//!   it there is no watch, and the reason says so.
//! - Windows: low-level keyboard and mouse hooks (`WH_KEYBOARD_LL`, `WH_MOUSE_LL`) on a thread
//!   with a message loop; the hooks only note the event and return at once, as Windows requires.
//! - Elsewhere: no watch ([`UNSUPPORTED`]).
//!
//! Which events count is decided by plain functions in [`events`], which build and are tested on
//! every OS.

use std::time::{Duration, Instant};

pub mod events;

crate::os_module!();

/// The callback runs at most this often while input streams.
pub const COALESCE: Duration = Duration::from_millis(30);

/// How often a lost display is tried again (Linux).
pub const REOPEN_EVERY: Duration = Duration::from_secs(10);

/// Why there is no watch on an OS without one.
pub const UNSUPPORTED: &str = "no input events on this OS";

/// Starts the watch's thread running `run`, which reports through its sender either the handle
/// the watch stops it by (its run loop, its thread id) or why it cannot watch; returns that
/// handle and the thread. Used where the OS delivers input on a thread of the watch's own.
#[cfg(any(target_os = "macos", windows))]
fn start_thread<H: Send + 'static>(
    run: impl FnOnce(std::sync::mpsc::Sender<Result<H, String>>) + Send + 'static,
) -> Result<(H, std::thread::JoinHandle<()>), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("flotilla-input".into())
        .spawn(move || run(tx))
        .map_err(|e| format!("cannot start the input thread: {e}"))?;
    match rx.recv() {
        Ok(Ok(handle)) => Ok((handle, thread)),
        Ok(Err(why)) => {
            let _ = thread.join();
            Err(why)
        }
        Err(_) => Err("the input thread ended".to_owned()),
    }
}

/// A running input watch; dropping it stops its thread.
#[derive(Debug)]
pub struct InputWatch {
    watch: imp::Watch,
    source: String,
}

impl InputWatch {
    /// Starts watching. `display` is the X display to watch on Linux (e.g. `":0"`; other OSes
    /// ignore it); `on_input` runs on the watch's thread on owner input, coalesced, and must be
    /// quick. The error says why there is no watch (no display, a missing library, no
    /// permission).
    pub fn start(
        display: Option<String>,
        on_input: impl Fn() + Send + 'static,
    ) -> Result<InputWatch, String> {
        let display = display.filter(|d| !d.is_empty());
        let mut coalescer = Coalescer::new(COALESCE);
        let note: Box<dyn FnMut() + Send> = Box::new(move || {
            if coalescer.due(Instant::now()) {
                on_input();
            }
        });
        let (watch, source) = imp::Watch::start(display, note)?;
        Ok(InputWatch { watch, source })
    }

    /// Where the events come from, e.g. `"xinput2::0"`.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl Drop for InputWatch {
    fn drop(&mut self) {
        self.watch.stop();
    }
}

/// Lets one event through per period: the first event passes, and those that follow it within
/// the period do not.
#[derive(Debug, Clone)]
pub struct Coalescer {
    every: Duration,
    last: Option<Instant>,
}

impl Coalescer {
    pub fn new(every: Duration) -> Coalescer {
        Coalescer { every, last: None }
    }

    /// Whether an event at `now` passes.
    pub fn due(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_input_passes_once_per_period() {
        let mut c = Coalescer::new(Duration::from_millis(30));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(c.due(t0), "the first event passes");
        assert!(!c.due(ms(1)));
        assert!(!c.due(ms(29)));
        assert!(c.due(ms(30)), "a period later, the next one does");
        assert!(!c.due(ms(59)));
        // A pointer moving every 8 ms for a second: about 34 calls, not 125.
        let passed = (0..125).filter(|i| c.due(ms(100 + i * 8))).count();
        assert!((32..=35).contains(&passed), "{passed}");
        // After a pause, the first event passes at once.
        assert!(c.due(ms(5_000)));
    }

    #[test]
    fn an_event_out_of_order_does_not_pass_twice() {
        let mut c = Coalescer::new(Duration::from_millis(30));
        let t0 = Instant::now() + Duration::from_secs(1);
        assert!(c.due(t0));
        assert!(!c.due(t0 - Duration::from_millis(5)));
    }
}
