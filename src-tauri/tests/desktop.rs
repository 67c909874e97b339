//! The desktop app for real: its window under Xvfb driven through tauri-driver and WebKit's
//! WebDriver (first-run screen, join a local head with a code, the node list; host a cluster
//! from the first run, with its join code and QR code, then the settings, secrets and log
//! views, and hosting again after a restart), and its tray in trayer with dunst as the
//! notification daemon (the icon appears; "Pause for 1 hour" from the menu pauses the agent,
//! as `flotilla status --json` shows, and a notification is shown).
//!
//! Each test runs its own X server and session bus, and its own head (`flotilla up
//! --no-worker`, or the app itself when it hosts), with the Ray runtime shared through
//! `FLOTILLA_DATA_DIR`. Needs (tests/run installs them): Xvfb,
//! dbus-daemon, webkit2gtk-driver, trayer, dunst, xdotool, x11-utils, and tauri-driver
//! (`cargo install tauri-driver`, found in `FLOTILLA_TAURI_DRIVER`, on the PATH or in
//! `~/.cache/flotilla/tools/bin`). The `flotilla` binary must be built beside this one
//! (`cargo build -p flotilla`; `cargo test --workspace` builds it).
#![cfg(target_os = "linux")]

mod support;
use flotilla_testkit::xvfb;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::flotilla_bin;

const APP: &str = env!("CARGO_BIN_EXE_flotilla-desktop");

/// One X session and one cluster at a time.
static ONE: Mutex<()> = Mutex::new(());

fn data_dir() -> PathBuf {
    flotilla_host::Dirs::from_env().data
}

/// The full path of the program `name` (tauri-driver wants one), or a failure saying what to
/// install.
fn tool(name: &str, package: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let path = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    path.filter(|p| !p.is_empty())
        .unwrap_or_else(|| panic!("{name} is not installed: apt-get install {package}"))
}

/// A child killed (process group and all) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signals to our own child's process group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command, log: &Path) -> Proc {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0);
    Proc(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program())),
    )
}

/// An X display and a private session bus, with everything the tests start on them.
struct Session {
    dir: tempfile::TempDir,
    xvfb: xvfb::Xvfb,
    bus: String,
    bus_pid: i32,
}

impl Drop for Session {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for e in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                eprintln!("--- {}:\n{}", e.path().display(), tail(&e.path()));
            }
        }
        // SAFETY: the bus daemon this session started.
        unsafe { libc::kill(self.bus_pid, libc::SIGTERM) };
    }
}

impl Session {
    fn start() -> Session {
        let dir = tempfile::Builder::new()
            .prefix("fld")
            .tempdir_in("/tmp")
            .unwrap();
        let xvfb = xvfb::start_xvfb(&dir.path().join("xvfb.log"));
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        // What the bus starts (the keyring) lives in the session's home too.
        let mut bus = Command::new(tool("dbus-daemon", "dbus"));
        private_home(&mut bus, &dir.path().join("home"));
        let out = bus
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "dbus-daemon: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let bus = lines.next().unwrap().trim().to_string();
        let bus_pid = lines.next().unwrap().trim().parse().unwrap();
        Session {
            dir,
            xvfb,
            bus,
            bus_pid,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The session's own home: what the app, WebKit and the start-at-login entry write there
    /// stays out of the user's.
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `program` on this display and bus, in the session's home.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        private_home(&mut c, &self.home());
        c.env("DISPLAY", &self.xvfb.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("FLOTILLA_DATA_DIR", data_dir());
        c
    }
}

/// A head on this machine (`flotilla up --no-worker`) on ports from `base`.
struct Head {
    home: tempfile::TempDir,
    _up: Proc,
    base: u16,
}

impl Head {
    fn start(base: u16) -> Head {
        let home = tempfile::Builder::new()
            .prefix("fldh")
            .tempdir_in("/tmp")
            .unwrap();
        let mut up = Command::new(flotilla_bin());
        up.env("FLOTILLA_HOME", home.path())
            .env("FLOTILLA_DATA_DIR", data_dir())
            .args(["up", "--no-worker", "--object-store-mb", "100"]);
        for (flag, port) in [
            ("--api-port", base),
            ("--ray-port", base + 1),
            ("--ray-dashboard-port", base + 2),
            ("--ray-client-port", base + 3),
            ("--control-port", base + 4),
            ("--head-node-ports", base + 100),
        ] {
            up.arg(flag).arg(port.to_string());
        }
        let up = spawn(up, &home.path().join("up.log"));
        let head = Head {
            home,
            _up: up,
            base,
        };
        wait_for("the head", Duration::from_secs(180), || {
            head.flotilla(&["status", "--json"])
                .is_some_and(|s| s["totals"]["nodes_alive"] == 1)
        });
        head
    }

    fn flotilla(&self, args: &[&str]) -> Option<Value> {
        let out = Command::new(flotilla_bin())
            .env("FLOTILLA_HOME", self.home.path())
            .env("FLOTILLA_DATA_DIR", data_dir())
            .args(args)
            .args(["--api", &format!("http://127.0.0.1:{}", self.base)])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn invite(&self) -> String {
        let out = Command::new(flotilla_bin())
            .env("FLOTILLA_HOME", self.home.path())
            .env("FLOTILLA_DATA_DIR", data_dir())
            .args(["invite", "--json", "--no-qr"])
            .output()
            .unwrap();
        assert!(out.status.success(), "invite: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["code"].as_str().unwrap().to_string()
    }
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    start.elapsed()
}

/// `HOME` and the XDG directories under `home`. (Tauri's start at login writes
/// `$HOME/.config/autostart` whatever `XDG_CONFIG_HOME` says.)
fn private_home(c: &mut Command, home: &Path) {
    c.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_CACHE_HOME", home.join(".cache"));
}

/// The app's environment: its own Flotilla home, a small node on ports from `node_ports`.
fn app_env(c: &mut Command, home: &Path, node_ports: u16) {
    c.env("FLOTILLA_HOME", home)
        .env("FLOTILLA_CPUS", "1")
        .env("FLOTILLA_OBJECT_STORE_MB", "100")
        .env("FLOTILLA_NODE_PORTS", node_ports.to_string())
        .env("FLOTILLA_LOG", "info");
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The processes that carry `home` in their environment (the app's agent and Ray node).
fn processes_of(home: &Path) -> Vec<u32> {
    let marker = format!("FLOTILLA_HOME={}", home.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect()
}

/// A minimal WebDriver client (HTTP/1.1 with JSON bodies) for tauri-driver.
struct WebDriver {
    port: u16,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(180)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (_, json) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text}")))?;
    serde_json::from_str(json).map_err(std::io::Error::other)
}

impl WebDriver {
    fn new_session(port: u16) -> WebDriver {
        wait_for("tauri-driver", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "wry",
            "tauri:options": {"application": APP},
        }}});
        // tauri-driver listens before the native driver behind it does: retry for a while.
        let mut last = String::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            match http(port, "POST", "/session", Some(&caps)) {
                Ok(v) => match v["value"]["sessionId"].as_str() {
                    Some(id) => {
                        return WebDriver {
                            port,
                            session: id.to_string(),
                        };
                    }
                    None => last = v.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no WebDriver session within 60 s: {last}");
    }

    /// One command; a dropped connection (tauri-driver's link to the native driver can drop
    /// while the app starts) is retried for a few seconds.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let started = Instant::now();
        loop {
            match http(self.port, method, &path, body.as_ref()) {
                Ok(v) => return v["value"].clone(),
                Err(e) if started.elapsed() > Duration::from_secs(15) => {
                    panic!("WebDriver {method} {path}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// The element `css` matches, waiting for it to appear.
    fn find(&self, css: &str, within: Duration) -> String {
        let mut last = Value::Null;
        let found = Instant::now();
        while found.elapsed() < within {
            last = self.call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = last[ELEMENT].as_str() {
                return id.to_string();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("{css} did not appear within {within:?}: {last}");
    }

    fn click(&self, css: &str) {
        let el = self.find(css, Duration::from_secs(20));
        self.call("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    /// Replaces the text of the field `css`.
    fn fill(&self, css: &str, text: &str) {
        let el = self.find(css, Duration::from_secs(20));
        self.call("POST", &format!("/element/{el}/clear"), Some(json!({})));
        if !text.is_empty() {
            self.call(
                "POST",
                &format!("/element/{el}/value"),
                Some(json!({"text": text})),
            );
        }
    }

    /// The visible text of the first element `css` matches, or "" when there is none.
    fn text(&self, css: &str) -> String {
        let js = format!(
            "const e = document.querySelector({}); return e ? e.innerText : '';",
            Value::from(css)
        );
        self.script(&js).as_str().unwrap_or("").to_string()
    }

    fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    fn screenshot(&self, to: &Path) {
        use base64::Engine;
        let png = self.call("GET", "/screenshot", None);
        if let Some(b64) = png.as_str()
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64)
        {
            let _ = std::fs::write(to, bytes);
        }
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// Where screenshots go: a test artefact beside the build.
fn artefacts() -> PathBuf {
    let dir = Path::new(APP)
        .parent()
        .unwrap()
        .join("../desktop-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_window_joins_a_local_head_with_a_code_and_lists_the_nodes() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let session = Session::start();
    let head = Head::start(12000);
    let code = head.invite();
    let home = tempfile::Builder::new()
        .prefix("flda")
        .tempdir_in("/tmp")
        .unwrap();
    let driver_port = 12800;
    let _td = start_tauri_driver(&session, driver_port, |c| app_env(c, home.path(), 12500));
    let wd = WebDriver::new_session(driver_port);

    // First run: the window asks to join.
    wd.find("[data-view=first-run]", Duration::from_secs(60));
    wd.screenshot(&artefacts().join("first-run.png"));
    // A malformed code is refused with a clear message and nothing is stored.
    let field = wd.find("[data-field=code]", Duration::from_secs(5));
    wd.call(
        "POST",
        &format!("/element/{field}/value"),
        Some(json!({"text": "flot1-not-a-code"})),
    );
    let join = wd.find("[data-action=join]", Duration::from_secs(5));
    wd.call("POST", &format!("/element/{join}/click"), Some(json!({})));
    let error = wd.find("[data-error]", Duration::from_secs(20));
    let text = wd.call("GET", &format!("/element/{error}/text"), None);
    assert!(
        text.as_str().is_some_and(|t| t.contains("not a join code")),
        "{text}"
    );
    assert!(!home.path().join("state/enrollment.json").exists());

    // The real code joins, and the cluster's nodes are listed with this one contributing.
    wd.call("POST", &format!("/element/{field}/clear"), Some(json!({})));
    wd.call(
        "POST",
        &format!("/element/{field}/value"),
        Some(json!({"text": code})),
    );
    let started = Instant::now();
    wd.call("POST", &format!("/element/{join}/click"), Some(json!({})));
    wd.find("[data-view=this-computer]", Duration::from_secs(120));
    let listed = wait_for(
        "the node list to show this computer contributing",
        Duration::from_secs(180),
        || {
            let table = wd
                .script("const t = document.querySelector('table'); return t ? t.innerText : '';");
            let text = table.as_str().unwrap_or("").to_string();
            text.lines()
                .any(|l| l.contains("Contributing") || l.contains("Throttled"))
        },
    );
    eprintln!(
        "joined and listed {:?} after clicking Join ({listed:?} waiting for the list)",
        started.elapsed()
    );
    wd.screenshot(&artefacts().join("cluster.png"));
    // Joining turned on start at login.
    let entry = session.home().join(".config/autostart/Flotilla.desktop");
    wait_for("the start-at-login entry", Duration::from_secs(10), || {
        entry.is_file()
    });
    let text = std::fs::read_to_string(&entry).unwrap();
    assert!(
        text.contains("flotilla-desktop") && text.contains("--minimized"),
        "{text}"
    );
    // The head agrees: the desktop's node is connected.
    let agents = head.flotilla(&["status", "--json"]).unwrap()["agents"].clone();
    assert!(
        agents
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["connected"] == true)),
        "{agents}"
    );
    // Logging out (SIGTERM) quits the app, and its worker's Ray node stops with it. (Closing
    // the window through WebDriver would end the app too: the driver quits the browser with its
    // last window, so the tray test checks what closing and quitting do.)
    let app = processes_of(home.path()).into_iter().find(|pid| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == Path::new(APP))
    });
    let app = app.expect("the app runs");
    // SAFETY: a signal to the app this test started.
    unsafe { libc::kill(app as i32, libc::SIGTERM) };
    wait_for(
        "the app's processes to end",
        Duration::from_secs(60),
        || processes_of(home.path()).iter().all(is_driver),
    );
    drop(wd);
    drop(session);
    let _ = head;
}

/// tauri-driver on `port`, driving WebKitWebDriver on the next port, for the app as `env` sets
/// it up (the driver starts the app itself, with the driver's environment).
fn start_tauri_driver(session: &Session, port: u16, env: impl FnOnce(&mut Command)) -> Proc {
    let mut td = session.command(find_tauri_driver());
    td.args([
        "--port",
        &port.to_string(),
        "--native-port",
        &(port + 1).to_string(),
        "--native-driver",
    ])
    .arg(tool("WebKitWebDriver", "webkit2gtk-driver"));
    env(&mut td);
    spawn(td, &session.path().join("tauri-driver.log"))
}

fn find_tauri_driver() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOTILLA_TAURI_DRIVER") {
        return p.into();
    }
    let cached = dirs_home().join(".cache/flotilla/tools/bin/tauri-driver");
    if cached.is_file() {
        return cached;
    }
    PathBuf::from(tool(
        "tauri-driver",
        "(cargo install tauri-driver --locked)",
    ))
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// The tray icon's window: its position and size on the screen, once it shows.
fn tray_icon(session: &Session) -> Option<(i32, i32, i32, i32)> {
    let out = session
        .command(tool("xwininfo", "x11-utils"))
        .args(["-root", "-tree"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("tray-icon tray app"))?;
    // `... 32x30+0+0  +1246+1`: size, then the absolute position.
    let mut fields = line.split_whitespace().rev();
    let abs = fields.next()?;
    let geometry = fields.next()?;
    let (size, _) = geometry.split_once('+')?;
    let (w, h) = size.split_once('x')?;
    let mut xy = abs.trim_start_matches('+').split('+');
    Some((
        xy.next()?.parse().ok()?,
        xy.next()?.parse().ok()?,
        w.parse().ok()?,
        h.parse().ok()?,
    ))
}

fn xdotool(session: &Session, args: &[&str]) {
    let status = session
        .command(tool("xdotool", "xdotool"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "xdotool {args:?}: {status}");
}

/// Opens the tray menu and picks an entry with the keys `key` (space-separated), then Return.
fn pick_from_tray_menu(session: &Session, key: &str) {
    let (x, y, w, h) = tray_icon(session).expect("the tray icon");
    xdotool(
        session,
        &[
            "mousemove",
            &(x + w / 2).to_string(),
            &(y + h / 2).to_string(),
            "click",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(1200));
    let keys: Vec<&str> = std::iter::once("key").chain(key.split(' ')).collect();
    xdotool(session, &keys);
    std::thread::sleep(Duration::from_millis(300));
    xdotool(session, &["key", "Return"]);
}

fn notifications(session: &Session) -> String {
    session
        .command(tool("dunstctl", "dunst"))
        .arg("history")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn the_tray_pauses_for_an_hour_and_says_so() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let session = Session::start();
    let head = Head::start(13000);
    let home = tempfile::Builder::new()
        .prefix("flda")
        .tempdir_in("/tmp")
        .unwrap();
    // Joined already (as after the first run), so the app starts its worker at login.
    let mut join = Command::new(flotilla_bin());
    join.env("FLOTILLA_HOME", home.path())
        .env("FLOTILLA_DATA_DIR", data_dir())
        .args(["join", "-", "--no-start", "--name", "tray"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = join.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(head.invite().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());

    let mut trayer = session.command(tool("trayer", "trayer"));
    trayer.args([
        "--edge",
        "top",
        "--align",
        "right",
        "--widthtype",
        "request",
        "--height",
        "32",
        "--SetDockType",
        "true",
        "--transparent",
        "false",
    ]);
    let _trayer = spawn(trayer, &session.path().join("trayer.log"));
    let _dunst = spawn(
        session.command(tool("dunst", "dunst")),
        &session.path().join("dunst.log"),
    );
    let mut app = session.command(APP);
    app.arg("--minimized");
    app_env(&mut app, home.path(), 13500);
    let log = session.path().join("app.log");
    let mut app = spawn(app, &log);

    let shown = wait_for("the tray icon", Duration::from_secs(60), || {
        tray_icon(&session).is_some()
    });
    eprintln!("tray icon shown {shown:?} after start");
    let status = |home: &Path| -> Value {
        let out = Command::new(flotilla_bin())
            .env("FLOTILLA_HOME", home)
            .env("FLOTILLA_DATA_DIR", data_dir())
            .args(["status", "--json", "--api", "http://127.0.0.1:9"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)["this_machine"].clone()
    };
    wait_for("the agent to contribute", Duration::from_secs(180), || {
        let m = status(home.path());
        m["session"]["link"] == "connected"
            && matches!(m["enforcement"]["state"].as_str(), Some("full" | "cap"))
    });
    let joined = wait_for("the joined notification", Duration::from_secs(30), || {
        notifications(&session).contains("Flotilla: joined the cluster")
    });
    eprintln!("joined notification after {joined:?}");

    // "Pause for 1 hour" is the first entry below the status line.
    pick_from_tray_menu(&session, "Down");
    let paused = wait_for("a pause for 1 hour", Duration::from_secs(30), || {
        let m = status(home.path());
        m["decision"]["reason"]["code"] == "paused_until"
            && matches!(
                m["enforcement"]["state"].as_str(),
                Some("paused" | "draining")
            )
    });
    eprintln!("paused {paused:?} after the click");
    wait_for("the paused notification", Duration::from_secs(30), || {
        notifications(&session).contains("Flotilla: paused")
    });
    let reason = status(home.path())["reason_en"].clone();
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("Paused by you until")),
        "{reason}"
    );

    // "Open dashboard" (just above Quit) opens the window, which does not exist while the app
    // sits in the tray.
    let window = |session: &Session| {
        session
            .command(tool("xwininfo", "x11-utils"))
            .args(["-root", "-tree"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"Flotilla\""))
    };
    assert!(
        !window(&session),
        "no window while the app sits in the tray"
    );
    pick_from_tray_menu(&session, "Up Up");
    wait_for("the window", Duration::from_secs(30), || window(&session));

    // Quit, the last entry (Up from the top wraps to it): the worker and its Ray node stop.
    pick_from_tray_menu(&session, "Up");
    let quit = wait_for("the app to quit", Duration::from_secs(90), || {
        app.0.try_wait().unwrap().is_some()
    });
    eprintln!("quit in {quit:?}");
    wait_for(
        "the app's processes to end",
        Duration::from_secs(30),
        || processes_of(home.path()).is_empty(),
    );
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("panicked"),
        "{}",
        tail(&log)
    );
    drop(session);
    let _ = head;
}

/// The app's environment for hosting: `flotilla up`'s ports from `base`, on the LAN.
fn host_env(c: &mut Command, home: &Path, base: u16) {
    app_env(c, home, base + 500);
    for (var, port) in [
        ("FLOTILLA_API_PORT", base),
        ("FLOTILLA_RAY_PORT", base + 1),
        ("FLOTILLA_RAY_DASHBOARD_PORT", base + 2),
        ("FLOTILLA_RAY_CLIENT_PORT", base + 3),
        ("FLOTILLA_CONTROL_PORT", base + 4),
        ("FLOTILLA_HEAD_NODE_PORTS", base + 100),
    ] {
        c.env(var, port.to_string());
    }
    c.env("FLOTILLA_NETWORK", "lan");
}

/// `flotilla ARGS --json` with the app's home, on the session's bus (the same secret store).
fn flotilla_json(session: &Session, home: &Path, args: &[&str]) -> Value {
    let out = session
        .command(flotilla_bin())
        .env("FLOTILLA_HOME", home)
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The node list shows this computer contributing (or holding back).
fn lists_this_computer(wd: &WebDriver) -> bool {
    let table = wd.text("table");
    table
        .lines()
        .any(|l| l.contains("Contributing") || l.contains("Throttled"))
}

fn is_driver(pid: &u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|e| e.ends_with("tauri-driver") || e.ends_with("WebKitWebDriver"))
}

/// Sends SIGTERM to the app (logging out does) and waits until it and every process it
/// started (the head's and the worker's Ray nodes) are gone.
fn stop_app(home: &Path) {
    let app = processes_of(home).into_iter().find(|pid| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == Path::new(APP))
    });
    let app = app.expect("the app runs");
    // SAFETY: a signal to the app this test started.
    unsafe { libc::kill(app as i32, libc::SIGTERM) };
    let took = wait_for(
        "the app and its Ray nodes to stop",
        Duration::from_secs(90),
        || processes_of(home).iter().all(is_driver),
    );
    eprintln!("the app and its cluster stopped {took:?} after SIGTERM");
}

#[test]
fn the_window_hosts_a_cluster_and_edits_its_settings_secrets_and_logs() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let session = Session::start();
    let home = tempfile::Builder::new()
        .prefix("fldh")
        .tempdir_in("/tmp")
        .unwrap();
    let (base, driver_port) = (10100, 10900);
    let td = start_tauri_driver(&session, driver_port, |c| host_env(c, home.path(), base));
    let wd = WebDriver::new_session(driver_port);

    // First run: host a cluster on this computer.
    wd.find("[data-view=first-run]", Duration::from_secs(60));
    wd.click("[data-tab=host]");
    wd.find("[data-action=host]", Duration::from_secs(5));
    wd.screenshot(&artefacts().join("host-first-run.png"));
    let started = Instant::now();
    wd.click("[data-action=host]");
    wd.find("[data-view=this-computer]", Duration::from_secs(30));
    // The join code and its QR code, once the head runs.
    let code = wd.find("[data-field=join-code]", Duration::from_secs(240));
    let code = wd.call("GET", &format!("/element/{code}/text"), None);
    let code = code.as_str().unwrap_or("").trim().to_string();
    assert!(code.starts_with("flot1-"), "{code}");
    eprintln!(
        "hosting, with a join code, {:?} after the click",
        started.elapsed()
    );
    let qr = wd.script(
        "const i = document.querySelector('img[data-qr]'); return i ? i.complete && i.naturalWidth : 0;",
    );
    assert!(qr.as_u64().is_some_and(|w| w > 0), "no QR code drawn: {qr}");
    let listed = wait_for(
        "the node list to show this computer",
        Duration::from_secs(120),
        || lists_this_computer(&wd),
    );
    eprintln!("this computer listed {listed:?} after the code showed");
    wd.screenshot(&artefacts().join("host.png"));
    // The code is a real one: another home joins with it.
    let other = tempfile::Builder::new()
        .prefix("fldj")
        .tempdir_in("/tmp")
        .unwrap();
    let mut join = session.command(flotilla_bin());
    join.env("FLOTILLA_HOME", other.path())
        .args(["join", "-", "--no-start", "--name", "laptop-2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = join.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(code.as_bytes())
        .unwrap();
    let joined = child.wait_with_output().unwrap();
    assert!(
        joined.status.success(),
        "join with the app's code: {joined:?}"
    );
    // A new code replaces it.
    wd.click("[data-action=new-code]");
    wait_for("a new join code", Duration::from_secs(20), || {
        let now = wd.text("[data-field=join-code]");
        now.starts_with("flot1-") && now.trim() != code
    });

    // This computer: live sensors and the contribution.
    wd.click("a[data-view=computer]");
    wait_for("the sensors", Duration::from_secs(30), || {
        !wd.text("[data-sensor=cpus]").is_empty()
            && !wd.text("[data-contribution=total]").is_empty()
    });
    wd.screenshot(&artefacts().join("this-computer.png"));

    // Settings: a wrong value is refused beside its field and nothing is written...
    let toml = home.path().join("config/flotilla.toml");
    let before = std::fs::read(&toml).ok();
    wd.click("a[data-view=settings]");
    wd.find("[data-field=active_cpus]", Duration::from_secs(20));
    wd.fill("[data-field=active_cpus]", "-1");
    wd.click("[data-action=save-policy]");
    let problem = wd.find("[data-problem=active_cpus]", Duration::from_secs(20));
    let problem = wd.call("GET", &format!("/element/{problem}/text"), None);
    assert!(
        problem.as_str().is_some_and(|p| p.contains("whole number")),
        "{problem}"
    );
    assert_eq!(
        std::fs::read(&toml).ok(),
        before,
        "a refused value wrote nothing"
    );
    wd.screenshot(&artefacts().join("settings-refused.png"));
    // ...and a right one is written and applied: lending nothing while Xvfb runs (it does).
    wd.fill("[data-field=active_cpus]", "1");
    wd.fill("[data-field=exclusive_apps]", "Xvfb");
    wd.click("[data-action=save-policy]");
    wd.find("[data-saved]", Duration::from_secs(20));
    let written = std::fs::read_to_string(&toml).unwrap();
    assert!(
        written.contains("active_cpus = 1") && written.contains("exclusive_apps = [\"Xvfb\"]"),
        "{written}"
    );
    let applied = wait_for(
        "the agent to apply the new settings",
        Duration::from_secs(30),
        || {
            let d = flotilla_json(
                &session,
                home.path(),
                &["status", "--json", "--api", "http://127.0.0.1:9"],
            );
            d["this_machine"]["decision"]["reason"]["code"] == "exclusive_app"
        },
    );
    eprintln!("the agent applied the settings {applied:?} after saving");
    wd.screenshot(&artefacts().join("settings.png"));

    // Secrets: one added through a password field, listed by `flotilla secret list`, removed.
    let value = "s3cr3t-value-that-never-shows";
    wd.click("a[data-view=secrets]");
    wd.find("section[data-view=secrets]", Duration::from_secs(20));
    wd.fill("[data-field=secret-name]", "test-api-key");
    wd.fill("[data-field=secret-value]", value);
    let kind = wd
        .script("return document.querySelector('[data-field=secret-value]').getAttribute('type');");
    assert_eq!(kind, "password");
    wd.click("[data-action=add-secret]");
    wd.find("tr[data-secret=test-api-key]", Duration::from_secs(20));
    let names = |session: &Session| -> Vec<String> {
        flotilla_json(session, home.path(), &["secret", "list", "--json"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(names(&session).iter().any(|n| n == "test-api-key"));
    let page = wd.script("return document.documentElement.outerHTML;");
    assert!(
        !page.as_str().unwrap_or("").contains(value),
        "the value shows"
    );
    // Flotilla's own secrets are listed without a way to remove them.
    let own = wd.script(
        "return [...document.querySelectorAll('tr[data-secret^=\"flotilla.\"]')].map(r => !!r.querySelector('[data-action=remove-secret]'));",
    );
    let own = own.as_array().cloned().unwrap_or_default();
    assert!(!own.is_empty() && own.iter().all(|r| r == false), "{own:?}");
    wd.screenshot(&artefacts().join("secrets.png"));
    wd.click("tr[data-secret=test-api-key] [data-action=remove-secret]");
    wait_for("the secret to go", Duration::from_secs(20), || {
        wd.script("return !document.querySelector('tr[data-secret=test-api-key]');") == true
    });
    assert!(!names(&session).iter().any(|n| n == "test-api-key"));

    // Logs: the app's log, without the join codes or the secret.
    wd.click("a[data-view=logs]");
    wait_for("lines of the log", Duration::from_secs(30), || {
        wd.script("return document.querySelectorAll('[data-log-line]').length;")
            .as_u64()
            .is_some_and(|n| n > 5)
    });
    let log = wd.text("section[data-view=logs]");
    assert!(log.contains("hosting the cluster"), "{log}");
    assert!(!log.contains(&code[6..]) && !log.contains(value), "{log}");
    wd.screenshot(&artefacts().join("logs.png"));

    // Logging out stops the app, the head and both Ray nodes...
    stop_app(home.path());
    assert!(!home.path().join("state/head.json").exists());
    drop(wd);
    // ...and the next start hosts again by itself.
    let wd = WebDriver::new_session(driver_port);
    wd.find("[data-field=join-code]", Duration::from_secs(240));
    // (It lends nothing while Xvfb runs, by the settings above: listed, not contributing.)
    let me = flotilla_host::hostname();
    wait_for(
        "the node list after the restart",
        Duration::from_secs(120),
        || wd.text("table").contains(&me),
    );
    wd.screenshot(&artefacts().join("host-restarted.png"));
    stop_app(home.path());
    drop(wd);
    drop(td);
    drop(session);
}
