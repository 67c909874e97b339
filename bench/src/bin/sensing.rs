//! What sensing costs the machine's owner: the CPU time of one sensing tick (every reading of
//! [`Sensors`]) and of sensing every 250 ms for a while, as a percentage of one core.
//!
//! Prints one JSON object to stdout and a short summary to stderr. See `bench/README.md`.

use std::time::{Duration, Instant};

use flotilla_host::sensors::Sensors;
use serde_json::json;

/// The agent's sensing period.
const INTERVAL: Duration = Duration::from_millis(250);
/// How often `running_apps` is read when it is not read every tick.
const APPS_INTERVAL: Duration = Duration::from_secs(5);
/// Sensing may cost the owner at most this share of one core.
const GOAL_CPU_PERCENT: f64 = 1.0;

struct Args {
    duration: Duration,
    ticks: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(20),
        ticks: 2_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "--duration-secs" => args.duration = Duration::from_secs(value("--duration-secs")?),
            "--ticks" => {
                args.ticks = u32::try_from(value("--ticks")?).map_err(|_| "--ticks: too large")?
            }
            "-h" | "--help" => {
                return Err("usage: sensing [--duration-secs N (20)] [--ticks N (2000)]".into());
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    if args.ticks == 0 || args.duration.is_zero() {
        return Err("--ticks and --duration-secs must be positive".into());
    }
    Ok(args)
}

/// This process's CPU time so far, user plus system, all threads.
#[cfg(unix)]
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_SELF needs nothing else.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(not(unix))]
fn cpu_time() -> Duration {
    // getrusage is Unix-only; GetProcessTimes is the Windows equivalent, not written yet.
    eprintln!("sensing: measuring CPU time is only implemented on Unix");
    std::process::exit(2);
}

/// CPU and wall time of `n` runs of `f`, per run, in microseconds.
fn measure(n: u32, mut f: impl FnMut()) -> (f64, f64) {
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    for _ in 0..n {
        f();
    }
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    (per(cpu), per(wall))
}

/// One sensing tick: every reading, each kept alive only as long as the agent would keep it.
fn tick(sensors: &Sensors, pids: &[u32], with_apps: bool) {
    std::hint::black_box(sensors.power());
    std::hint::black_box(sensors.memory());
    std::hint::black_box(sensors.cpu_times());
    std::hint::black_box(sensors.processes_cpu(pids.iter().copied()));
    if with_apps {
        std::hint::black_box(sensors.running_apps());
    }
    std::hint::black_box(sensors.idle());
}

/// Senses every [`INTERVAL`] for `duration`, reading `running_apps` every `apps_every`; returns
/// the CPU used as a percentage of one core over the wall time.
fn live(sensors: &Sensors, pids: &[u32], duration: Duration, apps_every: Duration) -> f64 {
    let (cpu0, start) = (cpu_time(), Instant::now());
    let mut next = start;
    let mut last_apps: Option<Instant> = None;
    while next.duration_since(start) < duration {
        let now = Instant::now();
        let with_apps = last_apps.is_none_or(|t| now.duration_since(t) >= apps_every);
        if with_apps {
            last_apps = Some(now);
        }
        tick(sensors, pids, with_apps);
        next += INTERVAL;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let (cpu, wall) = (cpu_time() - cpu0, start.elapsed());
    cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
}

use flotilla_bench::round;

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sensing: {e}");
            std::process::exit(2);
        }
    };
    let sensors = Sensors::new();
    let pids = [std::process::id()];
    let n = args.ticks;

    // One warm-up tick: the first idle reading may open an X connection, which the agent pays
    // once, not per tick.
    tick(&sensors, &pids, true);

    let readings: [(&str, &dyn Fn()); 6] = [
        ("power", &|| drop(std::hint::black_box(sensors.power()))),
        ("memory", &|| drop(std::hint::black_box(sensors.memory()))),
        ("cpu_times", &|| {
            drop(std::hint::black_box(sensors.cpu_times()))
        }),
        ("processes_cpu", &|| {
            drop(std::hint::black_box(sensors.processes_cpu(pids)))
        }),
        ("running_apps", &|| {
            drop(std::hint::black_box(sensors.running_apps()))
        }),
        ("idle", &|| drop(std::hint::black_box(sensors.idle()))),
    ];
    let mut per_reading_cpu = serde_json::Map::new();
    let mut per_reading_wall = serde_json::Map::new();
    let mut apps_cpu_us = 0.0;
    for (name, read) in readings {
        let (cpu, wall) = measure(n, read);
        if name == "running_apps" {
            apps_cpu_us = cpu;
        }
        per_reading_cpu.insert(name.into(), json!(round(cpu, 1)));
        per_reading_wall.insert(name.into(), json!(round(wall, 1)));
    }

    let (tick_cpu_us, tick_wall_us) = measure(n, || tick(&sensors, &pids, true));
    let (tick_no_apps_cpu_us, _) = measure(n, || tick(&sensors, &pids, false));
    let ticks_per_apps = APPS_INTERVAL.as_secs_f64() / INTERVAL.as_secs_f64();
    let tick_apps_5s_cpu_us = tick_no_apps_cpu_us + apps_cpu_us / ticks_per_apps;
    let percent_at_interval = |us: f64| us / (INTERVAL.as_secs_f64() * 1e6) * 100.0;

    // running_apps reads one file per process: on a busy machine it dominates the tick.
    let apps_dominate = apps_cpu_us > tick_cpu_us / 2.0;
    let live_every_tick = live(&sensors, &pids, args.duration, INTERVAL);
    let live_apps_5s = live(&sensors, &pids, args.duration, APPS_INTERVAL);
    let (recommended, recommended_percent) = if apps_dominate {
        ("running_apps every 5 s", live_apps_5s)
    } else {
        ("running_apps every tick", live_every_tick)
    };
    let meets_goal = recommended_percent <= GOAL_CPU_PERCENT;
    let apps = sensors.running_apps();
    let idle = sensors.idle();

    let out = json!({
        "ticks_measured": n,
        "interval_ms": INTERVAL.as_millis() as u64,
        "apps_interval_ms": APPS_INTERVAL.as_millis() as u64,
        "duration_secs": args.duration.as_secs(),
        "per_reading_cpu_us": per_reading_cpu,
        "per_reading_wall_us": per_reading_wall,
        "per_tick_cpu_us": round(tick_cpu_us, 1),
        "per_tick_wall_us": round(tick_wall_us, 1),
        "per_tick_cpu_us_apps_every_5s": round(tick_apps_5s_cpu_us, 1),
        "estimated_cpu_percent_every_tick": round(percent_at_interval(tick_cpu_us), 3),
        "estimated_cpu_percent_apps_every_5s": round(percent_at_interval(tick_apps_5s_cpu_us), 3),
        "live_cpu_percent_every_tick": round(live_every_tick, 3),
        "live_cpu_percent_apps_every_5s": round(live_apps_5s, 3),
        "running_apps_dominates_tick": apps_dominate,
        "recommended": recommended,
        "goal_cpu_percent": GOAL_CPU_PERCENT,
        "meets_goal": meets_goal,
        "processes_seen": apps.names.as_ref().map(Vec::len),
        "idle_from": idle.from,
    });
    println!("{out}");

    eprintln!(
        "sensing: one tick {tick_cpu_us:.0} µs CPU ({tick_wall_us:.0} µs wall), running_apps \
         {apps_cpu_us:.0} µs of it; every 250 ms for {}s: {live_every_tick:.3}% of a core, \
         {live_apps_5s:.3}% with running_apps every 5 s. Use {recommended}: \
         {recommended_percent:.3}% {} the {GOAL_CPU_PERCENT}% goal.",
        args.duration.as_secs(),
        if meets_goal { "meets" } else { "MISSES" },
    );
}
