//! The politeness loop and an announced sleep, without Ray: the loop decides "Going to sleep"
//! and acknowledges the hand-back at once (the OS is waiting), wake clears it, and with
//! `on_sleep = "ignore"` the loop acknowledges without stopping anything. The machine's real
//! sensors feed the loop; the sleep is announced through the feed the OS watch writes to.

use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::politeness::{self, Published};
use flotilla_agent::sleep::SleepFeed;
use flotilla_policy::{Leaving, OnSleep, Pause, Settings};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

async fn until(
    rx: &mut watch::Receiver<Option<Arc<Published>>>,
    what: &str,
    ok: impl Fn(&Published) -> bool,
) -> Arc<Published> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(p) = rx.borrow_and_update().clone()
                && ok(&p)
            {
                return p;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no decision {what} within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_sleep_is_decided_and_handed_back_and_wake_clears_it() {
    let feed = Arc::new(SleepFeed::default());
    let policy = flotilla_agent::sampler::PolicyFeed::default();
    let (tx, mut rx) = watch::channel(None);
    let stop = CancellationToken::new();
    tokio::spawn(politeness::run(
        Settings::default(),
        politeness::Inputs {
            sensors: flotilla_host::sensors::Sensors::new(),
            idle: Default::default(),
            manual: Default::default(),
            policy: policy.clone(),
            sleep: feed.clone(),
            input: Default::default(),
            tick: politeness::TICK,
        },
        Vec::new,
        None,
        tx,
        stop.clone(),
    ));
    until(&mut rx, "at all", |_| true).await;

    let handed_back = feed.announce(Leaving::Sleep);
    tokio::time::timeout(Duration::from_secs(2), handed_back)
        .await
        .expect("the loop kept the OS waiting")
        .unwrap();
    let p = until(&mut rx, "to go to sleep", |p| {
        p.decision.reason.code() == "going_to_sleep"
    })
    .await;
    assert_eq!(p.decision.pause, Pause::Now);
    assert_eq!(p.sleep.leaving, Some(Leaving::Sleep));
    assert_eq!(p.reason_es, "Entrando en reposo");

    feed.clear(None);
    let p = until(&mut rx, "after wake", |p| p.sleep.leaving.is_none()).await;
    assert_ne!(p.decision.reason.code(), "going_to_sleep");

    // on_sleep = "ignore": acknowledged at once, nothing stops.
    *policy.lock().unwrap() = Some(Settings {
        on_sleep: OnSleep::Ignore,
        ..Settings::default()
    });
    let p = until(&mut rx, "with the new settings", |p| {
        p.sleep.leaving.is_none()
    })
    .await;
    let before = p.decision.reason.code();
    let handed_back = feed.announce(Leaving::ShutDown);
    tokio::time::timeout(Duration::from_secs(2), handed_back)
        .await
        .expect("the loop kept the OS waiting")
        .unwrap();
    let p = until(&mut rx, "with a shutdown announced", |p| {
        p.sleep.leaving == Some(Leaving::ShutDown)
    })
    .await;
    assert_ne!(p.decision.reason.code(), "shutting_down");
    assert_ne!(p.decision.pause, Pause::Now, "{before} -> {:?}", p.decision);
    stop.cancel();
}
