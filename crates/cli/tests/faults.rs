//! Faults during a sweep: a head and two workers, each in its own network namespace, joined
//! with a code; while the strategy sweep runs, a seeded random schedule pauses and resumes
//! workers from the head, kills a worker's raylet or its agent (and restarts the agent as a
//! service manager would), cuts a worker's link for a while, and flips the owner between
//! active and idle. At the end nothing is lost: every evaluation once and identical to a local
//! run, every worker back in Ray and in session, every contribution record in the head's
//! ledger exactly once and gone from the agent's outbox, no process left behind.
//!
//! Knobs (environment):
//! - `FLOTILLA_FAULT_SEED=N` replays a schedule (the seed is printed on every run);
//! - `FLOTILLA_FAULTS=full`: a longer window, more faults, cuts up to 90 s (default: short,
//!   cuts of 10-25 s, about four minutes in all);
//! - `FLOTILLA_SOAK_SECS=N`: the soak's length (default 70 s; 3600 for the hour-long soak):
//!   sweeps in a loop with occasional faults while the resident memory of the head's and the
//!   agents' `flotilla` processes is sampled every 10 s;
//! - `FLOTILLA_SOAK_OUT=PATH`: the soak's figures also written there as JSON (`bench/report
//!   --soak` puts them beside the benchmarks').
//!
//! Only faults a real fleet sees are injected, and at most one worker is disrupted at a time
//! (a paused, cut or restarting worker), so the sweep always has somewhere to run.
#![cfg(target_os = "linux")]

mod common;
use common::netns::{Lab, wait_for};
use common::*;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BASE: u16 = 15000;
const WORKERS: [&str; 2] = ["a", "b"];

/// A small seeded generator (SplitMix64): the same seed, the same schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() as usize % items.len()]
    }
}

fn seed() -> u64 {
    match std::env::var("FLOTILLA_FAULT_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FLOTILLA_FAULT_SEED={s:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// How hard a run shakes the fleet.
#[derive(Debug, Clone, Copy)]
struct Form {
    name: &'static str,
    /// How long faults are injected.
    window: Duration,
    /// Seconds between two faults.
    gap: (u64, u64),
    /// Seconds a link stays cut.
    cut: (u64, u64),
    /// Seconds a pause lasts before the head resumes the node.
    pause: (u64, u64),
    /// Seconds an agent stays down before its service manager restarts it.
    restart: (u64, u64),
    /// Seconds between two flips of the owner's activity.
    owner: (u64, u64),
    evals: u32,
    candles: u32,
}

fn form() -> Form {
    match std::env::var("FLOTILLA_FAULTS").as_deref() {
        Ok("full") => Form {
            name: "full",
            window: Duration::from_secs(600),
            gap: (2, 6),
            cut: (10, 90),
            pause: (3, 20),
            restart: (1, 10),
            owner: (2, 8),
            evals: 900,
            candles: 297_000,
        },
        Ok("short") | Err(_) => Form {
            name: "short",
            window: Duration::from_secs(120),
            gap: (3, 7),
            cut: (10, 25),
            pause: (3, 12),
            restart: (1, 5),
            owner: (2, 6),
            evals: 400,
            candles: 297_000,
        },
        Ok(other) => panic!("FLOTILLA_FAULTS={other:?}: expected `short` or `full`"),
    }
}

fn home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ff")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Starts a long-running command with its output appended to a file of `home`.
fn spawn_logged(mut cmd: std::process::Command, home: &Path, name: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join(format!("{name}.out")))
        .unwrap();
    cmd.stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The node options a worker runs with, the same for `join` and for the restarted
/// `flotilla worker` (a service unit carries them).
fn node_args(name: &str, i: usize) -> Vec<String> {
    let mut args = join_args(name, BASE + 800 + 300 * i as u16, "0.5");
    // Two CPUs, so that the owner's activity (one CPU then) changes what the node offers.
    let at = args.iter().position(|a| a == "--cpus").unwrap();
    args[at + 1] = "2".into();
    // Records close every 2 s, so the ledger sees many of them during a run.
    args.extend(["--record-every".into(), "2".into()]);
    args.drain(..2); // `join -`
    args
}

struct Sweep {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    evals: u32,
}

impl Sweep {
    fn done(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits for the sweep and checks it (see [`check_sweep`]); returns its wall seconds.
    fn finish(mut self) -> f64 {
        let status = self.child.wait().unwrap();
        check_sweep(
            status.success(),
            &std::fs::read_to_string(&self.out).unwrap(),
            &std::fs::read_to_string(&self.err).unwrap(),
            self.evals,
        )
    }
}

struct Worker {
    name: &'static str,
    index: usize,
    home: tempfile::TempDir,
    agent: Option<Child>,
    /// Whether the owner is at the machine (fed over the control socket).
    owner_active: Arc<AtomicBool>,
}

impl Worker {
    fn path(&self) -> &Path {
        self.home.path()
    }
}

struct Fleet {
    lab: Lab,
    head: tempfile::TempDir,
    up: Option<Child>,
    workers: Vec<Worker>,
    stop_feeds: Arc<AtomicBool>,
}

impl Fleet {
    fn start(names: &[&'static str]) -> Fleet {
        let hosts: Vec<&str> = std::iter::once("h").chain(names.iter().copied()).collect();
        let lab = Lab::new(&hosts);
        let head = home();
        let mut up = lab.flotilla("h", head.path());
        up.arg("up")
            .args(port_args(BASE))
            .args(["--no-worker", "--object-store-mb", "100"])
            .env("RAY_health_check_period_ms", "1000")
            .env("RAY_health_check_timeout_ms", "1000")
            .env("RAY_health_check_failure_threshold", "5");
        let up = spawn_logged(up, head.path(), "up");
        let mut fleet = Fleet {
            lab,
            head,
            up: Some(up),
            workers: Vec::new(),
            stop_feeds: Arc::new(AtomicBool::new(false)),
        };
        wait_for("the head", Duration::from_secs(180), || {
            fleet
                .status()
                .is_some_and(|s| s["totals"]["nodes_alive"] == 1)
        });
        let code = invite_code(&mut fleet.on_head(&[
            "invite",
            "--json",
            "--uses",
            &names.len().to_string(),
        ]));
        for (index, name) in names.iter().copied().enumerate() {
            let home = home();
            std::fs::create_dir_all(home.path().join("config")).unwrap();
            // The owner counts as active for 2 s after input, and the node offers one CPU
            // then; other builds on this machine are not the owner's load.
            std::fs::write(
                home.path().join("config/flotilla.toml"),
                "[policy]\nactive_after_input_secs = 2\nramp_up_after_secs = 2\n\
                 active_cpus = 1\nowner_load_threshold = 1.0\nmin_free_memory_fraction = 0\n",
            )
            .unwrap();
            let mut join = fleet.lab.flotilla(name, home.path());
            join.args(["join", "-"])
                .args(node_args(name, index))
                .stdin(Stdio::piped());
            let mut child = spawn_logged(join, home.path(), "agent");
            give_stdin(&mut child, code.as_bytes());
            let worker = Worker {
                name,
                index,
                home,
                agent: Some(child),
                owner_active: Arc::new(AtomicBool::new(false)),
            };
            feed_owner(&worker, fleet.stop_feeds.clone());
            fleet.workers.push(worker);
        }
        let all = names.len() + 1;
        wait_for("every worker in Ray", Duration::from_secs(240), || {
            fleet
                .status()
                .is_some_and(|s| s["totals"]["nodes_alive"] == all)
        });
        wait_for("every worker in session", Duration::from_secs(60), || {
            fleet
                .status()
                .is_some_and(|s| names.iter().all(|n| connected(&s, n)))
        });
        fleet
    }

    fn on_head(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.lab.flotilla("h", self.head.path());
        c.args(args);
        c
    }

    fn status(&self) -> Option<serde_json::Value> {
        let out = self
            .on_head(&[
                "status",
                "--json",
                "--api",
                &format!("http://127.0.0.1:{BASE}"),
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Starts `demo --verify --json`; its output goes to files (a full pipe nobody reads
    /// would stall it), read back by [`Sweep::finish`].
    fn sweep(&self, evals: u32, candles: u32) -> Sweep {
        let n = std::fs::read_dir(self.head.path()).unwrap().count();
        let out = self.head.path().join(format!("sweep-{n}.json"));
        let err = self.head.path().join(format!("sweep-{n}.err"));
        let child = self
            .on_head(&[
                "demo",
                "--verify",
                "--json",
                "--evals",
                &evals.to_string(),
                "--candles",
                &candles.to_string(),
            ])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Sweep {
            child,
            out,
            err,
            evals,
        }
    }

    /// Restarts worker `i`'s agent as its service manager would: `flotilla worker` in the
    /// same home with the same options.
    fn restart_agent(&mut self, i: usize) {
        let w = &self.workers[i];
        let mut cmd = self.lab.flotilla(w.name, w.path());
        cmd.arg("worker").args(node_args(w.name, w.index));
        let child = spawn_logged(cmd, w.path(), "agent");
        self.workers[i].agent = Some(child);
    }

    fn kill_agent(&mut self, i: usize) {
        if let Some(mut agent) = self.workers[i].agent.take() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(agent.id() as i32, libc::SIGKILL) };
            let _ = agent.wait();
        }
    }

    /// Stops everything the way a person would (SIGTERM), workers first.
    fn stop(&mut self) {
        self.stop_feeds.store(true, Ordering::SeqCst);
        for w in &mut self.workers {
            if let Some(mut agent) = w.agent.take() {
                // SAFETY: a signal to our own child.
                unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
                let _ = agent.wait();
            }
        }
        if let Some(mut up) = self.up.take() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
            let _ = up.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the end of the head's log:\n{}",
                tail(&self.head.path().join("up.out"), 40)
            );
            for w in &self.workers {
                eprintln!(
                    "--- the end of {}'s agent log:\n{}",
                    w.name,
                    tail(&w.path().join("agent.out"), 40)
                );
            }
        }
        for host in std::iter::once("h").chain(WORKERS) {
            if self.lab.hosts.iter().any(|h| h.name == host) {
                self.lab.restore(host);
            }
        }
        self.stop();
    }
}

/// The desktop session's feed: the owner's idle time, twice a second, while the agent runs.
fn feed_owner(w: &Worker, stop: Arc<AtomicBool>) {
    let socket = flotilla_host::Dirs::under(w.path()).agent_socket();
    let active = w.owner_active.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let ms = if active.load(Ordering::SeqCst) {
                0
            } else {
                600_000
            };
            let _ = ask(
                &socket,
                &format!(r#"{{"idle_ms": {ms}, "source": "test"}}"#),
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

/// One request over an agent's control socket; `None` while no agent listens.
fn ask(socket: &Path, req: &str) -> Option<serde_json::Value> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{req}\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// The Ray node id under which `name` is ALIVE, if it is.
fn alive_id(snapshot: &serde_json::Value, name: &str) -> Option<String> {
    snapshot["nodes"].as_array()?.iter().find_map(|n| {
        (n["name"] == name && n["state"] == "ALIVE").then(|| n["node_id"].to_string())
    })
}

fn connected(snapshot: &serde_json::Value, name: &str) -> bool {
    snapshot["agents"].as_array().is_some_and(|a| {
        a.iter()
            .any(|a| a["name"] == name && a["connected"] == true)
    })
}

/// Processes of the Ray tree the agent of `name` runs (marked `FLOTILLA_TREE=<name>-...`).
fn tree(name: &str) -> Vec<(u32, String)> {
    let prefix = format!("FLOTILLA_TREE={name}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|kv| kv.starts_with(prefix.as_bytes()))
            })
        })
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect()
}

fn raylet_of(name: &str) -> Option<u32> {
    tree(name)
        .into_iter()
        .find(|(_, cmd)| {
            cmd.split(' ')
                .next()
                .is_some_and(|exe| exe.ends_with("/raylet"))
        })
        .map(|(pid, _)| pid)
}

/// The records waiting in an agent's outbox, by sequence number (read-only).
fn outbox(home: &Path) -> rusqlite::Result<BTreeMap<u64, f64>> {
    use rusqlite::{Connection, OpenFlags};
    let conn = Connection::open_with_flags(
        home.join("state/outbox.sqlite"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut stmt = conn.prepare("SELECT seq, cpu_seconds FROM records")?;
    stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, f64>(1)?))
    })?
    .collect()
}

/// The head's ledger: for each (not revoked) node name, its records by sequence number.
fn ledger(head: &Path) -> HashMap<String, BTreeMap<u64, f64>> {
    use rusqlite::{Connection, OpenFlags};
    let conn = Connection::open_with_flags(
        head.join("state/registry.sqlite"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut out: HashMap<String, BTreeMap<u64, f64>> = HashMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT n.name, c.seq, c.cpu_seconds FROM contributions c
             JOIN nodes n ON n.id = c.node_id WHERE n.revoked_at IS NULL",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, f64>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (name, seq, cpu) = row.unwrap();
        let before = out.entry(name.clone()).or_default().insert(seq, cpu);
        assert!(
            before.is_none(),
            "{name}'s record {seq} is twice in the ledger"
        );
    }
    out
}

/// Checks the head's registry on its own terms: each worker enrolled once and not revoked, no
/// sequence number twice for a node.
fn check_registry(head: &Path, names: &[&str]) {
    use rusqlite::{Connection, OpenFlags};
    let conn = Connection::open_with_flags(
        head.join("state/registry.sqlite"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    for name in names {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM nodes WHERE name = ?1 AND revoked_at IS NULL",
                [name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "{name} should be enrolled once, and not revoked");
    }
    let dups: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT node_id, seq FROM contributions
             GROUP BY node_id, seq HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        dups, 0,
        "a contribution sequence number is in the ledger twice"
    );
}

/// Takes a sweep's output apart: wall seconds, after checking every evaluation is there once
/// and identical to the local run.
fn check_sweep(success: bool, text: &str, err: &str, evals: u32) -> f64 {
    assert!(success, "the sweep failed: {text}{err}");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["evaluations"], evals, "{}", v["nodes"]);
    assert_eq!(v["identical_to_local"], true, "{}", v["nodes"]);
    let mut ids: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..u64::from(evals)).collect::<Vec<_>>());
    eprintln!("sweep: {evals} evaluations by node {}", v["nodes"]);
    v["wall_seconds"].as_f64().unwrap_or(0.0)
}

/// What is being done to one worker until further notice.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Disruption {
    Paused,
    Cut,
    AgentDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    PauseFinish,
    PauseNow,
    KillRaylet,
    KillAgent,
    CutLink,
    OwnerFlip,
}

/// A worker's Ray node that a fault took down: its id when the first fault began, the latest
/// fault that stops a node, and when the last disruption on the worker ended.
struct Awaiting {
    kind: Kind,
    old: Option<String>,
    since: Option<Instant>,
}

/// The seeded schedule. Faults pile up on one worker at a time (paused while cut, its agent
/// killed while paused...), as they do on a real laptop, while the others keep working.
struct Injector {
    rng: Rng,
    form: Form,
    started: Instant,
    counts: BTreeMap<Kind, u32>,
    /// Per worker: the disruptions under way and when each ends.
    ongoing: Vec<Vec<(Disruption, Instant)>>,
    awaiting: Vec<Option<Awaiting>>,
    rejoins: Vec<(Kind, Duration)>,
    survived: Vec<Kind>,
    /// How many snapshots showed a worker throttled for its owner.
    owner_seen: u32,
    next_fault: Instant,
    next_owner: Instant,
}

impl Injector {
    fn new(seed: u64, form: Form, workers: usize) -> Injector {
        Injector {
            rng: Rng(seed),
            form,
            started: Instant::now(),
            counts: BTreeMap::new(),
            ongoing: vec![Vec::new(); workers],
            awaiting: (0..workers).map(|_| None).collect(),
            rejoins: Vec::new(),
            survived: Vec::new(),
            owner_seen: 0,
            next_fault: Instant::now() + Duration::from_secs(5),
            next_owner: Instant::now(),
        }
    }

    fn secs(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_secs(self.rng.range(lo, hi))
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        eprintln!("{:>7.1} s  {what}", self.started.elapsed().as_secs_f64());
    }

    /// One step: ends disruptions that are due (all of them when `inject` is false), notes
    /// rejoins from the snapshot, and injects a fault when one is due.
    fn step(&mut self, fleet: &mut Fleet, snapshot: Option<&serde_json::Value>, inject: bool) {
        let now = Instant::now();
        for i in 0..fleet.workers.len() {
            let due: Vec<Disruption> = self.ongoing[i]
                .iter()
                .filter(|(_, until)| now >= *until || !inject)
                .map(|(d, _)| *d)
                .collect();
            for d in due {
                self.end(fleet, i, d);
            }
        }
        if let Some(s) = snapshot {
            self.observe(fleet, s);
        }
        if !inject {
            for w in &fleet.workers {
                w.owner_active.store(false, Ordering::SeqCst);
            }
            return;
        }
        if now >= self.next_owner {
            let i = self.rng.range(0, fleet.workers.len() as u64 - 1) as usize;
            let flag = &fleet.workers[i].owner_active;
            flag.store(!flag.load(Ordering::SeqCst), Ordering::SeqCst);
            *self.counts.entry(Kind::OwnerFlip).or_default() += 1;
            self.next_owner = now + self.secs(self.form.owner);
        }
        if now < self.next_fault {
            return;
        }
        self.next_fault = now + self.secs(self.form.gap);
        let i = match self.ongoing.iter().position(|o| !o.is_empty()) {
            Some(victim) => victim,
            // A new victim only once every worker is back in Ray, chosen afresh each time.
            None if self.awaiting.iter().any(Option::is_some) => return,
            None => self.rng.range(0, fleet.workers.len() as u64 - 1) as usize,
        };
        let has = |d| self.ongoing[i].iter().any(|(x, _)| *x == d);
        let mut kinds = Vec::new();
        if !has(Disruption::Paused) {
            kinds.extend([Kind::PauseFinish, Kind::PauseNow]);
        }
        if !has(Disruption::AgentDown) {
            kinds.extend([Kind::KillRaylet, Kind::KillAgent]);
        }
        if !has(Disruption::Cut) {
            kinds.push(Kind::CutLink);
        }
        if kinds.is_empty() {
            // Paused, cut off and without its agent at once: nothing is left to do to it
            // until one of those ends.
            return;
        }
        let kind = self.rng.pick(&kinds);
        let name = fleet.workers[i].name;
        let old = snapshot.and_then(|s| alive_id(s, name));
        let (disruption, lasts) = match kind {
            Kind::PauseFinish | Kind::PauseNow => {
                let mut args = vec!["pause", "--node", name];
                if kind == Kind::PauseFinish {
                    args.push("--finish");
                }
                let out = fleet.on_head(&args).output().unwrap();
                assert!(out.status.success(), "pause {name}: {}", text(&out));
                (Some(Disruption::Paused), self.secs(self.form.pause))
            }
            Kind::KillRaylet => {
                let Some(pid) = raylet_of(name) else {
                    self.log(format_args!("{name} has no raylet to kill now"));
                    return;
                };
                // SAFETY: a signal to a process of the test's own cluster.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                (None, Duration::ZERO)
            }
            Kind::KillAgent => {
                fleet.kill_agent(i);
                (Some(Disruption::AgentDown), self.secs(self.form.restart))
            }
            Kind::CutLink => {
                fleet.lab.cut(name);
                (Some(Disruption::Cut), self.secs(self.form.cut))
            }
            Kind::OwnerFlip => unreachable!(),
        };
        self.log(format_args!("{kind:?} {name} ({lasts:?})"));
        *self.counts.entry(kind).or_default() += 1;
        if let Some(d) = disruption {
            self.ongoing[i].push((d, now + lasts));
        }
        if kind != Kind::PauseFinish && kind != Kind::PauseNow {
            match self.awaiting[i].as_mut() {
                Some(a) => a.kind = kind,
                None => {
                    self.awaiting[i] = Some(Awaiting {
                        kind,
                        old,
                        since: None,
                    })
                }
            }
        }
        if let Some(a) = self.awaiting[i].as_mut() {
            a.since = self.ongoing[i].is_empty().then_some(now);
        }
    }

    fn observe(&mut self, fleet: &Fleet, s: &serde_json::Value) {
        for i in 0..fleet.workers.len() {
            let name = fleet.workers[i].name;
            let owner = s["agents"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["name"] == name))
                .is_some_and(|a| a["reason_code"] == "owner_active");
            if owner {
                self.owner_seen += 1;
            }
            let Some(a) = &self.awaiting[i] else {
                continue;
            };
            let (Some(since), Some(id)) = (a.since, alive_id(s, name)) else {
                continue;
            };
            // The head takes a few seconds to see an old node die: the same id ALIVE counts
            // as surviving only well after that.
            if a.old.as_ref() != Some(&id) {
                let kind = a.kind;
                self.log(format_args!(
                    "{name} ALIVE again {:.1} s after {kind:?} ended",
                    since.elapsed().as_secs_f64()
                ));
                self.rejoins.push((kind, since.elapsed()));
                self.awaiting[i] = None;
            } else if since.elapsed() > Duration::from_secs(20) {
                self.survived.push(a.kind);
                self.awaiting[i] = None;
            }
        }
    }

    fn end(&mut self, fleet: &mut Fleet, i: usize, what: Disruption) {
        let name = fleet.workers[i].name;
        match what {
            Disruption::Paused => {
                let out = fleet.on_head(&["resume", "--node", name]).output().unwrap();
                assert!(out.status.success(), "resume {name}: {}", text(&out));
            }
            Disruption::Cut => fleet.lab.restore(name),
            Disruption::AgentDown => fleet.restart_agent(i),
        }
        self.log(format_args!("{name}: {what:?} ends"));
        self.ongoing[i].retain(|(d, _)| *d != what);
        if self.ongoing[i].is_empty()
            && let Some(a) = self.awaiting[i].as_mut()
        {
            a.since = Some(Instant::now());
        }
    }

    fn report(&self) {
        eprintln!("faults injected: {:?}", self.counts);
        let mut by: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
        for (k, d) in &self.rejoins {
            by.entry(*k).or_default().push(d.as_secs_f64());
        }
        for (k, v) in by {
            let max = v.iter().copied().fold(0.0, f64::max);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            eprintln!(
                "rejoins after {k:?} (ALIVE again after the worker's last disruption \
                 ended): {} (mean {mean:.1} s, max {max:.1} s)",
                v.len()
            );
        }
        if !self.survived.is_empty() {
            eprintln!("Ray node kept its id after: {:?}", self.survived);
        }
        eprintln!(
            "snapshots showing a worker throttled for its owner: {}",
            self.owner_seen
        );
    }
}

#[test]
fn a_sweep_under_seeded_faults_loses_nothing() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let form = form();
    let seed = seed();
    eprintln!(
        "fault suite, {} form: FLOTILLA_FAULT_SEED={seed} (set it to replay this schedule)",
        form.name
    );
    let started = Instant::now();
    let mut fleet = Fleet::start(&WORKERS);
    eprintln!("fleet up in {:?}", started.elapsed());
    let mut faults = Injector::new(seed, form, fleet.workers.len());

    // Sweeps back to back until the window is over; faults all along.
    let window_end = Instant::now() + form.window;
    let mut sweeps = Vec::new();
    let mut ledger_seen: Vec<BTreeMap<u64, f64>> = vec![BTreeMap::new(); fleet.workers.len()];
    let mut last_sample = Instant::now();
    while Instant::now() < window_end {
        let t0 = Instant::now();
        let mut sweep = fleet.sweep(form.evals, form.candles);
        loop {
            if sweep.done() {
                break;
            }
            let snapshot = fleet.status();
            faults.step(&mut fleet, snapshot.as_ref(), Instant::now() < window_end);
            if last_sample.elapsed() > Duration::from_secs(5) {
                for (w, seen) in fleet.workers.iter().zip(&mut ledger_seen) {
                    if let Ok(records) = outbox(w.path()) {
                        seen.extend(records);
                    }
                }
                last_sample = Instant::now();
            }
            assert!(
                t0.elapsed() < form.window + Duration::from_secs(900),
                "the sweep did not end within the window and 15 minutes"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let wall = sweep.finish();
        eprintln!(
            "sweep {} done: {:.1} s by its own clock, {:?} in all",
            sweeps.len() + 1,
            wall,
            t0.elapsed()
        );
        sweeps.push(t0.elapsed());
    }
    // Everything restored, no more faults.
    faults.step(&mut fleet, None, false);

    // Every worker back in Ray and in session.
    let back = wait_for(
        "every worker ALIVE and in session",
        Duration::from_secs(180),
        || {
            let Some(s) = fleet.status() else {
                return false;
            };
            faults.step(&mut fleet, Some(&s), false);
            WORKERS
                .iter()
                .all(|n| alive_id(&s, n).is_some() && connected(&s, n))
        },
    );
    eprintln!("all workers ALIVE and in session {back:?} after the faults stopped");
    faults.report();
    assert!(
        faults.owner_seen > 0,
        "no snapshot ever showed a worker throttled for its owner: the owner's activity \
         did not reach the policy"
    );
    // Resumed, owner away: each worker offers all its CPUs again, and its agent reports the
    // Ray node that is ALIVE.
    wait_for(
        "every worker contributing its 2 CPUs",
        Duration::from_secs(60),
        || {
            fleet.status().is_some_and(|s| {
                WORKERS.iter().all(|n| {
                    let agent = s["agents"]
                        .as_array()
                        .and_then(|a| a.iter().find(|a| a["name"] == *n));
                    let node = s["nodes"]
                        .as_array()
                        .and_then(|a| a.iter().find(|x| x["name"] == *n && x["state"] == "ALIVE"));
                    agent.zip(node).is_some_and(|(a, x)| {
                        a["state"] == "contributing"
                            && a["ray_node_id"] == x["node_id"]
                            && x["cpus_total"] == 2.0
                    })
                })
            })
        },
    );

    // The cluster still computes right after the storm.
    fleet.sweep(80, 20_000).finish();

    // The ledger: every record an outbox held reached the head once, with its value, and the
    // outboxes drain.
    for (w, seen) in fleet.workers.iter().zip(&mut ledger_seen) {
        seen.extend(outbox(w.path()).unwrap());
    }
    wait_for("every outbox acknowledged", Duration::from_secs(60), || {
        fleet
            .workers
            .iter()
            .all(|w| outbox(w.path()).is_ok_and(|r| r.is_empty()))
    });
    check_registry(fleet.head.path(), &WORKERS);
    let ledger = ledger(fleet.head.path());
    for (w, seen) in fleet.workers.iter().zip(&ledger_seen) {
        let theirs = ledger.get(w.name).cloned().unwrap_or_default();
        for (seq, cpu) in seen {
            assert_eq!(
                theirs.get(seq),
                Some(cpu),
                "{}'s record {seq} ({cpu} CPU-seconds) is not in the head's ledger as sent",
                w.name
            );
        }
        let total: f64 = theirs.values().sum();
        eprintln!(
            "{}: {} records in the ledger ({} seen waiting in its outbox), {total:.1} CPU-seconds",
            w.name,
            theirs.len(),
            seen.len()
        );
        assert!(total > 0.0, "{} contributed nothing by the ledger", w.name);
    }

    // Nothing is left running, and no flotilla process panicked along the way.
    fleet.stop();
    for log in std::iter::once(fleet.head.path().join("up.out"))
        .chain(fleet.workers.iter().map(|w| w.path().join("agent.out")))
    {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !text.contains("panicked"),
            "a panic in {}:\n{}",
            log.display(),
            tail(&log, 40)
        );
    }
    let homes: Vec<PathBuf> = std::iter::once(fleet.head.path().to_path_buf())
        .chain(fleet.workers.iter().map(|w| w.path().to_path_buf()))
        .collect();
    for home in &homes {
        let left = wait_none_left(home, Duration::from_secs(30));
        assert!(
            left.is_empty(),
            "processes left in {}: {left:?}",
            home.display()
        );
    }
    eprintln!(
        "seed {seed}: {} sweep(s) of {} evaluations in {:?}; whole test {:?}",
        sweeps.len(),
        form.evals,
        sweeps,
        started.elapsed()
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn a_soak_keeps_the_flotilla_processes_memory_flat() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let secs: u64 = std::env::var("FLOTILLA_SOAK_SECS")
        .ok()
        .map(|s| {
            s.trim()
                .parse()
                .expect("FLOTILLA_SOAK_SECS is a number of seconds")
        })
        .unwrap_or(70);
    let seed = seed();
    eprintln!("soak for {secs} s: FLOTILLA_FAULT_SEED={seed}");
    let mut fleet = Fleet::start(&WORKERS);
    // Occasional faults that keep the agents' processes (whose memory is measured) running.
    let mut rng = Rng(seed);
    let mut series: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut next_sample = start;
    let mut next_fault = start + Duration::from_secs(rng.range(15, 40));
    let mut undo: Option<(Instant, usize, bool)> = None; // (when, worker, was a cut)
    let mut sweeps = 0;
    let mut sweep = fleet.sweep(80, 60_000);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            let up = fleet.up.as_ref().unwrap().id();
            series
                .entry("head")
                .or_default()
                .push(rss_kib(up).expect("the head runs"));
            for w in &fleet.workers {
                let pid = w.agent.as_ref().unwrap().id();
                series
                    .entry(w.name)
                    .or_default()
                    .push(rss_kib(pid).expect("the agent runs"));
            }
            next_sample += Duration::from_secs(10);
        }
        if let Some((when, i, cut)) = undo
            && now >= when
        {
            let name = fleet.workers[i].name;
            if cut {
                fleet.lab.restore(name);
            } else {
                let out = fleet.on_head(&["resume", "--node", name]).output().unwrap();
                assert!(out.status.success(), "{}", text(&out));
            }
            undo = None;
        }
        if undo.is_none() && now >= next_fault && now + Duration::from_secs(30) < end {
            let i = rng.range(0, fleet.workers.len() as u64 - 1) as usize;
            let name = fleet.workers[i].name;
            match rng.range(0, 2) {
                0 => {
                    fleet.lab.cut(name);
                    undo = Some((now + Duration::from_secs(rng.range(10, 20)), i, true));
                    eprintln!("  cut {name}");
                }
                1 => {
                    let out = fleet.on_head(&["pause", "--node", name]).output().unwrap();
                    assert!(out.status.success(), "{}", text(&out));
                    undo = Some((now + Duration::from_secs(rng.range(3, 10)), i, false));
                    eprintln!("  pause {name}");
                }
                _ => {
                    if let Some(pid) = raylet_of(name) {
                        // SAFETY: a signal to a process of the test's own cluster.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        eprintln!("  kill -9 {name}'s raylet");
                    }
                }
            }
            next_fault = now + Duration::from_secs(rng.range(20, 60));
        }
        for w in &fleet.workers {
            let flip = rng.range(0, 9) == 0;
            if flip {
                let f = &w.owner_active;
                f.store(!f.load(Ordering::SeqCst), Ordering::SeqCst);
            }
        }
        if sweep.done() {
            std::mem::replace(&mut sweep, fleet.sweep(80, 60_000)).finish();
            sweeps += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if let Some((_, i, cut)) = undo {
        let name = fleet.workers[i].name;
        if cut {
            fleet.lab.restore(name);
        } else {
            let _ = fleet.on_head(&["resume", "--node", name]).output();
        }
    }
    let _ = sweep.child.kill();
    let _ = sweep.child.wait();
    eprintln!("{sweeps} sweeps in {secs} s");

    let mut failed = Vec::new();
    let mut figures = serde_json::Map::new();
    for (who, samples) in &series {
        let n = samples.len();
        assert!(n >= 5, "too few samples of {who}: {samples:?}");
        let warm = (n / 5).max(1);
        let first = samples[warm];
        let mut last: Vec<u64> = samples[n - (n / 5).max(1)..].to_vec();
        let late = median(&mut last);
        let growth = late as f64 / first as f64 - 1.0;
        eprintln!(
            "RSS of {who}'s flotilla: first after warm-up {first} KiB, median of the last 20% \
             {late} KiB ({:+.1}%), min {} max {} KiB over {n} samples",
            growth * 100.0,
            samples.iter().min().unwrap(),
            samples.iter().max().unwrap(),
        );
        if growth > 0.10 {
            failed.push(format!("{who}: {first} -> {late} KiB"));
        }
        figures.insert(
            who.to_string(),
            serde_json::json!({
                "first_after_warmup_kib": first,
                "late_median_kib": late,
                "growth": (growth * 1e4).round() / 1e4,
                "min_kib": samples.iter().min(),
                "max_kib": samples.iter().max(),
                "samples": samples,
            }),
        );
    }
    if let Ok(out) = std::env::var("FLOTILLA_SOAK_OUT") {
        let doc = serde_json::json!({
            "benchmark": "soak",
            "what": "resident memory (VmRSS) of the head's `flotilla up` and of each worker's agent, sampled every 10 s while sweeps run in a loop with occasional faults (link cuts, pauses, kill -9 of a raylet) and the owner flips between active and idle; growth = median of the last 20% of samples over the first sample after the first 20%",
            "seconds": secs,
            "seed": seed,
            "sweeps": sweeps,
            "goal_growth": 0.10,
            "processes": figures,
            "meets_goal": failed.is_empty(),
        });
        std::fs::write(&out, format!("{:#}\n", doc))
            .unwrap_or_else(|e| panic!("cannot write {out}: {e}"));
        eprintln!("wrote {out}");
    }
    fleet.stop();
    assert!(
        failed.is_empty(),
        "resident memory grew more than 10%: {failed:?}"
    );
}

/// Issue 10: an enrolled worker whose agent starts while its head is out of reach (a service
/// starting at boot before the network, a laptop away from its head) waits for the head, then
/// joins, instead of exiting.
#[test]
fn regression_10_a_worker_started_while_cut_off_waits_for_its_head() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut fleet = Fleet::start(&["a"]);
    fleet.kill_agent(0);
    fleet.lab.cut("a");
    fleet.restart_agent(0);
    std::thread::sleep(Duration::from_secs(15));
    let exited = fleet.workers[0].agent.as_mut().unwrap().try_wait().unwrap();
    assert!(
        exited.is_none(),
        "the agent exited ({exited:?}) while its head was out of reach:\n{}",
        tail(&fleet.workers[0].path().join("agent.out"), 20)
    );
    fleet.lab.restore("a");
    let back = wait_for(
        "a in Ray and in session once its link is back",
        Duration::from_secs(120),
        || {
            fleet
                .status()
                .is_some_and(|s| alive_id(&s, "a").is_some() && connected(&s, "a"))
        },
    );
    eprintln!("a joined {back:?} after its link came back");
    fleet.stop();
    for home in [fleet.head.path(), fleet.workers[0].path()] {
        assert!(wait_none_left(home, Duration::from_secs(30)).is_empty());
    }
}
