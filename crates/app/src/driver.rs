//! Drivers of the user's own on this machine's cluster: a Python environment that matches it
//! (`flotilla env`), and a driver's command checked and given the cluster's address and token
//! (`flotilla run`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use flotilla_agent::enrollment::Enrollment;
use flotilla_head::HeadInfo;
use flotilla_ray::versions::{MATCH_LEVEL_VAR, match_level, minor_of};
use flotilla_ray::{RayToken, RuntimeManager};

/// What a driver needs to know of the cluster this machine belongs to.
#[derive(Debug)]
pub struct Cluster {
    /// Its Ray version.
    pub ray: String,
    /// Its Python version.
    pub python: String,
    /// Its Ray (GCS) address.
    pub address: String,
    token: RayToken,
}

/// The cluster of this machine: the one it heads, else the fleet it joined.
pub async fn cluster() -> anyhow::Result<Cluster> {
    tokio::task::spawn_blocking(|| {
        let (dirs, _, store) = crate::secrets::load_store()?;
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

/// Creates (or brings up to date) the environment `dir` with the cluster's Ray and its Python
/// (another patch of it where this machine cannot get that one); returns the Python version
/// it has. `progress` hears the runtime manager's steps.
pub async fn make_env(
    dir: &Path,
    cluster: &Cluster,
    progress: flotilla_ray::runtime::ProgressFn,
) -> anyhow::Result<String> {
    let dirs = flotilla_host::Dirs::from_env();
    Ok(RuntimeManager::new(&dirs.data)
        .project_env(dir, &cluster.ray, &cluster.python, progress)
        .await?)
}

/// The interpreter of the environment `dir`.
pub fn python_in(dir: &Path) -> PathBuf {
    flotilla_ray::runtime::python_in(dir)
}

/// Checks a driver's command before it runs: an error saying why its Python cannot join the
/// cluster and what to do, or a note when it runs another patch of the cluster's Python.
pub async fn check_driver(command: &[String], cluster: &Cluster) -> anyhow::Result<Option<String>> {
    let Some(python) = python_of(command) else {
        return Ok(None);
    };
    let found = flotilla_ray::runtime::probe(&python)
        .await
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    if let Some(problem) = driver_problem(&python, &found, &cluster.ray, &cluster.python) {
        anyhow::bail!(problem);
    }
    Ok((found.python != cluster.python).then(|| {
        format!(
            "{} is Python {}; the cluster runs {} (Ray accepts another patch).",
            python.display(),
            found.python,
            cluster.python
        )
    }))
}

/// The driver's command with the cluster's address, its token and Ray's version match level in
/// its environment.
pub fn driver_command(
    command: &[String],
    cluster: &Cluster,
) -> anyhow::Result<tokio::process::Command> {
    let (program, args) = command
        .split_first()
        .context("no command to run: give it after `--`")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("RAY_ADDRESS", &cluster.address)
        .envs(cluster.token.env())
        .env(MATCH_LEVEL_VAR, match_level());
    Ok(cmd)
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
pub fn python_of(command: &[String]) -> Option<PathBuf> {
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
