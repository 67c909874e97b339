//! The agent's local control channel: how the desktop app (in the owner's session) feeds the
//! owner's idle time to the agent, which may run as a service that cannot see the session's
//! input, and reads the agent's current decision.
//!
//! Protocol: newline-delimited JSON over a local socket, one request per line, one reply per
//! line:
//!
//! ```text
//! -> {"idle_ms": 1234, "source": "desktop"}      <- {"ok": true}
//! -> {"get": "decision"}                         <- {"ok": true, "decision": {...}}
//! -> {"get": "contribution"}                     <- {"ok": true, "contribution": {...}}
//! -> {"reload": "policy"}                        <- {"ok": true, "policy": {...}}
//!                                                   | {"ok": false, "error": "...", "problems": [...]}
//! -> {"pause": "finish" | "now" | "for", "secs": N | "until", "at": "08:00"}  <- {"ok": true}
//! -> {"resume": true}                            <- {"ok": true}
//! -> anything else                               <- {"ok": false, "error": "..."}
//! ```
//!
//! # Platform behavior
//!
//! The channel is `flotilla_host::ipc`, named by [`socket_path`]: `agent-<hash>.sock` in
//! Flotilla's run dir (made `0700`), the hash that of the home's state dir, so that the agents of
//! two homes of one user each have their own. A Unix socket (`0600`, peers of other users
//! refused) or, on Windows, a named pipe derived from that path (no remote clients, writable by
//! this user only). An agent never takes over the channel of another live agent ([`serve`]
//! fails instead, naming its pid where the OS tells it), takes over one left by an agent that
//! died, and removes only its own on exit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::sampler::{FedIdle, IdleFeed, ManualFeed, ManualRequest};

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Longest idle time a feed may claim (a week): more is a bug, not a reading.
const MAX_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The control channel of the agent of the home `dirs` describes: the one name the agent
/// listens on and every client (`flotilla status`, `pause`, the desktop app) connects to.
pub fn socket_path(dirs: &flotilla_host::Dirs) -> PathBuf {
    dirs.agent_socket()
}

#[derive(Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum Request {
    Idle {
        idle_ms: u64,
        source: Option<String>,
    },
    Get {
        get: String,
    },
    Pause {
        pause: String,
        secs: Option<u64>,
        at: Option<String>,
    },
    Resume {
        resume: bool,
    },
    Reload {
        reload: String,
    },
}

/// The channel's shared state.
#[derive(Debug, Clone, Default)]
pub struct Feeds {
    pub idle: IdleFeed,
    pub manual: ManualFeed,
    pub policy: crate::sampler::PolicyFeed,
    /// Where the politeness settings come from, for `{"reload": "policy"}`.
    pub source: PolicySource,
    /// The enrolled agent's outbox, once its session runs (its tally answers
    /// `{"get": "contribution"}`).
    pub ledger: Arc<Mutex<Option<Arc<Mutex<crate::outbox::Outbox>>>>>,
}

/// Where the politeness settings come from: the fleet's defaults (the head's `[policy]`, as
/// its latest `SetPolicy` sent them) under this machine's own `flotilla.toml`, which a reload
/// reads again, so a change to the file applies without restarting the agent.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    /// This machine's `flotilla.toml`; `None`: the agent has no file to reload.
    pub file: Option<PathBuf>,
    texts: Arc<Mutex<PolicyTexts>>,
}

#[derive(Debug, Default)]
struct PolicyTexts {
    fleet: String,
    /// The file's text as last reloaded; `None` until a reload.
    local: Option<String>,
}

/// Why a reload was refused: the file's problems (line, field, what is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadError {
    pub message: String,
    pub problems: Vec<crate::config::Problem>,
}

impl PolicySource {
    pub fn new(file: Option<PathBuf>, fleet: &str) -> PolicySource {
        let source = PolicySource {
            file,
            texts: Default::default(),
        };
        source.lock().fleet = fleet.to_string();
        source
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PolicyTexts> {
        self.texts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fleet's new defaults, merged under this machine's own settings (the file's text as
    /// last reloaded, else `local`, the text the agent started with).
    pub fn set_fleet(&self, fleet: &str, local: &str) -> Result<flotilla_policy::Settings, String> {
        let mut texts = self.lock();
        texts.fleet = fleet.to_string();
        let local = texts.local.as_deref().unwrap_or(local);
        crate::config::merge_policy(fleet, local)
    }

    /// Reads the file again and validates it whole (as at start: a wrong `[secrets]` is as
    /// wrong as a wrong `[policy]`); on success, the settings to apply.
    pub fn reload(&self) -> Result<flotilla_policy::Settings, ReloadError> {
        let Some(path) = &self.file else {
            return Err(ReloadError {
                message: "this agent was started without a flotilla.toml to reload".into(),
                problems: vec![],
            });
        };
        let refused = |e: crate::config::ConfigError| ReloadError {
            message: e.to_string(),
            problems: e.problems,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ReloadError {
                    message: format!("cannot read {}: {e}", path.display()),
                    problems: vec![],
                });
            }
        };
        crate::config::parse(&text, path).map_err(refused)?;
        let mut texts = self.lock();
        let merged =
            crate::config::merge_policy(&texts.fleet, &text).map_err(|message| ReloadError {
                message,
                problems: vec![],
            })?;
        texts.local = Some(text);
        Ok(merged)
    }
}

/// The Unix seconds at which the local day and the local week (Monday) began, given the time
/// now and the local clock's reading of it.
pub fn local_day_and_week_start(
    now_unix: i64,
    clock: flotilla_host::clock::LocalClock,
) -> (i64, i64) {
    let since_midnight =
        i64::from(clock.hour) * 3600 + i64::from(clock.minute) * 60 + i64::from(clock.second);
    let today = now_unix - since_midnight;
    (today, today - i64::from(clock.weekday) * 86_400)
}

fn contribution(feeds: &Feeds) -> serde_json::Value {
    let ledger = feeds
        .ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(outbox) = ledger else {
        return serde_json::json!({
            "ok": false,
            "error": "this agent keeps no contribution ledger: it is not enrolled in a fleet (or its session has not started yet)"
        });
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (today, week) = local_day_and_week_start(now, flotilla_host::clock::local_now());
    let read = outbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contribution(today, week);
    match read {
        Ok(c) => serde_json::json!({"ok": true, "contribution": c}),
        Err(e) => serde_json::json!({"ok": false, "error": format!("cannot read the outbox: {e}")}),
    }
}

fn pause_request(
    pause: &str,
    secs: Option<u64>,
    at: Option<&str>,
) -> Result<ManualRequest, String> {
    match (pause, secs, at) {
        ("finish", None, None) => Ok(ManualRequest::Finish),
        ("now", None, None) => Ok(ManualRequest::Indefinite),
        ("for", Some(s), None) if (60..=7 * 24 * 3600).contains(&s) => {
            Ok(ManualRequest::For(Duration::from_secs(s)))
        }
        ("for", Some(s), None) => Err(format!(
            "secs {s} is outside 60..604800 (a minute to a week)"
        )),
        ("until", None, Some(at)) => {
            let clock: flotilla_policy::ClockTime =
                at.parse().map_err(|e| format!("at {at:?}: {e}"))?;
            Ok(ManualRequest::UntilNext {
                hour: clock.hour(),
                minute: clock.minute(),
            })
        }
        _ => Err("pause takes \"finish\", \"now\", \"for\" with secs, or \"until\" with at".into()),
    }
}

/// Handles one request line; returns the reply line (without the newline).
pub(crate) fn handle(
    line: &str,
    feeds: &Feeds,
    decision: &watch::Receiver<serde_json::Value>,
    now: Instant,
) -> String {
    let feed = &feeds.idle;
    let reply = match serde_json::from_str::<Request>(line) {
        Ok(Request::Idle { idle_ms, source }) => {
            let idle = Duration::from_millis(idle_ms);
            if idle > MAX_IDLE {
                serde_json::json!({"ok": false, "error": format!("idle_ms {idle_ms} is more than a week")})
            } else {
                let source: String = source
                    .unwrap_or_else(|| "session".into())
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(40)
                    .collect();
                *feed.lock().unwrap_or_else(|e| e.into_inner()) = Some(FedIdle {
                    idle,
                    at: now,
                    source,
                });
                serde_json::json!({"ok": true})
            }
        }
        Ok(Request::Get { get }) if get == "decision" => {
            serde_json::json!({"ok": true, "decision": decision.borrow().clone()})
        }
        Ok(Request::Get { get }) if get == "contribution" => contribution(feeds),
        Ok(Request::Get { get }) => {
            serde_json::json!({"ok": false, "error": format!("unknown item {get:?}; try \"decision\" or \"contribution\"")})
        }
        Ok(Request::Reload { reload }) if reload == "policy" => match feeds.source.reload() {
            Ok(settings) => {
                tracing::info!("flotilla.toml reloaded");
                *feeds.policy.lock().unwrap_or_else(|e| e.into_inner()) = Some(settings.clone());
                serde_json::json!({"ok": true, "policy": settings})
            }
            Err(e) => serde_json::json!({
                "ok": false,
                "error": e.message,
                "problems": e.problems.iter().map(|p| serde_json::json!({
                    "line": p.line, "field": p.field, "message": p.message,
                })).collect::<Vec<_>>(),
            }),
        },
        Ok(Request::Reload { reload }) => {
            serde_json::json!({"ok": false, "error": format!("unknown item {reload:?}; try \"policy\"")})
        }
        Ok(Request::Pause { pause, secs, at }) => {
            match pause_request(&pause, secs, at.as_deref()) {
                Ok(r) => {
                    *feeds.manual.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                    serde_json::json!({"ok": true})
                }
                Err(e) => serde_json::json!({"ok": false, "error": e}),
            }
        }
        Ok(Request::Resume { resume: true }) => {
            *feeds.manual.lock().unwrap_or_else(|e| e.into_inner()) = Some(ManualRequest::Resume);
            serde_json::json!({"ok": true})
        }
        Ok(Request::Resume { resume: false }) => {
            serde_json::json!({"ok": false, "error": "resume takes true"})
        }
        Err(e) => serde_json::json!({
            "ok": false,
            "error": format!("not a request ({e}); send {{\"idle_ms\": N}} or {{\"get\": \"decision\"}}")
        }),
    };
    reply.to_string()
}

/// Serves the control channel `socket` (see [`socket_path`]) until `shutdown`; binds before
/// returning. Fails with [`std::io::ErrorKind::AddrInUse`] when another agent answers on it.
pub async fn serve(
    socket: &Path,
    feeds: Feeds,
    decision: watch::Receiver<serde_json::Value>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = socket.parent() {
        flotilla_host::dirs::create_private_dir(dir)?;
    }
    let mut listener = flotilla_host::ipc::Listener::bind(socket)?;
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("control channel: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(converse(
                stream,
                feeds.clone(),
                decision.clone(),
                shutdown.clone(),
            ));
        }
        // Dropping the listener removes the channel (if it is still this agent's).
        drop(listener);
    }))
}

/// Answers one connection's requests, a line each, until it closes.
async fn converse(
    stream: flotilla_host::ipc::Stream,
    feeds: Feeds,
    decision: watch::Receiver<serde_json::Value>,
    shutdown: CancellationToken,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // At most one line plus one byte: a longer one is refused, not buffered.
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = limited.read_until(b'\n', &mut buf) => n,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let too_long = buf.last() != Some(&b'\n') && buf.len() > MAX_LINE;
        let reply = if too_long {
            serde_json::json!({"ok": false, "error": "request too long"}).to_string()
        } else {
            let line = String::from_utf8_lossy(&buf);
            handle(line.trim_end(), &feeds, &decision, Instant::now())
        };
        let sent = w.write_all(format!("{reply}\n").as_bytes()).await;
        if sent.is_err() || w.flush().await.is_err() || too_long {
            break;
        }
    }
}

/// Sends one request to the agent listening on `socket` (see [`socket_path`]) and returns its
/// reply.
pub async fn request(socket: &Path, req: &serde_json::Value) -> std::io::Result<serde_json::Value> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let no_answer =
        || std::io::Error::new(std::io::ErrorKind::TimedOut, "the agent did not answer");
    let stream = flotilla_host::ipc::connect(socket, Duration::from_secs(3))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => no_answer(),
            _ => e,
        })?;
    let (r, mut w) = tokio::io::split(stream);
    w.write_all(format!("{req}\n").as_bytes()).await?;
    w.flush().await?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(3),
        BufReader::new(r).read_line(&mut line),
    )
    .await
    .map_err(|_| no_answer())??;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Feeds, watch::Receiver<serde_json::Value>) {
        let (_tx, rx) = watch::channel(serde_json::json!({"target_cpus": 2}));
        (Feeds::default(), rx)
    }

    /// The served channel end to end, on every OS (Windows under Wine in `tests/cross-os`): a
    /// request and its reply, a pause taken, and a second agent kept off a live channel.
    #[test]
    fn the_channel_serves_requests_and_belongs_to_one_agent() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let sock = dir.path().join("run/agent.sock");
            let sock = sock.as_path();
            let (tx, rx) = watch::channel(serde_json::json!({"target_cpus": 3}));
            let feeds = Feeds::default();
            let stop = CancellationToken::new();
            let task = serve(sock, feeds.clone(), rx.clone(), stop.clone())
                .await
                .unwrap();
            let reply = request(sock, &serde_json::json!({"get": "decision"}))
                .await
                .unwrap();
            assert_eq!(reply["decision"]["target_cpus"], 3);
            let reply = request(sock, &serde_json::json!({"pause": "now"}))
                .await
                .unwrap();
            assert_eq!(reply["ok"], true, "{reply}");
            assert!(feeds.manual.lock().unwrap().is_some());

            let second = serve(sock, Feeds::default(), rx, CancellationToken::new())
                .await
                .unwrap_err();
            assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse, "{second}");
            // The first agent still answers.
            let reply = request(sock, &serde_json::json!({"get": "decision"}))
                .await
                .unwrap();
            assert_eq!(reply["ok"], true);

            stop.cancel();
            task.await.unwrap();
            drop(tx);
            let gone = request(sock, &serde_json::json!({"get": "decision"})).await;
            assert!(gone.is_err(), "{gone:?}");
        });
    }

    /// The reply to one request line, parsed.
    fn reply(
        line: &str,
        feeds: &Feeds,
        dec: &watch::Receiver<serde_json::Value>,
    ) -> serde_json::Value {
        serde_json::from_str(&handle(line, feeds, dec, Instant::now())).unwrap()
    }

    #[test]
    fn idle_readings_are_stored_and_bad_ones_refused() {
        let (feed, dec) = setup();
        let now = Instant::now();
        let r = handle(
            r#"{"idle_ms": 1500, "source": "desktop"}"#,
            &feed,
            &dec,
            now,
        );
        assert_eq!(r, r#"{"ok":true}"#);
        let fed = feed.idle.lock().unwrap().clone().unwrap();
        assert_eq!(
            (fed.idle, fed.source.as_str()),
            (Duration::from_millis(1500), "desktop")
        );
        for bad in [
            r#"{"idle_ms": -1}"#,
            "garbage",
            r#"{"idle_ms": 999999999999}"#,
            r#"{"idle_ms": 1, "x": 2}"#,
        ] {
            let r = reply(bad, &feed, &dec);
            assert_eq!(r["ok"], false, "{bad}");
            assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }

    #[test]
    fn pauses_and_resumes_are_queued_for_the_loop() {
        let (feeds, dec) = setup();
        let ask = |line: &str| reply(line, &feeds, &dec);
        let last = || *feeds.manual.lock().unwrap();
        assert_eq!(ask(r#"{"pause": "finish"}"#)["ok"], true);
        assert_eq!(last(), Some(ManualRequest::Finish));
        assert_eq!(ask(r#"{"pause": "for", "secs": 3600}"#)["ok"], true);
        assert_eq!(last(), Some(ManualRequest::For(Duration::from_secs(3600))));
        assert_eq!(ask(r#"{"pause": "until", "at": "08:00"}"#)["ok"], true);
        assert_eq!(
            last(),
            Some(ManualRequest::UntilNext { hour: 8, minute: 0 })
        );
        assert_eq!(ask(r#"{"resume": true}"#)["ok"], true);
        assert_eq!(last(), Some(ManualRequest::Resume));
        for bad in [
            r#"{"pause": "for", "secs": 5}"#,
            r#"{"pause": "until", "at": "25:00"}"#,
            r#"{"pause": "later"}"#,
        ] {
            assert_eq!(ask(bad)["ok"], false, "{bad}");
        }
    }

    #[test]
    fn the_decision_can_be_read() {
        let (feed, dec) = setup();
        let r = reply(r#"{"get": "decision"}"#, &feed, &dec);
        assert_eq!(r["decision"]["target_cpus"], 2);
        let r = reply(r#"{"get": "secrets"}"#, &feed, &dec);
        assert_eq!(r["ok"], false);
    }

    #[test]
    fn a_reload_applies_a_valid_file_and_refuses_a_wrong_one() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("flotilla.toml");
        let (mut feeds, dec) = setup();
        feeds.source = PolicySource::new(Some(file.clone()), "[policy]\nbattery_cpus = 3\n");
        let ask = |feeds: &Feeds| reply(r#"{"reload": "policy"}"#, feeds, &dec);
        // No file: the fleet's defaults alone.
        let r = ask(&feeds);
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["policy"]["battery_cpus"], 3);
        std::fs::write(&file, "# mine\n[policy]\nactive_cpus = 1\n").unwrap();
        let r = ask(&feeds);
        assert_eq!(
            (
                r["policy"]["active_cpus"].clone(),
                r["policy"]["battery_cpus"].clone()
            ),
            (1.into(), 3.into())
        );
        let applied = feeds.policy.lock().unwrap().take().unwrap();
        assert_eq!(applied.active_cpus, 1);
        // A wrong value: refused with its line and field, nothing applied.
        std::fs::write(&file, "[policy]\nowner_load_threshold = 7\n").unwrap();
        let r = ask(&feeds);
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["problems"][0]["field"], "policy.owner_load_threshold");
        assert_eq!(r["problems"][0]["line"], 2);
        assert!(feeds.policy.lock().unwrap().is_none());
        // The fleet's next defaults merge under the file as last reloaded, not the old text.
        std::fs::write(&file, "[policy]\nactive_cpus = 1\n").unwrap();
        assert_eq!(ask(&feeds)["ok"], true);
        let s = feeds
            .source
            .set_fleet("[policy]\nactive_cpus = 4\nbattery_cpus = 2\n", "")
            .unwrap();
        assert_eq!((s.active_cpus, s.battery_cpus), (1, 2));
        // An agent without a file says so.
        let (plain, _) = setup();
        assert_eq!(ask(&plain)["ok"], false);
    }

    #[test]
    fn the_contribution_comes_from_the_outbox_tally() {
        let tmp = tempfile::tempdir().unwrap();
        let (feeds, dec) = setup();
        let get = |feeds: &Feeds| reply(r#"{"get": "contribution"}"#, feeds, &dec);
        assert_eq!(get(&feeds)["ok"], false, "not enrolled");
        let mut outbox = crate::outbox::Outbox::open(&tmp.path().join("o.sqlite")).unwrap();
        outbox
            .add(90.0, SystemTime::now(), Duration::from_secs(300))
            .unwrap();
        *feeds.ledger.lock().unwrap() = Some(Arc::new(Mutex::new(outbox)));
        let r = get(&feeds);
        assert_eq!(r["ok"], true, "{r}");
        for k in ["today_cpu_seconds", "week_cpu_seconds", "total_cpu_seconds"] {
            assert_eq!(r["contribution"][k], 90.0, "{k}: {r}");
        }
    }

    #[test]
    fn the_local_day_and_week_start_at_midnight_and_monday() {
        use flotilla_host::clock::LocalClock;
        // Wednesday 14:30:15 local.
        let clock = LocalClock {
            weekday: 2,
            hour: 14,
            minute: 30,
            second: 15,
        };
        let now = 1_000_000;
        let (today, week) = local_day_and_week_start(now, clock);
        assert_eq!(today, now - (14 * 3600 + 30 * 60 + 15));
        assert_eq!(week, today - 2 * 86_400);
    }
}
