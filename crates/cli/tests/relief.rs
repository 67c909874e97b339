//! Relief on the owner's input event itself, not at the next tick: with the politeness loop's
//! tick set to a minute (`FLOTILLA_POLITENESS_TICK_MS`), a key press on a real X server (Xvfb,
//! xdotool; Debian packages `xvfb`, `xdotool`, `libx11-6`, `libxi6`, which `tests/run`
//! installs) must bring the decision "owner active" and the node's OS cap (the cgroup's CPU
//! quota) long before a minute has passed. How long it takes is printed, not judged: the
//! politeness benchmark measures it.
#![cfg(target_os = "linux")]

mod common;
use common::flotilla;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_agent::politeness::{self, Published};
use flotilla_agent::sampler::InputFeed;
use flotilla_host::input::InputWatch;
use flotilla_policy::{Reason, Settings};
use flotilla_testkit::xvfb::{Xvfb, start_xvfb};

const BASE: u16 = 23000;
/// The tick of the loop under test: far longer than any wait here.
const LONG_TICK: Duration = Duration::from_secs(60);
/// How long the tests wait for the reaction: half the tick, so that only the input event can
/// have caused it.
const WITHIN: Duration = Duration::from_secs(30);

/// One display at a time: two tests choosing a free display at once could pick the same one.
static DISPLAYS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn key(display: &str) {
    let status = Command::new("xdotool")
        .args(["key", "shift"])
        .env("DISPLAY", display)
        .status()
        .unwrap_or_else(|e| panic!("cannot run xdotool ({e}): install the xdotool package"));
    assert!(status.success(), "xdotool key: {status}");
}

/// An X server the owner has not touched for `away`.
fn quiet_display(dir: &Path, away: Duration) -> Xvfb {
    let xvfb = start_xvfb(&dir.join("xvfb.log"));
    std::thread::sleep(away);
    xvfb
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

fn settings() -> Settings {
    Settings {
        active_after_input_secs: 2,
        ramp_up_after_secs: 2,
        active_cpus: 1,
        owner_load_threshold: 1.0,
        min_free_memory_fraction: 0.0,
        ..Settings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_event_wakes_the_loop_and_decides_owner_active_without_the_tick() {
    let xvfb = {
        let _one = DISPLAYS.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let xvfb = quiet_display(tmp.path(), Duration::from_secs(3));
        (xvfb, tmp)
    };
    let display = xvfb.0.display.clone();
    let input = Arc::new(InputFeed::default());
    let source = format!("xinput2:{display}");
    let _watch = InputWatch::start(Some(display.clone()), {
        let (input, source) = (input.clone(), source.clone());
        move || input.input(&source)
    })
    .expect("libX11.so.6 and libXi.so.6 are needed");
    let (tx, mut rx) = tokio::sync::watch::channel(None::<Arc<Published>>);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(politeness::run(
        settings(),
        politeness::Inputs {
            sensors: flotilla_host::sensors::Sensors::with_display(display.clone()),
            idle: Default::default(),
            manual: Default::default(),
            policy: Default::default(),
            sleep: Default::default(),
            input,
            tick: LONG_TICK,
        },
        Vec::new,
        None,
        tx,
        stop.clone(),
    ));
    // The first round, at once: the display has been quiet for 3 s.
    rx.changed().await.unwrap();
    let first = rx.borrow_and_update().clone().unwrap();
    assert_ne!(first.decision.reason, Reason::OwnerActive, "{first:?}");
    assert_eq!(
        first.sensors.idle_secs.from,
        format!("x11-screensaver:{display}")
    );

    let t = Instant::now();
    key(&display);
    let next = tokio::time::timeout(WITHIN, rx.changed()).await;
    assert!(next.is_ok(), "no round within {WITHIN:?} of the key press");
    let p = rx.borrow_and_update().clone().unwrap();
    eprintln!("decided in {:?} after the key press", t.elapsed());
    assert_eq!(p.decision.reason, Reason::OwnerActive, "{p:?}");
    assert_eq!(p.decision.target_cpus, 1);
    let idle = p.sensors.idle_secs.value.unwrap();
    assert!(idle < 1.0, "{p:?}");
    stop.cancel();
}

/// The directories of node `name`'s cgroup (`flotilla-<name>-<agent pid>`) in every hierarchy,
/// under this process's own cgroups (the agent, a child, starts in the same ones).
fn node_cgroups(name: &str) -> Vec<PathBuf> {
    let own: Vec<String> = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Some(l.splitn(3, ':').nth(2)?.trim_start_matches('/').to_owned()))
        .collect();
    let mut mounts = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
        mounts.extend(d.flatten().map(|e| e.path()));
    }
    let prefix = format!("flotilla-{name}-");
    let mut found = Vec::new();
    for m in &mounts {
        for o in &own {
            let Ok(entries) = std::fs::read_dir(m.join(o)) else {
                continue;
            };
            for e in entries.flatten() {
                let named = e
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix));
                if named && e.path().is_dir() && !found.contains(&e.path()) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

/// The node's CPU cap in cores from its cgroup's quota (v1 `cpu.cfs_quota_us` over
/// `cpu.cfs_period_us`, v2 `cpu.max`); `None` when unlimited.
fn quota_cores(dir: &Path) -> Option<f64> {
    if let Ok(max) = std::fs::read_to_string(dir.join("cpu.max")) {
        let mut f = max.split_whitespace();
        let quota: f64 = f.next()?.parse().ok()?;
        let period: f64 = f.next()?.parse().ok()?;
        return Some(quota / period);
    }
    let read = |f: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let quota = read("cpu.cfs_quota_us")?;
    (quota > 0.0).then(|| quota / read("cpu.cfs_period_us").unwrap_or(100_000.0))
}

fn decision(home: &Path) -> serde_json::Value {
    let sock = flotilla_host::Dirs::under(home).agent_socket();
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(b"{\"get\": \"decision\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: plain kill of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

#[test]
fn a_key_press_caps_the_nodes_cgroup_without_waiting_for_the_tick() {
    let _cluster = common::CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let one = DISPLAYS.lock().unwrap_or_else(|e| e.into_inner());
    let home = tempfile::Builder::new()
        .prefix("fl")
        .tempdir_in("/tmp")
        .unwrap();
    let xvfb = start_xvfb(&home.path().join("xvfb.log"));
    drop(one);
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/flotilla.toml"),
        "[policy]\nactive_after_input_secs = 2\nramp_up_after_secs = 2\nactive_cpus = 1\n\
         owner_load_threshold = 1.0\nmin_free_memory_fraction = 0\n",
    )
    .unwrap();
    let log = std::fs::File::create(home.path().join("up.log")).unwrap();
    let _up = Up(flotilla(home.path())
        .args([
            "up",
            "--cpus",
            "2",
            "--object-store-mb",
            "100",
            "--name",
            "r1",
        ])
        .args(common::port_args(BASE))
        .env("DISPLAY", &xvfb.display)
        .env(politeness::TICK_ENV, LONG_TICK.as_millis().to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap());
    let up_log = || std::fs::read_to_string(home.path().join("up.log")).unwrap_or_default();
    // The node starts with the display long quiet: the first round finds the owner away.
    let sock = flotilla_host::Dirs::under(home.path()).agent_socket();
    let mut waited = Duration::ZERO;
    while !(sock.exists() && decision(home.path())["decision"]["enforcement"]["state"] == "full") {
        assert!(
            waited < Duration::from_secs(180),
            "no node at full: {}",
            up_log()
        );
        std::thread::sleep(Duration::from_millis(500));
        waited += Duration::from_millis(500);
    }
    let cgroups = node_cgroups("r1");
    let cpu = cgroups
        .iter()
        .find(|d| d.join("cpu.cfs_quota_us").is_file() || d.join("cpu.max").is_file())
        .unwrap_or_else(|| panic!("no CPU cgroup of the node among {cgroups:?}"))
        .clone();
    assert_eq!(quota_cores(&cpu), None, "no cap while the owner is away");

    key(&xvfb.display);
    let took = wait_for("the node's cgroup capped", WITHIN, || {
        quota_cores(&cpu).is_some()
    });
    eprintln!("the cgroup's quota was written {took:?} after the key press");
    let cap = quota_cores(&cpu).unwrap();
    assert!((cap - 1.0).abs() < 1e-6, "capped at {cap} cores");
    let d = decision(home.path());
    let d = &d["decision"];
    assert_eq!(d["enforcement"]["state"], "cap", "{d}");
    assert_eq!(d["decision"]["reason"]["code"], "owner_active", "{d}");
    assert!(
        d["sensors"]["idle_secs"]["value"].as_f64().unwrap() < 1.0,
        "{d}"
    );
}
