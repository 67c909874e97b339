//! The fleet across a real network: a head and two workers, each in its own network namespace
//! (veth pairs on a bridge), running the real binary and real Ray. The sweep runs across the
//! namespaces; a worker's link is cut for 90 s in the middle of a sweep, then five more times,
//! then its address changes.
//! The head runs with fast Ray health checks (1 s, 5 misses) so that a cut node is declared
//! dead in seconds rather than a minute.
#![cfg(target_os = "linux")]

mod common;
use common::netns::{Lab, home, spawn_logged, wait_for};
use common::*;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const BASE: u16 = 19000;

/// Whether Ray lists a node of this name ALIVE.
fn alive(snapshot: &serde_json::Value, name: &str) -> bool {
    snapshot["nodes"].as_array().is_some_and(|nodes| {
        nodes
            .iter()
            .any(|n| n["name"] == name && n["state"] == "ALIVE")
    })
}

/// Whether Ray lists a node of this name ALIVE at `ip`.
fn alive_at(snapshot: &serde_json::Value, name: &str, ip: &str) -> bool {
    snapshot["nodes"].as_array().is_some_and(|nodes| {
        nodes
            .iter()
            .any(|n| n["name"] == name && n["state"] == "ALIVE" && n["ip"] == ip)
    })
}

fn demo(lab: &Lab, head: &Path, evals: u32) -> std::process::Command {
    let mut c = lab.flotilla("h", head);
    c.args(["demo", "--verify", "--json", "--evals", &evals.to_string()]);
    c
}

#[test]
fn a_fleet_across_namespaces_forms_sweeps_and_survives_cut_links() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new(&["h", "a", "b"]);
    let (hh, ha, hb) = (home(), home(), home());
    let (head, wa, wb) = (hh.path(), ha.path(), hb.path());

    let mut up = lab.flotilla("h", head);
    up.arg("up")
        .args(port_args(BASE))
        .args(["--no-worker", "--object-store-mb", "100"])
        .env("RAY_health_check_period_ms", "1000")
        .env("RAY_health_check_timeout_ms", "1000")
        .env("RAY_health_check_failure_threshold", "5");
    let mut up = spawn_logged(up, head, "up");
    wait_for("the head", Duration::from_secs(180), || {
        lab.status("h", head, BASE)
            .is_some_and(|s| s["totals"]["nodes_alive"] == 1)
    });

    let code = invite_code(
        lab.flotilla("h", head)
            .args(["invite", "--json", "--uses", "2"]),
    );
    let mut workers = Vec::new();
    for (name, home) in [("a", wa), ("b", wb)] {
        let mut join = lab.flotilla(name, home);
        join.args(join_args(name, BASE + 800, "0.5"))
            .stdin(Stdio::piped());
        let mut child = spawn_logged(join, home, "join");
        give_stdin(&mut child, code.as_bytes());
        workers.push(child);
    }
    // The cluster forms: three nodes ALIVE in Flotilla's snapshot, both workers in session.
    wait_for("three nodes", Duration::from_secs(180), || {
        lab.status("h", head, BASE)
            .is_some_and(|s| s["totals"]["nodes_alive"] == 3)
    });
    let snap = lab.status("h", head, BASE).unwrap();
    let agents = snap["agents"].as_array().unwrap();
    for name in ["a", "b"] {
        assert!(
            agents
                .iter()
                .any(|a| a["name"] == name && a["connected"] == true),
            "{snap}"
        );
        let ip = lab.host(name).addr.to_string();
        assert!(
            snap["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["name"] == name && n["ip"] == ip),
            "{name} should be at {ip}: {snap}"
        );
    }

    // The sweep completes across the namespaces, identical to a local run.
    check_sweep(&demo(&lab, head, 80).output().unwrap(), 80);

    // A link goes down for 90 s in the middle of a sweep: Ray reruns a's tasks on b, and the
    // sweep still completes with every result.
    let sweep = demo(&lab, head, 400)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    lab.cut("a");
    let cut_at = Instant::now();
    wait_for(
        "the head to see a's Ray node dead",
        Duration::from_secs(60),
        || lab.status("h", head, BASE).is_some_and(|s| !alive(&s, "a")),
    );
    check_sweep(&sweep.wait_with_output().unwrap(), 400);
    std::thread::sleep(Duration::from_secs(90).saturating_sub(cut_at.elapsed()));
    lab.restore("a");
    let back = wait_for(
        "a to rejoin after 90 s away",
        Duration::from_secs(120),
        || lab.status("h", head, BASE).is_some_and(|s| alive(&s, "a")),
    );
    eprintln!("after a 90 s cut, a was ALIVE again {back:?} after its link returned");

    // Five cuts in a row, each long enough for Ray to declare the node dead: five rejoins.
    let mut rejoins = Vec::new();
    for i in 0..5 {
        lab.cut("a");
        wait_for("a declared dead", Duration::from_secs(60), || {
            lab.status("h", head, BASE).is_some_and(|s| !alive(&s, "a"))
        });
        std::thread::sleep(Duration::from_secs(5));
        lab.restore("a");
        let t = wait_for("a to rejoin", Duration::from_secs(120), || {
            lab.status("h", head, BASE).is_some_and(|s| alive(&s, "a"))
        });
        eprintln!("cut {}: ALIVE again {t:?} after the link returned", i + 1);
        rejoins.push(t);
    }
    assert_eq!(rejoins.len(), 5);

    // The worker's address changes (another network, a new lease): it notices, and rejoins
    // Ray and the control plane from its new address by itself.
    let new_ip = lab.readdress("a", 50).to_string();
    let t = wait_for(
        "a to rejoin at its new address",
        Duration::from_secs(120),
        || {
            lab.status("h", head, BASE)
                .is_some_and(|s| alive_at(&s, "a", &new_ip))
        },
    );
    eprintln!("address change: a ALIVE at {new_ip} {t:?} after the change");

    // The control session came back too, and the cluster still computes right.
    wait_for("a's session", Duration::from_secs(60), || {
        lab.status("h", head, BASE).is_some_and(|s| {
            s["agents"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["name"] == "a" && a["connected"] == true))
        })
    });
    check_sweep(&demo(&lab, head, 80).output().unwrap(), 80);

    for mut w in workers {
        unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
        let _ = w.wait();
    }
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    let _ = up.wait();
    for home in [head, wa, wb] {
        assert!(wait_none_left(home, Duration::from_secs(30)).is_empty());
    }
}
