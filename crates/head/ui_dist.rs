//! The dashboard's built files (`ui/dist`), for the build scripts that embed them: the head's
//! (`crates/head/build.rs`) and the desktop app's (`src-tauri/build.rs`).
//!
//! `ui/dist` is rebuilt with npm when it is missing or older than the UI's sources (`npm ci`
//! first when `ui/node_modules` is missing), or taken from the directory `FLOTILLA_UI_DIST`
//! names (then npm is not needed). Both scripts may run at once: a lock file keeps one build at
//! a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// What the UI's build reads; a change to any of them rebuilds `ui/dist`.
const SOURCES: &[&str] = &[
    "src",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
    "svelte.config.js",
    "public",
];

/// The directory of the built dashboard, built first when needed.
pub fn ensure(ui: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=FLOTILLA_UI_DIST");
    match std::env::var_os("FLOTILLA_UI_DIST") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !dir.join("index.html").is_file() {
                fail(&format!(
                    "FLOTILLA_UI_DIST={} has no index.html: point it at a built dashboard (the \
                     `dist` directory that `npm run build` makes in ui/)",
                    dir.display()
                ));
            }
            println!("cargo:rerun-if-changed={}", dir.display());
            dir
        }
        None => {
            // Only paths that exist: cargo reruns the script every time for a missing one.
            for s in SOURCES.iter().map(|s| ui.join(s)).filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", s.display());
            }
            let dist = ui.join("dist");
            let lock = std::fs::File::create(std::env::temp_dir().join("flotilla-ui-build.lock"))
                .unwrap_or_else(|e| fail(&format!("cannot create the UI build's lock file: {e}")));
            lock.lock()
                .unwrap_or_else(|e| fail(&format!("cannot take the UI build's lock: {e}")));
            if stale(ui, &dist) {
                build(ui);
            } else {
                // Watched only when this run did not write it: files written during the run are
                // newer than the run's start, and cargo would run this script every time.
                println!(
                    "cargo:rerun-if-changed={}",
                    dist.join("index.html").display()
                );
            }
            dist
        }
    }
}

pub fn fail(message: &str) -> ! {
    eprintln!("\nerror: {message}\n");
    std::process::exit(1);
}

/// The newest modification time under `path` (a file or a directory tree).
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest(&e.path()))
        .max()
}

fn stale(ui: &Path, dist: &Path) -> bool {
    let Some(built) = std::fs::metadata(dist.join("index.html"))
        .and_then(|m| m.modified())
        .ok()
    else {
        return true;
    };
    SOURCES
        .iter()
        .filter_map(|s| newest(&ui.join(s)))
        .any(|t| t > built)
}

fn npm() -> Command {
    // npm is a script; on Windows only its `.cmd` wrapper can be spawned directly.
    Command::new(if cfg!(windows) { "npm.cmd" } else { "npm" })
}

fn build(ui: &Path) {
    let missing = || {
        fail(
            "building the dashboard (ui/) needs Node.js 18.18+ and npm, which were not found.\n  \
             Install them (Debian/Ubuntu: `sudo apt-get install nodejs npm`, or run `./up` or \
             `tests/run`, which do; macOS: `brew install node`; Windows: `winget install \
             OpenJS.NodeJS`),\n  or set FLOTILLA_UI_DIST to a dashboard built elsewhere.",
        )
    };
    let works = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
    if !works(npm().arg("--version")) {
        missing();
    }
    // The build tools (Vite 5) need Node.js 18.18+; an older one fails in confusing ways.
    let node = Command::new("node")
        .args(["-p", "process.versions.node"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut parts = node.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (18, 18) {
        fail(&format!(
            "building the dashboard (ui/) needs Node.js 18.18 or newer; this one is {node:?}.\n  \
             Install a current Node.js (https://nodejs.org, or nvm), or set FLOTILLA_UI_DIST to a \
             dashboard built elsewhere."
        ));
    }
    let run = |args: &[&str]| {
        // npm's output goes to stderr so that it never mixes with cargo's instructions.
        let status = npm()
            .args(args)
            .current_dir(ui)
            .stdout(std::io::stderr())
            .status()
            .unwrap_or_else(|_| missing());
        if !status.success() {
            fail(&format!(
                "`npm {}` failed in {} ({status}); its output is above",
                args.join(" "),
                ui.display()
            ));
        }
    };
    if !ui.join("node_modules").is_dir() {
        run(&["ci", "--no-audit", "--no-fund"]);
    }
    run(&["run", "build"]);
}
