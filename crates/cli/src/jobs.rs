//! `flotilla jobs`: the cluster's Ray jobs (list, logs, stop), on the head's machine, through
//! Ray's job API with the cluster's token.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use flotilla_head::HeadInfo;
use flotilla_ray::StateClient;
use flotilla_ray::state::RayJob;

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: Option<JobsCommand>,
    /// Print JSON instead of a table (for the list).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Every job of the cluster, newest first, with its state and, for a failed one, why.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print what a job has printed; --follow keeps printing until it ends.
    Logs {
        /// The job's id (`raysubmit_...`, as `flotilla jobs` lists it).
        id: String,
        /// Keep printing new output until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Stop a running job: Ray ends its driver and its tasks.
    Stop {
        /// The job's id (`raysubmit_...`, as `flotilla jobs` lists it).
        id: String,
    },
}

/// Ray's job API on this machine's head, with the cluster's token.
pub(crate) async fn job_api() -> anyhow::Result<StateClient> {
    let (info, token) = tokio::task::spawn_blocking(|| {
        let (dirs, _, store) = flotilla_app::secrets::load_store()?;
        let info = HeadInfo::read(&dirs).context(
            "no Flotilla cluster runs on this machine: jobs are managed where `flotilla up` runs",
        )?;
        let token = flotilla_head::read_cluster_token(&store)?;
        anyhow::Ok((info, token))
    })
    .await??;
    Ok(StateClient::new(info.ray_dashboard, token))
}

pub async fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let api = job_api().await?;
    match args.command {
        None => list(&api, args.json).await,
        Some(JobsCommand::List { json }) => list(&api, json || args.json).await,
        Some(JobsCommand::Logs { id, follow }) => logs(&api, &id, follow).await,
        Some(JobsCommand::Stop { id }) => stop(&api, &id).await,
    }
}

fn id_of(j: &RayJob) -> String {
    j.submission_id
        .clone()
        .or_else(|| j.job_id.clone())
        .unwrap_or_default()
}

fn is_final(status: &str) -> bool {
    matches!(status, "STOPPED" | "SUCCEEDED" | "FAILED")
}

async fn list(api: &StateClient, json: bool) -> anyhow::Result<ExitCode> {
    let mut jobs = api.jobs().await?;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time));
    if json {
        let rows: Vec<serde_json::Value> = jobs
            .iter()
            .map(|j| {
                serde_json::json!({
                    "id": id_of(j),
                    "kind": j.kind,
                    "status": j.status,
                    "entrypoint": j.entrypoint,
                    "reason": j.message.as_deref().and_then(flotilla_ray::state::job_reason),
                    "message": j.message,
                    "start_time_ms": j.start_time.filter(|t| *t > 0),
                    "end_time_ms": j.end_time.filter(|t| *t > 0),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!("No jobs yet. Run one with `flotilla submit -- python your_script.py`.");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<28} {:<10} {:<40} MESSAGE", "ID", "STATUS", "ENTRYPOINT");
    for j in &jobs {
        let entry: String = j.entrypoint.chars().take(40).collect();
        let reason = j
            .message
            .as_deref()
            .and_then(flotilla_ray::state::job_reason)
            .unwrap_or_default();
        println!("{:<28} {:<10} {entry:<40} {reason}", id_of(j), j.status);
    }
    Ok(ExitCode::SUCCESS)
}

async fn logs(api: &StateClient, id: &str, follow: bool) -> anyhow::Result<ExitCode> {
    if follow {
        follow_job(api, id).await?;
    } else {
        api.job(id).await.map_err(|e| not_found(e, id))?;
        let text = api.job_logs(id).await?;
        crate::output::write_all(text.as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a job's output as it comes until the job ends (or Ctrl-C, which leaves it running),
/// then its status with the reason; returns the job as it ended, `None` after Ctrl-C.
pub(crate) async fn follow_job(api: &StateClient, id: &str) -> anyhow::Result<Option<RayJob>> {
    // Ray keeps a job's whole log and serves it whole: what was printed before is skipped.
    let mut printed = 0usize;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let job = api.job(id).await.map_err(|e| not_found(e, id))?;
        let text = api.job_logs(id).await?;
        if text.len() > printed {
            crate::output::write_all(&text.as_bytes()[printed..]);
            printed = text.len();
        }
        if is_final(&job.status) {
            eprintln!("Job {id} {}{}", job.status, message_suffix(&job));
            return Ok(Some(job));
        }
        tokio::select! {
            _ = &mut interrupted => {
                eprintln!("\nStopped following; the job {id} keeps running (`flotilla jobs stop {id}` stops it).");
                return Ok(None);
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn stop(api: &StateClient, id: &str) -> anyhow::Result<ExitCode> {
    let job = api.job(id).await.map_err(|e| not_found(e, id))?;
    if is_final(&job.status) {
        println!(
            "Job {id} had already ended: {}{}",
            job.status,
            message_suffix(&job)
        );
        return Ok(ExitCode::SUCCESS);
    }
    api.stop_job(id).await?;
    eprintln!("Stopping job {id}...");
    // Ray ends the driver, then its tasks; it says STOPPED once they are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = api.job(id).await?;
        if is_final(&job.status) {
            println!("Job {id} {}{}", job.status, message_suffix(&job));
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "job {id} is still {} a minute after Ray was asked to stop it; see `flotilla jobs logs {id}`",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `: <why>` for a job's status line, from Ray's message in one line.
fn message_suffix(j: &RayJob) -> String {
    match j
        .message
        .as_deref()
        .and_then(flotilla_ray::state::job_reason)
    {
        Some(m) => format!(": {m}"),
        None => String::new(),
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
