//! Putting a damaged store file back to its previous version (`flotilla secret recover`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::fsutil;
use crate::{Error, Result, SecretInfo};

/// What [`crate::recover`] found and did for one file of the store. Names and times, never
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredFile {
    /// The store file: `secrets.cred`, `secrets.json` or `keyring-index.json`.
    pub path: PathBuf,
    /// The previous version that now is the file, or `None` if the file was readable and left
    /// as it was.
    pub restored_from: Option<PathBuf>,
    /// Where the unreadable version was moved (`<file>.damaged`), when one was replaced.
    pub damaged_kept_as: Option<PathBuf>,
    /// When the version now in place was written.
    pub written: Option<SystemTime>,
    /// The secrets the file now holds.
    pub secrets: Vec<SecretInfo>,
}

/// Whether `e` means the file's content cannot be read (as opposed to a permission, owner,
/// I/O or configuration problem, which a previous version would not fix).
fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::Undecryptable { .. })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The recovery of one file, whose content `check` reads (the caller holds its lock). A
/// readable file is left alone; an unreadable one is replaced by `<file>.prev` if that is
/// readable, and kept as `<file>.damaged`; otherwise [`Error::Unrecoverable`] says why.
pub(crate) fn recover_file(
    path: &Path,
    check: &dyn Fn(&[u8]) -> Result<Vec<SecretInfo>>,
) -> Result<RecoveredFile> {
    let current = fsutil::read_private(path)?.ok_or_else(|| Error::Unrecoverable {
        path: path.to_path_buf(),
        detail: "it does not exist".to_owned(),
    })?;
    let damage = match check(&current) {
        Ok(secrets) => {
            return Ok(RecoveredFile {
                path: path.to_path_buf(),
                restored_from: None,
                damaged_kept_as: None,
                written: modified(path),
                secrets,
            });
        }
        Err(e) if is_damage(&e) => e,
        Err(e) => return Err(e),
    };
    let prev_path = fsutil::previous_path(path);
    let unrecoverable = |why: String| Error::Unrecoverable {
        path: path.to_path_buf(),
        detail: format!("it is damaged ({damage}), and {why}"),
    };
    let Some(prev) = fsutil::read_private(&prev_path)? else {
        return Err(unrecoverable(format!(
            "there is no previous version ({} does not exist)",
            prev_path.display()
        )));
    };
    let secrets = match check(&prev) {
        Ok(secrets) => secrets,
        Err(e) if is_damage(&e) => {
            return Err(unrecoverable(format!(
                "its previous version {} cannot be read either",
                prev_path.display()
            )));
        }
        Err(e) => return Err(e),
    };
    let damaged = fsutil::sibling(path, ".damaged");
    // A copy, then one rename over the file: a reader never finds it missing.
    fsutil::write_atomic(&damaged, &current)?;
    fsutil::write_atomic(path, &prev)?;
    Ok(RecoveredFile {
        path: path.to_path_buf(),
        restored_from: Some(prev_path.clone()),
        damaged_kept_as: Some(damaged),
        written: modified(&prev_path),
        secrets,
    })
}
