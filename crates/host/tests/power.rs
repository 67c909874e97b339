//! The Linux sleep watch against a private bus and a stand-in for logind (see
//! `flotilla_testkit::logind`: a `dbus-daemon` of the test's own, and a stand-in written here,
//! not systemd's logind).

#![cfg(target_os = "linux")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_host::power::{KeepAwake, PowerEvent, PowerWatch, WatchConfig};
use flotilla_testkit::logind::{self, emit, private_bus, stand_in_logind};

/// A watch's config naming the test, on `bus`.
fn on(bus: &logind::Bus) -> WatchConfig {
    WatchConfig {
        bus_address: Some(bus.address.clone()),
        ..WatchConfig::new("flotilla-test")
    }
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

    let config = on(&bus);
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
    let config = on(&bus);
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
    let config = on(&bus);
    let err = PowerWatch::start(&config).await.unwrap_err();
    assert!(err.to_string().contains("logind"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logind_leaving_the_bus_ends_the_watch() {
    let bus = private_bus();
    let locks = Arc::new(Mutex::new(Vec::new()));
    let logind = stand_in_logind(&bus, locks.clone()).await;
    let config = on(&bus);
    let mut watch = PowerWatch::start(&config).await.unwrap();
    // logind restarts: its connection (and its name) leaves the bus.
    drop(logind);
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch went on as if logind were there");
    let err = ended.unwrap_err();
    assert!(err.to_string().contains("logind left"), "{err}");
    // A new logind on the bus: a new watch follows it and hears it.
    let logind = stand_in_logind(&bus, locks.clone()).await;
    let mut watch = PowerWatch::start(&config).await.unwrap();
    emit(&logind, "PrepareForSleep", true).await;
    assert_eq!(next(&mut watch).await, PowerEvent::WillSleep);
}
