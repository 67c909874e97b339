//! The dashboard, built from `ui/` and embedded at compile time (see `build.rs`).
//!
//! Vite names every built asset under `assets/` after a hash of its content, so those are
//! cached for a year; `index.html` names the current ones and is revalidated on every load.
//! Any other path without a file extension is a route of the app and gets `index.html`.

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub(crate) struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The asset a request path names: the file itself, or `index.html` for the app's routes.
pub(crate) fn lookup(path: &str) -> Option<&'static Asset> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return find("index.html");
    }
    if let Some(a) = find(path) {
        return Some(a);
    }
    let last = path.rsplit('/').next().unwrap_or(path);
    if path.starts_with("api/") || last.contains('.') {
        None
    } else {
        find("index.html")
    }
}

pub(crate) fn cache_control(asset: &Asset) -> &'static str {
    if asset.path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// Serves the dashboard's files (the router's fallback: every path the API does not own).
pub(crate) async fn serve(method: axum::http::Method, uri: Uri) -> Response {
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return crate::api::error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path only answers GET",
        );
    }
    let Some(asset) = lookup(uri.path()) else {
        return crate::api::error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("nothing at {}", uri.path()),
        );
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control(asset)),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_dashboard_is_embedded_with_hashed_assets() {
        let index = lookup("/").expect("index.html is embedded");
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        assert_eq!(cache_control(index), "no-cache");
        let html = std::str::from_utf8(index.bytes).unwrap();
        let script = ASSETS
            .iter()
            .find(|a| a.path.starts_with("assets/") && a.path.ends_with(".js"))
            .expect("a script under assets/");
        assert!(html.contains(script.path), "{html}");
        assert_eq!(script.content_type, "text/javascript; charset=utf-8");
        assert_eq!(cache_control(script), "public, max-age=31536000, immutable");
    }

    #[test]
    fn app_routes_fall_back_to_the_index_but_files_and_the_api_do_not() {
        assert_eq!(lookup("/admin").unwrap().path, "index.html");
        assert_eq!(lookup("/nodes/w1").unwrap().path, "index.html");
        assert!(lookup("/assets/missing-abc.js").is_none());
        assert!(lookup("/api/v1/nothing").is_none());
    }
}
