//! `tailscale status --json` comes from another program, whichever version is installed: any
//! bytes parse or fail cleanly, and every question asked of a parsed status answers.
#![no_main]

use flotilla_net::tailscale::{Status, looks_tailnet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(status) = Status::from_json(data) else {
        return;
    };
    let _ = status.is_running();
    let _ = status.guidance();
    let _ = status.self_ipv4();
    let _ = status.self_ipv6();
    // Hosts taken from the document itself, and a few fixed ones.
    let mut hosts: Vec<String> = ["100.64.0.1", "head.tailnet.ts.net", "fd7a:115c:a1e0::1", ""]
        .map(String::from)
        .to_vec();
    if let Ok(text) = std::str::from_utf8(data) {
        hosts.extend(
            text.split('"')
                .filter(|s| s.len() < 80)
                .take(16)
                .map(String::from),
        );
    }
    for h in &hosts {
        let _ = looks_tailnet(h);
        let _ = status.peer_for(h);
        let _ = status.peer_by_name(h);
    }
    let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let _ = status.check_head(&refs);
});
