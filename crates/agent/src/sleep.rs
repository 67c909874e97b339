//! Sleep, wake and shutdown: the agent hears the OS announce them ([`flotilla_host::power`])
//! and tells the politeness loop, which hands the node's work back to the cluster before the
//! machine goes ([`crate::enforce::Enforcer::hand_back`]) and takes work again right after it
//! wakes.
//!
//! The order on an announced sleep: [`watch`] marks the feed as leaving and waits (at most
//! [`HAND_BACK_WITHIN`]) while the loop drains the node with reason PREEMPTION and ends it; only
//! then does it let the OS proceed. On wake it clears the feed, so the next decision starts the
//! node again without any backoff, and it prompts the session and the node to check themselves
//! at once, saying "Back after N min asleep".
//!
//! [`keep_awake`] holds the machine's own idle sleep back while the policy says so
//! (`keep_awake = true`, on mains power, lending, the owner away).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_host::power::{KeepAwake, PowerEvent, PowerWatch, WatchConfig};
use flotilla_policy::Leaving;
use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// The most the agent keeps an announced sleep waiting: under logind's default
/// `InhibitDelayMaxSec` (5 s), and the first part of the 30 s macOS allows.
pub const HAND_BACK_WITHIN: Duration = Duration::from_secs(4);
/// How long a watch that failed (the OS's power service restarted) waits before it starts
/// again.
const WATCH_RETRY: Duration = Duration::from_secs(10);

/// What the OS announced, shared between [`watch`] and the politeness loop.
#[derive(Debug, Default)]
pub struct SleepFeed {
    state: Mutex<Announced>,
    /// Wakes the loop at once when the state changes.
    pub changed: Notify,
}

#[derive(Debug, Default)]
struct Announced {
    leaving: Option<Leaving>,
    /// Sent once the loop has handed the work back.
    ack: Option<oneshot::Sender<()>>,
    back: Option<Back>,
}

/// The last wake: how long the machine slept, in words.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Back {
    pub asleep_secs: u64,
    pub at_unix_ms: u64,
    pub text_en: String,
    pub text_es: String,
}

impl Back {
    fn after(asleep: Duration) -> Back {
        let (en, es) = asleep_words(asleep.as_secs());
        Back {
            asleep_secs: asleep.as_secs(),
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            text_en: format!("Back after {en} asleep"),
            text_es: format!("De vuelta tras {es} en reposo"),
        }
    }
}

/// A sleep's length as people say it: seconds under a minute, minutes under two hours, then
/// hours and minutes.
fn asleep_words(secs: u64) -> (String, String) {
    match secs {
        0..60 => (format!("{secs} s"), format!("{secs} s")),
        60..7200 => {
            let m = (secs + 30) / 60;
            (format!("{m} min"), format!("{m} min"))
        }
        _ => {
            let (h, m) = (secs / 3600, secs % 3600 / 60);
            (format!("{h} h {m} min"), format!("{h} h {m} min"))
        }
    }
}

/// What the loop publishes about sleep and wake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SleepReport {
    /// What the OS announced, while it is under way.
    pub leaving: Option<Leaving>,
    /// The last wake.
    pub back: Option<Back>,
    /// Whether the machine's idle sleep is held back now (`keep_awake`).
    pub keep_awake: bool,
}

impl SleepFeed {
    /// What the loop needs this tick: the announcement, and the hand-back to acknowledge when
    /// one is waiting.
    pub fn take(&self) -> (Option<Leaving>, Option<oneshot::Sender<()>>, Option<Back>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.leaving, s.ack.take(), s.back.clone())
    }

    /// Whether a hand-back waits for the loop.
    pub fn is_waiting(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ack
            .is_some()
    }

    /// Announces that the machine is leaving; resolves once the loop handed the work back.
    pub fn announce(&self, leaving: Leaving) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.leaving = Some(leaving);
            s.ack = Some(tx);
        }
        self.changed.notify_one();
        rx
    }

    /// The machine is back (or the shutdown was called off).
    pub fn clear(&self, back: Option<Back>) {
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.leaving = None;
            s.ack = None;
            if back.is_some() {
                s.back = back;
            }
        }
        self.changed.notify_one();
    }
}

/// How the agent introduces itself to the OS's power service.
pub fn watch_config() -> WatchConfig {
    WatchConfig::new("Flotilla")
}

/// Hears the OS's announcements until `stop`, and hands the work back through `feed` before
/// each sleep or shutdown; `woke` runs after each wake (the session and the node check
/// themselves). Where the OS's announcements cannot be heard it says so once and ends.
pub async fn watch(
    feed: Arc<SleepFeed>,
    woke: impl Fn() + Send + 'static,
    stop: CancellationToken,
) {
    let config = watch_config();
    let mut watch = match PowerWatch::start(&config).await {
        Ok(w) => w,
        Err(e) => {
            tracing::info!("sleep and wake are not announced to the agent: {e}");
            return;
        }
    };
    tracing::info!("listening for sleep and wake");
    let mut slept_at: Option<SystemTime> = None;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = watch.next() => event,
        };
        match event {
            Ok(PowerEvent::WillSleep) => {
                hand_back(&feed, &mut watch, Leaving::Sleep).await;
                slept_at = Some(SystemTime::now());
            }
            Ok(PowerEvent::WillShutDown) => hand_back(&feed, &mut watch, Leaving::ShutDown).await,
            Ok(PowerEvent::Woke) => {
                // The wall clock counts the time asleep; the monotonic one may not.
                let asleep = slept_at
                    .take()
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                let back = Back::after(asleep);
                tracing::info!(asleep_secs = back.asleep_secs, "{}", back.text_en);
                feed.clear(Some(back));
                woke();
            }
            Ok(PowerEvent::ShutdownCalledOff) => {
                tracing::info!("the shutdown was called off; back to work");
                feed.clear(None);
            }
            Err(e) => {
                // The power service went away (logind restarted): nothing is held back any
                // more. Listen again once it is back.
                tracing::warn!("no longer hearing sleep and wake: {e}; trying again");
                feed.clear(None);
                watch = loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(WATCH_RETRY) => {}
                    }
                    match PowerWatch::start(&config).await {
                        Ok(w) => break w,
                        Err(e) => tracing::debug!("sleep and wake still not heard: {e}"),
                    }
                };
                tracing::info!("listening for sleep and wake again");
            }
        }
    }
}

/// Lets the loop hand the work back (at most [`HAND_BACK_WITHIN`]), then lets the OS go on.
async fn hand_back(feed: &SleepFeed, watch: &mut PowerWatch, leaving: Leaving) {
    tracing::info!(
        ?leaving,
        "the machine is about to go; handing the work back"
    );
    let started = std::time::Instant::now();
    let done = feed.announce(leaving);
    if tokio::time::timeout(HAND_BACK_WITHIN, done).await.is_err() {
        tracing::warn!(
            "the work was not handed back in {HAND_BACK_WITHIN:?}; letting the machine go"
        );
    }
    watch.release();
    tracing::info!(
        secs = started.elapsed().as_secs_f32(),
        "handed back; the machine may go"
    );
}

/// Holds the machine's own idle sleep back while the latest decision says so
/// ([`crate::politeness::Published::sleep`]`.keep_awake`), until `stop`.
pub async fn keep_awake(
    mut published: watch::Receiver<Option<Arc<crate::politeness::Published>>>,
    stop: CancellationToken,
) {
    let config = WatchConfig {
        why: "Lends this computer to the team's cluster while you are away".into(),
        ..watch_config()
    };
    let mut held: Option<KeepAwake> = None;
    let mut refused = false;
    loop {
        let wanted = published
            .borrow_and_update()
            .as_ref()
            .is_some_and(|p| p.sleep.keep_awake);
        match (wanted, held.is_some()) {
            (true, false) if !refused => match KeepAwake::hold(&config).await {
                Ok(k) => {
                    tracing::info!("keeping the machine awake while it lends and you are away");
                    held = Some(k);
                }
                Err(e) => {
                    tracing::warn!("cannot keep the machine awake: {e}");
                    refused = true;
                }
            },
            (false, true) => {
                tracing::info!("the machine may sleep by itself again");
                held = None;
            }
            (false, false) => refused = false,
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = published.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_reads_as_people_say_it() {
        assert_eq!(
            Back::after(Duration::from_secs(42)).text_en,
            "Back after 42 s asleep"
        );
        assert_eq!(
            Back::after(Duration::from_secs(89)).text_en,
            "Back after 1 min asleep"
        );
        assert_eq!(
            Back::after(Duration::from_secs(90)).text_en,
            "Back after 2 min asleep"
        );
        assert_eq!(
            Back::after(Duration::from_secs(47 * 60)).text_es,
            "De vuelta tras 47 min en reposo"
        );
        assert_eq!(
            Back::after(Duration::from_secs(9 * 3600 + 5 * 60 + 7)).text_en,
            "Back after 9 h 5 min asleep"
        );
    }

    #[tokio::test]
    async fn an_announcement_waits_for_the_loop_and_wake_clears_it() {
        let feed = Arc::new(SleepFeed::default());
        let done = feed.announce(Leaving::Sleep);
        assert!(feed.is_waiting());
        let (leaving, ack, _) = feed.take();
        assert_eq!(leaving, Some(Leaving::Sleep));
        assert!(!feed.is_waiting(), "the hand-back is the loop's now");
        // Still leaving on the next tick, with nothing more to acknowledge.
        let (again, none, _) = feed.take();
        assert_eq!((again, none.is_none()), (Some(Leaving::Sleep), true));
        ack.unwrap().send(()).unwrap();
        done.await.unwrap();
        feed.clear(Some(Back::after(Duration::from_secs(120))));
        let (leaving, ack, back) = feed.take();
        assert_eq!((leaving, ack.is_none()), (None, true));
        assert_eq!(back.unwrap().text_en, "Back after 2 min asleep");
    }
}
