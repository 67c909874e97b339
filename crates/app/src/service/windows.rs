//! A Windows service created with `sc.exe` (sc.exe create/delete, documented by Microsoft),
//! started automatically at boot. Only `--system`: Windows services are machine-wide. Built and
//! tested on Windows by the CI workflow.

use std::path::{Path, PathBuf};

use super::{Plan, Role, Scope};

fn name(role: Role) -> String {
    format!("flotilla-{}", role.name())
}

pub fn plan(role: Role, scope: Scope, exe: &Path) -> anyhow::Result<Plan> {
    if scope == Scope::User {
        anyhow::bail!("Windows services are machine-wide: use --system (in an elevated prompt)");
    }
    let command = format!("\"{}\" {}", exe.display(), role.args().join(" "));
    // sc.exe keeps the service in the registry; this marker file records that Flotilla made it.
    let path = std::env::var_os("ProgramData")
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from)
        .join("flotilla")
        .join(format!("{}.service", name(role)));
    Ok(Plan {
        role,
        scope,
        path,
        contents: command.clone(),
        commands: vec![
            vec![
                "sc.exe".into(),
                "create".into(),
                name(role),
                "start=".into(),
                "auto".into(),
                "binPath=".into(),
                command,
                "DisplayName=".into(),
                format!("Flotilla {}", role.name()),
            ],
            vec!["sc.exe".into(), "start".into(), name(role)],
        ],
    })
}

pub fn prepare(_plan: &Plan) -> anyhow::Result<()> {
    Ok(())
}

pub fn stop_commands(plan: &Plan) -> Vec<Vec<String>> {
    vec![
        vec!["sc.exe".into(), "stop".into(), name(plan.role)],
        vec!["sc.exe".into(), "delete".into(), name(plan.role)],
    ]
}

pub fn after_remove(_plan: &Plan) -> Vec<Vec<String>> {
    Vec::new()
}

pub fn active(plan: &Plan) -> bool {
    std::process::Command::new("sc.exe")
        .args(["query", &name(plan.role)])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("RUNNING"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_service_is_created_to_start_at_boot_and_removed_by_name() {
        let exe = Path::new(r"C:\Program Files\Flotilla\flotilla.exe");
        let plan = plan(Role::Worker, Scope::System, exe).unwrap();
        let create = &plan.commands[0];
        assert_eq!(
            &create[..5],
            ["sc.exe", "create", "flotilla-worker", "start=", "auto"]
        );
        // sc.exe takes the whole command line as one argument after `binPath=`, the program
        // quoted because of the space in its path.
        let bin = create.iter().position(|a| a == "binPath=").unwrap();
        assert_eq!(
            create[bin + 1],
            r#""C:\Program Files\Flotilla\flotilla.exe" worker"#
        );
        assert_eq!(plan.commands[1], ["sc.exe", "start", "flotilla-worker"]);
        assert_eq!(
            stop_commands(&plan),
            [
                ["sc.exe", "stop", "flotilla-worker"],
                ["sc.exe", "delete", "flotilla-worker"]
            ]
        );
        assert!(plan.path.ends_with(r"flotilla\flotilla-worker.service"));
    }

    #[test]
    fn a_per_user_service_is_refused_with_what_to_do() {
        let err = plan(Role::Head, Scope::User, Path::new("flotilla.exe")).unwrap_err();
        assert!(err.to_string().contains("--system"), "{err}");
    }
}
