//! What a Ray worker node costs the machine's owner, and what it still gets done: owner
//! interference (a fixed foreground job, idle vs under plain Ray vs under Flotilla with the owner
//! active), the owner's latency (cyclictest's wake-ups) and build (`make -j` of real C sources)
//! the same three ways, reaction (how fast a saturated node drops to its cap when the owner
//! presses a key on the X display the agent watches), and harvest (the strategy sweep's
//! throughput, Flotilla vs plain Ray, owner away).
//!
//! Everything is measured in one run on this machine, side by side, because the machine is
//! shared and its load drifts. Prints one JSON object to stdout, writes it to
//! `bench/results/politeness-<date>.json` and prints a short summary to stderr. See
//! `bench/README.md`.
#[cfg(target_os = "linux")]
fn main() {
    flotilla_bench::main("politeness", linux::parse_args, linux::run);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    // cgroups, /proc and the agent's Unix socket: Linux only for now.
    eprintln!("politeness: only implemented on Linux");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use serde_json::{Value, json};

    use flotilla_bench::proc::{
        kill_marked, loadavg, machine, marked, proc_ticks, signal, wait_child,
    };
    use flotilla_bench::{median, percentile, round, today, wait_for};

    /// Flotilla's node name (also in its cgroup, `flotilla-<name>-<agent pid>`, and its tree
    /// marker).
    const NODE: &str = "pbench";
    /// Flotilla's ports: API at the base, Ray's from base + 1.
    const FLOTILLA_BASE: u16 = 17000;
    /// The plain Ray cluster's ports.
    const PLAIN_BASE: u16 = 18000;
    /// CPUs of the Ray worker node in both clusters.
    const CPUS: u32 = 2;
    const OBJECT_STORE_MB: u64 = 100;
    /// The politeness settings (see `crates/cli/tests/enforce.rs`): active = input in the last 2 s,
    /// one CPU then, full again 2 s after the owner leaves; owner load and memory rules off.
    const POLICY: &str = "[policy]\nactive_after_input_secs = 2\nramp_up_after_secs = 2\n\
                      active_cpus = 1\nowner_load_threshold = 1.0\nmin_free_memory_fraction = 0\n";
    /// The cap while the owner is active (`active_cpus`), and the tolerance over it.
    const CAP_CORES: f64 = 1.0;
    const CAP_TOLERANCE: f64 = 1.10;
    /// A node counts as saturated above this many cores: clearly over the cap, and reachable by
    /// a `SCHED_IDLE` node on a machine that other work keeps partly busy.
    const SATURATED_CORES: f64 = 1.3;
    /// How often the node's CPU time and quota are sampled during a reaction trial.
    const SAMPLE: Duration = Duration::from_millis(5);
    /// The environment variable that marks the plain Ray cluster's processes.
    const PLAIN_MARKER: &str = "POLITENESS_PLAIN";
    /// Idle time fed while the owner is away.
    const AWAY_MS: u64 = 600_000;

    const GOAL_INTERFERENCE_RATIO: f64 = 1.05;
    const GOAL_REACTION_P95_MS: f64 = 100.0;
    const GOAL_HARVEST_RATIO: f64 = 0.95;
    const GOAL_LATENCY_P99_RATIO: f64 = 1.2;
    const GOAL_BUILD_RATIO: f64 = 1.03;
    /// cyclictest's histogram range, in microseconds; later wake-ups count as overflows.
    const HIST_MAX_US: u64 = 20_000;

    pub struct Args {
        trials: u32,
        quick: bool,
        /// Runs per condition of the owner's latency probe and build, and the probe's seconds.
        probe_reps: Option<u32>,
        probe_secs: Option<u32>,
        flotilla: Option<PathBuf>,
        sweep: PathBuf,
        no_write: bool,
    }

    const USAGE: &str = "usage: politeness [--trials N (50)] [--quick] [--probe-reps N (3)] \
                     [--probe-secs N (20)] [--flotilla PATH] [--sweep PATH] [--no-write]\n       \
                     politeness --burn N";

    pub fn parse_args() -> std::result::Result<Args, String> {
        let mut args = Args {
            trials: 50,
            quick: false,
            probe_reps: None,
            probe_secs: None,
            flotilla: None,
            sweep: Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sweep/sweep.py"),
            no_write: false,
        };
        let mut trials = None;
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--burn" => {
                    let v = value("--burn")?;
                    let n: u64 = v
                        .parse()
                        .map_err(|_| format!("--burn: not a number: {v}"))?;
                    burn(n);
                    std::process::exit(0);
                }
                "--trials" => {
                    let v = value("--trials")?;
                    trials = Some(
                        v.parse()
                            .map_err(|_| format!("--trials: not a number: {v}"))?,
                    );
                }
                "--quick" => args.quick = true,
                "--probe-reps" | "--probe-secs" => {
                    let v = value(&arg)?;
                    let n: u32 = v
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("{arg}: not a positive number: {v}"))?;
                    if arg == "--probe-reps" {
                        args.probe_reps = Some(n);
                    } else {
                        args.probe_secs = Some(n);
                    }
                }
                "--flotilla" => args.flotilla = Some(value("--flotilla")?.into()),
                "--sweep" => args.sweep = value("--sweep")?.into(),
                "--no-write" => args.no_write = true,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}; see --help")),
            }
        }
        args.trials = trials.unwrap_or(if args.quick { 10 } else { 50 });
        if args.trials == 0 {
            return Err("--trials must be positive".into());
        }
        Ok(args)
    }

    /// The foreground job's unit of work: `n` dependent multiply-adds, on one core.
    fn burn(n: u64) {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..n {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
        std::hint::black_box(x);
    }

    fn log(msg: impl AsRef<str>) {
        eprintln!("politeness: {}", msg.as_ref());
    }

    // ---------------------------------------------------------------------------------------------
    // Processes and CPU time
    // ---------------------------------------------------------------------------------------------

    /// Where a tree's CPU time is read from.
    #[derive(Debug, Clone)]
    enum CpuMeter {
        /// cgroup v1 `cpuacct.usage` (ns).
        CpuacctUsage(PathBuf),
        /// cgroup v2 `cpu.stat` `usage_usec`.
        CpuStat(PathBuf),
        /// Sum of `/proc/<pid>/stat` ticks of the processes carrying the marker.
        Proc(String),
    }

    impl CpuMeter {
        /// CPU time so far, in nanoseconds.
        fn read_ns(&self) -> u64 {
            match self {
                CpuMeter::CpuacctUsage(p) => std::fs::read_to_string(p)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0),
                CpuMeter::CpuStat(p) => std::fs::read_to_string(p)
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                    })
                    .map_or(0, |us| us * 1_000),
                CpuMeter::Proc(marker) => {
                    marked(marker)
                        .into_iter()
                        .filter_map(proc_ticks)
                        .sum::<u64>()
                        * 10_000_000
                }
            }
        }

        fn describe(&self) -> String {
            match self {
                CpuMeter::CpuacctUsage(p) | CpuMeter::CpuStat(p) => p.display().to_string(),
                CpuMeter::Proc(m) => format!("/proc ticks of processes with {m}"),
            }
        }

        /// The shortest window over which a rate is meaningful: one CFS period for the cgroup
        /// counters, 20 clock ticks for `/proc`.
        fn window(&self) -> Duration {
            match self {
                CpuMeter::Proc(_) => Duration::from_millis(200),
                _ => Duration::from_millis(100),
            }
        }

        /// Cores used over `over`.
        fn cores(&self, over: Duration) -> f64 {
            let (a, t) = (self.read_ns(), Instant::now());
            std::thread::sleep(over);
            let b = self.read_ns();
            b.saturating_sub(a) as f64 / 1e9 / t.elapsed().as_secs_f64()
        }
    }

    /// The directories `flotilla-<NODE>-<pid>` in every cgroup hierarchy, under this process's own
    /// cgroups (the agent, our child, sits in the same ones).
    fn cgroup_dirs() -> Vec<PathBuf> {
        let own: Vec<String> = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| Some(l.splitn(3, ':').nth(2)?.to_string()))
            .collect();
        let mut mounts = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
            mounts.extend(d.flatten().map(|e| e.path()));
        }
        let mut dirs = Vec::new();
        // The group is named after the node and the agent's pid: `flotilla-<NODE>-<pid>`.
        let prefix = format!("flotilla-{NODE}-");
        for m in &mounts {
            for o in &own {
                let parent = m.join(o.trim_start_matches('/'));
                let Ok(entries) = std::fs::read_dir(&parent) else {
                    continue;
                };
                for e in entries.flatten() {
                    let dir = e.path();
                    let named = e
                        .file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&prefix));
                    if named && dir.is_dir() && !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
            }
        }
        dirs
    }

    /// The Flotilla node's CPU meter (the cgroup's counter if there is one) and its quota file.
    fn flotilla_meter() -> (CpuMeter, Option<PathBuf>) {
        let dirs = cgroup_dirs();
        let find = |f: &str| dirs.iter().map(|d| d.join(f)).find(|p| p.is_file());
        let meter = if let Some(p) = find("cpuacct.usage") {
            CpuMeter::CpuacctUsage(p)
        } else if let Some(p) = find("cpu.stat") {
            CpuMeter::CpuStat(p)
        } else {
            CpuMeter::Proc(format!("FLOTILLA_TREE={NODE}-"))
        };
        let quota = find("cpu.cfs_quota_us").or_else(|| find("cpu.max"));
        (meter, quota)
    }

    /// The cap in the quota file, in cores; `None` when unlimited (or unreadable).
    fn quota_cores(path: &Path) -> Option<f64> {
        let s = std::fs::read_to_string(path).ok()?;
        let mut f = s.split_whitespace();
        let quota = f.next()?;
        if quota == "-1" || quota == "max" {
            return None;
        }
        let quota: f64 = quota.parse().ok()?;
        let period: f64 = match f.next() {
            Some(p) => p.parse().ok()?,
            None => std::fs::read_to_string(path.with_file_name("cpu.cfs_period_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?,
        };
        Some(quota / period)
    }

    /// The node's CPU time sampled every [`SAMPLE`]; the rate over the meter's window.
    struct Sampler<'a> {
        meter: &'a CpuMeter,
        samples: Vec<(Instant, u64)>,
    }

    impl<'a> Sampler<'a> {
        fn new(meter: &'a CpuMeter) -> Self {
            Sampler {
                meter,
                samples: vec![(Instant::now(), meter.read_ns())],
            }
        }

        /// Sleeps to the next sample and returns the rate (cores) over the last window, once the
        /// samples span one.
        fn next(&mut self) -> Option<f64> {
            let due = self
                .samples
                .last()
                .map_or_else(Instant::now, |s| s.0 + SAMPLE);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let now = (Instant::now(), self.meter.read_ns());
            self.samples.push(now);
            let window = self.meter.window();
            let from = self
                .samples
                .iter()
                .rev()
                .find(|s| now.0.duration_since(s.0) >= window)?;
            let secs = now.0.duration_since(from.0).as_secs_f64();
            Some(now.1.saturating_sub(from.1) as f64 / 1e9 / secs)
        }
    }

    // ---------------------------------------------------------------------------------------------
    // The foreground job
    // ---------------------------------------------------------------------------------------------

    /// Wall seconds of `procs` foreground processes, each burning `iterations`, run at once.
    fn foreground(iterations: u64, procs: u32) -> Result<f64> {
        let exe = std::env::current_exe()?;
        let t = Instant::now();
        let children: Vec<Child> = (0..procs)
            .map(|_| {
                Command::new(&exe)
                    .args(["--burn", &iterations.to_string()])
                    .stdin(Stdio::null())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        for mut c in children {
            let status = c.wait()?;
            if !status.success() {
                bail!("a foreground burner failed: {status}");
            }
        }
        Ok(t.elapsed().as_secs_f64())
    }

    /// `reps` runs of each variant (single-thread, then all-threads, alternating), with the Ray
    /// node's cores over each run when a meter is given.
    /// Stops (SIGSTOP) or continues (SIGCONT) every process carrying `marker`.
    fn hold_tree(marker: &str, stop: bool) {
        for pid in marked(marker) {
            let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: plain kill(2) of a process of the benchmark's own cluster.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// The foreground job, `reps` times per variant. With `paired` (the node's tree marker and
    /// its meter), each timed run under the node is paired with a run just before it with the
    /// node's processes stopped: the machine idle at that moment. The ratio of each pair cancels
    /// the machine's drift between phases, which on a shared machine is larger than the effect.
    fn interference(
        iterations: u64,
        reps: u32,
        meter: Option<&CpuMeter>,
        paired: Option<&str>,
    ) -> Result<Value> {
        let (mut single, mut all) = (Vec::new(), Vec::new());
        let (mut ray_single, mut ray_all) = (Vec::new(), Vec::new());
        let (mut idle_single, mut idle_all) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            for (procs, times, ray, idle) in [
                (1, &mut single, &mut ray_single, &mut idle_single),
                (2, &mut all, &mut ray_all, &mut idle_all),
            ] {
                if let Some(marker) = paired {
                    hold_tree(marker, true);
                    std::thread::sleep(Duration::from_millis(300));
                    let secs = foreground(iterations, procs);
                    hold_tree(marker, false);
                    idle.push(round(secs?, 4));
                    // Let the node take its CPUs again before the timed run.
                    std::thread::sleep(Duration::from_secs(1));
                }
                let before = meter.map(|m| m.read_ns());
                let secs = foreground(iterations, procs)?;
                if let (Some(m), Some(b)) = (meter, before) {
                    ray.push(round(m.read_ns().saturating_sub(b) as f64 / 1e9 / secs, 3));
                }
                times.push(round(secs, 4));
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        let variant = |times: &[f64], ray: &[f64], idle: &[f64]| {
            let mut v = json!({ "samples_s": times, "median_s": round(median(times), 4) });
            if meter.is_some() {
                v["ray_node_cores_during"] = json!(ray);
            }
            if paired.is_some() {
                let ratios: Vec<f64> = times
                    .iter()
                    .zip(idle)
                    .map(|(t, i)| round(t / i, 4))
                    .collect();
                v["paired_idle_samples_s"] = json!(idle);
                v["paired_ratios"] = json!(ratios);
                v["paired_ratio_median"] = json!(round(median(&ratios), 4));
            }
            v
        };
        Ok(json!({
            "single_thread": variant(&single, &ray_single, &idle_single),
            "all_threads": variant(&all, &ray_all, &idle_all),
        }))
    }

    // ---------------------------------------------------------------------------------------------
    // Drivers
    // ---------------------------------------------------------------------------------------------

    /// A Ray driver's connection: the runtime's python, the address and the token.
    #[derive(Clone)]
    struct Connection {
        python: PathBuf,
        address: String,
        token: String,
    }

    impl Connection {
        fn command(&self) -> Command {
            let mut c = Command::new(&self.python);
            c.env("RAY_ADDRESS", &self.address)
                .env("RAY_AUTH_MODE", "token")
                .env("RAY_AUTH_TOKEN", &self.token)
                .env("RAY_USAGE_STATS_ENABLED", "0")
                .stdin(Stdio::null());
            c
        }
    }

    /// Connects and waits until the cluster has `cpus` CPUs.
    const READY_PY: &str = r#"import sys, time, ray
ray.init(log_to_driver=False)
want, t0 = float(sys.argv[1]), time.time()
while ray.cluster_resources().get("CPU", 0) < want:
    if time.time() - t0 > 120:
        sys.exit("not enough CPUs: %s" % ray.cluster_resources())
    time.sleep(0.2)
"#;

    /// `n` busy tasks of `secs` each, one CPU each; runs until killed or done.
    const WORKLOAD_PY: &str = r#"import sys, time, ray
ray.init(log_to_driver=False)
n, secs = int(sys.argv[1]), float(sys.argv[2])

@ray.remote(num_cpus=1, max_retries=0)
def busy(secs):
    t0 = time.time()
    x = 0
    while time.time() - t0 < secs:
        x += 1
    return x

ray.get([busy.remote(secs) for _ in range(n)])
"#;

    fn run_script(
        conn: &Connection,
        dir: &Path,
        name: &str,
        body: &str,
        args: &[&str],
    ) -> Result<()> {
        let script = dir.join(name);
        std::fs::write(&script, body)?;
        let out = conn
            .command()
            .arg(&script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            bail!(
                "{name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
        }
        Ok(())
    }

    /// A saturating workload: a driver with `CPUS` busy tasks; stopped on drop.
    struct Workload {
        driver: Child,
        log: PathBuf,
    }

    impl Workload {
        fn start(conn: &Connection, dir: &Path) -> Result<Workload> {
            let script = dir.join("workload.py");
            std::fs::write(&script, WORKLOAD_PY)?;
            let log = dir.join("workload.log");
            let driver = conn
                .command()
                .arg(&script)
                .args([&CPUS.to_string(), "3600"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()?;
            Ok(Workload { driver, log })
        }

        /// The driver's last lines of output, for an error message.
        fn log_tail(&self) -> String {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!("the workload driver: {}", tail.join(" / "))
        }

        fn stop(mut self) {
            self.end();
        }

        fn end(&mut self) {
            if let Ok(None) = self.driver.try_wait() {
                signal(&self.driver, libc::SIGINT);
                if !wait_child(&mut self.driver, Duration::from_secs(15)) {
                    let _ = self.driver.kill();
                    let _ = self.driver.wait();
                }
            }
        }
    }

    impl Drop for Workload {
        fn drop(&mut self) {
            self.end();
        }
    }

    /// Runs the sweep once; its own wall seconds (from connection to the last result) and the
    /// process's.
    fn sweep(
        conn: &Connection,
        script: &Path,
        dir: &Path,
        evals: u32,
        candles: u32,
    ) -> Result<Value> {
        let out_path = dir.join("sweep.json");
        let _ = std::fs::remove_file(&out_path);
        let t = Instant::now();
        let out = conn
            .command()
            .arg(script)
            .args([
                "--evals",
                &evals.to_string(),
                "--candles",
                &candles.to_string(),
            ])
            .args(["--address", &conn.address, "--quiet", "--json"])
            .arg(&out_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        let process_s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "the sweep failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report: Value = serde_json::from_slice(&std::fs::read(&out_path)?)?;
        let wall = report["wall_seconds"]
            .as_f64()
            .context("the sweep's JSON has no wall_seconds")?;
        Ok(json!({
            "wall_s": round(wall, 3),
            "process_s": round(process_s, 3),
            "evals_done": report["results"].as_array().map(Vec::len),
            "nodes": report["nodes"],
        }))
    }

    // ---------------------------------------------------------------------------------------------
    // The Flotilla cluster
    // ---------------------------------------------------------------------------------------------

    struct Flotilla {
        bin: PathBuf,
        home: tempfile::TempDir,
        up: Child,
        idle_ms: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
    }

    impl Flotilla {
        fn command(&self) -> Command {
            flotilla_command(&self.bin, self.home.path())
        }

        fn status(&self) -> Result<Value> {
            let out = self.command().args(["status", "--json"]).output()?;
            if !out.status.success() {
                bail!("status: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(serde_json::from_slice(&out.stdout)?)
        }

        fn node_alive(&self) -> bool {
            self.status().is_ok_and(|s| {
                s["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n["name"] == NODE && n["state"] == "ALIVE"))
            })
        }

        /// Starts the cluster with its agent watching the X `display` (the owner's desktop).
        fn start(bin: &Path, display: &str) -> Result<Flotilla> {
            let home = tempfile::Builder::new().prefix("pbf").tempdir_in("/tmp")?;
            std::fs::create_dir_all(home.path().join("config"))?;
            std::fs::write(home.path().join("config/flotilla.toml"), POLICY)?;
            let mut up = flotilla_command(bin, home.path());
            up.args(["up", "--cpus", &CPUS.to_string(), "--name", NODE])
                .args(["--object-store-mb", &OBJECT_STORE_MB.to_string()]);
            for (k, v) in [
                ("--api-port", FLOTILLA_BASE),
                ("--ray-port", FLOTILLA_BASE + 1),
                ("--ray-dashboard-port", FLOTILLA_BASE + 2),
                ("--ray-client-port", FLOTILLA_BASE + 3),
                ("--head-node-ports", FLOTILLA_BASE + 100),
                ("--node-ports", FLOTILLA_BASE + 500),
            ] {
                up.arg(k).arg(v.to_string());
            }
            let log = std::fs::File::create(home.path().join("up.log"))?;
            let up = up
                .env("DISPLAY", display)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            let f = Flotilla {
                bin: bin.to_path_buf(),
                home,
                up,
                idle_ms: Arc::new(AtomicU64::new(AWAY_MS)),
                stop: Arc::new(AtomicBool::new(false)),
            };
            let sock = flotilla_host::Dirs::under(f.home.path()).agent_socket();
            wait_for("the Flotilla cluster", Duration::from_secs(240), || {
                sock.exists() && f.node_alive()
            })
            .with_context(|| {
                let log = std::fs::read_to_string(f.home.path().join("up.log")).unwrap_or_default();
                format!(
                    "flotilla up: {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
                )
            })?;
            // The desktop session's feed: the owner's idle time, twice a second.
            let (idle_ms, stop) = (f.idle_ms.clone(), f.stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = feed(&sock, idle_ms.load(Ordering::SeqCst));
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
            Ok(f)
        }

        /// Feeds `ms` now and from now on.
        fn owner(&self, ms: u64) {
            self.idle_ms.store(ms, Ordering::SeqCst);
            let _ = feed(
                &flotilla_host::Dirs::under(self.home.path()).agent_socket(),
                ms,
            );
        }

        fn connection(&self) -> Result<Connection> {
            let info: Value =
                serde_json::from_slice(&std::fs::read(self.home.path().join("state/head.json"))?)?;
            let out = self
                .command()
                .args(["secret", "get", "flotilla.ray-token", "--reveal"])
                .output()?;
            if !out.status.success() {
                bail!("secret get: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(Connection {
                python: PathBuf::from(info["runtime_dir"].as_str().context("runtime_dir")?)
                    .join("bin/python"),
                address: info["ray_address"]
                    .as_str()
                    .context("ray_address")?
                    .to_string(),
                token: String::from_utf8(out.stdout)?.trim().to_string(),
            })
        }

        fn marker(&self) -> String {
            format!("FLOTILLA_HOME={}", self.home.path().display())
        }
    }

    impl Drop for Flotilla {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            signal(&self.up, libc::SIGINT);
            if !wait_child(&mut self.up, Duration::from_secs(60)) {
                let _ = self.up.kill();
                let _ = self.up.wait();
            }
            let left = kill_marked(&self.marker());
            if left > 0 {
                log(format!(
                    "killed {left} Flotilla process(es) left after stop"
                ));
            }
        }
    }

    fn flotilla_command(bin: &Path, home: &Path) -> Command {
        let mut c = Command::new(bin);
        c.env("FLOTILLA_HOME", home)
            .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
            .stdin(Stdio::null());
        c
    }

    /// One `{"idle_ms": N}` line to the agent's control socket.
    fn feed(sock: &Path, ms: u64) -> Result<()> {
        let mut s = UnixStream::connect(sock)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{{\"idle_ms\": {ms}, \"source\": \"bench\"}}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        if !line.contains("\"ok\":true") && !line.contains("\"ok\": true") {
            bail!("the agent answered {line}");
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------------
    // The plain Ray cluster
    // ---------------------------------------------------------------------------------------------

    /// A head (0 CPUs) and a worker (`CPUS`) started with `ray start --block`, nice 0, no cap.
    struct PlainRay {
        temp: tempfile::TempDir,
        nodes: Vec<Child>,
        marker: String,
        conn: Connection,
    }

    impl PlainRay {
        fn start(runtime: &Path) -> Result<PlainRay> {
            let temp = tempfile::Builder::new().prefix("pbp").tempdir_in("/tmp")?;
            let mut token = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut token))?;
            let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
            let address = format!("127.0.0.1:{}", PLAIN_BASE + 1);
            let marker = format!("{PLAIN_MARKER}={}-", std::process::id());
            let mut p = PlainRay {
                temp,
                nodes: Vec::new(),
                marker,
                conn: Connection {
                    python: runtime.join("bin/python"),
                    address: address.clone(),
                    token,
                },
            };
            let (temp, token) = (p.temp.path().to_path_buf(), p.conn.token.clone());
            let node = |role: &str, base: u16, workers: u16, extra: Vec<String>| -> Result<Child> {
                let dir = temp.join(role);
                std::fs::create_dir_all(&dir)?;
                let log = std::fs::File::create(temp.join(format!("{role}.log")))?;
                let mut c = Command::new(runtime.join("bin/ray"));
                c.args(["start", "--block", "--node-ip-address=127.0.0.1"])
                    .args(extra)
                    .arg(format!("--node-name=plain-{role}"))
                    .arg(format!("--temp-dir={}", dir.display()))
                    .arg(format!("--object-store-memory={}", OBJECT_STORE_MB << 20))
                    .arg(format!("--node-manager-port={base}"))
                    .arg(format!("--object-manager-port={}", base + 1))
                    .arg(format!("--dashboard-agent-listen-port={}", base + 2))
                    .arg(format!("--dashboard-agent-grpc-port={}", base + 3))
                    .arg(format!("--metrics-export-port={}", base + 4))
                    .arg(format!("--runtime-env-agent-port={}", base + 5))
                    .arg(format!("--min-worker-port={}", base + 20))
                    .arg(format!("--max-worker-port={}", base + 20 + workers - 1))
                    .arg("--disable-usage-stats")
                    .env("RAY_AUTH_MODE", "token")
                    .env("RAY_AUTH_TOKEN", &token)
                    .env("RAY_USAGE_STATS_ENABLED", "0")
                    .env("RAY_LOGGER_LEVEL", "warning")
                    .env(PLAIN_MARKER, format!("{}-{role}", std::process::id()))
                    .env_remove("RAY_ADDRESS")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log);
                Ok(c.spawn()?)
            };
            let head = node(
                "head",
                PLAIN_BASE + 100,
                30,
                vec![
                    "--head".into(),
                    format!("--port={}", PLAIN_BASE + 1),
                    "--num-cpus=0".into(),
                    "--dashboard-host=127.0.0.1".into(),
                    format!("--dashboard-port={}", PLAIN_BASE + 2),
                    format!("--ray-client-server-port={}", PLAIN_BASE + 3),
                ],
            )?;
            p.nodes.push(head);
            // The worker needs the GCS up; `ray start` retries for a while, but give it a head
            // start.
            let gcs = PLAIN_BASE + 1;
            wait_for("the plain Ray head's GCS", Duration::from_secs(120), || {
                std::net::TcpStream::connect(("127.0.0.1", gcs)).is_ok()
            })?;
            std::thread::sleep(Duration::from_secs(3));
            let worker = node(
                "worker",
                PLAIN_BASE + 500,
                256,
                vec![
                    format!("--address={address}"),
                    format!("--num-cpus={CPUS}"),
                    "--include-log-monitor=false".into(),
                ],
            )?;
            p.nodes.push(worker);
            run_script(
                &p.conn,
                p.temp.path(),
                "ready.py",
                READY_PY,
                &[&CPUS.to_string()],
            )
            .with_context(|| {
                let log =
                    std::fs::read_to_string(p.temp.path().join("worker.log")).unwrap_or_default();
                format!(
                    "the plain Ray cluster: {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
                )
            })?;
            Ok(p)
        }

        fn worker_meter(&self) -> CpuMeter {
            CpuMeter::Proc(format!("{}worker", self.marker))
        }
    }

    impl Drop for PlainRay {
        fn drop(&mut self) {
            // Worker first, then the head; each `ray start --block` stops its own processes.
            for c in self.nodes.iter_mut().rev() {
                signal(c, libc::SIGINT);
                if !wait_child(c, Duration::from_secs(30)) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            let left = kill_marked(&self.marker);
            if left > 0 {
                log(format!(
                    "killed {left} plain Ray process(es) left after SIGINT"
                ));
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Reaction
    // ---------------------------------------------------------------------------------------------

    /// Waits until the node uses at least [`SATURATED_CORES`]; the rate seen.
    fn wait_saturated(meter: &CpuMeter, limit: Duration) -> Result<f64> {
        let t = Instant::now();
        let mut last = 0.0;
        while t.elapsed() < limit {
            last = meter.cores(Duration::from_millis(300));
            if last >= SATURATED_CORES {
                return Ok(last);
            }
        }
        bail!("the node did not saturate within {limit:?} (last {last:.2} cores)")
    }

    struct Trial {
        /// Before the owner came back.
        cores_before: f64,
        /// From the owner's input to the node's CPU rate at or under the cap.
        to_cap_ms: Option<f64>,
        /// From the owner's input to the cgroup's quota being set.
        quota_ms: Option<f64>,
        /// From the owner leaving to the cap lifted (the quota unlimited again; without a quota
        /// file, the node saturated again).
        recovery_ms: Option<f64>,
    }

    /// The owner presses a key on `display` (XTest, through xdotool): a real input event, which
    /// the agent hears from the X server as the owner's keyboard would make it. Returns the
    /// xdotool process, to be waited for.
    fn press_key(display: &str) -> Result<Child> {
        Command::new("xdotool")
            .args(["key", "shift"])
            .env("DISPLAY", display)
            .stdin(Stdio::null())
            .spawn()
            .context("xdotool (Debian package xdotool)")
    }

    fn reaction_trial(meter: &CpuMeter, quota: Option<&Path>, display: &str) -> Result<Trial> {
        let cores_before = wait_saturated(meter, Duration::from_secs(20))?;
        let limit = Duration::from_secs(5);
        let mut s = Sampler::new(meter);
        // The clock starts before xdotool is started, so its own start-up (a few ms) counts.
        let t0 = Instant::now();
        let mut key = press_key(display)?;
        let (mut to_cap, mut quota_ms) = (None, None);
        while t0.elapsed() < limit && (to_cap.is_none() || (quota.is_some() && quota_ms.is_none()))
        {
            let rate = s.next();
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            if quota_ms.is_none() && quota.and_then(quota_cores).is_some() {
                quota_ms = Some(ms);
            }
            if to_cap.is_none() && rate.is_some_and(|r| r <= CAP_CORES * CAP_TOLERANCE) {
                to_cap = Some(ms);
            }
        }
        let _ = key.wait();
        // The owner leaves after the key press: no more input. The cap is lifted once the idle
        // time passes active_after_input_secs and then ramp_up_after_secs.
        let t1 = Instant::now();
        let mut recovery = None;
        while t1.elapsed() < Duration::from_secs(20) {
            let lifted = match quota {
                Some(q) => quota_cores(q).is_none(),
                None => meter.cores(SAMPLE * 5) >= SATURATED_CORES,
            };
            if lifted {
                recovery = Some(t1.elapsed().as_secs_f64() * 1e3);
                break;
            }
            std::thread::sleep(SAMPLE);
        }
        Ok(Trial {
            cores_before,
            to_cap_ms: to_cap,
            quota_ms,
            recovery_ms: recovery,
        })
    }

    // ---------------------------------------------------------------------------------------------
    // The owner's latency probe and build
    // ---------------------------------------------------------------------------------------------

    /// cyclictest (Debian package rt-tests) for `secs`: one thread at `SCHED_OTHER` (no `-p`: the
    /// owner's programs run so) waking every millisecond, its wake-up latencies in a histogram
    /// of 1 us buckets up to [`HIST_MAX_US`]. Returns p50, p99 and max in microseconds.
    fn latency_probe(secs: u32) -> Result<Value> {
        let out = Command::new("cyclictest")
            .args(["-q", "-t1", "-i", "1000", "-D"])
            .arg(format!("{secs}s"))
            .arg("-h")
            .arg(HIST_MAX_US.to_string())
            .stdin(Stdio::null())
            .output()
            .context("cyclictest (Debian package rt-tests)")?;
        if !out.status.success() {
            bail!(
                "cyclictest failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (hist, overflows) = parse_histogram(&text);
        let total: u64 = hist.iter().map(|(_, n)| n).sum::<u64>() + overflows;
        if total == 0 {
            bail!("cyclictest printed no histogram: {text}");
        }
        let max = text
            .lines()
            .find_map(|l| l.strip_prefix("# Max Latencies:"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        Ok(json!({
            "p50_us": histogram_percentile(&hist, overflows, 50.0),
            "p99_us": histogram_percentile(&hist, overflows, 99.0),
            "max_us": max,
            "wakeups": total,
            "overflows": overflows,
        }))
    }

    /// cyclictest's `-h` output: (bucket in us, count) per line, and the overflow count.
    fn parse_histogram(text: &str) -> (Vec<(u64, u64)>, u64) {
        let mut hist = Vec::new();
        let mut overflows = 0;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("# Histogram Overflows:") {
                overflows = v
                    .split_whitespace()
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum();
                continue;
            }
            let mut f = line.split_whitespace();
            if let (Some(b), Some(n), None) = (f.next(), f.next(), f.next())
                && let (Ok(b), Ok(n)) = (b.parse::<u64>(), n.parse::<u64>())
            {
                hist.push((b, n));
            }
        }
        (hist, overflows)
    }

    /// The `p`th percentile of a histogram, in its buckets' unit; overflows count as
    /// [`HIST_MAX_US`].
    fn histogram_percentile(hist: &[(u64, u64)], overflows: u64, p: f64) -> f64 {
        let total: u64 = hist.iter().map(|(_, n)| n).sum::<u64>() + overflows;
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(bucket, n) in hist {
            seen += n;
            if seen >= rank {
                return bucket as f64;
            }
        }
        HIST_MAX_US as f64
    }

    /// The owner's build: the C sources of aws-lc (vendored by the aws-lc-sys crate in cargo's
    /// registry), everything under `crypto/` but the FIPS module and tests, compiled with
    /// `make -j<cores>` from a Makefile written here.
    struct Build {
        makefile: PathBuf,
        out: PathBuf,
        files: usize,
        source: PathBuf,
    }

    impl Build {
        fn find(work: &Path) -> Result<Build> {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
                .context("no HOME")?;
            let mut found = Vec::new();
            for index in std::fs::read_dir(home.join("registry/src"))?.flatten() {
                for krate in std::fs::read_dir(index.path())?.flatten() {
                    let name = krate.file_name().to_string_lossy().into_owned();
                    if name.starts_with("aws-lc-sys-") && krate.path().join("aws-lc").is_dir() {
                        found.push(krate.path());
                    }
                }
            }
            found.sort();
            let krate = found
                .pop()
                .context("no aws-lc-sys sources in cargo's registry (cargo fetch brings them)")?;
            let src = krate.join("aws-lc");
            let mut files = Vec::new();
            let mut dirs = vec![src.join("crypto")];
            while let Some(d) = dirs.pop() {
                for e in std::fs::read_dir(&d)?.flatten() {
                    let p = e.path();
                    let name = e.file_name().to_string_lossy().into_owned();
                    if p.is_dir() {
                        if name != "fipsmodule" && !name.contains("test") {
                            dirs.push(p);
                        }
                    } else if name.ends_with(".c") && !name.contains("test") {
                        files.push(p);
                    }
                }
            }
            files.sort();
            let out = work.join("build");
            let mut mk = String::from("CC ?= cc\nall:");
            for i in 0..files.len() {
                mk.push_str(&format!(" o{i}.o"));
            }
            mk.push('\n');
            for (i, f) in files.iter().enumerate() {
                mk.push_str(&format!(
                    "o{i}.o: {}\n\t$(CC) -c -O1 -w -I {} -I {} -o $@ $<\n",
                    f.display(),
                    src.join("include").display(),
                    krate.join("generated-include").display(),
                ));
            }
            let makefile = work.join("owner-build.mk");
            std::fs::write(&makefile, mk)?;
            Ok(Build {
                makefile,
                out,
                files: files.len(),
                source: src,
            })
        }

        /// Wall seconds of one clean build with `make -j<cores>`.
        fn run(&self) -> Result<f64> {
            let _ = std::fs::remove_dir_all(&self.out);
            std::fs::create_dir_all(&self.out)?;
            let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
            let t = Instant::now();
            let out = Command::new("make")
                .arg("-s")
                .arg(format!("-j{jobs}"))
                .arg("-C")
                .arg(&self.out)
                .arg("-f")
                .arg(&self.makefile)
                .stdin(Stdio::null())
                .output()
                .context("make")?;
            let secs = t.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!(
                    "the owner's build failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" / ")
                );
            }
            Ok(secs)
        }
    }

    /// `measure` `reps` times; with `paired` (a node's tree marker), each run under the node is
    /// paired with a run just before it with the node's processes stopped (the idle machine of
    /// that moment), as [`interference`] does. Returns the runs under the node and the paired
    /// idle runs.
    fn paired<T>(
        reps: u32,
        paired: Option<&str>,
        mut measure: impl FnMut() -> Result<T>,
    ) -> Result<(Vec<T>, Vec<T>)> {
        let (mut under, mut idle) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            if let Some(marker) = paired {
                hold_tree(marker, true);
                std::thread::sleep(Duration::from_millis(300));
                let r = measure();
                hold_tree(marker, false);
                idle.push(r?);
                std::thread::sleep(Duration::from_secs(1));
            }
            under.push(measure()?);
        }
        Ok((under, idle))
    }

    /// The owner's latency and build under one condition: the probe's p99 and the build's
    /// seconds, each with its paired idle runs when `marker` is given.
    fn owner_probes(
        reps: u32,
        probe_secs: u32,
        build: Option<&Build>,
        marker: Option<&str>,
    ) -> Result<Value> {
        let (lat, lat_idle) = paired(reps, marker, || latency_probe(probe_secs))?;
        let p99s =
            |v: &[Value]| -> Vec<f64> { v.iter().filter_map(|r| r["p99_us"].as_f64()).collect() };
        let mut out = json!({
            "latency_runs": lat,
            "latency_p99_us": median(&p99s(&lat)),
        });
        if marker.is_some() {
            let ratios: Vec<f64> = p99s(&lat)
                .iter()
                .zip(p99s(&lat_idle))
                .map(|(a, b)| round(a / b.max(1.0), 3))
                .collect();
            out["latency_paired_idle_runs"] = json!(lat_idle);
            out["latency_paired_idle_p99_us"] = json!(median(&p99s(&lat_idle)));
            out["latency_p99_paired_ratios"] = json!(ratios);
            out["latency_p99_paired_ratio_median"] = json!(round(median(&ratios), 3));
        }
        if let Some(b) = build {
            let (secs, idle) = paired(reps, marker, || b.run())?;
            out["build_s"] = json!(secs.iter().map(|s| round(*s, 3)).collect::<Vec<_>>());
            out["build_median_s"] = json!(round(median(&secs), 3));
            if marker.is_some() {
                let ratios: Vec<f64> = secs
                    .iter()
                    .zip(&idle)
                    .map(|(a, b)| round(a / b, 4))
                    .collect();
                out["build_paired_idle_s"] =
                    json!(idle.iter().map(|s| round(*s, 3)).collect::<Vec<_>>());
                out["build_paired_ratios"] = json!(ratios);
                out["build_paired_ratio_median"] = json!(round(median(&ratios), 4));
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------------------------------------
    // Machine info, date
    // ---------------------------------------------------------------------------------------------

    // ---------------------------------------------------------------------------------------------
    // The run
    // ---------------------------------------------------------------------------------------------

    pub fn run(args: &Args) -> Result<()> {
        let bin = flotilla_bench::cli::flotilla_binary(args.flotilla.as_deref())?;
        let sweep_script = args
            .sweep
            .canonicalize()
            .with_context(|| format!("the sweep script {}", args.sweep.display()))?;
        let machine = machine();
        let reps: u32 = if args.quick { 1 } else { 5 };
        // Each cluster's first sweep also starts its Python workers (slower at nice 19): one
        // warm-up run each, reported apart, then the measured runs.
        let harvest_runs: u32 = if args.quick { 1 } else { 5 };
        // The first users' sweep at full size, so that start-up costs do not dominate.
        let (evals, candles) = if args.quick {
            (8, 20_000)
        } else {
            (80, 297_000)
        };
        let work = tempfile::Builder::new().prefix("pbw").tempdir_in("/tmp")?;

        // Size the foreground job: about 2 s of one core on this machine right now.
        let probe = 100_000_000u64;
        let probe_s = foreground(probe, 1)?;
        let target_s = if args.quick { 0.8 } else { 2.0 };
        let iterations = ((probe as f64) * target_s / probe_s) as u64;
        log(format!(
            "foreground job: {iterations} iterations (~{target_s} s of one core); {reps} runs per variant"
        ));

        // The owner's latency probe and build: seconds per probe, runs per condition.
        let probe_secs = args.probe_secs.unwrap_or(if args.quick { 5 } else { 20 });
        let probe_reps = args.probe_reps.unwrap_or(if args.quick { 1 } else { 3 });
        let build = Build::find(work.path())
            .map_err(|e| log(format!("no owner's build: {e:#}")))
            .ok();
        if let Some(b) = &build {
            log(format!(
                "owner's build: {} C files of {}",
                b.files,
                b.source.display()
            ));
        }

        log("(a) idle machine");
        let idle_before = interference(iterations, reps, None, None)?;
        let owner_idle_before = owner_probes(1, probe_secs, build.as_ref(), None)?;

        // ------------------------------ Flotilla ------------------------------
        log("starting the Flotilla cluster");
        // The owner's desktop: an X server the agent watches for input.
        let xvfb = flotilla_testkit::xvfb::start_xvfb(&work.path().join("xvfb.log"));
        let f = Flotilla::start(&bin, &xvfb.display)?;
        let conn = f.connection()?;
        let runtime = conn
            .python
            .parent()
            .and_then(Path::parent)
            .context("runtime dir")?
            .to_path_buf();
        let (meter, quota) = flotilla_meter();
        log(format!(
            "Flotilla node CPU from {}; quota file {}",
            meter.describe(),
            quota
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string())
        ));

        log("(c) harvest on Flotilla, owner away");
        f.owner(AWAY_MS);
        std::thread::sleep(Duration::from_secs(3));
        let flotilla_warmup = sweep(&conn, &sweep_script, work.path(), evals, candles)?;
        let mut flotilla_harvest = Vec::new();
        for _ in 0..harvest_runs {
            flotilla_harvest.push(sweep(&conn, &sweep_script, work.path(), evals, candles)?);
        }

        log(format!("(b) reaction, {} trials", args.trials));
        let workload = Workload::start(&conn, work.path())?;
        // Other work on the machine can starve the node (it runs SCHED_IDLE); a trial needs it
        // saturated first, so it is skipped when it is not, and the trials stop after 5 skips
        // in a row.
        if let Err(e) = wait_saturated(&meter, Duration::from_secs(60)) {
            log(format!("{e:#}; {}", workload.log_tail()));
        }
        let mut trials = Vec::new();
        let mut skipped = Vec::new();
        let mut skipped_in_a_row = 0;
        for i in 0..args.trials {
            if skipped_in_a_row >= 5 {
                log("5 trials skipped in a row: stopping the trials");
                break;
            }
            match reaction_trial(&meter, quota.as_deref(), &xvfb.display) {
                Ok(t) => {
                    log(format!(
                        "  trial {}: {} ms to the cap (quota set at {} ms), back in {} ms",
                        i + 1,
                        t.to_cap_ms.map_or("-".into(), |m| format!("{m:.0}")),
                        t.quota_ms.map_or("-".into(), |m| format!("{m:.0}")),
                        t.recovery_ms.map_or("-".into(), |m| format!("{m:.0}")),
                    ));
                    trials.push(t);
                    skipped_in_a_row = 0;
                }
                Err(e) => {
                    log(format!("  trial {} skipped: {e:#}", i + 1));
                    skipped.push(format!("{e:#}"));
                    skipped_in_a_row += 1;
                }
            }
        }

        log("(a) Flotilla, owner active, node saturated");
        let saturated_before_active = wait_saturated(&meter, Duration::from_secs(30))
            .map_err(|e| log(format!("{e:#}")))
            .is_ok();
        f.owner(0);
        std::thread::sleep(Duration::from_millis(500));
        let mut s = Sampler::new(&meter);
        let capped_in = Instant::now();
        while s.next().is_none_or(|r| r > CAP_CORES * CAP_TOLERANCE) {
            if capped_in.elapsed() > Duration::from_secs(10) {
                bail!("the node was not capped within 10 s of the owner's input");
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let flotilla_marker = format!("FLOTILLA_TREE={NODE}-");
        let flotilla_active = interference(iterations, reps, Some(&meter), Some(&flotilla_marker))?;
        log("(d) the owner's latency and build, Flotilla, owner active, node saturated");
        let flotilla_owner = owner_probes(
            probe_reps,
            probe_secs,
            build.as_ref(),
            Some(&flotilla_marker),
        )?;
        workload.stop();
        f.owner(AWAY_MS);
        drop(f);
        log("Flotilla cluster stopped");

        // ------------------------------ plain Ray ------------------------------
        log("starting the plain Ray cluster (nice 0, no cap)");
        let plain = PlainRay::start(&runtime)?;
        let plain_meter = plain.worker_meter();

        log("(c) harvest on plain Ray");
        let plain_warmup = sweep(&plain.conn, &sweep_script, work.path(), evals, candles)?;
        let mut plain_harvest = Vec::new();
        for _ in 0..harvest_runs {
            plain_harvest.push(sweep(
                &plain.conn,
                &sweep_script,
                work.path(),
                evals,
                candles,
            )?);
        }

        log("(a) plain Ray, node saturated");
        let workload = Workload::start(&plain.conn, work.path())?;
        wait_saturated(&plain_meter, Duration::from_secs(60))
            .with_context(|| workload.log_tail())?;
        let plain_marker = format!("{}worker", plain.marker);
        let plain_busy = interference(iterations, reps, Some(&plain_meter), Some(&plain_marker))?;
        log("(d) the owner's latency and build, plain Ray, node saturated");
        let plain_owner =
            owner_probes(probe_reps, probe_secs, build.as_ref(), Some(&plain_marker))?;
        workload.stop();
        drop(plain);
        log("plain Ray cluster stopped");

        log("(a) idle machine again");
        let idle_after = interference(iterations, reps, None, None)?;
        let owner_idle_after = owner_probes(1, probe_secs, build.as_ref(), None)?;
        drop(xvfb);

        // ------------------------------ results ------------------------------
        let samples = |v: &Value, variant: &str| -> Vec<f64> {
            v[variant]["samples_s"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        let mut ratios = serde_json::Map::new();
        let mut interference_ok = true;
        let mut idle_ref = serde_json::Map::new();
        for variant in ["single_thread", "all_threads"] {
            let idle: Vec<f64> = [
                samples(&idle_before, variant),
                samples(&idle_after, variant),
            ]
            .concat();
            let idle_m = median(&idle);
            idle_ref.insert(variant.into(), json!(round(idle_m, 4)));
            // The paired ratios decide; the ratios against the idle runs before and after the
            // clusters are kept for reference.
            let paired = |v: &Value| {
                v[variant]["paired_ratio_median"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            };
            let plain_r = paired(&plain_busy);
            let flot_r = paired(&flotilla_active);
            let plain_phase = median(&samples(&plain_busy, variant)) / idle_m;
            let flot_phase = median(&samples(&flotilla_active, variant)) / idle_m;
            interference_ok &= flot_r <= GOAL_INTERFERENCE_RATIO;
            ratios.insert(
                variant.into(),
                json!({
                    "plain_ray": round(plain_r, 3),
                    "flotilla_owner_active": round(flot_r, 3),
                    "vs_idle_phases": {
                        "plain_ray": round(plain_phase, 3),
                        "flotilla_owner_active": round(flot_phase, 3),
                    },
                }),
            );
        }

        let to_cap: Vec<f64> = trials
            .iter()
            .filter_map(|t| t.to_cap_ms)
            .map(|m| round(m, 1))
            .collect();
        let missed = trials.iter().filter(|t| t.to_cap_ms.is_none()).count();
        let quota_ms: Vec<f64> = trials
            .iter()
            .filter_map(|t| t.quota_ms)
            .map(|m| round(m, 1))
            .collect();
        let recovery: Vec<f64> = trials
            .iter()
            .filter_map(|t| t.recovery_ms)
            .map(|m| round(m, 1))
            .collect();
        let p95 = percentile(&to_cap, 95.0);
        let quota_p95 = percentile(&quota_ms, 95.0);
        // The OS relief: the cap written on the owner's input.
        let reaction_ok = missed == 0 && !quota_ms.is_empty() && quota_p95 <= GOAL_REACTION_P95_MS;
        let under_cap_ok = missed == 0 && !to_cap.is_empty() && p95 <= GOAL_REACTION_P95_MS;

        // The owner's latency and build: the paired ratios decide, as for interference.
        let f64_at = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let lat_flotilla = f64_at(&flotilla_owner, "latency_p99_paired_ratio_median");
        let lat_plain = f64_at(&plain_owner, "latency_p99_paired_ratio_median");
        let latency_ok = lat_flotilla <= GOAL_LATENCY_P99_RATIO;
        let idle_p99 = median(&[
            f64_at(&owner_idle_before, "latency_p99_us"),
            f64_at(&owner_idle_after, "latency_p99_us"),
        ]);
        let build_flotilla = f64_at(&flotilla_owner, "build_paired_ratio_median");
        let build_plain = f64_at(&plain_owner, "build_paired_ratio_median");
        let build_ok = build.is_some() && build_flotilla <= GOAL_BUILD_RATIO;
        let idle_build = median(&[
            f64_at(&owner_idle_before, "build_median_s"),
            f64_at(&owner_idle_after, "build_median_s"),
        ]);

        let walls = |runs: &[Value]| -> Vec<f64> {
            runs.iter().filter_map(|r| r["wall_s"].as_f64()).collect()
        };
        let (pw, fw) = (
            median(&walls(&plain_harvest)),
            median(&walls(&flotilla_harvest)),
        );
        let harvest_ratio = pw / fw;
        let harvest_ok = harvest_ratio >= GOAL_HARVEST_RATIO;

        let out = json!({
            "benchmark": "politeness",
            "date": today(),
            "quick": args.quick,
            "machine": machine,
            "load_average_end": loadavg(),
            "setup": {
                "ray_worker_cpus": CPUS,
                "object_store_mb": OBJECT_STORE_MB,
                "flotilla_policy": POLICY,
                "flotilla_cpu_meter": meter.describe(),
                "flotilla_quota_file": quota.as_ref().map(|p| p.display().to_string()),
                "plain_ray": "ray start --head --num-cpus=0 + ray start --num-cpus=2 --block, token auth, nice 0, no cap",
                "saturating_workload": format!("{CPUS} busy Python tasks, num_cpus=1 each"),
            },
            "goals": {
                "interference_ratio_max": GOAL_INTERFERENCE_RATIO,
                "reaction_p95_ms_max": GOAL_REACTION_P95_MS,
                "harvest_ratio_min": GOAL_HARVEST_RATIO,
                "latency_p99_ratio_max": GOAL_LATENCY_P99_RATIO,
                "build_ratio_max": GOAL_BUILD_RATIO,
            },
            "interference": {
                "what": "wall seconds of a fixed CPU job (single_thread: 1 process; all_threads: 2 at once), median of the runs; ratios: the median of paired runs (each run under the saturated node over a run just before it with the node's processes stopped); vs_idle_phases: against the idle runs before and after the clusters",
                "iterations_per_process": iterations,
                "runs_per_variant": reps,
                "idle_before": idle_before,
                "idle_after": idle_after,
                "idle_reference_s": idle_ref,
                "plain_ray_saturated": plain_busy,
                "flotilla_saturated_owner_active": flotilla_active,
                "flotilla_node_saturated_before_owner_came": saturated_before_active,
                "ratios_vs_idle": ratios,
                "meets_goal": interference_ok,
            },
            "reaction": {
                "what": "ms from starting `xdotool key shift` on the X display the agent watches (a real input event) to the node's cgroup quota written (quota_set: the OS relief) and to the node's CPU rate, over a sliding window of window_ms, at or under the cap (to_cap: includes up to one window of the measurement's own delay, and the CFS period of 100 ms over which the quota is enforced)",
                "input": "xdotool key shift on Xvfb, heard by the agent through XInput2",
                "cap_cores": CAP_CORES,
                "threshold_cores": CAP_CORES * CAP_TOLERANCE,
                "sample_ms": SAMPLE.as_millis() as u64,
                "window_ms": meter.window().as_millis() as u64,
                "trials": args.trials,
                "measured": to_cap.len(),
                "not_capped_within_5s": missed,
                "skipped": skipped,
                "cores_before": trials.iter().map(|t| round(t.cores_before, 2)).collect::<Vec<_>>(),
                "to_cap_ms": to_cap,
                "p50_ms": round(percentile(&to_cap, 50.0), 1),
                "p95_ms": round(p95, 1),
                "max_ms": round(to_cap.iter().copied().fold(f64::NAN, f64::max), 1),
                "quota_set_ms": quota_ms,
                "quota_set_p50_ms": round(percentile(&quota_ms, 50.0), 1),
                "quota_set_p95_ms": round(quota_p95, 1),
                "quota_set_max_ms": round(quota_ms.iter().copied().fold(f64::NAN, f64::max), 1),
                "to_cap_meets_goal": under_cap_ok,
                "recovery_ms": recovery,
                "recovery_p50_ms": round(percentile(&recovery, 50.0), 1),
                "meets_goal": reaction_ok,
            },
            "harvest": {
                "what": "examples/sweep/sweep.py wall seconds (its own clock, connection excluded), owner away; median of the runs after one warm-up run each",
                "evals": evals,
                "candles": candles,
                "flotilla_warmup": flotilla_warmup,
                "plain_ray_warmup": plain_warmup,
                "flotilla_runs": flotilla_harvest,
                "plain_ray_runs": plain_harvest,
                "flotilla_wall_s": round(fw, 3),
                "plain_ray_wall_s": round(pw, 3),
                "ratio_plain_over_flotilla": round(harvest_ratio, 3),
                "meets_goal": harvest_ok,
            },
            "owner_latency": {
                "what": "cyclictest -q -t1 -i 1000 -D <secs>s -h 20000 (one SCHED_OTHER thread waking every 1 ms, as the owner's interactive program): p99 wake-up latency in us; ratios: the median of paired runs (each run under the saturated node over a run just before it with the node's processes stopped)",
                "probe_secs": probe_secs,
                "runs_per_condition": probe_reps,
                "idle_before": owner_idle_before["latency_runs"],
                "idle_after": owner_idle_after["latency_runs"],
                "idle_p99_us": round(idle_p99, 1),
                "flotilla_owner_active": {
                    "runs": flotilla_owner["latency_runs"],
                    "paired_idle_runs": flotilla_owner["latency_paired_idle_runs"],
                    "p99_us": flotilla_owner["latency_p99_us"],
                    "ratio": round(lat_flotilla, 3),
                },
                "plain_ray": {
                    "runs": plain_owner["latency_runs"],
                    "paired_idle_runs": plain_owner["latency_paired_idle_runs"],
                    "p99_us": plain_owner["latency_p99_us"],
                    "ratio": round(lat_plain, 3),
                },
                "meets_goal": latency_ok,
            },
            "owner_build": {
                "what": "wall seconds of make -j<cores> compiling aws-lc's C sources (crypto/ but the FIPS module and tests) from cargo's registry, clean each time; ratios: the median of paired runs as for the latency",
                "files": build.as_ref().map(|b| b.files),
                "source": build.as_ref().map(|b| b.source.display().to_string()),
                "idle_before_s": owner_idle_before["build_s"],
                "idle_after_s": owner_idle_after["build_s"],
                "idle_median_s": round(idle_build, 3),
                "flotilla_owner_active": {
                    "runs_s": flotilla_owner["build_s"],
                    "paired_idle_s": flotilla_owner["build_paired_idle_s"],
                    "ratio": round(build_flotilla, 4),
                },
                "plain_ray": {
                    "runs_s": plain_owner["build_s"],
                    "paired_idle_s": plain_owner["build_paired_idle_s"],
                    "ratio": round(build_plain, 4),
                },
                "meets_goal": build_ok,
            },
            "meets_goal": interference_ok && reaction_ok && harvest_ok && latency_ok && build_ok,
        });
        println!("{out}");
        if !args.no_write {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("politeness-{}.json", today()));
            std::fs::write(&path, format!("{}\n", serde_json::to_string_pretty(&out)?))?;
            log(format!("written to {}", path.display()));
        }

        let r = |variant: &str, k: &str| {
            out["interference"]["ratios_vs_idle"][variant][k]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
        eprintln!(
            "politeness: owner's job vs idle: plain Ray {:.2}x / {:.2}x, Flotilla (owner active) \
         {:.2}x / {:.2}x (single / all threads) — {} the {GOAL_INTERFERENCE_RATIO}x goal",
            r("single_thread", "plain_ray"),
            r("all_threads", "plain_ray"),
            r("single_thread", "flotilla_owner_active"),
            r("all_threads", "flotilla_owner_active"),
            verdict(interference_ok),
        );
        eprintln!(
            "politeness: reaction to a key press: cap written p50 {:.0} ms, p95 {:.0} ms; node \
         under its cap p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (with the {} ms window) over {} \
         trials ({missed} not capped) — {} / {} the {GOAL_REACTION_P95_MS} ms p95 goal",
            percentile(&quota_ms, 50.0),
            quota_p95,
            percentile(&to_cap, 50.0),
            p95,
            to_cap.iter().copied().fold(f64::NAN, f64::max),
            meter.window().as_millis(),
            to_cap.len(),
            verdict(reaction_ok),
            verdict(under_cap_ok),
        );
        eprintln!(
            "politeness: the owner's wake-up latency p99: idle {idle_p99:.0} us; Flotilla (owner \
         active) {lat_flotilla:.2}x, plain Ray {lat_plain:.2}x of idle — {} the \
         {GOAL_LATENCY_P99_RATIO}x goal",
            verdict(latency_ok),
        );
        eprintln!(
            "politeness: the owner's build (make -j): idle {idle_build:.1} s; Flotilla (owner \
         active) {build_flotilla:.3}x, plain Ray {build_plain:.3}x of idle — {} the \
         {GOAL_BUILD_RATIO}x goal",
            verdict(build_ok),
        );
        eprintln!(
            "politeness: harvest: sweep {evals} evals in {fw:.1} s on Flotilla, {pw:.1} s on plain \
         Ray: plain/Flotilla {harvest_ratio:.2} — {} the {GOAL_HARVEST_RATIO} goal",
            verdict(harvest_ok),
        );
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cyclictests_histogram_gives_percentiles_with_overflows_at_the_top() {
            let text = "# /dev/cpu_dma_latency set to 0us\n# Histogram\n000010 000090\n\
                        000011 000000\n000050 000009\n# Total: 000000100\n\
                        # Max Latencies: 25000\n# Histogram Overflows: 00001\n\
                        # Thread 0: 00042\n";
            let (hist, overflows) = parse_histogram(text);
            assert_eq!(hist, vec![(10, 90), (11, 0), (50, 9)]);
            assert_eq!(overflows, 1);
            assert_eq!(histogram_percentile(&hist, overflows, 50.0), 10.0);
            assert_eq!(histogram_percentile(&hist, overflows, 99.0), 50.0);
            assert_eq!(
                histogram_percentile(&hist, overflows, 100.0),
                HIST_MAX_US as f64
            );
        }
    }
}
