//! The head's HTTP API and the dashboard.
//!
//! Read-only, for anyone who can reach the port: `GET /healthz`, `GET /api/v1/cluster` (the
//! merged snapshot), `GET /api/v1/events` (server-sent events: `agents` with every node's state
//! whenever it changes, at most four a second; `cluster`, the whole snapshot, whenever the head
//! reads Ray again, every 2 s; and `node` for each state change the registry records;
//! `?since=ID` replays the registry's events after that id), `GET /metrics` (Prometheus) and
//! the dashboard itself at `/` (see [`crate::ui`]).
//!
//! None of them asks Ray: the head reads Ray every 2 s in one task (see [`Latest`]) and these
//! routes serve the latest read, so a burst of requests costs Ray nothing. The snapshot's
//! `generated_at_ms` is when it was read (and the `Age` header how many seconds ago); before
//! a first read, or when reads have failed for [`STALE_AFTER`], the answer is a 503 with Ray's
//! reason.
//!
//! Admin, with `Authorization: Bearer <admin token>` (the token the control plane checks for
//! `Admin` gRPC calls, compared by [`ControlPlane::is_admin_token`]): `GET /api/v1/whoami`,
//! `POST /api/v1/nodes/{node}/pause` and `/resume`, `POST /api/v1/invites`,
//! `POST /api/v1/jobs/{id}/stop`. The token is checked from the headers before the body is
//! read, and a body is at most [`Limits::body_bytes`]. The request and reply bodies are in
//! [`crate::dto`].
//!
//! Every route, the dashboard's too, answers only requests whose `Host` is a loopback name or
//! address or one the head serves on ([`AllowedHosts`]): a web page on another name that
//! resolves to the head (DNS rebinding) gets a 403. Every error, from a handler or not (unknown
//! route, wrong method, a body too large, a timeout, a panic), is one JSON shape:
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! The server ([`serve`]) gives a client [`Limits::header_read`] to send a request's headers,
//! which also closes a kept-alive connection idle that long, [`Limits::request`] for the whole
//! request, and serves at most [`Limits::connections`] connections at once (more wait to be
//! accepted).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flotilla_proto::v1::{self as pb, head_command::Command as Cmd};
use flotilla_ray::StateClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ClusterSnapshot;
use crate::dto::{
    CommandReply, InviteReply, InviteRequest, InviteView, NodeEvent, PauseMode, PauseRequest,
    RevokeInviteReply, Whoami,
};
use crate::fleet::{ControlPlane, FleetError};

/// What the head last read from Ray, as the task that reads it every 2 s keeps it.
#[derive(Debug, Clone, Default)]
pub struct Latest {
    /// The latest snapshot read (`None` before the first); kept while later reads fail.
    pub snapshot: Option<Arc<ClusterSnapshot>>,
    /// Why the latest read failed; `None` when it succeeded (or none was made yet).
    pub failure: Option<ReadFailure>,
}

/// A failed read of Ray, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ReadFailure {
    /// The one place where Ray's error becomes an HTTP status and code.
    pub fn of(e: &flotilla_ray::Error) -> ReadFailure {
        use flotilla_ray::Error as E;
        let (status, code) = match e {
            E::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "ray_unavailable"),
            E::Http {
                status: 401 | 403, ..
            } => (StatusCode::BAD_GATEWAY, "ray_auth"),
            _ => (StatusCode::BAD_GATEWAY, "ray_error"),
        };
        ReadFailure {
            status,
            code,
            message: e.to_string(),
        }
    }
}

impl Latest {
    /// A successful read.
    pub fn read(snapshot: ClusterSnapshot) -> Latest {
        Latest {
            snapshot: Some(Arc::new(snapshot)),
            failure: None,
        }
    }

    /// This state after a failed read: the last snapshot stays, with the reason beside it.
    pub fn failed(&self, e: &flotilla_ray::Error) -> Latest {
        Latest {
            snapshot: self.snapshot.clone(),
            failure: Some(ReadFailure::of(e)),
        }
    }

    /// The snapshot to serve at `now_ms`, or the error to answer: none read yet, or the latest
    /// older than [`STALE_AFTER`] (Ray has not answered the head since).
    #[allow(clippy::result_large_err)] // The error is the response itself.
    fn fresh(&self, now_ms: u64) -> Result<&Arc<ClusterSnapshot>, Response> {
        let age_ms = |s: &ClusterSnapshot| now_ms.saturating_sub(s.generated_at_ms);
        match (&self.snapshot, &self.failure) {
            (Some(s), _) if age_ms(s) <= STALE_AFTER.as_millis() as u64 => Ok(s),
            (snap, Some(f)) => {
                let when = snap.as_ref().map_or_else(
                    || "has not read it yet".to_string(),
                    |s| format!("last read it {} s ago", age_ms(s) / 1000),
                );
                Err(error_response(
                    f.status,
                    f.code,
                    &format!("{} (the head reads Ray every 2 s and {when})", f.message),
                ))
            }
            (Some(s), None) => Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ray_unavailable",
                &format!(
                    "the head last read Ray {} s ago and has had no answer since",
                    age_ms(s) / 1000
                ),
            )),
            (None, None) => Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ray_unavailable",
                "the head has not read Ray yet (it reads it every 2 s); try again shortly",
            )),
        }
    }
}

/// How old the latest snapshot may be and still be served: past it, Ray has not answered the
/// head for that long and the API says so instead.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The latest read of Ray (see [`Latest`]), for the API and the event streams.
pub type Snapshots = watch::Receiver<Latest>;

/// The names and addresses the API answers to in a request's `Host` (without its port): every
/// loopback name and address (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`), plus the
/// ones given here: the addresses and names the head serves on, and those the person running
/// it adds (`FLOTILLA_API_HOSTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    names: BTreeSet<String>,
}

impl AllowedHosts {
    /// Loopback plus `names` (names or IP addresses; a port or brackets are dropped).
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> AllowedHosts {
        AllowedHosts {
            names: names
                .into_iter()
                .filter_map(|n| host_part(n.as_ref()))
                .collect(),
        }
    }

    /// Adds a name or an address.
    pub fn add(&mut self, name: &str) {
        if let Some(n) = host_part(name) {
            self.names.insert(n);
        }
    }

    /// Whether a request whose `Host` header is `host` (with or without a port) is answered.
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_part(host) else {
            return false;
        };
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            if ip.is_loopback() || self.names.contains(&ip.to_string()) {
                return true;
            }
        }
        self.names.contains(&name)
    }

    /// The allowed names besides loopback, for messages.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// The host of a `Host` header or a configured name: lower case, without a port, brackets or a
/// final dot; `None` when it is not a plausible host.
fn host_part(value: &str) -> Option<String> {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        inside
    } else if v.parse::<std::net::Ipv6Addr>().is_ok() {
        // A bare IPv6 address (a configured name; a `Host` header brackets it).
        v
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return None,
            None => v,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let plausible = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        && (!host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok());
    plausible.then(|| match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host,
    })
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The server's limits (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's headers, from connecting or from the previous answer.
    pub header_read: Duration,
    /// Time for the whole request until its answer starts (an event stream then runs on).
    pub request: Duration,
    /// Connections served at once.
    pub connections: usize,
    /// The largest request body read.
    pub body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            connections: 1024,
            body_bytes: 64 * 1024,
        }
    }
}

/// Everything the API serves from.
#[derive(Debug, Clone)]
pub struct Api {
    /// Ray's dashboard on the head's loopback: only stopping a job asks it.
    pub ray: StateClient,
    pub fleet: Option<ControlPlane>,
    pub snapshots: Snapshots,
    pub hosts: AllowedHosts,
    pub limits: Limits,
}

/// Serves the API on `listener` until `shutdown` is cancelled, then waits for the open
/// connections to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = api.limits;
    let app = router(api);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: the next accept may work.
                Err(e) => {
                    tracing::warn!("the API cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                answer(app.clone(), req.map(Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shutdown.cancelled() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    // Every connection holds a slot: all of them back means all connections are closed.
    let _all = slots.acquire_many(limits.connections as u32).await;
    Ok(())
}

/// One request through the router, where a panic becomes a JSON 500 (the connection and the
/// head go on).
async fn answer(app: Router, req: Request) -> Result<Response, std::convert::Infallible> {
    use tower::ServiceExt;
    match tokio::spawn(app.oneshot(req)).await {
        Ok(Ok(res)) => Ok(res),
        Ok(Err(never)) => match never {},
        Err(e) => {
            tracing::error!("an API request failed: {e}");
            Ok(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the head failed on this request (its log has the reason)",
            ))
        }
    }
}

/// The API as a service (what [`serve`] serves on each connection, after the connection's
/// own limits), for tests and the fuzz target.
pub fn router(api: Api) -> Router {
    let request_timeout = api.limits.request;
    let state = Arc::new(api);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/events", get(events))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/nodes/{node}/pause", post(pause))
        .route("/api/v1/nodes/{node}/resume", post(resume))
        .route("/api/v1/invites", post(invite).get(invites))
        .route("/api/v1/invites/{id}/revoke", post(revoke_invite))
        .route("/api/v1/jobs/{id}/stop", post(stop_job))
        .route("/metrics", get(metrics))
        .fallback(crate::ui::serve)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| within(request_timeout, req, next),
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .with_state(state)
}

/// Refuses a request whose `Host` (or absolute URI) names a host the head does not serve on.
async fn check_host(State(s): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let header = req.headers().get(header::HOST).map(|h| h.to_str());
    let named = req.uri().authority().map(|a| {
        a.as_str()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let refused = match (header, &named) {
        (Some(Err(_)), _) => Some("(not text)".to_string()),
        (Some(Ok(h)), _) if !s.hosts.allows(h) => Some(h.to_string()),
        (_, Some(n)) if !s.hosts.allows(n) => Some(n.clone()),
        // No `Host` at all: an HTTP/1.0 tool, never a browser.
        _ => None,
    };
    match refused {
        None => next.run(req).await,
        Some(host) => {
            tracing::debug!(host, "refused a request for another host");
            error_response(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                &format!(
                    "this head answers to loopback and the names and addresses it serves on, \
                     not {host:?}; to reach it by that name, start it with \
                     FLOTILLA_API_HOSTS={} (a comma-separated list)",
                    host_part(&host).unwrap_or_else(|| "name".into())
                ),
            )
        }
    }
}

/// Runs a request with a time limit for its answer to start.
async fn within(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => error_response(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            &format!("the request took more than {} s", limit.as_secs()),
        ),
    }
}

/// Gives an error that did not come from a handler (axum's own 404, 405, 413, 415 and
/// extractor rejections) the API's JSON shape, keeping its message.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_lowercase(),
        t => t.to_string(),
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let mut out = error_response(status, code, &message);
    // Keep what the error said besides its body (`Allow` on a 405).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Healthy while the head's latest read of Ray is fresh.
async fn healthz(State(s): State<Arc<Api>>) -> Response {
    match s.snapshots.borrow().fresh(now_ms()) {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response(),
        Err(r) => r,
    }
}

async fn cluster(State(s): State<Arc<Api>>) -> Response {
    let now = now_ms();
    let snap = match s.snapshots.borrow().fresh(now) {
        Ok(snap) => snap.clone(),
        Err(r) => return r,
    };
    let mut snap = ClusterSnapshot::clone(&snap);
    if let Some(f) = &s.fleet {
        snap.agents = f.agents();
        snap.python_version = f.python_version();
    }
    let age = now.saturating_sub(snap.generated_at_ms) / 1000;
    ([(header::AGE, age.to_string())], Json(snap)).into_response()
}

async fn metrics(State(s): State<Arc<Api>>) -> Response {
    let mut text = s.fleet.as_ref().map(|f| f.metrics()).unwrap_or_default();
    let snap = s.snapshots.borrow().fresh(now_ms()).ok().cloned();
    if let Some(snap) = snap {
        use std::fmt::Write;
        let t = &snap.tasks;
        let _ = writeln!(
            text,
            "# HELP flotilla_ray_tasks Ray tasks by state.\n# TYPE flotilla_ray_tasks gauge\n\
             flotilla_ray_tasks{{state=\"running\"}} {}\nflotilla_ray_tasks{{state=\"pending\"}} {}\n\
             flotilla_ray_tasks{{state=\"finished\"}} {}\nflotilla_ray_tasks{{state=\"failed\"}} {}",
            t.running, t.pending, t.finished, t.failed
        );
        let _ = writeln!(
            text,
            "# HELP flotilla_ray_nodes_alive Ray nodes alive.\n# TYPE flotilla_ray_nodes_alive gauge\n\
             flotilla_ray_nodes_alive {}",
            snap.totals.nodes_alive
        );
        let _ = writeln!(
            text,
            "# HELP flotilla_ray_read_timestamp_seconds When the head last read Ray.\n\
             # TYPE flotilla_ray_read_timestamp_seconds gauge\n\
             flotilla_ray_read_timestamp_seconds {}",
            snap.generated_at_ms as f64 / 1000.0
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct EventsQuery {
    since: Option<i64>,
}

async fn events(
    State(s): State<Arc<Api>>,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Some(fleet) = s.fleet.clone() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "no_control_plane",
            "this head has no control plane",
        );
    };
    let mut since = match q.since {
        Some(id) => id,
        None => fleet.last_event_id().await.unwrap_or(0),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(16);
    let closing = fleet.closing();
    let mut snapshots = s.snapshots.clone();
    tokio::spawn(async move {
        let mut version = fleet.subscribe();
        // The first event tells the browser to reconnect within a second when the head goes.
        let mut retry = Some(Duration::from_secs(1));
        let mut sent: Option<Arc<ClusterSnapshot>> = None;
        loop {
            version.borrow_and_update();
            let mut agents = Event::default()
                .event("agents")
                .json_data(fleet.agents())
                .expect("plain data");
            if let Some(r) = retry.take() {
                agents = agents.retry(r);
            }
            if tx.send(Ok(agents)).await.is_err() {
                return;
            }
            // Compared by identity: `changed()` below may already have marked it seen.
            let latest = snapshots.borrow_and_update().snapshot.clone();
            if let Some(snap) = latest.filter(|l| !sent.as_ref().is_some_and(|s| Arc::ptr_eq(s, l)))
            {
                let mut full = ClusterSnapshot::clone(&snap);
                full.agents = fleet.agents();
                full.python_version = fleet.python_version();
                sent = Some(snap);
                let event = Event::default()
                    .event("cluster")
                    .json_data(full)
                    .expect("plain data");
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if let Ok(events) = fleet.events(since, 500).await {
                for e in events {
                    since = e.id;
                    let data = NodeEvent {
                        id: e.id,
                        node_id: e.node_id.0,
                        at_unix_ms: e
                            .at
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                        kind: e.kind.as_str().into(),
                        state: e.state.as_str().into(),
                        reason: e.reason,
                    };
                    let event = Event::default()
                        .event("node")
                        .id(e.id.to_string())
                        .json_data(data)
                        .expect("plain data");
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = closing.cancelled() => return,
                r = version.changed() => if r.is_err() { return },
                r = snapshots.changed() => if r.is_err() { return },
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The one place where Ray's error becomes an HTTP answer: a stable code plus a message.
fn to_response(e: &flotilla_ray::Error) -> Response {
    let f = ReadFailure::of(e);
    error_response(f.status, f.code, &f.message)
}

/// The API's one error shape: a stable code plus a message.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The control plane, when the request carries its admin token; otherwise the 401 (or 404 on a
/// head without a control plane) to answer.
#[allow(clippy::result_large_err)] // The error is the response itself.
fn admin<'a>(s: &'a Api, headers: &HeaderMap) -> Result<&'a ControlPlane, Response> {
    let Some(fleet) = s.fleet.as_ref() else {
        return Err(error_response(
            StatusCode::NOT_FOUND,
            "no_control_plane",
            "this head has no control plane",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if fleet.is_admin_token(token) => Ok(fleet),
        Some(_) => Err(unauthorized(
            "wrong admin token: copy it again from the head's machine \
             (`flotilla secret get flotilla.admin-token --reveal`)",
        )),
        None => Err(unauthorized(
            "this call needs the admin token: `Authorization: Bearer <token>`",
        )),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The one place where a control-plane refusal becomes an HTTP answer.
fn status_response(e: &FleetError) -> Response {
    let (status, code) = match e {
        FleetError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        FleetError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        FleetError::FailedPrecondition(_) => (StatusCode::CONFLICT, "failed_precondition"),
        FleetError::Unauthenticated(_) | FleetError::PermissionDenied(_) => {
            return unauthorized(e.message());
        }
        FleetError::ResourceExhausted(_) | FleetError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    };
    error_response(status, code, e.message())
}

/// A request's JSON body, read only now (after the caller checked the token) and at most
/// `limit` bytes; an empty body means the type's defaults.
#[allow(clippy::result_large_err)] // The error is the response itself.
async fn body<T: serde::de::DeserializeOwned + Default>(
    body: Body,
    limit: usize,
) -> Result<T, Response> {
    use tokio_stream::StreamExt;
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("a request body is at most {limit} bytes"),
        )
    };
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| {
            error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("unreadable request body: {e}"),
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("unreadable request body: {e}"),
        )
    })
}

async fn whoami(State(s): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Json(Whoami { admin: false }).into_response();
    }
    match admin(&s, &headers) {
        Ok(_) => Json(Whoami { admin: true }).into_response(),
        Err(r) => r,
    }
}

/// Longest pause or invite the API accepts: a year.
const MAX_SECS: u64 = 366 * 24 * 3600;

fn send_command(fleet: &ControlPlane, node: &str, command: Cmd) -> Response {
    let command = pb::HeadCommand {
        command: Some(command),
    };
    match fleet.command(node, command) {
        Ok((id, name, delivered)) => Json(CommandReply {
            node_id: id.0,
            name,
            delivered,
        })
        .into_response(),
        Err(refusal) => status_response(&refusal),
    }
}

async fn pause(
    State(s): State<Arc<Api>>,
    Path(node): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let fleet = match admin(&s, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let req: PauseRequest = match body(request, s.limits.body_bytes).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let until_unix_ms = match req.for_secs {
        None => 0,
        Some(secs @ 1..=MAX_SECS) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            now + secs * 1000
        }
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "for_secs must be between 1 and a year",
            );
        }
    };
    let mode = match req.mode.unwrap_or_default() {
        PauseMode::Now => pb::PauseMode::Now,
        PauseMode::Finish => pb::PauseMode::Finish,
    };
    tracing::info!(node, ?mode, until_unix_ms, "pause from the HTTP API");
    send_command(
        fleet,
        &node,
        Cmd::Pause(pb::Pause {
            until_unix_ms,
            mode: mode as i32,
            reason: None,
        }),
    )
}

async fn resume(
    State(s): State<Arc<Api>>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Response {
    let fleet = match admin(&s, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    tracing::info!(node, "resume from the HTTP API");
    send_command(fleet, &node, Cmd::Resume(pb::Resume {}))
}

/// Asks Ray to stop a job (Ray ends its driver and tasks; the snapshot shows it STOPPED).
async fn stop_job(
    State(s): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&s, &headers) {
        return r;
    }
    tracing::info!(job = id, "stop from the HTTP API");
    match s.ray.stop_job(&id).await {
        Ok(stopped) => Json(crate::dto::StopJobReply { id, stopped }).into_response(),
        Err(flotilla_ray::Error::InvalidArgument { .. }) => error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not a Ray job id (letters, digits, `_` and `-`)",
        ),
        Err(flotilla_ray::Error::Http { status: 404, .. }) => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("the cluster has no job {id:?}"),
        ),
        Err(e) => to_response(&e),
    }
}

async fn invite(State(s): State<Arc<Api>>, headers: HeaderMap, request: Body) -> Response {
    let fleet = match admin(&s, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let req: InviteRequest = match body(request, s.limits.body_bytes).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let uses = req.uses.unwrap_or(1);
    let ttl = req
        .expires_secs
        .map_or(crate::fleet::DEFAULT_INVITE_TTL, Duration::from_secs);
    // The control plane checks both ranges, for every front end alike.
    let made = match fleet.invite(uses, ttl).await {
        Ok(made) => made,
        Err(refusal) => return status_response(&refusal),
    };
    // The code carries the join secret: it goes to the admin only, never to the log.
    tracing::info!(
        uses,
        expires_unix = made.expires_unix,
        "invite made from the HTTP API"
    );
    Json(InviteReply {
        qr_svg: qr_svg(&made.code),
        code: made.code,
        id: made.id.to_string(),
        expires_unix: made.expires_unix,
        uses: made.uses,
    })
    .into_response()
}

/// `GET /api/v1/invites`: the join codes the head made, newest first (admin).
async fn invites(State(s): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let fleet = match admin(&s, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let now = std::time::SystemTime::now();
    match fleet.invites().await {
        Ok(list) => Json(
            list.into_iter()
                .map(|i| InviteView {
                    id: i.id.to_string(),
                    state: i.status(now).to_string(),
                    created_unix: unix(i.created_at),
                    expires_unix: unix(i.expires_at),
                    uses: i.uses,
                    uses_left: i.uses_left,
                    revoked_unix: i.revoked_at.map(unix),
                    joined: i.joined,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(refusal) => status_response(&refusal),
    }
}

/// `POST /api/v1/invites/{id}/revoke`: withdraws a join code (admin).
async fn revoke_invite(
    State(s): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let fleet = match admin(&s, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match fleet.revoke_invite(&id).await {
        Ok(revoked) => {
            tracing::info!(invite = id, revoked, "invite withdrawn from the HTTP API");
            Json(RevokeInviteReply { id, revoked }).into_response()
        }
        Err(refusal) => status_response(&refusal),
    }
}

/// The QR code of a join code as an SVG document (empty if the code cannot be drawn), for the
/// dashboards to show beside the code.
pub fn qr_svg(code: &str) -> String {
    match qrcode::QrCode::new(code.as_bytes()) {
        Ok(qr) => qr
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const TOKEN: &str = "the-admin-token";

    async fn app() -> (Router, ControlPlane) {
        let fleet = ControlPlane::new(crate::fleet::FleetConfig {
            registry: Arc::new(crate::registry::Registry::open_in_memory().unwrap()),
            ray: crate::fleet::RayInfo {
                gcs_addresses: vec!["10.0.0.1:6379".into()],
                ray_version: "2.60.0".into(),
                python_version: "3.11.7".into(),
                token: flotilla_ray::RayToken::generate(),
            },
            addresses: vec!["10.0.0.1:7470".parse().unwrap()],
            fingerprint: flotilla_proto::Fingerprint([7; 32]),
            admin_token: flotilla_secrets::Secret::from(TOKEN),
            policy_toml: String::new(),
        })
        .unwrap();
        fleet.enroll_local("studio", 8).await.unwrap();
        let snapshots = watch::channel(Latest::read(fixture())).1;
        (api(Some(fleet.clone()), snapshots, nowhere()), fleet)
    }

    /// A Ray dashboard that is not there: these tests never reach Ray.
    fn nowhere() -> StateClient {
        StateClient::new("http://127.0.0.1:9", None)
    }

    fn api(fleet: Option<ControlPlane>, snapshots: Snapshots, ray: StateClient) -> Router {
        router(Api {
            ray,
            fleet,
            snapshots,
            hosts: AllowedHosts::new(["10.0.0.1", "studio.tail1234.ts.net"]),
            limits: Limits::default(),
        })
    }

    /// A snapshot read just now.
    fn fixture() -> ClusterSnapshot {
        ClusterSnapshot {
            ray_version: "2.60.0".into(),
            ray_address: "10.0.0.1:6379".into(),
            generated_at_ms: now_ms(),
            totals: crate::Totals {
                nodes_alive: 2,
                ..Default::default()
            },
            tasks: crate::TaskTotals {
                running: 3,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:7471");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn admin_calls_need_the_admin_token_as_a_bearer() {
        let (app, _) = app().await;
        let bearer = format!("Bearer {TOKEN}");
        let (s, v) = call(&app, "GET", "/api/v1/whoami", None, "").await;
        assert_eq!(
            (s, v),
            (StatusCode::OK, serde_json::json!({"admin": false}))
        );
        let (s, v) = call(&app, "GET", "/api/v1/whoami", Some(&bearer), "").await;
        assert_eq!((s, v), (StatusCode::OK, serde_json::json!({"admin": true})));
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Admin the-admin-token"),
            Some("Bearer "),
        ] {
            for (method, path) in [
                ("POST", "/api/v1/nodes/studio/pause"),
                ("POST", "/api/v1/nodes/studio/resume"),
                ("POST", "/api/v1/invites"),
            ] {
                let (s, v) = call(&app, method, path, auth, "").await;
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?} {path}: {v}");
                assert_eq!(v["error"]["code"], "unauthorized");
            }
        }
    }

    #[tokio::test]
    async fn an_admin_pauses_resumes_and_invites() {
        let (app, fleet) = app().await;
        let bearer = format!("Bearer {TOKEN}");
        let id = fleet.agents()[0].node_id;
        let (s, v) = call(
            &app,
            "POST",
            "/api/v1/nodes/studio/pause",
            Some(&bearer),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // Not connected: the head keeps it for when the node reconnects.
        assert_eq!(
            v,
            serde_json::json!({"node_id": id, "name": "studio", "delivered": false})
        );
        let body = r#"{"mode": "finish", "for_secs": 3600}"#;
        let path = format!("/api/v1/nodes/{id}/pause");
        let (s, v) = call(&app, "POST", &path, Some(&bearer), body).await;
        assert_eq!(
            (s, &v["name"]),
            (StatusCode::OK, &serde_json::json!("studio"))
        );
        let (s, _) = call(
            &app,
            "POST",
            "/api/v1/nodes/studio/resume",
            Some(&bearer),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);

        for (body, why) in [
            (r#"{"mode": "later"}"#, "unknown mode"),
            (r#"{"for_secs": 0}"#, "zero duration"),
            (r#"{"colour": "red"}"#, "unknown field"),
            ("not json", "not JSON"),
        ] {
            let (s, v) = call(
                &app,
                "POST",
                "/api/v1/nodes/studio/pause",
                Some(&bearer),
                body,
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{why}: {v}");
            assert_eq!(v["error"]["code"], "bad_request");
        }
        let (s, v) = call(
            &app,
            "POST",
            "/api/v1/nodes/nobody/pause",
            Some(&bearer),
            "",
        )
        .await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (StatusCode::NOT_FOUND, &serde_json::json!("not_found"))
        );

        let (s, v) = call(
            &app,
            "POST",
            "/api/v1/invites",
            Some(&bearer),
            r#"{"uses": 3}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let code = v["code"].as_str().unwrap();
        assert!(code.starts_with("flot1-"), "{code}");
        assert_eq!(v["uses"], 3);
        assert!(v["qr_svg"].as_str().unwrap().starts_with("<?xml"), "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        for bad in [
            r#"{"uses": 0}"#,
            r#"{"uses": 10001}"#,
            r#"{"expires_secs": 0}"#,
            r#"{"expires_secs": 86400000}"#,
        ] {
            let (s, v) = call(&app, "POST", "/api/v1/invites", Some(&bearer), bad).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains("invite"),
                "{v}"
            );
        }

        // Listed (never with its secret) and withdrawn, by the admin only.
        let (s, _) = call(&app, "GET", "/api/v1/invites", None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, list) = call(&app, "GET", "/api/v1/invites", Some(&bearer), "").await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list[0]["id"], id.as_str());
        assert_eq!(list[0]["state"], "usable");
        assert_eq!(
            (&list[0]["uses"], &list[0]["uses_left"]),
            (&3.into(), &3.into())
        );
        assert!(!list.to_string().contains(code.trim_start_matches("flot1-")));
        let revoke = format!("/api/v1/invites/{id}/revoke");
        let (s, _) = call(&app, "POST", &revoke, None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, v) = call(&app, "POST", &revoke, Some(&bearer), "").await;
        assert_eq!((s, &v["revoked"]), (StatusCode::OK, &true.into()), "{v}");
        let (s, v) = call(&app, "POST", &revoke, Some(&bearer), "").await;
        assert_eq!((s, &v["revoked"]), (StatusCode::OK, &false.into()), "{v}");
        let (_, list) = call(&app, "GET", "/api/v1/invites", Some(&bearer), "").await;
        assert_eq!(list[0]["state"], "withdrawn", "{list}");
        let (s, v) = call(
            &app,
            "POST",
            "/api/v1/invites/999/revoke",
            Some(&bearer),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, _) = call(
            &app,
            "POST",
            "/api/v1/invites/abc/revoke",
            Some(&bearer),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }

    /// The answer of `app` to `req`: status, the JSON body (`Null` when not JSON) and the raw
    /// text.
    async fn send(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value, String) {
        let res = answer(app.clone(), req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or_default(),
            text,
        )
    }

    fn get_with_host(path: &str, host: &str) -> Request<Body> {
        Request::builder()
            .uri(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    }

    /// An error answer in the API's one shape, with this code.
    #[track_caller]
    fn assert_error(v: &serde_json::Value, code: &str) {
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }

    #[test]
    fn host_headers_are_read_with_or_without_a_port() {
        for (given, host) in [
            ("localhost", Some("localhost")),
            ("LocalHost:7471", Some("localhost")),
            ("studio.tail1234.ts.net.", Some("studio.tail1234.ts.net")),
            ("10.0.0.1:7471", Some("10.0.0.1")),
            ("[::1]:7471", Some("::1")),
            ("[::1]", Some("::1")),
            ("::1", Some("::1")),
            ("[0:0::1]", Some("::1")),
            ("[::1]x", None),
            ("[nothing]", None),
            ("10.0.0.1:port", None),
            ("a:1:2", None),
            ("", None),
            ("evil.example/path", None),
            ("user@evil.example", None),
        ] {
            assert_eq!(host_part(given).as_deref(), host, "{given:?}");
        }
    }

    #[test]
    fn loopback_and_the_served_names_are_allowed_and_no_other() {
        let hosts = AllowedHosts::new(["10.0.0.1", "Studio.tail1234.ts.net", "[fd7a::5]:80"]);
        for allowed in [
            "localhost",
            "localhost:7471",
            "app.localhost",
            "127.0.0.1",
            "127.0.0.1:7471",
            "127.9.8.7:80",
            "[::1]:7471",
            "[::ffff:127.0.0.1]",
            "10.0.0.1:7471",
            "[::ffff:10.0.0.1]:7471",
            "studio.tail1234.ts.net",
            "STUDIO.tail1234.ts.net.:7471",
            "[fd7a::5]",
        ] {
            assert!(hosts.allows(allowed), "{allowed}");
        }
        for refused in [
            "evil.example",
            "evil.example:7471",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.2",
            "10.0.0.1.nip.io",
            "studio",
            "[::2]",
            "0.0.0.0",
            "",
            "10.0.0.1:7471:1",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }

    #[tokio::test]
    async fn every_route_refuses_a_foreign_host() {
        let (app, _) = app().await;
        let routes = [
            ("GET", "/"),
            ("GET", "/admin"),
            ("GET", "/assets/index.js"),
            ("GET", "/healthz"),
            ("GET", "/api/v1/cluster"),
            ("GET", "/api/v1/events"),
            ("GET", "/api/v1/whoami"),
            ("GET", "/metrics"),
            ("GET", "/api/v1/nothing"),
            ("POST", "/api/v1/invites"),
            ("POST", "/api/v1/nodes/studio/pause"),
            ("POST", "/api/v1/jobs/raysubmit_1/stop"),
        ];
        for (method, path) in routes {
            for host in ["evil.example", "evil.example:7471", "10.0.0.99:7471"] {
                let req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header(header::HOST, host)
                    .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                    .body(Body::empty())
                    .unwrap();
                let (s, v, _) = send(&app, req).await;
                assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path} {host}: {v}");
                assert_error(&v, "host_not_allowed");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("FLOTILLA_API_HOSTS="),
                    "{v}"
                );
            }
        }
        // An absolute URI naming another host is refused too, whatever `Host` says.
        let req = Request::builder()
            .uri("http://evil.example/api/v1/cluster")
            .header(header::HOST, "localhost")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, req).await.0, StatusCode::FORBIDDEN);
        // The served names get the answer.
        for host in ["localhost:7471", "10.0.0.1:7471", "studio.tail1234.ts.net"] {
            let (s, v, _) = send(&app, get_with_host("/api/v1/cluster", host)).await;
            assert_eq!(s, StatusCode::OK, "{host}: {v}");
            assert_eq!(v["ray_version"], "2.60.0");
        }
    }

    #[tokio::test]
    async fn the_cluster_and_metrics_come_from_the_latest_read_and_say_when_there_is_none() {
        let (tx, rx) = watch::channel(Latest::default());
        let app = api(None, rx, nowhere());
        // Before a first read: 503, in the API's shape, for every route that shows Ray's state.
        for path in ["/api/v1/cluster", "/healthz"] {
            let (s, v, _) = send(&app, get_with_host(path, "localhost")).await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{path}: {v}");
            assert_error(&v, "ray_unavailable");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("not read Ray yet")
            );
        }
        let (s, _, text) = send(&app, get_with_host("/metrics", "localhost")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(!text.contains("flotilla_ray_tasks"), "{text}");

        // A failed first read: Ray's reason.
        let refused = flotilla_ray::Error::Unreachable {
            url: "http://127.0.0.1:8265/nodes".into(),
            detail: "connection refused".into(),
        };
        tx.send_modify(|l| *l = l.failed(&refused));
        let (s, v, _) = send(&app, get_with_host("/api/v1/cluster", "localhost")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert_error(&v, "ray_unavailable");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("connection refused"), "{message}");

        // A read: served as read, with its age; a later failed read keeps it while it is fresh.
        tx.send_replace(Latest::read(fixture()));
        tx.send_modify(|l| *l = l.failed(&refused));
        let res = answer(app.clone(), get_with_host("/api/v1/cluster", "localhost"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::AGE], "0");
        let (_, _, text) = send(&app, get_with_host("/metrics", "localhost")).await;
        assert!(
            text.contains("flotilla_ray_tasks{state=\"running\"} 3"),
            "{text}"
        );
        assert!(text.contains("flotilla_ray_nodes_alive 2"), "{text}");

        // Too old: Ray has not answered for longer than the API serves a snapshot.
        let mut old = fixture();
        old.generated_at_ms -= STALE_AFTER.as_millis() as u64 + 5000;
        tx.send_replace(Latest::read(old));
        let (s, v, _) = send(&app, get_with_host("/api/v1/cluster", "localhost")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert_error(&v, "ray_unavailable");
        tx.send_modify(|l| *l = l.failed(&refused));
        let (s, v, _) = send(&app, get_with_host("/api/v1/cluster", "localhost")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("connection refused") && message.contains("35 s ago"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn errors_outside_the_handlers_have_the_json_shape() {
        let (app, _) = app().await;
        let bearer = format!("Bearer {TOKEN}");
        let cases = [
            ("GET", "/api/v1/nothing", StatusCode::NOT_FOUND, "not_found"),
            (
                "GET",
                "/assets/nothing-1.js",
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                "PUT",
                "/api/v1/invites",
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                "DELETE",
                "/api/v1/cluster",
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                "GET",
                "/api/v1/events?since=abc",
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
        ];
        for (method, path, status, code) in cases {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, "localhost")
                .body(Body::empty())
                .unwrap();
            let (s, v, text) = send(&app, req).await;
            assert_eq!(s, status, "{method} {path}: {text}");
            assert_error(&v, code);
        }
        // A body over the limit, with the token.
        let big = "x".repeat(Limits::default().body_bytes + 1);
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/invites")
            .header(header::HOST, "localhost")
            .header(header::AUTHORIZATION, &bearer)
            .body(Body::from(big))
            .unwrap();
        let (s, v, _) = send(&app, req).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert_error(&v, "too_large");
        // A panic in a handler.
        let panicking = Router::new().route(
            "/",
            get(|| async {
                if now_ms() > 0 {
                    panic!("a handler's bug");
                }
                ""
            }),
        );
        let (s, v, _) = send(&panicking, get_with_host("/", "localhost")).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_error(&v, "internal");
    }

    /// A request body that never arrives: a slow client, or one that sends headers only.
    fn endless_body() -> Body {
        Body::from_stream(futures_pending())
    }

    fn futures_pending() -> impl tokio_stream::Stream<Item = Result<Bytes, std::io::Error>> {
        tokio_stream::pending()
    }

    #[tokio::test]
    async fn the_token_is_checked_before_the_body_is_read_and_the_request_has_a_time_limit() {
        let fleet = app().await.1;
        let limits = Limits {
            request: Duration::from_millis(300),
            ..Limits::default()
        };
        let app = router(Api {
            ray: nowhere(),
            fleet: Some(fleet),
            snapshots: watch::channel(Latest::read(fixture())).1,
            hosts: AllowedHosts::default(),
            limits,
        });
        for path in ["/api/v1/invites", "/api/v1/nodes/studio/pause"] {
            for auth in [None, Some("Bearer wrong")] {
                let mut req = Request::builder()
                    .method("POST")
                    .uri(path)
                    .header(header::HOST, "localhost");
                if let Some(a) = auth {
                    req = req.header(header::AUTHORIZATION, a);
                }
                let (s, v, _) = send(&app, req.body(endless_body()).unwrap()).await;
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} {auth:?}: {v}");
                assert_error(&v, "unauthorized");
            }
            // With the token, the body is awaited, within the request's time limit.
            let req = Request::builder()
                .method("POST")
                .uri(path)
                .header(header::HOST, "localhost")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(endless_body())
                .unwrap();
            let (s, v, _) = send(&app, req).await;
            assert_eq!(s, StatusCode::REQUEST_TIMEOUT, "{path}: {v}");
            assert_error(&v, "timeout");
        }
    }

    /// Counts the requests that reach it and answers each after a while with a 503, as a Ray
    /// dashboard under load does. (A stand-in: a real Ray head cannot run in a unit test; the
    /// CLI's `api` test bursts a real head.)
    async fn counting_ray() -> (StateClient, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let ray = Router::new().fallback(move || {
            let hits = counted.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                StatusCode::SERVICE_UNAVAILABLE
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, ray).await });
        (StateClient::new(base, None), hits)
    }

    /// One HTTP/1.1 request on its own connection: the status (0 when the connection failed)
    /// and the body.
    async fn http_get(addr: std::net::SocketAddr, path: &str, host: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            return (0, String::new());
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return (0, String::new());
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_string())
    }

    async fn start(api: Api) -> (std::net::SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, api, stop.clone()));
        (addr, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_500_is_answered_without_asking_ray() {
        let (ray, hits) = counting_ray().await;
        let fleet = app().await.1;
        let (reads, snapshots) = watch::channel(Latest::read(fixture()));
        let (addr, stop) = start(Api {
            ray,
            fleet: Some(fleet),
            snapshots,
            hosts: AllowedHosts::default(),
            limits: Limits::default(),
        })
        .await;
        for path in ["/api/v1/cluster", "/metrics", "/healthz"] {
            // A fresh read before each burst, as the head's poller makes every 2 s, so that a
            // slow machine (a burst may take seconds under emulation) never sees it go stale.
            reads.send_replace(Latest::read(fixture()));
            let burst: Vec<_> = (0..500)
                .map(|_| tokio::spawn(http_get(addr, path, "127.0.0.1")))
                .collect();
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            for r in burst {
                *statuses.entry(r.await.unwrap().0).or_default() += 1;
            }
            assert_eq!(statuses, [(200, 500)].into(), "{path}");
        }
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "requests asked Ray"
        );
        // A foreign host is refused by the real server too.
        let (status, body) = http_get(addr, "/api/v1/cluster", "evil.example:7471").await;
        assert_eq!(status, 403, "{body}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_silent_or_idle_connection_is_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = Limits {
            header_read: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, stop) = start(Api {
            ray: nowhere(),
            fleet: None,
            snapshots: watch::channel(Latest::read(fixture())).1,
            hosts: AllowedHosts::default(),
            limits,
        })
        .await;
        // The guard only ends a test that would otherwise hang; the server's limit is 300 ms.
        let guard = Duration::from_secs(20);
        // Half a request line, then nothing.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/v1/clu").await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(guard, s.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a connection with half a request stayed open");
        // A kept-alive connection after its answer.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let read = tokio::time::timeout(guard, s.read_to_end(&mut raw)).await;
        assert!(read.is_ok(), "an idle kept-alive connection stayed open");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        stop.cancel();
    }
}
