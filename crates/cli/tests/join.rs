//! The fleet as people run it, with the real binary and a real Ray: `flotilla up` on the head,
//! `flotilla invite` there, `flotilla join` from a second home (a second machine: its own
//! config, secret store, state and outbox), admin commands from the head, garbage on the HTTP
//! port, and revocation.
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const BASE: u16 = 29000;

fn nodes(home: &Path) -> Vec<serde_json::Value> {
    let out = flotilla(home).args(["nodes", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn wait_node(
    home: &Path,
    name: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = nodes(home);
        if let Some(n) = all.iter().find(|n| n["name"] == name && ok(n)) {
            return n.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never got {what}: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn invite(home: &Path, uses: &str) -> String {
    let mut cmd = flotilla(home);
    cmd.args(["invite", "--json", "--uses", uses]);
    invite_code(&mut cmd)
}

/// The head's join codes (`invite --list --json`).
fn invites(home: &Path) -> Vec<serde_json::Value> {
    let out = flotilla(home)
        .args(["invite", "--list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `flotilla join - --no-start` from `home` as `name`: joins and stores the enrollment, runs
/// nothing. Returns the exit status and what it printed.
fn join_only(home: &Path, code: &str, name: &str) -> (std::process::ExitStatus, String) {
    let mut child = flotilla(home)
        .args(["join", "-", "--no-start", "--cpus", "1", "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    give_stdin(&mut child, code.as_bytes());
    wait_exit(&mut child, Duration::from_secs(60))
}

/// `flotilla join -` with the code on standard input (never in argv).
fn join(home: &Path, code: &str, name: &str) -> Child {
    let mut child = flotilla(home)
        .args(join_args(name, BASE + 800, "0.25"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    give_stdin(&mut child, code.as_bytes());
    child
}

fn wait_exit(child: &mut Child, within: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, child.wait_with_output_ref());
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the worker's agent reports the control plane lost (its control socket's
/// decision carries the session link).
fn wait_node_offline(worker: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = flotilla(worker)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let all = text(&out);
        if all.contains("\"offline\"") || all.contains("\"connecting\"") {
            return;
        }
        assert!(Instant::now() < deadline, "the worker never noticed: {all}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The first event of a server-sent event stream (its lines up to the blank line).
fn sse_first_event(port: u16, path: &str) -> String {
    use std::io::{BufRead, BufReader};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines();
    let mut out = String::new();
    let mut in_body = false;
    while let Some(Ok(line)) = lines.next() {
        if !in_body {
            in_body = line.is_empty();
            assert!(out.len() < 4096);
            out.push_str(&line);
            out.push('\n');
            continue;
        }
        if line.is_empty() && out.contains("event:") {
            break;
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn a_machine_joins_with_a_code_obeys_the_head_and_is_revoked() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut up = Up::start(BASE);
    up.wait_status(2);
    let head = up.home.path().to_path_buf();
    // The head's own worker reports through the control plane too.
    wait_node(&head, "w1", "a session", |n| n["state"] != "offline");

    let code = invite(&head, "1");
    assert!(code.starts_with("flot1-"), "{code}");

    // A machine whose secret store cannot keep a credential does not join, and trying costs
    // nothing: no node on the head, the code unused (it admits w2 below).
    let broken_home = tempfile::Builder::new()
        .prefix("fb")
        .tempdir_in("/tmp")
        .unwrap();
    let broken = broken_home.path();
    std::fs::create_dir_all(broken.join("config")).unwrap();
    std::fs::write(
        broken.join("config/flotilla.toml"),
        "[secrets]\nbackend = \"file\"\nencrypt_file = \"off\"\n",
    )
    .unwrap();
    // The store's file is a directory: nothing can be written there.
    std::fs::create_dir_all(broken.join("state/secrets.json/x")).unwrap();
    let (status, log) = join_only(broken, &format!("Your code: {code} (valid 1 day)"), "w9");
    assert!(!status.success(), "{log}");
    assert!(log.contains("the join code is unused"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let listed = invites(&head);
    assert_eq!(listed[0]["uses_left"], 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "usable", "{listed:?}");
    assert!(nodes(&head).iter().all(|n| n["name"] != "w9"));
    let worker_home = tempfile::Builder::new()
        .prefix("fj")
        .tempdir_in("/tmp")
        .unwrap();
    let worker = worker_home.path();
    let mut joined = join(worker, &code, "w2");
    let n = wait_node(&head, "w2", "a session", |n| {
        ["contributing", "throttled"].contains(&n["state"].as_str().unwrap_or(""))
    });
    assert_eq!(n["cpus_total"], 1.0);
    assert!(n["cpus_advertised"].as_f64().unwrap() <= 1.0, "{n}");
    assert!(!n["reason_en"].as_str().unwrap().is_empty(), "{n}");
    up.wait_status(3);
    // The enrollment holds no secret; the secrets are in the store.
    let enrollment = std::fs::read_to_string(worker.join("config/enrollment.json")).unwrap();
    assert!(enrollment.contains("\"node_name\": \"w2\""), "{enrollment}");

    // Other machines asking for taken names (a twin with the same host name, a stranger
    // aiming at the head's own worker) get names of their own; nobody is evicted, and the
    // code's list says who joined with it.
    let twins = invite(&head, "2");
    let twin_home = tempfile::Builder::new()
        .prefix("ft")
        .tempdir_in("/tmp")
        .unwrap();
    let (status, log) = join_only(twin_home.path(), &twins, "w2");
    assert!(status.success(), "{log}");
    assert!(log.contains("Joined under another name: w2-2"), "{log}");
    assert!(log.contains("belongs to another machine"), "{log}");
    let stranger_home = tempfile::Builder::new()
        .prefix("fs")
        .tempdir_in("/tmp")
        .unwrap();
    let (status, log) = join_only(stranger_home.path(), &twins, "W1");
    assert!(status.success(), "{log}");
    assert!(log.contains("Joined under another name: W1-2"), "{log}");
    std::thread::sleep(Duration::from_secs(2));
    let all = nodes(&head);
    for held in ["w1", "w2"] {
        assert!(
            all.iter()
                .any(|n| n["name"] == held && n["state"] != "offline"),
            "{held} was evicted: {all:#?}"
        );
    }
    assert!(!log.contains("revoked"), "{log}");
    let listed = invites(&head);
    assert_eq!(listed[0]["state"], "used up", "{listed:?}");
    assert_eq!(listed[0]["joined"], serde_json::json!(["w2-2", "W1-2"]));
    for extra in ["w2-2", "W1-2"] {
        let out = flotilla(&head).args(["revoke", extra]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }

    // A code withdrawn before use admits nobody.
    let out = flotilla(&head)
        .args(["invite", "--json", "--expires", "30m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let withdrawn: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = flotilla(&head)
        .args([
            "invite",
            "--revoke",
            withdrawn["invite_id"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(text(&out).contains("is withdrawn"), "{}", text(&out));
    let (status, log) = join_only(
        stranger_home.path(),
        withdrawn["code"].as_str().unwrap(),
        "w7",
    );
    assert!(!status.success(), "{log}");
    assert!(log.contains("withdrawn"), "{log}");
    // Validities the head would not apply are refused with the range, not changed.
    for bad in ["0s", "999999d"] {
        let out = flotilla(&head)
            .args(["invite", "--expires", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        assert!(text(&out).contains("366 days") || text(&out).contains("at least a second"));
    }
    let token = flotilla(&head)
        .args(["secret", "get", "flotilla.ray-token", "--reveal"])
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    assert!(token.len() >= 16);
    assert!(!enrollment.contains(&token));
    assert_no_leak(worker, &token);
    assert_no_leak(worker, code.trim_start_matches("flot1-"));

    // A job with a stored secret runs across the fleet (spread over both workers); the value
    // reaches its tasks and appears in no log, config, argv or Flotilla environment on either
    // machine.
    let value = "sk-live-5b1d-only-in-the-keyring";
    set_secret(&head, "exchange-key", value);
    let job = flotilla(&head)
        .args(["submit", "--secret", "exchange-key=EXCHANGE_KEY", "--", "python", "-c"])
        .arg(
            "import os, ray; ray.init(); \
             f = ray.remote(num_cpus=1, scheduling_strategy='SPREAD')(lambda: len(os.environ['EXCHANGE_KEY'])); \
             print('lengths', ray.get([f.remote() for _ in range(4)]))",
        )
        .output()
        .unwrap();
    assert!(job.status.success(), "{}", text(&job));
    let n = value.len();
    assert!(
        text(&job).contains(&format!("lengths [{n}, {n}, {n}, {n}]")),
        "{}",
        text(&job)
    );
    assert_no_leak(&head, value);
    assert_no_leak(worker, value);

    // The worker's doctor sees the fleet: the control plane answers, Ray's GCS is reachable.
    let out = flotilla(worker)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status_of = |report: &serde_json::Value, name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(
        status_of(&report, "control plane").as_deref(),
        Some("ok"),
        "{report}"
    );
    assert_eq!(
        status_of(&report, "ray gcs").as_deref(),
        Some("ok"),
        "{report}"
    );
    assert_eq!(
        status_of(&report, "clock").as_deref(),
        Some("ok"),
        "{report}"
    );
    assert_ne!(out.status.code(), Some(2), "{report}");

    // Pause from the head: the node pauses; resume: it contributes again.
    let out = flotilla(&head)
        .args(["pause", "--node", "w2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Paused node"), "{}", text(&out));
    let paused = wait_node(&head, "w2", "paused", |n| n["state"] == "paused");
    assert_eq!(paused["reason_code"], "paused_indefinitely", "{paused}");
    let out = flotilla(&head)
        .args(["resume", "--node", "w2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    wait_node(&head, "w2", "resumed", |n| {
        n["state"] != "paused" && n["state"] != "draining"
    });
    let out = flotilla(&head)
        .args(["pause", "--node", "nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no node named \"nobody\""),
        "{}",
        text(&out)
    );

    // The same view as Prometheus metrics and as a server-sent event stream.
    // (The paused node's Ray node left; its new one may still be joining.)
    let deadline = Instant::now() + Duration::from_secs(90);
    let metrics = loop {
        let (status, metrics) = http_get(BASE, "/metrics");
        assert_eq!(status, 200);
        if metrics.contains("flotilla_ray_nodes_alive 3") || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(metrics.contains("# TYPE flotilla_nodes gauge"), "{metrics}");
    assert!(
        metrics.contains("flotilla_node_connected{node=\"w2\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("flotilla_ray_nodes_alive 3"), "{metrics}");
    let first = sse_first_event(BASE, "/api/v1/events");
    assert!(first.contains("event: agents"), "{first}");
    assert!(first.contains("\"name\":\"w2\""), "{first}");

    // Garbage on the HTTP port: the API keeps answering correctly throughout.
    let api = BASE;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..1000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 2048) as usize + 1;
        let bytes: Vec<u8> = (0..len)
            .map(|j| (seed >> (j % 56)) as u8 ^ j as u8)
            .collect();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", api)).unwrap();
        let _ = s.write_all(&bytes);
        drop(s);
        if i % 100 == 0 {
            let (status, body) = http_get(api, "/api/v1/cluster");
            assert_eq!(status, 200, "{body}");
        }
    }
    let (status, body) = http_get(api, "/api/v1/cluster");
    assert_eq!(status, 200);
    let snap: serde_json::Value = serde_json::from_str(&body).unwrap();
    let agents = snap["agents"].as_array().unwrap();
    assert!(
        agents
            .iter()
            .any(|a| a["name"] == "w2" && a["connected"] == true),
        "{snap}"
    );

    // The head goes away; its Ray token is rotated (refused while it runs); it comes back.
    // The worker reconnects by itself, receives the new token and restarts its Ray node.
    let out = flotilla(&head)
        .args(["head", "rotate-ray-token"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("the head is running"), "{}", text(&out));
    up.stop();
    wait_node_offline(worker);
    let out = flotilla(worker)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status_of(&report, "control plane").as_deref(),
        Some("fail"),
        "{report}"
    );
    assert_eq!(out.status.code(), Some(2), "{report}");
    let out = flotilla(&head)
        .args(["head", "rotate-ray-token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    up.restart();
    up.wait_status(3);
    let n = wait_node(&head, "w2", "a new session", |n| {
        ["contributing", "throttled"].contains(&n["state"].as_str().unwrap_or(""))
    });
    assert!(n["cpus_advertised"].as_f64().unwrap() > 0.0, "{n}");
    let new_token = flotilla(&head)
        .args(["secret", "get", "flotilla.ray-token", "--reveal"])
        .output()
        .unwrap();
    let new_token = String::from_utf8(new_token.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new_token, token);
    let stored = flotilla(worker)
        .args(["secret", "get", "flotilla.ray-token", "--reveal"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(stored.stdout).unwrap().trim(), new_token);

    // Revoked: the worker leaves (and forgets its credential), and the used code is refused.
    let out = flotilla(&head).args(["revoke", "w2"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (status, log) = wait_exit(&mut joined, Duration::from_secs(60));
    assert!(status.success(), "{log}");
    assert!(log.contains("removed this machine from the fleet"), "{log}");
    // While Ray started, `join` said so, and when it was in.
    assert!(log.contains("Starting this machine's Ray node w2"), "{log}");
    assert!(log.contains("The Ray node w2 is in the cluster"), "{log}");
    assert!(!worker.join("config/enrollment.json").exists());
    assert!(nodes(&head).iter().all(|n| n["name"] != "w2"));
    let mut again = join(worker, &code, "w2");
    let (status, log) = wait_exit(&mut again, Duration::from_secs(60));
    assert!(!status.success());
    assert!(log.contains("already been used"), "{log}");

    // The worker's processes are gone; stopping the head leaves nothing either.
    assert!(wait_none_left(worker, Duration::from_secs(30)).is_empty());
    up.stop();
    assert!(wait_none_left(&head, Duration::from_secs(30)).is_empty());
}
