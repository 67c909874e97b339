//! Embeds the dashboard (`ui/`, a Svelte + Vite app) into the head.
//!
//! The built files come from `ui_dist.rs` (`ui/dist`, built when needed). The result is
//! `$OUT_DIR/ui_assets.rs`: a table of paths, bytes (`include_bytes!`) and content types that
//! `src/ui.rs` serves.

use std::path::{Path, PathBuf};

#[path = "ui_dist.rs"]
mod ui_dist;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dist = ui_dist::ensure(&manifest.join("../../ui"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("ui_assets.rs"), table(&dist))
        .unwrap_or_else(|e| ui_dist::fail(&format!("cannot write the asset table: {e}")));
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| ui_dist::fail(&format!("cannot read {}: {e}", dir.display())))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

fn table(dist: &Path) -> String {
    let mut all = Vec::new();
    files(dist, &mut all);
    let mut s = String::from("pub(crate) static ASSETS: &[Asset] = &[\n");
    for f in &all {
        let rel = f
            .strip_prefix(dist)
            .expect("under dist")
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let abs = f
            .canonicalize()
            .unwrap_or_else(|e| ui_dist::fail(&format!("cannot read {}: {e}", f.display())));
        s.push_str(&format!(
            "    Asset {{ path: {rel:?}, bytes: include_bytes!({abs:?}), content_type: {:?} }},\n",
            content_type(f)
        ));
    }
    s.push_str("];\n");
    s
}
