//! `flotilla env DIR`: a Python environment for the user's own drivers and packages, matching
//! the cluster (its Python down to the patch where this machine can have it, its Ray), and
//! `flotilla run -- CMD`: a driver run against the cluster, checked first
//! ([`flotilla_app::driver`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use flotilla_app::driver;

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

pub async fn env(args: EnvArgs) -> anyhow::Result<ExitCode> {
    let c = driver::cluster().await?;
    let (progress, bar) = crate::progress::bar();
    let made = driver::make_env(&args.dir, &c, progress).await;
    bar.clear();
    let python = made?;
    let interpreter = driver::python_in(&args.dir);
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

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let c = driver::cluster().await?;
    if let Some(note) = driver::check_driver(&args.command, &c).await? {
        eprintln!("note: {note}");
    }
    let mut child = driver::driver_command(&args.command, &c)?
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
