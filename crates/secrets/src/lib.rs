//! Flotilla's secret store: named secrets (API keys, tokens) kept in the OS keyring (the Secret
//! Service on Linux, the Keychain on macOS, the Credential Manager on Windows, through the
//! `keyring` 4.x crate), or, for a headless service with no keyring, in a private 0600 file in
//! the state directory.
//!
//! The fallback file is encrypted at rest with systemd-creds where that works (the `seal`
//! module); elsewhere its protection is its permissions. It does not synchronise secrets between
//! machines, and never prompts: a locked keyring is an error that says how to unlock it.
//!
//! Every write keeps the store readable: values over [`MAX_SECRET_BYTES`] (or the keyring's
//! own limit) and files over [`MAX_FILE_BYTES`] are refused, each new file is read back before
//! it replaces the old one, the replaced version is kept as `<file>.prev`, and [`recover`]
//! puts it back when a file cannot be read.
//! Every value travels as a [`Secret`], whose `Debug`/`Display` are redacted and whose memory is
//! zeroed on drop.
//!
//! Key design decision: listing never reads values. The keyring cannot enumerate its entries
//! portably, so the keyring backend keeps an index of names and timestamps (never values) in
//! `<state dir>/keyring-index.json`, updated under a file lock together with each write; the
//! file backend reads names and timestamps from its own file. Backend choice is explicit:
//! [`Backend::Auto`] falls back to the file only when [`StoreConfig::allow_file_fallback`] says
//! so, so that a desktop whose keyring is unreachable never silently writes secrets to disk.
//!
//! All calls are blocking (D-Bus round trips, file I/O): from async code, call them through
//! `tokio::task::spawn_blocking`.

mod error;
mod file;
mod fsutil;
mod keyring_store;
mod recovery;
mod seal;
mod secret;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use error::{Error, RECOVER_COMMAND, Result};
pub use file::{FILE_NAME, SEALED_FILE_NAME};
pub use keyring_store::{INDEX_FILE_NAME, keyring_max_secret_bytes};
pub use recovery::RecoveredFile;
pub use seal::SEALED_FILE_MAX_BYTES;
pub use secret::{MAX_NAME_CHARS, Secret, ambiguous_character, validate_name};

use file::FileStore;
use keyring_store::KeyringStore;
pub use seal::FileEncryption;

/// The largest secret Flotilla stores, in bytes, on every backend: secrets are tokens, keys and
/// certificates. Some keyrings take less ([`keyring_max_secret_bytes`]).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The largest secrets file, in bytes of its JSON, encrypted or not: what `systemd-creds`
/// can still decrypt once encrypted ([`SEALED_FILE_MAX_BYTES`] holds about 873,000 bytes of
/// plaintext), with room to spare, and the same for the clear-text file so that it can always
/// be encrypted later. A write that would make the file larger is refused.
pub const MAX_FILE_BYTES: usize = 768 * 1024;

/// The keyring service name secrets are stored under, unless configured otherwise.
pub const DEFAULT_SERVICE: &str = "flotilla";

/// Which backend [`SecretStore::open`] should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The OS keyring if it is reachable; otherwise the file, if the fallback is allowed.
    #[default]
    Auto,
    /// The OS keyring, or an error.
    Keyring,
    /// The private file in the state directory.
    File,
}

/// The backend a store actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Keyring,
    File,
}

impl BackendKind {
    /// A short stable name: `keyring` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Keyring => "keyring",
            BackendKind::File => "file",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to open a [`SecretStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub backend: Backend,
    /// In [`Backend::Auto`], use the file when no keyring is reachable. Off by default.
    pub allow_file_fallback: bool,
    /// Where the fallback file and the keyring's name index live (Flotilla's state dir).
    pub state_dir: PathBuf,
    /// The keyring service name ([`DEFAULT_SERVICE`]); tests use their own.
    pub service: String,
    /// How the fallback file is protected beyond its permissions.
    pub file_encryption: FileEncryption,
}

impl StoreConfig {
    /// `auto`, no file fallback, service `flotilla`, files under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            backend: Backend::Auto,
            allow_file_fallback: false,
            state_dir: state_dir.into(),
            service: DEFAULT_SERVICE.to_owned(),
            file_encryption: FileEncryption::Auto,
        }
    }
}

/// What [`SecretStore::list`] says about one secret. Never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub backend: BackendKind,
}

/// Named secrets in one backend, chosen at [`SecretStore::open`].
#[derive(Debug)]
pub struct SecretStore {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Keyring(KeyringStore),
    File(FileStore),
}

impl SecretStore {
    /// Opens the configured backend. In `auto`, an unreachable keyring (no D-Bus session bus,
    /// no Secret Service, no default store, or a locked keyring, found by writing and deleting a
    /// probe entry) means the file if `allow_file_fallback` is set, and otherwise
    /// [`Error::NoKeyring`], whose message says how to proceed. An explicit `keyring` backend
    /// checks only that the keyring is reachable; a locked keyring then fails at first use with
    /// [`Error::KeyringLocked`].
    pub fn open(config: &StoreConfig) -> Result<SecretStore> {
        validate_service(&config.service)?;
        let inner = match config.backend {
            Backend::Keyring => {
                Inner::Keyring(KeyringStore::open(&config.service, &config.state_dir)?)
            }
            Backend::File => {
                Inner::File(FileStore::open(&config.state_dir, config.file_encryption)?)
            }
            Backend::Auto => match keyring_store::availability()
                .and_then(|()| keyring_store::probe_writable(&config.service))
            {
                Ok(()) => Inner::Keyring(KeyringStore::open(&config.service, &config.state_dir)?),
                Err(detail) if config.allow_file_fallback => {
                    tracing::info!(%detail, "no OS keyring reachable; using the secrets file");
                    Inner::File(FileStore::open(&config.state_dir, config.file_encryption)?)
                }
                Err(detail) => return Err(Error::NoKeyring { detail }),
            },
        };
        Ok(SecretStore { inner })
    }

    /// Which backend is in use.
    pub fn backend(&self) -> BackendKind {
        match &self.inner {
            Inner::Keyring(_) => BackendKind::Keyring,
            Inner::File(_) => BackendKind::File,
        }
    }

    /// The backend in words, for `flotilla doctor` and error messages, e.g.
    /// `keyring (Secret Service store, service "flotilla")` or `file (/…/secrets.json)`.
    pub fn backend_name(&self) -> String {
        match &self.inner {
            Inner::Keyring(k) => format!(
                "keyring ({}, service \"{}\")",
                keyring_store::vendor(),
                k.service()
            ),
            Inner::File(f) if f.is_sealed() => format!(
                "file ({}, encrypted with systemd-creds)",
                f.path().display()
            ),
            Inner::File(f) => format!("file ({})", f.path().display()),
        }
    }

    /// The fallback file's path, when that is the backend.
    pub fn file_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Keyring(_) => None,
            Inner::File(f) => Some(f.path()),
        }
    }

    /// Stores `secret` under `name`, replacing any previous value. A value over
    /// [`MAX_SECRET_BYTES`] (or what the keyring takes), or one that would make the secrets file
    /// larger than [`MAX_FILE_BYTES`], is refused with [`Error::TooLarge`] and the store is left
    /// as it was.
    pub fn set(&self, name: &str, secret: &Secret) -> Result<()> {
        validate_name(name)?;
        if secret.len() > MAX_SECRET_BYTES {
            return Err(Error::TooLarge {
                subject: format!("the value of \"{name}\""),
                size: secret.len(),
                limit: MAX_SECRET_BYTES,
                reason: "the largest secret Flotilla stores".to_owned(),
                advice: "secrets are tokens, keys and certificates: keep larger data in a file \
                         and store only its key"
                    .to_owned(),
            });
        }
        match &self.inner {
            Inner::Keyring(k) => k.set(name, secret),
            Inner::File(f) => f.set(name, secret),
        }
    }

    /// The secret stored under `name`; [`Error::NotFound`] (which names it) if there is none.
    pub fn get(&self, name: &str) -> Result<Secret> {
        validate_name(name)?;
        let found = match &self.inner {
            Inner::Keyring(k) => k.get(name)?,
            Inner::File(f) => f.get(name)?,
        };
        found.ok_or_else(|| Error::NotFound {
            name: name.to_owned(),
            backend: self.backend_name(),
        })
    }

    /// Every secret's name and timestamps, sorted by name. Values are never read.
    pub fn list(&self) -> Result<Vec<SecretInfo>> {
        match &self.inner {
            Inner::Keyring(k) => k.list(),
            Inner::File(f) => f.list(),
        }
    }

    /// Removes `name`; `false` if there was nothing to remove.
    pub fn remove(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        match &self.inner {
            Inner::Keyring(k) => k.remove(name),
            Inner::File(f) => f.remove(name),
        }
    }
}

/// Checks every file of the store in `config.state_dir` (the secrets file, encrypted or not,
/// and the keyring's index), and puts the previous version of an unreadable one back in its
/// place after proving it readable: what `flotilla secret recover` runs. Files that are
/// readable are left as they are; a file that is absent is not reported. Each write keeps the
/// version it replaces as `<file>.prev`, so a damaged file loses at most the last change.
/// [`Error::Unrecoverable`] when neither version can be read. Needs no keyring.
pub fn recover(config: &StoreConfig) -> Result<Vec<RecoveredFile>> {
    let dir = &config.state_dir;
    let mut out = Vec::new();
    let sealed = dir.join(SEALED_FILE_NAME);
    if sealed.exists() {
        let sealer = seal::Sealer::probe().map_err(|detail| Error::Encryption {
            detail: format!(
                "{} is encrypted with systemd-creds, and {detail}",
                sealed.display()
            ),
            advice: "Run the recovery as the user that stored the secrets (systemd-creds needs \
                     root or a TPM)"
                .to_owned(),
        })?;
        out.push(FileStore::at(sealed, Some(sealer)).recover()?);
    }
    let plain = dir.join(FILE_NAME);
    if plain.exists() {
        out.push(FileStore::at(plain, None).recover()?);
    }
    let index = dir.join(INDEX_FILE_NAME);
    if index.exists() {
        out.push(keyring_store::recover_index(&index)?);
    }
    Ok(out)
}

/// Where a write keeps the version of `path` it replaced: `<path>.prev`.
pub fn previous_version_path(path: &Path) -> PathBuf {
    fsutil::previous_path(path)
}

/// Reads `bytes` as a clear-text secrets file, decoding every value, and returns how many
/// secrets it holds: the parser the store uses, for the fuzz tests.
#[doc(hidden)]
pub fn parse_secrets_file(bytes: &[u8]) -> Result<usize> {
    file::parse(bytes, Path::new("(input)")).map(|doc| file::infos(&doc).len())
}

fn validate_service(service: &str) -> Result<()> {
    match validate_name(service) {
        Err(Error::InvalidName { name, reason }) => Err(Error::InvalidService { name, reason }),
        other => other,
    }
}
