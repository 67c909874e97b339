//! Alerts from the head, with the real binary, a real Ray and real HTTP receivers in this
//! process: `flotilla up --no-worker` with `[alerts]` in its `flotilla.toml` (short timers),
//! a worker that joins (one `join_code_used`), a Ray job that fails (one `job_failed` with
//! Ray's reason), the worker stopped (one `node_offline` firing) and back (one `cleared`), then
//! revoked (one `node_revoked`); a receiver that answers 500 to its first requests gets each alert after
//! retries with growing waits while the head's `/healthz` keeps answering, and a target nobody
//! listens on holds nothing up. `flotilla alerts test` then reports each target in the
//! receiver's words. The webhook URL's token is in no file, log or argv.
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BASE: u16 = 27000;
/// The flaky receiver's first requests answered 500.
const FLAKY_FAILURES: usize = 3;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    body: serde_json::Value,
    status: u16,
    at: Instant,
}

/// A webhook receiver: a real HTTP/1.1 server on loopback that records every request and
/// answers 500 to the first `fail_first`, 200 after.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let seen = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut hits = seen.lock().unwrap();
                let status = if hits.len() < fail_first { 500 } else { 200 };
                hits.push(Hit {
                    path,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    status,
                    at: Instant::now(),
                });
                drop(hits);
                let (reason, said) = if status == 200 {
                    ("OK", "ok")
                } else {
                    ("Internal Server Error", "receiver down for the test")
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{said}",
                    said.len()
                );
            }
        });
        Receiver { port, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The bodies delivered (answered 200).
    fn delivered(&self) -> Vec<serde_json::Value> {
        self.hits()
            .into_iter()
            .filter(|h| h.status == 200)
            .map(|h| h.body)
            .collect()
    }
}

/// Waits until `ok` holds for what `r` got, or panics with it and the end of `log` (what the
/// head printed).
fn wait_for(r: &Receiver, log: &Path, what: &str, within: Duration, ok: impl Fn(&[Hit]) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let hits = r.hits();
        if ok(&hits) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {} s; the receiver got: {:#?}\n--- the head printed:\n{}",
            within.as_secs(),
            hits.iter().map(|h| &h.body).collect::<Vec<_>>(),
            tail(log, 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The generic receiver's delivered alerts of one rule, as (state, node).
fn of_rule(r: &Receiver, rule: &str) -> Vec<(String, String)> {
    r.delivered()
        .iter()
        .filter(|b| b["alert"] == rule)
        .map(|b| {
            (
                b["state"].as_str().unwrap_or("").to_string(),
                b["node"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fl")
        .tempdir_in("/tmp")
        .unwrap()
}

fn spawn_logged(mut cmd: std::process::Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    cmd.stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// A `flotilla` process of the test, stopped as Ctrl-C stops it however the test ends (a
/// failed assertion included), so that no head or worker outlives it.
struct Running(Child);

impl Running {
    fn stop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return; // Already ended and reaped: its pid may be another process's now.
        }
        // SAFETY: a signal to our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.0.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker's options (`flotilla join -` takes the same after its code).
fn worker_args() -> Vec<String> {
    join_args("w2", BASE + 800, "0.25")[2..].to_vec()
}

#[test]
fn a_node_offline_fires_once_and_clears_once_and_a_failing_receiver_gets_its_alerts_late() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let hook = Receiver::start(0);
    let flaky = Receiver::start(FLAKY_FAILURES);
    let head = home();
    let logs = home();
    // The generic receiver's URL carries a token-like path: it goes to the store, and the test
    // checks it leaks nowhere.
    let token = "hook-sEcReT-7f3a9c";
    set_secret(
        head.path(),
        "alerts.hook",
        &format!("http://127.0.0.1:{}/{token}", hook.port),
    );
    set_secret(
        head.path(),
        "alerts.flaky",
        &format!("http://127.0.0.1:{}/services/T0/B0/x", flaky.port),
    );
    std::fs::create_dir_all(head.path().join("config")).unwrap();
    std::fs::write(
        head.path().join("config/flotilla.toml"),
        "[alerts]\n\
         check_every = \"1s\"\n\
         offline_after = \"3s\"\n\
         # The build machine's own disk and memory are no part of this test.\n\
         head_disk_free_below = 0\n\
         head_memory_free_below = 0\n\
         \n\
         [[alerts.target]]\n\
         name = \"hook\"\n\
         kind = \"json\"\n\
         url_secret = \"alerts.hook\"\n\
         \n\
         [[alerts.target]]\n\
         name = \"flaky\"\n\
         kind = \"slack\"\n\
         url_secret = \"alerts.flaky\"\n\
         \n\
         [[alerts.target]]\n\
         name = \"nobody\"\n\
         kind = \"json\"\n\
         url = \"http://127.0.0.1:9/nobody-listens\"\n",
    )
    .unwrap();

    let mut up_cmd = flotilla(head.path());
    up_cmd
        .arg("up")
        .args(port_args(BASE))
        .args(["--no-worker", "--object-store-mb", "100"]);
    let up_log = logs.path().join("up.log");
    let mut up = Running(spawn_logged(up_cmd, &up_log));
    // Wait for the head (Ray's head node alive).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(s) = up.0.try_wait().unwrap() {
            panic!(
                "flotilla up exited ({s}): {}{}",
                tail(&up_log, 40),
                ray_logs(head.path())
            );
        }
        if healthz(BASE) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the head did not serve /healthz in 5 minutes: {}{}",
            tail(&up_log, 40),
            ray_logs(head.path())
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A worker joins: one `join_code_used`.
    let mut invite = flotilla(head.path());
    invite.args(["invite", "--json"]);
    let code = invite_code(&mut invite);
    let worker_home = home();
    let worker_log = logs.path().join("worker.log");
    let mut join = flotilla(worker_home.path());
    join.args(join_args("w2", BASE + 800, "0.25"))
        .stdin(Stdio::piped());
    let mut worker = Running(spawn_logged(join, &worker_log));
    give_stdin(&mut worker.0, code.as_bytes());
    wait_for(
        &hook,
        &up_log,
        "join_code_used",
        Duration::from_secs(120),
        |h| h.iter().any(|h| h.body["alert"] == "join_code_used"),
    );
    let joined = hook
        .delivered()
        .into_iter()
        .find(|b| b["alert"] == "join_code_used")
        .unwrap();
    assert_eq!(joined["node"], "w2", "{joined}");
    assert_eq!(joined["state"], "firing", "{joined}");
    assert_eq!(joined["one_shot"], true, "{joined}");

    // The flaky receiver answers 500 at first: the head retries, and keeps serving meanwhile.
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while flaky.delivered().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the flaky receiver never got its alert: {:#?}\n{}",
            flaky.hits(),
            tail(&up_log, 30)
        );
        if !flaky.hits().is_empty() {
            let asked = Instant::now();
            let code = healthz(BASE);
            answers.push((code, asked.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let tries = flaky.hits();
    assert_eq!(
        tries.len(),
        FLAKY_FAILURES + 1,
        "one try per failure and the one delivered: {tries:#?}"
    );
    assert!(
        tries.iter().all(|h| h.body == tries[0].body),
        "every retry carries the same alert: {tries:#?}"
    );
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "the waits between retries grow: {gaps:?}"
    );
    assert!(
        !answers.is_empty(),
        "/healthz was asked during the failures"
    );
    assert!(
        answers.iter().all(|(code, _)| *code == 200),
        "/healthz answered during the failures: {answers:?}"
    );
    let text0 = tries[0].body["text"].as_str().unwrap_or_default();
    assert!(
        text0.starts_with("[EVENT] Flotilla (") && text0.contains("w2"),
        "Slack's shape: {}",
        tries[0].body
    );
    println!(
        "flaky receiver: {} tries, waits between them {:?}; /healthz asked {} times meanwhile, \
         slowest answer {:?}",
        tries.len(),
        gaps,
        answers.len(),
        answers.iter().map(|(_, t)| *t).max().unwrap()
    );

    // A Ray job that fails: one `job_failed`, with Ray's reason.
    let job = flotilla(head.path())
        .args(["submit", "--no-wait", "--", "python", "-c"])
        .arg("raise SystemExit('the strategy file is missing')")
        .output()
        .unwrap();
    assert!(job.status.success(), "{}", text(&job));
    let job = String::from_utf8_lossy(&job.stdout).trim().to_string();
    let submitted = Instant::now();
    wait_for(
        &hook,
        &up_log,
        "job_failed",
        Duration::from_secs(120),
        |h| h.iter().any(|h| h.body["alert"] == "job_failed"),
    );
    let failed = of_rule(&hook, "job_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let failed = hook
        .delivered()
        .into_iter()
        .find(|b| b["alert"] == "job_failed")
        .unwrap();
    let summary = failed["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("job {job} "))
            && summary.ends_with("failed with exit code 1: the strategy file is missing"),
        "{failed}"
    );
    println!(
        "job_failed came {:.1} s after the job was submitted: {summary}",
        submitted.elapsed().as_secs_f64()
    );

    // Wait until the worker reports in, then stop it: one `node_offline` firing.
    wait_until_connected(head.path(), "w2");
    worker.stop();
    let stopped = Instant::now();
    wait_for(
        &hook,
        &up_log,
        "node_offline firing",
        Duration::from_secs(60),
        |h| {
            h.iter()
                .any(|h| h.body["alert"] == "node_offline" && h.body["state"] == "firing")
        },
    );
    let fired_after = stopped.elapsed();
    // It stays offline a while longer: still one alert.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        of_rule(&hook, "node_offline"),
        [("firing".to_string(), "w2".to_string())]
    );

    // Back as `flotilla worker`: one `cleared`.
    let mut again = flotilla(worker_home.path());
    again.arg("worker").args(worker_args());
    let mut worker = Running(spawn_logged(again, &logs.path().join("worker2.log")));
    let restarted = Instant::now();
    wait_for(
        &hook,
        &up_log,
        "node_offline cleared",
        Duration::from_secs(120),
        |h| {
            h.iter()
                .any(|h| h.body["alert"] == "node_offline" && h.body["state"] == "cleared")
        },
    );
    let cleared_after = restarted.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        of_rule(&hook, "node_offline"),
        [
            ("firing".to_string(), "w2".to_string()),
            ("cleared".to_string(), "w2".to_string())
        ]
    );
    assert_eq!(of_rule(&hook, "join_code_used").len(), 1);
    let cleared = hook
        .delivered()
        .into_iter()
        .find(|b| b["alert"] == "node_offline" && b["state"] == "cleared")
        .unwrap();
    assert!(
        cleared["summary"]
            .as_str()
            .unwrap()
            .contains("w2 is back after"),
        "{cleared}"
    );
    assert!(
        cleared["since"].is_string() && cleared["at"].is_string(),
        "{cleared}"
    );
    println!(
        "node_offline fired {:.1} s after the worker's process ended (offline_after 3 s, checks every \
         1 s); cleared {:.1} s after it was started again",
        fired_after.as_secs_f64(),
        cleared_after.as_secs_f64()
    );

    // The flaky receiver gets the same alerts, in the same order.
    wait_for(
        &flaky,
        &up_log,
        "the flaky receiver's alerts",
        Duration::from_secs(60),
        |h| h.iter().filter(|h| h.status == 200).count() >= 4,
    );
    let texts: Vec<String> = flaky
        .delivered()
        .iter()
        .map(|b| b["text"].as_str().unwrap_or_default().to_string())
        .collect();
    let marks: Vec<&str> = texts
        .iter()
        .map(|t| t.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        marks,
        ["[EVENT]", "[EVENT]", "[FIRING]", "[CLEARED]"],
        "{texts:#?}"
    );
    assert!(texts[1].contains(&format!("job {job} ")), "{texts:#?}");
    assert!(hook.hits().iter().all(|h| h.path == format!("/{token}")));

    // `flotilla alerts test`: each target in the receiver's words.
    let out = flotilla(head.path())
        .args(["alerts", "test", "--json"])
        .output()
        .unwrap();
    let outcomes: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a target failed: {}",
        text(&out)
    );
    let by_name = |n: &str| {
        outcomes
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["target"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n} in {outcomes}"))
    };
    assert_eq!(by_name("hook")["ok"], true, "{outcomes}");
    assert_eq!(by_name("flaky")["ok"], true, "{outcomes}");
    let nobody = by_name("nobody");
    assert_eq!(nobody["ok"], false, "{outcomes}");
    assert!(
        nobody["reason"].as_str().unwrap().contains("onnect"),
        "the reason says the connection failed: {nobody}"
    );
    assert!(hook.delivered().iter().any(|b| b["alert"] == "test"));
    let out = flotilla(head.path())
        .args(["alerts", "test", "--target", "hook"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hook (json): sent"
    );
    let out = flotilla(head.path())
        .args(["alerts", "test", "--target", "pager"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("no alert target named \"pager\"") && said.contains("hook, flaky, nobody"),
        "{said}"
    );
    println!("flotilla alerts test: {outcomes}");

    // An admin revokes the worker: one `node_revoked`, and no `node_offline` for a node that
    // is no longer in the fleet.
    let out = flotilla(head.path())
        .args(["revoke", "w2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    wait_for(
        &hook,
        &up_log,
        "node_revoked",
        Duration::from_secs(30),
        |h| h.iter().any(|h| h.body["alert"] == "node_revoked"),
    );
    worker.stop();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        of_rule(&hook, "node_revoked"),
        [("firing".to_string(), "w2".to_string())]
    );
    assert_eq!(of_rule(&hook, "node_offline").len(), 2);
    wait_for(
        &flaky,
        &up_log,
        "the flaky receiver's node_revoked",
        Duration::from_secs(30),
        |h| h.iter().filter(|h| h.status == 200).count() >= 6,
    );

    // `/metrics` counts each target's outcomes.
    let (code, metrics) = http_get(BASE, "/metrics");
    assert_eq!(code, 200);
    for line in [
        "flotilla_alerts_sent_total{target=\"hook\",outcome=\"delivered\"} 5",
        "flotilla_alerts_sent_total{target=\"hook\",outcome=\"retried\"} 0",
        "flotilla_alerts_sent_total{target=\"flaky\",outcome=\"delivered\"} 5",
        "flotilla_alerts_sent_total{target=\"flaky\",outcome=\"retried\"} 3",
        "flotilla_alerts_sent_total{target=\"nobody\",outcome=\"delivered\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in /metrics: {}",
            metrics
                .lines()
                .filter(|l| l.contains("alerts"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // The head kept serving all along; the token is nowhere.
    assert_eq!(healthz(BASE), 200);
    assert_no_leak(head.path(), token);
    let printed = std::fs::read_to_string(&up_log).unwrap();
    assert!(!printed.contains(token), "the token is in up's output");
    worker.stop();
    up.stop();
    assert!(
        wait_none_left(head.path(), Duration::from_secs(60)).is_empty(),
        "processes left"
    );
}

/// The status of the head's `/healthz` (0 when nothing answers).
fn healthz(port: u16) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    if write!(s, "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return 0;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Waits until the head lists `name` connected (`flotilla nodes --json`).
fn wait_until_connected(head: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = flotilla(head).args(["nodes", "--json"]).output().unwrap();
        let nodes: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let connected = nodes.as_array().is_some_and(|all| {
            all.iter()
                .any(|n| n["name"] == name && n["state"] != "offline" && n["state"] != "unknown")
        });
        if connected {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never connected: {nodes}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A wrong `[alerts]` or a target whose secret is missing stops `flotilla up` at once, with one
/// line naming the key or the command that fixes it, before anything starts.
#[test]
fn a_wrong_alerts_section_stops_up_before_anything_starts() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    for (toml, says) in [
        (
            "[alerts]\noffline_after = \"soon\"\n",
            "flotilla.toml: alerts.offline_after: \"soon\": write a number and a unit",
        ),
        (
            "[[alerts.target]]\nkind = \"discord\"\nurl_secret = \"alerts.discord\"\n",
            "the secret alerts.discord is not in the store; add the webhook's URL with \
             `flotilla secret set alerts.discord`",
        ),
    ] {
        let home = home();
        std::fs::create_dir_all(home.path().join("config")).unwrap();
        std::fs::write(home.path().join("config/flotilla.toml"), toml).unwrap();
        let out = flotilla(home.path())
            .arg("up")
            .args(port_args(BASE))
            .args(["--no-worker"])
            .output()
            .unwrap();
        let said = text(&out);
        assert!(!out.status.success(), "{said}");
        let error: Vec<&str> = said.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error.len(), 1, "{said}");
        assert!(error[0].contains(says), "{said}");
        assert!(!home.path().join("state/head.json").exists());
        assert!(processes_of(home.path()).is_empty());
        let out = flotilla(home.path())
            .args(["alerts", "test"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(text(&out).contains(says), "{}", text(&out));
    }
}
