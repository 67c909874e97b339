//! `flotilla service install|uninstall|status`: Flotilla as a service of the OS, for headless
//! machines: a systemd unit on Linux, a launchd job on macOS, a Windows service. One facade,
//! [`Manager`], with a module per OS; the unit files come from templates in `installers/`.
//!
//! # Platform behavior
//!
//! - Linux: `--system` writes `/etc/systemd/system/flotilla-<role>.service`, running as the
//!   dedicated user `flotilla` (created with `useradd --system`) with `FLOTILLA_HOME=
//!   /var/lib/flotilla` (systemd's `StateDirectory=`), hardened (`ProtectSystem=strict`,
//!   `ProtectHome=yes`, `PrivateTmp=yes`, `NoNewPrivileges=yes`) and with `Delegate=yes` so the
//!   throttle gets its own cgroup; `--user` writes `~/.config/systemd/user/` and runs as you.
//!   Then `systemctl daemon-reload` and `enable --now`.
//! - macOS: a launchd plist (`~/Library/LaunchAgents` for `--user`, `/Library/LaunchDaemons`
//!   for `--system`), loaded with `launchctl bootstrap`.
//! - Windows: `sc.exe create` of a service started automatically (`--system` only).
//! - Elsewhere: an error saying so.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod unsupported;
#[cfg(windows)]
mod windows;

#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "macos")]
use macos as os;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
use unsupported as os;
#[cfg(windows)]
use windows as os;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// This machine's worker in the fleet it joined (`flotilla worker`).
    Worker,
    /// A head with its own worker (`flotilla up`).
    Head,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Head => "head",
        }
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn title(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Head => "head",
        }
    }

    /// The command line the service runs.
    pub fn args(self) -> Vec<String> {
        match self {
            Role::Worker => vec!["worker".into()],
            Role::Head => vec!["up".into(), "--network".into(), "auto".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    User,
    System,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::System => "system",
        }
    }
}

/// What installing means on this OS: a file to write and the commands to run after it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub role: Role,
    pub scope: Scope,
    pub path: PathBuf,
    pub contents: String,
    /// Run in order after the file is written (uninstall: before it is removed).
    pub commands: Vec<Vec<String>>,
}

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

/// Fills a template's `@NAME@` placeholders; a placeholder left over is a bug in the caller.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in values {
        out = out.replace(&format!("@{k}@"), v);
    }
    debug_assert!(
        !out.contains("@ROLE") && !out.contains("@EXEC@"),
        "unfilled template: {out}"
    );
    out
}

/// The service's plan for this machine (`exe`: the `flotilla` binary the service runs).
pub fn plan(role: Role, scope: Scope, exe: &std::path::Path) -> anyhow::Result<Plan> {
    os::plan(role, scope, exe)
}

fn run_commands(commands: &[Vec<String>], tolerate_failure: bool) -> anyhow::Result<()> {
    for c in commands {
        let (program, args) = c.split_first().expect("a command has a program");
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
        if !out.status.success() && !tolerate_failure {
            anyhow::bail!(
                "`{}` failed ({}): {}",
                c.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
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
            if role == Role::Worker && scope == Scope::User {
                let dirs = flotilla_host::Dirs::from_env();
                if flotilla_agent::enrollment::Enrollment::load(&dirs)?.is_none() {
                    anyhow::bail!(
                        "this machine has not joined a fleet: run `flotilla join CODE --no-start` \
                         first (with a code from the head's `flotilla invite`)"
                    );
                }
            }
            os::prepare(&plan)?;
            if let Some(dir) = plan.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&plan.path, &plan.contents)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", plan.path.display()))?;
            run_commands(&plan.commands, false)?;
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
            let removed = uninstall(&plan)?;
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
            let active = installed && os::active(&plan);
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

/// Stops and removes the service of `plan`; whether there was one.
pub fn uninstall(plan: &Plan) -> anyhow::Result<bool> {
    if !plan.path.exists() {
        return Ok(false);
    }
    run_commands(&os::stop_commands(plan), true)?;
    std::fs::remove_file(&plan.path)
        .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", plan.path.display()))?;
    run_commands(&os::after_remove(plan), true)?;
    Ok(true)
}

/// Every service plan this machine may have (both roles, both scopes), for `flotilla uninstall`.
pub fn all_plans() -> Vec<Plan> {
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    [Role::Worker, Role::Head]
        .into_iter()
        .flat_map(|r| [Scope::User, Scope::System].map(|s| (r, s)))
        .filter_map(|(r, s)| plan(r, s, &exe).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_every_placeholder() {
        let p = fill("a=@A@ b=@B@ @A@", &[("A", "1"), ("B", "two")]);
        assert_eq!(p, "a=1 b=two 1");
    }
}
