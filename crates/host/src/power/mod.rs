//! Hearing the OS announce sleep and wake, so the agent can hand its work back before the machine
//! sleeps and take work again after it wakes.
//!
//! [`PowerWatch::start`] subscribes to the OS's announcements and, where the OS allows it, holds
//! sleep back for a moment: [`PowerWatch::next`] yields [`PowerEvent::WillSleep`] while sleep
//! waits, the caller hands its work back and calls [`PowerWatch::release`] to let sleep proceed
//! (or the OS's own time limit passes). After wake, [`PowerWatch::next`] yields
//! [`PowerEvent::Woke`], and the watch holds the next sleep back again.
//!
//! Each OS's notification is turned into a [`PowerEvent`] by a plain function that builds on
//! every OS ([`from_logind`], [`from_iokit_message`], [`from_power_broadcast`]), so recorded
//! notifications are tested everywhere.
//!
//! # Platform behavior
//!
//! - Linux: logind on the system bus (the address in `DBUS_SYSTEM_BUS_ADDRESS` when set, else
//!   the standard one, or [`WatchConfig::bus_address`]). The watch takes a *delay* inhibitor
//!   lock, `org.freedesktop.login1.Manager.Inhibit("sleep:shutdown", who, why, "delay")`, and listens for
//!   the manager's `PrepareForSleep` and `PrepareForShutdown` signals. `PrepareForSleep(true)` is
//!   [`PowerEvent::WillSleep`]; logind then waits until the lock's descriptor is closed
//!   ([`PowerWatch::release`]) or its `InhibitDelayMaxSec` (5 s by default) passes.
//!   `PrepareForSleep(false)` is [`PowerEvent::Woke`], and the lock is taken again. The same
//!   lock (`"sleep:shutdown"`) holds a shutdown, restart or log-out back:
//!   `PrepareForShutdown(true)` is [`PowerEvent::WillShutDown`], and `PrepareForShutdown(false)`
//!   (the shutdown was called off) is [`PowerEvent::ShutdownCalledOff`].
//! - macOS: IOKit's root power domain. The watch's own thread calls `IORegisterForSystemPower`
//!   and runs a CoreFoundation run loop with the notification port's source; [`iokit_action`]
//!   says what each message does. `kIOMessageCanSystemSleep` (an idle sleep is proposed) is
//!   answered at once with `IOAllowPowerChange`. `kIOMessageSystemWillSleep` is
//!   [`PowerEvent::WillSleep`], and its acknowledgement waits for [`PowerWatch::release`]:
//!   macOS waits for it up to 30 s. `kIOMessageSystemHasPoweredOn` is [`PowerEvent::Woke`].
//!   Every sleep is held back this way, so [`PowerWatch::holds_sleep`] is true while the watch
//!   runs. Shutdown is not announced to this watch.
//! - Windows: powrprof's `PowerRegisterSuspendResumeNotification` with a callback
//!   (`DEVICE_NOTIFY_CALLBACK`), which Windows calls on a thread of its own with the
//!   `WM_POWERBROADCAST` event: `PBT_APMSUSPEND` is [`PowerEvent::WillSleep`] and
//!   `PBT_APMRESUMEAUTOMATIC` is [`PowerEvent::Woke`] ([`from_power_broadcast`]). Windows has
//!   no delay lock: the machine suspends about 2 s after `PBT_APMSUSPEND` whatever the agent
//!   does, so [`PowerWatch::release`] does nothing and [`PowerWatch::holds_sleep`] is always
//!   false. Shutdown is not announced to this watch.
//! - Elsewhere: [`PowerError::Unsupported`].

crate::os_module!();

mod parse;

pub use parse::{
    IokitAction, from_iokit_message, from_logind, from_power_broadcast, iokit, iokit_action, pbt,
};

// The agent moves its watch and its hold into tasks of their own, on every OS.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<PowerWatch>();
    send::<KeepAwake>();
};

/// What the OS announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerEvent {
    /// The machine is about to sleep (suspend or hibernate).
    WillSleep,
    /// The machine woke from sleep.
    Woke,
    /// The machine is about to shut down, restart or log the user out.
    WillShutDown,
    /// An announced shutdown was called off: the machine goes on as before.
    ShutdownCalledOff,
}

/// Why a watch could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// This OS's watcher does not exist (yet).
    #[error("sleep and wake are not watched on {0}")]
    Unsupported(&'static str),
    /// The OS's power service could not be reached or refused.
    #[error("{0}")]
    Service(String),
}

/// How a watch introduces itself and where it listens.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Who holds sleep back, as the OS shows it (`systemd-inhibit --list` on Linux).
    pub who: String,
    /// Why, as the OS shows it.
    pub why: String,
    /// Linux: the system bus's address; `None` reads `DBUS_SYSTEM_BUS_ADDRESS`, else the
    /// standard address.
    pub bus_address: Option<String>,
}

impl WatchConfig {
    /// A config naming `who`, with Flotilla's reason and the standard bus.
    pub fn new(who: impl Into<String>) -> WatchConfig {
        WatchConfig {
            who: who.into(),
            why: "Hands work back before the machine sleeps".into(),
            bus_address: None,
        }
    }
}

/// A subscription to the OS's sleep and wake announcements; see the module's documentation.
#[derive(Debug)]
pub struct PowerWatch {
    inner: imp::Watch,
}

impl PowerWatch {
    /// Subscribes and, where the OS allows it, starts holding the next sleep back.
    pub async fn start(config: &WatchConfig) -> Result<PowerWatch, PowerError> {
        Ok(PowerWatch {
            inner: imp::Watch::start(config).await?,
        })
    }

    /// The next announcement. After [`PowerEvent::Woke`] the next sleep is held back again
    /// (where the OS allows it). An error ends the watch: the OS's service went away.
    pub async fn next(&mut self) -> Result<PowerEvent, PowerError> {
        self.inner.next().await
    }

    /// Lets a sleep the watch is holding back proceed. Idempotent; dropping the watch releases
    /// too.
    pub fn release(&mut self) {
        self.inner.release();
    }

    /// Whether the watch holds the next sleep (or the current one) back until
    /// [`PowerWatch::release`]: on Linux while it has logind's lock, on macOS while it runs, on
    /// Windows never.
    pub fn holds_sleep(&self) -> bool {
        self.inner.holds_sleep()
    }
}

/// Keeps the machine from sleeping *by itself* (after the owner has been idle for a while) for
/// as long as it is held; dropping it lets the OS's idle sleep happen again. A sleep the owner
/// asks for (closing the lid, the sleep menu, a low battery) is never held back.
///
/// - Linux: logind's `Inhibit("idle", who, why, "block")`, which holds back logind's own idle
///   action (and desktops that honour logind's idle inhibitors).
/// - macOS: an `IOPMAssertion` of type `PreventUserIdleSystemSleep`, named with `config.why`.
/// - Windows: a power request (`PowerCreateRequest`, with `config.why` as its reason) set to
///   `PowerRequestSystemRequired`. Wine has no power requests: there holding fails with
///   [`PowerError::Service`].
#[derive(Debug)]
pub struct KeepAwake {
    _inner: imp::Awake,
}

impl KeepAwake {
    /// Starts keeping the machine awake; `config.who` and `config.why` are what the OS shows.
    pub async fn hold(config: &WatchConfig) -> Result<KeepAwake, PowerError> {
        Ok(KeepAwake {
            _inner: imp::Awake::hold(config).await?,
        })
    }
}
