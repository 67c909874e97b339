//! The network watch against the real kernel: each test runs in a network namespace of its own
//! (made with `unshare` for one thread, so the machine's own interfaces are untouched), changes
//! links and addresses with iproute2, and checks that every change is noticed. Needs root.
//!
//! Linux only: the namespaces and iproute2 it drives are Linux's.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use flotilla_net::NetWatch;
use flotilla_testkit::netns::ip;

/// Runs `f` on a thread inside a fresh network namespace (threads it starts inherit it).
fn in_own_netns(f: impl FnOnce() + Send + 'static) {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "network namespaces need root: run the tests as root (CI does)"
    );
    std::thread::spawn(move || {
        // SAFETY: unshare(2) on this thread only; checked.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        f();
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// Waits until the watch's counter passes `after`; returns how long that took.
fn changed_after(w: &NetWatch, after: u64, within: Duration, what: &str) -> u64 {
    let rx = w.subscribe();
    let start = Instant::now();
    loop {
        let seen = *rx.borrow();
        if seen.generation > after {
            eprintln!("{what}: noticed in {:?} ({:?})", start.elapsed(), seen.last);
            return seen.generation;
        }
        assert!(
            start.elapsed() < within,
            "{what} was not noticed in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exercise(w: &NetWatch, within: Duration) {
    // Let the watch settle on the namespace's initial state.
    std::thread::sleep(Duration::from_millis(200));
    let g = w.subscribe().borrow().generation;
    ip(&[
        "link", "add", "fltest0", "type", "veth", "peer", "name", "fltest1",
    ]);
    ip(&["link", "set", "fltest0", "up"]);
    let g = changed_after(w, g, within, "a new interface");
    ip(&["addr", "add", "10.77.0.1/24", "dev", "fltest0"]);
    let g = changed_after(w, g, within, "a new address");
    ip(&["addr", "del", "10.77.0.1/24", "dev", "fltest0"]);
    ip(&["addr", "add", "10.77.0.2/24", "dev", "fltest0"]);
    let g = changed_after(w, g, within, "a changed address");
    ip(&["link", "set", "fltest0", "down"]);
    changed_after(w, g, within, "an interface going down");
}

#[test]
fn netlink_notices_links_and_addresses() {
    in_own_netns(|| {
        let w = NetWatch::start();
        assert_eq!(w.method, "netlink");
        exercise(&w, Duration::from_secs(5));
    });
}

#[test]
fn polling_notices_addresses() {
    in_own_netns(|| {
        let w = NetWatch::start_polling();
        assert_eq!(w.method, "polling");
        // Polling compares addresses only: the first step (a link without one) may pass
        // unnoticed, so give it an address at once.
        std::thread::sleep(Duration::from_millis(200));
        let g = w.subscribe().borrow().generation;
        ip(&[
            "link", "add", "fltest0", "type", "veth", "peer", "name", "fltest1",
        ]);
        ip(&["link", "set", "fltest0", "up"]);
        ip(&["addr", "add", "10.77.0.1/24", "dev", "fltest0"]);
        let within = flotilla_net::watch::POLL_EVERY * 3;
        let g = changed_after(&w, g, within, "a new address (polling)");
        ip(&["addr", "del", "10.77.0.1/24", "dev", "fltest0"]);
        ip(&["addr", "add", "10.77.0.2/24", "dev", "fltest0"]);
        changed_after(&w, g, within, "a changed address (polling)");
    });
}
