//! What the CLI tests share: running the real `flotilla` binary with a private home.
#![allow(dead_code)] // Each test binary uses its own part.

#[allow(unused_imports)] // Only the multi-host tests use the lab.
pub use flotilla_testkit::netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// `flotilla` with its own `FLOTILLA_HOME`, sharing the provisioned runtime between tests (and
/// with the test command's cache) through `FLOTILLA_DATA_DIR`.
pub fn flotilla(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("FLOTILLA_HOME", home)
        .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
        .stdin(Stdio::null());
    c
}

/// The arguments of `flotilla join -` (the code comes on standard input, never in argv) for a
/// small worker named `name` with its node ports from `node_ports`.
pub fn join_args(name: &str, node_ports: u16, report_every: &str) -> Vec<String> {
    [
        "join",
        "-",
        "--name",
        name,
        "--cpus",
        "1",
        "--object-store-mb",
        "100",
        "--node-ports",
        &node_ports.to_string(),
        "--report-every",
        report_every,
    ]
    .map(String::from)
    .to_vec()
}

/// Stores `value` as the secret `name` in `home`'s store, through standard input.
pub fn set_secret(home: &Path, name: &str, value: &str) {
    let mut set = flotilla(home)
        .args(["secret", "set", name, "--from-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    give_stdin(&mut set, format!("{value}\n").as_bytes());
    assert!(set.wait().unwrap().success());
}

/// Writes `bytes` to a child started with a piped standard input and closes it (how join codes
/// and secrets reach `flotilla`: never in argv).
pub fn give_stdin(child: &mut Child, bytes: &[u8]) {
    use std::io::Write;
    let mut stdin = child.stdin.take().expect("a child with a piped stdin");
    stdin.write_all(bytes).unwrap();
}

/// The port options of one test's cluster, from a base, so tests never collide.
///
/// Bases stay below 32768, outside Linux's ephemeral range (32768-60999): an outgoing
/// connection of any process may take a port in that range as its own, and a node whose port is
/// taken refuses to start.
pub fn port_args(base: u16) -> Vec<String> {
    [
        ("--api-port", base),
        ("--ray-port", base + 1),
        ("--ray-dashboard-port", base + 2),
        ("--ray-client-port", base + 3),
        ("--control-port", base + 4),
        ("--head-node-ports", base + 100),
        ("--node-ports", base + 500),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect()
}

/// One cluster at a time per test binary.
pub static CLUSTER: Mutex<()> = Mutex::new(());

/// A small one-machine cluster on ports from `base`.
pub fn up_args(base: u16) -> Vec<String> {
    port_args(base)
        .into_iter()
        .chain(["--cpus", "1", "--object-store-mb", "100", "--name", "w1"].map(String::from))
        .collect()
}

pub struct Up {
    pub child: Child,
    pub home: tempfile::TempDir,
    pub base: u16,
}

impl Up {
    pub fn start(base: u16) -> Up {
        Up::start_in(
            tempfile::Builder::new()
                .prefix("fl")
                .tempdir_in("/tmp")
                .unwrap(),
            base,
        )
    }

    pub fn start_in(home: tempfile::TempDir, base: u16) -> Up {
        Up::launch(home, base, false)
    }

    /// As `nohup flotilla up` does: SIGHUP is ignored from the start, and every child inherits
    /// that unless it resets it.
    pub fn start_ignoring_sighup(base: u16) -> Up {
        Up::launch(
            tempfile::Builder::new()
                .prefix("fl")
                .tempdir_in("/tmp")
                .unwrap(),
            base,
            true,
        )
    }

    fn launch(home: tempfile::TempDir, base: u16, ignore_sighup: bool) -> Up {
        let mut cmd = flotilla(home.path());
        cmd.arg("up")
            .args(up_args(base))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if ignore_sighup {
            use std::os::unix::process::CommandExt;
            // SAFETY: signal() is async-signal-safe and allocates nothing.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGHUP, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        Up {
            child: cmd.spawn().unwrap(),
            home,
            base,
        }
    }

    /// Stops the cluster (SIGTERM, as Ctrl-C does) and waits for it to exit.
    pub fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// Starts the cluster again in the same home, on the same ports.
    pub fn restart(&mut self) {
        self.child = flotilla(self.home.path())
            .arg("up")
            .args(up_args(self.base))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    }

    /// Waits until `alive` nodes are ALIVE. A cluster that is not up in 5 minutes is hung, not
    /// slow: it is killed, and the panic shows its last status and what `flotilla up` printed.
    pub fn wait_status(&mut self, alive: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut last;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = self.child.wait_with_output_ref();
                panic!(
                    "flotilla up exited early ({status}): {out}{}",
                    ray_logs(self.home.path())
                );
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
                last = v["nodes"].to_string();
            } else {
                last = String::from_utf8_lossy(&out.stderr).into_owned();
            }
            if Instant::now() >= deadline {
                // SAFETY: plain kill of our own child; its output pipe then reaches its end.
                unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
                let printed = self.child.wait_with_output_ref();
                panic!(
                    "{alive} nodes not ALIVE within 5 minutes; the last status: {last}\n\
                     --- flotilla up printed:\n{printed}{}",
                    ray_logs(self.home.path())
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// The last `lines` lines of a text file (nothing if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last lines of every Ray node's log under a Flotilla home (`logs/ray-*.log`), for the
/// message of a test whose cluster did not come up: the home is gone once the test ends.
pub fn ray_logs(home: &Path) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(home.join("logs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("ray-") && n.ends_with(".log"))
    });
    logs.sort();
    logs.iter()
        .map(|p| format!("\n--- the end of {}:\n{}", p.display(), tail(p, 40)))
        .collect()
}

pub trait OutputRef {
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
pub fn processes_of(home: &Path) -> Vec<u32> {
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

pub fn wait_none_left(home: &Path, within: Duration) -> Vec<u32> {
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
pub fn http_get(port: u16, path: &str) -> (u16, String) {
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
pub fn assert_no_leak(home: &Path, value: &str) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(value),
                "the secret is in the argv of process {:?}",
                e.file_name()
            );
            // Flotilla's own processes never hold it in their environment (Ray's processes
            // get the cluster token that way, by design).
            let is_flotilla = cmdline.split(|&b| b == 0).next() == Some(BIN.as_bytes());
            if is_flotilla && let Ok(env) = std::fs::read(e.path().join("environ")) {
                assert!(
                    !String::from_utf8_lossy(&env).contains(value),
                    "the secret is in the environment of flotilla process {:?}",
                    e.file_name()
                );
            }
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

/// The join code `cmd` prints: `flotilla invite --json`, with its home and options, run on
/// the head's machine.
pub fn invite_code(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["code"]
        .as_str()
        .expect("a join code")
        .to_string()
}

/// Checks what `flotilla demo --verify --json` printed: it succeeded, ran `evals`
/// evaluations, and matched a local run.
pub fn check_sweep(out: &Output, evals: u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["evaluations"], evals, "{v}");
    assert_eq!(v["identical_to_local"], true, "{v}");
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
