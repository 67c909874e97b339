//! `flotilla head backup`, `flotilla head restore` and `flotilla head backup-passphrase`: a
//! head saved to one encrypted file and put back, here or on another machine
//! ([`flotilla_app::backup`]). This module reads the passphrase (a prompt, a file or the
//! environment, never an argument) and prints what was done.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use flotilla_secrets::Secret;

/// The environment variable a passphrase may come from (for scripts; a file is safer).
pub const PASSPHRASE_ENV: &str = "FLOTILLA_BACKUP_PASSPHRASE";

/// Where the passphrase comes from.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of this file (`-`: standard input) instead of
    /// prompting. FLOTILLA_BACKUP_PASSPHRASE also works. Never on the command line.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (mode 0600; replaced whole if it exists).
    file: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (from `flotilla head backup` or a scheduled backup).
    file: PathBuf,
    /// Replace the head this home already has (its registry and identity are lost).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Reads the passphrase: the file, else the environment, else a prompt on the terminal
/// (twice when `confirm`).
fn passphrase(args: &PassphraseArgs, confirm: bool) -> anyhow::Result<Secret> {
    let text = if let Some(path) = &args.passphrase_file {
        let mut raw = Vec::new();
        if path == Path::new("-") {
            std::io::stdin()
                .take(64 * 1024)
                .read_to_end(&mut raw)
                .context("cannot read the passphrase from standard input")?;
        } else {
            raw = std::fs::read(path)
                .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
        }
        let text = String::from_utf8(raw).context("the passphrase file is not text")?;
        let line = text.lines().next().unwrap_or("").to_string();
        Secret::from(line)
    } else if let Some(value) = std::env::var_os(PASSPHRASE_ENV).filter(|v| !v.is_empty()) {
        Secret::from(
            value
                .into_string()
                .map_err(|_| anyhow::anyhow!("{PASSPHRASE_ENV} is not text"))?,
        )
    } else {
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "no passphrase: give it with --passphrase-file FILE (or `-` for standard input), \
             or in {PASSPHRASE_ENV}, or run this in a terminal to be asked"
        );
        let first = rpassword::prompt_password("Backup passphrase (not shown): ")
            .context("cannot prompt for the passphrase")?;
        if confirm {
            let again = rpassword::prompt_password("The same passphrase again: ")
                .context("cannot prompt for the passphrase")?;
            anyhow::ensure!(
                first == again,
                "the two passphrases differ: nothing was written; run the command again"
            );
        }
        Secret::from(first)
    };
    anyhow::ensure!(!text.is_empty(), "the passphrase is empty");
    Ok(text)
}

fn passphrase_checked(args: &PassphraseArgs, confirm: bool) -> anyhow::Result<Secret> {
    let p = passphrase(args, confirm)?;
    let chars = p.expose_str().map_or(p.len(), |s| s.trim().chars().count());
    anyhow::ensure!(
        chars >= flotilla_head::backup::MIN_PASSPHRASE_CHARS,
        "{}",
        flotilla_head::backup::BackupError::ShortPassphrase
    );
    Ok(p)
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || {
        let pass = passphrase_checked(&args.passphrase, true)?;
        let done = flotilla_app::backup::back_up(&args.file, &pass)?;
        let (m, running) = (&done.manifest, done.head_running);
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "file": args.file,
                    "bytes": done.bytes,
                    "made_unix": m.made_unix,
                    "fingerprint": m.fingerprint,
                    "nodes": m.nodes,
                    "head_running": running,
                    "settings": done.settings,
                })
            );
        } else {
            println!(
                "Backed up the head{} to {} ({} KiB): the registry ({} nodes, their contribution \
                 ledger), the TLS identity (fingerprint {}), the Ray and admin tokens{}.",
                if running { " (running)" } else { "" },
                args.file.display(),
                done.bytes.div_ceil(1024),
                m.nodes,
                m.fingerprint,
                if done.settings {
                    " and flotilla.toml"
                } else {
                    ""
                },
            );
            println!(
                "Keep the file and its passphrase apart: with both, anyone can run this fleet's \
                 head. Restore with `flotilla head restore {}`.",
                args.file.display()
            );
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
    .await?
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || {
        let pass = passphrase(&args.passphrase, false)?;
        let (manifest, done) = flotilla_app::backup::restore(&args.file, &pass, args.force)?;
        let m = &manifest;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "file": args.file,
                    "made_unix": m.made_unix,
                    "made_on": m.hostname,
                    "fingerprint": done.fingerprint,
                    "nodes": done.nodes,
                    "settings_written": done.settings_written,
                    "settings_kept": done.settings_kept,
                })
            );
        } else {
            println!(
                "Restored the head backed up on {} at {}: {} nodes, fingerprint {}.",
                m.hostname,
                flotilla_host::clock::format_utc(m.made_unix),
                done.nodes,
                done.fingerprint,
            );
            if done.settings_kept {
                println!(
                    "This home's flotilla.toml is kept; the backup's settings were not applied."
                );
            }
            println!(
                "Start it with `flotilla up` (or its service). Enrolled workers keep their \
                 enrollment: if this machine's address differs from the old head's, run \
                 `flotilla worker --head ADDRESS:PORT` once on each (the `Control plane` address `flotilla up` \
                 prints here); they check it is the same head by its \
                 fingerprint."
            );
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
    .await?
}

/// Stores the passphrase scheduled backups (`[backup]` in `flotilla.toml`) are made with.
pub async fn set_passphrase(args: PassphraseArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || {
        let pass = passphrase_checked(&args, true)?;
        let backend = flotilla_app::backup::store_passphrase(&pass)?;
        println!(
            "The backup passphrase is stored ({backend}) as {}. Scheduled backups use it from \
             the head's next start; keep a copy elsewhere: without it no backup opens.",
            flotilla_head::backup::PASSPHRASE_SECRET
        );
        anyhow::Ok(ExitCode::SUCCESS)
    })
    .await?
}
