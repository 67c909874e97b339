//! `flotilla submit`: run a command as a Ray job on the cluster, like `ray job submit`, with
//! secrets from the secret store as the job's environment variables.
//!
//! The job is handed to a small Python program in the cluster's runtime (Ray's own job client)
//! on its standard input, so secret values never appear in any process's argv; the Ray token
//! reaches that program through its environment only.

use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use clap::Args;
use flotilla_head::HeadInfo;

const SUBMIT_PY: &str = include_str!("submit.py");

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

/// Quotes one word for a POSIX shell (Ray runs the entrypoint through one).
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
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
    let (dirs, _config, store, token, env) = tokio::task::spawn_blocking(move || {
        let (dirs, config, store) = flotilla_app::secrets::load_store()?;
        let token = flotilla_head::read_cluster_token(&store)?
            .context("this machine has no cluster token: start a cluster with `flotilla up`")?;
        let mut env = serde_json::Map::new();
        for (name, var) in &pairs {
            let value = store.get(name)?;
            let text = value.expose_str().with_context(|| {
                format!("the secret {name} is not text, so it cannot be an environment variable")
            })?;
            env.insert(var.clone(), serde_json::Value::String(text.to_string()));
        }
        anyhow::Ok((dirs, config, store, token, env))
    })
    .await??;
    drop(store);
    let info = HeadInfo::read(&dirs)
        .context("no Flotilla cluster is running on this machine: start one with `flotilla up`")?;

    let mut runtime_env = serde_json::Map::new();
    if !env.is_empty() {
        runtime_env.insert("env_vars".into(), serde_json::Value::Object(env));
    }
    if let Some(d) = working_dir {
        runtime_env.insert("working_dir".into(), serde_json::json!(d));
    }
    if !pip.is_empty() {
        runtime_env.insert("pip".into(), serde_json::json!(pip));
    }
    let entrypoint: Vec<String> = args.command.iter().map(|w| shell_quote(w)).collect();
    let spec = serde_json::json!({
        "address": info.ray_dashboard,
        "entrypoint": entrypoint.join(" "),
        "runtime_env": runtime_env,
        "runtime_env_file": args.runtime_env.as_ref().map(|f| f.display().to_string()),
        "runtime_env_text": runtime_env_text,
    });

    let python = info.runtime().python();
    let script = dirs.run.join("submit.py");
    std::fs::write(&script, SUBMIT_PY)
        .with_context(|| format!("cannot write {}", script.display()))?;
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .envs(token.env())
        .env_remove("RAY_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        let bytes = serde_json::to_vec(&spec)?;
        use tokio::io::AsyncWriteExt;
        stdin.write_all(&bytes).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Ok(ExitCode::from(
            out.status.code().unwrap_or(1).clamp(1, 255) as u8
        ));
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(
        !id.is_empty(),
        "the cluster accepted the job but gave no id"
    );
    if args.no_wait {
        println!("{id}");
        std::io::stdout().flush().ok();
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "Job {id} submitted; following its logs (Ctrl-C stops following, not the job; \
         `flotilla jobs logs {id}` shows them later)."
    );
    let api = crate::jobs::job_api().await?;
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

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("python"), "python");
        assert_eq!(shell_quote("--evals=80"), "--evals=80");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME;rm"), "'$HOME;rm'");
    }
}
