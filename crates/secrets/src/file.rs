//! The fallback backend: one private JSON file in the state directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fsutil::{self, FileLock};
use crate::seal::{FileEncryption, SEALED_FILE_MAX_BYTES, Sealer};
use crate::{Error, Result, Secret, SecretInfo};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "secrets.json";
/// Its name when encrypted with systemd-creds.
pub const SEALED_FILE_NAME: &str = "secrets.cred";

const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Document {
    version: u32,
    secrets: BTreeMap<String, Stored>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// `utf8`: the value as is; `hex`: the bytes in lower-case hex.
    encoding: Encoding,
    value: Zeroizing<String>,
    created_ms: u64,
    updated_ms: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    Utf8,
    Hex,
}

impl Stored {
    fn encode(secret: &Secret) -> (Encoding, Zeroizing<String>) {
        match secret.expose_str() {
            Some(s) => (Encoding::Utf8, Zeroizing::new(s.to_owned())),
            None => {
                let mut hex = Zeroizing::new(String::with_capacity(secret.len() * 2));
                for b in secret.expose() {
                    hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                    hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
                }
                (Encoding::Hex, hex)
            }
        }
    }

    fn decode(&self, path: &Path, name: &str) -> Result<Secret> {
        match self.encoding {
            Encoding::Utf8 => Ok(Secret::from_bytes(self.value.as_bytes().to_vec())),
            Encoding::Hex => {
                let digits = self.value.as_bytes();
                let bad = || Error::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("the value of \"{name}\" is not valid hex"),
                };
                if !digits.len().is_multiple_of(2) {
                    return Err(bad());
                }
                let mut out = Vec::with_capacity(digits.len() / 2);
                for pair in digits.chunks(2) {
                    let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
                    let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
                    out.push((hi * 16 + lo) as u8);
                }
                Ok(Secret::from_bytes(out))
            }
        }
    }
}

/// Parses a plain secrets file and decodes every value: what reading the store needs of it.
/// `path` names the file in errors.
pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Document> {
    let doc: Document = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        detail: crate::fsutil::json_error(&e),
    })?;
    if doc.version != FORMAT_VERSION {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "format version {} is not the supported version {FORMAT_VERSION}",
                doc.version
            ),
        });
    }
    for (name, stored) in &doc.secrets {
        stored.decode(path, name)?;
    }
    Ok(doc)
}

/// Names and times in a document, sorted by name. Never values.
pub(crate) fn infos(doc: &Document) -> Vec<SecretInfo> {
    doc.secrets
        .iter()
        .map(|(name, s)| SecretInfo {
            name: name.clone(),
            created: fsutil::from_ms(s.created_ms),
            updated: fsutil::from_ms(s.updated_ms),
            backend: crate::BackendKind::File,
        })
        .collect()
}

/// Whether a write is held to [`crate::MAX_FILE_BYTES`]. A removal is not: it is how a file
/// over the limit (written before there was one) gets back under it, and if it is still too
/// large to decrypt, the read-back check refuses it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SizeCheck {
    Limited,
    Shrinking,
}

/// Why the whole file has a size limit, for [`Error::TooLarge`].
fn file_limit_reason() -> String {
    format!(
        "systemd-creds decrypts files of at most {} bytes, which hold about 873,000 bytes of \
         secrets, so every secrets file, encrypted or not, is kept within {} bytes and can \
         always be encrypted and read back",
        SEALED_FILE_MAX_BYTES,
        crate::MAX_FILE_BYTES
    )
}

const FILE_ADVICE: &str = "remove secrets that are no longer needed (`flotilla secret rm NAME`), \
     or keep large material such as certificate bundles outside the secret store";

/// Secrets in `<state dir>/secrets.json`, mode 0600, replaced atomically on every change and
/// refused if other users can read it. Values are stored in clear text: the file's protection
/// is its permissions, and where `systemd-creds` works (root, or a TPM) the file is also
/// encrypted at rest (`secrets.cred`; see the `seal` module).
///
/// Every write keeps the store readable: a file over [`crate::MAX_FILE_BYTES`] is refused, the
/// new file is read back (and decrypted) from disk and compared before it replaces the old
/// one, and the version it replaces is kept as `<file>.prev` for [`crate::recover`].
#[derive(Debug)]
pub(crate) struct FileStore {
    path: PathBuf,
    sealer: Option<Sealer>,
}

impl FileStore {
    /// Opens the store, creating the directory if needed. An existing file is checked (mode and
    /// format) now, so that a misconfiguration is reported at start, not at first use.
    pub(crate) fn open(state_dir: &Path, encryption: FileEncryption) -> Result<FileStore> {
        fsutil::ensure_dir(state_dir)?;
        let plain = state_dir.join(FILE_NAME);
        let sealed = state_dir.join(SEALED_FILE_NAME);
        let sealer = match encryption {
            FileEncryption::Off => None,
            FileEncryption::SystemdCreds => Some(Sealer::probe().map_err(|detail| {
                Error::Encryption {
                    detail,
                    advice: "Run Flotilla where systemd-creds works (as root, or with a TPM), \
                             or set [secrets] encrypt_file = \"auto\" in flotilla.toml"
                        .to_owned(),
                }
            })?),
            FileEncryption::Auto => Sealer::probe()
                .inspect_err(|why| tracing::debug!("secrets file not encrypted: {why}"))
                .ok(),
        };
        if sealer.is_none() && sealed.exists() {
            let (why, advice) = match encryption {
                FileEncryption::Off => (
                    "encryption is turned off".to_string(),
                    "Set [secrets] encrypt_file = \"auto\" in flotilla.toml to read it",
                ),
                _ => (
                    Sealer::probe().err().unwrap_or_default(),
                    "Run Flotilla as the user that stored the secrets (systemd-creds needs \
                     root or a TPM)",
                ),
            };
            return Err(Error::Encryption {
                detail: format!(
                    "{} is encrypted with systemd-creds, and {why}",
                    sealed.display()
                ),
                advice: advice.to_owned(),
            });
        }
        let mut store = FileStore {
            path: if sealer.is_some() {
                sealed.clone()
            } else {
                plain.clone()
            },
            sealer,
        };
        // A file stored before encryption was available moves into the encrypted one.
        if store.sealer.is_some() && plain.exists() && !sealed.exists() {
            let old = FileStore {
                path: plain.clone(),
                sealer: None,
            };
            let doc = old.load()?;
            match store.save(&doc, "the migrated secrets file", SizeCheck::Limited) {
                Ok(()) => {
                    // The clear-text copies go: keeping them would undo the encryption.
                    std::fs::remove_file(&plain).map_err(Error::io(&plain))?;
                    let prev = fsutil::previous_path(&plain);
                    if prev.exists() {
                        std::fs::remove_file(&prev).map_err(Error::io(&prev))?;
                    }
                    tracing::info!("the secrets file is now encrypted with systemd-creds");
                }
                Err(e @ Error::TooLarge { .. }) if encryption == FileEncryption::Auto => {
                    tracing::warn!("the secrets file stays unencrypted: {e}");
                    store = old;
                }
                Err(e) => return Err(e),
            }
        }
        store.load()?;
        Ok(store)
    }

    /// Whether the file is encrypted at rest.
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealer.is_some()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The document in `bytes` as stored on disk (decrypted first when the file is sealed).
    fn open_bytes(&self, bytes: &[u8]) -> Result<Document> {
        match &self.sealer {
            Some(s) => {
                let plain = s
                    .unseal(bytes, &self.path)
                    .map_err(|detail| Error::Undecryptable {
                        path: self.path.clone(),
                        detail,
                    })?;
                parse(&plain, &self.path)
            }
            None => parse(bytes, &self.path),
        }
    }

    fn load(&self) -> Result<Document> {
        let Some(bytes) = fsutil::read_private(&self.path)? else {
            return Ok(Document {
                version: FORMAT_VERSION,
                secrets: BTreeMap::new(),
            });
        };
        self.open_bytes(&bytes)
    }

    /// Replaces the file with `doc`, or refuses with the file unchanged: `subject` says what
    /// the write is, for the error when it is too large.
    fn save(&self, doc: &Document, subject: &str, limit: SizeCheck) -> Result<()> {
        let estimate: usize = doc
            .secrets
            .iter()
            .map(|(k, v)| k.len() + v.value.len() * 2 + 96)
            .sum::<usize>()
            + 64;
        let mut bytes = Zeroizing::new(Vec::with_capacity(estimate));
        serde_json::to_writer_pretty(&mut *bytes, doc).map_err(|e| Error::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if bytes.len() > crate::MAX_FILE_BYTES && limit == SizeCheck::Limited {
            return Err(Error::TooLarge {
                subject: subject.to_owned(),
                size: bytes.len(),
                limit: crate::MAX_FILE_BYTES,
                reason: file_limit_reason(),
                advice: FILE_ADVICE.to_owned(),
            });
        }
        let not_back = |detail: &str| Error::NotReadableBack {
            path: self.path.clone(),
            detail: detail.to_owned(),
        };
        match &self.sealer {
            Some(s) => {
                let sealed = s.seal(&bytes).map_err(|detail| Error::Encryption {
                    detail,
                    advice: "Nothing was changed; run Flotilla as the user that stored the \
                             secrets (systemd-creds needs root or a TPM)"
                        .to_owned(),
                })?;
                if sealed.len() > SEALED_FILE_MAX_BYTES {
                    return Err(Error::TooLarge {
                        subject: format!("{subject}, encrypted,"),
                        size: sealed.len(),
                        limit: SEALED_FILE_MAX_BYTES,
                        reason: "the largest file systemd-creds decrypts".to_owned(),
                        advice: FILE_ADVICE.to_owned(),
                    });
                }
                fsutil::replace_verified(&self.path, &sealed, &|on_disk| {
                    let opened = s
                        .unseal(on_disk, &self.path)
                        .map_err(|e| not_back(&format!("systemd-creds: {e}")))?;
                    if opened.as_slice() != bytes.as_slice() {
                        return Err(not_back("it decrypts to something else"));
                    }
                    Ok(())
                })
            }
            None => fsutil::replace_verified(&self.path, &bytes, &|on_disk| {
                if on_disk != bytes.as_slice() {
                    return Err(not_back("it reads back differently"));
                }
                parse(on_disk, &self.path).map(drop)
            }),
        }
    }

    /// Checks the file now on disk, and if it cannot be read, puts `<file>.prev` back in its
    /// place once that is proven readable. The damaged file is kept as `<file>.damaged`.
    pub(crate) fn recover(&self) -> Result<crate::RecoveredFile> {
        let _lock = FileLock::acquire(&self.path)?;
        crate::recovery::recover_file(&self.path, &|bytes| {
            self.open_bytes(bytes).map(|doc| infos(&doc))
        })
    }

    /// A store for the file at `path`, sealed or not, without the checks of [`open`].
    pub(crate) fn at(path: PathBuf, sealer: Option<Sealer>) -> FileStore {
        FileStore { path, sealer }
    }

    pub(crate) fn set(&self, name: &str, secret: &Secret) -> Result<()> {
        let _lock = FileLock::acquire(&self.path)?;
        let mut doc = self.load()?;
        let now = fsutil::now_ms();
        let (encoding, value) = Stored::encode(secret);
        let created_ms = doc.secrets.get(name).map_or(now, |s| s.created_ms);
        doc.secrets.insert(
            name.to_owned(),
            Stored {
                encoding,
                value,
                created_ms,
                updated_ms: now,
            },
        );
        self.save(
            &doc,
            &format!("the secrets file with \"{name}\" stored"),
            SizeCheck::Limited,
        )
    }

    pub(crate) fn get(&self, name: &str) -> Result<Option<Secret>> {
        let doc = self.load()?;
        doc.secrets
            .get(name)
            .map(|s| s.decode(&self.path, name))
            .transpose()
    }

    pub(crate) fn list(&self) -> Result<Vec<SecretInfo>> {
        Ok(infos(&self.load()?))
    }

    pub(crate) fn remove(&self, name: &str) -> Result<bool> {
        let _lock = FileLock::acquire(&self.path)?;
        let mut doc = self.load()?;
        if doc.secrets.remove(name).is_none() {
            return Ok(false);
        }
        self.save(
            &doc,
            &format!("the secrets file without \"{name}\""),
            SizeCheck::Shrinking,
        )?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_text_values_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), FileEncryption::Off).unwrap();
        store.set("text", &Secret::from("héllo")).unwrap();
        store
            .set("bin", &Secret::from_bytes(vec![0, 1, 0xfe, 0xff]))
            .unwrap();
        assert_eq!(
            store.get("text").unwrap().unwrap().expose_str(),
            Some("héllo")
        );
        assert_eq!(
            store.get("bin").unwrap().unwrap().expose(),
            &[0, 1, 0xfe, 0xff]
        );
        let raw = std::fs::read_to_string(store.path()).unwrap();
        assert!(raw.contains("\"hex\"") && raw.contains("0001feff"), "{raw}");
    }

    #[test]
    fn updating_keeps_the_creation_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), FileEncryption::Off).unwrap();
        store.set("a", &Secret::from("1")).unwrap();
        let before = store.list().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.set("a", &Secret::from("2")).unwrap();
        let after = store.list().unwrap();
        assert_eq!(before[0].created, after[0].created);
        assert!(after[0].updated > before[0].updated);
        assert_eq!(store.get("a").unwrap().unwrap().expose_str(), Some("2"));
    }

    #[test]
    fn a_damaged_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        crate::fsutil::write_atomic(&path, b"{not json").unwrap();
        let err = FileStore::open(dir.path(), FileEncryption::Off)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("not a valid Flotilla secrets file"), "{err}");
    }
}
