//! `flotilla secret {set,get,list,rm}`: named secrets in the OS keyring (or the private file on
//! a machine without one). Values never come from or go to the command line.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use flotilla_agent::config::{self, FileConfig};
use flotilla_host::Dirs;
use flotilla_secrets::{BackendKind, Secret, SecretStore};

/// Largest value `--from-stdin` accepts.
const MAX_VALUE: usize = 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret. The value is read from a prompt that does not echo, or from standard
    /// input with --from-stdin; never from the command line.
    Set {
        /// The secret's name, e.g. `binance-api-key`.
        name: String,
        /// Read the value from standard input (one trailing newline is dropped).
        #[arg(long)]
        from_stdin: bool,
    },
    /// Say whether a secret is stored; with --reveal, print its value.
    Get {
        name: String,
        /// Print the value to standard output.
        #[arg(long)]
        reveal: bool,
    },
    /// List the stored secrets: names, dates and backend, never values.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Rm { name: String },
}

/// Opens the secret store that `flotilla.toml` asks for.
pub fn open_store(dirs: &Dirs, config: &FileConfig) -> anyhow::Result<SecretStore> {
    dirs.create_all()
        .context("cannot create Flotilla's directories")?;
    Ok(SecretStore::open(
        &config.secrets.store_config(&dirs.state),
    )?)
}

/// Tells the user, once, that the store fell back to the private file.
pub fn notice_fallback(config: &FileConfig, store: &SecretStore) {
    if store.backend() == BackendKind::File
        && config.secrets.backend == config::SecretsBackend::Auto
    {
        eprintln!(
            "Note: no OS keyring is reachable, so secrets are kept in {} (readable only by you).\n  Set \
             [secrets] file_fallback = false in flotilla.toml to refuse instead",
            store
                .file_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
}

/// The config file and the store, for commands that need both.
pub fn load_store() -> anyhow::Result<(Dirs, FileConfig, SecretStore)> {
    let dirs = Dirs::from_env();
    let config = config::load(&dirs.config.join(config::FILE_NAME))?;
    let store = open_store(&dirs, &config)?;
    Ok((dirs, config, store))
}

fn read_value(name: &str, from_stdin: bool) -> anyhow::Result<Secret> {
    let mut value = if from_stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(MAX_VALUE as u64 + 1)
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        anyhow::ensure!(
            buf.len() <= MAX_VALUE,
            "the value is over {MAX_VALUE} bytes"
        );
        buf
    } else {
        rpassword::prompt_password(format!("Value for {name} (not shown): "))
            .context("no terminal to prompt on: pipe the value in with --from-stdin")?
            .into_bytes()
    };
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    anyhow::ensure!(!value.is_empty(), "the value is empty: nothing was stored");
    Ok(Secret::from_bytes(value))
}

pub async fn run(cmd: SecretCommand) -> anyhow::Result<ExitCode> {
    // Keyring calls block on D-Bus round trips.
    tokio::task::spawn_blocking(move || run_blocking(cmd)).await?
}

fn run_blocking(cmd: SecretCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretCommand::Set { name, from_stdin } => {
            flotilla_secrets::validate_name(&name)?;
            let value = read_value(&name, from_stdin)?;
            let (_, _, store) = load_store()?;
            store.set(&name, &value)?;
            eprintln!("Stored {name} in {}.", store.backend_name());
        }
        SecretCommand::Get { name, reveal } => {
            let (_, _, store) = load_store()?;
            let value = store.get(&name)?;
            if reveal {
                crate::output::write_all(value.expose());
                crate::output::write_all(b"\n");
            } else {
                eprintln!(
                    "{name} is stored in {} ({} bytes). Add --reveal to print it.",
                    store.backend_name(),
                    value.len()
                );
            }
        }
        SecretCommand::List { json } => {
            let (_, _, store) = load_store()?;
            let list = store.list()?;
            let unix = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            };
            if json {
                let items: Vec<serde_json::Value> = list
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "name": i.name,
                            "created_unix": unix(i.created),
                            "updated_unix": unix(i.updated),
                            "backend": i.backend.as_str(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if list.is_empty() {
                println!("No secrets stored ({}).", store.backend_name());
            } else {
                println!("{:<32} {:<8} UPDATED (unix)", "NAME", "BACKEND");
                for i in &list {
                    println!(
                        "{:<32} {:<8} {}",
                        i.name,
                        i.backend.as_str(),
                        unix(i.updated)
                    );
                }
            }
        }
        SecretCommand::Rm { name } => {
            let (_, _, store) = load_store()?;
            if store.remove(&name)? {
                eprintln!("Removed {name}.");
            } else {
                anyhow::bail!(
                    "no secret named {name:?} is stored ({})",
                    store.backend_name()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
