//! The head's HTTP API and the dashboard.
//!
//! Read-only, for anyone who can reach the port: `GET /healthz`, `GET /api/v1/cluster` (the
//! merged snapshot), `GET /api/v1/events` (server-sent events: `agents` with every node's state
//! whenever it changes, at most four a second; `cluster`, the whole snapshot, whenever the head
//! reads Ray again, every 2 s; and `node` for each state change the registry records;
//! `?since=ID` replays the registry's events after that id), `GET /metrics` (Prometheus) and
//! the dashboard itself at `/` (see [`crate::ui`]).
//!
//! Admin, with `Authorization: Bearer <admin token>` (the token the control plane checks for
//! `Admin` gRPC calls, compared by [`ControlPlane::is_admin_token`]): `GET /api/v1/whoami`,
//! `POST /api/v1/nodes/{node}/pause` and `/resume`, `POST /api/v1/invites`,
//! `POST /api/v1/jobs/{id}/stop`. The request and reply bodies are in [`crate::dto`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flotilla_proto::v1::{self as pb, head_command::Command as Cmd};
use flotilla_ray::StateClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ClusterSnapshot;
use crate::dto::{
    CommandReply, InviteReply, InviteRequest, NodeEvent, PauseMode, PauseRequest, Whoami,
};
use crate::fleet::ControlPlane;
use crate::snapshot::snapshot;

/// The latest snapshot the head read from Ray (`None` before the first read), for the event
/// stream.
pub type Snapshots = watch::Receiver<Option<Arc<ClusterSnapshot>>>;

#[derive(Debug)]
struct ApiState {
    ray: StateClient,
    ray_address: String,
    gcs: Option<(std::net::SocketAddr, flotilla_ray::RayToken)>,
    fleet: Option<ControlPlane>,
    snapshots: Snapshots,
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ray: StateClient,
    ray_address: String,
    gcs: Option<(std::net::SocketAddr, flotilla_ray::RayToken)>,
    fleet: Option<ControlPlane>,
    snapshots: Snapshots,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(ApiState {
        ray,
        ray_address,
        gcs,
        fleet,
        snapshots,
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/events", get(events))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/nodes/{node}/pause", post(pause))
        .route("/api/v1/nodes/{node}/resume", post(resume))
        .route("/api/v1/invites", post(invite))
        .route("/api/v1/jobs/{id}/stop", post(stop_job))
        .route("/metrics", get(metrics))
        .fallback(crate::ui::serve)
        .with_state(Arc::new(state))
}

async fn healthz(State(s): State<Arc<ApiState>>) -> Response {
    if s.ray.gcs_healthy().await {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ray_unavailable",
            "the Ray head does not answer",
        )
    }
}

async fn cluster(State(s): State<Arc<ApiState>>) -> Response {
    match snapshot(&s.ray, &s.ray_address, s.gcs.as_ref()).await {
        Ok(mut snap) => {
            if let Some(f) = &s.fleet {
                snap.agents = f.agents();
                snap.python_version = f.python_version();
            }
            Json(snap).into_response()
        }
        Err(e) => to_response(&e),
    }
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    let mut text = s.fleet.as_ref().map(|f| f.metrics()).unwrap_or_default();
    if let Ok(snap) = snapshot(&s.ray, &s.ray_address, s.gcs.as_ref()).await {
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
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
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
    State(s): State<Arc<ApiState>>,
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
            let latest = snapshots.borrow_and_update().clone();
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

/// The one place where an error becomes an HTTP answer: a stable code plus a message.
fn to_response(e: &flotilla_ray::Error) -> Response {
    use flotilla_ray::Error as E;
    let (status, code) = match e {
        E::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "ray_unavailable"),
        E::Http {
            status: 401 | 403, ..
        } => (StatusCode::BAD_GATEWAY, "ray_auth"),
        _ => (StatusCode::BAD_GATEWAY, "ray_error"),
    };
    error_response(status, code, &e.to_string())
}

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
fn admin<'a>(s: &'a ApiState, headers: &HeaderMap) -> Result<&'a ControlPlane, Response> {
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
fn status_response(s: &tonic::Status) -> Response {
    use tonic::Code;
    let (status, code) = match s.code() {
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "bad_request"),
        Code::FailedPrecondition => (StatusCode::CONFLICT, "failed_precondition"),
        Code::Unauthenticated | Code::PermissionDenied => {
            return unauthorized(s.message());
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error_response(status, code, s.message())
}

/// A JSON body, where an empty body means the type's defaults.
#[allow(clippy::result_large_err)] // The error is the response itself.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("unreadable request body: {e}"),
        )
    })
}

async fn whoami(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
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
        Err(status) => status_response(&status),
    }
}

async fn pause(
    State(s): State<Arc<ApiState>>,
    Path(node): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let fleet = match admin(&s, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let req: PauseRequest = match body(&bytes) {
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
    State(s): State<Arc<ApiState>>,
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
    State(s): State<Arc<ApiState>>,
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

async fn invite(State(s): State<Arc<ApiState>>, headers: HeaderMap, bytes: Bytes) -> Response {
    let fleet = match admin(&s, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let req: InviteRequest = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let uses = req.uses.unwrap_or(1);
    let ttl = req
        .expires_secs
        .map_or(crate::fleet::DEFAULT_INVITE_TTL, Duration::from_secs);
    // The control plane checks both ranges, for every front end alike.
    let (code, expires_unix) = match fleet.invite(uses, ttl).await {
        Ok(made) => (made.code, made.expires_unix),
        Err(status) => return status_response(&status),
    };
    // The code carries the join secret: it goes to the admin only, never to the log.
    tracing::info!(uses, expires_unix, "invite made from the HTTP API");
    let qr_svg = qr_svg(&code);
    Json(InviteReply {
        code,
        expires_unix,
        uses,
        qr_svg,
    })
    .into_response()
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
        let router = router(ApiState {
            // Nothing listens there: these tests never reach Ray.
            ray: StateClient::new("http://127.0.0.1:9", None),
            ray_address: String::new(),
            gcs: None,
            fleet: Some(fleet.clone()),
            snapshots: watch::channel(None).1,
        });
        (router, fleet)
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(path);
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
        let (s, _) = call(
            &app,
            "POST",
            "/api/v1/invites",
            Some(&bearer),
            r#"{"uses": 0}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}
