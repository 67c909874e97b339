//! `flotilla demo`: the strategy sweep of `examples/sweep` on the running cluster.

use std::path::Path;
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use clap::Args;
use flotilla_head::HeadInfo;
use flotilla_host::Dirs;
use serde_json::Value;

/// The sweep program, built into the binary so the demo runs from any install.
const SWEEP_PY: &str = include_str!("../../../examples/sweep/sweep.py");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of strategy evaluations (Ray tasks).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u32).range(1..=900))]
    evals: u32,
    /// Number of synthetic hourly candles.
    #[arg(long, default_value_t = 297_000, value_parser = clap::value_parser!(u32).range(1000..))]
    candles: u32,
    /// Seed of the synthetic market.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also backtest every parameter set on this many bootstrap resamples of the market and
    /// report how it holds up; each evaluation then costs about PATHS + 1 times as much.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    paths: u32,
    /// Also run the sweep locally, without Ray, and check that the results are identical.
    #[arg(long)]
    verify: bool,
    /// Print a JSON summary instead of the table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::from_env();
    let info = HeadInfo::read(&dirs)
        .context("no Flotilla cluster is running on this machine: start one with `flotilla up`")?;
    let token = tokio::task::spawn_blocking(|| {
        let (_, _, store) = flotilla_app::secrets::load_store()?;
        anyhow::Ok(flotilla_head::read_cluster_token(&store)?)
    })
    .await??
    .context("the cluster's Ray token is missing from the secret store: restart `flotilla up`")?;
    let python = info.runtime().python();
    let work = dirs.run.join("demo");
    flotilla_host::dirs::create_private_dir(&work)?;
    let script = work.join("sweep.py");
    std::fs::write(&script, SWEEP_PY)
        .with_context(|| format!("cannot write {}", script.display()))?;

    let common = [
        "--evals".to_string(),
        args.evals.to_string(),
        "--candles".into(),
        args.candles.to_string(),
        "--seed".into(),
        args.seed.to_string(),
        "--paths".into(),
        args.paths.to_string(),
    ];
    let ray_json = work.join("ray.json");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script)
        .args(&common)
        .arg("--address")
        .arg(&info.ray_address)
        .arg("--json")
        .arg(&ray_json)
        .envs(token.env())
        .env_remove("RAY_ADDRESS");
    if !args.json {
        eprintln!(
            "Running {} evaluations over {} candles on the cluster at {}...",
            args.evals, args.candles, info.ray_address
        );
    }
    run_sweep(&mut cmd, args.json).await?;
    let ray = read_json(&ray_json)?;

    let identical = if args.verify {
        if !args.json {
            eprintln!("Running the same sweep locally, without Ray, to compare...");
        }
        let local_json = work.join("local.json");
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(&script)
            .args(&common)
            .arg("--local")
            .arg("--quiet")
            .arg("--json")
            .arg(&local_json);
        run_sweep(&mut cmd, true).await?;
        let local = read_json(&local_json)?;
        Some(ray["results"] == local["results"])
    } else {
        None
    };

    let done = ray["results"].as_array().map_or(0, Vec::len);
    let complete = done == args.evals as usize;
    if args.json {
        let summary = serde_json::json!({
            "evaluations": done,
            "expected": args.evals,
            "candles": args.candles,
            "seed": args.seed,
            "paths": args.paths,
            "wall_seconds": ray["wall_seconds"],
            "nodes": ray["nodes"],
            "timing": ray["timing"],
            "identical_to_local": identical,
            "results": ray["results"],
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        match identical {
            Some(true) => println!("Results are identical to a local run without Ray."),
            Some(false) => println!("Results DIFFER from a local run without Ray."),
            None => {}
        }
    }
    Ok(if complete && identical != Some(false) {
        ExitCode::SUCCESS
    } else {
        if !complete {
            eprintln!("error: only {done} of {} evaluations finished", args.evals);
        }
        ExitCode::FAILURE
    })
}

async fn run_sweep(cmd: &mut tokio::process::Command, quiet: bool) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    if !quiet {
        // The sweep's own table and progress lines are the demo's output.
        let status = cmd
            .status()
            .await
            .context("cannot start the runtime's Python")?;
        if !status.success() {
            anyhow::bail!("the sweep failed ({status})");
        }
        return Ok(());
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let out = cmd
        .output()
        .await
        .context("cannot start the runtime's Python")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "the sweep failed ({}){}{}",
            out.status,
            if err.is_empty() { "" } else { ":\n" },
            err.trim()
        );
    }
    Ok(())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("the sweep wrote no {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}
