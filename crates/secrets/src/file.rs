//! The fallback backend: one private JSON file in the state directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fsutil::{self, FileLock};
use crate::seal::{FileEncryption, Sealer};
use crate::{Error, Result, Secret, SecretInfo};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "secrets.json";
/// Its name when encrypted with systemd-creds.
pub const SEALED_FILE_NAME: &str = "secrets.cred";

const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
struct Document {
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

/// Secrets in `<state dir>/secrets.json`, mode 0600, replaced atomically on every change and
/// refused if other users can read it. Values are stored in clear text: the file's protection
/// is its permissions, and where `systemd-creds` works (root, or a TPM) the file is also
/// encrypted at rest (`secrets.cred`; see the `seal` module).
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
            FileEncryption::SystemdCreds => {
                Some(Sealer::probe().map_err(|detail| Error::Encryption { detail })?)
            }
            FileEncryption::Auto => Sealer::probe()
                .inspect_err(|why| tracing::debug!("secrets file not encrypted: {why}"))
                .ok(),
        };
        if sealer.is_none() && sealed.exists() {
            let why = match encryption {
                FileEncryption::Off => "encryption is turned off".to_string(),
                _ => Sealer::probe().err().unwrap_or_default(),
            };
            return Err(Error::Encryption {
                detail: format!(
                    "{} is encrypted with systemd-creds, and {why}",
                    sealed.display()
                ),
            });
        }
        let store = FileStore {
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
            store.save(&doc)?;
            std::fs::remove_file(&plain).map_err(Error::io(&plain))?;
            tracing::info!("the secrets file is now encrypted with systemd-creds");
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

    fn load(&self) -> Result<Document> {
        let Some(bytes) = fsutil::read_private(&self.path)? else {
            return Ok(Document {
                version: FORMAT_VERSION,
                secrets: BTreeMap::new(),
            });
        };
        let bytes = match &self.sealer {
            Some(s) => s
                .unseal(&bytes, &self.path)
                .map_err(|detail| Error::Encryption { detail })?,
            None => bytes,
        };
        let doc: Document = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            detail: crate::fsutil::json_error(&e),
        })?;
        if doc.version != FORMAT_VERSION {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                detail: format!(
                    "format version {} is not the supported version {FORMAT_VERSION}",
                    doc.version
                ),
            });
        }
        Ok(doc)
    }

    fn save(&self, doc: &Document) -> Result<()> {
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
        match &self.sealer {
            Some(s) => {
                let sealed = s
                    .seal(&bytes)
                    .map_err(|detail| Error::Encryption { detail })?;
                fsutil::write_atomic(&self.path, &sealed)
            }
            None => fsutil::write_atomic(&self.path, &bytes),
        }
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
        self.save(&doc)
    }

    pub(crate) fn get(&self, name: &str) -> Result<Option<Secret>> {
        let doc = self.load()?;
        doc.secrets
            .get(name)
            .map(|s| s.decode(&self.path, name))
            .transpose()
    }

    pub(crate) fn list(&self) -> Result<Vec<SecretInfo>> {
        let doc = self.load()?;
        Ok(doc
            .secrets
            .iter()
            .map(|(name, s)| SecretInfo {
                name: name.clone(),
                created: fsutil::from_ms(s.created_ms),
                updated: fsutil::from_ms(s.updated_ms),
                backend: crate::BackendKind::File,
            })
            .collect())
    }

    pub(crate) fn remove(&self, name: &str) -> Result<bool> {
        let _lock = FileLock::acquire(&self.path)?;
        let mut doc = self.load()?;
        if doc.secrets.remove(name).is_none() {
            return Ok(false);
        }
        self.save(&doc)?;
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
