//! Python + Ray runtimes, provisioned with uv.
//!
//! A runtime is a virtual environment at `<data>/runtimes/ray-<ray>-py<python>/` holding exactly
//! one Ray version (plus [`EXTRA_PACKAGES`](crate::versions::EXTRA_PACKAGES)) on one Python minor
//! version. It is valid when its marker file `flotilla-runtime.json` exists and `ray --version`
//! prints the expected version; the marker is written last, so an interrupted install is found
//! half-installed and rebuilt on the next [`RuntimeManager::ensure`]. A lock file per runtime
//! lets several processes ensure the same runtime at once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::versions::{EXTRA_PACKAGES, RuntimeSpec};
use crate::{Error, Result};

const MARKER: &str = "flotilla-runtime.json";
/// About what a Ray runtime weighs on disk; only used to show progress.
pub const APPROX_RUNTIME_BYTES: u64 = 360 * 1024 * 1024;

/// A progress event while a runtime is provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new step starts: which one, and its description in English.
    Step { step: Step, label: String },
    /// Bytes downloaded or installed in the current step; `total` when it is known.
    Bytes { done: u64, total: Option<u64> },
    /// The runtime is ready.
    Done { label: String },
}

/// The steps of provisioning, in order (a warm runtime only has [`Step::Check`]), so that a
/// caller can word them itself (the desktop app, in the owner's language) and tell how far
/// along it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// An installed runtime is checked.
    Check,
    /// A half-installed runtime is removed to be built again.
    Repair,
    /// uv is downloaded.
    DownloadUv,
    /// The Python environment is created.
    CreateEnv,
    /// Ray is installed into it (the long one: about 360 MB).
    InstallRay,
    /// The new runtime is checked.
    Verify,
}

impl Step {
    /// Where the step falls among a cold install's steps: `(index, count)`, both from 1.
    pub fn position(self) -> (u32, u32) {
        let index = match self {
            Step::Check | Step::Repair => 1,
            Step::DownloadUv => 2,
            Step::CreateEnv => 3,
            Step::InstallRay => 4,
            Step::Verify => 5,
        };
        (index, 5)
    }
}

/// Receives [`Progress`] events; must be cheap (it is called from the installing task).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A [`ProgressFn`] that ignores every event.
pub fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

/// What the marker file records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marker {
    pub ray: String,
    pub python: String,
    /// The interpreter's full version, e.g. `3.11.7`.
    pub python_full: String,
    pub created_unix: u64,
    /// The packages installed beside Ray ([`EXTRA_PACKAGES`] when the runtime was made or last
    /// brought up to date); a runtime missing some gets them on its next check.
    #[serde(default)]
    pub extras: Vec<String>,
}

/// An installed, verified runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub spec: RuntimeSpec,
    pub dir: PathBuf,
    pub python_full: String,
}

impl Runtime {
    fn bin_dir(dir: &Path) -> PathBuf {
        if cfg!(windows) {
            dir.join("Scripts")
        } else {
            dir.join("bin")
        }
    }

    /// The `ray` executable.
    pub fn ray_bin(&self) -> PathBuf {
        ray_in(&self.dir)
    }

    /// The runtime's Python interpreter.
    pub fn python(&self) -> PathBuf {
        python_in(&self.dir)
    }
}

fn ray_in(dir: &Path) -> PathBuf {
    Runtime::bin_dir(dir).join(if cfg!(windows) { "ray.exe" } else { "ray" })
}

/// The Python interpreter of the virtual environment at `dir`.
pub fn python_in(dir: &Path) -> PathBuf {
    Runtime::bin_dir(dir).join(if cfg!(windows) {
        "python.exe"
    } else {
        "python"
    })
}

/// One runtime directory as found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeEntry {
    pub spec: RuntimeSpec,
    pub dir: PathBuf,
    /// Whether the marker is present (the install completed).
    pub complete: bool,
    pub python_full: Option<String>,
}

/// Provisions and manages the runtimes under one data dir.
#[derive(Debug, Clone)]
pub struct RuntimeManager {
    data_dir: PathBuf,
}

impl RuntimeManager {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RuntimeManager {
            data_dir: data_dir.into(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.data_dir.join("runtimes")
    }

    pub fn path_of(&self, spec: &RuntimeSpec) -> PathBuf {
        self.root().join(spec.dir_name())
    }

    /// Returns the runtime for `spec`, installing or repairing it first if needed.
    pub async fn ensure(&self, spec: &RuntimeSpec, progress: ProgressFn) -> Result<Runtime> {
        spec.validate()?;
        let root = self.root();
        std::fs::create_dir_all(&root)
            .map_err(Error::io(format!("cannot create {}", root.display())))?;
        let _lock = lock(&root.join(format!(".{}.lock", spec.dir_name()))).await?;
        let dir = self.path_of(spec);
        if dir.exists() {
            progress(Progress::Step {
                step: Step::Check,
                label: format!("Checking {spec}"),
            });
            match self.verify(spec, &dir).await {
                Ok(rt) => {
                    progress(Progress::Done {
                        label: format!("{spec} is ready"),
                    });
                    return Ok(rt);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "repairing runtime: {e}");
                    progress(Progress::Step {
                        step: Step::Repair,
                        label: format!("Repairing {spec} (it was incomplete)"),
                    });
                    remove_dir(&dir)?;
                }
            }
        }
        let rt = self.install(spec, &dir, &progress).await?;
        progress(Progress::Done {
            label: format!("{spec} is ready"),
        });
        Ok(rt)
    }

    /// Returns the runtime for `spec` if it is installed and complete, without checking it
    /// further or installing anything.
    pub fn installed(&self, spec: &RuntimeSpec) -> Result<Runtime> {
        let dir = self.path_of(spec);
        let marker = read_marker(&dir).ok_or_else(|| Error::RuntimeMissing {
            spec: spec.to_string(),
        })?;
        Ok(Runtime {
            spec: spec.clone(),
            dir,
            python_full: marker.python_full,
        })
    }

    /// Every runtime directory, complete or not.
    pub fn list(&self) -> Result<Vec<RuntimeEntry>> {
        let root = self.root();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("cannot read {}", root.display()))(e)),
        };
        let mut out: Vec<RuntimeEntry> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let spec = RuntimeSpec::from_dir_name(&name)?;
                let dir = e.path();
                let marker = read_marker(&dir);
                Some(RuntimeEntry {
                    spec,
                    complete: marker.is_some(),
                    python_full: marker.map(|m| m.python_full),
                    dir,
                })
            })
            .collect();
        out.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(out)
    }

    /// Removes the runtime for `spec`; returns whether it existed.
    pub async fn remove(&self, spec: &RuntimeSpec) -> Result<bool> {
        spec.validate()?;
        let root = self.root();
        if !root.exists() {
            return Ok(false);
        }
        let _lock = lock(&root.join(format!(".{}.lock", spec.dir_name()))).await?;
        let dir = self.path_of(spec);
        if !dir.exists() {
            return Ok(false);
        }
        remove_dir(&dir)?;
        Ok(true)
    }

    async fn verify(&self, spec: &RuntimeSpec, dir: &Path) -> Result<Runtime> {
        let bad = |detail: String| Error::Verify {
            path: dir.to_path_buf(),
            detail,
        };
        let marker = read_marker(dir).ok_or_else(|| bad("the install did not finish".into()))?;
        if marker.ray != spec.ray || marker.python != spec.python {
            return Err(bad(format!(
                "it holds Ray {} on Python {}",
                marker.ray, marker.python
            )));
        }
        check_installed(spec, dir)?;
        let missing: Vec<&str> = EXTRA_PACKAGES
            .iter()
            .copied()
            .filter(|p| !marker.extras.iter().any(|e| e == p))
            .collect();
        if !missing.is_empty() {
            // Made by an older Flotilla: add what is new rather than build it again.
            let uv = crate::uv::ensure_uv(&self.data_dir, &no_progress()).await?;
            let mut pip = Command::new(&uv);
            pip.args(["pip", "install", "--no-config", "--quiet", "--python"])
                .arg(python_in(dir))
                .args(&missing);
            uv_run(&mut pip).await.map_err(|detail| {
                classify(&detail, spec, dir).unwrap_or(Error::Install {
                    spec: spec.to_string(),
                    detail,
                })
            })?;
            write_marker(
                dir,
                &Marker {
                    extras: EXTRA_PACKAGES.iter().map(|p| p.to_string()).collect(),
                    ..marker.clone()
                },
            )?;
        }
        Ok(Runtime {
            spec: spec.clone(),
            dir: dir.to_path_buf(),
            python_full: marker.python_full,
        })
    }

    /// The installed runtime [`ensure_matching`](Self::ensure_matching) would pick for a node
    /// of a cluster on Ray `ray` and Python `python_full`, without checking or installing
    /// anything: one on exactly that Python, else one on the same minor.
    pub fn installed_matching(&self, ray: &str, python_full: &str) -> Option<Runtime> {
        let minor = crate::versions::minor_of(python_full);
        let runtimes: Vec<RuntimeEntry> = self
            .list()
            .ok()?
            .into_iter()
            .filter(|e| e.complete && e.spec.ray == ray)
            .collect();
        let pick = runtimes
            .iter()
            .find(|e| e.python_full.as_deref() == Some(python_full))
            .or_else(|| {
                runtimes.iter().find(|e| {
                    e.python_full
                        .as_deref()
                        .is_some_and(|p| crate::versions::minor_of(p) == minor)
                })
            })?;
        Some(Runtime {
            spec: pick.spec.clone(),
            dir: pick.dir.clone(),
            python_full: pick.python_full.clone().unwrap_or_default(),
        })
    }

    /// Creates (or brings up to date) a Python environment at `dir` for the user's own drivers
    /// and packages: exactly the cluster's Python where uv finds or downloads it (else another
    /// patch of its minor), with the cluster's Ray and pip. Returns its Python's version.
    pub async fn project_env(
        &self,
        dir: &Path,
        ray: &str,
        python_full: &str,
        progress: ProgressFn,
    ) -> Result<String> {
        let spec = RuntimeSpec {
            ray: ray.into(),
            python: python_full.into(),
        };
        spec.validate()?;
        let uv = crate::uv::ensure_uv(&self.data_dir, &progress).await?;
        let current = probe(&python_in(dir)).await.ok();
        let fits = current.as_ref().is_some_and(|p| {
            crate::versions::minor_of(&p.python) == crate::versions::minor_of(python_full)
        });
        if !fits {
            progress(Progress::Step {
                step: Step::CreateEnv,
                label: format!(
                    "Creating a Python {python_full} environment in {}",
                    dir.display()
                ),
            });
            let venv = |python: &str| {
                let mut c = Command::new(&uv);
                c.args([
                    "venv",
                    "--no-project",
                    "--no-config",
                    "--quiet",
                    "--allow-existing",
                    "--python",
                ])
                .arg(python)
                .arg(dir);
                c
            };
            let minor = crate::versions::minor_of(python_full);
            if let Err(detail) = uv_run(&mut venv(python_full)).await {
                match classify(&detail, &spec, dir) {
                    Some(Error::NoPython { .. } | Error::Offline { .. })
                        if minor != python_full =>
                    {
                        uv_run(&mut venv(&minor)).await.map_err(|detail| {
                            classify(&detail, &spec, dir).unwrap_or(Error::NoPython {
                                python: minor.clone(),
                                detail,
                            })
                        })?;
                    }
                    Some(e) => return Err(e),
                    None => {
                        return Err(Error::Install {
                            spec: format!("a Python {python_full} environment"),
                            detail,
                        });
                    }
                }
            }
        }
        if current.and_then(|p| p.ray).as_deref() != Some(ray) {
            progress(Progress::Step {
                step: Step::InstallRay,
                label: format!("Installing Ray {ray} into {}", dir.display()),
            });
            let mut pip = Command::new(&uv);
            pip.args(["pip", "install", "--no-config", "--quiet", "--python"])
                .arg(python_in(dir))
                .arg(format!("ray[default]=={ray}"))
                .arg("pip");
            let watcher = watch_size(dir.to_path_buf(), progress.clone());
            let result = uv_run(&mut pip).await;
            watcher.abort();
            result.map_err(|detail| {
                classify(&detail, &spec, dir).unwrap_or(Error::Install {
                    spec: spec.to_string(),
                    detail,
                })
            })?;
        }
        let now = probe(&python_in(dir))
            .await
            .map_err(|detail| Error::Verify {
                path: dir.to_path_buf(),
                detail,
            })?;
        Ok(now.python)
    }

    /// The Pythons uv finds on this machine (installed ones: on `PATH`, uv's own, the OS's
    /// registry), and whether uv may download others.
    pub async fn pythons(&self) -> Result<Pythons> {
        let uv = crate::uv::ensure_uv(&self.data_dir, &no_progress()).await?;
        let out = run_capture(Command::new(&uv).args([
            "python",
            "list",
            "--only-installed",
            "--no-config",
            "--output-format",
            "json",
        ]))
        .await
        .map_err(|detail| Error::Install {
            spec: "the list of this machine's Pythons".into(),
            detail,
        })?;
        Ok(Pythons {
            versions: parse_python_list(&out),
            downloads: downloads_allowed(|k| std::env::var(k).ok()),
        })
    }

    /// The runtime a node of a cluster running Ray `ray` on Python `python_full` (e.g.
    /// `3.11.7`) should use: one already installed with exactly that Python, else a new one
    /// on exactly that Python where uv can find or download it, else one on another patch of
    /// the same minor (Ray accepts it at the `minor` match level, [`crate::versions::match_level`]).
    /// Fails, saying what to install, when not even the minor is available.
    pub async fn ensure_matching(
        &self,
        ray: &str,
        python_full: &str,
        progress: ProgressFn,
    ) -> Result<Runtime> {
        let minor = crate::versions::minor_of(python_full);
        for entry in self.list()? {
            if entry.complete
                && entry.spec.ray == ray
                && entry.python_full.as_deref() == Some(python_full)
            {
                return self.ensure(&entry.spec, progress).await;
            }
        }
        let exact = RuntimeSpec {
            ray: ray.into(),
            python: python_full.into(),
        };
        if python_full != minor {
            match self.ensure(&exact, progress.clone()).await {
                Ok(rt) => return Ok(rt),
                Err(Error::NoPython { detail, .. } | Error::Offline { detail, .. }) => {
                    tracing::info!(
                        "Python {python_full} is not available here ({}); using another Python {minor}",
                        detail.lines().last().unwrap_or_default()
                    );
                    let _ = self.remove(&exact).await;
                }
                Err(e) => return Err(e),
            }
        }
        let spec = RuntimeSpec {
            ray: ray.into(),
            python: minor.clone(),
        };
        self.ensure(&spec, progress).await.map_err(|e| match e {
            Error::NoPython { detail, .. } => Error::NoPython {
                python: minor,
                detail,
            },
            e => e,
        })
    }

    async fn install(
        &self,
        spec: &RuntimeSpec,
        dir: &Path,
        progress: &ProgressFn,
    ) -> Result<Runtime> {
        let uv = crate::uv::ensure_uv(&self.data_dir, progress).await?;
        progress(Progress::Step {
            step: Step::CreateEnv,
            label: format!("Creating a Python {} environment", spec.python),
        });
        let mut venv = Command::new(&uv);
        venv.args(["venv", "--no-project", "--no-config", "--quiet", "--python"])
            .arg(&spec.python)
            .arg(dir);
        uv_run(&mut venv).await.map_err(|detail| {
            classify(&detail, spec, dir).unwrap_or(Error::NoPython {
                python: spec.python.clone(),
                detail,
            })
        })?;

        progress(Progress::Step {
            step: Step::InstallRay,
            label: format!("Installing Ray {} (about 360 MB)", spec.ray),
        });
        let mut pip = Command::new(&uv);
        pip.args(["pip", "install", "--no-config", "--quiet", "--python"])
            .arg(python_in(dir))
            .arg(format!("ray[default]=={}", spec.ray))
            .args(EXTRA_PACKAGES);
        let watcher = watch_size(dir.to_path_buf(), progress.clone());
        let result = uv_run(&mut pip).await;
        watcher.abort();
        result.map_err(|detail| {
            classify(&detail, spec, dir).unwrap_or(Error::Install {
                spec: spec.to_string(),
                detail,
            })
        })?;

        progress(Progress::Step {
            step: Step::Verify,
            label: "Verifying the runtime".into(),
        });
        let python_full = run_capture(
            Command::new(python_in(dir))
                .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]),
        )
        .await
        .map_err(|detail| Error::Verify {
            path: dir.to_path_buf(),
            detail,
        })?
        .trim()
        .to_string();
        let marker = Marker {
            ray: spec.ray.clone(),
            python: spec.python.clone(),
            python_full,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            extras: EXTRA_PACKAGES.iter().map(|p| p.to_string()).collect(),
        };
        // Written last: a failed check leaves no marker behind.
        check_ray_version(spec, dir).await?;
        write_marker(dir, &marker)?;
        Ok(Runtime {
            spec: spec.clone(),
            dir: dir.to_path_buf(),
            python_full: marker.python_full,
        })
    }
}

/// The files a runtime at `dir` cannot work without, and its Ray's version from the package's
/// own metadata (`ray-<version>.dist-info`): a check of a few file lookups, run at every
/// start, where `ray --version` (run once, after an install) costs a second or more of
/// importing Ray.
fn check_installed(spec: &RuntimeSpec, dir: &Path) -> Result<()> {
    let bad = |detail: String| Error::Verify {
        path: dir.to_path_buf(),
        detail,
    };
    for file in [python_in(dir), ray_in(dir)] {
        if !file.is_file() {
            return Err(bad(format!("{} is missing", file.display())));
        }
    }
    let site = site_packages(dir).ok_or_else(|| bad("it has no site-packages".into()))?;
    let raylet = site.join("ray/core/src/ray/raylet").join(if cfg!(windows) {
        "raylet.exe"
    } else {
        "raylet"
    });
    if !site.join("ray/__init__.py").is_file() || !raylet.is_file() {
        return Err(bad("Ray's package is incomplete".into()));
    }
    let versions: Vec<String> = std::fs::read_dir(&site)
        .map_err(|e| bad(format!("cannot read {}: {e}", site.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("ray-")?
                    .strip_suffix(".dist-info")?
                    .to_owned(),
            )
        })
        .collect();
    if versions.contains(&spec.ray) {
        Ok(())
    } else {
        Err(bad(format!("it holds Ray {versions:?}, not {}", spec.ray)))
    }
}

/// The virtual environment's `site-packages`: `Lib/site-packages` on Windows,
/// `lib/python<X.Y>/site-packages` elsewhere.
fn site_packages(dir: &Path) -> Option<PathBuf> {
    if cfg!(windows) {
        return Some(dir.join("Lib").join("site-packages")).filter(|p| p.is_dir());
    }
    std::fs::read_dir(dir.join("lib"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
}

/// `ray --version` in the runtime at `dir` must print the expected version.
async fn check_ray_version(spec: &RuntimeSpec, dir: &Path) -> Result<()> {
    let ray = ray_in(dir);
    let bad = |detail: String| Error::Verify {
        path: dir.to_path_buf(),
        detail,
    };
    let out = run_capture(Command::new(ray).arg("--version"))
        .await
        .map_err(|e| bad(format!("`ray --version` failed: {e}")))?;
    if out.contains(&spec.ray) {
        Ok(())
    } else {
        Err(bad(format!("`ray --version` printed {:?}", out.trim())))
    }
}

/// The Pythons a machine offers for a runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pythons {
    /// CPython versions found (`3.11.2`), each once, in uv's order (best first).
    pub versions: Vec<String>,
    /// Whether uv may download a Python it does not find.
    pub downloads: bool,
}

/// The CPython versions of `uv python list --output-format json`.
fn parse_python_list(json: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Entry {
        version: String,
        #[serde(default)]
        implementation: String,
    }
    let entries: Vec<Entry> = serde_json::from_str(json).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for e in entries {
        if e.implementation.eq_ignore_ascii_case("cpython") && !out.contains(&e.version) {
            out.push(e.version);
        }
    }
    out
}

/// uv downloads a missing Python unless `UV_PYTHON_DOWNLOADS` says `never` or `manual`, or
/// `UV_OFFLINE` is set (the runtime manager runs uv with `--no-config`: only the environment
/// counts).
fn downloads_allowed(var: impl Fn(&str) -> Option<String>) -> bool {
    let never = var("UV_PYTHON_DOWNLOADS")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "never" | "manual"));
    let offline = var("UV_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
    !never && !offline
}

/// What a Python interpreter is: its version and the Ray it can import, if any.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Probe {
    pub python: String,
    pub ray: Option<String>,
}

/// Asks `python` its version and its Ray's (without starting Ray).
pub async fn probe(python: &Path) -> std::result::Result<Probe, String> {
    const SCRIPT: &str = "import json, sys\n\
        try:\n    from importlib.metadata import version\n    ray = version('ray')\n\
        except Exception:\n    ray = None\n\
        print(json.dumps({'python': '%d.%d.%d' % sys.version_info[:3], 'ray': ray}))";
    let out = run_capture(Command::new(python).args(["-c", SCRIPT])).await?;
    serde_json::from_str(out.trim()).map_err(|e| format!("unexpected answer {:?}: {e}", out.trim()))
}

/// Writes the marker beside and renames it into place, so it is whole or absent.
fn write_marker(dir: &Path, marker: &Marker) -> Result<()> {
    let tmp = dir.join(format!("{MARKER}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(marker).expect("plain struct"),
    )
    .map_err(|e| io_or_disk_full(e, dir))?;
    std::fs::rename(&tmp, dir.join(MARKER)).map_err(|e| io_or_disk_full(e, dir))
}

fn read_marker(dir: &Path) -> Option<Marker> {
    let bytes = std::fs::read(dir.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", dir.display()))(e)),
    }
}

fn io_or_disk_full(e: std::io::Error, dir: &Path) -> Error {
    if e.raw_os_error() == Some(28) {
        Error::DiskFull {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        }
    } else {
        Error::io(format!("cannot write in {}", dir.display()))(e)
    }
}

/// Maps uv's error text to an error that says what to do, where it is recognisable.
fn classify(detail: &str, spec: &RuntimeSpec, dir: &Path) -> Option<Error> {
    let d = detail.to_ascii_lowercase();
    if d.contains("no space left on device") || d.contains("os error 28") {
        return Some(Error::DiskFull {
            path: dir.to_path_buf(),
            detail: detail.into(),
        });
    }
    if d.contains("no interpreter found") || d.contains("no download found") {
        return Some(Error::NoPython {
            python: spec.python.clone(),
            detail: detail.into(),
        });
    }
    let offline = [
        "failed to fetch",
        "dns error",
        "error sending request",
        "connection refused",
        "network is unreachable",
        "timed out",
        "failed to download",
    ];
    if offline.iter().any(|s| d.contains(s)) {
        return Some(Error::Offline {
            spec: spec.to_string(),
            detail: detail.into(),
        });
    }
    None
}

/// Runs a uv command; on failure returns the tail of what it printed.
async fn uv_run(cmd: &mut Command) -> std::result::Result<(), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("UV_NO_PROGRESS", "1")
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run uv: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = text.lines().rev().take(12).collect();
    Err(tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
}

async fn run_capture(cmd: &mut Command) -> std::result::Result<String, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| "timed out after 60 s".to_string())?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Reports the environment's growing size while uv installs into it: uv prints no byte counts
/// when it is not on a terminal, and this is what the user is waiting for.
fn watch_size(dir: PathBuf, progress: ProgressFn) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let d = dir.clone();
            let done = tokio::task::spawn_blocking(move || dir_size(&d))
                .await
                .unwrap_or(0);
            progress(Progress::Bytes {
                done,
                total: Some(APPROX_RUNTIME_BYTES.max(done)),
            });
        }
    })
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Holds an exclusive lock on `path` until dropped.
async fn lock(path: &Path) -> Result<std::fs::File> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(Error::io(format!("cannot open {}", p.display())))?;
        file.lock()
            .map_err(Error::io(format!("cannot lock {}", p.display())))?;
        Ok(file)
    })
    .await
    .map_err(|e| Error::io("lock task failed")(std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime's files as uv lays them out on this OS, holding Ray `version`.
    fn fake_runtime(dir: &Path, version: &str) {
        let site = if cfg!(windows) {
            dir.join("Lib/site-packages")
        } else {
            dir.join("lib/python3.11/site-packages")
        };
        for file in [
            python_in(dir),
            ray_in(dir),
            site.join("ray/__init__.py"),
            site.join("ray/core/src/ray/raylet").join(if cfg!(windows) {
                "raylet.exe"
            } else {
                "raylet"
            }),
        ] {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, b"").unwrap();
        }
        std::fs::create_dir_all(site.join(format!("ray-{version}.dist-info"))).unwrap();
    }

    #[test]
    fn a_runtime_is_checked_by_its_files_and_its_packages_metadata() {
        let spec = RuntimeSpec {
            ray: "2.60.0".into(),
            python: "3.11".into(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt");
        fake_runtime(&dir, "2.60.0");
        check_installed(&spec, &dir).unwrap();

        let other = tmp.path().join("other");
        fake_runtime(&other, "2.59.1");
        let e = check_installed(&spec, &other).unwrap_err().to_string();
        assert!(e.contains("2.59.1"), "{e}");

        for gone in [
            python_in(&dir),
            ray_in(&dir),
            site_packages(&dir).unwrap().join("ray/__init__.py"),
        ] {
            let copy = tmp.path().join("copy");
            let _ = std::fs::remove_dir_all(&copy);
            fake_runtime(&copy, "2.60.0");
            let gone = copy.join(gone.strip_prefix(&dir).unwrap());
            std::fs::remove_file(&gone).unwrap();
            assert!(check_installed(&spec, &copy).is_err(), "{}", gone.display());
        }
    }

    #[test]
    fn uv_errors_become_advice() {
        let spec = RuntimeSpec::default();
        let dir = Path::new("/x");
        let kind = |s: &str| classify(s, &spec, dir).map(|e| e.to_string());
        assert!(
            kind("error: No interpreter found for Python 3.11 in managed installations")
                .unwrap()
                .contains("Install Python 3.11")
        );
        assert!(
            kind("Caused by: No space left on device (os error 28)")
                .unwrap()
                .contains("disk is full")
        );
        assert!(
            kind("error: Failed to fetch: `https://pypi.org/simple/ray/`\n dns error")
                .unwrap()
                .contains("network")
        );
        assert_eq!(kind("error: something else"), None);
    }

    #[test]
    fn list_reports_complete_and_half_installed_runtimes() {
        let tmp = tempfile::tempdir().unwrap();
        let m = RuntimeManager::new(tmp.path());
        let done = RuntimeSpec::default();
        let half = RuntimeSpec {
            ray: "2.59.0".into(),
            python: "3.12".into(),
        };
        std::fs::create_dir_all(m.path_of(&done)).unwrap();
        std::fs::create_dir_all(m.path_of(&half)).unwrap();
        std::fs::create_dir_all(m.root().join("not-a-runtime")).unwrap();
        let marker = Marker {
            ray: done.ray.clone(),
            python: done.python.clone(),
            python_full: "3.11.7".into(),
            created_unix: 1,
            extras: vec![],
        };
        std::fs::write(
            m.path_of(&done).join(MARKER),
            serde_json::to_vec(&marker).unwrap(),
        )
        .unwrap();
        let list = m.list().unwrap();
        assert_eq!(list.len(), 2);
        let get = |s: &RuntimeSpec| list.iter().find(|e| &e.spec == s).unwrap();
        assert!(get(&done).complete);
        assert_eq!(get(&done).python_full.as_deref(), Some("3.11.7"));
        assert!(!get(&half).complete);
        assert!(m.installed(&done).is_ok());
        assert!(matches!(
            m.installed(&half),
            Err(Error::RuntimeMissing { .. })
        ));
    }

    #[test]
    fn pythons_are_read_from_uvs_list() {
        let json = r#"[
            {"key":"cpython-3.12.1-linux-x86_64-gnu","version":"3.12.1","implementation":"cpython","path":"/a"},
            {"key":"cpython-3.11.2-linux-x86_64-gnu","version":"3.11.2","implementation":"cpython","path":"/usr/bin/python3.11"},
            {"key":"cpython-3.11.2-linux-x86_64-gnu","version":"3.11.2","implementation":"cpython","path":"/usr/bin/python3"},
            {"key":"pypy-3.10.14-linux-x86_64-gnu","version":"3.10.14","implementation":"pypy","path":"/p"}
        ]"#;
        assert_eq!(parse_python_list(json), ["3.12.1", "3.11.2"]);
        assert_eq!(parse_python_list("not json"), Vec::<String>::new());
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(downloads_allowed(env(&[])));
        assert!(downloads_allowed(env(&[(
            "UV_PYTHON_DOWNLOADS",
            "automatic"
        )])));
        assert!(!downloads_allowed(env(&[("UV_PYTHON_DOWNLOADS", "never")])));
        assert!(!downloads_allowed(env(&[(
            "UV_PYTHON_DOWNLOADS",
            "Manual"
        )])));
        assert!(!downloads_allowed(env(&[("UV_OFFLINE", "1")])));
        assert!(downloads_allowed(env(&[("UV_OFFLINE", "0")])));
    }

    #[test]
    fn dir_size_counts_nested_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("a/b/f"), [0u8; 1000]).unwrap();
        std::fs::write(tmp.path().join("g"), [0u8; 24]).unwrap();
        assert_eq!(dir_size(tmp.path()), 1024);
    }
}
