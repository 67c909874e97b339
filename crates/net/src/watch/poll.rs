//! The portable watch: compare the machine's addresses every [`super::POLL_EVERY`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Change, Notifier, POLL_EVERY};

/// What identifies the network state: every interface address and the default route's source.
fn reading() -> (Vec<IpAddr>, Option<IpAddr>) {
    let mut addresses = flotilla_host::addr::interface_addresses();
    addresses.sort();
    let route = flotilla_host::addr::route_to(crate::lan::DEFAULT_ROUTE_PROBE).ok();
    (addresses, route)
}

pub(super) fn run(mut notifier: Notifier, stop: &AtomicBool) {
    let mut last = reading();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL_EVERY);
        notifier.check_clock();
        let now = reading();
        if now != last {
            notifier.bump(Change::Network);
            last = now;
        }
        if notifier.tx.is_closed() {
            return;
        }
    }
}
