//! Flotilla as a service of the OS, for headless machines: a systemd unit on Linux, a launchd
//! job on macOS, a Windows service. One facade (`plan`, `install`, `uninstall`, `active`) with
//! a module per OS; the unit files come from templates in `installers/`. Also where the
//! desktop app's start-at-login entries live, for `flotilla doctor` and `flotilla uninstall`.
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

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// Writes the service of `plan` and starts it. A user's worker service needs a joined fleet.
pub fn install(plan: &Plan) -> anyhow::Result<()> {
    if plan.role == Role::Worker && plan.scope == Scope::User {
        let dirs = flotilla_host::Dirs::from_env();
        if flotilla_agent::enrollment::Enrollment::load(&dirs)?.is_none() {
            anyhow::bail!(
                "this machine has not joined a fleet: run `flotilla join CODE --no-start` \
                 first (with a code from the head's `flotilla invite`)"
            );
        }
    }
    os::prepare(plan)?;
    if let Some(dir) = plan.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&plan.path, &plan.contents)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", plan.path.display()))?;
    run_commands(&plan.commands, false)
}

/// Whether the service of `plan` runs.
pub fn active(plan: &Plan) -> bool {
    os::active(plan)
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

/// The desktop app's start-at-login entries (XDG autostart on Linux, a LaunchAgent on macOS).
/// Tauri's autostart writes `~/.config/autostart` even where `XDG_CONFIG_HOME` points
/// elsewhere, so both are looked at.
pub fn autostart_entries() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut configs: Vec<PathBuf> = dirs::config_dir().into_iter().collect();
    if let Some(home) = dirs::home_dir()
        && !configs.contains(&home.join(".config"))
    {
        configs.push(home.join(".config"));
    }
    for config in configs {
        for name in ["Flotilla.desktop", "flotilla-desktop.desktop"] {
            out.push(config.join("autostart").join(name));
        }
    }
    if let Some(home) = dirs::home_dir() {
        out.push(home.join("Library/LaunchAgents/Flotilla.plist"));
    }
    out
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
