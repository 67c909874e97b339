//! Services and uninstalling, with the real binary. systemd cannot run as PID 1 here, so the
//! units are checked with `systemd-analyze verify`, and the head unit's `ExecStart` is started
//! directly as the unit's user (`flotilla`, created as `--system` would) with the unit's
//! environment, except that `FLOTILLA_HOME` is a temporary directory instead of
//! `/var/lib/flotilla` and test ports are appended, to leave this machine as it was.
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BASE: u16 = 14000;

fn dry_run(home: &Path, scope: &str, role: &str) -> serde_json::Value {
    let out = flotilla(home)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .args(["service", "install", scope, role, "--dry-run", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verify(unit: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze is needed: apt-get install systemd");
    let err = String::from_utf8_lossy(&out.stderr);
    // Complaints about this test machine's own units are not ours.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains(name)).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify {name}: {}\n{unit}",
        err.trim()
    );
}

fn ensure_user() {
    let exists = Command::new("id")
        .arg("flotilla")
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--home-dir",
                "/var/lib/flotilla",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg("flotilla")
            .status()
            .unwrap();
        assert!(st.success(), "useradd flotilla");
    }
}

#[test]
fn the_units_pass_systemd_analyze_and_the_dry_run_says_what_it_would_do() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "run the tests as root (CI does): the system unit's user is created"
    );
    ensure_user();
    let home = tempfile::tempdir().unwrap();
    let user = dry_run(home.path(), "--user", "--worker");
    let path = user["path"].as_str().unwrap();
    assert!(
        path.ends_with(".config/systemd/user/flotilla-worker.service"),
        "{path}"
    );
    assert_eq!(
        user["commands"][0],
        serde_json::json!(["systemctl", "--user", "daemon-reload"])
    );
    assert_eq!(
        user["commands"][1],
        serde_json::json!([
            "systemctl",
            "--user",
            "enable",
            "--now",
            "flotilla-worker.service"
        ])
    );
    assert!(!Path::new(path).exists(), "a dry run writes nothing");
    verify(
        user["contents"].as_str().unwrap(),
        "flotilla-worker.service",
    );
    for role in ["--worker", "--head"] {
        let system = dry_run(home.path(), "--system", role);
        let unit = system["contents"].as_str().unwrap();
        assert!(
            unit.contains("User=flotilla") && unit.contains("ProtectSystem=strict"),
            "{unit}"
        );
        verify(unit, &format!("flotilla-{}.service", &role[2..]));
    }
}

#[test]
fn the_head_units_command_serves_as_the_units_user() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "run the tests as root (CI does)"
    );
    ensure_user();
    let home = tempfile::Builder::new()
        .prefix("fls")
        .tempdir_in("/tmp")
        .unwrap();
    let unit = dry_run(home.path(), "--system", "--head")["contents"]
        .as_str()
        .unwrap()
        .to_string();
    let line = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in\n{unit}"))
            .to_string()
    };
    let exec: Vec<String> = line("ExecStart=")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(exec[0], BIN);
    assert_eq!(line("User="), "flotilla");
    let env = line("Environment=");
    assert!(env.contains("FLOTILLA_HOME=/var/lib/flotilla"), "{env}");

    // The service's home, owned by its user. Its HOME is there too, as for the real unit (the
    // user's home is /var/lib/flotilla): the first start provisions the runtime into it, as a
    // service does on a fresh server (root's own runtime is not readable by other users).
    let fh = home.path().join("v");
    let data = fh.join("data");
    std::fs::create_dir_all(&fh).unwrap();
    let st = Command::new("chown")
        .args(["-R", "flotilla:flotilla"])
        .arg(home.path())
        .status()
        .unwrap();
    assert!(st.success());

    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=flotilla",
        "--regid=flotilla",
        "--init-groups",
        "--",
    ])
    .args(&exec)
    .args(port_args(BASE))
    .args(["--cpus", "1", "--object-store-mb", "100", "--name", "svc"])
    .env_clear()
    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
    .env("HOME", &fh)
    .envs(env.split_whitespace().filter_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        Some((
            k.to_string(),
            v.replace("/var/lib/flotilla", &fh.to_string_lossy()),
        ))
    }))
    .env("FLOTILLA_DATA_DIR", &data)
    // This machine's TLS settings (a proxy's certificate, say), for the runtime's download.
    .envs(
        ["SSL_CERT_FILE", "SSL_CERT_DIR"]
            .iter()
            .filter_map(|k| Some((*k, std::env::var_os(k)?))),
    )
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(home.path().join("out.log")).unwrap())
    .stderr(std::fs::File::create(home.path().join("err.log")).unwrap());
    let mut child = cmd.spawn().expect("setpriv (util-linux) is needed");
    let served = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", BASE)).is_ok()
            && http_get(BASE, "/healthz").0 == 200
        {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "the unit's command exited ({st}):\n{}",
                std::fs::read_to_string(home.path().join("err.log")).unwrap_or_default()
            );
        }
        assert!(
            served.elapsed() < Duration::from_secs(600),
            "the head did not serve within 600 s:\n{}",
            std::fs::read_to_string(home.path().join("err.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("the unit's command served after {:?}", served.elapsed());
    // It runs as the unit's user, and so does its Ray head.
    let uid = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|u| u.split_whitespace().next().map(String::from))
            })
    };
    let flotilla_uid = String::from_utf8(
        Command::new("id")
            .args(["-u", "flotilla"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let procs = processes_of(&fh);
    assert!(!procs.is_empty());
    for p in &procs {
        if let Some(u) = uid(*p) {
            assert_eq!(u, flotilla_uid, "process {p} runs as uid {u}");
        }
    }
    // A service manager stops it with SIGTERM; everything ends.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(wait_none_left(&fh, Duration::from_secs(60)).is_empty());
}

fn uninstall(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("FLOTILLA_HOME", home.join("fh"))
        .env("FLOTILLA_DATA_DIR", home.join("data"))
        .arg("uninstall")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(d: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            if e.path().is_dir() {
                walk(&e.path(), root, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn uninstall_purge_asks_first_then_leaves_nothing_of_flotilla() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // What an installed machine has: settings, a secret, state, a runtime, logs, a user
    // service and the desktop app's start-at-login entry.
    let fh = h.join("fh");
    std::fs::create_dir_all(fh.join("config")).unwrap();
    std::fs::write(
        fh.join("config/flotilla.toml"),
        "[policy]\nactive_cpus = 1\n",
    )
    .unwrap();
    let mut set = Command::new(BIN)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", h)
        .env("FLOTILLA_HOME", &fh)
        .env("FLOTILLA_DATA_DIR", h.join("data"))
        .args(["secret", "set", "exchange-key", "--from-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    give_stdin(&mut set, b"s3cret\n");
    assert!(set.wait().unwrap().success());
    std::fs::create_dir_all(h.join("data/runtimes/ray-2.60.0-py3.11")).unwrap();
    std::fs::create_dir_all(fh.join("logs")).unwrap();
    std::fs::write(fh.join("logs/ray-w1.log"), "log").unwrap();
    let unit = h.join(".config/systemd/user/flotilla-worker.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Service]\nExecStart=/bin/true\n").unwrap();
    let autostart = h.join(".config/autostart/Flotilla.desktop");
    std::fs::create_dir_all(autostart.parent().unwrap()).unwrap();
    std::fs::write(&autostart, "[Desktop Entry]\n").unwrap();
    let before = tree(h);

    // --purge without a terminal and without --yes refuses and removes nothing.
    let out = uninstall(h, &["--purge"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(tree(h), before, "a refused purge removed something");

    // Without --purge: services, start at login, runtimes and logs go; settings and secrets stay.
    let out = uninstall(h, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!unit.exists() && !autostart.exists(), "{v}");
    assert!(
        !h.join("data/runtimes").exists() && !fh.join("logs").exists(),
        "{v}"
    );
    assert!(fh.join("config/flotilla.toml").exists(), "{v}");

    // --purge --yes: nothing of Flotilla is left (the secret went through its store).
    let out = uninstall(h, &["--purge", "--yes", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "secret exchange-key"),
        "{v}"
    );
    assert!(
        !fh.exists() && !h.join("data").exists(),
        "left: {:?}",
        tree(h)
    );
    let left: Vec<String> = tree(h)
        .into_iter()
        .filter(|p| p.contains("flotilla") || p.contains("Flotilla"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
