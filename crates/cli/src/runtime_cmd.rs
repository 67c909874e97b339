//! `flotilla runtime {ensure,list,remove}`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use flotilla_host::Dirs;
use flotilla_ray::versions::{DEFAULT_PYTHON_VERSION, DEFAULT_RAY_VERSION};
use flotilla_ray::{RuntimeManager, RuntimeSpec};

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Install (or check, or repair) the runtime for a Ray and Python version.
    Ensure {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the installed runtimes.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a runtime (it is reinstalled when next needed).
    Remove {
        #[command(flatten)]
        spec: SpecArgs,
        /// Remove every runtime.
        #[arg(long, conflicts_with_all = ["ray", "python"])]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Ray version.
    #[arg(long, default_value = DEFAULT_RAY_VERSION)]
    ray: String,
    /// Python version: a minor version (3.11: any patch uv finds) or an exact one (3.11.7).
    #[arg(long, default_value = DEFAULT_PYTHON_VERSION)]
    python: String,
}

impl SpecArgs {
    fn spec(&self) -> RuntimeSpec {
        RuntimeSpec {
            ray: self.ray.clone(),
            python: self.python.clone(),
        }
    }
}

pub async fn run(cmd: RuntimeCommand) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::from_env();
    let manager = RuntimeManager::new(&dirs.data);
    match cmd {
        RuntimeCommand::Ensure { spec, json } => {
            let spec = spec.spec();
            let rt = if json {
                manager
                    .ensure(&spec, flotilla_ray::runtime::no_progress())
                    .await?
            } else {
                let (progress, bar) = crate::progress::bar();
                let rt = manager.ensure(&spec, progress).await;
                bar.clear();
                rt?
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ray": rt.spec.ray,
                        "python": rt.spec.python,
                        "python_full": rt.python_full,
                        "dir": rt.dir,
                        "ray_bin": rt.ray_bin(),
                        "uv": flotilla_ray::uv::find_uv(&dirs.data),
                    })
                );
            } else {
                println!(
                    "{} (Python {}) is ready in {}",
                    rt.spec,
                    rt.python_full,
                    rt.dir.display()
                );
            }
        }
        RuntimeCommand::List { json } => {
            let list = manager.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("No runtimes installed in {}.", manager.root().display());
                println!("`flotilla up` or `flotilla runtime ensure` installs one.");
            } else {
                println!("{:<10} {:<8} {:<12} DIR", "RAY", "PYTHON", "STATE");
                for e in list {
                    let state = if e.complete { "ready" } else { "incomplete" };
                    let py = e.python_full.unwrap_or(e.spec.python);
                    println!(
                        "{:<10} {:<8} {:<12} {}",
                        e.spec.ray,
                        py,
                        state,
                        e.dir.display()
                    );
                }
            }
        }
        RuntimeCommand::Remove { spec, all } => {
            let targets: Vec<RuntimeSpec> = if all {
                manager.list()?.into_iter().map(|e| e.spec).collect()
            } else {
                vec![spec.spec()]
            };
            let mut removed = 0;
            for s in &targets {
                if manager.remove(s).await? {
                    println!("Removed {s}.");
                    removed += 1;
                }
            }
            if removed == 0 {
                println!("Nothing to remove.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
