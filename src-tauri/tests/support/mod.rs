//! What the desktop app's test binaries share.

use std::path::{Path, PathBuf};

/// The `flotilla` binary, built beside the app's (`cargo build -p flotilla`; `cargo test
/// --workspace` builds it).
pub fn flotilla_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_flotilla-desktop")).with_file_name("flotilla");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p flotilla)",
        bin.display()
    );
    bin
}
