//! Cluster scaling: the strategy sweep (80 evaluations over 297,000 hourly candles, as the first
//! users ran it) on 1, 2 and 3 worker nodes, each a machine of its own (a network namespace on
//! one bridge, as in the multi-host tests) with 1 CPU, against a head in a fourth namespace.
//! Speedup and efficiency against one node.
//!
//! Two workloads: the sweep as `flotilla demo` runs it (each evaluation a tenth of a second on
//! half a core), and the same 80 evaluations each also backtested on 30 bootstrap resamples of
//! the market (`--paths`; about five seconds each), nearer the weight of a real sweep, whose
//! evaluations take minutes. Every sweep is a Ray job of its own, and Ray binds a Python worker
//! to one job: each node's agent keeps a warm worker per CPU it lends, bound to no job, which
//! the next sweep takes (`flotilla_agent::warm`). Nodes paused and resumed between runs start
//! again, so before each sweep the benchmark waits until every node in use has its warm worker,
//! as a cluster that idles between sweeps has. When each node's first evaluation began is
//! measured apart (`startup_s`), since a start is a fixed cost that a short sweep cannot spread.
//! So is how busy the nodes were (`nodes_busy`: their
//! evaluation time over N x the sweep's time), which the machine's drift between runs does not
//! move, unlike the speedup.
//!
//! So that three 1-CPU nodes fit on a small build machine without taking each other's cores,
//! each node's processes are held to the same share of a core (`--quota`, default 0.5) by a
//! cgroup of the benchmark's own: the figures measure what distributing the sweep costs, not how
//! many cores the machine has. `--quota 0` turns that off.
//!
//! Needs root (namespaces, cgroups). Prints one JSON object to stdout, writes it to
//! `bench/results/scaling-<date>.json` and a summary to stderr. See `bench/README.md`.
#[cfg(target_os = "linux")]
fn main() {
    flotilla_bench::main("scaling", linux::parse_args, linux::run);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("scaling: only implemented on Linux (network namespaces)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
use flotilla_testkit::netns;

#[cfg(target_os = "linux")]
mod linux {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use anyhow::{Context, Result, bail};
    use flotilla_bench::proc::{kill_marked, machine, signal, wait_child};
    use flotilla_bench::{median, round, today, wait_for};
    use serde_json::{Value, json};

    use crate::netns::Lab;

    /// The head's ports (API at the base); every namespace has its own addresses, so the
    /// workers can all use the same node ports.
    const BASE: u16 = 26000;
    const NODE_PORTS: u16 = 26500;
    /// Efficiency on 3 nodes: the plain sweep (whose evaluations are short, so every second of
    /// a start counts) and the heavier workloads.
    const GOAL_EFFICIENCY_3_PLAIN: f64 = 0.85;
    const GOAL_EFFICIENCY_3: f64 = 0.9;

    pub struct Args {
        flotilla: Option<PathBuf>,
        nodes: Vec<usize>,
        reps: usize,
        evals: u32,
        candles: u32,
        paths: Vec<u32>,
        quota: f64,
        no_write: bool,
    }

    const USAGE: &str = "usage: scaling [--nodes 1,2,3] [--reps N (2)] [--evals N (80)] \
                         [--candles N (297000)] [--paths 0,30 (resamples per evaluation, one \
                         workload each; the goal is the last's)] [--quota CORES (0.5; 0 = \
                         none)] [--quick] [--flotilla PATH] [--no-write]";

    pub fn parse_args() -> std::result::Result<Args, String> {
        let mut args = Args {
            flotilla: None,
            nodes: vec![1, 2, 3],
            reps: 2,
            evals: 80,
            candles: 297_000,
            paths: vec![0, 30],
            quota: 0.5,
            no_write: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            let positive = |name: &str, v: String| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("{name}: expected a positive number, got {v}"))
            };
            match arg.as_str() {
                "--nodes" => {
                    let v = value("--nodes")?;
                    args.nodes = v
                        .split(',')
                        .map(|n| {
                            n.trim()
                                .parse::<usize>()
                                .ok()
                                .filter(|n| (1..=9).contains(n))
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or(format!("--nodes: expected numbers 1-9 like 1,2,3, got {v}"))?;
                    args.nodes.sort_unstable();
                    args.nodes.dedup();
                }
                "--reps" => args.reps = positive("--reps", value("--reps")?)? as usize,
                "--paths" => {
                    let v = value("--paths")?;
                    args.paths = v
                        .split(',')
                        .map(|n| n.trim().parse::<u32>().ok().filter(|n| *n <= 1000))
                        .collect::<Option<Vec<_>>>()
                        .filter(|p| !p.is_empty())
                        .ok_or(format!(
                            "--paths: expected numbers 0-1000 like 0,30, got {v}"
                        ))?;
                }
                "--evals" => args.evals = positive("--evals", value("--evals")?)? as u32,
                "--candles" => args.candles = positive("--candles", value("--candles")?)? as u32,
                "--quota" => {
                    let v = value("--quota")?;
                    args.quota = v
                        .parse::<f64>()
                        .ok()
                        .filter(|q| (0.0..=64.0).contains(q))
                        .ok_or(format!(
                            "--quota: expected cores like 0.5 (0 = none), got {v}"
                        ))?;
                }
                "--quick" => {
                    args.reps = 1;
                    args.candles = 30_000;
                    args.paths = vec![0, 2];
                }
                "--flotilla" => args.flotilla = Some(value("--flotilla")?.into()),
                "--no-write" => args.no_write = true,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}; see --help")),
            }
        }
        Ok(args)
    }

    fn log(msg: impl AsRef<str>) {
        eprintln!("scaling: {}", msg.as_ref());
    }

    /// Where each node's cap lives: a cgroup per worker under one of the benchmark's own.
    ///
    /// cgroup v1 (`cpu` hierarchy): the worker's agent starts inside its capped group and makes
    /// the node's group under it. cgroup v2: the agent stays where it is and is told to make the
    /// node's group under the capped one (`FLOTILLA_CGROUP_PARENT`), since a v2 group with
    /// children cannot hold processes.
    enum Caps {
        None,
        V1 { root: PathBuf },
        V2 { root: PathBuf },
    }

    impl Caps {
        fn new(quota: f64, workers: usize) -> Result<Caps> {
            if quota == 0.0 {
                return Ok(Caps::None);
            }
            let name = format!("flbench-scaling-{}", std::process::id());
            let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
            let (caps, root) = if v2.exists() {
                let root = Path::new("/sys/fs/cgroup").join(&name);
                std::fs::create_dir(&root)
                    .with_context(|| format!("cannot create {}", root.display()))?;
                write(&root.join("cgroup.subtree_control"), "+cpu")?;
                (Caps::V2 { root: root.clone() }, root)
            } else {
                let root = Path::new("/sys/fs/cgroup/cpu").join(&name);
                std::fs::create_dir(&root).with_context(|| {
                    format!(
                        "cannot create {} (no cgroup `cpu` controller?)",
                        root.display()
                    )
                })?;
                (Caps::V1 { root: root.clone() }, root)
            };
            let period = 100_000u64;
            let q = (quota * period as f64).round() as u64;
            for i in 1..=workers {
                let dir = root.join(format!("w{i}"));
                std::fs::create_dir(&dir)?;
                match caps {
                    Caps::V2 { .. } => {
                        write(&dir.join("cpu.max"), &format!("{q} {period}"))?;
                        write(&dir.join("cgroup.subtree_control"), "+cpu")?;
                    }
                    _ => {
                        write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                        write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                    }
                }
            }
            Ok(caps)
        }

        /// Puts worker `i`'s agent (and so its node) under its cap.
        fn apply(&self, cmd: &mut Command, i: usize) {
            match self {
                Caps::None => {}
                Caps::V2 { root } => {
                    cmd.env("FLOTILLA_CGROUP_PARENT", root.join(format!("w{i}")));
                }
                Caps::V1 { root } => {
                    let procs = root.join(format!("w{i}/cgroup.procs"));
                    // SAFETY: between fork and exec only async-signal-safe calls: open, write
                    // and close of a path prepared before the fork.
                    let path = std::ffi::CString::new(procs.into_os_string().into_encoded_bytes())
                        .expect("no NUL in a cgroup path");
                    unsafe {
                        use std::os::unix::process::CommandExt;
                        cmd.pre_exec(move || {
                            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                            if fd < 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            // "0" moves the writing process itself.
                            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                            libc::close(fd);
                            if ok {
                                Ok(())
                            } else {
                                Err(std::io::Error::last_os_error())
                            }
                        });
                    }
                }
            }
        }

        fn root(&self) -> Option<&Path> {
            match self {
                Caps::None => None,
                Caps::V1 { root } | Caps::V2 { root } => Some(root),
            }
        }
    }

    impl Drop for Caps {
        fn drop(&mut self) {
            let Some(root) = self.root() else { return };
            // Children first (the agents removed their own groups when they stopped).
            let mut dirs = Vec::new();
            collect_dirs(root, &mut dirs);
            for dir in dirs.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_path_buf());
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    collect_dirs(&e.path(), out);
                }
            }
        }
    }

    fn write(path: &Path, value: &str) -> Result<()> {
        std::fs::write(path, value)
            .with_context(|| format!("cannot write {value:?} to {}", path.display()))
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

    struct Cluster {
        // Dropped last: the processes go before the namespaces.
        head: (Child, tempfile::TempDir),
        workers: Vec<(Child, tempfile::TempDir)>,
        caps: Caps,
        lab: Lab,
    }

    impl Cluster {
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

        /// CPUs that ALIVE worker nodes offer, by name.
        fn offered(&self) -> Result<Vec<(String, f64)>> {
            let s = self.status()?;
            Ok(s["nodes"]
                .as_array()
                .map(|nodes| {
                    nodes
                        .iter()
                        .filter(|n| {
                            n["state"] == "ALIVE"
                                && n["name"].as_str().is_some_and(|s| s.starts_with('w'))
                        })
                        .filter_map(|n| {
                            Some((n["name"].as_str()?.to_string(), n["cpus_total"].as_f64()?))
                        })
                        .collect()
                })
                .unwrap_or_default())
        }

        fn start(bin: &Path, workers: usize, quota: f64) -> Result<Cluster> {
            let names: Vec<String> = std::iter::once("h".to_string())
                .chain((1..=workers).map(|i| format!("w{i}")))
                .collect();
            let mut lab = Lab::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
            lab.use_flotilla(bin);
            let caps = Caps::new(quota, workers)?;
            let home = tempfile::Builder::new().prefix("fsh").tempdir_in("/tmp")?;
            let log = std::fs::File::create(home.path().join("up.log"))?;
            let mut up = lab.flotilla("h", home.path());
            up.args(["up", "--no-worker", "--object-store-mb", "200"]);
            for (k, v) in [
                ("--api-port", BASE),
                ("--ray-port", BASE + 1),
                ("--ray-dashboard-port", BASE + 2),
                ("--ray-client-port", BASE + 3),
                ("--control-port", BASE + 4),
                ("--head-node-ports", BASE + 100),
            ] {
                up.arg(k).arg(v.to_string());
            }
            let child = up.stdout(Stdio::null()).stderr(log).spawn()?;
            let mut cluster = Cluster {
                head: (child, home),
                workers: Vec::new(),
                caps,
                lab,
            };
            wait_for("the head", Duration::from_secs(180), || {
                cluster
                    .status()
                    .is_ok_and(|s| s["totals"]["nodes_alive"] == 1)
            })?;
            let invite: Value = serde_json::from_str(&output(cluster.on_head(&[
                "invite",
                "--json",
                "--no-qr",
                "--uses",
                &workers.to_string(),
            ]))?)?;
            let code = invite["code"]
                .as_str()
                .context("no code in invite --json")?;
            for i in 1..=workers {
                let name = format!("w{i}");
                let home = tempfile::Builder::new().prefix("fsw").tempdir_in("/tmp")?;
                std::fs::create_dir_all(home.path().join("config"))?;
                // The other nodes' load on this one machine is not the owner's; the owner's
                // activity would leave the 1-CPU node its one CPU anyway.
                std::fs::write(
                    home.path().join("config/flotilla.toml"),
                    "[policy]\nactive_cpus = 1\nowner_load_threshold = 1.0\n\
                     min_free_memory_fraction = 0\n",
                )?;
                let log = std::fs::File::create(home.path().join("agent.log"))?;
                let mut join = cluster.flotilla(&name, home.path());
                join.args(["join", "-", "--name", &name, "--cpus", "1"])
                    .args(["--object-store-mb", "200"])
                    .args(["--node-ports", &NODE_PORTS.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(log);
                cluster.caps.apply(&mut join, i);
                let mut child = join.spawn().context("cannot start `flotilla join`")?;
                child
                    .stdin
                    .take()
                    .context("stdin")?
                    .write_all(code.as_bytes())?;
                cluster.workers.push((child, home));
            }
            wait_for("every worker ALIVE", Duration::from_secs(300), || {
                cluster.offered().is_ok_and(|o| o.len() == workers)
            })
            .with_context(|| cluster.logs())?;
            Ok(cluster)
        }

        fn logs(&self) -> String {
            let tail = |p: PathBuf| {
                let t = std::fs::read_to_string(p).unwrap_or_default();
                t.lines().rev().take(6).collect::<Vec<_>>().join(" / ")
            };
            let mut s = format!("head: {}", tail(self.head.1.path().join("up.log")));
            for (i, (_, home)) in self.workers.iter().enumerate() {
                s += &format!("\nw{}: {}", i + 1, tail(home.path().join("agent.log")));
            }
            s
        }

        /// Waits until each of the first `n` workers has a warm worker (a Python worker its
        /// agent keeps ready for the next job, `flotilla_agent::warm`), as a cluster that
        /// was not just resumed has; returns how long that took.
        fn wait_warm(&self, n: usize) -> Result<f64> {
            let t = std::time::Instant::now();
            let homes: Vec<String> = self.workers[..n]
                .iter()
                .map(|(_, home)| format!("FLOTILLA_HOME={}", home.path().display()))
                .collect();
            wait_for(
                &format!("a warm worker on each of {n} node(s)"),
                Duration::from_secs(120),
                || homes.iter().all(|m| idle_workers(m) > 0),
            )?;
            Ok(t.elapsed().as_secs_f64())
        }

        /// Leaves exactly the first `n` workers contributing: the others are paused from the
        /// head (they offer 0 CPUs and Ray schedules nothing there).
        fn use_nodes(&self, n: usize) -> Result<()> {
            for i in 1..=self.workers.len() {
                let name = format!("w{i}");
                let verb = if i <= n { "resume" } else { "pause" };
                output(self.on_head(&[verb, "--node", &name]))?;
            }
            wait_for(
                &format!("{n} node(s) offering 1 CPU each"),
                Duration::from_secs(120),
                || {
                    self.offered().is_ok_and(|o| {
                        let busy: Vec<_> = o.iter().filter(|(_, c)| *c > 0.0).collect();
                        busy.len() == n && busy.iter().all(|(_, c)| *c == 1.0)
                    })
                },
            )?;
            Ok(())
        }

        /// One sweep; its own clock (from connected to the last result) and its JSON.
        fn sweep(
            &self,
            evals: u32,
            candles: u32,
            paths: u32,
            verify: bool,
        ) -> Result<(f64, Value)> {
            let (e, c, p) = (evals.to_string(), candles.to_string(), paths.to_string());
            let mut args = vec![
                "demo",
                "--json",
                "--evals",
                &e,
                "--candles",
                &c,
                "--paths",
                &p,
            ];
            if verify {
                args.push("--verify");
            }
            let v: Value = serde_json::from_str(&output(self.on_head(&args))?)?;
            if v["evaluations"] != evals {
                bail!(
                    "the sweep returned {} of {evals} evaluations",
                    v["evaluations"]
                );
            }
            if verify && v["identical_to_local"] != true {
                bail!("the sweep's results differ from a local run");
            }
            let wall = v["wall_seconds"].as_f64().context("wall_seconds")?;
            Ok((wall, v))
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            for (child, home) in self
                .workers
                .iter_mut()
                .chain(std::iter::once(&mut self.head))
            {
                signal(child, libc::SIGTERM);
                if !wait_child(child, Duration::from_secs(45)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                kill_marked(&format!("FLOTILLA_HOME={}", home.path().display()));
            }
        }
    }

    /// The idle Ray workers (titled `ray::IDLE`) among the processes whose environment holds
    /// exactly `marker` (`KEY=value`).
    fn idle_workers(marker: &str) -> usize {
        flotilla_bench::proc::pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()))
            })
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.split(|&b| b == 0 || b == b' ').next() == Some(b"ray::IDLE".as_slice())
                })
            })
            .count()
    }

    /// One sweep's figures.
    #[derive(Clone)]
    struct Run {
        nodes: usize,
        /// The sweep's own clock, seconds.
        wall: f64,
        /// When the nodes' first evaluations began, on average (Ray starting the job's
        /// Python worker on each node).
        startup: f64,
        /// Seconds an evaluation took on its node, on average.
        per_eval: f64,
        /// The nodes' evaluation time over their time in the sweep (`nodes` x wall).
        busy: f64,
        by_node: Value,
    }

    impl Run {
        fn from_sweep(nodes: usize, wall: f64, v: &Value) -> Run {
            let timing: Vec<&Value> = v["timing"]
                .as_object()
                .map(|t| t.values().collect())
                .unwrap_or_default();
            let sum = |key: &str| timing.iter().filter_map(|n| n[key].as_f64()).sum::<f64>();
            let evals = v["evaluations"].as_f64().unwrap_or(0.0);
            Run {
                nodes,
                wall,
                startup: sum("first_s") / timing.len().max(1) as f64,
                per_eval: sum("busy_s") / evals.max(1.0),
                busy: sum("busy_s") / (nodes as f64 * wall),
                by_node: v["nodes"].clone(),
            }
        }
    }

    /// One workload's figures: per node count the runs, their median, speedup and efficiency
    /// against one node, when the nodes' first evaluations began, how long an evaluation took
    /// and how busy the nodes were.
    fn workload(args: &Args, paths: u32, rows: &[(usize, Vec<Run>)]) -> Value {
        let med =
            |runs: &[Run], f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let one = rows
            .iter()
            .find(|(n, _)| *n == 1)
            .map(|(_, runs)| med(runs, |r| r.wall));
        let nodes: Vec<Value> = rows
            .iter()
            .map(|(n, runs)| {
                let m = med(runs, |r| r.wall);
                let speedup = one.map(|t1| t1 / m);
                json!({
                    "nodes": n,
                    "runs_s": runs.iter().map(|r| round(r.wall, 3)).collect::<Vec<_>>(),
                    "median_s": round(m, 3),
                    "speedup": speedup.map(|s| round(s, 3)),
                    "efficiency": speedup.map(|s| round(s / *n as f64, 3)),
                    "startup_s": round(med(runs, |r| r.startup), 3),
                    "seconds_per_evaluation": round(med(runs, |r| r.per_eval), 3),
                    "nodes_busy": round(med(runs, |r| r.busy), 3),
                    "evaluations_by_node_last_run": runs.last().map(|r| r.by_node.clone()),
                })
            })
            .collect();
        let eff3 = nodes
            .iter()
            .find(|r| r["nodes"] == 3)
            .and_then(|r| r["efficiency"].as_f64());
        let goal = if paths == 0 {
            GOAL_EFFICIENCY_3_PLAIN
        } else {
            GOAL_EFFICIENCY_3
        };
        json!({
            "paths": paths,
            "seconds_per_evaluation_one_node": one.map(|t| round(t / args.evals as f64, 3)),
            "nodes": nodes,
            "efficiency_3": eff3,
            "goal_efficiency_3": goal,
            "meets_goal": eff3.map(|e| e >= goal),
        })
    }

    pub fn run(args: &Args) -> Result<()> {
        flotilla_bench::cli::need_root("network namespaces and cgroups")?;
        let bin = flotilla_bench::cli::flotilla_binary(args.flotilla.as_deref())?;
        let most = *args.nodes.last().context("--nodes is empty")?;
        log(format!(
            "a head and {most} worker(s) of 1 CPU in network namespaces{}",
            if args.quota > 0.0 {
                format!(", each node held to {} of a core", args.quota)
            } else {
                String::new()
            }
        ));
        let cluster = Cluster::start(&bin, most, args.quota)?;
        let mut workloads = Vec::new();
        for (w, &paths) in args.paths.iter().enumerate() {
            // Before the clock counts, the first workload runs once on every node (which starts
            // what a first run starts), checked against a local run. A local run of a heavier
            // workload would take longer than all its measured runs, so each of those is
            // checked against the workload's first run instead.
            let mut reference = None;
            if w == 0 {
                cluster.use_nodes(most)?;
                log(format!(
                    "{paths} resample(s) per evaluation: a first sweep on every node, checked \
                     against a local run"
                ));
                let (_, v) = cluster.sweep(args.evals, args.candles, paths, true)?;
                reference = Some(v["results"].clone());
            }
            // The node counts take turns, in an order that reverses every repetition (1 2 3,
            // 3 2 1, ...): a machine whose speed drifts during the benchmark then slows every
            // count alike instead of the ones measured last.
            let mut runs: Vec<Run> = Vec::new();
            for rep in 0..args.reps {
                let mut order = args.nodes.clone();
                if rep % 2 == 1 {
                    order.reverse();
                }
                for n in order {
                    cluster.use_nodes(n)?;
                    let warm = cluster.wait_warm(n)?;
                    log(format!("{n} node(s) warm after {warm:.1} s"));
                    let (wall, v) = cluster.sweep(args.evals, args.candles, paths, false)?;
                    match &reference {
                        None => reference = Some(v["results"].clone()),
                        Some(r) if *r != v["results"] => bail!(
                            "{paths} resample(s) on {n} node(s): the results differ from the \
                             workload's first run"
                        ),
                        Some(_) => {}
                    }
                    let run = Run::from_sweep(n, wall, &v);
                    log(format!(
                        "{paths} resample(s), {n} node(s), repetition {}: {wall:.2} s, the \
                         nodes' first evaluations after {:.2} s, {:.3} s per evaluation, \
                         nodes busy {:.1}% of the time, {}",
                        rep + 1,
                        run.startup,
                        run.per_eval,
                        run.busy * 100.0,
                        v["nodes"]
                    ));
                    runs.push(run);
                }
            }
            let rows: Vec<(usize, Vec<Run>)> = args
                .nodes
                .iter()
                .map(|&n| (n, runs.iter().filter(|r| r.nodes == n).cloned().collect()))
                .collect();
            workloads.push(workload(args, paths, &rows));
        }
        drop(cluster);

        // Each workload has its goal on 3 nodes; the top-level figure is the heaviest one's,
        // the nearest to a real sweep.
        let goal = workloads.last().cloned().unwrap_or(Value::Null);
        let eff3 = goal["efficiency_3"].as_f64();
        let all_met = workloads
            .iter()
            .map(|w| w["meets_goal"].as_bool())
            .collect::<Option<Vec<bool>>>()
            .map(|m| m.iter().all(|&b| b));
        let result = json!({
            "benchmark": "scaling",
            "date": today(),
            "machine": machine(),
            "what": "the strategy sweep's own clock (connected to last result) on N worker nodes of 1 CPU, each in its own network namespace; speedup = T(1)/T(N), efficiency = speedup/N; median of the runs, the node counts taking turns (1 2 3, 3 2 1, ...); startup_s = when the nodes' first evaluations began (nothing to start where a warm worker waits; before each sweep the benchmark waits for one on every node in use); seconds_per_evaluation = an evaluation's time on its node; nodes_busy = the nodes' evaluation time over N x the sweep's time; one workload per number of bootstrap resamples per evaluation, the goal judged on the last",
            "evals": args.evals,
            "candles": args.candles,
            "quota_cores_per_node": args.quota,
            "workloads": workloads,
            "goal_paths": goal["paths"],
            "efficiency_3": eff3,
            "goal_efficiency_3": GOAL_EFFICIENCY_3,
            "meets_goal": all_met,
        });
        for w in result["workloads"].as_array().into_iter().flatten() {
            for r in w["nodes"].as_array().into_iter().flatten() {
                log(format!(
                    "{} resample(s), {} node(s): median {} s, speedup {}, efficiency {}, \
                     startup {} s, {} s per evaluation, nodes busy {}",
                    w["paths"],
                    r["nodes"],
                    r["median_s"],
                    r["speedup"],
                    r["efficiency"],
                    r["startup_s"],
                    r["seconds_per_evaluation"],
                    r["nodes_busy"]
                ));
            }
        }
        let text = serde_json::to_string_pretty(&result)?;
        println!("{text}");
        if !args.no_write {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("scaling-{}.json", today()));
            std::fs::write(&path, format!("{text}\n"))?;
            log(format!("wrote {}", path.display()));
        }
        Ok(())
    }
}
