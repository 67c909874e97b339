//! The OS keyring backend (Secret Service, Keychain, Credential Manager) through `keyring` 4.x,
//! with a name index on disk for listing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FileLock};
use crate::{BackendKind, Error, Result, Secret, SecretInfo};

/// The index's file name in the state directory.
pub const INDEX_FILE_NAME: &str = "keyring-index.json";

const FORMAT_VERSION: u32 = 1;

/// Names and timestamps of the secrets this machine put in the keyring, per service name.
/// Never values.
#[derive(Serialize, Deserialize)]
struct Index {
    version: u32,
    services: BTreeMap<String, BTreeMap<String, Times>>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
struct Times {
    created_ms: u64,
    updated_ms: u64,
}

/// What the index says of one name.
fn info((name, t): (&String, &Times)) -> SecretInfo {
    SecretInfo {
        name: name.clone(),
        created: fsutil::from_ms(t.created_ms),
        updated: fsutil::from_ms(t.updated_ms),
        backend: BackendKind::Keyring,
    }
}

/// Parses the index file; `path` names it in errors.
fn parse_index(bytes: &[u8], path: &Path) -> Result<Index> {
    let index: Index = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        detail: fsutil::json_error(&e),
    })?;
    if index.version != FORMAT_VERSION {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!("format version {} is not supported", index.version),
        });
    }
    Ok(index)
}

/// Every name in the index at `path`, in every service; for [`crate::recover`].
pub(crate) fn recover_index(path: &Path) -> Result<crate::RecoveredFile> {
    let _lock = FileLock::acquire(path)?;
    crate::recovery::recover_file(path, &|bytes| {
        let index = parse_index(bytes, path)?;
        Ok(index
            .services
            .values()
            .flat_map(|names| names.iter())
            .map(info)
            .collect())
    })
}

/// The largest value this platform's keyring stores, in bytes: Windows' Credential Manager
/// holds at most `CRED_MAX_CREDENTIAL_BLOB_SIZE` (2560) bytes; the Secret Service (limited by
/// the D-Bus message size, 32 MiB by default: gnome-keyring stored 8 MiB and lost its
/// connection at 64 MiB) and the macOS Keychain (no documented limit) take anything up to
/// Flotilla's own [`crate::MAX_SECRET_BYTES`].
pub fn keyring_max_secret_bytes() -> usize {
    if cfg!(windows) {
        2560
    } else {
        crate::MAX_SECRET_BYTES
    }
}

fn too_large(name: &str, size: usize, limit: usize) -> Error {
    Error::TooLarge {
        subject: format!("the value of \"{name}\""),
        size,
        limit,
        reason: format!("the most the {} stores", vendor()),
        advice: "store a smaller value, or use the file backend ([secrets] backend = \"file\" \
                 in flotilla.toml), which takes values up to 65536 bytes"
            .to_owned(),
    }
}

/// Whether the platform's keyring can be reached from this process, and if not, why. The
/// `keyring` crate connects once per process (on Linux: to the Secret Service on the D-Bus
/// session bus), so the answer does not change for the life of the process.
pub(crate) fn availability() -> std::result::Result<(), String> {
    match keyring::Entry::store_status() {
        Ok(()) => Ok(()),
        Err(e) => Err(describe(e)),
    }
}

/// The entry [`probe_writable`] writes and deletes.
const PROBE_NAME: &str = "flotilla-secrets-probe";

/// Whether the keyring accepts a write now: writes and deletes a probe entry under `service`.
/// A bus with a Secret Service whose keyring is locked (a headless login with gnome-keyring
/// activated on demand) passes [`availability`] but fails here. On a desktop this may show the
/// keyring's unlock prompt, which is what the user needs to see.
pub(crate) fn probe_writable(service: &str) -> std::result::Result<(), String> {
    let entry = keyring::Entry::new(service, PROBE_NAME).map_err(|e| describe(&e))?;
    match entry.set_secret(b"probe") {
        Ok(()) => {}
        Err(e @ keyring::Error::NoStorageAccess(_)) => {
            return Err(format!("the keyring is locked: {}", describe(&e)));
        }
        Err(e) => return Err(describe(&e)),
    }
    if let Err(e) = entry.delete_credential() {
        tracing::warn!(error = %describe(&e), "could not delete the keyring probe entry");
    }
    Ok(())
}

/// The keyring's own name for itself ("Secret Service store", "macOS Keychain Store", ...).
pub(crate) fn vendor() -> String {
    keyring_core::get_default_store()
        .map(|s| s.vendor())
        .map(|v| v.split(',').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_else(|| "unavailable".to_owned())
}

/// Text for a keyring error that never includes secret bytes (two variants carry them).
fn describe(e: &keyring::Error) -> String {
    match e {
        keyring::Error::BadEncoding(_) => "the stored value is not UTF-8".to_owned(),
        keyring::Error::BadDataFormat(_, inner) => {
            format!("the stored value is malformed: {inner}")
        }
        keyring::Error::NoDefaultStore => {
            "no default credential store: the platform keyring could not be opened".to_owned()
        }
        keyring::Error::PlatformFailure(inner) => {
            let text = inner.to_string();
            if text.contains("DBUS_SESSION_BUS_ADDRESS")
                || text.to_ascii_lowercase().contains("d-bus")
                || text.to_ascii_lowercase().contains("dbus")
                || text.contains("No such file or directory")
                || text.contains("Connection refused")
            {
                format!("no D-Bus session bus or no Secret Service on it: {text}")
            } else {
                format!("platform failure: {text}")
            }
        }
        other => other.to_string(),
    }
}

fn map_error(action: &'static str, name: &str, e: keyring::Error) -> Error {
    match e {
        keyring::Error::NoStorageAccess(_) => Error::KeyringLocked {
            action,
            name: name.to_owned(),
            detail: describe(&e),
        },
        _ => Error::Keyring {
            action,
            name: name.to_owned(),
            detail: describe(&e),
        },
    }
}

/// Secrets in the OS keyring under one service name; the secret's name is the entry's user name.
#[derive(Debug)]
pub(crate) struct KeyringStore {
    service: String,
    index_path: PathBuf,
}

impl KeyringStore {
    pub(crate) fn open(service: &str, state_dir: &Path) -> Result<KeyringStore> {
        availability().map_err(|detail| Error::NoKeyring { detail })?;
        fsutil::ensure_dir(state_dir)?;
        let store = KeyringStore {
            service: service.to_owned(),
            index_path: state_dir.join(INDEX_FILE_NAME),
        };
        store.load_index()?;
        Ok(store)
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn entry(&self, action: &'static str, name: &str) -> Result<keyring::Entry> {
        keyring::Entry::new(&self.service, name).map_err(|e| map_error(action, name, e))
    }

    fn load_index(&self) -> Result<Index> {
        let Some(bytes) = fsutil::read_private(&self.index_path)? else {
            return Ok(Index {
                version: FORMAT_VERSION,
                services: BTreeMap::new(),
            });
        };
        parse_index(&bytes, &self.index_path)
    }

    /// Replaces the index after reading the new one back, keeping the old one as
    /// `keyring-index.json.prev`.
    fn save_index(&self, index: &Index) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| Error::Io {
            path: self.index_path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        fsutil::replace_verified(&self.index_path, &bytes, &|on_disk| {
            if on_disk != bytes.as_slice() {
                return Err(Error::NotReadableBack {
                    path: self.index_path.clone(),
                    detail: "it reads back differently".to_owned(),
                });
            }
            parse_index(on_disk, &self.index_path).map(drop)
        })
    }

    /// Writes the value, then records the name. Both happen under the index lock, so that two
    /// processes setting the same name do not race in the keyring or lose each other's index
    /// entries.
    pub(crate) fn set(&self, name: &str, secret: &Secret) -> Result<()> {
        let limit = keyring_max_secret_bytes();
        if secret.len() > limit {
            return Err(too_large(name, secret.len(), limit));
        }
        let _lock = FileLock::acquire(&self.index_path)?;
        // The index must be readable before the keyring changes, so that a damaged index is
        // reported (with the recovery command) and not left behind a stored value.
        self.load_index()?;
        self.entry("storing", name)?
            .set_secret(secret.expose())
            .map_err(|e| match e {
                keyring::Error::TooLong(_, limit) => too_large(name, secret.len(), limit as usize),
                e => map_error("storing", name, e),
            })?;
        let mut index = self.load_index()?;
        let now = fsutil::now_ms();
        let names = index.services.entry(self.service.clone()).or_default();
        let created_ms = names.get(name).map_or(now, |t| t.created_ms);
        names.insert(
            name.to_owned(),
            Times {
                created_ms,
                updated_ms: now,
            },
        );
        self.save_index(&index)
    }

    pub(crate) fn get(&self, name: &str) -> Result<Option<Secret>> {
        match self.entry("reading", name)?.get_secret() {
            Ok(bytes) => Ok(Some(Secret::from_bytes(bytes))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(map_error("reading", name, e)),
        }
    }

    pub(crate) fn list(&self) -> Result<Vec<SecretInfo>> {
        let index = self.load_index()?;
        Ok(index
            .services
            .get(&self.service)
            .into_iter()
            .flatten()
            .map(info)
            .collect())
    }

    /// Deletes the value and forgets the name. A name only in the index (its value deleted
    /// with another tool) is forgotten too, and counts as removed.
    pub(crate) fn remove(&self, name: &str) -> Result<bool> {
        let _lock = FileLock::acquire(&self.index_path)?;
        let in_keyring = match self.entry("removing", name)?.delete_credential() {
            Ok(()) => true,
            Err(keyring::Error::NoEntry) => false,
            Err(e) => return Err(map_error("removing", name, e)),
        };
        let mut index = self.load_index()?;
        let in_index = index
            .services
            .get_mut(&self.service)
            .and_then(|names| names.remove(name))
            .is_some();
        if in_index {
            index.services.retain(|_, names| !names.is_empty());
            self.save_index(&index)?;
        }
        Ok(in_keyring || in_index)
    }
}
