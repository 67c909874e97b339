//! The head's HTTP API: `GET /healthz` and `GET /api/v1/cluster`.

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
