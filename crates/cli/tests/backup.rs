//! A head backed up while it runs and restored on another machine: head A in one network
//! namespace, a joined worker in another running the sweep; `flotilla head backup` while both
//! run; head A stopped; `flotilla head restore` into a new home in a third namespace (another
//! address), and the head started there. The worker, never joined again, is pointed at the new
//! address (`flotilla worker --head`), which it accepts only because the head there has the
//! fingerprint it pinned, and runs the sweep again. The registry's nodes, the contribution
//! ledger, the fingerprint and the tokens are the old head's. Head A also backs itself up on a
//! schedule meanwhile: the newest two are kept, and they restore too. Apart from the lab, the
//! scheduled backups' passphrase is asked twice on a real pseudo-terminal.
#![cfg(target_os = "linux")]

mod common;
use common::netns::{Lab, home, spawn_logged, wait_for};
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const BASE: u16 = 12000;
const WORKER: &str = "bkw";

/// The registry's nodes as (id, name), in id order.
fn nodes(home: &Path) -> Vec<(i64, String)> {
    let conn = open(home);
    let mut stmt = conn
        .prepare("SELECT id, name FROM nodes ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The contribution ledger: (node id, seq) -> CPU-seconds.
fn ledger(home: &Path) -> BTreeMap<(i64, i64), f64> {
    let conn = open(home);
    let mut stmt = conn
        .prepare("SELECT node_id, seq, cpu_seconds FROM contributions")
        .unwrap();
    stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn open(home: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        home.join("state/registry.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn head_json(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("state/head.json")).unwrap()).unwrap()
}

fn connected(status: &serde_json::Value, name: &str) -> bool {
    status["agents"].as_array().is_some_and(|a| {
        a.iter()
            .any(|a| a["name"] == name && a["connected"] == true)
    })
}

fn sweep(lab: &Lab, host: &str, head: &Path, evals: u64) {
    let out = lab
        .flotilla(host, head)
        .args(["demo", "--verify", "--json", "--evals", &evals.to_string()])
        .output()
        .unwrap();
    check_sweep(&out, evals);
}

fn up(lab: &Lab, host: &str, home: &Path) -> std::process::Child {
    let mut up = lab.flotilla(host, home);
    up.arg("up")
        .args(port_args(BASE))
        .args(["--no-worker", "--object-store-mb", "100"]);
    spawn_logged(up, home, "up")
}

/// [`wait_for`], with what the logs `logs` hold in the failure's message.
fn wait_showing(
    what: &str,
    within: Duration,
    logs: &[&Path],
    mut ok: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > within {
            let shown: String = logs
                .iter()
                .map(|p| format!("\n--- the end of {}:\n{}", p.display(), tail(p, 60)))
                .collect();
            panic!("timed out after {within:?} waiting for {what}{shown}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    start.elapsed()
}

fn stop(child: &mut std::process::Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

#[test]
fn a_running_head_backed_up_and_restored_elsewhere_keeps_its_fleet() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let lab = Lab::new(&["ha", "w", "hb"]);
    let (home_a, home_w, home_b, files) = (home(), home(), home(), home());
    let (a, w, b) = (home_a.path(), home_w.path(), home_b.path());
    let backup = files.path().join("fleet.backup");
    let pass = files.path().join("passphrase");
    std::fs::write(&pass, "a long enough passphrase\n").unwrap();
    let wrong = files.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase at all\n").unwrap();

    // Head A backs itself up every 3 s, keeping 2, with a stored passphrase.
    let scheduled = files.path().join("scheduled");
    std::fs::create_dir_all(a.join("config")).unwrap();
    std::fs::write(
        a.join("config/flotilla.toml"),
        format!(
            "[backup]\nevery = \"3s\"\nkeep = 2\ndir = \"{}\"\n",
            scheduled.display()
        ),
    )
    .unwrap();
    let out = flotilla(a)
        .args(["head", "backup-passphrase", "--passphrase-file"])
        .arg(&pass)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Head A with a joined worker that runs the sweep.
    let mut head_a = up(&lab, "ha", a);
    wait_for("head A", Duration::from_secs(180), || {
        lab.status("ha", a, BASE)
            .is_some_and(|s| s["totals"]["nodes_alive"] == 1)
    });
    let code = invite_code(lab.flotilla("ha", a).args(["invite", "--json"]));
    let node_args = [
        "--cpus",
        "1",
        "--object-store-mb",
        "100",
        "--node-ports",
        &(BASE + 800).to_string(),
        "--report-every",
        "0.5",
        "--record-every",
        "2",
    ]
    .map(String::from);
    let mut join = lab.flotilla("w", w);
    join.args(["join", "-", "--name", WORKER])
        .args(&node_args)
        .stdin(Stdio::piped());
    let mut worker = spawn_logged(join, w, "join");
    give_stdin(&mut worker, code.as_bytes());
    wait_for("the worker on head A", Duration::from_secs(180), || {
        lab.status("ha", a, BASE)
            .is_some_and(|s| s["totals"]["nodes_alive"] == 2 && connected(&s, WORKER))
    });
    let formed = t0.elapsed();
    sweep(&lab, "ha", a, 40);
    // Closed contribution records reach A's ledger (every 2 s).
    wait_for(
        "the worker's contribution in A's ledger",
        Duration::from_secs(60),
        || !ledger(a).is_empty(),
    );

    // Without a passphrase source and without a terminal: a clear refusal, no file.
    let nowhere = files.path().join("none.backup");
    let out = lab
        .flotilla("ha", a)
        .args(["head", "backup"])
        .arg(&nowhere)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--passphrase-file")
            && text(&out).contains("FLOTILLA_BACKUP_PASSPHRASE"),
        "{}",
        text(&out)
    );
    assert!(!nowhere.exists());

    // The backup, while head and worker run.
    let t = Instant::now();
    let out = lab
        .flotilla("ha", a)
        .args(["head", "backup"])
        .arg(&backup)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--json")
        .output()
        .unwrap();
    let backup_took = t.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["head_running"], true, "{made}");
    assert_eq!(made["nodes"], 1, "{made}");
    let fingerprint = head_json(a)["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(made["fingerprint"], fingerprint.as_str(), "{made}");
    assert_eq!(made["settings"], true, "{made}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Nothing secret is readable in the file.
    let bytes = std::fs::read(&backup).unwrap();
    let token_a = secret(a, "flotilla.ray-token");
    assert!(
        !bytes
            .windows(token_a.len())
            .any(|x| x == token_a.as_bytes())
    );
    assert!(!bytes.windows(WORKER.len()).any(|x| x == WORKER.as_bytes()));

    // The scheduled backups: two kept, older ones removed, and each a real backup.
    let list = || {
        let mut v: Vec<_> = std::fs::read_dir(&scheduled)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().into_string().unwrap())
                    .filter(|n| n.starts_with("flotilla-head-") && n.ends_with(".backup"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut first: Option<String> = None;
    wait_for(
        "scheduled backups pruned to 2",
        Duration::from_secs(60),
        || {
            let now = list();
            match &first {
                None => {
                    first = now.first().cloned();
                    false
                }
                Some(f) => now.len() == 2 && !now.contains(f),
            }
        },
    );
    let newest = scheduled.join(list().last().unwrap());
    let scratch = home();
    let out = lab
        .flotilla("hb", scratch.path())
        .args(["head", "restore"])
        .arg(&newest)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fingerprint"], fingerprint.as_str(), "{v}");
    assert_eq!(v["nodes"], 1, "{v}");

    // Head A goes away; its registry as it was left.
    stop(&mut head_a);
    let nodes_a = nodes(a);
    let ledger_a = ledger(a);
    assert_eq!(nodes_a.len(), 1, "{nodes_a:?}");
    assert_eq!(nodes_a[0].1, WORKER);

    // A wrong passphrase restores nothing.
    let out = lab
        .flotilla("hb", b)
        .args(["head", "restore"])
        .arg(&backup)
        .arg("--passphrase-file")
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("wrong passphrase or damaged file"),
        "{}",
        text(&out)
    );
    assert!(!b.join("state/registry.sqlite").exists());

    // Restored into another home on another address.
    let t = Instant::now();
    let out = lab
        .flotilla("hb", b)
        .args(["head", "restore"])
        .arg(&backup)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--json")
        .output()
        .unwrap();
    let restore_took = t.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let restored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored["fingerprint"], fingerprint.as_str(), "{restored}");
    assert_eq!(restored["settings_written"], true, "{restored}");
    // The registry is the one at the backup: the same nodes, and the ledger as it was then
    // (A may have stored more records after it, never other ones).
    assert_eq!(nodes(b), nodes_a);
    let ledger_b = ledger(b);
    assert!(!ledger_b.is_empty());
    for (k, v) in &ledger_b {
        assert_eq!(ledger_a.get(k), Some(v), "record {k:?}");
    }
    for name in ["flotilla.ray-token", "flotilla.admin-token"] {
        assert_eq!(secret(b, name), secret(a, name), "{name}");
    }
    // A second restore over it is refused without --force.
    let out = lab
        .flotilla("hb", b)
        .args(["head", "restore"])
        .arg(&backup)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("--force"), "{}", text(&out));

    let mut head_b = up(&lab, "hb", b);
    let head_b_up = wait_for("head B", Duration::from_secs(180), || {
        lab.status("hb", b, BASE)
            .is_some_and(|s| s["totals"]["nodes_alive"].as_u64() >= Some(1))
    });
    let info_b = head_json(b);
    assert_eq!(info_b["fingerprint"], fingerprint.as_str());
    let control_b = info_b["control_addresses"][0].as_str().unwrap().to_string();
    let addr_b = lab.host("hb").addr.to_string();
    assert!(
        control_b.starts_with(&addr_b),
        "{control_b} is not on {addr_b}"
    );

    // The worker, never joined again, follows the head to its new address.
    let t = Instant::now();
    stop(&mut worker);
    let worker_stopped = t.elapsed();
    let mut follow = lab.flotilla("w", w);
    follow
        .args(["worker", "--head", &control_b])
        .args(&node_args);
    let mut worker = spawn_logged(follow, w, "worker");
    let back = wait_showing(
        "the worker on head B",
        Duration::from_secs(180),
        &[
            &w.join("worker.out"),
            &b.join("up.out"),
            &w.join("logs/ray-bkw.log"),
        ],
        || {
            lab.status("hb", b, BASE)
                .is_some_and(|s| s["totals"]["nodes_alive"] == 2 && connected(&s, WORKER))
        },
    );
    let moved = t.elapsed();
    let enrolled: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("config/enrollment.json")).unwrap()).unwrap();
    assert_eq!(enrolled["head"][0], control_b.as_str(), "{enrolled}");
    assert_eq!(enrolled["node_id"], nodes_a[0].0.to_string(), "{enrolled}");
    let snap = lab.status("hb", b, BASE).unwrap();
    let ip_w = lab.host("w").addr.to_string();
    assert!(
        snap["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == WORKER && n["ip"] == ip_w && n["state"] == "ALIVE"),
        "{snap}"
    );
    sweep(&lab, "hb", b, 40);
    // The ledger goes on from where it was: the old records, and new ones of the same node.
    wait_for("new records in B's ledger", Duration::from_secs(60), || {
        ledger(b).len() > ledger_b.len()
    });
    let ledger_now = ledger(b);
    for (k, v) in &ledger_b {
        assert_eq!(ledger_now.get(k), Some(v), "record {k:?}");
    }
    assert_eq!(
        nodes(b),
        nodes_a,
        "no node was added: the worker did not join again"
    );

    // An address with no head there changes nothing.
    let before = std::fs::read(w.join("config/enrollment.json")).unwrap();
    let out = lab
        .flotilla("w", w)
        .args([
            "worker",
            "--head",
            &format!("{}:{}", lab.host("ha").addr, BASE + 4),
        ])
        .args(&node_args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot reach the head") && text(&out).contains("nothing was changed"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(w.join("config/enrollment.json")).unwrap(),
        before
    );

    eprintln!(
        "figures: cluster formed in {formed:?}; backup of the running head {backup_took:?} \
         ({} KiB); restore {restore_took:?}; restored head up in {head_b_up:?}; the old worker \
         stopped in {worker_stopped:?}, then back in Ray and in session on the new head in \
         {back:?} ({moved:?} from its stop); in all {:?}",
        bytes.len().div_ceil(1024),
        t0.elapsed()
    );

    // The passphrase is in no argv, environment of Flotilla's, log or config file.
    for home in [a, b, w] {
        assert_no_leak(home, "a long enough passphrase");
    }
    stop(&mut worker);
    stop(&mut head_b);
    for home in [a, w, b] {
        assert!(wait_none_left(home, Duration::from_secs(30)).is_empty());
    }
}

/// A secret of `home`'s store, through the real command.
fn secret(home: &Path, name: &str) -> String {
    let out = flotilla(home)
        .args(["secret", "get", name, "--reveal"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `flotilla head backup-passphrase` on a terminal (a pseudo-terminal from util-linux's
/// `script`), `typed` being what the person types.
fn passphrase_on_terminal(home: &Path, typed: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command"])
        .arg(format!("{BIN} head backup-passphrase"))
        .arg("/dev/null")
        .env("FLOTILLA_HOME", home)
        .env_remove("FLOTILLA_BACKUP_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) is needed to give the command a terminal");
    let mut stdin = child.stdin.take().unwrap();
    // Typed a little apart, as a person would; a line that comes before its prompt waits in
    // the terminal (rpassword changes the terminal's mode without discarding input).
    for line in typed.lines() {
        std::thread::sleep(Duration::from_millis(700));
        stdin.write_all(format!("{line}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(Duration::from_millis(700));
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn the_scheduled_backups_passphrase_is_asked_twice_on_a_terminal_and_kept_in_the_store() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/flotilla.toml"),
        "[secrets]\nbackend = \"file\"\n",
    )
    .unwrap();
    let listed = || {
        let out = flotilla(home.path())
            .args(["secret", "list", "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("flotilla.backup-passphrase")
    };
    let out = passphrase_on_terminal(home.path(), "first passphrase\nsecond passphrase\n");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("the two passphrases differ"),
        "{}",
        text(&out)
    );
    let out = passphrase_on_terminal(home.path(), "short\nshort\n");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("at least 8 characters"),
        "{}",
        text(&out)
    );
    assert!(!listed());
    let out = passphrase_on_terminal(home.path(), "the same passphrase\nthe same passphrase\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("The backup passphrase is stored"),
        "{}",
        text(&out)
    );
    assert!(listed());
    let shown = flotilla(home.path())
        .args(["secret", "get", "flotilla.backup-passphrase", "--reveal"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim(),
        "the same passphrase"
    );
}
