//! `flotilla secret {set,get,list,rm,recover}`: named secrets in the OS keyring (or the private
//! file on a machine without one). Values never come from or go to the command line, and
//! Flotilla's own secrets (`flotilla.*`) are shown but neither replaced nor removed
//! ([`flotilla_app::secrets::check_change`], the desktop app's rule too).

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use flotilla_agent::config;
use flotilla_app::secrets::{Change, check_change, load_store};
use flotilla_host::Dirs;
use flotilla_secrets::{MAX_SECRET_BYTES, Secret, SecretInfo};

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
        /// Print the value to standard output. A value that is not printable text is printed
        /// only when standard output is not a terminal (`--reveal > FILE`), or with --hex.
        #[arg(long)]
        reveal: bool,
        /// Print the value in hexadecimal (implies --reveal).
        #[arg(long)]
        hex: bool,
    },
    /// List the stored secrets: names, dates and backend, never values.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret (not one of Flotilla's own, `flotilla.*`: `flotilla uninstall --purge`
    /// removes those).
    Rm { name: String },
    /// Check the store's files and put back the previous version of any that cannot be read
    /// (every write keeps it as <file>.prev). Prints what it restored: names and dates, never
    /// values.
    Recover {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read_value(name: &str, from_stdin: bool) -> anyhow::Result<Secret> {
    let mut value = if from_stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(MAX_SECRET_BYTES as u64 + 3)
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        // (Up to two more bytes for a trailing line break, dropped below.)
        let value_len =
            buf.len() - usize::from(buf.ends_with(b"\n")) - usize::from(buf.ends_with(b"\r\n"));
        anyhow::ensure!(
            value_len <= MAX_SECRET_BYTES,
            "the value is over {MAX_SECRET_BYTES} bytes, the largest secret Flotilla stores: \
             secrets are tokens, keys and certificates; keep larger data in a file and store \
             only its key. Nothing was stored"
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
            check_change(&name, Change::Set)?;
            let value = read_value(&name, from_stdin)?;
            let (_, _, store) = load_store()?;
            store.set(&name, &value)?;
            eprintln!("Stored {name} in {}.", store.backend_name());
        }
        SecretCommand::Get { name, reveal, hex } => {
            let (_, _, store) = load_store()?;
            let value = store.get(&name)?;
            if hex {
                // A `Secret`, so that the digits are zeroed too.
                let digits = Secret::from(to_hex(value.expose()));
                crate::output::write_all(digits.expose());
                crate::output::write_all(b"\n");
            } else if reveal {
                anyhow::ensure!(
                    is_printable(&value) || !std::io::stdout().is_terminal(),
                    "the value of {name} is not printable text ({} bytes), and standard output \
                     is a terminal: write the bytes to a file (`flotilla secret get {name} \
                     --reveal > FILE`) or print them in hexadecimal (`flotilla secret get \
                     {name} --hex`)",
                    value.len()
                );
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
            if json {
                let items: Vec<serde_json::Value> = list.iter().map(info_json).collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if list.is_empty() {
                println!("No secrets stored ({}).", store.backend_name());
            } else {
                println!("{:<32} {:<8} UPDATED (unix)", "NAME", "BACKEND");
                for i in &list {
                    println!(
                        "{:<32} {:<8} {}",
                        shown(&i.name),
                        i.backend.as_str(),
                        unix(i.updated)
                    );
                }
            }
        }
        SecretCommand::Rm { name } => {
            check_change(&name, Change::Remove)?;
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
        SecretCommand::Recover { json } => recover(json)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn info_json(i: &SecretInfo) -> serde_json::Value {
    serde_json::json!({
        "name": i.name,
        "created_unix": unix(i.created),
        "updated_unix": unix(i.updated),
        "backend": i.backend.as_str(),
    })
}

/// `flotilla secret recover`: needs only the state directory and the config, not a working
/// store (the point is that the store cannot be opened).
fn recover(json: bool) -> anyhow::Result<()> {
    let dirs = Dirs::from_env();
    let config = config::load(&dirs.config.join(config::FILE_NAME))?;
    let report = flotilla_secrets::recover(&config.secrets.store_config(&dirs.state))?;
    if json {
        let items: Vec<serde_json::Value> = report
            .iter()
            .map(|f| {
                serde_json::json!({
                    "path": f.path,
                    "restored": f.restored_from.is_some(),
                    "restored_from": f.restored_from,
                    "damaged_kept_as": f.damaged_kept_as,
                    "written_unix": f.written.map(unix),
                    "secrets": f.secrets.iter().map(info_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if report.is_empty() {
        println!(
            "No secrets file or keyring index in {}: nothing to recover.",
            dirs.state.display()
        );
    }
    for f in &report {
        let count = match f.secrets.len() {
            1 => "1 secret".to_owned(),
            n => format!("{n} secrets"),
        };
        match (&f.restored_from, &f.damaged_kept_as) {
            (Some(from), damaged) => {
                println!(
                    "Restored {} from {} (written at unix {}), {count}:",
                    f.path.display(),
                    from.display(),
                    f.written.map(unix).unwrap_or(0)
                );
                if let Some(damaged) = damaged {
                    println!(
                        "  the unreadable version is kept as {} (delete it when done)",
                        damaged.display()
                    );
                }
                println!("  secrets set by its last change are gone from it: set them again");
            }
            (None, _) => println!("{} is readable, {count}: nothing to do.", f.path.display()),
        }
        if f.restored_from.is_some() && !f.secrets.is_empty() {
            println!("  {:<32} UPDATED (unix)", "NAME");
            for i in &f.secrets {
                println!("  {:<32} {}", shown(&i.name), unix(i.updated));
            }
        }
    }
    Ok(())
}

/// Lower-case hexadecimal.
fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// Text a terminal shows as it is: UTF-8 without control characters (which can move the
/// cursor, retitle the window or hide what follows), line breaks and tabs aside.
fn is_printable(value: &Secret) -> bool {
    value
        .expose_str()
        .is_some_and(|s| s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'))
}

/// A stored name as a terminal can show it unambiguously: as it is, or, if it contains
/// invisible, bidirectional, look-alike or control characters (a name stored before names
/// were checked, or a hand-edited file), quoted with those characters as `\u{..}` escapes.
fn shown(name: &str) -> String {
    if flotilla_secrets::ambiguous_character(name).is_none() {
        return name.to_owned();
    }
    let mut out = String::from("\"");
    for c in name.chars() {
        let lone = c.to_string();
        if c != ' ' && flotilla_secrets::ambiguous_character(&lone).is_some()
            || c == '"'
            || c == '\\'
        {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flotillas_own_secrets_are_neither_stored_nor_removed_by_hand() {
        // Refused before the store is opened or a value is read.
        for (cmd, change) in [
            (
                SecretCommand::Rm {
                    name: "flotilla.ray-token".into(),
                },
                Change::Remove,
            ),
            (
                SecretCommand::Set {
                    name: "flotilla.node-credential".into(),
                    from_stdin: true,
                },
                Change::Set,
            ),
        ] {
            let e = run_blocking(cmd).unwrap_err();
            let protected = e
                .downcast_ref::<flotilla_app::secrets::Protected>()
                .unwrap_or_else(|| panic!("{e:#}"));
            assert_eq!(protected.change, change);
        }
    }

    #[test]
    fn ambiguous_names_are_shown_escaped() {
        assert_eq!(shown("exchange-key"), "exchange-key");
        assert_eq!(shown("clé-交易所"), "clé-交易所");
        assert_eq!(shown("pay\u{202e}gpj.exe"), "\"pay\\u{202e}gpj.exe\"");
        assert_eq!(shown("a\u{200b}b"), "\"a\\u{200b}b\"");
        assert_eq!(shown("a\u{a0}b"), "\"a\\u{00a0}b\"");
        assert_eq!(shown(" a  b"), "\" a  b\"");
        assert_eq!(shown("x\u{1b}[2J"), "\"x\\u{001b}[2J\"");
    }

    #[test]
    fn printable_means_text_without_control_characters() {
        assert!(is_printable(&Secret::from("tok-1234\nline two\té")));
        assert!(!is_printable(&Secret::from_bytes(vec![0xff, 0xfe, 0x00])));
        assert!(!is_printable(&Secret::from("title\u{1b}]0;owned\u{7}")));
        assert_eq!(to_hex(&[0x00, 0x1f, 0xab, 0xff]), "001fabff");
    }
}
