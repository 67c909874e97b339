//! Memory politeness: the owner allocates and touches most of the free memory while Ray tasks
//! hold memory. Measured side by side in one run: the idle "laptop" (the owner alone), a
//! Flotilla cluster and a plain `ray start` cluster. Reported: the owner's time against idle,
//! whether any owner process was killed, whether every Ray task completed (retried if its worker
//! was ended), and the ceiling and shedding the agent reported.
//!
//! The experiment is confined in a memory cgroup of its own (the "laptop", `--laptop-mib`, 3 GiB
//! by default) so that it cannot press the shared build machine; Flotilla is told that size
//! (`FLOTILLA_MEMORY_CGROUP`). Prints one JSON object to stdout and writes it to
//! `bench/results/memory-<date>.json`. See `bench/README.md`.
#[cfg(target_os = "linux")]
fn main() {
    flotilla_bench::main("memory", linux::parse_args, linux::run);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    // cgroups and /proc: Linux only.
    eprintln!("memory: only implemented on Linux");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use serde_json::{Value, json};

    use flotilla_bench::proc::{kill_marked, machine, signal, wait_child};
    use flotilla_bench::{median, round, today, wait_for};

    const NODE: &str = "mbench";
    const FLOTILLA_BASE: u16 = 43000;
    const PLAIN_BASE: u16 = 43400;
    const CPUS: u32 = 2;
    const OBJECT_STORE_MB: u64 = 100;
    const PLAIN_MARKER: &str = "MEMORY_BENCH_PLAIN";
    const MIB: u64 = 1 << 20;
    /// The owner's goal: its time under a cluster at most this many times its idle time.
    const GOAL_OWNER_RATIO: f64 = 1.1;

    pub struct Args {
        laptop_mib: u64,
        task_mib: u64,
        reps: u32,
        flotilla: Option<PathBuf>,
        no_write: bool,
    }

    const USAGE: &str = "usage: memory [--laptop-mib N (3072)] [--task-mib N (400)] [--reps N (3)] \
                         [--quick] [--flotilla PATH] [--no-write]";

    pub fn parse_args() -> std::result::Result<Args, String> {
        let mut args = Args {
            laptop_mib: 3072,
            task_mib: 400,
            reps: 3,
            flotilla: None,
            no_write: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| -> std::result::Result<u64, String> {
                let v = it.next().ok_or(format!("{name} needs a value"))?;
                v.parse().map_err(|_| format!("{name}: not a number: {v}"))
            };
            match arg.as_str() {
                "--laptop-mib" => args.laptop_mib = value("--laptop-mib")?,
                "--task-mib" => args.task_mib = value("--task-mib")?,
                "--reps" => args.reps = value("--reps")?.max(1) as u32,
                "--quick" => args.reps = 1,
                "--flotilla" => {
                    args.flotilla = Some(it.next().ok_or("--flotilla needs a value")?.into())
                }
                "--no-write" => args.no_write = true,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}; see --help")),
            }
        }
        Ok(args)
    }

    fn log(msg: impl AsRef<str>) {
        eprintln!("memory: {}", msg.as_ref());
    }

    // ---------------------------------------------------------------------------------------------
    // The laptop: a memory cgroup of the benchmark's own
    // ---------------------------------------------------------------------------------------------

    struct Laptop {
        dir: PathBuf,
        bytes: u64,
    }

    impl Laptop {
        /// `flotilla-bench-laptop-<pid>` under this process's own memory cgroup (v1), or under
        /// its cgroup2 directory, limited to `bytes`.
        fn create(bytes: u64) -> Result<Laptop> {
            let own = std::fs::read_to_string("/proc/self/cgroup")?;
            let name = format!("flotilla-bench-laptop-{}", std::process::id());
            let v1 = own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let _ = parts.next()?;
                parts
                    .next()?
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| parts.next().map(str::to_string))?
            });
            let (dir, limit_file) = match v1 {
                Some(path) => (
                    Path::new("/sys/fs/cgroup/memory")
                        .join(path.trim_start_matches('/'))
                        .join(&name),
                    "memory.limit_in_bytes",
                ),
                None => {
                    let path = own
                        .lines()
                        .find_map(|l| l.strip_prefix("0::"))
                        .context("no memory cgroup")?;
                    (
                        Path::new("/sys/fs/cgroup")
                            .join(path.trim_start_matches('/'))
                            .join(&name),
                        "memory.max",
                    )
                }
            };
            std::fs::create_dir(&dir)
                .with_context(|| format!("create the laptop's cgroup {}", dir.display()))?;
            std::fs::write(dir.join(limit_file), bytes.to_string())?;
            Ok(Laptop { dir, bytes })
        }

        /// `program` started inside the laptop: a shell enters it, then becomes the program.
        fn command(&self, program: &Path) -> Command {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
                .arg(self.dir.join("cgroup.procs"))
                .arg(program)
                .stdin(Stdio::null());
            c
        }

        /// What the laptop holds, without the file pages the kernel can drop at once.
        fn used(&self) -> u64 {
            flotilla_host::sensors::kernel::memory_of_cgroup(&self.dir)
                .available_bytes
                .map_or(0, |a| self.bytes.saturating_sub(a))
        }

        fn oom_kills(&self) -> u64 {
            std::fs::read_to_string(self.dir.join("memory.oom_control"))
                .or_else(|_| std::fs::read_to_string(self.dir.join("memory.events")))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
                .unwrap_or(0)
        }
    }

    impl Drop for Laptop {
        fn drop(&mut self) {
            for _ in 0..50 {
                if std::fs::remove_dir(&self.dir).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            log(format!("could not remove {}", self.dir.display()));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // The owner and the tasks
    // ---------------------------------------------------------------------------------------------

    /// Allocates `argv[1]` MiB, writes every page, prints the seconds that took, holds it 2 s.
    const OWNER_PY: &str = r#"import sys, time
n = int(sys.argv[1]) << 20
t0 = time.perf_counter()
b = bytearray(n)
for i in range(0, n, 4096):
    b[i] = 1
print(time.perf_counter() - t0, flush=True)
time.sleep(2)
"#;

    /// One owner run inside the laptop: its time, or `None` when it was killed.
    fn owner(laptop: &Laptop, dir: &Path, mib: u64) -> Result<(Option<f64>, String)> {
        let script = dir.join("owner.py");
        std::fs::write(&script, OWNER_PY)?;
        let out = laptop
            .command(Path::new("/usr/bin/env"))
            .args(["python3", &script.to_string_lossy(), &mib.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        let status = format!("{}", out.status);
        if !out.status.success() {
            return Ok((None, status));
        }
        let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        Ok((Some(secs), status))
    }

    /// `n` tasks, each holding `argv[2]` MiB (every page written) for `argv[3]` seconds, retried
    /// when their worker dies; prints how many completed.
    const TASKS_PY: &str = r#"import sys, time, ray
ray.init(log_to_driver=False)
n, mib, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

@ray.remote(num_cpus=1, max_retries=20, retry_exceptions=False)
def hold(i):
    b = bytearray(mib << 20)
    for j in range(0, len(b), 4096):
        b[j] = 1
    time.sleep(secs)
    return i

done = ray.get([hold.remote(i) for i in range(n)])
print(len(set(done)), flush=True)
"#;

    struct Conn {
        python: PathBuf,
        address: String,
        token: String,
    }

    fn start_tasks(conn: &Conn, dir: &Path, n: u32, mib: u64, secs: f64) -> Result<Child> {
        let script = dir.join("tasks.py");
        std::fs::write(&script, TASKS_PY)?;
        Ok(Command::new(&conn.python)
            .arg(&script)
            .args([n.to_string(), mib.to_string(), secs.to_string()])
            .env("RAY_ADDRESS", &conn.address)
            .env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN", &conn.token)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    // ---------------------------------------------------------------------------------------------
    // The clusters
    // ---------------------------------------------------------------------------------------------

    struct Flotilla {
        bin: PathBuf,
        home: tempfile::TempDir,
        up: Child,
    }

    impl Flotilla {
        fn start(bin: &Path, laptop: &Laptop) -> Result<Flotilla> {
            let home = tempfile::Builder::new().prefix("mbf").tempdir_in("/tmp")?;
            std::fs::create_dir_all(home.path().join("config"))?;
            // The memory rule at its default (15 % kept free); the owner counts as away, so
            // only memory moves the node.
            std::fs::write(
                home.path().join("config/flotilla.toml"),
                "[policy]\nowner_load_threshold = 1.0\n",
            )?;
            let mut up = laptop.command(bin);
            up.env("FLOTILLA_HOME", home.path())
                .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
                .env("FLOTILLA_MEMORY_CGROUP", &laptop.dir)
                .args(["up", "--cpus", &CPUS.to_string(), "--name", NODE])
                .args(["--object-store-mb", &OBJECT_STORE_MB.to_string()]);
            for (k, v) in [
                ("--api-port", FLOTILLA_BASE),
                ("--ray-port", FLOTILLA_BASE + 1),
                ("--ray-dashboard-port", FLOTILLA_BASE + 2),
                ("--ray-client-port", FLOTILLA_BASE + 3),
                ("--control-port", FLOTILLA_BASE + 4),
                ("--head-node-ports", FLOTILLA_BASE + 100),
                ("--node-ports", FLOTILLA_BASE + 200),
            ] {
                up.arg(k).arg(v.to_string());
            }
            let log = std::fs::File::create(home.path().join("up.log"))?;
            let up = up.stdout(Stdio::null()).stderr(log).spawn()?;
            let f = Flotilla {
                bin: bin.to_path_buf(),
                home,
                up,
            };
            wait_for("the Flotilla cluster", Duration::from_secs(300), || {
                f.status().is_ok_and(|s| {
                    s["nodes"].as_array().is_some_and(|n| {
                        n.iter().any(|n| n["name"] == NODE && n["state"] == "ALIVE")
                    })
                })
            })
            .with_context(|| {
                let log = std::fs::read_to_string(f.home.path().join("up.log")).unwrap_or_default();
                format!(
                    "flotilla up: {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
                )
            })?;
            Ok(f)
        }

        fn command(&self) -> Command {
            let mut c = Command::new(&self.bin);
            c.env("FLOTILLA_HOME", self.home.path())
                .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
                .stdin(Stdio::null());
            c
        }

        fn status(&self) -> Result<Value> {
            let out = self.command().args(["status", "--json"]).output()?;
            if !out.status.success() {
                bail!("status: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(serde_json::from_slice(&out.stdout)?)
        }

        /// The agent's enforcement, from its control socket's decision.
        fn enforcement(&self) -> Value {
            let sock = flotilla_host::Dirs::under(self.home.path()).agent_socket();
            let ask = || -> Result<Value> {
                use std::io::{BufRead, BufReader, Write};
                let mut s = std::os::unix::net::UnixStream::connect(&sock)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"{\"get\": \"decision\"}\n")?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line)?;
                let v: Value = serde_json::from_str(&line)?;
                Ok(v["decision"]["enforcement"].clone())
            };
            ask().unwrap_or(Value::Null)
        }

        fn connection(&self) -> Result<Conn> {
            let info: Value =
                serde_json::from_slice(&std::fs::read(self.home.path().join("state/head.json"))?)?;
            let out = self
                .command()
                .args(["secret", "get", "flotilla.ray-token", "--reveal"])
                .output()?;
            Ok(Conn {
                python: PathBuf::from(info["runtime_dir"].as_str().context("runtime_dir")?)
                    .join("bin/python"),
                address: info["ray_address"]
                    .as_str()
                    .context("ray_address")?
                    .to_string(),
                token: String::from_utf8(out.stdout)?.trim().to_string(),
            })
        }
    }

    impl Drop for Flotilla {
        fn drop(&mut self) {
            signal(&self.up, libc::SIGINT);
            if !wait_child(&mut self.up, Duration::from_secs(60)) {
                let _ = self.up.kill();
                let _ = self.up.wait();
            }
            kill_marked(&format!("FLOTILLA_HOME={}", self.home.path().display()));
        }
    }

    struct PlainRay {
        temp: tempfile::TempDir,
        nodes: Vec<Child>,
        marker: String,
    }

    impl PlainRay {
        fn start(runtime: &Path, laptop: &Laptop) -> Result<(PlainRay, Conn)> {
            let temp = tempfile::Builder::new().prefix("mbp").tempdir_in("/tmp")?;
            let mut token = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut token))?;
            let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
            let address = format!("127.0.0.1:{}", PLAIN_BASE + 1);
            let mut p = PlainRay {
                temp,
                nodes: Vec::new(),
                marker: format!("{PLAIN_MARKER}={}", std::process::id()),
            };
            let temp = p.temp.path().to_path_buf();
            let node = |role: &str, base: u16, extra: Vec<String>| -> Result<Child> {
                let dir = temp.join(role);
                std::fs::create_dir_all(&dir)?;
                let log = std::fs::File::create(temp.join(format!("{role}.log")))?;
                let mut c = laptop.command(&runtime.join("bin/ray"));
                c.args(["start", "--block", "--node-ip-address=127.0.0.1"])
                    .args(extra)
                    .arg(format!("--temp-dir={}", dir.display()))
                    .arg(format!("--object-store-memory={}", OBJECT_STORE_MB << 20))
                    .arg(format!("--node-manager-port={base}"))
                    .arg(format!("--object-manager-port={}", base + 1))
                    .arg(format!("--dashboard-agent-listen-port={}", base + 2))
                    .arg(format!("--dashboard-agent-grpc-port={}", base + 3))
                    .arg(format!("--metrics-export-port={}", base + 4))
                    .arg(format!("--runtime-env-agent-port={}", base + 5))
                    .arg(format!("--min-worker-port={}", base + 20))
                    .arg(format!("--max-worker-port={}", base + 99))
                    .arg("--disable-usage-stats")
                    .env("RAY_AUTH_MODE", "token")
                    .env("RAY_AUTH_TOKEN", &token)
                    .env("RAY_USAGE_STATS_ENABLED", "0")
                    .env(PLAIN_MARKER, std::process::id().to_string())
                    .env_remove("RAY_ADDRESS")
                    .stdout(log.try_clone()?)
                    .stderr(log);
                Ok(c.spawn()?)
            };
            p.nodes.push(node(
                "head",
                PLAIN_BASE + 100,
                vec![
                    "--head".into(),
                    format!("--port={}", PLAIN_BASE + 1),
                    "--num-cpus=0".into(),
                    "--dashboard-host=127.0.0.1".into(),
                    format!("--dashboard-port={}", PLAIN_BASE + 2),
                    format!("--ray-client-server-port={}", PLAIN_BASE + 3),
                ],
            )?);
            wait_for("the plain Ray head's GCS", Duration::from_secs(120), || {
                std::net::TcpStream::connect(("127.0.0.1", PLAIN_BASE + 1)).is_ok()
            })?;
            std::thread::sleep(Duration::from_secs(3));
            p.nodes.push(node(
                "worker",
                PLAIN_BASE + 200,
                vec![
                    format!("--address={address}"),
                    format!("--num-cpus={CPUS}"),
                    "--include-log-monitor=false".into(),
                ],
            )?);
            let conn = Conn {
                python: runtime.join("bin/python"),
                address,
                token,
            };
            Ok((p, conn))
        }
    }

    impl Drop for PlainRay {
        fn drop(&mut self) {
            for c in self.nodes.iter_mut().rev() {
                signal(c, libc::SIGINT);
                if !wait_child(c, Duration::from_secs(30)) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            kill_marked(&self.marker);
        }
    }

    /// Connects and waits until the cluster has its worker's CPUs.
    fn wait_cpus(conn: &Conn, dir: &Path) -> Result<()> {
        let script = dir.join("ready.py");
        std::fs::write(
            &script,
            "import time, ray\nray.init(log_to_driver=False)\nt0 = time.time()\n\
             while ray.cluster_resources().get('CPU', 0) < 2:\n\
             \x20   assert time.time() - t0 < 180, ray.cluster_resources()\n\
             \x20   time.sleep(0.2)\n",
        )?;
        let out = Command::new(&conn.python)
            .arg(&script)
            .env("RAY_ADDRESS", &conn.address)
            .env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN", &conn.token)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("ready: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// One variant under a running cluster: each repetition starts the tasks, waits until they
    /// hold their memory, runs the owner, then waits for the tasks.
    fn under_cluster(
        laptop: &Laptop,
        conn: &Conn,
        dir: &Path,
        args: &Args,
        owner_mib: u64,
        enforcement: &dyn Fn() -> Value,
    ) -> Result<Value> {
        let mut runs = Vec::new();
        for rep in 0..args.reps {
            let before = laptop.used();
            let oom_before = laptop.oom_kills();
            let tasks = start_tasks(conn, dir, CPUS, args.task_mib, 25.0)?;
            let held = wait_for(
                "the tasks hold their memory",
                Duration::from_secs(120),
                || laptop.used() >= before + CPUS as u64 * args.task_mib * MIB * 9 / 10,
            );
            let holding = held.is_ok();
            let at_start = enforcement();
            let (secs, status) = owner(laptop, dir, owner_mib)?;
            let during = enforcement();
            let started = Instant::now();
            let out = tasks.wait_with_output()?;
            // The driver's last line (Ray may print before it); it prints only once every task
            // returned.
            let completed: u64 = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .next_back()
                .unwrap_or(0);
            let run = json!({
                "rep": rep,
                "tasks_held_memory_before_the_owner": holding,
                "owner_s": secs.map(|s| round(s, 4)),
                "owner_killed": secs.is_none(),
                "owner_status": status,
                "tasks": CPUS,
                "tasks_completed": completed,
                "tasks_wait_after_owner_s": round(started.elapsed().as_secs_f64(), 1),
                "laptop_oom_kills": laptop.oom_kills().saturating_sub(oom_before),
                "enforcement_before_owner": at_start,
                "enforcement_after_owner": during,
                "driver_error": (!out.status.success()).then(|| {
                    String::from_utf8_lossy(&out.stderr).lines().rev().take(3).collect::<Vec<_>>().join(" / ")
                }),
            });
            log(format!("{run}"));
            runs.push(run);
        }
        Ok(json!(runs))
    }

    fn idle(laptop: &Laptop, dir: &Path, owner_mib: u64, reps: u32) -> Result<Vec<f64>> {
        let mut times = Vec::new();
        for _ in 0..reps {
            let (secs, status) = owner(laptop, dir, owner_mib)?;
            times.push(round(
                secs.with_context(|| format!("the owner alone failed: {status}"))?,
                4,
            ));
        }
        Ok(times)
    }

    fn summary(runs: &Value, idle_median: f64) -> Value {
        let runs = runs.as_array().cloned().unwrap_or_default();
        let times: Vec<f64> = runs.iter().filter_map(|r| r["owner_s"].as_f64()).collect();
        let killed = runs.iter().filter(|r| r["owner_killed"] == true).count();
        let lost: u64 = runs
            .iter()
            .map(|r| {
                r["tasks"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(r["tasks_completed"].as_u64().unwrap_or(0))
            })
            .sum();
        let ratio = if times.is_empty() {
            f64::NAN
        } else {
            round(median(&times) / idle_median, 3)
        };
        json!({
            "owner_median_s": if times.is_empty() { Value::Null } else { json!(round(median(&times), 4)) },
            "owner_ratio_vs_idle": if ratio.is_finite() { json!(ratio) } else { Value::Null },
            "owner_processes_killed": killed,
            "tasks_lost": lost,
            "meets_goal": ratio.is_finite() && ratio <= GOAL_OWNER_RATIO && killed == 0 && lost == 0,
            "runs": runs,
        })
    }

    pub fn run(args: &Args) -> Result<()> {
        flotilla_bench::cli::need_root("a memory cgroup of its own (the laptop)")?;
        let bin = flotilla_bench::cli::flotilla_binary(args.flotilla.as_deref())?;
        let machine = machine();
        let work = tempfile::Builder::new().prefix("mbw").tempdir_in("/tmp")?;
        let laptop = Laptop::create(args.laptop_mib * MIB)?;
        log(format!(
            "laptop: {} ({} MiB)",
            laptop.dir.display(),
            args.laptop_mib
        ));

        // Flotilla first: it provisions and names the runtime plain Ray then uses.
        let f = Flotilla::start(&bin, &laptop)?;
        let conn = f.connection()?;
        let runtime = conn
            .python
            .parent()
            .and_then(Path::parent)
            .context("runtime")?
            .to_path_buf();
        wait_cpus(&conn, work.path())?;
        std::thread::sleep(Duration::from_secs(5));
        // The owner takes most of what is free beside the idle cluster: the laptop less the
        // cluster at rest, less an eighth of the laptop for the kernel and the owner's own
        // interpreter.
        let baseline = laptop.used();
        let owner_mib = (args.laptop_mib * MIB)
            .saturating_sub(baseline)
            .saturating_sub(args.laptop_mib * MIB / 8)
            / MIB;
        log(format!(
            "Flotilla at rest holds {} MiB of the laptop; the owner takes {owner_mib} MiB while \
             {CPUS} tasks hold {} MiB each",
            baseline / MIB,
            args.task_mib
        ));
        let idle_before = {
            // The idle machine: the same owner with the cluster stopped for the moment would
            // still count its memory; so idle runs are taken with no cluster at all, before
            // and after.
            drop(f);
            idle(&laptop, work.path(), owner_mib, args.reps)?
        };
        let f = Flotilla::start(&bin, &laptop)?;
        let conn = f.connection()?;
        wait_cpus(&conn, work.path())?;
        std::thread::sleep(Duration::from_secs(5));
        let flotilla_runs = under_cluster(&laptop, &conn, work.path(), args, owner_mib, &|| {
            f.enforcement()
        })?;
        drop(f);

        let (plain, conn) = PlainRay::start(&runtime, &laptop)?;
        wait_cpus(&conn, work.path())?;
        std::thread::sleep(Duration::from_secs(5));
        let plain_baseline = laptop.used();
        let plain_runs = under_cluster(&laptop, &conn, work.path(), args, owner_mib, &|| {
            Value::Null
        })?;
        drop(plain);

        let idle_after = idle(&laptop, work.path(), owner_mib, args.reps)?;
        let idle_all: Vec<f64> = idle_before.iter().chain(&idle_after).copied().collect();
        let idle_median = median(&idle_all);
        let flotilla = summary(&flotilla_runs, idle_median);
        let plain = summary(&plain_runs, idle_median);
        let report = json!({
            "benchmark": "memory",
            "date": today(),
            "machine": machine,
            "setup": {
                "laptop_mib": args.laptop_mib,
                "laptop_cgroup": laptop.dir.display().to_string(),
                "cluster_at_rest_mib": { "flotilla": baseline / MIB, "plain_ray": plain_baseline / MIB },
                "owner_mib": owner_mib,
                "tasks": CPUS,
                "task_mib": args.task_mib,
                "reps": args.reps,
                "flotilla_policy": "defaults (min_free_memory_fraction 0.15), owner_load_threshold 1.0",
                "plain_ray": "ray start --head --num-cpus=0 + ray start --num-cpus=2 --block, in the laptop",
            },
            "goal": { "owner_ratio_vs_idle_max": GOAL_OWNER_RATIO, "owner_processes_killed": 0, "tasks_lost": 0 },
            "idle": { "samples_s": idle_all, "median_s": round(idle_median, 4) },
            "flotilla": flotilla,
            "plain_ray": plain,
            "meets_goal": flotilla["meets_goal"],
        });
        let text = serde_json::to_string_pretty(&report)?;
        println!("{text}");
        if !args.no_write {
            let out = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("results")
                .join(format!("memory-{}.json", today()));
            std::fs::write(&out, format!("{text}\n"))?;
        }
        log(format!(
            "idle {:.3} s; Flotilla {} x idle, {} owner killed, {} tasks lost; plain Ray {} x idle, {} owner killed, {} tasks lost",
            idle_median,
            report["flotilla"]["owner_ratio_vs_idle"],
            report["flotilla"]["owner_processes_killed"],
            report["flotilla"]["tasks_lost"],
            report["plain_ray"]["owner_ratio_vs_idle"],
            report["plain_ray"]["owner_processes_killed"],
            report["plain_ray"]["tasks_lost"],
        ));
        Ok(())
    }
}
