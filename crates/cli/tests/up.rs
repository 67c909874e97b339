//! `flotilla up`, `status` and `demo` as a user runs them: the real binary, a real Ray from
//! Flotilla's runtime manager, a private `FLOTILLA_HOME` per test, one cluster at a time.
//!
//! Linux only: the tests read `/proc` to prove that no process of a cluster is left.
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::process::Command;
use std::time::Duration;

#[test]
fn up_runs_two_nodes_the_demo_matches_a_local_run_and_ctrl_c_stops_everything() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut up = Up::start(31000);
    let status = up.wait_status(2);
    let nodes = status["nodes"].as_array().unwrap();
    assert!(nodes.iter().all(|n| n["state"] == "ALIVE"));
    assert!(
        nodes
            .iter()
            .any(|n| n["is_head"] == true && n["cpus_total"] == 0.0)
    );
    assert!(
        nodes
            .iter()
            .any(|n| n["name"] == "w1" && n["cpus_total"] == 1.0 && n["flotilla"] == true)
    );

    let (code, body) = http_get(31000, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(31000, "/api/v1/cluster");
    assert_eq!(code, 200);
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["totals"]["nodes_alive"], 2);
    let (code, _) = http_get(31000, "/api/v1/nope");
    assert_eq!(code, 404);

    let human = flotilla(up.home.path()).arg("status").output().unwrap();
    assert!(human.status.success());
    assert!(text(&human).contains("2 nodes alive"), "{}", text(&human));

    let demo = flotilla(up.home.path())
        .args(["demo", "--verify", "--json"])
        .output()
        .unwrap();
    assert!(demo.status.success(), "{}", text(&demo));
    let d: serde_json::Value = serde_json::from_slice(&demo.stdout).unwrap();
    assert_eq!(d["evaluations"], 80);
    assert_eq!(d["candles"], 297_000);
    assert_eq!(d["identical_to_local"], true);
    assert_eq!(
        d["nodes"]["w1"], 80,
        "every task ran on the worker: {}",
        d["nodes"]
    );

    // A stored secret reaches a submitted job as an environment variable, and its value
    // appears in no process's argv, no log and no config file.
    let value = "sk-live-7f3a9c1e-never-in-argv";
    set_secret(up.home.path(), "exchange-key", value);
    let job = flotilla(up.home.path())
        .args(["submit", "--secret", "exchange-key=EXCHANGE_KEY", "--"])
        .args(["python", "-c", "import os,hashlib; print('digest', hashlib.sha256(os.environ['EXCHANGE_KEY'].encode()).hexdigest())"])
        .output()
        .unwrap();
    assert!(job.status.success(), "{}", text(&job));
    let digest = {
        use std::fmt::Write;
        let out = Command::new("python3")
            .args([
                "-c",
                &format!("import hashlib; print(hashlib.sha256({value:?}.encode()).hexdigest())"),
            ])
            .output()
            .unwrap();
        let mut s = String::new();
        write!(s, "{}", String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        s
    };
    assert!(
        text(&job).contains(&format!("digest {digest}")),
        "{}",
        text(&job)
    );
    assert_no_leak(up.home.path(), value);

    // A second `flotilla up` on the same machine says where the first one is.
    let second = flotilla(up.home.path())
        .arg("up")
        .args(up_args(32000))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let msg = text(&second);
    assert!(
        msg.contains("already running") && msg.contains(&up.pid().to_string()),
        "{msg}"
    );
    assert!(msg.contains("http://127.0.0.1:31000"), "{msg}");

    // Ctrl-C: a clean stop that leaves no Ray process behind.
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(up.pid(), libc::SIGINT) };
    let status = up.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        wait_none_left(up.home.path(), Duration::from_secs(5)),
        Vec::<u32>::new()
    );
    assert!(!up.home.path().join("state/head.json").exists());

    // The head's log is kept in the log dir as JSON lines.
    let logs = up.home.path().join("logs");
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("flotilla.") && n.ends_with(".log"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(logs.join(&files[0])).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string()),
        "{text}"
    );
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "head started")
        .unwrap_or_else(|| panic!("no \"head started\" in {text}"));
    assert_eq!(started["level"], "INFO", "{started}");
    assert_eq!(
        started["fields"]["api"], "http://127.0.0.1:31000",
        "{started}"
    );
}

#[test]
fn kill_9_of_flotilla_leaves_no_ray_process_within_5_s() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    // Started as `nohup` starts it, the harder case: a tree's guard that inherited an ignored
    // SIGHUP could not act on the parent-death signal.
    let mut up = Up::start_ignoring_sighup(23200);
    up.wait_status(2);
    assert!(processes_of(up.home.path()).len() > 5, "the Ray trees run");
    let guards: Vec<u32> = processes_of(up.home.path())
        .into_iter()
        .filter(|pid| is_guard(*pid))
        .collect();
    assert!(!guards.is_empty(), "the Ray trees have guards");
    assert!(ignores_sighup(up.child.id()), "started as under nohup");
    for pid in guards {
        assert!(
            !ignores_sighup(pid),
            "guard {pid} ignores SIGHUP: it would outlive a killed `flotilla up`"
        );
    }
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(up.pid(), libc::SIGKILL) };
    let _ = up.child.wait();
    assert_eq!(
        wait_none_left(up.home.path(), Duration::from_secs(5)),
        Vec::<u32>::new()
    );

    // The dead instance's files (head.json, the lock file) do not block the next one.
    assert!(up.home.path().join("state/head.json").exists());
    let home = std::mem::replace(&mut up.home, tempfile::tempdir().unwrap());
    drop(up);
    let mut again = Up::start_in(home, 23200);
    again.wait_status(2);
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(again.pid(), libc::SIGINT) };
    assert!(again.child.wait().unwrap().success());
    assert_eq!(
        wait_none_left(again.home.path(), Duration::from_secs(5)),
        Vec::<u32>::new()
    );
}

#[test]
fn a_port_in_use_names_the_port_and_the_option() {
    let home = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = flotilla(home.path())
        .args(["up", "--api-port", &port.to_string(), "--no-worker"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains(&format!("port {port}")) && msg.contains("--api-port"),
        "{msg}"
    );
}

#[test]
fn status_without_a_head_says_how_to_start_one() {
    let home = tempfile::tempdir().unwrap();
    let out = flotilla(home.path())
        .args(["status", "--api", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("flotilla up"), "{}", text(&out));
    let out = flotilla(home.path()).arg("demo").output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("flotilla up"), "{}", text(&out));
}

#[test]
fn help_teaches_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = text(&out);
    for word in ["up", "status", "demo", "runtime"] {
        assert!(help.contains(word), "{help}");
    }
}

/// Whether `pid` has SIGHUP (signal 1, bit 0 of the mask) ignored, per `/proc/<pid>/status`.
fn ignores_sighup(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & 1 != 0)
}

/// Whether `pid` is a process tree's guard (`sh -c <guard> flotilla-guard <program>...`).
fn is_guard(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmd| cmd.split(|&b| b == 0).any(|arg| arg == b"flotilla-guard"))
}
