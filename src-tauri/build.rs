//! The window shows the dashboard (`ui/dist`, built first when needed, as the head does), then
//! Tauri's own build step reads `tauri.conf.json`.

#[path = "../crates/head/ui_dist.rs"]
#[allow(dead_code)]
mod ui_dist;

fn main() {
    let manifest =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    ui_dist::ensure(&manifest.join("../ui"));
    tauri_build::build();
}
