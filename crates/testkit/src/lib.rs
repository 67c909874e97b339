//! What Flotilla's tests and benchmarks share: the network-namespace lab ([`netns`]), a virtual
//! X display ([`xvfb`]), a private D-Bus with a stand-in for logind ([`logind`]), and waiting.
//! Each harness needs what it drives (root and iproute2, Xvfb, dbus-daemon), all on Linux: the
//! modules exist there only, as the tests that use them do.

#[cfg(target_os = "linux")]
pub mod logind;
#[cfg(target_os = "linux")]
pub mod netns;
#[cfg(target_os = "linux")]
pub mod xvfb;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Waits until `ok`, checking twice a second; fails the test after `within`. Returns how long
/// it took.
pub fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    start.elapsed()
}

/// The `flotilla` binary of the build this program belongs to: beside it (a benchmark in
/// `target/release`), or above a test's `deps` directory. A test of another package than the
/// CLI's builds it with `cargo build -p flotilla` (`cargo test --workspace` does).
pub fn flotilla_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the running program's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let bin = dir.join(format!("flotilla{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p flotilla)",
        bin.display()
    );
    bin
}
