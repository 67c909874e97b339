//! A laptop that goes to sleep in the middle of a sweep: how long until the tasks it was running
//! run on another machine, with Flotilla and with plain Ray, measured in one run side by side.
//!
//! Both clusters live in the same lab: a head and two workers, `s1` (the laptop that sleeps) and
//! `s2`, each in its own network namespace on one bridge (the lab of the multi-host tests,
//! `crates/cli/tests/common/netns.rs`), each worker with 2 CPUs. The sweep has two long
//! evaluations (600 resamples of 100,000 candles each), and both start on `s1`: `s2` sits the
//! start out and comes in once they run. Ray's own task table (the dashboard's state API, asked
//! from inside the head's namespace) tells when each evaluation that ran on `s1` has a newer
//! attempt running (or done) on another node.
//!
//! **Flotilla.** `s1`'s agent hears a private system bus (a `dbus-daemon` of the benchmark's own)
//! where `org.freedesktop.login1` is a stand-in (`crates/host/tests/support/logind.rs`) that
//! hands out inhibitor locks and emits `PrepareForSleep`; `s2` is given a bus that does not exist.
//! `s2` is paused from the head while the evaluations start. A trial announces sleep
//! (`PrepareForSleep(true)`) and measures, from that moment: when the agent lets go of its lock
//! (the OS may then sleep), and when `s1`'s evaluations run elsewhere. Then the sleep itself is
//! played, every process of `s1`'s home stopped (SIGSTOP) for a few seconds and continued, wake
//! is announced (`PrepareForSleep(false)`) and the time until `s1` is ALIVE again in Ray (a new
//! node) is measured. The sweep is then stopped and the next trial begins.
//!
//! **Plain Ray.** The same Ray (the runtime Flotilla provisions), started by hand with
//! `ray start --block` in the same namespaces and Ray's default health checks. Nothing warns
//! Ray: the sleep is every process of `s1`'s node stopped at once, as a lid closing, and the
//! time is until Ray runs the evaluations elsewhere. Ray's node table gives up on the silent node
//! through its health checks (also reported), but a task is run again only once its owner's
//! connection to the worker running it fails. Each trial starts `s1` afresh and stops `s2`.
//!
//! Needs root (namespaces), `dbus-daemon` and iproute2. Prints one JSON object to stdout, writes
//! it to `bench/results/sleep-<date>.json` and a summary to stderr. See `bench/README.md`.
#[cfg(target_os = "linux")]
fn main() {
    flotilla_bench::main("sleep", linux::parse_args, linux::run);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("sleep: only implemented on Linux (network namespaces, logind's signals)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
use flotilla_testkit::netns;

#[cfg(target_os = "linux")]
use flotilla_testkit::logind;

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use flotilla_bench::proc::{machine, pids, signal, wait_child};
    use flotilla_bench::{median, round, today, wait_for};
    use serde_json::{Value, json};

    use crate::logind;
    use crate::netns::Lab;

    /// Flotilla's head: its API on the base, Ray's GCS, dashboard and client server after it.
    const BASE: u16 = 27000;
    const DASHBOARD: u16 = BASE + 2;
    /// The workers' node ports (each namespace has its own addresses).
    const NODE_PORTS: u16 = 27500;
    /// Plain Ray's GCS and dashboard on its head.
    const PLAIN_GCS: u16 = 28001;
    const PLAIN_DASHBOARD: u16 = 28002;
    const OBJECT_STORE_MB: u64 = 100;
    /// The sweep: two evaluations, each long enough to be running when the laptop sleeps.
    const EVALS: usize = 2;
    const PATHS: &str = "600";
    const CANDLES: &str = "100000";
    const GOAL_S: f64 = 5.0;
    /// What marks every process of one plain Ray node or one sweep driver (an environment
    /// variable, inherited by everything they start).
    const MARK: &str = "FLOTILLA_BENCH_SLEEP";

    pub struct Args {
        flotilla: Option<PathBuf>,
        sweep: PathBuf,
        trials: usize,
        plain_trials: usize,
        asleep: Duration,
        only: Option<String>,
        quick: bool,
        no_write: bool,
    }

    const USAGE: &str = "usage: sleep [--trials N (Flotilla, 5)] [--plain-trials N (plain Ray, \
                         1)] [--asleep SECS (5)] [--only flotilla|plain] [--quick (2 and 1 \
                         trials)] [--flotilla PATH] [--sweep PATH (examples/sweep/sweep.py)] \
                         [--no-write]";

    pub fn parse_args() -> std::result::Result<Args, String> {
        let mut args = Args {
            flotilla: None,
            sweep: Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sweep/sweep.py"),
            trials: 5,
            // A plain-Ray trial waits about 7 minutes (see the README).
            plain_trials: 1,
            asleep: Duration::from_secs(5),
            only: None,
            quick: false,
            no_write: false,
        };
        let (mut trials, mut plain_trials) = (None, None);
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            let count = |name: &str, v: String| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or(format!("{name}: expected a number 1-100, got {v}"))
            };
            match arg.as_str() {
                "--trials" => trials = Some(count("--trials", value("--trials")?)?),
                "--plain-trials" => {
                    plain_trials = Some(count("--plain-trials", value("--plain-trials")?)?)
                }
                "--asleep" => {
                    let secs = count("--asleep", value("--asleep")?)?;
                    args.asleep = Duration::from_secs(secs as u64);
                }
                "--only" => {
                    let v = value("--only")?;
                    if v != "flotilla" && v != "plain" {
                        return Err(format!("--only: expected flotilla or plain, got {v}"));
                    }
                    args.only = Some(v);
                }
                "--quick" => args.quick = true,
                "--flotilla" => args.flotilla = Some(value("--flotilla")?.into()),
                "--sweep" => args.sweep = value("--sweep")?.into(),
                "--no-write" => args.no_write = true,
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        if args.quick {
            (args.trials, args.plain_trials) = (2, 1);
        }
        args.trials = trials.unwrap_or(args.trials);
        args.plain_trials = plain_trials.unwrap_or(args.plain_trials);
        Ok(args)
    }

    fn log(msg: impl AsRef<str>) {
        eprintln!("sleep: {}", msg.as_ref());
    }

    fn secs(d: Duration) -> f64 {
        round(d.as_secs_f64(), 2)
    }

    // ---------------------------------------------------------------------------------------------
    // Processes, and Ray's tables seen from inside a namespace
    // ---------------------------------------------------------------------------------------------

    /// Processes whose environment holds exactly `var=value`.
    fn carrying(var: &str, value: &str) -> Vec<u32> {
        let kv = format!("{var}={value}").into_bytes();
        pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|x| x == kv.as_slice()))
            })
            .collect()
    }

    fn signal_all(pids: &[u32], sig: i32) {
        for pid in pids {
            // SAFETY: kill(2) of a process the benchmark started (it carries its marker).
            unsafe { libc::kill(*pid as i32, sig) };
        }
    }

    /// Continues, then ends (SIGTERM, SIGKILL after 5 s) every process carrying `var=value`.
    fn end_all(var: &str, value: &str) {
        signal_all(&carrying(var, value), libc::SIGCONT);
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            let left = carrying(var, value);
            if left.is_empty() {
                return;
            }
            signal_all(&left, sig);
            let t = Instant::now();
            while !carrying(var, value).is_empty() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn stop_child(child: &mut Child, sig: i32, within: Duration) {
        signal(child, sig);
        if !wait_child(child, within) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The body of `GET path` to `127.0.0.1:port` inside network namespace `ns`.
    fn get_in(ns: &str, port: u16, path: &str, token: Option<&str>) -> Option<String> {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).ok()?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{}\r\n",
            token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"))
        );
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) moves only this short-lived thread into the namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).ok()?;
            let answer = String::from_utf8_lossy(&answer);
            let (head, body) = answer.split_once("\r\n\r\n")?;
            (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
        })
        .join()
        .ok()
        .flatten()
    }

    /// One attempt of one evaluation in Ray's task table.
    #[derive(Debug, Clone)]
    struct Attempt {
        task: String,
        attempt: u64,
        state: String,
        node: String,
    }

    /// A node in Ray's node table.
    #[derive(Debug, Clone)]
    struct RayNode {
        id: String,
        ip: String,
        alive: bool,
    }

    /// Ray's state API on a head's dashboard, from inside the head's namespace.
    struct StateApi {
        ns: String,
        port: u16,
        token: Option<String>,
    }

    impl StateApi {
        fn rows(&self, path: &str) -> Option<Vec<Value>> {
            let body = get_in(&self.ns, self.port, path, self.token.as_deref())?;
            let v: Value = serde_json::from_str(&body).ok()?;
            v["data"]["result"]["result"].as_array().cloned()
        }

        /// Every attempt of every evaluation Ray knows of.
        fn evaluations(&self) -> Vec<Attempt> {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            self.rows("/api/v0/tasks?limit=1000&detail=true")
                .unwrap_or_default()
                .iter()
                .filter(|t| t["name"] == "_run_one_on_ray")
                .map(|t| Attempt {
                    task: text(&t["task_id"]),
                    attempt: t["attempt_number"].as_u64().unwrap_or(0),
                    state: text(&t["state"]),
                    node: text(&t["node_id"]),
                })
                .collect()
        }

        fn nodes(&self) -> Option<Vec<RayNode>> {
            Some(
                self.rows("/api/v0/nodes?limit=100&detail=true")?
                    .iter()
                    .map(|n| RayNode {
                        id: n["node_id"].as_str().unwrap_or_default().to_string(),
                        ip: n["node_ip"].as_str().unwrap_or_default().to_string(),
                        alive: n["state"] == "ALIVE",
                    })
                    .collect(),
            )
        }

        /// The ALIVE node at `ip`, if any.
        fn alive_at(&self, ip: Ipv4Addr) -> Option<String> {
            let ip = ip.to_string();
            self.nodes()?
                .into_iter()
                .find(|n| n.alive && n.ip == ip)
                .map(|n| n.id)
        }

        fn task_ids(&self) -> BTreeSet<String> {
            self.evaluations().into_iter().map(|a| a.task).collect()
        }

        /// Waits until both evaluations of a new sweep (tasks not in `before`) run on `node`;
        /// their ids. Fails early when `driver` ends.
        fn wait_running_on(
            &self,
            node: &str,
            before: &BTreeSet<String>,
            driver: &mut Child,
        ) -> Result<BTreeSet<String>> {
            let mut on = BTreeSet::new();
            let mut ended = None;
            wait_for(
                "both evaluations running on s1",
                Duration::from_secs(240),
                || {
                    if let Ok(Some(status)) = driver.try_wait() {
                        ended = Some(status);
                        return true;
                    }
                    on = self
                        .evaluations()
                        .into_iter()
                        .filter(|a| !before.contains(&a.task))
                        .filter(|a| a.state == "RUNNING" && a.node == node)
                        .map(|a| a.task)
                        .collect();
                    on.len() == EVALS
                },
            )?;
            if let Some(status) = ended {
                bail!("the sweep ended before its evaluations ran on s1 ({status})");
            }
            Ok(on)
        }

        /// The attempts of `tasks` and the nodes, for an error's report.
        fn describe(&self, tasks: &BTreeSet<String>) -> String {
            let attempts: Vec<String> = self
                .evaluations()
                .into_iter()
                .filter(|a| tasks.contains(&a.task))
                .map(|a| format!("{} #{} {} on {}", a.task, a.attempt, a.state, a.node))
                .collect();
            let nodes: Vec<String> = self
                .nodes()
                .unwrap_or_default()
                .into_iter()
                .map(|n| {
                    format!(
                        "{} {} {}",
                        n.id,
                        n.ip,
                        if n.alive { "ALIVE" } else { "DEAD" }
                    )
                })
                .collect();
            format!("attempts: {attempts:?}; nodes: {nodes:?}")
        }

        /// Where each of `tasks` runs again away from `node`, once all of them do.
        fn elsewhere(&self, tasks: &BTreeSet<String>, node: &str) -> Option<Vec<String>> {
            let all = self.evaluations();
            tasks
                .iter()
                .map(|id| {
                    all.iter()
                        .find(|a| {
                            &a.task == id
                                && a.attempt > 0
                                && a.node != node
                                && matches!(a.state.as_str(), "RUNNING" | "FINISHED")
                        })
                        .map(|a| a.node.clone())
                })
                .collect()
        }
    }

    /// `s2` for each of `nodes` that is `s2`'s node, `other` for the others.
    fn names(nodes: &[String], s2: &str) -> Vec<&'static str> {
        nodes
            .iter()
            .map(|id| if id == s2 { "s2" } else { "other" })
            .collect()
    }

    fn output(mut c: Command) -> Result<String> {
        let out = c.output()?;
        if !out.status.success() {
            bail!(
                "{:?} failed: {}{}",
                c.get_args().collect::<Vec<_>>(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    fn tail(path: &Path, n: usize) -> String {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines: Vec<&str> = t.lines().rev().take(n).collect();
        lines.reverse();
        lines.join("\n")
    }

    // ---------------------------------------------------------------------------------------------
    // The stand-in logind
    // ---------------------------------------------------------------------------------------------

    struct Logind {
        connection: zbus::Connection,
        rt: tokio::runtime::Runtime,
        locks: Arc<Mutex<Vec<logind::Lock>>>,
        bus: logind::Bus,
    }

    impl Logind {
        fn start() -> Logind {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the bus");
            let bus = logind::private_bus();
            let locks = Arc::new(Mutex::new(Vec::new()));
            let connection = rt.block_on(logind::stand_in_logind(&bus, locks.clone()));
            Logind {
                connection,
                rt,
                locks,
                bus,
            }
        }

        fn prepare_for_sleep(&self, start: bool) {
            self.rt
                .block_on(logind::emit(&self.connection, "PrepareForSleep", start));
        }

        fn count(&self) -> usize {
            self.locks.lock().unwrap().len()
        }

        fn is_open(&self, i: usize) -> bool {
            self.locks.lock().unwrap().get(i).is_some_and(|l| l.open())
        }

        /// Watches lock `i` until it is let go or `stop`; when it was, after `from`.
        fn watch_release(&self, i: usize, from: Instant, stop: &AtomicBool) -> Option<Duration> {
            while !stop.load(Ordering::SeqCst) {
                if self.locks.lock().unwrap()[i].closed_within(Duration::ZERO) {
                    return Some(from.elapsed());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Flotilla
    // ---------------------------------------------------------------------------------------------

    struct Fleet<'a> {
        lab: &'a Lab,
        head: (Child, tempfile::TempDir),
        /// `s1` then `s2`: the agent and its home.
        workers: Vec<(Child, tempfile::TempDir)>,
        api: Option<StateApi>,
    }

    impl Fleet<'_> {
        fn flotilla(&self, host: &str, home: &Path) -> Command {
            self.lab.flotilla(host, home)
        }

        fn on_head(&self, args: &[&str]) -> Command {
            let mut c = self.flotilla("h", self.head.1.path());
            c.args(args);
            c
        }

        fn status(&self) -> Result<Value> {
            let api = format!("http://127.0.0.1:{BASE}");
            Ok(serde_json::from_str(&output(
                self.on_head(&["status", "--json", "--api", &api]),
            )?)?)
        }

        fn api(&self) -> &StateApi {
            self.api
                .as_ref()
                .expect("the state API once the head is up")
        }

        fn home(&self, worker: usize) -> String {
            self.workers[worker].1.path().display().to_string()
        }

        fn logs(&self) -> String {
            let mut s = format!(
                "--- the head:\n{}",
                tail(&self.head.1.path().join("up.log"), 15)
            );
            for (i, (_, home)) in self.workers.iter().enumerate() {
                s += &format!(
                    "\n--- s{}'s agent:\n{}",
                    i + 1,
                    tail(&home.path().join("agent.log"), 25)
                );
            }
            s
        }

        fn start<'a>(lab: &'a Lab, bus: &str) -> Result<Fleet<'a>> {
            let home = tempfile::Builder::new().prefix("fzh").tempdir_in("/tmp")?;
            let log = std::fs::File::create(home.path().join("up.log"))?;
            let mut up = lab.flotilla("h", home.path());
            up.args(["up", "--no-worker", "--object-store-mb"])
                .arg(OBJECT_STORE_MB.to_string());
            for (k, v) in [
                ("--api-port", BASE),
                ("--ray-port", BASE + 1),
                ("--ray-dashboard-port", DASHBOARD),
                ("--ray-client-port", BASE + 3),
                ("--control-port", BASE + 4),
                ("--head-node-ports", BASE + 100),
            ] {
                up.arg(k).arg(v.to_string());
            }
            let child = up.stdout(Stdio::null()).stderr(log).spawn()?;
            let mut fleet = Fleet {
                lab,
                head: (child, home),
                workers: Vec::new(),
                api: None,
            };
            wait_for("the head", Duration::from_secs(180), || {
                fleet
                    .status()
                    .is_ok_and(|s| s["totals"]["nodes_alive"] == 1)
            })
            .with_context(|| fleet.logs())?;
            let token =
                output(fleet.on_head(&["secret", "get", "flotilla.ray-token", "--reveal"]))?
                    .trim()
                    .to_string();
            fleet.api = Some(StateApi {
                ns: lab.host("h").ns.clone(),
                port: DASHBOARD,
                token: Some(token),
            });
            let invite: Value = serde_json::from_str(&output(
                fleet.on_head(&["invite", "--json", "--no-qr", "--uses", "2"]),
            )?)?;
            let code = invite["code"]
                .as_str()
                .context("no code in invite --json")?
                .to_string();
            // The sleeper hears the stand-in logind; the other worker is given a bus that does
            // not exist, so it hears nothing and carries on.
            let nowhere = format!("unix:path={}/no-bus", fleet.head.1.path().display());
            for (name, bus) in [("s1", bus), ("s2", nowhere.as_str())] {
                let home = tempfile::Builder::new().prefix("fzw").tempdir_in("/tmp")?;
                std::fs::create_dir_all(home.path().join("config"))?;
                // The other nodes on this one machine are not the owner: lend every CPU
                // whatever else runs. The trials pause and resume s2 within a minute, and the
                // policy spaces raises of the offer `ramp_up_after_secs` apart (at least
                // `active_after_input_secs`): 2 s here.
                std::fs::write(
                    home.path().join("config/flotilla.toml"),
                    "[policy]\nactive_cpus = 8\nowner_load_threshold = 1.0\n\
                     min_free_memory_fraction = 0\nactive_after_input_secs = 2\n\
                     ramp_up_after_secs = 2\n",
                )?;
                let log = std::fs::File::create(home.path().join("agent.log"))?;
                let mut join = fleet.flotilla(name, home.path());
                join.args(["join", "-", "--name", name, "--cpus", "2"])
                    .args(["--object-store-mb", &OBJECT_STORE_MB.to_string()])
                    .args(["--node-ports", &NODE_PORTS.to_string()])
                    .args(["--report-every", "1"])
                    .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
                    .env("FLOTILLA_LOG", "info")
                    .stdin(Stdio::piped())
                    .stdout(log.try_clone()?)
                    .stderr(log);
                let mut child = join.spawn().context("cannot start `flotilla join`")?;
                child
                    .stdin
                    .take()
                    .context("stdin")?
                    .write_all(code.as_bytes())?;
                fleet.workers.push((child, home));
            }
            fleet.wait_alive(&["s1", "s2"], Duration::from_secs(300))?;
            Ok(fleet)
        }

        fn wait_alive(&self, names: &[&str], within: Duration) -> Result<()> {
            let ips: Vec<Ipv4Addr> = names.iter().map(|n| self.lab.host(n).addr).collect();
            wait_for(&format!("{names:?} ALIVE in Ray"), within, || {
                ips.iter().all(|ip| self.api().alive_at(*ip).is_some())
            })
            .with_context(|| self.logs())?;
            Ok(())
        }

        /// Pauses or resumes `name` from the head and waits until Ray's node table agrees.
        fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
            output(self.on_head(&[if paused { "pause" } else { "resume" }, "--node", name]))?;
            let ip = self.lab.host(name).addr;
            wait_for(
                &format!("{name} {} Ray", if paused { "out of" } else { "back in" }),
                Duration::from_secs(120),
                || self.api().alive_at(ip).is_some() != paused,
            )
            .with_context(|| self.logs())?;
            Ok(())
        }
    }

    impl Drop for Fleet<'_> {
        fn drop(&mut self) {
            for (child, home) in self.workers.iter_mut() {
                let home = home.path().display().to_string();
                signal_all(&carrying("FLOTILLA_HOME", &home), libc::SIGCONT);
                stop_child(child, libc::SIGTERM, Duration::from_secs(45));
                end_all("FLOTILLA_HOME", &home);
            }
            stop_child(&mut self.head.0, libc::SIGTERM, Duration::from_secs(45));
            end_all("FLOTILLA_HOME", &self.head.1.path().display().to_string());
        }
    }

    /// One Flotilla trial: a sweep with both evaluations on `s1`, sleep announced, played and
    /// woken from.
    fn flotilla_trial(fleet: &Fleet, logind: &Logind, args: &Args, n: usize) -> Result<Value> {
        let api = fleet.api();
        let (s1_ip, s2_ip) = (fleet.lab.host("s1").addr, fleet.lab.host("s2").addr);
        // Both workers in Ray, the sleeper holding sleep back, and s2 sitting the start out.
        fleet.wait_alive(&["s1", "s2"], Duration::from_secs(180))?;
        let lock = logind.count().checked_sub(1).context("s1 took no lock")?;
        if !logind.is_open(lock) {
            bail!("s1's inhibitor lock is not held before the trial");
        }
        fleet.set_paused("s2", true)?;
        let s1 = api.alive_at(s1_ip).context("s1 is not in Ray")?;
        let before = api.task_ids();
        let marker = format!("{}-flotilla-{n}", std::process::id());
        let sweep_err = fleet.head.1.path().join(format!("sweep-{n}.err"));
        let mut sweep = fleet
            .on_head(&[
                "demo",
                "--json",
                "--evals",
                "2",
                "--paths",
                PATHS,
                "--candles",
                CANDLES,
            ])
            .env(MARK, &marker)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&sweep_err)?)
            .spawn()?;
        let result = (|| -> Result<Value> {
            let on_s1 = api
                .wait_running_on(&s1, &before, &mut sweep)
                .with_context(|| tail(&sweep_err, 10))?;
            fleet.set_paused("s2", false)?;

            // Sleep is announced.
            let stop = AtomicBool::new(false);
            let announced = Instant::now();
            logind.prepare_for_sleep(true);
            let (released, moved) = std::thread::scope(|scope| {
                let watch = scope.spawn(|| logind.watch_release(lock, announced, &stop));
                let mut to = Vec::new();
                let moved = wait_for(
                    "s1's evaluations running elsewhere",
                    Duration::from_secs(180),
                    || {
                        to = api.elsewhere(&on_s1, &s1).unwrap_or_default();
                        !to.is_empty()
                    },
                )
                .map(|_| (announced.elapsed(), to));
                // The lock has a while more to be let go once the work has moved.
                let deadline = Instant::now() + Duration::from_secs(30);
                while !watch.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                stop.store(true, Ordering::SeqCst);
                (watch.join().ok().flatten(), moved)
            });
            let (moved, to) = moved.with_context(|| fleet.logs())?;
            let released =
                released.context("s1 kept its inhibitor lock 30 s past the hand-back")?;
            let s2 = api.alive_at(s2_ip).unwrap_or_default();
            wait_for("s1 out of Ray", Duration::from_secs(30), || {
                api.alive_at(s1_ip).is_none()
            })?;

            // The machine sleeps: everything of s1's home stops, the agent included; then it
            // wakes.
            let home = fleet.home(0);
            signal_all(&carrying("FLOTILLA_HOME", &home), libc::SIGSTOP);
            std::thread::sleep(args.asleep);
            signal_all(&carrying("FLOTILLA_HOME", &home), libc::SIGCONT);
            let woke = Instant::now();
            logind.prepare_for_sleep(false);
            wait_for(
                "s1 ALIVE again after wake",
                Duration::from_secs(180),
                || api.alive_at(s1_ip).is_some_and(|id| id != s1),
            )
            .with_context(|| fleet.logs())?;
            let back = woke.elapsed();
            wait_for(
                "s1's new inhibitor lock after wake",
                Duration::from_secs(30),
                || logind.count() > lock + 1,
            )?;
            if sweep.try_wait()?.is_some() {
                log("  (the sweep ended within the trial)");
            }
            let trial = json!({
                "trial": n,
                "resumed_elsewhere_s": secs(moved),
                "lock_released_s": secs(released),
                "back_alive_s": secs(back),
                "moved_to": names(&to, &s2),
            });
            log(format!(
                "Flotilla trial {n}: evaluations running elsewhere after {:.2} s, the lock let \
                 go after {:.2} s; ALIVE again {:.2} s after wake",
                moved.as_secs_f64(),
                released.as_secs_f64(),
                back.as_secs_f64()
            ));
            Ok(trial)
        })();
        // The sweep is not waited for: `flotilla demo` and its driver end, and Ray ends the
        // job's tasks with them.
        end_all(MARK, &marker);
        let _ = sweep.wait();
        result
    }

    fn flotilla_part(lab: &Lab, args: &Args) -> Result<Value> {
        let logind = Logind::start();
        log("Flotilla: a head and two workers of 2 CPUs in network namespaces");
        let fleet = Fleet::start(lab, &logind.bus.address)?;
        wait_for("s1's inhibitor lock", Duration::from_secs(60), || {
            logind.count() > 0
        })
        .with_context(|| fleet.logs())?;
        let mut trials = Vec::new();
        for n in 1..=args.trials {
            trials.push(flotilla_trial(&fleet, &logind, args, n)?);
        }
        drop(fleet);
        let med = |key: &str| {
            let xs: Vec<f64> = trials.iter().filter_map(|t| t[key].as_f64()).collect();
            round(median(&xs), 2)
        };
        Ok(json!({
            "median_resumed_elsewhere_s": med("resumed_elsewhere_s"),
            "median_lock_released_s": med("lock_released_s"),
            "median_back_alive_s": med("back_alive_s"),
            "trials": trials,
        }))
    }

    // ---------------------------------------------------------------------------------------------
    // Plain Ray
    // ---------------------------------------------------------------------------------------------

    struct PlainRay<'a> {
        lab: &'a Lab,
        runtime: PathBuf,
        dir: tempfile::TempDir,
        /// `ray start --block` by host, with the marker of its processes.
        nodes: BTreeMap<String, (Child, String)>,
        api: StateApi,
        starts: usize,
    }

    impl PlainRay<'_> {
        fn start(lab: &Lab, runtime: PathBuf) -> Result<PlainRay<'_>> {
            let dir = tempfile::Builder::new().prefix("fzr").tempdir_in("/tmp")?;
            let mut ray = PlainRay {
                lab,
                runtime,
                dir,
                nodes: BTreeMap::new(),
                api: StateApi {
                    ns: lab.host("h").ns.clone(),
                    port: PLAIN_DASHBOARD,
                    token: None,
                },
                starts: 0,
            };
            ray.node("h")?;
            wait_for(
                "plain Ray's head and dashboard",
                Duration::from_secs(180),
                || ray.api.nodes().is_some_and(|n| n.iter().any(|n| n.alive)),
            )
            .with_context(|| tail(&ray.dir.path().join("h-1.log"), 15))?;
            Ok(ray)
        }

        /// Starts the node of `host` afresh: the head in `h`, a 2-CPU worker elsewhere.
        fn node(&mut self, host: &str) -> Result<()> {
            self.starts += 1;
            let tag = format!("{host}-{}", self.starts);
            let marker = format!("{}-plain-{tag}", std::process::id());
            let temp = self.dir.path().join(&tag);
            std::fs::create_dir_all(&temp)?;
            let ip = self.lab.host(host).addr;
            let h_ip = self.lab.host("h").addr;
            let log = std::fs::File::create(self.dir.path().join(format!("{tag}.log")))?;
            let mut c = self.lab.exec(host, self.runtime.join("bin/ray"));
            c.args(["start", "--block", "--disable-usage-stats"])
                .arg(format!("--node-ip-address={ip}"))
                .arg(format!("--temp-dir={}", temp.display()))
                .arg(format!("--object-store-memory={}", OBJECT_STORE_MB << 20));
            if host == "h" {
                c.args(["--head", "--num-cpus=0", "--dashboard-host=127.0.0.1"])
                    .arg(format!("--port={PLAIN_GCS}"))
                    .arg(format!("--dashboard-port={PLAIN_DASHBOARD}"));
            } else {
                c.arg(format!("--address={h_ip}:{PLAIN_GCS}"))
                    .arg("--num-cpus=2");
            }
            c.env(MARK, &marker)
                .env("RAY_USAGE_STATS_ENABLED", "0")
                .env_remove("RAY_ADDRESS")
                .stdout(log.try_clone()?)
                .stderr(log);
            let child = c.spawn().context("cannot start `ray start`")?;
            self.nodes.insert(host.to_string(), (child, marker));
            Ok(())
        }

        fn marker(&self, host: &str) -> &str {
            &self.nodes[host].1
        }

        /// Stops the node of `host`: `ray start --block` with SIGINT (it stops its own
        /// processes), then whatever still carries its marker.
        fn stop(&mut self, host: &str) {
            if let Some((mut child, marker)) = self.nodes.remove(host) {
                signal_all(&carrying(MARK, &marker), libc::SIGCONT);
                stop_child(&mut child, libc::SIGINT, Duration::from_secs(30));
                end_all(MARK, &marker);
            }
        }

        fn wait_alive(&self, host: &str) -> Result<String> {
            let ip = self.lab.host(host).addr;
            let mut id = None;
            wait_for(
                &format!("plain Ray's {host} ALIVE"),
                Duration::from_secs(180),
                || {
                    id = self.api.alive_at(ip);
                    id.is_some()
                },
            )
            .with_context(|| {
                let tag = format!("{host}-{}", self.starts);
                tail(&self.dir.path().join(format!("{tag}.log")), 15)
            })?;
            id.context("an ALIVE node")
        }
    }

    impl Drop for PlainRay<'_> {
        fn drop(&mut self) {
            // The workers first, then the head.
            for host in ["s1", "s2", "h"] {
                self.stop(host);
            }
        }
    }

    fn plain_trial(ray: &mut PlainRay, args: &Args, n: usize) -> Result<Value> {
        ray.node("s1")?;
        let s1 = ray.wait_alive("s1")?;
        let before = ray.api.task_ids();
        let h_ip = ray.lab.host("h").addr;
        let marker = format!("{}-plain-sweep-{n}", std::process::id());
        let err = ray.dir.path().join(format!("sweep-{n}.err"));
        let out = ray.dir.path().join(format!("sweep-{n}.json"));
        let mut sweep = ray
            .lab
            .exec("h", ray.runtime.join("bin/python"))
            .arg(&args.sweep)
            .arg(format!("--address={h_ip}:{PLAIN_GCS}"))
            .args([
                "--evals",
                "2",
                "--paths",
                PATHS,
                "--candles",
                CANDLES,
                "--quiet",
            ])
            .arg("--json")
            .arg(&out)
            .env(MARK, &marker)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .env_remove("RAY_ADDRESS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err)?)
            .spawn()?;
        let result = (|| -> Result<Value> {
            let on_s1 = ray
                .api
                .wait_running_on(&s1, &before, &mut sweep)
                .with_context(|| tail(&err, 10))?;
            ray.node("s2")?;
            let s2 = ray.wait_alive("s2")?;
            // The lid closes: every process of s1's node stops at once, without a word to Ray.
            let s1_procs = carrying(MARK, ray.marker("s1"));
            let slept = Instant::now();
            signal_all(&s1_procs, libc::SIGSTOP);
            let mut to = Vec::new();
            let mut dead: Option<Duration> = None;
            let mut noted = Instant::now();
            wait_for(
                "s1's evaluations running elsewhere",
                Duration::from_secs(1200),
                || {
                    if dead.is_none()
                        && ray
                            .api
                            .nodes()
                            .is_some_and(|ns| ns.iter().any(|n| n.id == s1 && !n.alive))
                    {
                        dead = Some(slept.elapsed());
                        log(format!(
                            "  plain Ray marked s1 dead after {:.1} s",
                            slept.elapsed().as_secs_f64()
                        ));
                    }
                    if noted.elapsed() >= Duration::from_secs(60) {
                        noted = Instant::now();
                        log(format!(
                            "  {:.0} s asleep, the evaluations not yet elsewhere",
                            slept.elapsed().as_secs_f64()
                        ));
                    }
                    to = ray.api.elsewhere(&on_s1, &s1).unwrap_or_default();
                    !to.is_empty()
                },
            )
            .with_context(|| ray.api.describe(&on_s1))?;
            let moved = slept.elapsed();
            log(format!(
                "plain Ray trial {n}: evaluations running elsewhere after {:.2} s, s1 marked \
                 dead after {} s ({} process(es) of s1 stopped)",
                moved.as_secs_f64(),
                dead.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64())),
                s1_procs.len()
            ));
            Ok(json!({
                "trial": n,
                "resumed_elsewhere_s": secs(moved),
                "node_dead_s": dead.map(secs),
                "stopped_processes": s1_procs.len(),
                "moved_to": names(&to, &s2),
            }))
        })();
        end_all(MARK, &marker);
        let _ = sweep.wait();
        ray.stop("s1");
        ray.stop("s2");
        result
    }

    fn plain_part(lab: &Lab, runtime: PathBuf, args: &Args) -> Result<Value> {
        log("plain Ray: `ray start` by hand in the same namespaces, Ray's default health checks");
        let mut ray = PlainRay::start(lab, runtime)?;
        let mut trials = Vec::new();
        for n in 1..=args.plain_trials {
            trials.push(plain_trial(&mut ray, args, n)?);
        }
        drop(ray);
        let xs: Vec<f64> = trials
            .iter()
            .filter_map(|t| t["resumed_elsewhere_s"].as_f64())
            .collect();
        Ok(json!({
            "median_resumed_elsewhere_s": round(median(&xs), 2),
            "trials": trials,
        }))
    }

    // ---------------------------------------------------------------------------------------------
    // The run
    // ---------------------------------------------------------------------------------------------

    pub fn run(args: &Args) -> Result<()> {
        flotilla_bench::cli::need_root("network namespaces")?;
        let bin = flotilla_bench::cli::flotilla_binary(args.flotilla.as_deref())?;
        if !args.sweep.exists() {
            bail!("{} not found (--sweep)", args.sweep.display());
        }
        // The Ray both clusters run: the runtime Flotilla provisions.
        let runtime: Value = serde_json::from_str(&output({
            let mut c = Command::new(&bin);
            c.args(["runtime", "ensure", "--json"])
                .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
                .stdin(Stdio::null());
            c
        })?)?;
        let runtime_dir = PathBuf::from(runtime["dir"].as_str().context("no dir in runtime")?);
        let started = Instant::now();
        let mut lab = Lab::new(&["h", "s1", "s2"]);
        lab.use_flotilla(&bin);
        let machine = machine();
        let flotilla = if args.only.as_deref() != Some("plain") {
            Some(flotilla_part(&lab, args)?)
        } else {
            None
        };
        let plain = if args.only.as_deref() != Some("flotilla") {
            Some(plain_part(&lab, runtime_dir, args)?)
        } else {
            None
        };
        drop(lab);
        let fl = flotilla
            .as_ref()
            .and_then(|f| f["median_resumed_elsewhere_s"].as_f64());
        let pl = plain
            .as_ref()
            .and_then(|p| p["median_resumed_elsewhere_s"].as_f64());
        let ratio = fl.zip(pl).map(|(f, p)| round(p / f.max(0.01), 1));
        let result = json!({
            "benchmark": "sleep",
            "date": today(),
            "machine": machine,
            "quick": args.quick,
            "what": "a sweep's two evaluations (600 resamples of 100,000 candles each) run on the laptop s1, another worker s2 has room for them; seconds from the laptop going to sleep until Ray's task table shows every evaluation that ran on s1 with a newer attempt running (or done) on another node. Flotilla: from PrepareForSleep(true) on a stand-in logind (its agent drains the node, unregisters it as preempted and ends it, then lets go of its inhibitor lock); lock_released_s = when the OS could sleep; the sleep is then played (SIGSTOP of s1's processes) and back_alive_s = from PrepareForSleep(false) until s1 is ALIVE in Ray again as a new node. Plain Ray (ray start by hand, the same Ray, its default health checks): from SIGSTOP of every process of s1's node, no warning; node_dead_s = when Ray's node table marked s1 dead (its health checks), before which and after which the evaluations wait for the driver's own connection to the stopped worker to fail. Head and workers in network namespaces on one bridge, 2 CPUs per worker",
            "ray": runtime["ray"],
            "asleep_s": args.asleep.as_secs(),
            "evals": EVALS,
            "paths": PATHS.parse::<u32>().unwrap_or(0),
            "candles": CANDLES.parse::<u32>().unwrap_or(0),
            "flotilla": flotilla,
            "plain_ray": plain,
            "ratio": ratio,
            "ratio_is": "plain Ray's median over Flotilla's, seconds until the evaluations run elsewhere",
            "goal": "Flotilla: tasks running elsewhere within 5 s of the sleep announcement (plain Ray: its health checks)",
            "goal_s": GOAL_S,
            "meets_goal": fl.map(|f| f <= GOAL_S),
            "run_s": round(started.elapsed().as_secs_f64(), 0),
        });
        if let Some(f) = &flotilla {
            log(format!(
                "Flotilla: median {} s until the evaluations run elsewhere (goal <= {GOAL_S} s), \
                 the lock let go after {} s, ALIVE again {} s after wake",
                f["median_resumed_elsewhere_s"],
                f["median_lock_released_s"],
                f["median_back_alive_s"]
            ));
        }
        if let Some(p) = &plain {
            log(format!(
                "plain Ray: median {} s until the evaluations run elsewhere",
                p["median_resumed_elsewhere_s"]
            ));
        }
        if let Some(r) = ratio {
            log(format!("plain Ray takes {r}x as long"));
        }
        let text = serde_json::to_string_pretty(&result)?;
        println!("{text}");
        if !args.no_write {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("sleep-{}.json", today()));
            std::fs::write(&path, format!("{text}\n"))?;
            log(format!("wrote {}", path.display()));
        }
        Ok(())
    }
}
