//! `flotilla jobs`: the cluster's Ray jobs (list, logs, stop), on the head's machine, through
//! Ray's job API with the cluster's token.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use flotilla_app::jobs::{Stopped, id_of, reason};
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

pub async fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let api = flotilla_app::jobs::job_api().await?;
    match args.command {
        None => list(&api, args.json).await,
        Some(JobsCommand::List { json }) => list(&api, json || args.json).await,
        Some(JobsCommand::Logs { id, follow }) => logs(&api, &id, follow).await,
        Some(JobsCommand::Stop { id }) => stop(&api, &id).await,
    }
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
                    "reason": reason(j),
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
        let why = reason(j).unwrap_or_default();
        println!("{:<28} {:<10} {entry:<40} {why}", id_of(j), j.status);
    }
    Ok(ExitCode::SUCCESS)
}

async fn logs(api: &StateClient, id: &str, follow: bool) -> anyhow::Result<ExitCode> {
    if follow {
        follow_job(api, id).await?;
    } else {
        flotilla_app::jobs::job(api, id).await?;
        let text = api.job_logs(id).await?;
        crate::output::write_all(text.as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a job's output as it comes until the job ends (or Ctrl-C, which leaves it running),
/// then its status with the reason; returns the job as it ended, `None` after Ctrl-C.
pub(crate) async fn follow_job(api: &StateClient, id: &str) -> anyhow::Result<Option<RayJob>> {
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let ended = flotilla_app::jobs::follow(api, id, crate::output::write_all, interrupted).await?;
    match &ended {
        Some(job) => eprintln!("Job {id} {}{}", job.status, message_suffix(job)),
        None => eprintln!(
            "\nStopped following; the job {id} keeps running (`flotilla jobs stop {id}` stops it)."
        ),
    }
    Ok(ended)
}

async fn stop(api: &StateClient, id: &str) -> anyhow::Result<ExitCode> {
    let stopping = || eprintln!("Stopping job {id}...");
    match flotilla_app::jobs::stop(api, id, stopping).await? {
        Stopped::AlreadyEnded(job) => println!(
            "Job {id} had already ended: {}{}",
            job.status,
            message_suffix(&job)
        ),
        Stopped::Ended(job) => println!("Job {id} {}{}", job.status, message_suffix(&job)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `: <why>` for a job's status line, from Ray's message in one line.
fn message_suffix(j: &RayJob) -> String {
    match reason(j) {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}
