//! The agent's local control channel: how the desktop app (in the owner's session) feeds the
//! owner's idle time to the agent, which may run as a service that cannot see the session's
//! input, and reads the agent's current decision.
//!
//! Protocol: newline-delimited JSON over a local socket, one request per line, one reply per
//! line. Each line is the JSON of a [`Request`] and of a [`Reply`]; [`Client`] is the one client
//! (`flotilla status`, `pause`, `doctor`, the desktop app), and a raw line does as well:
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

use serde::{Deserialize, Serialize};
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

/// A request on the control channel. Its JSON, one object a line, is the protocol (see the
/// module's documentation); clients send it with [`Client`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Request {
    /// The owner's idle time, as a session that sees the owner's input measured it.
    Idle {
        idle_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    Get {
        get: Item,
    },
    /// A pause: `For` takes `secs` (a minute to a week), `Until` takes `at` (`HH:MM`).
    Pause {
        pause: PauseKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        secs: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
    /// `true`; anything else is refused.
    Resume {
        resume: bool,
    },
    Reload {
        reload: ReloadItem,
    },
}

/// What `{"get": ...}` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// The politeness loop's latest decision, with the session's link.
    Decision,
    /// What this machine contributed (an enrolled agent's outbox tally).
    Contribution,
}

/// What `{"reload": ...}` reads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadItem {
    /// `flotilla.toml`'s politeness settings.
    Policy,
}

/// The kinds of pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseKind {
    /// The running tasks finish first.
    Finish,
    /// At once, until resumed.
    Now,
    /// For `secs`.
    For,
    /// Until the next `at` local time.
    Until,
}

impl Request {
    pub fn pause_for(secs: u64) -> Request {
        Request::Pause {
            pause: PauseKind::For,
            secs: Some(secs),
            at: None,
        }
    }

    /// Until the next `at` (`HH:MM`, local time).
    pub fn pause_until(at: &str) -> Request {
        Request::Pause {
            pause: PauseKind::Until,
            secs: None,
            at: Some(at.to_string()),
        }
    }

    /// A pause without a duration: `Finish` or `Now`.
    pub fn pause(kind: PauseKind) -> Request {
        Request::Pause {
            pause: kind,
            secs: None,
            at: None,
        }
    }
}

/// A reply on the control channel. On the wire: `{"ok": true}` with the item asked for, or
/// `{"ok": false, "error": ..., "problems": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireReply", from = "WireReply")]
pub enum Reply {
    /// Done (an idle reading, a pause, a resume).
    Done,
    /// The latest decision ([`crate::politeness::Published`] with the session's link); null
    /// before the first tick.
    Decision(serde_json::Value),
    Contribution(crate::outbox::Contribution),
    /// The settings a reload applied.
    Policy(Box<flotilla_policy::Settings>),
    /// Refused, and why; a refused reload names each problem of the file.
    Refused {
        error: String,
        problems: Option<Vec<crate::config::Problem>>,
    },
}

impl Reply {
    fn refused(error: impl Into<String>) -> Reply {
        Reply::Refused {
            error: error.into(),
            problems: None,
        }
    }
}

/// [`Reply`] as its JSON has it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct WireReply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    problems: Option<Vec<crate::config::Problem>>,
    /// `Some(Null)` stays a null decision.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    decision: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    contribution: Option<crate::outbox::Contribution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<Box<flotilla_policy::Settings>>,
}

/// A field that is there, null included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

impl From<Reply> for WireReply {
    fn from(r: Reply) -> WireReply {
        let ok = WireReply {
            ok: true,
            ..WireReply::default()
        };
        match r {
            Reply::Done => ok,
            Reply::Decision(d) => WireReply {
                decision: Some(d),
                ..ok
            },
            Reply::Contribution(c) => WireReply {
                contribution: Some(c),
                ..ok
            },
            Reply::Policy(p) => WireReply {
                policy: Some(p),
                ..ok
            },
            Reply::Refused { error, problems } => WireReply {
                ok: false,
                error: Some(error),
                problems,
                ..WireReply::default()
            },
        }
    }
}

impl From<WireReply> for Reply {
    fn from(w: WireReply) -> Reply {
        if !w.ok {
            return Reply::Refused {
                error: w.error.unwrap_or_else(|| "refused".into()),
                problems: w.problems,
            };
        }
        if let Some(d) = w.decision {
            Reply::Decision(d)
        } else if let Some(c) = w.contribution {
            Reply::Contribution(c)
        } else if let Some(p) = w.policy {
            Reply::Policy(p)
        } else {
            Reply::Done
        }
    }
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

fn contribution(feeds: &Feeds) -> Reply {
    let ledger = feeds
        .ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(outbox) = ledger else {
        return Reply::refused(
            "this agent keeps no contribution ledger: it is not enrolled in a fleet (or its session has not started yet)",
        );
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
        Ok(c) => Reply::Contribution(c),
        Err(e) => Reply::refused(format!("cannot read the outbox: {e}")),
    }
}

fn pause_request(
    pause: PauseKind,
    secs: Option<u64>,
    at: Option<&str>,
) -> Result<ManualRequest, String> {
    match (pause, secs, at) {
        (PauseKind::Finish, None, None) => Ok(ManualRequest::Finish),
        (PauseKind::Now, None, None) => Ok(ManualRequest::Indefinite),
        (PauseKind::For, Some(s), None) if (60..=7 * 24 * 3600).contains(&s) => {
            Ok(ManualRequest::For(Duration::from_secs(s)))
        }
        (PauseKind::For, Some(s), None) => Err(format!(
            "secs {s} is outside 60..604800 (a minute to a week)"
        )),
        (PauseKind::Until, None, Some(at)) => {
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

/// Why `line` is not a request, as helpfully as its JSON allows.
fn not_a_request(line: &str, e: &serde_json::Error) -> String {
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    match (&value["get"], &value["reload"]) {
        (serde_json::Value::String(get), _) => {
            format!("unknown item {get:?}; try \"decision\" or \"contribution\"")
        }
        (_, serde_json::Value::String(reload)) => {
            format!("unknown item {reload:?}; try \"policy\"")
        }
        _ => format!("not a request ({e}); send {{\"idle_ms\": N}} or {{\"get\": \"decision\"}}"),
    }
}

/// Answers one request.
fn answer(
    request: Request,
    feeds: &Feeds,
    decision: &watch::Receiver<serde_json::Value>,
    now: Instant,
) -> Reply {
    match request {
        Request::Idle { idle_ms, source } => {
            let idle = Duration::from_millis(idle_ms);
            if idle > MAX_IDLE {
                return Reply::refused(format!("idle_ms {idle_ms} is more than a week"));
            }
            let source: String = source
                .unwrap_or_else(|| "session".into())
                .chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect();
            *feeds.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(FedIdle {
                idle,
                at: now,
                source,
            });
            Reply::Done
        }
        Request::Get {
            get: Item::Decision,
        } => Reply::Decision(decision.borrow().clone()),
        Request::Get {
            get: Item::Contribution,
        } => contribution(feeds),
        Request::Reload {
            reload: ReloadItem::Policy,
        } => match feeds.source.reload() {
            Ok(settings) => {
                tracing::info!("flotilla.toml reloaded");
                *feeds.policy.lock().unwrap_or_else(|e| e.into_inner()) = Some(settings.clone());
                Reply::Policy(Box::new(settings))
            }
            Err(e) => Reply::Refused {
                error: e.message,
                problems: Some(e.problems),
            },
        },
        Request::Pause { pause, secs, at } => match pause_request(pause, secs, at.as_deref()) {
            Ok(r) => {
                *feeds.manual.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                Reply::Done
            }
            Err(e) => Reply::refused(e),
        },
        Request::Resume { resume: true } => {
            *feeds.manual.lock().unwrap_or_else(|e| e.into_inner()) = Some(ManualRequest::Resume);
            Reply::Done
        }
        Request::Resume { resume: false } => Reply::refused("resume takes true"),
    }
}

/// Handles one request line; returns the reply line (without the newline).
pub(crate) fn handle(
    line: &str,
    feeds: &Feeds,
    decision: &watch::Receiver<serde_json::Value>,
    now: Instant,
) -> String {
    let reply = match serde_json::from_str::<Request>(line) {
        Ok(request) => answer(request, feeds, decision, now),
        Err(e) => Reply::refused(not_a_request(line, &e)),
    };
    serde_json::to_string(&reply).expect("plain data")
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

/// A client of the control channel of one agent: what `flotilla status`, `flotilla pause` and
/// the desktop app ask it through. Each request is a connection of its own.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// Why a request got no answer, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No agent answers on the channel (none runs, it is starting, or it hangs).
    #[error("{0}")]
    Unreachable(#[from] std::io::Error),
    /// The agent refused the request (and, for a reload, each problem of the file).
    #[error("{error}")]
    Refused {
        error: String,
        problems: Vec<crate::config::Problem>,
    },
    /// The agent answered with another item than the one asked for.
    #[error("the agent answered {0:?}, which is not what was asked")]
    Unexpected(Box<Reply>),
    /// The agent's answer does not read as this version's types (another version's agent).
    #[error("the agent's answer is unreadable (is it another version of Flotilla?): {0}")]
    Unreadable(String),
}

/// The decision as the control channel serves it (`{"get": "decision"}`): the politeness
/// loop's latest, with the session's link for an enrolled agent. Its JSON is the socket's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionView {
    #[serde(flatten)]
    pub published: crate::politeness::Published,
    /// The session's link, for an enrolled agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<crate::session::Link>,
    /// The link in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_text: Option<String>,
}

impl DecisionView {
    /// The view of `published` with the session's `link`, if the agent keeps one.
    pub fn new(
        published: crate::politeness::Published,
        link: Option<crate::session::Link>,
    ) -> DecisionView {
        DecisionView {
            session_text: link.as_ref().map(crate::session::describe),
            session: link,
            published,
        }
    }
}

impl Client {
    /// The client of the agent listening on `socket` (see [`socket_path`]).
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    /// The client of the enrolled agent of the home `dirs` describes.
    pub fn of(dirs: &flotilla_host::Dirs) -> Client {
        Client::new(socket_path(dirs))
    }

    /// Sends `request` and returns the reply, refusals included.
    pub async fn ask(&self, request: &Request) -> std::io::Result<Reply> {
        let line = serde_json::to_string(request).map_err(std::io::Error::other)?;
        let reply = exchange(&self.socket, &line).await?;
        serde_json::from_str(&reply).map_err(std::io::Error::other)
    }

    /// Sends `request`, a refusal being an error.
    async fn expect(&self, request: &Request) -> Result<Reply, AskError> {
        match self.ask(request).await? {
            Reply::Refused { error, problems } => Err(AskError::Refused {
                error,
                problems: problems.unwrap_or_default(),
            }),
            reply => Ok(reply),
        }
    }

    /// Sends a request answered with `{"ok": true}` alone (a pause, a resume, an idle reading).
    pub async fn done(&self, request: &Request) -> Result<(), AskError> {
        match self.expect(request).await? {
            Reply::Done => Ok(()),
            other => Err(AskError::Unexpected(Box::new(other))),
        }
    }

    /// The latest decision (`None` before the first tick).
    pub async fn decision(&self) -> Result<Option<DecisionView>, AskError> {
        match self
            .expect(&Request::Get {
                get: Item::Decision,
            })
            .await?
        {
            Reply::Decision(serde_json::Value::Null) | Reply::Done => Ok(None),
            Reply::Decision(d) => serde_json::from_value(d)
                .map(Some)
                .map_err(|e| AskError::Unreadable(e.to_string())),
            other => Err(AskError::Unexpected(Box::new(other))),
        }
    }

    /// What this machine contributed.
    pub async fn contribution(&self) -> Result<crate::outbox::Contribution, AskError> {
        match self
            .expect(&Request::Get {
                get: Item::Contribution,
            })
            .await?
        {
            Reply::Contribution(c) => Ok(c),
            other => Err(AskError::Unexpected(Box::new(other))),
        }
    }

    /// Has the agent read `flotilla.toml` again; the settings it applied.
    pub async fn reload_policy(&self) -> Result<flotilla_policy::Settings, AskError> {
        match self
            .expect(&Request::Reload {
                reload: ReloadItem::Policy,
            })
            .await?
        {
            Reply::Policy(p) => Ok(*p),
            other => Err(AskError::Unexpected(Box::new(other))),
        }
    }
}

/// Sends one request to the agent listening on `socket` (see [`socket_path`]) and returns its
/// reply, as JSON: for a request that [`Request`] has no words for (the tests of refusals).
pub async fn request(socket: &Path, req: &serde_json::Value) -> std::io::Result<serde_json::Value> {
    let reply = exchange(socket, &req.to_string()).await?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}

/// Sends one line and reads the reply line.
async fn exchange(socket: &Path, line: &str) -> std::io::Result<String> {
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
    w.write_all(format!("{line}\n").as_bytes()).await?;
    w.flush().await?;
    let mut reply = String::new();
    tokio::time::timeout(
        Duration::from_secs(3),
        BufReader::new(r).read_line(&mut reply),
    )
    .await
    .map_err(|_| no_answer())??;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Feeds, watch::Receiver<serde_json::Value>) {
        let (_tx, rx) = watch::channel(serde_json::json!({"target_cpus": 2}));
        (Feeds::default(), rx)
    }

    /// What the agent publishes reads back as the same value: the socket's JSON is the
    /// serialization of [`DecisionView`], and clients read it as that type.
    #[test]
    fn the_decision_view_reads_back_as_published() {
        use flotilla_policy::{Decision, Leaving, Pause, Reason};
        let published = crate::politeness::Published {
            decision: Decision {
                target_cpus: 0,
                pause: Pause::Now,
                reason: Reason::OnBattery { percent: Some(40) },
            },
            reason_en: "On battery (40%)".into(),
            reason_es: "Con batería (40%)".into(),
            enforcement: Some(crate::enforce::Enforcement {
                state: crate::enforce::EnforcementState::Error,
                advertised_cpus: Some(1.5),
                node_cpus: 4,
                failure: Some(flotilla_ray::Failure {
                    kind: flotilla_ray::FailureKind::VersionMismatch,
                    reason: "Ray refuses this node's versions".into(),
                }),
                ..Default::default()
            }),
            sensors: crate::sampler::SensorReport {
                idle_secs: crate::sampler::Shown {
                    value: Some(12.5),
                    from: "desktop".into(),
                },
                total_cpus: 4,
                ..Default::default()
            },
            sleep: crate::sleep::SleepReport {
                leaving: Some(Leaving::Sleep),
                back: None,
                keep_awake: true,
            },
        };
        let view = DecisionView::new(
            published,
            Some(crate::session::Link::Offline {
                error: "no route to host".into(),
                retry_in_ms: 4000,
            }),
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["decision"]["reason"]["code"], "on_battery", "{json}");
        assert_eq!(json["session"]["link"], "offline", "{json}");
        assert_eq!(
            json["enforcement"]["failure"]["kind"],
            "ray_version_mismatch"
        );
        let back: DecisionView = serde_json::from_value(json).unwrap();
        assert_eq!(back, view);
        assert!(
            view.session_text
                .is_some_and(|t| t.contains("no route to host"))
        );
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
            let (tx, rx) = watch::channel(serde_json::json!({
                "decision": {"target_cpus": 3, "pause": "none", "reason": {"code": "owner_active"}},
                "reason_en": "You're using this computer",
                "reason_es": "Estás usando este ordenador",
            }));
            let feeds = Feeds::default();
            let stop = CancellationToken::new();
            let task = serve(sock, feeds.clone(), rx.clone(), stop.clone())
                .await
                .unwrap();
            let reply = request(sock, &serde_json::json!({"get": "decision"}))
                .await
                .unwrap();
            assert_eq!(reply["decision"]["decision"]["target_cpus"], 3);
            let client = Client::new(sock);
            client.done(&Request::pause(PauseKind::Now)).await.unwrap();
            assert!(feeds.manual.lock().unwrap().is_some());
            let view = client.decision().await.unwrap().unwrap();
            assert_eq!(view.published.decision.target_cpus, 3);
            assert_eq!(view.published.enforcement, None);
            assert_eq!(view.session, None);
            let refused = client.contribution().await.unwrap_err();
            assert!(matches!(refused, AskError::Refused { .. }), "{refused}");

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

    /// The typed requests are the documented lines, and the replies read back as they were.
    #[test]
    fn the_types_are_the_protocol() {
        let lines = [
            (
                Request::Idle {
                    idle_ms: 1234,
                    source: Some("desktop".into()),
                },
                r#"{"idle_ms":1234,"source":"desktop"}"#,
            ),
            (
                Request::Get {
                    get: Item::Decision,
                },
                r#"{"get":"decision"}"#,
            ),
            (
                Request::Get {
                    get: Item::Contribution,
                },
                r#"{"get":"contribution"}"#,
            ),
            (
                Request::Reload {
                    reload: ReloadItem::Policy,
                },
                r#"{"reload":"policy"}"#,
            ),
            (Request::pause(PauseKind::Finish), r#"{"pause":"finish"}"#),
            (Request::pause(PauseKind::Now), r#"{"pause":"now"}"#),
            (Request::pause_for(3600), r#"{"pause":"for","secs":3600}"#),
            (
                Request::pause_until("08:00"),
                r#"{"pause":"until","at":"08:00"}"#,
            ),
            (Request::Resume { resume: true }, r#"{"resume":true}"#),
        ];
        for (request, line) in lines {
            assert_eq!(serde_json::to_string(&request).unwrap(), line);
            assert_eq!(serde_json::from_str::<Request>(line).unwrap(), request);
        }
        let (feeds, dec) = setup();
        let replies = [
            (r#"{"idle_ms": 5}"#, Reply::Done),
            (
                r#"{"get": "decision"}"#,
                Reply::Decision(serde_json::json!({"target_cpus": 2})),
            ),
            (
                r#"{"pause": "for", "secs": 5}"#,
                Reply::refused("secs 5 is outside 60..604800 (a minute to a week)"),
            ),
        ];
        for (line, expected) in replies {
            let text = handle(line, &feeds, &dec, Instant::now());
            assert_eq!(
                serde_json::from_str::<Reply>(&text).unwrap(),
                expected,
                "{text}"
            );
        }
        // A decision not made yet is a null decision, not a bare "ok".
        let (_tx, none) = watch::channel(serde_json::Value::Null);
        let text = handle(r#"{"get": "decision"}"#, &feeds, &none, Instant::now());
        assert_eq!(text, r#"{"ok":true,"decision":null}"#);
        assert_eq!(
            serde_json::from_str::<Reply>(&text).unwrap(),
            Reply::Decision(serde_json::Value::Null)
        );
        // An unknown item is named.
        let r = reply(r#"{"get": "secrets"}"#, &feeds, &dec);
        assert!(r["error"].as_str().unwrap().contains("\"secrets\""), "{r}");
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
