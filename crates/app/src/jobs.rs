//! Ray jobs on this machine's cluster: submitting one (Ray's own job client in the cluster's
//! runtime), following its output, stopping it. Ray's job API is reached with the cluster's
//! token; what happens is returned or handed to callbacks, never printed.
//!
//! The job's description (its secrets among its environment variables) goes to the job
//! client on its standard input, so no value appears in any process's argv; the Ray token
//! reaches that program through its environment only.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use flotilla_head::HeadInfo;
use flotilla_ray::StateClient;
use flotilla_ray::state::RayJob;

const SUBMIT_PY: &str = include_str!("submit.py");

/// Ray's job API on this machine's head, with the cluster's token.
pub async fn job_api() -> anyhow::Result<StateClient> {
    let (info, token) = tokio::task::spawn_blocking(|| {
        let (dirs, _, store) = crate::secrets::load_store()?;
        let info = HeadInfo::read(&dirs).context(
            "no Flotilla cluster runs on this machine: jobs are managed where `flotilla up` runs",
        )?;
        let token = flotilla_head::read_cluster_token(&store)?;
        anyhow::Ok((info, token))
    })
    .await??;
    Ok(StateClient::new(info.ray_dashboard, token))
}

/// A job to submit.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// The command, word by word (quoted for the shell Ray runs it through).
    pub command: Vec<String>,
    /// Stored secrets given to the job as environment variables: (secret name, variable).
    pub secrets: Vec<(String, String)>,
    /// A directory uploaded and made the command's working directory on every node.
    pub working_dir: Option<PathBuf>,
    /// Packages (pip requirement lines) installed for the job on every node it uses.
    pub pip: Vec<String>,
    /// A runtime environment file (YAML or JSON, as `ray job submit --runtime-env` reads it),
    /// with its text; the fields above are added to it.
    pub runtime_env: Option<(PathBuf, String)>,
}

/// What became of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Ray accepted the job: its id.
    Job(String),
    /// Ray's job client refused it (it printed Ray's reason on standard error) and exited with
    /// this code.
    Refused(i32),
}

/// Submits a job to this machine's cluster.
pub async fn submit(job: Submission) -> anyhow::Result<Submitted> {
    let pairs = job.secrets.clone();
    let (dirs, token, env) = tokio::task::spawn_blocking(move || {
        let (dirs, _config, store) = crate::secrets::load_store()?;
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
        anyhow::Ok((dirs, token, env))
    })
    .await??;
    let info = HeadInfo::read(&dirs)
        .context("no Flotilla cluster is running on this machine: start one with `flotilla up`")?;

    let mut runtime_env = serde_json::Map::new();
    if !env.is_empty() {
        runtime_env.insert("env_vars".into(), serde_json::Value::Object(env));
    }
    if let Some(d) = &job.working_dir {
        runtime_env.insert("working_dir".into(), serde_json::json!(d));
    }
    if !job.pip.is_empty() {
        runtime_env.insert("pip".into(), serde_json::json!(job.pip));
    }
    let entrypoint: Vec<String> = job.command.iter().map(|w| shell_quote(w)).collect();
    let (env_file, env_text) = match &job.runtime_env {
        Some((file, text)) => (Some(file.display().to_string()), Some(text.clone())),
        None => (None, None),
    };
    let spec = serde_json::json!({
        "address": info.ray_dashboard,
        "entrypoint": entrypoint.join(" "),
        "runtime_env": runtime_env,
        "runtime_env_file": env_file,
        "runtime_env_text": env_text,
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
        return Ok(Submitted::Refused(out.status.code().unwrap_or(1)));
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(
        !id.is_empty(),
        "the cluster accepted the job but gave no id"
    );
    Ok(Submitted::Job(id))
}

/// Quotes one word for a POSIX shell (Ray runs the entrypoint through one).
pub fn shell_quote(word: &str) -> String {
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

/// A job's id: its submission id, or Ray's job id for a driver run without submission.
pub fn id_of(j: &RayJob) -> String {
    j.submission_id
        .clone()
        .or_else(|| j.job_id.clone())
        .unwrap_or_default()
}

/// Whether a job's status is one it ends in.
pub fn is_final(status: &str) -> bool {
    matches!(status, "STOPPED" | "SUCCEEDED" | "FAILED")
}

/// Why a job ended as it did, in one line, from Ray's message.
pub fn reason(j: &RayJob) -> Option<String> {
    j.message
        .as_deref()
        .and_then(flotilla_ray::state::job_reason)
}

/// One job, with "no such job" said in words.
pub async fn job(api: &StateClient, id: &str) -> anyhow::Result<RayJob> {
    api.job(id).await.map_err(|e| not_found(e, id))
}

/// Follows a job's output until it ends or `interrupted` completes (the job keeps running
/// then): `output` gets each new piece as Ray serves it. Returns the job as it ended, `None`
/// when interrupted.
pub async fn follow(
    api: &StateClient,
    id: &str,
    mut output: impl FnMut(&[u8]),
    interrupted: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<RayJob>> {
    // Ray keeps a job's whole log and serves it whole: what was handed out before is skipped.
    let mut printed = 0usize;
    tokio::pin!(interrupted);
    loop {
        let j = job(api, id).await?;
        let text = api.job_logs(id).await?;
        if text.len() > printed {
            output(&text.as_bytes()[printed..]);
            printed = text.len();
        }
        if is_final(&j.status) {
            return Ok(Some(j));
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What asking Ray to stop a job came to.
#[derive(Debug, Clone)]
pub enum Stopped {
    /// It had ended already, as it says.
    AlreadyEnded(RayJob),
    /// It ended after the request.
    Ended(RayJob),
}

/// Stops a running job and waits (up to a minute) until Ray says it ended; `stopping` is
/// called once Ray took the request.
pub async fn stop(api: &StateClient, id: &str, stopping: impl FnOnce()) -> anyhow::Result<Stopped> {
    let j = job(api, id).await?;
    if is_final(&j.status) {
        return Ok(Stopped::AlreadyEnded(j));
    }
    api.stop_job(id).await?;
    stopping();
    // Ray ends the driver, then its tasks; it says STOPPED once they are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = api.job(id).await?;
        if is_final(&j.status) {
            return Ok(Stopped::Ended(j));
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "job {id} is still {} a minute after Ray was asked to stop it; see `flotilla jobs logs {id}`",
            j.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn not_found(e: flotilla_ray::Error, id: &str) -> anyhow::Error {
    match e {
        flotilla_ray::Error::Http { status: 404, .. } => {
            anyhow::anyhow!("the cluster has no job {id:?}: `flotilla jobs` lists them")
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("python"), "python");
        assert_eq!(shell_quote("--evals=80"), "--evals=80");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME;rm"), "'$HOME;rm'");
    }

    #[test]
    fn jobs_end_in_three_states() {
        for s in ["STOPPED", "SUCCEEDED", "FAILED"] {
            assert!(is_final(s), "{s}");
        }
        for s in ["PENDING", "RUNNING", ""] {
            assert!(!is_final(s), "{s}");
        }
    }
}
