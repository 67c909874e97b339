//! The head saved to one encrypted file and put back, here or on another machine
//! ([`flotilla_head::backup`] holds the format): `back_up` reads this machine's head (its
//! registry, identity, tokens and settings) whether it runs or not, `restore` puts a backup into
//! this home, `store_passphrase` keeps the passphrase scheduled backups are made with.
//!
//! The backup is made on the head's machine, not by asking the running head: the registry is
//! SQLite, whose `VACUUM INTO` copies a consistent snapshot beside a live writer, and the
//! identity and tokens are in this user's secret store, opened as the head opens it. So one
//! path serves a running head and a stopped one, and no endpoint ever hands the head's secrets
//! out. Blocking: call these off the async runtime.

use std::path::Path;

use anyhow::Context;
use flotilla_head::backup::{self, Contents, Manifest, Restored};
use flotilla_secrets::Secret;

/// What a backup saved.
#[derive(Debug, Clone)]
pub struct BackedUp {
    pub manifest: Manifest,
    /// The file's size.
    pub bytes: usize,
    /// Whether the head was running while it was saved.
    pub head_running: bool,
    /// Whether the head machine's `flotilla.toml` is in it.
    pub settings: bool,
}

/// Saves this machine's head to `file` (mode 0600, replaced whole), encrypted with
/// `passphrase`.
pub fn back_up(file: &Path, passphrase: &Secret) -> anyhow::Result<BackedUp> {
    let (dirs, _, store) = crate::secrets::load_store()?;
    let head_running = flotilla_head::HeadInfo::read(&dirs).is_some();
    let contents = Contents::of_home(&dirs, &store)?;
    let bytes = backup::seal(&contents, passphrase)?;
    backup::write_file(file, &bytes)?;
    Ok(BackedUp {
        manifest: contents.manifest.clone(),
        bytes: bytes.len(),
        head_running,
        settings: contents.settings.is_some(),
    })
}

/// Puts the head saved in `file` into this home (refused where a head runs, and over a head
/// this home has unless `force`); returns what the backup says of itself and what was put in
/// place.
pub fn restore(
    file: &Path,
    passphrase: &Secret,
    force: bool,
) -> anyhow::Result<(Manifest, Restored)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let contents = backup::open(&bytes, passphrase, &file.display().to_string())?;
    let (dirs, _, store) = crate::secrets::load_store()?;
    let done = backup::restore(&dirs, &store, &contents, force)?;
    Ok((contents.manifest, done))
}

/// Stores the passphrase scheduled backups (`[backup]` in `flotilla.toml`) are made with;
/// returns where the store keeps it.
pub fn store_passphrase(passphrase: &Secret) -> anyhow::Result<String> {
    let (_, _, store) = crate::secrets::load_store()?;
    store.set(backup::PASSPHRASE_SECRET, passphrase)?;
    Ok(store.backend_name())
}
