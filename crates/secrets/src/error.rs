//! The crate's error type.

use std::path::PathBuf;

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid secret name \"{name}\": {reason}")]
    InvalidName { name: String, reason: String },

    #[error("invalid keyring service name \"{name}\": {reason}")]
    InvalidService { name: String, reason: String },

    #[error("no secret named \"{name}\" in the {backend}")]
    NotFound { name: String, backend: String },

    #[error(
        "no usable OS keyring ({detail}). On Linux the keyring is the Secret Service on the D-Bus \
         session bus: run Flotilla inside a desktop session with an unlocked keyring \
         (or start one, e.g. gnome-keyring-daemon under dbus-run-session), or, for a headless \
         service, allow the file fallback (allow_file_fallback = true) to keep secrets in a \
         0600 file in the state directory"
    )]
    NoKeyring { detail: String },

    #[error(
        "the OS keyring refused access while {action} \"{name}\" ({detail}); it is probably \
         locked: unlock it (log in to the desktop session, or `gnome-keyring-daemon --unlock`) \
         and retry"
    )]
    KeyringLocked {
        action: &'static str,
        name: String,
        detail: String,
    },

    #[error("the OS keyring failed while {action} \"{name}\": {detail}")]
    Keyring {
        action: &'static str,
        name: String,
        detail: String,
    },

    #[error(
        "{path} is accessible to other users (mode {mode:03o}); secrets files must be private: \
         run `chmod 600 {path}`",
        path = path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error(
        "{path} is owned by user {owner}, not by this user ({me}); run `chown {me} {path}` or \
         run Flotilla as its owner",
        path = path.display()
    )]
    WrongOwner { path: PathBuf, owner: u32, me: u32 },

    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} is not a valid Flotilla secrets file ({detail}); run `{RECOVER_COMMAND}` to \
         restore the previous version (kept as {path}.prev), or move it aside and set the \
         secrets again",
        path = path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    #[error(
        "{path} cannot be decrypted: {detail}\n  If the file is damaged or too large, run \
         `{RECOVER_COMMAND}` to restore the previous version (kept as {path}.prev); if it was \
         encrypted on another machine or by another user, use Flotilla there",
        path = path.display()
    )]
    Undecryptable { path: PathBuf, detail: String },

    #[error("the secrets file cannot be encrypted or decrypted here: {detail}\n  {advice}")]
    Encryption { detail: String, advice: String },

    #[error("{subject} is {size} bytes, over the limit of {limit} bytes ({reason}); {advice}")]
    TooLarge {
        subject: String,
        size: usize,
        limit: usize,
        reason: String,
        advice: String,
    },

    #[error(
        "the new version of {path} could not be read back ({detail}); nothing was changed",
        path = path.display()
    )]
    NotReadableBack { path: PathBuf, detail: String },

    #[error(
        "{path} cannot be recovered: {detail}; move it aside (its secrets are lost) and set the \
         secrets again",
        path = path.display()
    )]
    Unrecoverable { path: PathBuf, detail: String },
}

/// The command that restores a damaged store from its previous version.
pub const RECOVER_COMMAND: &str = "flotilla secret recover";

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
