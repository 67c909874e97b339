//! A laptop that sleeps during a sweep hands its work back first and is back right after wake.
//!
//! A head and two workers, each in its own network namespace. The sleeper's agent listens on a
//! private system bus (a `dbus-daemon` this test starts) where `org.freedesktop.login1` is a
//! stand-in written for the test (`crates/host/tests/support/logind.rs`), not systemd's
//! logind: it only hands out inhibitor locks, tells whether they are still held, and emits
//! `PrepareForSleep` / `PrepareForShutdown` when the test says so. Sleep itself is played by
//! stopping (SIGSTOP) every process of the sleeper's home once it let the machine go, and
//! waking by continuing them, as a suspended machine's processes stop and go on.
//!
//! The sweep's two long evaluations run on the sleeper (the other worker is paused while they
//! start); then the other worker comes back with room for them, and sleep is announced. Ray's
//! own task table (the dashboard's state API) shows when each evaluation that ran on the
//! sleeper runs again elsewhere. Every evaluation must be in the sweep's results exactly once.
//! The seconds measured are printed; `bench/src/bin/sleep.rs` puts them beside plain Ray's.
#![cfg(target_os = "linux")]

mod common;
use flotilla_testkit::logind;

use common::netns::{Lab, home, spawn_logged, wait_for};
use common::*;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BASE: u16 = 16000;
const EVALS: u32 = 2;

/// The cluster of this test.
struct Fleet {
    lab: Lab,
    head: tempfile::TempDir,
    up: Option<Child>,
    /// The sleeper and the other worker, with their agents.
    workers: Vec<(&'static str, tempfile::TempDir, Child)>,
}

impl Fleet {
    fn on_head(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.lab.flotilla("h", self.head.path());
        c.args(args);
        c
    }

    fn status(&self) -> Option<serde_json::Value> {
        self.lab.status("h", self.head.path(), BASE)
    }

    fn alive_id(&self, name: &str) -> Option<String> {
        let s = self.status()?;
        s["nodes"].as_array()?.iter().find_map(|n| {
            (n["name"] == name && n["state"] == "ALIVE")
                .then(|| n["node_id"].as_str().map(str::to_string))
                .flatten()
        })
    }

    fn connected(&self, name: &str) -> bool {
        self.status().is_some_and(|s| {
            s["agents"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["name"] == name && a["connected"] == true)
            })
        })
    }

    /// The Ray node id under which `name` is ALIVE in Ray's own node table (the head's view
    /// follows it within its 2 s poll).
    fn ray_alive_id(&self, token: &str, name: &str) -> Option<String> {
        let ns = self.lab.host("h").ns.clone();
        let body = in_netns(&ns, BASE + 2, "/api/v0/nodes?limit=100&detail=true", token)?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"]["result"]
            .as_array()?
            .iter()
            .find_map(|n| {
                (n["node_name"] == name && n["state"] == "ALIVE")
                    .then(|| n["node_id"].as_str().map(str::to_string))
                    .flatten()
            })
    }

    /// Ray's task table: `(task id, attempt, state, node id)` of every evaluation attempt.
    fn tasks(&self, token: &str) -> Vec<(String, u64, String, String)> {
        let ns = self.lab.host("h").ns.clone();
        let path = "/api/v0/tasks?limit=1000&detail=true";
        let Some(body) = in_netns(&ns, BASE + 2, path, token) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        v["data"]["result"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["name"] == "_run_one_on_ray")
            .map(|t| {
                (
                    t["task_id"].as_str().unwrap_or_default().to_string(),
                    t["attempt_number"].as_u64().unwrap_or(0),
                    t["state"].as_str().unwrap_or_default().to_string(),
                    t["node_id"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the end of the head's log:\n{}",
                tail(&self.head.path().join("up.out"), 30)
            );
            for (name, home, _) in &self.workers {
                eprintln!(
                    "--- the end of {name}'s agent log:\n{}",
                    tail(&home.path().join("agent.out"), 40)
                );
            }
        }
        for (_, home, agent) in &mut self.workers {
            // A sleeper stopped mid-test must be able to take its SIGTERM.
            for pid in processes_of(home.path()) {
                // SAFETY: signals to the test's own processes.
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
            let _ = agent.wait();
        }
        if let Some(mut up) = self.up.take() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
            let _ = up.wait();
        }
    }
}

/// A GET to `127.0.0.1:port` inside network namespace `ns`, with Ray's token; the body.
fn in_netns(ns: &str, port: u16, path: &str, token: &str) -> Option<String> {
    let (ns, path, token) = (ns.to_string(), path.to_string(), token.to_string());
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).ok()?;
        use std::os::fd::AsRawFd;
        // SAFETY: moves only this short-lived thread into the namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    })
    .join()
    .ok()
    .flatten()
}

/// Prints the lines of the agent's log in `home` that mention one of `words`.
fn account(home: &Path, words: &[&str]) {
    let log = std::fs::read_to_string(home.join("agent.out")).unwrap_or_default();
    for line in log.lines().filter(|l| words.iter().any(|w| l.contains(w))) {
        eprintln!("  s1: {line}");
    }
}

/// The time of day (UTC, to the millisecond), to read beside the agents' logs.
fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let day = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        day / 3600,
        day % 3600 / 60,
        day % 60,
        now.subsec_millis()
    )
}

/// One request over an agent's control socket.
fn ask(socket: &Path, req: &str) -> serde_json::Value {
    use std::io::BufRead;
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn signal_home(home: &Path, signal: i32) {
    for pid in processes_of(home) {
        // SAFETY: signals to the test's own processes.
        unsafe { libc::kill(pid as i32, signal) };
    }
}

fn policy_file(home: &Path) {
    std::fs::create_dir_all(home.join("config")).unwrap();
    // Lend every CPU whatever else this machine runs (other tests are not the owner).
    std::fs::write(
        home.join("config/flotilla.toml"),
        "[policy]\nactive_cpus = 8\nowner_load_threshold = 1.0\nmin_free_memory_fraction = 0\n",
    )
    .unwrap();
}

#[test]
fn a_sleeping_laptop_hands_its_tasks_back_and_is_back_after_wake() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bus = logind::private_bus();
    let locks = Arc::new(Mutex::new(Vec::<logind::Lock>::new()));
    let logind = rt.block_on(logind::stand_in_logind(&bus, locks.clone()));
    let emit = |member: &str, start: bool| rt.block_on(logind::emit(&logind, member, start));

    let lab = Lab::new(&["h", "s1", "s2"]);
    let head = home();
    let mut up = lab.flotilla("h", head.path());
    // Ray's own health-check settings: what a node that went silent would wait for.
    up.arg("up")
        .args(port_args(BASE))
        .args(["--no-worker", "--object-store-mb", "100"]);
    let up = spawn_logged(up, head.path(), "up");
    let mut fleet = Fleet {
        lab,
        head,
        up: Some(up),
        workers: Vec::new(),
    };
    wait_for("the head", Duration::from_secs(180), || {
        fleet
            .status()
            .is_some_and(|s| s["totals"]["nodes_alive"] == 1)
    });
    let code = invite_code(&mut fleet.on_head(&["invite", "--json", "--uses", "2"]));
    // The sleeper hears the stand-in; the other worker's bus does not exist, so it hears
    // nothing and carries on.
    let nowhere = format!("unix:path={}/no-bus", fleet.head.path().display());
    for (i, (name, bus_address)) in [("s1", bus.address.as_str()), ("s2", nowhere.as_str())]
        .into_iter()
        .enumerate()
    {
        let home = home();
        policy_file(home.path());
        let mut args = join_args(name, BASE + 800 + 300 * i as u16, "1");
        let at = args.iter().position(|a| a == "--cpus").unwrap();
        args[at + 1] = "2".into();
        let mut join = fleet.lab.flotilla(name, home.path());
        join.args(&args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
            // The agent's steps with their times, for a failure's report.
            .env("FLOTILLA_LOG", "info")
            .stdin(Stdio::piped());
        let mut child = spawn_logged(join, home.path(), "agent");
        give_stdin(&mut child, code.as_bytes());
        fleet.workers.push((name, home, child));
    }
    wait_for("both workers in Ray", Duration::from_secs(240), || {
        fleet
            .status()
            .is_some_and(|s| s["totals"]["nodes_alive"] == 3)
    });
    wait_for("both workers in session", Duration::from_secs(60), || {
        fleet.connected("s1") && fleet.connected("s2")
    });
    // The sleeper holds sleep back, as Flotilla, with a delay lock on sleep and shutdown.
    wait_for(
        "the sleeper's inhibitor lock",
        Duration::from_secs(30),
        || !locks.lock().unwrap().is_empty(),
    );
    {
        let locks = locks.lock().unwrap();
        assert_eq!(locks.len(), 1, "only the sleeper has a bus");
        let (what, who, _, mode) = &locks[0].args;
        assert_eq!(
            (what.as_str(), who.as_str(), mode.as_str()),
            ("sleep:shutdown", "Flotilla", "delay")
        );
        assert!(locks[0].open());
    }
    let out = fleet
        .on_head(&["secret", "get", "flotilla.ray-token", "--reveal"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // The evaluations start on the sleeper: the other worker sits the start out.
    let out = fleet.on_head(&["pause", "--node", "s2"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    wait_for("s2 out of Ray", Duration::from_secs(60), || {
        fleet.alive_id("s2").is_none()
    });
    let s1 = fleet.alive_id("s1").expect("s1 is in Ray");
    let sweep_out = fleet.head.path().join("sweep.json");
    let sweep_err = fleet.head.path().join("sweep.err");
    // Each evaluation backtests 600 resampled markets: tens of seconds, so that both are
    // still running when the machine goes to sleep.
    let mut sweep = fleet
        .on_head(&[
            "demo",
            "--json",
            "--evals",
            &EVALS.to_string(),
            "--paths",
            "600",
            "--candles",
            "100000",
        ])
        .stdout(std::fs::File::create(&sweep_out).unwrap())
        .stderr(std::fs::File::create(&sweep_err).unwrap())
        .spawn()
        .unwrap();
    let running_on = |tasks: &[(String, u64, String, String)], node: &str| -> BTreeSet<String> {
        tasks
            .iter()
            .filter(|(_, _, state, n)| state == "RUNNING" && n == node)
            .map(|(id, ..)| id.clone())
            .collect()
    };
    let mut on_s1 = BTreeSet::new();
    wait_for(
        "both evaluations running on s1",
        Duration::from_secs(180),
        || {
            on_s1 = running_on(&fleet.tasks(&token), &s1);
            assert!(
                sweep.try_wait().unwrap().is_none(),
                "the sweep ended early: {}",
                std::fs::read_to_string(&sweep_err).unwrap_or_default()
            );
            on_s1.len() == EVALS as usize
        },
    );
    let out = fleet.on_head(&["resume", "--node", "s2"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    wait_for("s2 back in Ray", Duration::from_secs(120), || {
        fleet.alive_id("s2").is_some()
    });

    // Sleep is announced.
    let announced = Instant::now();
    emit("PrepareForSleep", true);
    eprintln!("sleep announced at {}", utc_now());
    // The work is handed back: every evaluation that ran on s1 runs again elsewhere, and the
    // lock is let go.
    let mut released: Option<Duration> = None;
    let moved = wait_for(
        "s1's evaluations running elsewhere",
        Duration::from_secs(120),
        || {
            if released.is_none() && locks.lock().unwrap()[0].closed_within(Duration::ZERO) {
                released = Some(announced.elapsed());
            }
            let tasks = fleet.tasks(&token);
            on_s1.iter().all(|id| {
                tasks.iter().any(|(t, attempt, state, node)| {
                    t == id
                        && *attempt > 0
                        && node != &s1
                        && matches!(state.as_str(), "RUNNING" | "FINISHED")
                })
            })
        },
    );
    let moved = announced.elapsed().max(moved);
    let released = released.unwrap_or_else(|| {
        let locks = locks.lock().unwrap();
        assert!(
            locks[0].closed_within(Duration::from_secs(10)),
            "the inhibitor lock was kept past the hand-back"
        );
        announced.elapsed()
    });
    eprintln!(
        "sleep announced -> lock released (the machine may sleep): {:.1} s; s1's evaluations \
         running elsewhere: {:.1} s",
        released.as_secs_f64(),
        moved.as_secs_f64()
    );
    // Without the hand-back Ray would need 15 s at least only to mark the node dead (health
    // checks 3 s apart, 5 failures), and its running tasks move only when the driver's own
    // connection to their worker fails (gRPC keepalive: about 7 minutes, `bench/src/bin/sleep.rs`
    // measures it): the evaluations moved because s1 said it was leaving.
    assert!(
        moved < Duration::from_secs(15),
        "the evaluations took {moved:?} to move: as long as Ray's health checks"
    );
    // The head's view follows Ray's node table within its poll.
    wait_for("s1 out of Ray", Duration::from_secs(15), || {
        fleet.alive_id("s1").is_none()
    });
    // The sleeper's own account of the hand-back, step by step.
    account(
        fleet.workers[0].1.path(),
        &[
            "handing",
            "draining",
            "leaves",
            "left",
            "handed",
            "did not stop",
            "may go",
        ],
    );
    let status = fleet.status().unwrap();
    let agent = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "s1")
        .cloned()
        .unwrap();
    eprintln!("s1 as the head last heard it: {agent}");

    // The machine sleeps: everything of s1's home stops, the agent included.
    let (_, s1_home, _) = &fleet.workers[0];
    let s1_home = s1_home.path().to_path_buf();
    signal_home(&s1_home, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    signal_home(&s1_home, libc::SIGCONT);
    let woke = Instant::now();
    emit("PrepareForSleep", false);
    eprintln!("wake announced at {}", utc_now());
    let back = wait_for(
        "s1 ALIVE again after wake",
        Duration::from_secs(120),
        || fleet.ray_alive_id(&token, "s1").is_some_and(|id| id != s1),
    );
    eprintln!(
        "wake -> s1 ALIVE again in Ray's node table: {:.1} s (seen at {})",
        woke.elapsed().max(back).as_secs_f64(),
        utc_now()
    );
    account(
        fleet.workers[0].1.path(),
        &[
            "Back after",
            "Ray node starting",
            "Ray node ready",
            "resuming",
        ],
    );
    // The agent took the lock again for the next sleep, and says how long it slept.
    wait_for(
        "a new inhibitor lock after wake",
        Duration::from_secs(10),
        || locks.lock().unwrap().len() == 2,
    );
    assert!(locks.lock().unwrap()[1].open());
    let log = std::fs::read_to_string(s1_home.join("agent.out")).unwrap();
    assert!(
        log.contains("Back after"),
        "{}",
        tail(&s1_home.join("agent.out"), 30)
    );
    assert!(
        !log.contains("Ray node exited; restarting"),
        "the node came back through the crash backoff: {}",
        tail(&s1_home.join("agent.out"), 30)
    );

    // Nothing lost: every evaluation once.
    let status = sweep.wait().unwrap();
    let report = std::fs::read_to_string(&sweep_out).unwrap();
    assert!(
        status.success(),
        "the sweep failed: {report}{}",
        std::fs::read_to_string(&sweep_err).unwrap_or_default()
    );
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let mut ids: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..u64::from(EVALS)).collect::<Vec<_>>(), "{report}");
    eprintln!("sweep: {EVALS} evaluations by node {}", v["nodes"]);

    // A shutdown gets the same treatment; one called off brings the node back.
    emit("PrepareForShutdown", true);
    wait_for(
        "s1 out of Ray before shutdown",
        Duration::from_secs(30),
        || fleet.alive_id("s1").is_none(),
    );
    assert!(
        locks.lock().unwrap()[1].closed_within(Duration::from_secs(10)),
        "the lock was kept past the hand-back before shutdown"
    );
    emit("PrepareForShutdown", false);
    wait_for(
        "s1 back after the shutdown was called off",
        Duration::from_secs(120),
        || fleet.alive_id("s1").is_some(),
    );
    wait_for("a new inhibitor lock", Duration::from_secs(10), || {
        locks.lock().unwrap().len() == 3
    });

    // With on_sleep = "ignore" (read again from the machine's file), the machine may go at
    // once and the node stays in Ray with its work.
    let s1_home = fleet.workers[0].1.path().to_path_buf();
    let file = s1_home.join("config/flotilla.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}on_sleep = \"ignore\"\n")).unwrap();
    let socket = flotilla_host::Dirs::under(&s1_home).agent_socket();
    let reply = ask(&socket, r#"{"reload": "policy"}"#);
    assert_eq!(reply["ok"], true, "{reply}");
    let id = fleet.alive_id("s1").expect("s1 is in Ray");
    emit("PrepareForSleep", true);
    assert!(
        locks.lock().unwrap()[2].closed_within(Duration::from_secs(10)),
        "the lock was kept though on_sleep = \"ignore\""
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        fleet.alive_id("s1"),
        Some(id),
        "s1 left Ray though told to ignore sleep"
    );
    emit("PrepareForSleep", false);
    wait_for("a new inhibitor lock", Duration::from_secs(10), || {
        locks.lock().unwrap().len() == 4
    });
    drop(fleet);
    drop(logind);
}
