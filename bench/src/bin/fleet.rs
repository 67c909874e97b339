//! What joining and staying in a fleet costs: the time from `flotilla join CODE` to the first
//! task running on the new machine (warm runtime cache), and the headless agent's own memory
//! and CPU while its node sits idle, with Ray's processes reported apart.
//!
//! A real head (`flotilla up --no-worker`) and real workers on this machine, on loopback.
//! Prints one JSON object to stdout, writes it to `bench/results/fleet-<date>.json` and prints a
//! summary to stderr. See `bench/README.md`.
#[cfg(target_os = "linux")]
fn main() {
    flotilla_bench::main("fleet", linux::parse_args, linux::run);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("fleet: only implemented on Linux (/proc)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use flotilla_bench::cli::{flotilla, start_head};
    use flotilla_bench::proc::{loadavg, machine, marked, proc_ticks, pss_kb, rss_kb};
    use flotilla_bench::{median, percentile, round, today, wait_for};
    use serde_json::{Value, json};

    /// The head's ports: API at the base, the rest from base + 1.
    const BASE: u16 = 9000;
    /// The joining worker's ports (one worker at a time).
    const WORKER_PORTS: u16 = 9500;
    const GOAL_JOIN_S: f64 = 5.0;
    const GOAL_AGENT_RSS_MB: f64 = 30.0;
    const GOAL_AGENT_CPU_PERCENT: f64 = 0.2;

    pub struct Args {
        flotilla: Option<PathBuf>,
        joins: u32,
        overhead_secs: u64,
        only: Option<String>,
        no_write: bool,
    }

    const USAGE: &str = "usage: fleet [--joins N (5)] [--overhead-secs S (600)] [--quick] \
                         [--only join|overhead] [--flotilla PATH] [--no-write]";

    pub fn parse_args() -> std::result::Result<Args, String> {
        let mut args = Args {
            flotilla: None,
            joins: 5,
            overhead_secs: 600,
            only: None,
            no_write: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            let number = |name: &str, v: String| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("{name}: expected a positive number, got {v}"))
            };
            match arg.as_str() {
                "--joins" => args.joins = number("--joins", value("--joins")?)? as u32,
                "--overhead-secs" => {
                    args.overhead_secs = number("--overhead-secs", value("--overhead-secs")?)?
                }
                "--quick" => {
                    args.joins = 2;
                    args.overhead_secs = 60;
                }
                "--only" => {
                    let v = value("--only")?;
                    if v != "join" && v != "overhead" {
                        return Err(format!("--only: expected join or overhead, got {v}"));
                    }
                    args.only = Some(v);
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
        eprintln!("fleet: {}", msg.as_ref());
    }

    fn unix_now() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    fn output(mut c: Command) -> Result<String> {
        let out = c.output()?;
        if !out.status.success() {
            bail!(
                "{:?} failed: {}",
                c.get_args().collect::<Vec<_>>(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Stops `child` and what is left of its home, saying so when something was left.
    fn stop(child: &mut Child, home: &Path) {
        let left = flotilla_bench::cli::stop(child, home);
        if left > 0 {
            log(format!(
                "killed {left} process(es) left in {}",
                home.display()
            ));
        }
    }

    /// A head with no worker of its own.
    struct Head {
        home: tempfile::TempDir,
        child: Child,
        bin: PathBuf,
    }

    impl Head {
        fn start(bin: &Path) -> Result<Head> {
            let (home, child) = start_head(bin, BASE, "fbh")?;
            let head = Head {
                home,
                child,
                bin: bin.to_path_buf(),
            };
            wait_for("the head", Duration::from_secs(180), || {
                head.status().is_ok_and(|s| s["totals"]["nodes_alive"] == 1)
            })
            .with_context(|| head.log_tail())?;
            Ok(head)
        }

        fn status(&self) -> Result<Value> {
            let mut c = flotilla(&self.bin, self.home.path());
            c.args([
                "status",
                "--json",
                "--api",
                &format!("http://127.0.0.1:{BASE}"),
            ]);
            Ok(serde_json::from_str(&output(c)?)?)
        }

        fn log_tail(&self) -> String {
            let log = std::fs::read_to_string(self.home.path().join("up.log")).unwrap_or_default();
            log.lines().rev().take(8).collect::<Vec<_>>().join(" / ")
        }

        fn invite(&self) -> Result<String> {
            let mut c = flotilla(&self.bin, self.home.path());
            c.args(["invite", "--json", "--no-qr"]);
            let v: Value = serde_json::from_str(&output(c)?).context("invite --json")?;
            Ok(v["code"]
                .as_str()
                .context("no code in invite --json")?
                .to_string())
        }

        /// The runtime's Python, the Ray address and the token, for a driver.
        fn driver(&self) -> Result<(PathBuf, String, String)> {
            let info: Value =
                serde_json::from_slice(&std::fs::read(self.home.path().join("state/head.json"))?)
                    .context("the head's state/head.json")?;
            let python = PathBuf::from(info["runtime_dir"].as_str().context("runtime_dir")?)
                .join("bin/python");
            let address = info["ray_address"]
                .as_str()
                .context("ray_address")?
                .to_string();
            let mut c = flotilla(&self.bin, self.home.path());
            c.args(["secret", "get", "flotilla.ray-token", "--reveal"]);
            Ok((python, address, output(c)?.trim().to_string()))
        }

        /// `flotilla join -` of a new machine named `name`, the code on its standard input.
        fn join(&self, name: &str) -> Result<(Child, tempfile::TempDir)> {
            let home = tempfile::Builder::new().prefix("fbw").tempdir_in("/tmp")?;
            let code = self.invite()?;
            let log = std::fs::File::create(home.path().join("join.log"))?;
            let mut c = flotilla(&self.bin, home.path());
            c.args(["join", "-", "--name", name, "--cpus", "1"])
                .args(["--object-store-mb", "100"])
                .args(["--node-ports", &WORKER_PORTS.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = c.spawn()?;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(code.as_bytes())?;
            Ok((child, home))
        }
    }

    impl Drop for Head {
        fn drop(&mut self) {
            let home = self.home.path().to_path_buf();
            stop(&mut self.child, &home);
        }
    }

    /// Waits for a node named argv[1], then runs one task pinned to it and prints when the node
    /// appeared and when the task started (Unix seconds). The driver connects first, so its own
    /// connection is not counted.
    const FIRST_TASK_PY: &str = r#"
import json, sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(log_to_driver=False)
print("ready", flush=True)
name = sys.argv[1]

@ray.remote(num_cpus=1)
def first():
    return time.time()

while True:
    ids = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n.get("NodeName") == name]
    if ids:
        break
    time.sleep(0.05)
alive = time.time()
strategy = NodeAffinitySchedulingStrategy(ids[0], soft=False)
started = ray.get(first.options(scheduling_strategy=strategy).remote())
print(json.dumps({"alive": alive, "task_start": started}), flush=True)
"#;

    fn time_to_join(head: &Head, trials: u32) -> Result<Value> {
        let (python, address, token) = head.driver()?;
        let script = head.home.path().join("first_task.py");
        std::fs::write(&script, FIRST_TASK_PY)?;
        let mut runs = Vec::new();
        for i in 0..trials {
            let name = format!("j{i}");
            let mut driver = Command::new(&python)
                .arg(&script)
                .arg(&name)
                .env("RAY_ADDRESS", &address)
                .env("RAY_AUTH_MODE", "token")
                .env("RAY_AUTH_TOKEN", &token)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let mut lines = BufReader::new(driver.stdout.take().context("stdout")?).lines();
            match lines.next() {
                Some(Ok(l)) if l == "ready" => {}
                other => bail!("the driver did not start: {other:?}"),
            }
            let t0 = unix_now();
            let (mut worker, home) = head.join(&name)?;
            let result = lines
                .next()
                .context("the driver ended without a result")??;
            let v: Value = serde_json::from_str(&result)
                .with_context(|| format!("the driver's answer {result:?}"))?;
            let _ = driver.wait();
            let alive = v["alive"].as_f64().context("alive")? - t0;
            let task = v["task_start"].as_f64().context("task_start")? - t0;
            // Where the time went, from the worker's own log (its events carry their time).
            let launched = logged_at(home.path(), "Ray node starting").map(|t| t - t0);
            let ready = logged_at(home.path(), "Ray node ready").map(|t| t - t0);
            log(format!(
                "join {}: `ray start` launched after {}, its node up after {}, ALIVE in Ray after {alive:.2} s, first task after {task:.2} s",
                i + 1,
                launched.map_or("?".into(), |t| format!("{t:.2} s")),
                ready.map_or("?".into(), |t| format!("{t:.2} s")),
            ));
            runs.push(json!({
                "node_launched_s": launched.map(|t| round(t, 3)),
                "node_up_s": ready.map(|t| round(t, 3)),
                "alive_s": round(alive, 3),
                "first_task_s": round(task, 3),
            }));
            stop(&mut worker, home.path());
        }
        let firsts: Vec<f64> = runs
            .iter()
            .filter_map(|r| r["first_task_s"].as_f64())
            .collect();
        let p50 = median(&firsts);
        let step = |key: &str| {
            median(
                &runs
                    .iter()
                    .filter_map(|r| r[key].as_f64())
                    .collect::<Vec<_>>(),
            )
        };
        let (launched, up, alive) = (step("node_launched_s"), step("node_up_s"), step("alive_s"));
        Ok(json!({
            "steps_median_s": {
                "enrolled_and_runtime_checked": round(launched, 3),
                "ray_start_until_its_raylet_runs": round(up - launched, 3),
                "raylet_until_alive_in_ray": round(alive - up, 3),
                "alive_until_first_task": round(p50 - alive, 3),
            },
            "what": "seconds from starting `flotilla join -` (code on stdin) to Ray listing the node ALIVE and to the first task (pinned to it) starting there; warm runtime cache, same machine; steps_median_s splits the time: joining and checking the runtime until `ray start` is launched, `ray start` until the supervisor sees its node up, then until Ray lists the node ALIVE (the raylet waits for its dashboard agent), then until the first task starts (a Python worker starts)",
            "runs": runs,
            "first_task_p50_s": round(p50, 3),
            "first_task_max_s": round(percentile(&firsts, 100.0), 3),
            "goal_s": GOAL_JOIN_S,
            "meets_goal": p50 <= GOAL_JOIN_S,
        }))
    }

    /// When the worker at `home` first logged `message` (its JSON log file), in Unix seconds.
    fn logged_at(home: &Path, message: &str) -> Option<f64> {
        let dir = std::fs::read_dir(home.join("logs")).ok()?;
        let mut times = Vec::new();
        for entry in dir.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if v["fields"]["message"] == message
                    && let Some(t) = v["timestamp"].as_str().and_then(unix_of_rfc3339)
                {
                    times.push(t);
                }
            }
        }
        times.into_iter().reduce(f64::min)
    }

    /// `2026-12-07T22:02:56.364676Z` as Unix seconds (UTC only, as the logs write it).
    fn unix_of_rfc3339(t: &str) -> Option<f64> {
        let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
        let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let mut hms = time.splitn(3, ':');
        let h: f64 = hms.next()?.parse().ok()?;
        let min: f64 = hms.next()?.parse().ok()?;
        let sec: f64 = hms.next()?.parse().ok()?;
        let days = flotilla_host::clock::days_from_civil(y, m as u32, day as u32);
        Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
    }

    /// One sample of a set of processes: RSS and PSS (KiB) and CPU ticks.
    fn sample(pids: &[u32]) -> (u64, u64, u64) {
        pids.iter().fold((0, 0, 0), |(r, p, t), pid| {
            (
                r + rss_kb(*pid).unwrap_or(0),
                p + pss_kb(*pid).unwrap_or(0),
                t + proc_ticks(*pid).unwrap_or(0),
            )
        })
    }

    fn overhead(head: &Head, secs: u64) -> Result<Value> {
        let (mut worker, home) = head.join("idle")?;
        let agent = worker.id();
        wait_for("the idle worker", Duration::from_secs(120), || {
            head.status().is_ok_and(|s| {
                s["agents"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|a| a["name"] == "idle" && a["connected"] == true)
                }) && s["nodes"].as_array().is_some_and(|n| {
                    n.iter()
                        .any(|n| n["name"] == "idle" && n["state"] == "ALIVE")
                })
            })
        })?;
        let warmup = Duration::from_secs((secs / 10).clamp(10, 60));
        log(format!(
            "agent {agent}: {warmup:?} warm-up, then {secs} s of samples every second"
        ));
        std::thread::sleep(warmup);
        let tree = "FLOTILLA_TREE=idle-";
        let head_pid = head.child.id();
        let (mut agent_rss, mut ray_rss, mut ray_pss, mut head_rss) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let ticks = |pid| proc_ticks(pid).unwrap_or(0);
        let (a0, h0) = (ticks(agent), ticks(head_pid));
        let r0 = sample(&marked(tree)).2;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_secs(1));
            agent_rss.push(rss_kb(agent).context("the agent exited")? as f64 / 1024.0);
            head_rss.push(rss_kb(head_pid).unwrap_or(0) as f64 / 1024.0);
            let (r, p, _) = sample(&marked(tree));
            ray_rss.push(r as f64 / 1024.0);
            ray_pss.push(p as f64 / 1024.0);
        }
        let wall = start.elapsed().as_secs_f64();
        let percent = |t: u64| t as f64 / 100.0 / wall * 100.0;
        let agent_cpu = percent(ticks(agent).saturating_sub(a0));
        let head_cpu = percent(ticks(head_pid).saturating_sub(h0));
        let ray_cpu = percent(sample(&marked(tree)).2.saturating_sub(r0));
        stop(&mut worker, home.path());
        let agent_rss_max = percentile(&agent_rss, 100.0);
        Ok(json!({
            "what": "the idle worker's `flotilla` process (agent, session, politeness loop) over the window, Ray's processes of its node apart, and the head's `flotilla` process; CPU in percent of one core",
            "window_s": round(wall, 1),
            "agent": {
                "rss_mb_median": round(median(&agent_rss), 1),
                "rss_mb_max": round(agent_rss_max, 1),
                "cpu_percent": round(agent_cpu, 3),
            },
            "ray_node": {
                "rss_mb_median": round(median(&ray_rss), 1),
                "pss_mb_median": round(median(&ray_pss), 1),
                "cpu_percent": round(ray_cpu, 2),
            },
            "head_flotilla": {
                "rss_mb_median": round(median(&head_rss), 1),
                "cpu_percent": round(head_cpu, 3),
            },
            "goal_agent_rss_mb": GOAL_AGENT_RSS_MB,
            "goal_agent_cpu_percent": GOAL_AGENT_CPU_PERCENT,
            "meets_goal": agent_rss_max <= GOAL_AGENT_RSS_MB && agent_cpu <= GOAL_AGENT_CPU_PERCENT,
        }))
    }

    pub fn run(args: &Args) -> Result<()> {
        let bin = flotilla_bench::cli::flotilla_binary(args.flotilla.as_deref())?;
        let machine = machine();
        log("starting the head");
        let head = Head::start(&bin)?;
        let join = match args.only.as_deref() {
            None | Some("join") => Some(time_to_join(&head, args.joins)?),
            _ => None,
        };
        let overhead = match args.only.as_deref() {
            None | Some("overhead") => Some(overhead(&head, args.overhead_secs)?),
            _ => None,
        };
        drop(head);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(format!("fleet-{}.json", today()));
        // With --only, the other part of today's file is kept.
        let earlier: Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let join = join.map_or(earlier["time_to_join"].clone(), |j| j);
        let overhead = overhead.map_or(earlier["agent_overhead"].clone(), |o| o);
        let result = json!({
            "benchmark": "fleet",
            "date": today(),
            "machine": machine,
            "load_average_end": loadavg(),
            "time_to_join": join,
            "agent_overhead": overhead,
        });
        let text = serde_json::to_string_pretty(&result)?;
        println!("{text}");
        if !args.no_write {
            std::fs::create_dir_all(path.parent().expect("a results dir"))?;
            std::fs::write(&path, format!("{text}\n"))?;
            log(format!("wrote {}", path.display()));
        }
        if let Some(j) = &result["time_to_join"].as_object() {
            log(format!(
                "time to join: first task after {} s (median), goal {GOAL_JOIN_S} s",
                j["first_task_p50_s"]
            ));
        }
        if let Some(o) = &result["agent_overhead"].as_object() {
            log(format!(
                "agent overhead: {} MB RSS (max {}), {} % of a core; Ray's node {} MB PSS, {} %",
                o["agent"]["rss_mb_median"],
                o["agent"]["rss_mb_max"],
                o["agent"]["cpu_percent"],
                o["ray_node"]["pss_mb_median"],
                o["ray_node"]["cpu_percent"]
            ));
        }
        Ok(())
    }
}
