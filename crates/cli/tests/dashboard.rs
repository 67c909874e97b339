//! The dashboard as a person uses it: a real one-machine cluster (`flotilla up`), its head
//! serving the built UI, and Debian's chromium driven by `ui/tests/e2e/dashboard.mjs`
//! (playwright-core): the nodes and their badges, signing in with the admin token, pausing
//! and resuming the local worker from the page, the job list with a failed job's reason and a
//! running job stopped from the page, the head restarting under the page, and the page in
//! Spanish. Screenshots go to `$CARGO_TARGET_DIR/artefacts/dashboard/` (printed).
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BASE: u16 = 21000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One HTTP/1.0 request on loopback: status, headers (lower-case names) and body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn admin_token(home: &Path) -> String {
    let out = flotilla(home)
        .args(["secret", "get", "flotilla.admin-token", "--reveal"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.len() >= 16, "an admin token of {} bytes", token.len());
    token
}

/// What the head serves besides the page itself: content types, caching, the app's routes,
/// and the admin endpoints' answers to a wrong or missing token.
fn check_http(port: u16, token: &str) {
    let (status, headers, index) = http(port, "GET", "/", None, "");
    assert_eq!(status, 200, "{index}");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    let script = index
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .unwrap_or_else(|| panic!("no script in {index}"));
    let (status, headers, _) = http(port, "GET", script, None, "");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        header(&headers, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    // A route of the app gets the page; a missing file and an unknown API path do not.
    let (status, _, body) = http(port, "GET", "/admin", None, "");
    assert_eq!((status, body), (200, index.clone()));
    assert_eq!(
        http(port, "GET", "/assets/nothing-1234.js", None, "").0,
        404
    );
    let (status, _, body) = http(port, "GET", "/api/v1/nothing", None, "");
    assert_eq!(status, 404);
    assert!(body.contains("\"code\":\"not_found\""), "{body}");

    // Read-only parts need nothing; admin ones need the token.
    let (status, _, body) = http(port, "GET", "/api/v1/whoami", None, "");
    assert_eq!((status, body.as_str()), (200, r#"{"admin":false}"#));
    let (status, _, body) = http(port, "GET", "/api/v1/whoami", Some(token), "");
    assert_eq!((status, body.as_str()), (200, r#"{"admin":true}"#));
    for (method, path) in [
        ("GET", "/api/v1/whoami"),
        ("POST", "/api/v1/nodes/w1/pause"),
        ("POST", "/api/v1/nodes/w1/resume"),
        ("POST", "/api/v1/invites"),
    ] {
        let (status, headers, body) = http(port, method, path, Some("wrong"), "{}");
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_eq!(header(&headers, "www-authenticate"), "Bearer");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized", "{body}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("wrong admin token")
        );
    }
    let (status, _, body) = http(port, "POST", "/api/v1/invites", None, "{}");
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = http(port, "POST", "/api/v1/nodes/nobody/pause", Some(token), "");
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = http(
        port,
        "POST",
        "/api/v1/nodes/w1/pause",
        Some(token),
        r#"{"mode":"sideways"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"code\":\"bad_request\""), "{body}");
}

#[test]
fn the_dashboard_shows_the_cluster_and_pauses_a_node_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no browser at {chromium}: run tests/run, which installs Debian's chromium"
    );
    let ui = repo().join("ui");
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "ui/node_modules is missing: run tests/run (or `npm ci` in ui/)"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let artefacts = target.join("artefacts/dashboard");
    let _ = std::fs::remove_dir_all(&artefacts);
    std::fs::create_dir_all(&artefacts).unwrap();

    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut up = Up::start(BASE);
    up.wait_status(2);
    let token = admin_token(up.home.path());
    check_http(BASE, &token);

    let size = Command::new("node")
        .arg(ui.join("scripts/bundle-size.mjs"))
        .output()
        .expect("node runs (tests/run installs it)");
    assert!(
        size.status.success(),
        "{}",
        String::from_utf8_lossy(&size.stderr)
    );
    print!("{}", String::from_utf8_lossy(&size.stdout));

    // Two jobs for the page's job list: one whose dependency does not exist (it fails with
    // the installer's message), one that runs until an admin stops it from the page.
    let failed = flotilla(up.home.path())
        .args([
            "submit",
            "--no-wait",
            "--pip",
            "flotilla-no-such-package-4e1c==1.0",
            "--",
        ])
        .args(["python", "-c", "print('never')"])
        .output()
        .unwrap();
    assert!(failed.status.success(), "{}", text(&failed));
    let failed = String::from_utf8_lossy(&failed.stdout).trim().to_string();
    let long = flotilla(up.home.path())
        .args(["submit", "--no-wait", "--", "python", "-c"])
        .arg("import time\nwhile True: time.sleep(1)")
        .output()
        .unwrap();
    assert!(long.status.success(), "{}", text(&long));
    let long = String::from_utf8_lossy(&long.stdout).trim().to_string();

    println!("screenshots: {}", artefacts.display());
    let mut script = Command::new("node")
        .arg(ui.join("tests/e2e/dashboard.mjs"))
        .current_dir(&ui)
        .env("DASHBOARD_URL", format!("http://127.0.0.1:{BASE}"))
        .env("FLOTILLA_ADMIN_TOKEN", &token)
        .env("ARTEFACTS", &artefacts)
        .env("WORKER", "w1")
        .env("JOB_FAILED", &failed)
        .env("JOB_LONG", &long)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (tests/run installs it)");
    let mut to_script = script.stdin.take().unwrap();
    let mut stderr = script.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    for line in BufReader::new(script.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        println!("{line}");
        if line.trim() == "@restart-head" {
            let t0 = std::time::Instant::now();
            up.stop();
            up.restart();
            up.wait_status(2);
            println!("head restarted, both nodes alive, in {:?}", t0.elapsed());
            writeln!(to_script, "ok").unwrap();
        }
    }
    drop(to_script);
    let status = script.wait().unwrap();
    let errors = errors.join().unwrap();
    eprint!("{errors}");
    assert!(
        status.success(),
        "the browser test failed ({status}):\n{errors}"
    );
    for view in [
        "cluster-en",
        "admin-en",
        "admin-paused-en",
        "admin-jobs-en",
        "admin-es",
        "cluster-es",
    ] {
        let shot = artefacts.join(format!("{view}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
            "no screenshot {}",
            shot.display()
        );
    }
    up.stop();
    assert_no_leak(up.home.path(), &token);
}
