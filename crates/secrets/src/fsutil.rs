//! Private files: created 0600, replaced atomically, refused when other users can read them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::{Error, Result};

/// Creates `dir` (and its parents) if missing; a new directory is private to this user.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(Error::io(dir))
}

/// Refuses a file that other users may read or write, or that belongs to another user.
#[cfg(unix)]
pub(crate) fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Error::WrongOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// On Windows a file in the user's profile inherits an ACL private to that user; there is no
/// mode to check.
#[cfg(not(unix))]
pub(crate) fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// Reads a private file, or `None` if it does not exist. The permissions are checked on the
/// opened file, so a swap between the check and the read is not possible.
pub(crate) fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path)(e)),
    };
    let meta = file.metadata().map_err(Error::io(path))?;
    check_private(path, &meta)?;
    // Sized up front so that reading does not reallocate and leave copies behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.read_to_end(&mut buf).map_err(Error::io(path))?;
    Ok(Some(buf))
}

fn private_options() -> OpenOptions {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Replaces `path` with `bytes`: written to a new 0600 file in the same directory, flushed to
/// disk, renamed over the old one, and the directory flushed. A reader sees the old content or
/// the new, never a mix, and a crash leaves at most a stray temporary file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, None, &|_| Ok(()))
}

/// The name of the copy of `path` that [`replace_verified`] keeps: `<path>.prev`.
pub(crate) fn previous_path(path: &Path) -> PathBuf {
    sibling(path, ".prev")
}

/// `<path><suffix>`.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Like [`write_atomic`], but the new file is read back from disk and given to `verify` before
/// it replaces `path`, and the version it replaces is kept as [`previous_path`] (0600). If
/// `verify` fails, nothing is changed and its error is returned.
pub(crate) fn replace_verified(
    path: &Path,
    bytes: &[u8],
    verify: &dyn Fn(&[u8]) -> Result<()>,
) -> Result<()> {
    replace(path, bytes, Some(&previous_path(path)), verify)
}

fn temp_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(
        ".{file_name}.{}.{}.{nanos}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

fn replace(
    path: &Path,
    bytes: &[u8],
    keep_previous: Option<&Path>,
    verify: &dyn Fn(&[u8]) -> Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_name(path);
    let mut prev_tmp = None;
    let result = (|| {
        let mut file = private_options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(Error::io(&tmp))?;
        file.write_all(bytes).map_err(Error::io(&tmp))?;
        file.sync_all().map_err(Error::io(&tmp))?;
        drop(file);
        let written = read_private(&tmp)?.ok_or_else(|| Error::Io {
            path: tmp.clone(),
            source: std::io::Error::other("the new file vanished before it could be checked"),
        })?;
        verify(&written)?;
        if let Some(prev) = keep_previous
            && path.exists()
        {
            // The current version becomes `prev` in one rename, so that `prev` is always a
            // whole file: a hard link where the file system has them, else a private copy.
            let staged = temp_name(prev);
            prev_tmp = Some(staged.clone());
            if std::fs::hard_link(path, &staged).is_err() {
                let current = read_private(path)?.unwrap_or_default();
                let mut copy = private_options()
                    .write(true)
                    .create_new(true)
                    .open(&staged)
                    .map_err(Error::io(&staged))?;
                copy.write_all(&current).map_err(Error::io(&staged))?;
                copy.sync_all().map_err(Error::io(&staged))?;
            }
            std::fs::rename(&staged, prev).map_err(Error::io(prev))?;
        }
        std::fs::rename(&tmp, path).map_err(Error::io(path))?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        if let Some(staged) = prev_tmp {
            let _ = std::fs::remove_file(staged);
        }
    }
    result
}

#[cfg(unix)]
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir)
        && let Err(e) = d.sync_all()
    {
        tracing::debug!(dir = %dir.display(), error = %e, "could not flush directory");
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}

/// An exclusive lock on `<path>.lock`, held until dropped, that serialises read-modify-write
/// cycles between threads and processes. The OS releases it however the process ends.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> Result<FileLock> {
        let lock_path = sibling(path, ".lock");
        let file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(Error::io(&lock_path))?;
        file.lock().map_err(Error::io(&lock_path))?;
        Ok(FileLock { _file: file })
    }
}

/// Milliseconds since the Unix epoch, the form timestamps take on disk.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

/// Where and what kind of JSON error, without serde's text, which can quote the file's content.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected content",
        serde_json::error::Category::Eof => "unexpected end of file",
    };
    format!("{kind} at line {}, column {}", e.line(), e.column())
}
