//! The head's HTTP API, as anyone who reaches its port can call it: any bytes are parsed as an
//! HTTP/1 request (as the server's parser does: method, target, headers, then the body) and,
//! when they parse, go through the API's whole router (host check, time limit, routes, the
//! dashboard's files) against a fixed snapshot and a control plane with one node. Nothing
//! panics, and every error answer is the API's JSON shape.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, header};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct World {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(async {
            let fleet = flotilla_head::fleet::ControlPlane::new(flotilla_head::fleet::FleetConfig {
                registry: Arc::new(flotilla_head::registry::Registry::open_in_memory().unwrap()),
                ray: flotilla_head::fleet::RayInfo {
                    gcs_addresses: vec!["10.0.0.1:6379".into()],
                    ray_version: "2.60.0".into(),
                    python_version: "3.11.7".into(),
                    token: flotilla_ray::RayToken::generate(),
                },
                addresses: vec!["10.0.0.1:7470".parse().unwrap()],
                fingerprint: flotilla_proto::Fingerprint([7; 32]),
                admin_token: flotilla_secrets::Secret::from("fuzz-admin-token"),
                policy_toml: String::new(),
            })
            .unwrap();
            fleet.enroll_local("studio", 8).await.unwrap();
            let snapshot = flotilla_head::ClusterSnapshot {
                ray_version: "2.60.0".into(),
                // Far in the future: never stale while the target runs.
                generated_at_ms: u64::MAX / 2,
                ..Default::default()
            };
            flotilla_head::router(flotilla_head::Api {
                // Nothing listens there: stopping a job fails at once.
                ray: flotilla_ray::StateClient::new("http://127.0.0.1:9", None),
                fleet: Some(fleet),
                snapshots: tokio::sync::watch::channel(flotilla_head::Latest::read(snapshot)).1,
                hosts: flotilla_head::AllowedHosts::new(["10.0.0.1", "studio.example.ts.net"]),
                limits: flotilla_head::Limits::default(),
            })
        });
        World { rt, app }
    })
}

/// The request `data` holds, if it parses as the server's HTTP/1 parser would read it.
fn parse(data: &[u8]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(data).ok()? else {
        return None;
    };
    let mut builder = Request::builder()
        .method(req.method?)
        .uri(req.path?);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder.body(Body::from(data[len..].to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = parse(data) else {
        return;
    };
    let w = world();
    let head = req.method() == axum::http::Method::HEAD;
    w.rt.block_on(async {
        let res = w.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let kind = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if kind.starts_with("text/event-stream") {
            // An event stream runs on: its start is the answer.
            assert!(status.is_success(), "{status}");
            return;
        }
        let body = axum::body::to_bytes(res.into_body(), 8 << 20).await.unwrap();
        if head {
            // The answer to HEAD is the headers of GET's, without its body.
            assert!(body.is_empty(), "{status}: a body for HEAD");
            return;
        }
        if status.is_client_error() || status.is_server_error() {
            assert!(kind.starts_with("application/json"), "{status} {kind}");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"]["code"].is_string(), "{status} {v}");
            assert!(v["error"]["message"].is_string(), "{status} {v}");
        }
    });
});
