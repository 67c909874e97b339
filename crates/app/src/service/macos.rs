//! launchd jobs: a LaunchAgent (`--user`, at login) or a LaunchDaemon (`--system`, at boot).
//! Written from launchd.plist(5); built and tested on macOS by the CI workflow.

use std::path::{Path, PathBuf};

use super::{Plan, Role, Scope, fill};

const TEMPLATE: &str = include_str!("../../../../installers/launchd/dev.flotilla.plist.in");

fn label(role: Role) -> String {
    format!("dev.flotilla.{}", role.name())
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn domain(scope: Scope) -> String {
    match scope {
        // SAFETY: getuid has no preconditions.
        Scope::User => format!("gui/{}", unsafe { libc::getuid() }),
        Scope::System => "system".into(),
    }
}

pub fn plan(role: Role, scope: Scope, exe: &Path) -> anyhow::Result<Plan> {
    let home = dirs::home_dir().ok_or_else(|| anyhow::anyhow!("no home directory"))?;
    let (dir, log): (PathBuf, PathBuf) = match scope {
        Scope::User => (
            home.join("Library/LaunchAgents"),
            home.join("Library/Logs/flotilla")
                .join(format!("{}.log", role.name())),
        ),
        Scope::System => (
            PathBuf::from("/Library/LaunchDaemons"),
            PathBuf::from(format!("/Library/Logs/flotilla-{}.log", role.name())),
        ),
    };
    let path = dir.join(format!("{}.plist", label(role)));
    let args: String = role
        .args()
        .iter()
        .map(|a| format!("    <string>{}</string>\n", xml(a)))
        .collect();
    let contents = fill(
        TEMPLATE,
        &[
            ("ROLE_TITLE", role.name()),
            ("LABEL", &label(role)),
            ("EXEC", &xml(&exe.to_string_lossy())),
            ("ARGS_XML", &args),
            ("LOG", &xml(&log.to_string_lossy())),
        ],
    );
    let p = path.to_string_lossy().into_owned();
    Ok(Plan {
        role,
        scope,
        path,
        contents,
        commands: vec![vec![
            "launchctl".into(),
            "bootstrap".into(),
            domain(scope),
            p,
        ]],
    })
}

pub fn prepare(_plan: &Plan) -> anyhow::Result<()> {
    Ok(())
}

pub fn stop_commands(plan: &Plan) -> Vec<Vec<String>> {
    vec![vec![
        "launchctl".into(),
        "bootout".into(),
        format!("{}/{}", domain(plan.scope), label(plan.role)),
    ]]
}

pub fn after_remove(_plan: &Plan) -> Vec<Vec<String>> {
    Vec::new()
}

pub fn active(plan: &Plan) -> bool {
    std::process::Command::new("launchctl")
        .args([
            "print",
            &format!("{}/{}", domain(plan.scope), label(plan.role)),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}
