//! Noticing that the network changed or that the machine slept, so that the agent rechecks
//! its links at once instead of waiting for a timeout.
//!
//! [`NetWatch::start`] runs one background thread that bumps a counter on every change it
//! sees; consumers [`NetWatch::subscribe`] and react when the counter moves (a burst of kernel
//! messages coalesces into one wake-up, since a `watch` channel keeps only the latest value).
//!
//! - **Linux**: a netlink route socket subscribed to link, address and route changes (an
//!   interface going down or up, a new DHCP lease, a VPN coming up). Nothing is polled.
//! - **Elsewhere** (and on Linux if netlink is refused): every [`POLL_EVERY`] the interface
//!   addresses and the default route's source address are compared with the last reading.
//! - **Everywhere**: a jump of the wall clock against the monotonic clock reveals a sleep (the
//!   monotonic clock stops while the machine is suspended) or a clock step; both are reported
//!   as [`Change::Wake`].

#[cfg(target_os = "linux")]
mod linux;
mod poll;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

/// How often the portable fallback compares addresses.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// A wall-clock advance this much larger than the monotonic one counts as a wake from sleep.
pub const WAKE_JUMP: Duration = Duration::from_secs(5);

/// What was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// An interface, address or route changed.
    Network,
    /// The machine slept (or its clock was stepped).
    Wake,
}

/// The latest change: `generation` counts changes since the watch started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub generation: u64,
    pub last: Option<Change>,
}

/// A running watch; it stops when dropped.
#[derive(Debug)]
pub struct NetWatch {
    rx: watch::Receiver<Seen>,
    tx: Arc<watch::Sender<Seen>>,
    stop: Arc<AtomicBool>,
    /// How changes are noticed ("netlink" or "polling"), for `flotilla doctor`.
    pub method: &'static str,
}

impl NetWatch {
    /// Starts watching this machine's network (in the calling thread's network namespace on
    /// Linux).
    pub fn start() -> NetWatch {
        let (tx, rx) = watch::channel(Seen::default());
        let tx = Arc::new(tx);
        let stop = Arc::new(AtomicBool::new(false));
        let notifier = Notifier {
            tx: tx.clone(),
            clock: WallClock::new(),
        };
        #[cfg(target_os = "linux")]
        match linux::Socket::open() {
            Ok(socket) => {
                let stop2 = stop.clone();
                let spawned = std::thread::Builder::new()
                    .name("flotilla-netwatch".into())
                    .spawn(move || linux::run(socket, notifier, &stop2));
                if spawned.is_ok() {
                    return NetWatch {
                        rx,
                        tx,
                        stop,
                        method: "netlink",
                    };
                }
                tracing::warn!("cannot start the network watch thread; polling instead");
                return Self::polling(rx, tx, stop, None);
            }
            Err(e) => {
                tracing::info!("netlink is unavailable ({e}); polling the network instead");
                return Self::polling(rx, tx, stop, Some(notifier));
            }
        }
        #[allow(unreachable_code)]
        Self::polling(rx, tx, stop, Some(notifier))
    }

    /// The portable watch (address polling and the clock check), which [`NetWatch::start`]
    /// falls back to where netlink is unavailable.
    pub fn start_polling() -> NetWatch {
        let (tx, rx) = watch::channel(Seen::default());
        let tx = Arc::new(tx);
        let notifier = Notifier {
            tx: tx.clone(),
            clock: WallClock::new(),
        };
        Self::polling(rx, tx, Arc::new(AtomicBool::new(false)), Some(notifier))
    }

    fn polling(
        rx: watch::Receiver<Seen>,
        tx: Arc<watch::Sender<Seen>>,
        stop: Arc<AtomicBool>,
        notifier: Option<Notifier>,
    ) -> NetWatch {
        if let Some(notifier) = notifier {
            let stop2 = stop.clone();
            let _ = std::thread::Builder::new()
                .name("flotilla-netwatch".into())
                .spawn(move || poll::run(notifier, &stop2));
        }
        NetWatch {
            rx,
            tx,
            stop,
            method: "polling",
        }
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<Seen> {
        self.rx.clone()
    }

    /// A handle through which the OS's own wake announcement reaches the watch's subscribers
    /// at once, before any clock check would notice the jump.
    pub fn woke_handle(&self) -> WokeHandle {
        WokeHandle {
            tx: self.tx.clone(),
        }
    }
}

/// Reports a wake the OS announced ([`NetWatch::woke_handle`]).
#[derive(Debug, Clone)]
pub struct WokeHandle {
    tx: Arc<watch::Sender<Seen>>,
}

impl WokeHandle {
    /// The machine woke: subscribers see [`Change::Wake`].
    pub fn woke(&self) {
        bump(&self.tx, Change::Wake);
    }
}

fn bump(tx: &watch::Sender<Seen>, change: Change) {
    tx.send_modify(|s| {
        s.generation += 1;
        s.last = Some(change);
    });
    tracing::debug!(?change, "network watch");
}

impl Drop for NetWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Publishes changes (owned by the watch thread).
struct Notifier {
    tx: Arc<watch::Sender<Seen>>,
    clock: WallClock,
}

impl Notifier {
    fn bump(&self, change: Change) {
        bump(&self.tx, change);
    }

    /// Checks the clocks; reports a wake when the wall clock jumped.
    fn check_clock(&mut self) {
        if self.clock.jumped() {
            tracing::info!("the clock jumped: the machine slept or its time was set");
            self.bump(Change::Wake);
        }
    }
}

/// Compares the wall clock with the monotonic clock between calls.
#[derive(Debug)]
struct WallClock {
    mono: Instant,
    wall: SystemTime,
}

impl WallClock {
    fn new() -> Self {
        WallClock {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn jumped(&mut self) -> bool {
        let (mono, wall) = (Instant::now(), SystemTime::now());
        let jumped = wall_jump(
            mono.duration_since(self.mono),
            wall.duration_since(self.wall).ok(),
        );
        (self.mono, self.wall) = (mono, wall);
        jumped
    }
}

/// True when the wall clock moved by more than [`WAKE_JUMP`] beyond the monotonic clock, or
/// went backwards by more than that.
fn wall_jump(mono: Duration, wall: Option<Duration>) -> bool {
    match wall {
        Some(wall) => wall.saturating_sub(mono) > WAKE_JUMP,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wall_clock_jump_counts_as_a_wake() {
        let s = Duration::from_secs;
        assert!(!wall_jump(s(1), Some(s(1))));
        assert!(!wall_jump(s(2), Some(s(6))));
        assert!(wall_jump(s(1), Some(s(3600))));
        // A clock set backwards.
        assert!(wall_jump(s(1), None));
    }
}
