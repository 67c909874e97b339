//! What Flotilla's benchmarks share: statistics, waiting, the processes of a tree and their
//! CPU time and memory, the machine's description, the date.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// A benchmark binary's `main`: parse the arguments (a usage error exits 2), run, and exit 1
/// with the error's chain when the run fails.
pub fn main<A>(
    name: &str,
    parse: impl FnOnce() -> std::result::Result<A, String>,
    run: impl FnOnce(&A) -> Result<()>,
) {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("{name}: error: {e:#}");
        std::process::exit(1);
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(t.elapsed())
}

/// Today's UTC date, `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    flotilla_host::clock::format_utc(secs)[..10].to_string()
}

/// The `flotilla` binary as the benchmarks run it: in a home of its own, with the shared
/// runtime data directory, a head of its own.
#[cfg(target_os = "linux")]
pub mod cli {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use anyhow::Result;

    use crate::proc::{kill_marked, signal, wait_child};

    /// The `flotilla` binary: `given` (the benchmark's `--flotilla`), else the one beside the
    /// benchmark; an error says how to build it when it is not there.
    pub fn flotilla_binary(given: Option<&Path>) -> Result<std::path::PathBuf> {
        let bin = match given {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()?.with_file_name("flotilla"),
        };
        anyhow::ensure!(
            bin.is_file(),
            "no flotilla binary at {}; build it (cargo build --release -p flotilla) or pass \
             --flotilla PATH",
            bin.display()
        );
        Ok(bin)
    }

    /// Refuses to run without root, which `what` needs (network namespaces, cgroups).
    pub fn need_root(what: &str) -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        anyhow::ensure!(
            unsafe { libc::geteuid() } == 0,
            "needs root: {what} (run it as root, as CI does)"
        );
        Ok(())
    }

    /// `bin` with `FLOTILLA_HOME` at `home` and the runtimes of the machine's data directory.
    pub fn flotilla(bin: &Path, home: &Path) -> Command {
        let mut c = Command::new(bin);
        c.env("FLOTILLA_HOME", home)
            .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
            .stdin(Stdio::null());
        c
    }

    /// `flotilla up --no-worker` in a new home under /tmp (its name starts with `prefix`), its
    /// ports from `base`: the API on `base`, Ray's GCS, dashboard and client server on
    /// `base + 1..=3`, the control plane on `base + 4`, the head node's ports from `base + 100`.
    /// Its standard error goes to `up.log` in the home. The caller waits for it its own way.
    pub fn start_head(bin: &Path, base: u16, prefix: &str) -> Result<(tempfile::TempDir, Child)> {
        let home = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?;
        let log = std::fs::File::create(home.path().join("up.log"))?;
        let ports = [
            ("--api-port", base),
            ("--ray-port", base + 1),
            ("--ray-dashboard-port", base + 2),
            ("--ray-client-port", base + 3),
            ("--control-port", base + 4),
            ("--head-node-ports", base + 100),
        ];
        let mut c = flotilla(bin, home.path());
        c.args(["up", "--no-worker", "--object-store-mb", "100"]);
        for (k, v) in ports {
            c.arg(k).arg(v.to_string());
        }
        let child = c.stdout(Stdio::null()).stderr(log).spawn()?;
        Ok((home, child))
    }

    /// Stops `child` with SIGTERM (SIGKILL after 45 s) and kills whatever still carries
    /// `home`; returns how many of those there were.
    pub fn stop(child: &mut Child, home: &Path) -> usize {
        signal(child, libc::SIGTERM);
        if !wait_child(child, Duration::from_secs(45)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_marked(&format!("FLOTILLA_HOME={}", home.display()))
    }
}

/// Processes, their CPU time and memory, and the machine: Linux `/proc`.
#[cfg(target_os = "linux")]
pub mod proc {
    use std::process::Child;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    /// Waits for `child` up to `limit`; false if it is still running.
    pub fn wait_child(child: &mut Child, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn signal(child: &Child, sig: i32) {
        // SAFETY: a plain kill(2) of our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
    }

    pub fn pids() -> Vec<u32> {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Processes whose environment has a variable starting with `marker` (`NAME=value-prefix`).
    pub fn marked(marker: &str) -> Vec<u32> {
        pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    env.split(|&b| b == 0)
                        .any(|kv| kv.starts_with(marker.as_bytes()))
                })
            })
            .collect()
    }

    /// User + system CPU time of `pid`, in clock ticks (1/100 s).
    pub fn proc_ticks(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
        Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
    }

    /// SIGTERM, then SIGKILL, every process carrying `marker`, until none is left.
    pub fn kill_marked(marker: &str) -> usize {
        let mut killed = 0;
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            let left = marked(marker);
            if left.is_empty() {
                break;
            }
            killed = left.len();
            for pid in &left {
                // SAFETY: plain kill(2) of a process we started (it carries our marker).
                unsafe { libc::kill(*pid as i32, sig) };
            }
            let t = Instant::now();
            while !marked(marker).is_empty() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        killed
    }

    /// Resident memory of `pid` (`VmRSS`), in KiB.
    pub fn rss_kb(pid: u32) -> Option<u64> {
        status_kb(pid, "VmRSS:")
    }

    /// Proportional memory of `pid` (`Pss` of `smaps_rollup`: shared pages split among their
    /// users), in KiB; what a tree of processes really adds up to.
    pub fn pss_kb(pid: u32) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        field_kb(&s, "Pss:")
    }

    fn status_kb(pid: u32, key: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        field_kb(&s, key)
    }

    fn field_kb(text: &str, key: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
    }

    pub fn loadavg() -> Value {
        let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let v: Vec<f64> = s
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        json!(v)
    }

    pub fn machine() -> Value {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo.lines().find_map(|l| {
            Some(
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)?
                    .trim()
                    .to_string(),
            )
        });
        let mem_kb = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            });
        json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": model,
            "memory_mb": mem_kb.map(|k| k / 1024),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
            "load_average_start": loadavg(),
        })
    }
}
