//! The head's HTTP API: `GET /healthz`, `GET /api/v1/cluster` (the merged snapshot),
//! `GET /api/v1/events` (server-sent events: `agents` with every node's state whenever it
//! changes, at most four a second, and `node` for each state change the registry records;
//! `?since=ID` replays the registry's events after that id) and `GET /metrics` (Prometheus).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flotilla_ray::StateClient;
use tokio_util::sync::CancellationToken;

use crate::snapshot::snapshot;

#[derive(Debug)]
struct ApiState {
    ray: StateClient,
    ray_address: String,
    gcs: Option<(std::net::SocketAddr, flotilla_ray::RayToken)>,
    fleet: Option<crate::fleet::ControlPlane>,
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ray: StateClient,
    ray_address: String,
    gcs: Option<(std::net::SocketAddr, flotilla_ray::RayToken)>,
    fleet: Option<crate::fleet::ControlPlane>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(ApiState {
        ray,
        ray_address,
        gcs,
        fleet,
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
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
    tokio::spawn(async move {
        let mut version = fleet.subscribe();
        loop {
            version.borrow_and_update();
            let agents = Event::default()
                .event("agents")
                .json_data(fleet.agents())
                .expect("plain data");
            if tx.send(Ok(agents)).await.is_err() {
                return;
            }
            if let Ok(events) = fleet.events(since, 500).await {
                for e in events {
                    since = e.id;
                    let at =
                        e.at.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64);
                    let data = serde_json::json!({
                        "id": e.id, "node_id": e.node_id.0, "at_unix_ms": at,
                        "kind": e.kind.as_str(), "state": e.state.as_str(), "reason": e.reason,
                    });
                    let event = Event::default()
                        .event("node")
                        .id(e.id.to_string())
                        .data(data.to_string());
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = closing.cancelled() => return,
                r = version.changed() => if r.is_err() { return },
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
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

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}
