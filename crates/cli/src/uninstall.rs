//! `flotilla uninstall [--purge] [--yes]`: removes what Flotilla put on this machine. Always: its
//! services, the desktop app's start-at-login entry, the provisioned runtimes, logs and the run
//! directory. With `--purge`, after a confirmation: its settings, its state (the enrollment, the
//! outbox, the head's registry) and every secret it stored, so nothing of it is left.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use flotilla_host::Dirs;

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Also remove settings, state and every secret Flotilla stored (after a confirmation).
    #[arg(long)]
    purge: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn remove(path: &Path, removed: &mut Vec<String>, errors: &mut Vec<String>) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else if path.exists() {
        std::fs::remove_file(path)
    } else {
        return;
    };
    match result {
        Ok(()) => removed.push(path.display().to_string()),
        Err(e) => errors.push(format!("{}: {e}", path.display())),
    }
}

fn confirm(dirs: &Dirs) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--purge removes Flotilla's settings, state and secrets; without a terminal to \
             confirm it, pass --yes"
        );
    }
    eprintln!(
        "This removes Flotilla's settings ({}), state ({}) and every secret it stored.\n\
         Type `yes` to go on:",
        dirs.config.display(),
        dirs.state.display()
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

pub async fn run(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::from_env();
    if args.purge && !args.yes && !confirm(&dirs)? {
        eprintln!("Nothing removed.");
        return Ok(ExitCode::FAILURE);
    }
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for plan in flotilla_app::service::all_plans() {
        match flotilla_app::service::uninstall(&plan) {
            Ok(true) => removed.push(plan.path.display().to_string()),
            Ok(false) => {}
            Err(e) => errors.push(format!("{}: {e:#}", plan.path.display())),
        }
    }
    for entry in flotilla_app::service::autostart_entries() {
        remove(&entry, &mut removed, &mut errors);
    }
    if args.purge {
        // Secrets first, through their store: a keyring keeps them outside these directories.
        let secrets = tokio::task::spawn_blocking(|| {
            let (_, _, store) = flotilla_app::secrets::load_store()?;
            let mut gone = Vec::new();
            for info in store.list()? {
                if store.remove(&info.name)? {
                    gone.push(format!("secret {}", info.name));
                }
            }
            anyhow::Ok(gone)
        })
        .await?;
        match secrets {
            Ok(gone) => removed.extend(gone),
            Err(e) => errors.push(format!("secrets: {e:#}")),
        }
    }
    for dir in [&dirs.runtimes(), &dirs.logs, &dirs.run] {
        remove(dir, &mut removed, &mut errors);
    }
    if args.purge {
        for dir in [&dirs.config, &dirs.state, &dirs.data] {
            remove(dir, &mut removed, &mut errors);
        }
        // A FLOTILLA_HOME (a service's home, a portable install) goes too once it is empty.
        if let Some(home) = std::env::var_os("FLOTILLA_HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            if std::fs::read_dir(&home).is_ok_and(|mut d| d.next().is_none()) {
                remove(&home, &mut removed, &mut errors);
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "removed": removed,
                "errors": errors,
                "purged": args.purge,
            }))?
        );
    } else {
        for r in &removed {
            println!("removed {r}");
        }
        if removed.is_empty() {
            println!("Nothing of Flotilla was found to remove.");
        }
        for e in &errors {
            eprintln!("warning: could not remove {e}");
        }
        if !args.purge {
            println!(
                "Settings, state and secrets are kept; `flotilla uninstall --purge` removes them too."
            );
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
