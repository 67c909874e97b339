//! `flotilla service install|uninstall|status`: Flotilla as a service of the OS
//! ([`flotilla_app::service`]: a systemd unit, a launchd job, a Windows service).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use flotilla_app::service::{Role, Scope, plan};

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write and start the service (it starts again at boot or login, and after a failure).
    Install(InstallArgs),
    /// Stop the service and remove it.
    Uninstall(TargetArgs),
    /// Whether the service is installed, enabled and running.
    Status(TargetArgs),
}

#[derive(Debug, Args)]
pub struct Which {
    /// A system service (at boot, as the dedicated user `flotilla`; needs root).
    #[arg(long, conflicts_with = "user")]
    system: bool,
    /// A service of your own user (at login) [default].
    #[arg(long)]
    user: bool,
    /// The worker of the fleet this machine joined [default].
    #[arg(long, conflicts_with = "head")]
    worker: bool,
    /// A head (with its own worker).
    #[arg(long)]
    head: bool,
}

impl Which {
    fn scope(&self) -> Scope {
        if self.system {
            Scope::System
        } else {
            Scope::User
        }
    }

    fn role(&self) -> Role {
        if self.head { Role::Head } else { Role::Worker }
    }
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    which: Which,
    /// Print what would be written and run, and do nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    which: Which,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    match cmd {
        ServiceCommand::Install(a) => {
            let (role, scope) = (a.which.role(), a.which.scope());
            let plan = plan(role, scope, &exe)?;
            if a.dry_run {
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&plan)?);
                } else {
                    println!("# would write {}:\n{}", plan.path.display(), plan.contents);
                    for c in &plan.commands {
                        println!("# would run: {}", c.join(" "));
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            flotilla_app::service::install(&plan)?;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"installed": plan.path, "role": role, "scope": scope})
                );
            } else {
                println!(
                    "Installed and started the {} {} service: {}",
                    scope.name(),
                    role.name(),
                    plan.path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Uninstall(a) => {
            let plan = plan(a.which.role(), a.which.scope(), &exe)?;
            let removed = flotilla_app::service::uninstall(&plan)?;
            if a.json {
                println!("{}", serde_json::json!({"removed": removed}));
            } else if removed {
                println!("Removed {}", plan.path.display());
            } else {
                println!("No {} service was installed.", plan.role.name());
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Status(a) => {
            let plan = plan(a.which.role(), a.which.scope(), &exe)?;
            let installed = plan.path.exists();
            let active = installed && flotilla_app::service::active(&plan);
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"unit": plan.path, "installed": installed, "active": active})
                );
            } else {
                println!(
                    "{} {} service: {}",
                    plan.scope.name(),
                    plan.role.name(),
                    match (installed, active) {
                        (false, _) => "not installed".to_string(),
                        (true, true) => format!("running ({})", plan.path.display()),
                        (true, false) =>
                            format!("installed, not running ({})", plan.path.display()),
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
