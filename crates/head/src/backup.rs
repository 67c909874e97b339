//! Head backups: one file that holds everything a head is (its registry, TLS identity, Ray
//! token and admin token, and its settings), encrypted with a key derived from a passphrase, so
//! that the same fleet can run again on this machine or another.
//!
//! The file is a header in the clear followed by one AES-256-GCM ciphertext:
//!
//! ```text
//! "FLOTILLA-HEAD-BACKUP\n"  magic (21 bytes)
//! u16 BE                    format version (1)
//! u8                        KDF: 1 = PBKDF2-HMAC-SHA256
//! u32 BE                    KDF iterations
//! [u8; 16]                  salt
//! u8                        cipher: 1 = AES-256-GCM
//! [u8; 12]                  nonce
//! ...                       ciphertext and tag; the header above is its associated data
//! ```
//!
//! The plaintext is a list of named entries (`u16` name length, name, `u64` length, bytes). A
//! wrong passphrase and a damaged file look the same to the cipher, and say so.
//!
//! The registry is copied with SQLite's `VACUUM INTO`, which reads one consistent snapshot of
//! the database inside a read transaction: it is safe while the head writes (WAL mode lets the
//! writer go on), and the copy is a complete database with no journal beside it.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use flotilla_host::Dirs;
use flotilla_proto::Fingerprint;
use flotilla_secrets::{Secret, SecretStore};
use serde::{Deserialize, Serialize};

use crate::fleet::ADMIN_TOKEN_SECRET;
use crate::instance::RAY_TOKEN_SECRET;
use crate::tls::TLS_KEY_SECRET;

const MAGIC: &[u8] = b"FLOTILLA-HEAD-BACKUP\n";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
const KDF_PBKDF2_SHA256: u8 = 1;
const CIPHER_AES_256_GCM: u8 = 1;
/// PBKDF2-HMAC-SHA256 iterations: OWASP's figure for it (2023), about a third of a second here.
pub const ITERATIONS: u32 = 600_000;
/// Fewer are refused on reading, so a forged header cannot make the key cheap to guess.
const MIN_ITERATIONS: u32 = 100_000;
/// More are refused on reading, so a forged header cannot make opening take hours.
const MAX_ITERATIONS: u32 = 10_000_000;
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 2 + 1 + 4 + SALT_LEN + 1 + NONCE_LEN;
/// The shortest passphrase a backup is made with.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// The secret-store name of the passphrase scheduled backups are made with.
pub const PASSPHRASE_SECRET: &str = "flotilla.backup-passphrase";

/// The file names of the head's registry and certificate in its state dir.
pub const REGISTRY_FILE: &str = "registry.sqlite";
const CERT_FILE: &str = "head-cert.der";

const ENTRY_MANIFEST: &str = "manifest.json";
const ENTRY_REGISTRY: &str = "registry.sqlite";
const ENTRY_CERT: &str = "head-cert.der";
const ENTRY_SETTINGS: &str = "flotilla.toml";
/// Secrets are entries named `secret:<store name>`.
const SECRET_PREFIX: &str = "secret:";
/// The secrets a head is made of, all of them required.
const HEAD_SECRETS: [&str; 3] = [TLS_KEY_SECRET, RAY_TOKEN_SECRET, ADMIN_TOKEN_SECRET];

/// Why a backup could not be made, read or restored; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} is not a Flotilla head backup (made by `flotilla head backup`)")]
    NotABackup(String),
    #[error(
        "{file} was made by a newer Flotilla (backup format {version}; this one reads {FORMAT_VERSION}): \
         restore it with that version or a later one"
    )]
    NewerFormat { file: String, version: u16 },
    #[error("wrong passphrase or damaged file: {0} cannot be opened with this passphrase")]
    WrongPassphrase(String),
    #[error("{0} opened, but its contents are incomplete ({1}): the file is damaged")]
    Incomplete(String, String),
    #[error(
        "the passphrase is too short: use at least {MIN_PASSPHRASE_CHARS} characters (a few \
         words are easier to keep than symbols)"
    )]
    ShortPassphrase,
    #[error(
        "there is no head here: {0} does not exist. Run this on the head's machine (where \
         `flotilla up` runs), with the same FLOTILLA_HOME"
    )]
    NoHead(PathBuf),
    #[error(
        "this home already has a head ({0}); restoring would replace its fleet. Back it up \
         first (`flotilla head backup FILE`) if it matters, then restore with --force"
    )]
    Exists(String),
    #[error(
        "the head is running in this home: stop it first (Ctrl-C in its terminal, or stop its \
         service), then restore"
    )]
    Running,
    #[error("the head's registry cannot be copied: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Secrets(#[from] flotilla_secrets::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// What a backup says about itself (in the clear only once opened).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u16,
    pub made_unix: u64,
    /// The head certificate's SHA-256 fingerprint, hex: what every worker pinned.
    pub fingerprint: String,
    /// The machine it was made on.
    pub hostname: String,
    pub flotilla_version: String,
    /// How many nodes the registry lists (revoked ones included).
    pub nodes: usize,
}

/// Everything a head is.
#[derive(Debug)]
pub struct Contents {
    pub manifest: Manifest,
    /// A complete SQLite database.
    pub registry: Secret,
    pub cert_der: Vec<u8>,
    /// `(store name, value)` of the head's secrets.
    pub secrets: Vec<(String, Secret)>,
    /// The head machine's `flotilla.toml`, when it has one.
    pub settings: Option<String>,
}

impl Contents {
    /// Gathers a head's contents: a consistent copy of the registry at `registry` (safe while
    /// the head writes to it), the certificate, the secrets and the settings text.
    pub fn gather(
        registry: &Path,
        cert_der: Vec<u8>,
        secrets: Vec<(String, Secret)>,
        settings: Option<String>,
    ) -> Result<Contents, BackupError> {
        if !registry.exists() {
            return Err(BackupError::NoHead(registry.to_path_buf()));
        }
        let (db, nodes) = snapshot_registry(registry)?;
        Ok(Contents {
            manifest: Manifest {
                format: FORMAT_VERSION,
                made_unix: unix_now(),
                fingerprint: Fingerprint::of_der(&cert_der).to_hex(),
                hostname: flotilla_host::hostname(),
                flotilla_version: env!("CARGO_PKG_VERSION").into(),
                nodes,
            },
            registry: db,
            cert_der,
            secrets,
            settings,
        })
    }

    /// Gathers the contents of the head whose home is `dirs`, its secrets from `store`: what
    /// `flotilla head backup` reads on the head's machine, whether the head runs or not.
    pub fn of_home(dirs: &Dirs, store: &SecretStore) -> Result<Contents, BackupError> {
        let registry = dirs.state.join(REGISTRY_FILE);
        if !registry.exists() {
            return Err(BackupError::NoHead(registry));
        }
        let cert_path = dirs.state.join(CERT_FILE);
        let cert = std::fs::read(&cert_path)
            .map_err(io(format!("cannot read {}", cert_path.display())))?;
        let mut secrets = Vec::new();
        for name in HEAD_SECRETS {
            secrets.push((name.to_string(), store.get(name)?));
        }
        let settings_path = dirs.config.join("flotilla.toml");
        let settings = match std::fs::read_to_string(&settings_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(format!("cannot read {}", settings_path.display()))(e)),
        };
        Contents::gather(&registry, cert, secrets, settings)
    }

    /// The fingerprint the certificate has (what workers pinned).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.cert_der)
    }

    fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    fn encode(&self) -> Secret {
        let mut out = Vec::with_capacity(self.registry.len() + self.cert_der.len() + 4096);
        let manifest = serde_json::to_vec(&self.manifest).expect("plain struct");
        put_entry(&mut out, ENTRY_MANIFEST, &manifest);
        put_entry(&mut out, ENTRY_REGISTRY, self.registry.expose());
        put_entry(&mut out, ENTRY_CERT, &self.cert_der);
        for (name, value) in &self.secrets {
            put_entry(&mut out, &format!("{SECRET_PREFIX}{name}"), value.expose());
        }
        if let Some(text) = &self.settings {
            put_entry(&mut out, ENTRY_SETTINGS, text.as_bytes());
        }
        Secret::from_bytes(out)
    }

    fn decode(plain: &[u8], file: &str) -> Result<Contents, BackupError> {
        let bad = |what: &str| BackupError::Incomplete(file.to_string(), what.to_string());
        let (mut manifest, mut registry, mut cert, mut settings) = (None, None, None, None);
        let mut secrets = Vec::new();
        let mut rest = plain;
        while !rest.is_empty() {
            let (name, value, tail) = take_entry(rest).ok_or_else(|| bad("a truncated entry"))?;
            rest = tail;
            match name {
                ENTRY_MANIFEST => {
                    manifest = Some(
                        serde_json::from_slice::<Manifest>(value)
                            .map_err(|_| bad("an unreadable manifest"))?,
                    )
                }
                ENTRY_REGISTRY => registry = Some(Secret::from_bytes(value.to_vec())),
                ENTRY_CERT => cert = Some(value.to_vec()),
                ENTRY_SETTINGS => {
                    settings = Some(
                        String::from_utf8(value.to_vec())
                            .map_err(|_| bad("settings that are not text"))?,
                    )
                }
                other => {
                    // Only Flotilla's own secrets are restored, whatever a file names.
                    if let Some(secret) = other
                        .strip_prefix(SECRET_PREFIX)
                        .filter(|n| n.starts_with("flotilla."))
                    {
                        secrets.push((secret.to_string(), Secret::from_bytes(value.to_vec())));
                    }
                    // Entries a later version adds are skipped.
                }
            }
        }
        let contents = Contents {
            manifest: manifest.ok_or_else(|| bad("no manifest"))?,
            registry: registry.ok_or_else(|| bad("no registry"))?,
            cert_der: cert.ok_or_else(|| bad("no certificate"))?,
            secrets,
            settings,
        };
        for name in HEAD_SECRETS {
            if contents.secret(name).is_none() {
                return Err(bad(&format!("no {name}")));
            }
        }
        if contents.fingerprint().to_hex() != contents.manifest.fingerprint {
            return Err(bad("a certificate other than the one the manifest names"));
        }
        Ok(contents)
    }
}

fn put_entry(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(value.len() as u64).to_be_bytes());
    out.extend_from_slice(value);
}

fn take_entry(bytes: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = u16::from_be_bytes(*len) as usize;
    let name = std::str::from_utf8(rest.get(..len)?).ok()?;
    let (vlen, rest) = rest[len..].split_first_chunk::<8>()?;
    let vlen = usize::try_from(u64::from_be_bytes(*vlen)).ok()?;
    let value = rest.get(..vlen)?;
    Some((name, value, &rest[vlen..]))
}

/// A consistent copy of the registry, as a complete database's bytes, and how many nodes it
/// lists. The copy is made in a private directory beside the registry and removed after.
fn snapshot_registry(registry: &Path) -> Result<(Secret, usize), BackupError> {
    let dir = registry.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".registry-backup-")
        .tempdir_in(dir)
        .map_err(io(format!(
            "cannot make a temporary directory in {}",
            dir.display()
        )))?;
    let copy = tmp.path().join("registry.sqlite");
    let conn = rusqlite::Connection::open_with_flags(
        registry,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute("VACUUM INTO ?1", [copy.to_string_lossy().as_ref()])?;
    drop(conn);
    let nodes: i64 =
        rusqlite::Connection::open_with_flags(&copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?
            .query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))?;
    let bytes = std::fs::read(&copy).map_err(io("cannot read the registry's copy"))?;
    Ok((Secret::from_bytes(bytes), nodes as usize))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn derive_key(passphrase: &Secret, salt: &[u8], iterations: u32) -> LessSafeKey {
    let mut key = [0u8; 32];
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations).expect("checked by the callers"),
        salt,
        passphrase.expose(),
        &mut key,
    );
    let unbound = UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key");
    key.fill(0);
    LessSafeKey::new(unbound)
}

/// Encrypts `contents` with `passphrase`: the whole file's bytes.
pub fn seal(contents: &Contents, passphrase: &Secret) -> Result<Vec<u8>, BackupError> {
    seal_with(contents, passphrase, ITERATIONS)
}

fn seal_with(
    contents: &Contents,
    passphrase: &Secret,
    iterations: u32,
) -> Result<Vec<u8>, BackupError> {
    if passphrase_chars(passphrase) < MIN_PASSPHRASE_CHARS {
        return Err(BackupError::ShortPassphrase);
    }
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut nonce))
        .map_err(|_| io("the OS's random generator failed")(std::io::Error::other("rand")))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    header.push(KDF_PBKDF2_SHA256);
    header.extend_from_slice(&iterations.to_be_bytes());
    header.extend_from_slice(&salt);
    header.push(CIPHER_AES_256_GCM);
    header.extend_from_slice(&nonce);
    let key = derive_key(passphrase, &salt, iterations);
    let plain = contents.encode();
    let mut body = plain.expose().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&header[..]),
        &mut body,
    )
    .map_err(|_| io("cannot encrypt the backup")(std::io::Error::other("seal")))?;
    let mut out = header;
    out.append(&mut body);
    Ok(out)
}

/// Decrypts a backup's bytes; `file` names it in errors.
pub fn open(bytes: &[u8], passphrase: &Secret, file: &str) -> Result<Contents, BackupError> {
    let not_one = || BackupError::NotABackup(file.to_string());
    if !bytes.starts_with(MAGIC) {
        return Err(not_one());
    }
    let rest = &bytes[MAGIC.len()..];
    let (version, _) = rest.split_first_chunk::<2>().ok_or_else(not_one)?;
    let version = u16::from_be_bytes(*version);
    if version > FORMAT_VERSION {
        return Err(BackupError::NewerFormat {
            file: file.to_string(),
            version,
        });
    }
    if bytes.len() < HEADER_LEN + AES_256_GCM.tag_len() || version == 0 {
        return Err(not_one());
    }
    let (header, body) = bytes.split_at(HEADER_LEN);
    let mut at = MAGIC.len() + 2;
    let kdf = header[at];
    at += 1;
    let iterations = u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    at += 4;
    let salt = &header[at..at + SALT_LEN];
    at += SALT_LEN;
    let cipher = header[at];
    at += 1;
    let nonce: [u8; NONCE_LEN] = header[at..at + NONCE_LEN].try_into().expect("12 bytes");
    if kdf != KDF_PBKDF2_SHA256
        || cipher != CIPHER_AES_256_GCM
        || !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations)
    {
        return Err(BackupError::WrongPassphrase(file.to_string()));
    }
    let key = derive_key(passphrase, salt, iterations);
    let mut buf = body.to_vec();
    let plain_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut buf,
        )
        .map_err(|_| BackupError::WrongPassphrase(file.to_string()))?
        .len();
    buf.truncate(plain_len);
    // Zeroed when dropped.
    let plain = Secret::from_bytes(buf);
    Contents::decode(plain.expose(), file)
}

fn passphrase_chars(p: &Secret) -> usize {
    p.expose_str().map_or(p.len(), |s| s.trim().chars().count())
}

/// Writes `bytes` to `path` readable by its owner only (0600), atomically: a temporary file in
/// the same directory, flushed, then renamed over `path`. A crash leaves the old file or the new
/// one, never half of one.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".flotilla-backup-")
        .tempfile_in(dir)
        .map_err(io(format!("cannot write in {}", dir.display())))?;
    // tempfile creates it 0600 on Unix; say so explicitly where the OS has modes.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600)).map_err(
            io(format!("cannot set the mode of {}", tmp.path().display())),
        )?;
    }
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io(format!("cannot write {}", path.display())))?;
    tmp.persist(path)
        .map_err(|e| io(format!("cannot write {}", path.display()))(e.error))?;
    Ok(())
}

/// What a restore put in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub fingerprint: String,
    pub nodes: usize,
    /// Whether the backup's `flotilla.toml` was written (it is not over an existing one).
    pub settings_written: bool,
    /// The backup carried settings, but this home keeps its own `flotilla.toml`.
    pub settings_kept: bool,
}

/// Puts a backup's head into the home `dirs` with `store`: secrets first, then the
/// certificate, then the registry (its presence is what makes a home a head's). Refuses a home
/// where a head runs, and one that has a head already unless `force`.
pub fn restore(
    dirs: &Dirs,
    store: &SecretStore,
    contents: &Contents,
    force: bool,
) -> Result<Restored, BackupError> {
    dirs.create_all()
        .map_err(io("cannot create Flotilla's directories"))?;
    // The head's own lock: held while a head runs in this home.
    let lock_path = dirs.state.join("head.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("cannot open {}", lock_path.display())))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(BackupError::Running),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(io(format!("cannot lock {}", lock_path.display()))(e));
        }
    }
    let registry = dirs.state.join(REGISTRY_FILE);
    let cert = dirs.state.join(CERT_FILE);
    if !force {
        let mut found = Vec::new();
        if registry.exists() {
            found.push(registry.display().to_string());
        }
        if cert.exists() {
            found.push(cert.display().to_string());
        }
        match store.get(TLS_KEY_SECRET) {
            Ok(_) => found.push(format!("{TLS_KEY_SECRET} in the secret store")),
            Err(flotilla_secrets::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if !found.is_empty() {
            return Err(BackupError::Exists(found.join(", ")));
        }
    }
    for (name, value) in &contents.secrets {
        store.set(name, value)?;
    }
    write_file(&cert, &contents.cert_der)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = dirs.state.join(format!("{REGISTRY_FILE}{suffix}"));
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("cannot remove {}", side.display()))(e)),
        }
    }
    write_file(&registry, contents.registry.expose())?;
    let settings_path = dirs.config.join("flotilla.toml");
    let (mut settings_written, mut settings_kept) = (false, false);
    if let Some(text) = &contents.settings {
        if settings_path.exists() {
            settings_kept = true;
        } else {
            write_file(&settings_path, text.as_bytes())?;
            settings_written = true;
        }
    }
    drop(lock);
    Ok(Restored {
        fingerprint: contents.manifest.fingerprint.clone(),
        nodes: contents.manifest.nodes,
        settings_written,
        settings_kept,
    })
}

/// Scheduled backups: every `every`, a backup into `dir`, the newest `keep` kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub every: Duration,
    pub keep: usize,
    pub dir: PathBuf,
}

const SCHEDULED_PREFIX: &str = "flotilla-head-";
const SCHEDULED_SUFFIX: &str = ".backup";

/// The file name of a scheduled backup made at `unix` (seconds): names sort by time.
pub fn scheduled_name(unix: u64) -> String {
    format!("{SCHEDULED_PREFIX}{unix:012}{SCHEDULED_SUFFIX}")
}

fn scheduled_time(name: &str) -> Option<u64> {
    name.strip_prefix(SCHEDULED_PREFIX)?
        .strip_suffix(SCHEDULED_SUFFIX)?
        .parse()
        .ok()
}

/// Removes all but the newest `keep` scheduled backups in `dir` (other files are never
/// touched); returns the removed paths.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((scheduled_time(&name)?, e.path()))
        })
        .collect();
    found.sort();
    let excess = found.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (_, path) in found.into_iter().take(excess) {
        std::fs::remove_file(&path)?;
        removed.push(path);
    }
    Ok(removed)
}

/// What the running head needs to back itself up.
#[derive(Debug, Clone)]
pub struct Source {
    pub registry: PathBuf,
    pub cert_der: Vec<u8>,
    pub secrets: Vec<(String, Secret)>,
    /// Where the head's `flotilla.toml` is (read at each backup).
    pub settings: PathBuf,
}

impl Source {
    /// One backup into `dir` now, then the old ones pruned: the file written.
    pub fn back_up_into(
        &self,
        dir: &Path,
        keep: usize,
        passphrase: &Secret,
    ) -> Result<PathBuf, BackupError> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let settings = std::fs::read_to_string(&self.settings).ok();
        let contents = Contents::gather(
            &self.registry,
            self.cert_der.clone(),
            self.secrets.clone(),
            settings,
        )?;
        let mut path = dir.join(scheduled_name(contents.manifest.made_unix));
        // Two backups within a second (a short test schedule): the later gets the next name.
        let mut t = contents.manifest.made_unix;
        while path.exists() {
            t += 1;
            path = dir.join(scheduled_name(t));
        }
        write_file(&path, &seal(&contents, passphrase)?)?;
        prune(dir, keep).map_err(io(format!("cannot prune {}", dir.display())))?;
        Ok(path)
    }
}

/// Runs `schedule` until `cancel`: each backup on a blocking thread of its own, so the head's
/// tasks never wait on it. The first backup is one period after the start.
pub async fn run_schedule(
    source: Source,
    schedule: Schedule,
    passphrase: Secret,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + schedule.every, schedule.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (source, schedule, passphrase) = (source.clone(), schedule.clone(), passphrase.clone());
        let made = tokio::task::spawn_blocking(move || {
            source.back_up_into(&schedule.dir, schedule.keep, &passphrase)
        })
        .await;
        match made {
            Ok(Ok(path)) => tracing::info!(file = %path.display(), "scheduled head backup made"),
            Ok(Err(e)) => tracing::warn!("the scheduled head backup failed: {e}"),
            Err(e) => tracing::warn!("the scheduled head backup failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> SecretStore {
        let mut c = flotilla_secrets::StoreConfig::new(dir);
        c.backend = flotilla_secrets::Backend::File;
        SecretStore::open(&c).unwrap()
    }

    /// Enrolls a node named `name` with 12.5 CPU-seconds of contribution.
    fn enroll(reg: &crate::registry::Registry, name: &str) -> crate::registry::NodeId {
        let node = crate::registry::NewNode {
            name,
            hostname: name,
            os: "linux",
            arch: "x86_64",
            cpus: 2,
        };
        let id = reg
            .enroll(
                &node,
                &Secret::from("a node credential of enough length"),
                crate::registry::Admission::Local,
                SystemTime::now(),
            )
            .unwrap()
            .id;
        let hour = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 3600
            * 3600;
        reg.add_contributions(
            id,
            &[crate::registry::ContributionRecord {
                seq: 1,
                hour_start: UNIX_EPOCH + Duration::from_secs(hour),
                cpu_seconds: 12.5,
            }],
        )
        .unwrap();
        id
    }

    /// A head's home with a registry holding one node and its contributions.
    /// What the scheduled backups of the head in `dirs` read.
    fn source_of(dirs: &Dirs, store: &SecretStore) -> Source {
        Source {
            registry: dirs.state.join(REGISTRY_FILE),
            cert_der: std::fs::read(dirs.state.join(CERT_FILE)).unwrap(),
            secrets: HEAD_SECRETS
                .iter()
                .map(|n| (n.to_string(), store.get(n).unwrap()))
                .collect(),
            settings: dirs.config.join("flotilla.toml"),
        }
    }

    fn head_home(root: &Path) -> (Dirs, SecretStore, crate::registry::NodeId) {
        let dirs = Dirs::under(root);
        dirs.create_all().unwrap();
        let store = store(&dirs.state);
        crate::tls::Identity::load_or_create(&dirs, &store, &["h".into()]).unwrap();
        crate::cluster_token(&store).unwrap();
        crate::admin_token(&store).unwrap();
        let reg = crate::registry::Registry::open(dirs.state.join(REGISTRY_FILE)).unwrap();
        let node = enroll(&reg, "alpha");
        (dirs, store, node)
    }

    fn pass(s: &str) -> Secret {
        Secret::from(s)
    }

    #[test]
    fn a_backup_opens_with_its_passphrase_and_restores_the_same_head_elsewhere() {
        let a = tempfile::tempdir().unwrap();
        let (dirs, store_a, node) = head_home(a.path());
        std::fs::write(
            dirs.config.join("flotilla.toml"),
            "[policy]\nactive_cpus = 1\n",
        )
        .unwrap();
        // The head keeps writing while the copy is made: a live connection holds a write.
        let live = crate::registry::Registry::open(dirs.state.join(REGISTRY_FILE)).unwrap();
        enroll(&live, "beta");
        let contents = Contents::of_home(&dirs, &store_a).unwrap();
        assert_eq!(contents.manifest.nodes, 2);
        let bytes = seal_with(&contents, &pass("correct horse"), MIN_ITERATIONS).unwrap();
        // Nothing secret is in the clear.
        for (_, s) in &contents.secrets {
            let s = s.expose();
            assert!(!bytes.windows(s.len()).any(|w| w == s));
        }
        assert!(!bytes.windows(5).any(|w| w == b"alpha"));

        let err = open(&bytes, &pass("wrong horse!"), "b.backup").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("wrong passphrase or damaged file"),
            "{err}"
        );
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let err = open(&damaged, &pass("correct horse"), "b.backup").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("wrong passphrase or damaged file"),
            "{err}"
        );
        let err = open(b"hello", &pass("correct horse"), "b.backup").unwrap_err();
        assert!(
            err.to_string().contains("not a Flotilla head backup"),
            "{err}"
        );
        let mut newer = bytes.clone();
        newer[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&9u16.to_be_bytes());
        let err = open(&newer, &pass("correct horse"), "b.backup").unwrap_err();
        assert!(err.to_string().contains("newer Flotilla"), "{err}");

        let opened = open(&bytes, &pass("correct horse"), "b.backup").unwrap();
        let b = tempfile::tempdir().unwrap();
        let dirs_b = Dirs::under(b.path());
        dirs_b.create_all().unwrap();
        let store_b = store(&dirs_b.state);
        let done = restore(&dirs_b, &store_b, &opened, false).unwrap();
        assert_eq!(done.nodes, 2);
        assert!(done.settings_written);
        // The same identity, tokens, registry and settings.
        let id_b = crate::tls::Identity::load_or_create(&dirs_b, &store_b, &[]).unwrap();
        assert_eq!(id_b.fingerprint, contents.fingerprint());
        for name in HEAD_SECRETS {
            assert_eq!(
                store_b.get(name).unwrap().expose(),
                store_a.get(name).unwrap().expose(),
                "{name}"
            );
        }
        let reg_b = crate::registry::Registry::open(dirs_b.state.join(REGISTRY_FILE)).unwrap();
        let names: Vec<String> = reg_b
            .list_nodes()
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["alpha", "beta"]);
        assert_eq!(reg_b.total_cpu_seconds(node).unwrap(), 12.5);
        assert_eq!(
            std::fs::read_to_string(dirs_b.config.join("flotilla.toml")).unwrap(),
            "[policy]\nactive_cpus = 1\n"
        );
        drop(reg_b);

        // A second restore over it is refused without --force, and nothing changes.
        let err = restore(&dirs_b, &store_b, &opened, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        let again = restore(&dirs_b, &store_b, &opened, true).unwrap();
        assert!(again.settings_kept && !again.settings_written);
    }

    #[test]
    fn a_short_passphrase_is_refused_and_no_head_is_named() {
        let a = tempfile::tempdir().unwrap();
        let (dirs, store, _) = head_home(a.path());
        let contents = Contents::of_home(&dirs, &store).unwrap();
        let err = seal(&contents, &pass("short")).unwrap_err();
        assert!(err.to_string().contains("at least 8"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let dirs = Dirs::under(empty.path());
        let err = Contents::of_home(&dirs, &store).unwrap_err();
        assert!(err.to_string().contains("head's machine"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("h.backup");
        write_file(&path, b"one").unwrap();
        write_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }

    #[test]
    fn scheduled_backups_keep_the_newest_and_leave_other_files_alone() {
        let a = tempfile::tempdir().unwrap();
        let (dirs, store, _) = head_home(a.path());
        let out = tempfile::tempdir().unwrap();
        // Older backups from earlier runs, and a file of the owner's.
        for t in [1_000u64, 2_000, 3_000] {
            std::fs::write(out.path().join(scheduled_name(t)), b"old").unwrap();
        }
        std::fs::write(out.path().join("notes.txt"), b"mine").unwrap();
        let source = source_of(&dirs, &store);
        let p = pass("scheduled pass");
        let first = source.back_up_into(out.path(), 2, &p).unwrap();
        let second = source.back_up_into(out.path(), 2, &p).unwrap();
        assert_ne!(first, second);
        let mut left: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut wanted = vec![
            first.file_name().unwrap().to_str().unwrap().to_string(),
            second.file_name().unwrap().to_str().unwrap().to_string(),
            "notes.txt".to_string(),
        ];
        wanted.sort();
        assert_eq!(left, wanted);
        // Both are real backups of this head.
        let opened = open(&std::fs::read(&second).unwrap(), &p, "s").unwrap();
        assert_eq!(opened.manifest.nodes, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_schedule_backs_up_each_period_and_prunes() {
        let a = tempfile::tempdir().unwrap();
        let (dirs, store, _) = head_home(a.path());
        let out = tempfile::tempdir().unwrap();
        let source = source_of(&dirs, &store);
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run_schedule(
            source,
            Schedule {
                every: Duration::from_millis(300),
                keep: 2,
                dir: out.path().to_path_buf(),
            },
            pass("scheduled pass"),
            cancel.clone(),
        ));
        let names = || {
            let mut v: Vec<String> = std::fs::read_dir(out.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().into_string().unwrap())
                .filter(|n| scheduled_time(n).is_some())
                .collect();
            v.sort();
            v
        };
        // Wait for the first two, then until both of those have been pruned by later ones.
        let start = std::time::Instant::now();
        let first = loop {
            let n = names();
            if n.len() >= 2 {
                break n;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no backups: {n:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        loop {
            let n = names();
            if !n.iter().any(|x| first.contains(x)) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "never pruned: {n:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        task.await.unwrap();
        // No backup is under way once the task ended: exactly `keep` are left.
        assert_eq!(names().len(), 2, "{:?}", names());
    }
}
