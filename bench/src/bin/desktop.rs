//! What the desktop app costs while it sits in the tray: the memory of all its processes (the
//! app and its webview's WebKit processes) with the window closed, and its CPU, with this
//! machine's Ray node reported apart; and the dashboard's download size (gzipped JS + CSS).
//!
//! A real head (`flotilla up --no-worker`) and the real app (`flotilla-desktop --minimized`,
//! joined beforehand as after its first run) on a private Xvfb display and session bus. Prints
//! one JSON object, writes it to `bench/results/desktop-<date>.json` and a summary to stderr.
//! See `bench/README.md`.
#[cfg(target_os = "linux")]
fn main() {
    flotilla_bench::main("desktop", linux::parse_args, linux::run);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("desktop: only implemented on Linux (/proc, Xvfb)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use flotilla_bench::proc::{kill_marked, machine, marked, proc_ticks, pss_kb, rss_kb};
    use flotilla_bench::{median, round, today, wait_for};
    use serde_json::{Value, json};

    const BASE: u16 = 11000;
    const GOAL_MB: f64 = 150.0;
    const GOAL_BUNDLE_KB: f64 = 300.0;

    pub struct Args {
        bin_dir: Option<PathBuf>,
        secs: u64,
        warmup: u64,
        no_write: bool,
    }

    const USAGE: &str = "usage: desktop [--secs N (60)] [--warmup N (60)] [--quick] [--bin-dir DIR] \
                         [--no-write]";

    pub fn parse_args() -> std::result::Result<Args, String> {
        let mut args = Args {
            bin_dir: None,
            secs: 60,
            warmup: 60,
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
                "--secs" => args.secs = positive("--secs", value("--secs")?)?,
                "--warmup" => args.warmup = positive("--warmup", value("--warmup")?)?,
                "--quick" => {
                    args.secs = 10;
                    args.warmup = 15;
                }
                "--bin-dir" => args.bin_dir = Some(value("--bin-dir")?.into()),
                "--no-write" => args.no_write = true,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}; see --help")),
            }
        }
        Ok(args)
    }

    fn log(msg: impl AsRef<str>) {
        eprintln!("desktop: {}", msg.as_ref());
    }

    /// Children started here, killed (with their process groups) at the end.
    struct Procs(Vec<Child>);

    impl Drop for Procs {
        fn drop(&mut self) {
            for c in self.0.iter_mut().rev() {
                // SAFETY: signals to our own children's process groups.
                unsafe { libc::kill(-(c.id() as i32), libc::SIGTERM) };
            }
            std::thread::sleep(Duration::from_secs(3));
            for c in self.0.iter_mut().rev() {
                // SAFETY: as above.
                unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
                let _ = c.wait();
            }
        }
    }

    fn spawn(procs: &mut Procs, mut cmd: Command, log: &Path) -> Result<u32> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        let pid = child.id();
        procs.0.push(child);
        Ok(pid)
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

    fn exe(pid: u32) -> String {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The dashboard's JS and CSS, gzipped (the size script's figure).
    fn bundle_kb(root: &Path) -> Result<f64> {
        let out = Command::new("node")
            .arg(root.join("ui/scripts/bundle-size.mjs"))
            .arg(root.join("ui/dist"))
            .output()
            .context("node is needed to measure the dashboard's size")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "bundle size: 31.3 KB gzipped JS+CSS (...)"
        text.split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unexpected output of bundle-size.mjs: {text}"))
    }

    pub fn run(args: &Args) -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let bin_dir = match &args.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the benchmark's directory")?
                .to_path_buf(),
        };
        let (flotilla, app) = (bin_dir.join("flotilla"), bin_dir.join("flotilla-desktop"));
        for b in [&flotilla, &app] {
            if !b.is_file() {
                bail!(
                    "{} not found: build it (cargo build --release -p flotilla -p flotilla-desktop) \
                     or pass --bin-dir",
                    b.display()
                );
            }
        }
        let data = flotilla_host::Dirs::from_env().data;
        let work = tempfile::Builder::new().prefix("fbd").tempdir_in("/tmp")?;
        let (head_home, app_home) = (work.path().join("head"), work.path().join("app"));
        let mut procs = Procs(Vec::new());

        // A display and a session bus of our own.
        let display = (90..130)
            .find(|n| !Path::new(&format!("/tmp/.X{n}-lock")).exists())
            .context("no free X display in :90..:129")?;
        let display = format!(":{display}");
        let mut x = Command::new("Xvfb");
        x.args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"]);
        spawn(&mut procs, x, &work.path().join("xvfb.log"))?;
        let bus = output({
            let mut c = Command::new("dbus-daemon");
            c.args(["--session", "--fork", "--print-address=1", "--print-pid=1"]);
            c
        })?;
        let mut lines = bus.lines();
        let address = lines
            .next()
            .context("dbus-daemon printed no address")?
            .to_string();
        let bus_pid: i32 = lines.next().context("no pid")?.trim().parse()?;

        let flot = |home: &Path| {
            let mut c = Command::new(&flotilla);
            c.env("FLOTILLA_HOME", home).env("FLOTILLA_DATA_DIR", &data);
            c
        };
        let mut up = flot(&head_home);
        up.args(["up", "--no-worker", "--object-store-mb", "100"]);
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
        std::fs::create_dir_all(&head_home)?;
        spawn(&mut procs, up, &work.path().join("up.log"))?;
        let api = format!("http://127.0.0.1:{BASE}");
        wait_for("the head", Duration::from_secs(180), || {
            let mut c = flot(&head_home);
            c.args(["status", "--json", "--api", &api]);
            output(c).is_ok()
        })?;
        let mut invite = flot(&head_home);
        invite.args(["invite", "--json", "--no-qr"]);
        let code: Value = serde_json::from_str(&output(invite)?)?;
        let mut join = flot(&app_home);
        join.args(["join", "-", "--no-start", "--name", "desk"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut j = join.spawn()?;
        j.stdin
            .take()
            .context("stdin")?
            .write_all(code["code"].as_str().context("no code")?.as_bytes())?;
        if !j.wait()?.success() {
            bail!("joining failed");
        }

        let mut a = Command::new(&app);
        a.arg("--minimized")
            .env("DISPLAY", &display)
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("FLOTILLA_HOME", &app_home)
            .env("FLOTILLA_DATA_DIR", &data)
            .env("FLOTILLA_CPUS", "1")
            .env("FLOTILLA_OBJECT_STORE_MB", "100")
            .env("FLOTILLA_NODE_PORTS", (BASE + 500).to_string());
        let app_pid = spawn(&mut procs, a, &work.path().join("app.log"))?;
        let marker = format!("FLOTILLA_HOME={}", app_home.display());
        wait_for(
            "the app's node in the cluster",
            Duration::from_secs(180),
            || {
                let mut c = flot(&head_home);
                c.args(["status", "--json", "--api", &api]);
                output(c)
                    .ok()
                    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                    .is_some_and(|s| {
                        s["agents"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|a| a["connected"] == true))
                    })
            },
        )?;
        log(format!(
            "app {app_pid} in the tray with its window closed; {} s warm-up, then {} s of samples",
            args.warmup, args.secs
        ));
        std::thread::sleep(Duration::from_secs(args.warmup));

        // The app: its own binary and WebKit's processes; everything else under its home is
        // the Ray node it runs.
        let is_app = |pid: u32| {
            let e = exe(pid);
            e == app.to_string_lossy() || e.contains("WebKit")
        };
        let mut app_pss = Vec::new();
        let mut app_rss = Vec::new();
        let mut ray_pss = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        let ticks = |pids: &[u32]| pids.iter().filter_map(|p| proc_ticks(*p)).sum::<u64>();
        let first: Vec<u32> = marked(&marker).into_iter().filter(|p| is_app(*p)).collect();
        let (t0, c0) = (Instant::now(), ticks(&first));
        while t0.elapsed() < Duration::from_secs(args.secs) {
            let all = marked(&marker);
            let (mine, ray): (Vec<u32>, Vec<u32>) = all.into_iter().partition(|p| is_app(*p));
            for p in &mine {
                names.insert(
                    Path::new(&exe(*p))
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            }
            app_pss.push(mine.iter().filter_map(|p| pss_kb(*p)).sum::<u64>() as f64 / 1024.0);
            app_rss.push(mine.iter().filter_map(|p| rss_kb(*p)).sum::<u64>() as f64 / 1024.0);
            ray_pss.push(ray.iter().filter_map(|p| pss_kb(*p)).sum::<u64>() as f64 / 1024.0);
            std::thread::sleep(Duration::from_secs(1));
        }
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu = (ticks(&first).saturating_sub(c0)) as f64 / hz / t0.elapsed().as_secs_f64();
        drop(procs);
        // SAFETY: the bus daemon started above.
        unsafe { libc::kill(bus_pid, libc::SIGTERM) };
        kill_marked(&marker);

        let pss = median(&app_pss);
        let max = app_pss.iter().copied().fold(0.0, f64::max);
        let bundle = bundle_kb(&root)?;
        let result = json!({
            "benchmark": "desktop",
            "date": today(),
            "machine": machine(),
            "what": "the desktop app in the tray with its window closed (started --minimized as at login, joined, its worker contributing; a closed window is destroyed with its webview): PSS and RSS of all its processes (the app and any WebKit process), sampled every second after a warm-up; this machine's Ray node apart",
            "processes": names,
            "app_pss_mb_median": round(pss, 1),
            "app_pss_mb_max": round(max, 1),
            "app_rss_mb_median": round(median(&app_rss), 1),
            "app_cpu_percent": round(cpu * 100.0, 2),
            "ray_node_pss_mb_median": round(median(&ray_pss), 1),
            "goal_mb": GOAL_MB,
            "meets_goal": max <= GOAL_MB,
            "bundle_kb_gzipped": bundle,
            "bundle_goal_kb": GOAL_BUNDLE_KB,
            "bundle_meets_goal": bundle <= GOAL_BUNDLE_KB,
        });
        let text = serde_json::to_string_pretty(&result)?;
        println!("{text}");
        if !args.no_write {
            let dir = root.join("bench/results");
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("desktop-{}.json", today()));
            std::fs::write(&path, format!("{text}\n"))?;
            log(format!("wrote {}", path.display()));
        }
        log(format!(
            "app with its window closed: {pss:.1} MB PSS median (max {max:.1}; goal {GOAL_MB}), \
             {:.2} % of a core; Ray's node {:.1} MB PSS; dashboard {bundle} KB gzipped (goal {GOAL_BUNDLE_KB})",
            cpu * 100.0,
            median(&ray_pss)
        ));
        Ok(())
    }
}
