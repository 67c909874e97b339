//! `flotilla up`, `status` and `demo` as a user runs them: the real binary, a real Ray from
//! Flotilla's runtime manager, a private `FLOTILLA_HOME` per test, one cluster at a time.
//!
//! Linux only: the tests read `/proc` to prove that no process of a cluster is left.
#![cfg(target_os = "linux")]

mod common;
use common::{BIN, flotilla};

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static CLUSTER: Mutex<()> = Mutex::new(());

/// A small one-machine cluster on ports from `base`.
fn up_args(base: u16) -> Vec<String> {
    common::port_args(base)
        .into_iter()
        .chain(["--cpus", "1", "--object-store-mb", "100", "--name", "w1"].map(String::from))
        .collect()
}

struct Up {
    child: Child,
    home: tempfile::TempDir,
}

impl Up {
    fn start(base: u16) -> Up {
        Up::start_in(
            tempfile::Builder::new()
                .prefix("fl")
                .tempdir_in("/tmp")
                .unwrap(),
            base,
        )
    }

    fn start_in(home: tempfile::TempDir, base: u16) -> Up {
        let child = flotilla(home.path())
            .arg("up")
            .args(up_args(base))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Up { child, home }
    }

    fn wait_status(&mut self, alive: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = self.child.wait_with_output_ref();
                panic!("flotilla up exited early ({status}): {out}");
            }
            let out = flotilla(self.home.path())
                .args(["status", "--json"])
                .output()
                .unwrap();
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if v["totals"]["nodes_alive"] == alive {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "cluster not up in time");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

trait OutputRef {
    fn wait_with_output_ref(&mut self) -> String;
}

impl OutputRef for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(e) = self.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose environment carries this FLOTILLA_HOME: the cluster's whole tree.
fn processes_of(home: &Path) -> Vec<u32> {
    let needle = format!("FLOTILLA_HOME={}", home.display()).into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_slice()))
                .unwrap_or(false)
        })
        .collect()
}

fn wait_none_left(home: &Path, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_of(home);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.0 GET on loopback; returns the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The value is in no process's argv, and in no file under the logs, config and run dirs (Ray's
/// own session logs included).
fn assert_no_leak(home: &Path, value: &str) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(value),
                "the secret is in the argv of process {:?}",
                e.file_name()
            );
        }
    }
    let mut stack = vec![home.join("logs"), home.join("config"), home.join("run")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(value),
                    "the secret is in {}",
                    p.display()
                );
            }
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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
    let mut set = flotilla(up.home.path())
        .args(["secret", "set", "exchange-key", "--from-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        set.stdin
            .take()
            .unwrap()
            .write_all(format!("{value}\n").as_bytes())
            .unwrap();
    }
    assert!(set.wait().unwrap().success());
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
}

#[test]
fn kill_9_of_flotilla_leaves_no_ray_process_within_5_s() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut up = Up::start(33000);
    up.wait_status(2);
    assert!(processes_of(up.home.path()).len() > 5, "the Ray trees run");
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
    let mut again = Up::start_in(home, 33000);
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
