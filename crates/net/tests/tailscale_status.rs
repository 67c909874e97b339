//! The status parser against recorded documents (written by hand after the shape of
//! `tailscale status --json`; keys, addresses and names are invented).

use std::net::IpAddr;

use flotilla_net::tailscale::HeadPeer;
use flotilla_net::{BackendState, Status, TailscaleError};

fn fixture(name: &str) -> Status {
    let path = format!(
        "{}/tests/fixtures/tailscale/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Status::from_json(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn running_has_self_three_peers_and_magic_dns() {
    let s = fixture("running");
    assert_eq!(s.backend_state, BackendState::Running);
    assert!(s.is_running());
    assert_eq!(s.guidance(), None);
    assert_eq!(s.version, "1.84.2-t2f3c5b7e9-g4d1a0c9b8");
    assert!(s.magic_dns_enabled);
    assert_eq!(s.magic_dns_suffix.as_deref(), Some("tail4e2a1.ts.net"));
    assert_eq!(s.tailnet.as_deref(), Some("ada@example.com"));
    assert!(s.health.is_empty());
    assert_eq!(s.auth_url, None);

    let me = s.self_node.as_ref().expect("Self");
    assert_eq!(me.hostname, "atlas");
    assert_eq!(me.dns_name, "atlas.tail4e2a1.ts.net");
    assert_eq!(me.os, "linux");
    assert_eq!(me.relay.as_deref(), Some("fra"));
    assert_eq!(me.last_seen, None, "Go's zero time means never");
    assert_eq!(s.self_ipv4(), Some(ip("100.101.7.12")));
    assert_eq!(s.self_ipv6(), Some(ip("fd7a:115c:a1e0::4c01:70c")));

    let names: Vec<&str> = s.peers.iter().map(|p| p.hostname.as_str()).collect();
    assert_eq!(names, ["Adas-MacBook-Pro", "DESKTOP-K3J9Q2L", "gpu-box"]);

    let mac = &s.peers[0];
    assert_eq!(mac.os, "macOS");
    assert!(mac.online);
    assert_eq!(mac.dns_name, "adas-macbook-pro.tail4e2a1.ts.net");
    assert_eq!(mac.id, "nv8yJwQLxCNTRL");
    assert!(mac.public_key.starts_with("nodekey:"));
    assert_eq!(
        mac.addresses,
        vec![ip("100.88.41.3"), ip("fd7a:115c:a1e0::e901:2903")]
    );

    let windows = &s.peers[1];
    assert_eq!(windows.os, "windows");
    assert!(!windows.online);
    assert_eq!(windows.last_seen.as_deref(), Some("2025-06-09T17:42:08Z"));
    assert_eq!(windows.relay.as_deref(), Some("lhr"));

    let linux = &s.peers[2];
    assert_eq!(linux.os, "linux");
    assert!(linux.online);
    assert_eq!(linux.ipv4(), Some(ip("100.64.12.9")));
    assert_eq!(linux.ipv6(), Some(ip("fd7a:115c:a1e0::1f01:c09")));
    assert!(
        s.peers
            .iter()
            .flat_map(|p| &p.addresses)
            .all(|a| flotilla_net::is_tailscale_ip(*a))
    );
}

#[test]
fn peers_are_found_by_any_of_their_names() {
    let s = fixture("running");
    for name in [
        "gpu-box",
        "GPU-BOX",
        "gpu-box.tail4e2a1.ts.net",
        "gpu-box.tail4e2a1.ts.net.",
        "Gpu-Box.TAIL4E2A1.ts.net",
        " gpu-box ",
    ] {
        let peer = s
            .peer_by_name(name)
            .unwrap_or_else(|| panic!("{name:?} not found"));
        assert_eq!(peer.hostname, "gpu-box", "{name:?}");
    }
    assert_eq!(
        s.peer_by_name("adas-macbook-pro").map(|p| p.os.as_str()),
        Some("macOS")
    );
    assert_eq!(
        s.peer_by_name("desktop-k3j9q2l").map(|p| p.os.as_str()),
        Some("windows")
    );
    for missing in [
        "",
        ".",
        "atlas",
        "gpu",
        "gpu-box.other.ts.net",
        "tail4e2a1.ts.net",
    ] {
        assert!(
            s.peer_by_name(missing).is_none(),
            "{missing:?} should not match"
        );
    }
}

#[test]
fn logged_out_needs_login_and_says_how() {
    let s = fixture("logged-out");
    assert_eq!(s.backend_state, BackendState::NeedsLogin);
    assert!(s.self_node.is_none());
    assert!(s.peers.is_empty());
    assert!(s.tailscale_ips.is_empty());
    assert_eq!(s.self_ipv4(), None);
    assert_eq!(s.self_ipv6(), None);
    assert_eq!(s.magic_dns_suffix, None);
    assert!(!s.magic_dns_enabled);
    assert_eq!(
        s.auth_url.as_deref(),
        Some("https://login.tailscale.com/a/1c9e04a2b7d53f")
    );
    assert_eq!(s.health.len(), 1);
    let guidance = s.guidance().expect("guidance");
    assert!(guidance.contains("tailscale up"), "{guidance}");
    assert!(guidance.contains("Tailscale app"), "{guidance}");
    assert!(
        guidance.contains("https://login.tailscale.com/a/1c9e04a2b7d53f"),
        "{guidance}"
    );
}

#[test]
fn ipv6_only_has_no_ipv4() {
    let s = fixture("ipv6-only");
    assert!(s.is_running());
    assert_eq!(s.self_ipv4(), None);
    assert_eq!(s.self_ipv6(), Some(ip("fd7a:115c:a1e0::6b01:2c0d")));
    assert_eq!(s.peers.len(), 2);
    assert!(
        s.peers
            .iter()
            .all(|p| p.ipv4().is_none() && p.ipv6().is_some())
    );
    assert_eq!(
        s.peer_by_name("lab-node-2").and_then(|p| p.ipv6()),
        Some(ip("fd7a:115c:a1e0::6b01:2c02"))
    );
}

#[test]
fn magic_dns_off_has_no_dns_names_but_host_names_still_match() {
    let s = fixture("magicdns-off");
    assert!(s.is_running());
    assert!(!s.magic_dns_enabled);
    assert_eq!(s.self_node.as_ref().map(|p| p.dns_name.as_str()), Some(""));
    assert!(s.peers.iter().all(|p| p.dns_name.is_empty()));
    assert_eq!(
        s.peer_by_name("gpu-box").map(|p| p.ipv4()),
        Some(Some(ip("100.64.12.9")))
    );
    assert_eq!(
        s.peer_by_name("adas-macbook-pro.tail4e2a1.ts.net")
            .map(|p| p.hostname.as_str()),
        Some("Adas-MacBook-Pro")
    );
}

#[test]
fn stopped_knows_itself_and_says_to_start() {
    let s = fixture("stopped");
    assert_eq!(s.backend_state, BackendState::Stopped);
    assert!(!s.is_running());
    assert!(s.peers.is_empty());
    assert_eq!(s.self_ipv4(), Some(ip("100.101.7.12")));
    assert_eq!(s.self_node.as_ref().and_then(|p| p.relay.clone()), None);
    let guidance = s.guidance().expect("guidance");
    assert!(guidance.contains("tailscale up"), "{guidance}");
}

#[test]
fn every_state_but_running_has_guidance() {
    let cases = [
        ("NeedsLogin", "tailscale up"),
        ("Stopped", "tailscale up"),
        ("NeedsMachineAuth", "admin console"),
        ("Starting", "wait"),
        ("NoState", "wait"),
        ("SomethingNew", "SomethingNew"),
    ];
    for (state, hint) in cases {
        let doc = format!(r#"{{"BackendState":"{state}"}}"#);
        let s = Status::from_json(doc.as_bytes()).unwrap();
        let guidance = s
            .guidance()
            .unwrap_or_else(|| panic!("{state}: no guidance"));
        assert!(guidance.contains(hint), "{state}: {guidance}");
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let doc = br#"{"BackendState":"Running","SomeFutureField":{"deep":[1,2,3]},
        "Self":{"HostName":"a","TailscaleIPs":["100.64.0.1"],"NewThing":true},"Peer":{}}"#;
    let s = Status::from_json(doc).unwrap();
    assert_eq!(s.self_ipv4(), Some(ip("100.64.0.1")));
}

#[test]
fn bad_input_is_a_clear_error_never_a_panic() {
    let running = std::fs::read(format!(
        "{}/tests/fixtures/tailscale/running.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "it is empty"),
        (b"  \n\t".to_vec(), "it is empty"),
        (b"garbage".to_vec(), "not a status document"),
        (b"null".to_vec(), "not a status document"),
        (b"[1,2]".to_vec(), "not a status document"),
        (vec![0xff, 0xfe, 0x00, 0x7b], "not a status document"),
        (b"{}".to_vec(), "no BackendState"),
        (
            br#"{"error":"tailscaled is starting"}"#.to_vec(),
            "no BackendState",
        ),
        (br#"{"BackendState":""}"#.to_vec(), "no BackendState"),
        (br#"{"BackendState":7}"#.to_vec(), "not a status document"),
        (
            br#"{"BackendState":"Running","Peer":[]}"#.to_vec(),
            "not a status document",
        ),
        (running[..running.len() / 2].to_vec(), "EOF"),
    ];
    for (input, expected) in cases {
        let err = Status::from_json(&input).unwrap_err();
        assert!(matches!(err, TailscaleError::Parse { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "{:?}: {message}",
            String::from_utf8_lossy(&input)
        );
        assert!(
            message.contains("tailscale status --json"),
            "says what to do: {message}"
        );
    }
    // Every prefix of a real document: an error or a status, never a panic.
    for end in 0..running.len() {
        let _ = Status::from_json(&running[..end]);
    }
}

#[test]
fn a_head_on_the_tailnet_is_checked_before_joining() {
    let s = fixture("running");
    // Online peers, by address or by MagicDNS name.
    assert!(matches!(
        s.check_head(&["100.88.41.3"]),
        Ok(HeadPeer::Online(p)) if p.hostname == "Adas-MacBook-Pro"
    ));
    assert!(matches!(
        s.check_head(&["gpu-box.tail4e2a1.ts.net"]),
        Ok(HeadPeer::Online(p)) if p.hostname == "gpu-box"
    ));
    assert!(matches!(
        s.check_head(&["fd7a:115c:a1e0::1f01:c09"]),
        Ok(HeadPeer::Online(p)) if p.hostname == "gpu-box"
    ));
    // This machine itself, and a LAN head.
    assert_eq!(s.check_head(&["100.101.7.12"]), Ok(HeadPeer::ThisMachine));
    assert_eq!(s.check_head(&["192.168.1.20"]), Ok(HeadPeer::NotOnTailnet));
    // An offline peer: say so, with when it was last seen.
    let e = s.check_head(&["100.117.200.44"]).unwrap_err();
    assert!(e.contains("offline") && e.contains("2025-06-09"), "{e}");
    // A tailnet address that is not a peer of this tailnet.
    let e = s
        .check_head(&["100.99.1.1", "ghost.tail4e2a1.ts.net"])
        .unwrap_err();
    assert!(e.contains("not in") && e.contains("tailscale up"), "{e}");
    // Tailscale logged out here: the guidance to log in.
    let out = fixture("logged-out");
    let e = out.check_head(&["100.88.41.3"]).unwrap_err();
    assert!(e.contains("tailscale up"), "{e}");
    assert_eq!(out.check_head(&["10.0.0.2"]), Ok(HeadPeer::NotOnTailnet));
}
