//! Memory politeness on a real agent and a real Ray node: the node's memory ceiling follows the
//! owner's demand, and when the owner needs the memory a Ray task holds, the node gives it back
//! (its largest task worker is ended and Ray retries the task) without the owner being killed.
//!
//! The cluster and the owner live in a memory cgroup of the test's own (a 2.5 GiB "laptop"),
//! which the agent is told stands for the machine (`FLOTILLA_MEMORY_CGROUP`): the pressure and
//! the cgroup writes are real, and the shared build machine is never pressed.
#![cfg(target_os = "linux")]

mod common;
use common::flotilla;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BASE: u16 = 33000;
const MIB: u64 = 1 << 20;
const LAPTOP_MIB: u64 = 2560;

/// A memory cgroup of the test's own under its own (v1 here), limited to `LAPTOP_MIB`.
struct Laptop(PathBuf);

impl Laptop {
    fn create() -> Laptop {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let _ = parts.next()?;
                parts
                    .next()?
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| parts.next().map(str::to_string))?
            })
            .expect("this test needs the cgroup v1 memory controller (and root)");
        let dir = Path::new("/sys/fs/cgroup/memory")
            .join(path.trim_start_matches('/'))
            .join(format!("flotilla-test-laptop-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("memory.limit_in_bytes"),
            (LAPTOP_MIB * MIB).to_string(),
        )
        .unwrap();
        Laptop(dir)
    }

    /// `program` started inside the laptop.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
            .arg(self.0.join("cgroup.procs"))
            .arg(program)
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

struct Up {
    home: tempfile::TempDir,
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.home.path().join("up.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- the end of `flotilla up`'s log:");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        // SAFETY: plain kill of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        flotilla_host::process::kill_marked(&format!(
            "FLOTILLA_HOME={}",
            self.home.path().display()
        ));
    }
}

fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) -> Duration {
    wait_for_in(None, what, limit, f)
}

/// [`wait_for`], saying what the agent enforces when it times out.
fn wait_for_in(
    home: Option<&Path>,
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "{what}: not within {limit:?}; the agent enforces {}",
            home.map(enforcement).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    t.elapsed()
}

/// The agent's enforcement, over its control socket.
fn enforcement(home: &Path) -> serde_json::Value {
    let Ok(mut s) =
        std::os::unix::net::UnixStream::connect(flotilla_host::Dirs::under(home).agent_socket())
    else {
        return serde_json::Value::Null;
    };
    s.write_all(b"{\"get\": \"decision\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    v["decision"]["enforcement"].clone()
}

fn ceiling(home: &Path) -> Option<u64> {
    enforcement(home)["memory_limit_bytes"].as_u64()
}

/// An owner process in the laptop that takes `mib` MiB, writes every page and holds it.
fn owner(laptop: &Laptop, mib: u64) -> Child {
    laptop
        .command(Path::new("/usr/bin/env"))
        .args([
            "python3",
            "-c",
            &format!(
                "import time\nb = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n\
                 print('held', flush=True)\ntime.sleep(600)\n"
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_held(child: &mut Child) {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held", "the owner could not take its memory");
}

#[test]
fn the_memory_ceiling_follows_the_owner_and_the_node_gives_memory_back() {
    let _one = common::CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let laptop = Laptop::create();
    let home = tempfile::Builder::new()
        .prefix("flm")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    // The memory rule at its default (15 % kept free); the owner's CPU load never counts.
    std::fs::write(
        home.path().join("config/flotilla.toml"),
        "[policy]\nowner_load_threshold = 1.0\n",
    )
    .unwrap();
    let mut up = laptop.command(Path::new(common::BIN));
    up.env("FLOTILLA_HOME", home.path())
        .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
        .env("FLOTILLA_MEMORY_CGROUP", &laptop.0)
        .args([
            "up",
            "--cpus",
            "1",
            "--object-store-mb",
            "100",
            "--name",
            "m1",
        ])
        .args(common::port_args(BASE));
    let log = std::fs::File::create(home.path().join("up.log")).unwrap();
    let up = Up {
        child: up.stdout(Stdio::null()).stderr(log).spawn().unwrap(),
        home,
    };
    let home = up.home.path();
    wait_for_in(
        Some(home),
        "the node's memory ceiling",
        Duration::from_secs(400),
        || ceiling(home).is_some() && enforcement(home)["memory_used_bytes"].as_u64().is_some(),
    );
    let e = enforcement(home);
    assert_eq!(e["memory_ceiling_held"], true, "{e}");
    let first = ceiling(home).unwrap();
    let used = e["memory_used_bytes"].as_u64().unwrap();
    assert!(first > used, "at rest the node is under its ceiling: {e}");
    // The node's group is in the laptop, and the kernel holds the ceiling the agent reports.
    let group = std::fs::read_dir(&laptop.0)
        .unwrap()
        .flatten()
        .find(|d| d.file_name().to_string_lossy().starts_with("flotilla-m1-"))
        .expect("the node's memory group inside the laptop")
        .path();
    let kernel: u64 = std::fs::read_to_string(group.join("memory.limit_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(kernel / 4096, first / 4096);

    // The owner takes 400 MiB: the ceiling falls by about as much.
    let mut o = owner(&laptop, 400);
    wait_held(&mut o);
    wait_for_in(
        Some(home),
        "the ceiling to fall",
        Duration::from_secs(20),
        || ceiling(home).is_some_and(|c| c + 300 * MIB < first),
    );
    // And rises back when they free it.
    o.kill().unwrap();
    o.wait().unwrap();
    wait_for_in(
        Some(home),
        "the ceiling to rise again",
        Duration::from_secs(20),
        || ceiling(home).is_none_or(|c| c + 100 * MIB >= first),
    );

    // A Ray task holds 500 MiB; then the owner needs more than is left beside it.
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("state/head.json")).unwrap()).unwrap();
    let python = PathBuf::from(info["runtime_dir"].as_str().unwrap()).join("bin/python");
    let token = {
        let out = flotilla(home)
            .args(["secret", "get", "flotilla.ray-token", "--reveal"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let marker = home.join("task-started");
    let driver = Command::new(python)
        .args([
            "-c",
            &format!(
                "import os, time, ray\nray.init(log_to_driver=False)\n\
                 @ray.remote(num_cpus=1, max_retries=5)\n\
                 def hold():\n\
                 \x20   b = bytearray(500 << 20)\n\
                 \x20   for i in range(0, len(b), 4096): b[i] = 1\n\
                 \x20   open({marker:?}, 'a').write('x')\n\
                 \x20   time.sleep(12)\n\
                 \x20   return os.getpid()\n\
                 print(ray.get(hold.remote()), flush=True)\n",
                marker = marker.display().to_string()
            ),
        ])
        .env("RAY_ADDRESS", info["ray_address"].as_str().unwrap())
        .env("RAY_AUTH_MODE", "token")
        .env("RAY_AUTH_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the task to hold its memory",
        Duration::from_secs(120),
        || marker.exists(),
    );
    let with_task = enforcement(home);
    let free_now = ceiling(home)
        .unwrap()
        .saturating_sub(with_task["memory_used_bytes"].as_u64().unwrap());
    // More than the node's room under its ceiling: the node must give the task's memory back.
    let take = free_now / MIB + 300;
    let mut o = owner(&laptop, take);
    wait_held(&mut o);
    wait_for_in(
        Some(home),
        "a task worker shed",
        Duration::from_secs(30),
        || enforcement(home)["shed_workers"].as_u64() >= Some(1),
    );
    // The owner keeps its memory: it is not killed while it holds it (Ray's retry of the task,
    // on this same node, may be shed again meanwhile).
    std::thread::sleep(Duration::from_secs(3));
    assert!(o.try_wait().unwrap().is_none(), "the owner was killed");
    // The owner leaves; Ray retried the task, which completes: nothing is lost.
    o.kill().unwrap();
    o.wait().unwrap();
    let out = driver.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the task was lost: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = std::fs::read_to_string(&marker).unwrap().len();
    assert!(runs >= 2, "the task ran {runs} time(s): shed, then retried");
    drop(up);
}
