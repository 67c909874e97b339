//! systemd units: system units run as the dedicated user `flotilla` with their state under
//! `/var/lib/flotilla`; user units run as you with your usual directories.

use std::path::{Path, PathBuf};

use super::{Plan, Role, Scope, fill};

const TEMPLATE: &str = include_str!("../../../../installers/systemd/flotilla.service.in");
/// Where a system service keeps everything (`StateDirectory=flotilla`).
pub const SYSTEM_HOME: &str = "/var/lib/flotilla";
pub const SYSTEM_USER: &str = "flotilla";

fn unit_name(role: Role) -> String {
    format!("flotilla-{}.service", role.name())
}

/// systemd's quoting for one word of `ExecStart=`.
fn quote(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-=:+,@".contains(c))
    {
        word.to_string()
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The unit file for `role` in `scope`, running `exe`.
pub fn unit(role: Role, scope: Scope, exe: &Path) -> String {
    let args: Vec<String> = role.args().iter().map(|a| quote(a)).collect();
    let (environment, hardening, wanted_by) = match scope {
        Scope::System => (
            // uv's cache and the Pythons it installs stay in the service's home too.
            format!(
                "FLOTILLA_HOME={SYSTEM_HOME} XDG_CACHE_HOME={SYSTEM_HOME}/cache \
                 XDG_DATA_HOME={SYSTEM_HOME}/share"
            ),
            format!(
                "User={SYSTEM_USER}\nGroup={SYSTEM_USER}\nStateDirectory=flotilla\n\
                 StateDirectoryMode=0700\nProtectSystem=strict\nProtectHome=yes\n\
                 PrivateTmp=yes\nProtectKernelTunables=yes\nProtectControlGroups=no\n\
                 ReadWritePaths={SYSTEM_HOME}\n"
            ),
            "multi-user.target",
        ),
        Scope::User => (
            "FLOTILLA_LOG=info".to_string(),
            String::new(),
            "default.target",
        ),
    };
    fill(
        TEMPLATE,
        &[
            ("ROLE_TITLE", role.title()),
            ("SCOPE", scope.name()),
            ("EXEC", &quote(&exe.to_string_lossy())),
            ("ARGS", &args.join(" ")),
            ("ENVIRONMENT", &environment),
            ("HARDENING", &hardening),
            ("WANTED_BY", wanted_by),
        ],
    )
}

fn unit_path(role: Role, scope: Scope) -> anyhow::Result<PathBuf> {
    Ok(match scope {
        Scope::System => Path::new("/etc/systemd/system").join(unit_name(role)),
        Scope::User => dirs::config_dir()
            .ok_or_else(|| anyhow::anyhow!("no home directory to put a user service in"))?
            .join("systemd/user")
            .join(unit_name(role)),
    })
}

fn systemctl(scope: Scope, args: &[&str]) -> Vec<String> {
    let mut c = vec!["systemctl".to_string()];
    if scope == Scope::User {
        c.push("--user".into());
    }
    c.extend(args.iter().map(|s| s.to_string()));
    c
}

pub fn plan(role: Role, scope: Scope, exe: &Path) -> anyhow::Result<Plan> {
    Ok(Plan {
        role,
        scope,
        path: unit_path(role, scope)?,
        contents: unit(role, scope, exe),
        commands: vec![
            systemctl(scope, &["daemon-reload"]),
            systemctl(scope, &["enable", "--now", &unit_name(role)]),
        ],
    })
}

/// A system service needs root and its user.
pub fn prepare(plan: &Plan) -> anyhow::Result<()> {
    if plan.scope == Scope::User {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("a system service needs root: run `sudo flotilla service install --system`");
    }
    let exists = std::process::Command::new("id")
        .arg(SYSTEM_USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        // Its home is the service's state directory: uv's cache and the runtime live there.
        let out = std::process::Command::new("useradd")
            .args(["--system", "--home-dir", SYSTEM_HOME, "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", SYSTEM_USER])
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "cannot create the user {SYSTEM_USER}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

pub fn stop_commands(plan: &Plan) -> Vec<Vec<String>> {
    vec![systemctl(
        plan.scope,
        &["disable", "--now", &unit_name(plan.role)],
    )]
}

pub fn after_remove(plan: &Plan) -> Vec<Vec<String>> {
    vec![systemctl(plan.scope, &["daemon-reload"])]
}

pub fn active(plan: &Plan) -> bool {
    let c = systemctl(plan.scope, &["is-active", "--quiet", &unit_name(plan.role)]);
    std::process::Command::new(&c[0])
        .args(&c[1..])
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_unit_is_hardened_and_runs_as_its_own_user() {
        let u = unit(Role::Worker, Scope::System, Path::new("/usr/bin/flotilla"));
        for line in [
            "ExecStart=/usr/bin/flotilla worker",
            "User=flotilla",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/flotilla",
            "Delegate=yes",
            "Restart=on-failure",
            "Environment=FLOTILLA_HOME=/var/lib/flotilla XDG_CACHE_HOME=/var/lib/flotilla/cache \
             XDG_DATA_HOME=/var/lib/flotilla/share",
            "WantedBy=multi-user.target",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} missing from:\n{u}");
        }
        assert!(!u.contains('@'), "an unfilled placeholder:\n{u}");
        let h = unit(Role::Head, Scope::User, Path::new("/opt/my apps/flotilla"));
        assert!(
            h.contains("ExecStart=\"/opt/my apps/flotilla\" up --network auto"),
            "{h}"
        );
        assert!(!h.contains("User="), "{h}");
        assert!(h.contains("WantedBy=default.target"), "{h}");
    }
}
