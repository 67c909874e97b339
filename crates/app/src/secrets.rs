//! The secret store as `flotilla.toml` asks for it, and the one rule about Flotilla's own
//! secrets (the node credential, the Ray and admin tokens, the TLS key, all named
//! `flotilla.*`): a person sees them, but neither front end replaces or removes them. Only
//! Flotilla writes them (joining, hosting, rotating the Ray token) and `flotilla uninstall
//! --purge` removes them.

use anyhow::Context;
use flotilla_agent::config::{self, FileConfig};
use flotilla_host::Dirs;
use flotilla_secrets::{BackendKind, SecretStore};

/// The names of Flotilla's own secrets begin with this.
pub const PROTECTED_PREFIX: &str = "flotilla.";

/// Whether `name` is one of Flotilla's own secrets.
pub fn is_protected(name: &str) -> bool {
    name.starts_with(PROTECTED_PREFIX)
}

/// What a person asked to do to a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Store it (a new value replaces the old).
    Set,
    Remove,
}

/// A change refused because the secret is one of Flotilla's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    pub name: String,
    pub change: Change,
}

impl std::fmt::Display for Protected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.change {
            Change::Set => "replaced",
            Change::Remove => "removed",
        };
        write!(
            f,
            "{} is one of Flotilla's own secrets ({PROTECTED_PREFIX}*) and cannot be {what} by \
             hand; `flotilla uninstall --purge` removes them all",
            self.name
        )
    }
}

impl std::error::Error for Protected {}

/// Refuses `change` to one of Flotilla's own secrets: what both front ends check before they
/// store or remove a secret a person named.
pub fn check_change(name: &str, change: Change) -> Result<(), Protected> {
    if is_protected(name) {
        return Err(Protected {
            name: name.to_string(),
            change,
        });
    }
    Ok(())
}

/// Opens the secret store that `flotilla.toml` asks for.
pub fn open_store(dirs: &Dirs, config: &FileConfig) -> anyhow::Result<SecretStore> {
    dirs.create_all()
        .context("cannot create Flotilla's directories")?;
    Ok(SecretStore::open(
        &config.secrets.store_config(&dirs.state),
    )?)
}

/// The directories, `flotilla.toml` and the store it asks for. Blocks (keyring calls are
/// D-Bus round trips): call it from a blocking task.
pub fn load_store() -> anyhow::Result<(Dirs, FileConfig, SecretStore)> {
    let dirs = Dirs::from_env();
    let config = config::load(&dirs.config.join(config::FILE_NAME))?;
    let store = open_store(&dirs, &config)?;
    Ok((dirs, config, store))
}

/// What to tell a person when the store fell back to the private file because no OS keyring
/// is reachable (and the settings allow that); `None` otherwise.
pub fn fallback_notice(config: &FileConfig, store: &SecretStore) -> Option<String> {
    if store.backend() != BackendKind::File
        || config.secrets.backend != config::SecretsBackend::Auto
    {
        return None;
    }
    Some(format!(
        "Note: no OS keyring is reachable, so secrets are kept in {} (readable only by you).\n  \
         Set [secrets] file_fallback = false in flotilla.toml to refuse instead",
        store
            .file_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flotillas_own_secrets_are_neither_replaced_nor_removed() {
        for name in [
            "flotilla.ray-token",
            "flotilla.node-credential",
            "flotilla.admin-token",
        ] {
            for change in [Change::Set, Change::Remove] {
                let e = check_change(name, change).unwrap_err().to_string();
                assert!(e.contains(name) && e.contains("flotilla.*"), "{e}");
            }
        }
        assert!(check_change("binance-api-key", Change::Remove).is_ok());
        assert!(check_change("flotilla-notes", Change::Set).is_ok());
        assert!(is_protected(flotilla_head::RAY_TOKEN_SECRET));
        assert!(is_protected(flotilla_agent::enrollment::CREDENTIAL_SECRET));
    }
}
