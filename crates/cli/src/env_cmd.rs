//! `flotilla env DIR`: a Python environment for the user's own drivers and packages, matching
//! the cluster (its Python down to the patch where this machine can have it, its Ray), and
//! `flotilla run -- CMD`: a driver run against the cluster, checked first.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use flotilla_agent::enrollment::Enrollment;
use flotilla_head::HeadInfo;
use flotilla_ray::versions::{MATCH_LEVEL_VAR, match_level, minor_of};
use flotilla_ray::{RayToken, RuntimeManager};

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Where to create the environment (an existing one is brought up to date).
    #[arg(default_value = ".venv")]
    dir: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The driver to run, after `--`, e.g. `-- .venv/bin/python sweep.py`. Its Python is
    /// checked against the cluster's first.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// What a driver needs to know of the cluster this machine belongs to.
struct Cluster {
    ray: String,
    python: String,
    address: String,
    token: RayToken,
}

/// The cluster of this machine: the one it heads, else the fleet it joined.
async fn cluster() -> anyhow::Result<Cluster> {
    tokio::task::spawn_blocking(|| {
        let (dirs, _, store) = flotilla_app::secrets::load_store()?;
        let token = flotilla_head::read_cluster_token(&store)?;
        let (ray, python, address) = if let Some(info) = HeadInfo::read(&dirs) {
            (info.ray_version, info.python_version, info.ray_address)
        } else if let Some(e) = Enrollment::load(&dirs)? {
            let address = e.gcs_addresses.first().cloned().unwrap_or_default();
            (e.ray_version, e.python_version, address)
        } else {
            anyhow::bail!(
                "this machine runs no cluster and has joined none: start one with `flotilla up`, \
                 or join one with `flotilla join CODE`"
            );
        };
        let token = token.context(
            "the cluster's Ray token is not in this user's secret store: join again, or run \
             this as the user who runs `flotilla up`",
        )?;
        anyhow::Ok(Cluster {
            ray,
            python,
            address,
            token,
        })
    })
    .await?
}

pub async fn env(args: EnvArgs) -> anyhow::Result<ExitCode> {
    let c = cluster().await?;
    let dirs = flotilla_host::Dirs::from_env();
    let (progress, bar) = crate::progress::bar();
    let made = RuntimeManager::new(&dirs.data)
        .project_env(&args.dir, &c.ray, &c.python, progress)
        .await;
    bar.clear();
    let python = made?;
    let interpreter = flotilla_ray::runtime::python_in(&args.dir);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "dir": args.dir,
                "python": interpreter,
                "python_version": python,
                "ray_version": c.ray,
                "cluster_python_version": c.python,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} has Python {python} and Ray {}, as the cluster runs.",
        args.dir.display(),
        c.ray
    );
    if python != c.python {
        println!(
            "  The cluster runs Python {}: this machine cannot get it, so this environment has \
             another patch of it, which Ray accepts. Install Python {} to match exactly.",
            c.python, c.python
        );
    }
    let py = interpreter.display();
    println!(
        "Add your own packages:  {py} -m pip install pandas  (or: uv pip install --python {py} pandas)"
    );
    println!("Run a driver:           flotilla run -- {py} your_sweep.py");
    println!(
        "For packages the cluster's nodes need too, submit with them: \
         flotilla submit --requirements requirements.txt --working-dir . -- python your_sweep.py"
    );
    Ok(ExitCode::SUCCESS)
}

/// Why `python` cannot run a driver of a cluster on Ray `ray` and Python `cluster_python`, with
/// the fix; `None` when it can.
pub fn driver_problem(
    python: &Path,
    found: &flotilla_ray::runtime::Probe,
    ray: &str,
    cluster_python: &str,
) -> Option<String> {
    let fix = "Make an environment that matches the cluster with `flotilla env .venv`, install \
               your packages into it, and run `flotilla run -- .venv/bin/python your_script.py`";
    if minor_of(&found.python) != minor_of(cluster_python) {
        return Some(format!(
            "{} is Python {}, but the cluster runs Python {cluster_python}: Ray needs the same \
             minor version ({}) in every process, drivers included.\n  {fix}",
            python.display(),
            found.python,
            minor_of(cluster_python)
        ));
    }
    match found.ray.as_deref() {
        None => Some(format!(
            "{} has no Ray; the cluster runs Ray {ray}.\n  {fix} (or `{} -m pip install \
             'ray[default]=={ray}'`)",
            python.display(),
            python.display()
        )),
        Some(r) if r != ray => Some(format!(
            "{} has Ray {r}, but the cluster runs Ray {ray}: Ray refuses a driver of another \
             version.\n  {fix} (or `{} -m pip install 'ray[default]=={ray}'`)",
            python.display(),
            python.display()
        )),
        Some(_) => None,
    }
}

/// The Python a command runs, when it is one (`python`, `python3.11`, a path to either).
fn python_of(command: &[String]) -> Option<PathBuf> {
    let first = command.first()?;
    let name = Path::new(first).file_name()?.to_str()?;
    let is_python = name.strip_prefix("python").is_some_and(|rest| {
        rest.trim_end_matches(".exe")
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
    });
    if !is_python {
        return None;
    }
    let path = Path::new(first);
    if path.components().count() > 1 {
        return Some(path.to_path_buf());
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|d| d.join(first))
        .find(|p| p.is_file())
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let c = cluster().await?;
    if let Some(python) = python_of(&args.command) {
        let found = flotilla_ray::runtime::probe(&python)
            .await
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
        if let Some(problem) = driver_problem(&python, &found, &c.ray, &c.python) {
            anyhow::bail!(problem);
        }
        if found.python != c.python {
            eprintln!(
                "note: {} is Python {}; the cluster runs {} (Ray accepts another patch).",
                python.display(),
                found.python,
                c.python
            );
        }
    }
    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("RAY_ADDRESS", &c.address)
        .envs(c.token.env())
        .env(MATCH_LEVEL_VAR, match_level())
        .spawn()
        .with_context(|| format!("cannot run {}", args.command[0]))?;
    // Ctrl-C reaches the driver itself (same terminal); this waits for it to end.
    let status = tokio::select! {
        status = child.wait() => status?,
        () = async { loop { let _ = tokio::signal::ctrl_c().await; } } => unreachable!(),
    };
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_ray::runtime::Probe;

    fn probe(python: &str, ray: Option<&str>) -> Probe {
        Probe {
            python: python.into(),
            ray: ray.map(Into::into),
        }
    }

    #[test]
    fn drivers_that_cannot_join_are_told_why_and_what_to_do() {
        let py = Path::new("/usr/bin/python3.12");
        let minor =
            driver_problem(py, &probe("3.12.1", Some("2.60.0")), "2.60.0", "3.11.7").unwrap();
        assert!(
            minor.contains("is Python 3.12.1, but the cluster runs Python 3.11.7"),
            "{minor}"
        );
        assert!(minor.contains("flotilla env .venv"), "{minor}");
        let none = driver_problem(py, &probe("3.11.2", None), "2.60.0", "3.11.7").unwrap();
        assert!(
            none.contains("has no Ray") && none.contains("ray[default]==2.60.0"),
            "{none}"
        );
        let other =
            driver_problem(py, &probe("3.11.7", Some("2.49.1")), "2.60.0", "3.11.7").unwrap();
        assert!(
            other.contains("has Ray 2.49.1, but the cluster runs Ray 2.60.0"),
            "{other}"
        );
        // Another patch with the right Ray is fine (Ray's minor match level).
        assert_eq!(
            driver_problem(py, &probe("3.11.2", Some("2.60.0")), "2.60.0", "3.11.7"),
            None
        );
        assert_eq!(
            driver_problem(py, &probe("3.11.7", Some("2.60.0")), "2.60.0", "3.11.7"),
            None
        );
    }

    #[test]
    fn pythons_are_recognised_in_commands() {
        let cmd = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            python_of(&cmd(&[".venv/bin/python", "x.py"])),
            Some(PathBuf::from(".venv/bin/python"))
        );
        assert_eq!(
            python_of(&cmd(&["/opt/py/bin/python3.11"])),
            Some(PathBuf::from("/opt/py/bin/python3.11"))
        );
        assert_eq!(python_of(&cmd(&["./sweep.sh"])), None);
        assert_eq!(python_of(&cmd(&["pythonista"])), None);
        assert_eq!(python_of(&[]), None);
    }
}
