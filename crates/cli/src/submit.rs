//! `flotilla submit`: run a command as a Ray job on the cluster, like `ray job submit`, with
//! secrets from the secret store as the job's environment variables
//! ([`flotilla_app::jobs::submit`]), then follow its output.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use flotilla_app::jobs::{Submission, Submitted};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Give the job a stored secret as an environment variable: NAME (variable NAME in upper
    /// case, `-` as `_`) or NAME=VAR. The value is visible to the job's processes on every
    /// node, and to anyone who can read the job's description from the cluster's API.
    #[arg(long = "secret", value_name = "NAME[=VAR]")]
    secrets: Vec<String>,
    /// Upload this directory and run the command inside it on every node.
    #[arg(long, value_name = "DIR")]
    working_dir: Option<PathBuf>,
    /// Install these packages (pip requirement specifiers, e.g. `pandas==2.2.3`) for the job on
    /// every node it uses, in a virtualenv made from the cluster's runtime and cached by Ray.
    #[arg(long, value_name = "PKG", num_args = 1..)]
    pip: Vec<String>,
    /// Install the packages of this requirements file for the job (as --pip does).
    #[arg(long, value_name = "FILE")]
    requirements: Option<PathBuf>,
    /// The job's Ray runtime environment from a YAML or JSON file, as `ray job submit
    /// --runtime-env` reads it (`pip`, `uv`, `working_dir`, `py_modules`, `env_vars`, ...);
    /// the options above are added to it.
    #[arg(long, value_name = "FILE")]
    runtime_env: Option<PathBuf>,
    /// Print the job id and return at once instead of following the logs.
    #[arg(long)]
    no_wait: bool,
    /// The command to run, after `--`, e.g. `-- python sweep.py --evals 80`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `NAME` or `NAME=VAR` -> (secret name, environment variable).
fn parse_secret(spec: &str) -> anyhow::Result<(String, String)> {
    let (name, var) = match spec.split_once('=') {
        Some((n, v)) => (n.to_string(), v.to_string()),
        None => (
            spec.to_string(),
            spec.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect(),
        ),
    };
    let valid = var
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    anyhow::ensure!(
        valid,
        "--secret {spec}: {var:?} is not a valid environment variable name (letters, digits, \
         `_`; not starting with a digit): write NAME=VAR"
    );
    Ok((name, var))
}

/// The requirement lines of a requirements file: comments and blank lines dropped, options
/// (`-r other.txt`, `--index-url ...`) kept, since pip reads them in Ray's requirements file too.
fn read_requirements(file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--requirements {}: cannot read it", file.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        !lines.is_empty(),
        "--requirements {}: the file lists no package",
        file.display()
    );
    Ok(lines)
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let pairs: Vec<(String, String)> = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<_>>()?;
    let mut pip = args.pip.clone();
    if let Some(file) = &args.requirements {
        pip.extend(read_requirements(file)?);
    }
    let runtime_env_text = match &args.runtime_env {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--runtime-env {}: cannot read it", f.display()))?,
        ),
        None => None,
    };
    let working_dir = match &args.working_dir {
        Some(d) => Some(
            std::fs::canonicalize(d)
                .with_context(|| format!("--working-dir {}: no such directory", d.display()))?,
        ),
        None => None,
    };
    let submitted = flotilla_app::jobs::submit(Submission {
        command: args.command,
        secrets: pairs,
        working_dir,
        pip,
        runtime_env: args.runtime_env.zip(runtime_env_text),
    })
    .await?;
    let id = match submitted {
        Submitted::Job(id) => id,
        // Ray's job client printed Ray's reason.
        Submitted::Refused(code) => return Ok(ExitCode::from(code.clamp(1, 255) as u8)),
    };
    if args.no_wait {
        println!("{id}");
        std::io::stdout().flush().ok();
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "Job {id} submitted; following its logs (Ctrl-C stops following, not the job; \
         `flotilla jobs logs {id}` shows them later)."
    );
    let api = flotilla_app::jobs::job_api().await?;
    Ok(match crate::jobs::follow_job(&api, &id).await? {
        Some(job) if job.status == "SUCCEEDED" => ExitCode::SUCCESS,
        Some(_) => ExitCode::FAILURE,
        None => ExitCode::from(130),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs_map_to_variables() {
        assert_eq!(
            parse_secret("binance-api-key").unwrap(),
            ("binance-api-key".into(), "BINANCE_API_KEY".into())
        );
        assert_eq!(
            parse_secret("k=MY_KEY").unwrap(),
            ("k".into(), "MY_KEY".into())
        );
        let e = parse_secret("k=1BAD").unwrap_err().to_string();
        assert!(e.contains("NAME=VAR"), "{e}");
        assert!(parse_secret("k=A-B").is_err());
    }

    #[test]
    fn requirements_files_keep_requirements_and_options() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("requirements.txt");
        std::fs::write(
            &f,
            "# the sweep's needs\npandas==2.2.3  # data\n\n  ta>=0.11\n--index-url https://pypi.org/simple\n",
        )
        .unwrap();
        assert_eq!(
            read_requirements(&f).unwrap(),
            [
                "pandas==2.2.3",
                "ta>=0.11",
                "--index-url https://pypi.org/simple"
            ]
        );
        std::fs::write(&f, "# nothing\n\n").unwrap();
        assert!(
            read_requirements(&f)
                .unwrap_err()
                .to_string()
                .contains("no package")
        );
        assert!(read_requirements(&tmp.path().join("missing.txt")).is_err());
    }
}
