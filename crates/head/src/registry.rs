//! The head's registry of enrolled nodes: nodes, their credential hashes, invites, state events
//! and the contribution ledger, in one SQLite database (`rusqlite`, SQLite bundled).
//!
//! # The database
//!
//! Opened in WAL mode with `foreign_keys=ON`, `synchronous=NORMAL` and a busy timeout of
//! [`BUSY_TIMEOUT`], so another connection to the same file (a second process, a backup tool)
//! waits instead of failing at once. Every write runs in a `BEGIN IMMEDIATE` transaction. On
//! unix the file is created `0600` and its parent directories are created if missing.
//!
//! The schema is versioned by `PRAGMA user_version`: [`MIGRATIONS`] is an ordered list of SQL
//! scripts, migration `i` taking the database from version `i` to `i + 1`, each in its own
//! transaction together with the new version number, so a failed step leaves the database at the
//! version it had. Opening an older database upgrades it; a database from a newer Flotilla (a
//! version above [`SCHEMA_VERSION`]) is refused with [`Error::SchemaTooNew`] and left untouched.
//!
//! All times are stored as unix milliseconds (`INTEGER`). Tables (all `STRICT`):
//!
//! - `nodes(id, name, hostname, os, arch, cpus, enrolled_at, last_seen, state, reason,
//!   revoked_at, invite_id, pending, local, replaces)`: `id` is never reused (`AUTOINCREMENT`).
//!   `name` is unique among nodes that are not revoked (a partial unique index), because revoked
//!   nodes stay for their history. `invite_id` is the invite it joined with, `pending` is 1
//!   until its join is confirmed, `local` marks the head's own worker, `replaces` the node a
//!   pending join took the name of.
//! - `credentials(id, node_id, salt, hash, created_at)`: node credentials, hashed.
//! - `invites(id, salt, hash, uses_left, expires_at, created_at, uses_total, revoked_at)`: join
//!   secrets, hashed; `uses_total` is 0 for invites made before it was recorded.
//! - `events(id, node_id, at, kind, state, reason)`: enrollments, state changes with their
//!   reasons, and revocations, in order (`id` grows).
//! - `contributions(id, node_id, seq, hour_start, cpu_seconds)` with `UNIQUE(node_id, seq)`:
//!   the ledger of CPU-seconds per node and hour.
//!
//! # Secrets are stored only as hashes
//!
//! Neither a node credential nor an invite secret is ever written to the database: a row keeps a
//! random 16-byte salt of its own and `SHA-256(domain || salt || secret)`, where `domain` tells
//! credentials and invites apart. Checking a secret recomputes the hash and compares it with
//! [`subtle`]'s constant-time equality. SHA-256 rather than a password hash (argon2) is the
//! choice because these secrets are random values the head makes (at least
//! [`MIN_SECRET_BYTES`] bytes, enforced here), not passwords a person chose: a brute-force search
//! over 2^128 values is out of reach however fast the hash is, and authentication of every agent
//! session stays cheap. An invite is found by recomputing the hash against every invite row (the
//! salt is per row), which is fine for the handful of invites a team has.
//!
//! # Names and joining
//!
//! A name is held by one node that is not revoked, compared without regard to ASCII case (`VM`
//! and `vm` would read as one machine), and it is never taken from that node without proof:
//! [`Registry::enroll`] gives a joining machine the name it asks for only when it is free, or
//! when the machine proves it is the node holding it (that node's current credential, sent by a
//! machine that joins again) or, for the head's own worker, when the holder is the head's own
//! earlier worker. Otherwise the machine gets the first free `name-2`, `name-3`, ... and the
//! holder gets a [`EventKind::Notice`] event saying so; an admin frees a name by revoking its
//! node. A name must also read as one thing: not all digits (it would read as a node id) and
//! nothing [`flotilla_secrets::ambiguous_character`] refuses.
//!
//! A node that replaces its earlier self gets a **new id** and the old node is revoked in the
//! same transaction (its credential stops working). A new id, rather than reusing the old one,
//! keeps the ledger right: the new agent numbers its contribution records from the start
//! again, and under the old id those would be taken for duplicates. The old node's row, events
//! and contributions stay, revoked.
//!
//! Joining is all or nothing. Using the code and creating the node happen in one transaction;
//! a join that asks to be confirmed stays *pending* (not listed, not counted) until the agent
//! says it stored its credential ([`Registry::confirm_join`]). If it could not, or says nothing
//! within the head's deadline, [`Registry::abandon_join`] deletes the node, gives the code's use
//! back and restores a node it replaced.
//!
//! # Threads and async
//!
//! [`Registry`] is `Send + Sync` (one connection behind a mutex) and its methods block on SQLite.
//! Async callers share it in an `Arc` and call it inside `tokio::task::spawn_blocking`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_secrets::Secret;
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[cfg(test)]
mod tests;

/// How long a statement waits for another connection's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most memory SQLite's page cache of the registry may hold, in KiB. The registry appends
/// an event at every state change, and SQLite keeps the pages it wrote in its cache (2 MB by
/// default), so a long-running head grew by that much; the pages the head reads again (nodes,
/// credentials, the latest events) fit in far less.
pub const CACHE_KIB: i64 = 512;

/// The shortest node credential or invite secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The longest node name, hostname, OS or architecture accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 255;

/// The schema migrations, in order: entry `i` takes the database from version `i` to `i + 1`.
/// Append only; never edit an entry that has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: nodes, credentials, invites, events.
    "CREATE TABLE nodes (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT    NOT NULL,
        hostname    TEXT    NOT NULL,
        os          TEXT    NOT NULL,
        arch        TEXT    NOT NULL,
        cpus        INTEGER NOT NULL CHECK (cpus >= 0),
        enrolled_at INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        state       TEXT    NOT NULL,
        reason      TEXT    NOT NULL DEFAULT '',
        revoked_at  INTEGER
    ) STRICT;
    CREATE UNIQUE INDEX nodes_active_name ON nodes(name) WHERE revoked_at IS NULL;
    CREATE TABLE credentials (
        id         INTEGER PRIMARY KEY,
        node_id    INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        salt       BLOB    NOT NULL CHECK (length(salt) = 16),
        hash       BLOB    NOT NULL CHECK (length(hash) = 32),
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX credentials_node ON credentials(node_id);
    CREATE TABLE invites (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        salt       BLOB    NOT NULL CHECK (length(salt) = 16),
        hash       BLOB    NOT NULL CHECK (length(hash) = 32),
        uses_left  INTEGER NOT NULL CHECK (uses_left >= 0),
        expires_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        at      INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        state   TEXT    NOT NULL,
        reason  TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX events_node ON events(node_id);",
    // 2: the contribution ledger.
    "CREATE TABLE contributions (
        id          INTEGER PRIMARY KEY,
        node_id     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL CHECK (seq >= 0),
        hour_start  INTEGER NOT NULL CHECK (hour_start % 3600000 = 0),
        cpu_seconds REAL    NOT NULL CHECK (cpu_seconds >= 0),
        UNIQUE (node_id, seq)
    ) STRICT;
    CREATE INDEX contributions_hour ON contributions(hour_start, node_id);",
    // 3: invites can be listed and withdrawn; joins are confirmed; the head's own worker is
    // marked.
    "ALTER TABLE invites ADD COLUMN uses_total INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE invites ADD COLUMN revoked_at INTEGER;
    ALTER TABLE nodes ADD COLUMN invite_id INTEGER;
    ALTER TABLE nodes ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN local INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN replaces INTEGER;",
];

/// The schema version this build writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const CREDENTIAL_DOMAIN: &[u8] = b"flotilla.registry.credential.v1\0";
const INVITE_DOMAIN: &[u8] = b"flotilla.registry.invite.v1\0";
const HOUR_MS: i64 = 3_600_000;

/// The registry's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the node registry {path} has schema version {found}, newer than this Flotilla \
         understands (version {supported})\n  It was written by a newer Flotilla: run that \
         version, or move the file away to start an empty registry"
    )]
    SchemaTooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("node {0} is not in the registry")]
    UnknownNode(NodeId),
    #[error("node {0} has been revoked")]
    Revoked(NodeId),
    #[error("there is no invite {0}; see `flotilla invite --list`")]
    UnknownInvite(InviteId),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("the node registry holds a value this Flotilla cannot read: {0}")]
    Corrupt(String),
    #[error("node registry: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rusqlite::Error> for RedeemError {
    fn from(e: rusqlite::Error) -> Self {
        RedeemError::Registry(e.into())
    }
}

impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> Self {
        AuthError::Registry(e.into())
    }
}

/// Why an invite secret was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("this invite is not known to the head")]
    Unknown,
    #[error("this invite has expired; ask for a new one")]
    Expired,
    #[error("this invite has been used as many times as it allows; ask for a new one")]
    UsedUp,
    #[error("this invite has been withdrawn by the head's admin; ask for a new one")]
    Withdrawn,
    #[error(transparent)]
    Registry(#[from] Error),
}

/// Why a node's credential was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this node is not known to the head")]
    UnknownNode,
    #[error("this node has been revoked; enroll it again with a new invite")]
    Revoked,
    #[error("wrong credential for this node")]
    BadCredential,
    #[error(transparent)]
    Registry(#[from] Error),
}

/// A node's id. Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub i64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An invite's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InviteId(pub i64);

impl fmt::Display for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A node named by id or by name (a name means the node of that name that is not revoked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef<'a> {
    Id(NodeId),
    Name(&'a str),
}

impl From<NodeId> for NodeRef<'_> {
    fn from(id: NodeId) -> Self {
        NodeRef::Id(id)
    }
}

impl<'a> From<&'a str> for NodeRef<'a> {
    fn from(name: &'a str) -> Self {
        NodeRef::Name(name)
    }
}

/// What a node is doing, as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Enrolled and not heard from since.
    Enrolled,
    /// Connected and offering its CPUs (all or a capped share).
    Online,
    /// Connected, paused by its owner or its politeness policy.
    Paused,
    /// Leaving: Ray is draining it.
    Draining,
    /// Not connected.
    Offline,
}

impl NodeState {
    pub const ALL: [NodeState; 5] = [
        NodeState::Enrolled,
        NodeState::Online,
        NodeState::Paused,
        NodeState::Draining,
        NodeState::Offline,
    ];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Enrolled => "enrolled",
            NodeState::Online => "online",
            NodeState::Paused => "paused",
            NodeState::Draining => "draining",
            NodeState::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<NodeState> {
        NodeState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A machine asking to be enrolled.
#[derive(Debug, Clone, Copy)]
pub struct NewNode<'a> {
    /// The name it asks for.
    pub name: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub arch: &'a str,
    pub cpus: u32,
}

/// What admits a machine to the fleet.
#[derive(Debug, Clone, Copy)]
pub enum Admission<'a> {
    /// The head's own worker, which needs no invite.
    Local,
    /// A join code's secret; `previous` proves which node the machine was before (its id and
    /// credential), `pending` keeps the enrollment unconfirmed until the agent stored its
    /// credential.
    Invite {
        secret: &'a Secret,
        previous: Option<(NodeId, &'a Secret)>,
        pending: bool,
    },
}

/// The outcome of [`Registry::enroll`].
#[derive(Debug, Clone, PartialEq)]
pub struct Enrolled {
    pub id: NodeId,
    /// The name it got: the one asked for, or another one when that is held by `name_held_by`.
    pub name: String,
    /// The machine's earlier node, now revoked.
    pub replaced: Option<NodeId>,
    pub name_held_by: Option<NodeId>,
    pub invite: Option<InviteId>,
}

/// An invite as the admin sees it (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct InviteRecord {
    pub id: InviteId,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    /// Uses it was made with; 0 when made before this was recorded.
    pub uses: u32,
    pub uses_left: u32,
    pub revoked_at: Option<SystemTime>,
    /// The nodes that joined with it.
    pub joined: Vec<String>,
}

impl InviteRecord {
    /// `usable`, `expired`, `used up` or `withdrawn`, at `now`.
    pub fn status(&self, now: SystemTime) -> &'static str {
        if self.revoked_at.is_some() {
            "withdrawn"
        } else if now >= self.expires_at {
            "expired"
        } else if self.uses_left == 0 {
            "used up"
        } else {
            "usable"
        }
    }
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Enrolled,
    /// The node's state or its reason changed.
    State,
    Revoked,
    /// Something its owner should know that changes nothing (another machine asked for its
    /// name), said in `reason`.
    Notice,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Enrolled => "enrolled",
            EventKind::State => "state",
            EventKind::Revoked => "revoked",
            EventKind::Notice => "notice",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Enrolled,
            EventKind::State,
            EventKind::Revoked,
            EventKind::Notice,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One enrolled node (revoked ones included).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpus: u32,
    pub enrolled_at: SystemTime,
    pub last_seen: SystemTime,
    pub state: NodeState,
    /// Why the node is in its state, in the words of the report; empty if none was given.
    pub reason: String,
    pub revoked_at: Option<SystemTime>,
    /// Joined, but its agent has not yet confirmed that it kept its credential.
    pub pending: bool,
}

impl NodeRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Grows with every event; pass the last one seen to [`Registry::events`] to get the next.
    pub id: i64,
    pub node_id: NodeId,
    pub at: SystemTime,
    pub kind: EventKind,
    /// The node's state after the event.
    pub state: NodeState,
    pub reason: String,
}

/// One contribution record as an agent sends it: CPU-seconds given in one hour, numbered by the
/// agent (`seq`) so that a record sent again after a reconnect is stored once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContributionRecord {
    pub seq: u64,
    /// The start of the hour, on a whole hour since the unix epoch.
    pub hour_start: SystemTime,
    pub cpu_seconds: f64,
}

/// CPU-seconds of one node in one hour, summed over its records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourlyContribution {
    pub node_id: NodeId,
    pub hour_start: SystemTime,
    pub cpu_seconds: f64,
}

/// The registry. See the module documentation.
#[derive(Debug)]
pub struct Registry {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl Registry {
    /// Opens (creating it and its directories if needed) the registry at `path`, upgrading an
    /// older schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Registry> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        create_private_file(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Invalid {
                what: "database location",
                reason: format!(
                    "SQLite could not use write-ahead logging for {} (journal mode {mode})",
                    path.display()
                ),
            });
        }
        Self::setup(conn, Some(path.to_path_buf()))
    }

    /// A registry that lives in memory only, for tests.
    pub fn open_in_memory() -> Result<Registry> {
        Self::setup(Connection::open_in_memory()?, None)
    }

    fn setup(mut conn: Connection, path: Option<PathBuf>) -> Result<Registry> {
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Negative: a size in KiB rather than a number of pages.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        let shown = path
            .as_ref()
            .map_or_else(|| ":memory:".to_string(), |p| p.display().to_string());
        migrate(&mut conn, MIGRATIONS, &shown)?;
        Ok(Registry {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file, `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The connection. A panic while it was held cannot have left a transaction half done (a
    /// dropped transaction rolls back), so a poisoned lock is taken over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a new invite whose secret is accepted `uses` times until `expires_at`.
    pub fn create_invite(
        &self,
        secret: &Secret,
        uses: u32,
        expires_at: SystemTime,
    ) -> Result<InviteId> {
        check_secret(secret, "invite secret")?;
        if uses == 0 {
            return Err(invalid("invite", "it must allow at least one use"));
        }
        let expires = millis(expires_at)?;
        let now = millis(SystemTime::now())?;
        let (salt, hash) = new_hash(INVITE_DOMAIN, secret);
        let conn = self.conn();
        conn.execute(
            "INSERT INTO invites (salt, hash, uses_left, uses_total, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
            params![salt, hash, uses, expires, now],
        )?;
        Ok(InviteId(conn.last_insert_rowid()))
    }

    /// Accepts an invite secret once: the invite's remaining uses go down by one, atomically
    /// (two concurrent redemptions of a last use cannot both succeed). An invite is expired from
    /// `expires_at` on.
    pub fn redeem_invite(&self, secret: &Secret, now: SystemTime) -> Result<InviteId, RedeemError> {
        let now = millis(now)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let id = usable_invite(&tx, secret, now)?;
        tx.execute(
            "UPDATE invites SET uses_left = uses_left - 1 WHERE id = ?1",
            [id.0],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Whether `secret` is an invite that could be redeemed now, without using it.
    pub fn check_invite(&self, secret: &Secret, now: SystemTime) -> Result<InviteId, RedeemError> {
        let now = millis(now)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        usable_invite(&tx, secret, now)
    }

    /// Every invite, newest first, with the names of the nodes that joined with it (pending
    /// joins not included).
    pub fn list_invites(&self) -> Result<Vec<InviteRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT i.id, i.created_at, i.expires_at, i.uses_total, i.uses_left, i.revoked_at,
                    (SELECT group_concat(n.name, char(10)) FROM nodes n
                      WHERE n.invite_id = i.id AND n.pending = 0)
             FROM invites i ORDER BY i.id DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            let joined: Option<String> = r.get(6)?;
            Ok(InviteRecord {
                id: InviteId(r.get(0)?),
                created_at: from_millis(r.get(1)?),
                expires_at: from_millis(r.get(2)?),
                uses: r.get(3)?,
                uses_left: r.get(4)?,
                revoked_at: r.get::<_, Option<i64>>(5)?.map(from_millis),
                joined: joined
                    .map(|j| j.split('\n').map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Withdraws an invite: its secret is refused from now on. `Ok(false)` if it was withdrawn
    /// already; [`Error::UnknownInvite`] if there is no such invite.
    pub fn revoke_invite(&self, id: InviteId, now: SystemTime) -> Result<bool> {
        let now = millis(now)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let revoked: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM invites WHERE id = ?1",
                [id.0],
                |r| r.get(0),
            )
            .optional()?;
        match revoked {
            None => Err(Error::UnknownInvite(id)),
            Some(Some(_)) => Ok(false),
            Some(None) => {
                tx.execute(
                    "UPDATE invites SET revoked_at = ?2 WHERE id = ?1",
                    params![id.0, now],
                )?;
                tx.commit()?;
                Ok(true)
            }
        }
    }

    /// Enrolls a node with its credential (stored hashed), admitted by `admission`, in one
    /// transaction: the invite's use and the node stand or fall together. The node gets the
    /// name it asks for unless another node holds it (see the module documentation).
    pub fn enroll(
        &self,
        node: &NewNode<'_>,
        credential: &Secret,
        admission: Admission<'_>,
        now: SystemTime,
    ) -> Result<Enrolled, RedeemError> {
        check_node_name(node.name)?;
        check_text("hostname", node.hostname, true)?;
        check_text("operating system", node.os, true)?;
        check_text("architecture", node.arch, true)?;
        check_secret(credential, "node credential")?;
        let now = millis(now)?;
        let (salt, hash) = new_hash(CREDENTIAL_DOMAIN, credential);
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let (invite, proof, pending, local) = match admission {
            Admission::Local => (None, None, false, true),
            Admission::Invite {
                secret,
                previous,
                pending,
            } => {
                let invite = usable_invite(&tx, secret, now)?;
                tx.execute(
                    "UPDATE invites SET uses_left = uses_left - 1 WHERE id = ?1",
                    [invite.0],
                )?;
                let proof = match previous {
                    Some((id, credential)) => proven(&tx, id, credential)?.then_some(id),
                    None => None,
                };
                (Some(invite), proof, pending, false)
            }
        };
        let holder: Option<(i64, String, bool, Option<i64>, String)> = tx
            .query_row(
                "SELECT id, state, local, invite_id, hostname FROM nodes
                 WHERE lower(name) = lower(?1) AND revoked_at IS NULL",
                [node.name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let mut name = node.name.to_string();
        let mut replaced = None;
        let mut kept_by = None;
        if let Some((old, state, old_local, old_invite, old_hostname)) = holder {
            // The head's own worker replaces its earlier self: one marked local, or one from
            // before the mark that has no invite and this machine's host name.
            let own = if local {
                old_local || (old_invite.is_none() && old_hostname == node.hostname)
            } else {
                proof == Some(NodeId(old))
            };
            if own {
                tx.execute(
                    "UPDATE nodes SET revoked_at = ?2 WHERE id = ?1",
                    params![old, now],
                )?;
                add_event(
                    &tx,
                    old,
                    now,
                    EventKind::Revoked,
                    &state,
                    "replaced by a new enrollment of the same machine",
                )?;
                replaced = Some(NodeId(old));
            } else {
                name = free_name(&tx, node.name)?;
                add_event(
                    &tx,
                    old,
                    now,
                    EventKind::Notice,
                    &state,
                    &format!(
                        "another machine ({}) asked to join as {:?}; it was named {name:?}",
                        node.hostname, node.name
                    ),
                )?;
                kept_by = Some(NodeId(old));
            }
        }
        tx.execute(
            "INSERT INTO nodes (name, hostname, os, arch, cpus, enrolled_at, last_seen, state,
                                invite_id, pending, local, replaces)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                name,
                node.hostname,
                node.os,
                node.arch,
                node.cpus,
                now,
                NodeState::Enrolled.as_str(),
                invite.map(|i| i.0),
                pending,
                local,
                replaced.filter(|_| pending).map(|r| r.0),
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO credentials (node_id, salt, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, salt, hash, now],
        )?;
        let reason = match (replaced, kept_by) {
            (Some(old), _) => format!("replaces node {old}"),
            (None, Some(holder)) => {
                format!("the name {:?} is held by node {holder}", node.name)
            }
            (None, None) => String::new(),
        };
        add_event(
            &tx,
            id,
            now,
            EventKind::Enrolled,
            NodeState::Enrolled.as_str(),
            &reason,
        )?;
        tx.commit()?;
        Ok(Enrolled {
            id: NodeId(id),
            name,
            replaced,
            name_held_by: kept_by,
            invite,
        })
    }

    /// Makes a pending join final: the agent stored its credential. `Ok(None)` if the node is
    /// not pending (confirmed already); [`AuthError`] if the credential is not that node's or
    /// the join was abandoned meanwhile.
    /// With the record, the node it replaced (revoked when the join was made).
    pub fn confirm_join(
        &self,
        id: NodeId,
        credential: &Secret,
    ) -> Result<Option<(NodeRecord, Option<NodeId>)>, AuthError> {
        self.authenticate(id, credential)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let replaced: Option<Option<i64>> = tx
            .query_row(
                "SELECT replaces FROM nodes WHERE id = ?1 AND pending = 1",
                [id.0],
                |r| r.get(0),
            )
            .optional()?;
        let Some(replaced) = replaced else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE nodes SET pending = 0, replaces = NULL WHERE id = ?1",
            [id.0],
        )?;
        tx.commit()?;
        let record = node_by_id(&conn, id)?.ok_or(AuthError::UnknownNode)?;
        Ok(Some((record, replaced.map(NodeId))))
    }

    /// Undoes a pending join whose agent could not keep its credential: the node is deleted
    /// (with its credential and events), the invite's use is given back and a node it replaced
    /// is restored if its name is still free. `Ok(false)` if the node is not pending.
    pub fn abandon_join(&self, id: NodeId, credential: &Secret) -> Result<bool, AuthError> {
        self.authenticate(id, credential)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let done = abandon(&tx, id.0, "the machine could not store its credential")?;
        tx.commit()?;
        Ok(done)
    }

    /// Abandons every pending join older than `max_age`: their agents never confirmed. Returns
    /// how many.
    pub fn expire_pending(&self, now: SystemTime, max_age: Duration) -> Result<usize> {
        let cutoff = millis(now)? - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let stale: Vec<i64> = {
            let mut stmt =
                tx.prepare("SELECT id FROM nodes WHERE pending = 1 AND enrolled_at <= ?1")?;
            stmt.query_map([cutoff], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for id in &stale {
            abandon(&tx, *id, "the machine never confirmed its join")?;
        }
        tx.commit()?;
        Ok(stale.len())
    }

    /// Checks a node's credential. A revoked node is reported as such only to a caller that
    /// holds its credential; a wrong credential is [`AuthError::BadCredential`] either way.
    pub fn authenticate(
        &self,
        node_id: NodeId,
        credential: &Secret,
    ) -> Result<NodeRecord, AuthError> {
        let conn = self.conn();
        let node = node_by_id(&conn, node_id)?.ok_or(AuthError::UnknownNode)?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut stmt = conn.prepare("SELECT salt, hash FROM credentials WHERE node_id = ?1")?;
            stmt.query_map([node_id.0], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut ok = false;
        for (salt, hash) in &rows {
            ok |= hash_matches(CREDENTIAL_DOMAIN, salt, hash, credential);
        }
        if !ok {
            return Err(AuthError::BadCredential);
        }
        if node.is_revoked() {
            return Err(AuthError::Revoked);
        }
        Ok(node)
    }

    /// Revokes a node: its credential is refused from now on. `Ok(false)` if there is no such
    /// node that is not already revoked.
    pub fn revoke<'a>(&self, node: impl Into<NodeRef<'a>>, now: SystemTime) -> Result<bool> {
        let now = millis(now)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let found: Option<(i64, String)> = match node.into() {
            NodeRef::Id(id) => tx.query_row(
                "SELECT id, state FROM nodes WHERE id = ?1 AND revoked_at IS NULL",
                [id.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ),
            NodeRef::Name(name) => tx.query_row(
                "SELECT id, state FROM nodes WHERE lower(name) = lower(?1) AND revoked_at IS NULL",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ),
        }
        .optional()?;
        let Some((id, state)) = found else {
            return Ok(false);
        };
        tx.execute(
            "UPDATE nodes SET revoked_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        tx.execute(
            "INSERT INTO events (node_id, at, kind, state, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, now, EventKind::Revoked.as_str(), state, "revoked"],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Every node, revoked ones included, by id; joins not yet confirmed are left out.
    pub fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE pending = 0 ORDER BY id"
        ))?;
        let raw = stmt
            .query_map([], RawNode::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter().map(RawNode::into_record).collect()
    }

    /// One node by id, revoked or not.
    pub fn node(&self, node_id: NodeId) -> Result<Option<NodeRecord>> {
        node_by_id(&self.conn(), node_id)
    }

    /// Records a node's report: `last_seen` becomes `now`, and if the state or the reason
    /// differs from the stored one, they are updated and an event is appended. Returns whether
    /// an event was appended. A revoked node's reports are refused.
    pub fn record_state(
        &self,
        node_id: NodeId,
        state: NodeState,
        reason: &str,
        now: SystemTime,
    ) -> Result<bool> {
        let now = millis(now)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let current: Option<(String, String, Option<i64>)> = tx
            .query_row(
                "SELECT state, reason, revoked_at FROM nodes WHERE id = ?1",
                [node_id.0],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (old_state, old_reason, revoked_at) = current.ok_or(Error::UnknownNode(node_id))?;
        if revoked_at.is_some() {
            return Err(Error::Revoked(node_id));
        }
        let changed = old_state != state.as_str() || old_reason != reason;
        tx.execute(
            "UPDATE nodes SET last_seen = max(last_seen, ?2), state = ?3, reason = ?4
             WHERE id = ?1",
            params![node_id.0, now, state.as_str(), reason],
        )?;
        if changed {
            tx.execute(
                "INSERT INTO events (node_id, at, kind, state, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    node_id.0,
                    now,
                    EventKind::State.as_str(),
                    state.as_str(),
                    reason
                ],
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Up to `limit` events with an id above `since_id`, oldest first (`since_id` 0: from the
    /// start).
    /// The id of the newest event (0 when there is none).
    pub fn last_event_id(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)
    }

    pub fn events(&self, since_id: i64, limit: u32) -> Result<Vec<Event>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, node_id, at, kind, state, reason FROM events
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let raw = stmt
            .query_map(params![since_id, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter()
            .map(|(id, node_id, at, kind, state, reason)| {
                Ok(Event {
                    id,
                    node_id: NodeId(node_id),
                    at: from_millis(at),
                    kind: EventKind::parse(&kind)
                        .ok_or_else(|| Error::Corrupt(format!("event kind {kind:?}")))?,
                    state: parse_state(&state)?,
                    reason,
                })
            })
            .collect()
    }

    /// Stores a node's contribution records, each once: a record whose `seq` this node already
    /// sent is skipped (the first one received is kept), in whatever order and with whatever
    /// gaps they arrive. Returns how many were newly stored. The batch is checked whole first: an
    /// invalid record (an `hour_start` not on a whole hour, CPU-seconds negative or not finite)
    /// stores nothing. Records of a revoked node are still accepted: they were earned before.
    pub fn add_contributions(
        &self,
        node_id: NodeId,
        records: &[ContributionRecord],
    ) -> Result<u64> {
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            let seq = i64::try_from(r.seq)
                .map_err(|_| invalid("contribution record", "seq is above 2^63 - 1"))?;
            let hour = millis(r.hour_start)?;
            if hour % HOUR_MS != 0 {
                return Err(invalid(
                    "contribution record",
                    format!("record {} does not start on a whole hour", r.seq),
                ));
            }
            if !r.cpu_seconds.is_finite() || r.cpu_seconds < 0.0 {
                return Err(invalid(
                    "contribution record",
                    format!("record {} has {} CPU-seconds", r.seq, r.cpu_seconds),
                ));
            }
            rows.push((seq, hour, r.cpu_seconds));
        }
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        require_node(&tx, node_id)?;
        let mut added = 0u64;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO contributions (node_id, seq, hour_start, cpu_seconds)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (node_id, seq) DO NOTHING",
            )?;
            for (seq, hour, cpu) in rows {
                added += stmt.execute(params![node_id.0, seq, hour, cpu])? as u64;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// CPU-seconds per node and hour for the hours that start in `[from, to)`, ordered by hour
    /// then node.
    pub fn contributions_by_node_hour(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<HourlyContribution>> {
        let (from, to) = (millis(from)?, millis(to)?);
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT node_id, hour_start, sum(cpu_seconds) FROM contributions
             WHERE hour_start >= ?1 AND hour_start < ?2
             GROUP BY hour_start, node_id ORDER BY hour_start, node_id",
        )?;
        let rows = stmt
            .query_map(params![from, to], |r| {
                Ok(HourlyContribution {
                    node_id: NodeId(r.get(0)?),
                    hour_start: from_millis(r.get(1)?),
                    cpu_seconds: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// All CPU-seconds a node has contributed.
    pub fn total_cpu_seconds(&self, node_id: NodeId) -> Result<f64> {
        let conn = self.conn();
        require_node(&conn, node_id)?;
        Ok(conn.query_row(
            "SELECT coalesce(sum(cpu_seconds), 0.0) FROM contributions WHERE node_id = ?1",
            [node_id.0],
            |r| r.get(0),
        )?)
    }
}

/// Brings `conn` to `migrations.len()`, one transaction per step. `shown` names the database in
/// errors.
fn migrate(conn: &mut Connection, migrations: &[&str], shown: &str) -> Result<()> {
    let supported = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > supported {
        return Err(Error::SchemaTooNew {
            path: shown.to_string(),
            found,
            supported,
        });
    }
    for (version, sql) in (found..supported).zip(&migrations[found as usize..]) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        // Another process may have migrated between the read above and this lock.
        let now: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now > version {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// `id, salt, hash, uses_left, expires_at, withdrawn` of an invite.
type InviteRow = (i64, Vec<u8>, Vec<u8>, i64, i64, bool);

const NODE_COLUMNS: &str = "id, name, hostname, os, arch, cpus, enrolled_at, last_seen, state, \
                            reason, revoked_at, pending";

struct RawNode {
    id: i64,
    name: String,
    hostname: String,
    os: String,
    arch: String,
    cpus: u32,
    enrolled_at: i64,
    last_seen: i64,
    state: String,
    reason: String,
    revoked_at: Option<i64>,
    pending: bool,
}

impl RawNode {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawNode> {
        Ok(RawNode {
            id: r.get(0)?,
            name: r.get(1)?,
            hostname: r.get(2)?,
            os: r.get(3)?,
            arch: r.get(4)?,
            cpus: r.get(5)?,
            enrolled_at: r.get(6)?,
            last_seen: r.get(7)?,
            state: r.get(8)?,
            reason: r.get(9)?,
            revoked_at: r.get(10)?,
            pending: r.get(11)?,
        })
    }

    fn into_record(self) -> Result<NodeRecord> {
        Ok(NodeRecord {
            id: NodeId(self.id),
            state: parse_state(&self.state)?,
            name: self.name,
            hostname: self.hostname,
            os: self.os,
            arch: self.arch,
            cpus: self.cpus,
            enrolled_at: from_millis(self.enrolled_at),
            last_seen: from_millis(self.last_seen),
            reason: self.reason,
            revoked_at: self.revoked_at.map(from_millis),
            pending: self.pending,
        })
    }
}

fn node_by_id(conn: &Connection, id: NodeId) -> Result<Option<NodeRecord>> {
    conn.query_row(
        &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
        [id.0],
        RawNode::from_row,
    )
    .optional()?
    .map(RawNode::into_record)
    .transpose()
}

fn require_node(conn: &Connection, id: NodeId) -> Result<()> {
    let exists = conn
        .prepare("SELECT 1 FROM nodes WHERE id = ?1")?
        .exists([id.0])?;
    if exists {
        Ok(())
    } else {
        Err(Error::UnknownNode(id))
    }
}

fn parse_state(s: &str) -> Result<NodeState> {
    NodeState::parse(s).ok_or_else(|| Error::Corrupt(format!("node state {s:?}")))
}

fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

fn new_hash(domain: &[u8], secret: &Secret) -> ([u8; 16], [u8; 32]) {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    (salt, hash(domain, &salt, secret))
}

fn hash(domain: &[u8], salt: &[u8], secret: &Secret) -> [u8; 32] {
    Sha256::new()
        .chain_update(domain)
        .chain_update(salt)
        .chain_update(secret.expose())
        .finalize()
        .into()
}

/// Constant-time in the secret and the stored hash.
fn hash_matches(domain: &[u8], salt: &[u8], stored: &[u8], secret: &Secret) -> bool {
    hash(domain, salt, secret)[..].ct_eq(stored).into()
}

fn check_secret(secret: &Secret, what: &'static str) -> Result<()> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(invalid(
            what,
            format!("it must be at least {MIN_SECRET_BYTES} bytes of random data"),
        ));
    }
    Ok(())
}

fn check_text(what: &'static str, value: &str, may_be_empty: bool) -> Result<()> {
    let reason = if value.is_empty() && !may_be_empty {
        Some("it is empty")
    } else if value.chars().count() > MAX_TEXT_CHARS {
        Some("it is longer than 255 characters")
    } else if value.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if value.trim() != value {
        Some("it starts or ends with white space")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(invalid(what, format!("{:?}: {reason}", value))),
        None => Ok(()),
    }
}

/// Checks a node name: what [`check_text`] checks, not all digits (it would read as a node id
/// in every command that takes either) and nothing that shows ambiguously on a screen.
pub fn check_node_name(name: &str) -> Result<()> {
    check_text("node name", name, false)?;
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            "node name",
            format!("{name:?} is all digits and would read as a node id; add a letter"),
        ));
    }
    if let Some((c, what)) = flotilla_secrets::ambiguous_character(name) {
        return Err(invalid(
            "node name",
            format!(
                "{:?} contains {what} (U+{:04X}); use letters, digits and ASCII punctuation",
                name.escape_debug().to_string(),
                c as u32
            ),
        ));
    }
    Ok(())
}

fn add_event(
    tx: &Transaction<'_>,
    node: i64,
    at: i64,
    kind: EventKind,
    state: &str,
    reason: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (node_id, at, kind, state, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![node, at, kind.as_str(), state, reason],
    )?;
    Ok(())
}

/// Whether `credential` is the current credential of `node`, a node that is not revoked.
fn proven(tx: &Transaction<'_>, node: NodeId, credential: &Secret) -> Result<bool> {
    let active = tx
        .prepare("SELECT 1 FROM nodes WHERE id = ?1 AND revoked_at IS NULL")?
        .exists([node.0])?;
    if !active {
        return Ok(false);
    }
    let mut stmt = tx.prepare("SELECT salt, hash FROM credentials WHERE node_id = ?1")?;
    let rows: Vec<(Vec<u8>, Vec<u8>)> = stmt
        .query_map([node.0], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut ok = false;
    for (salt, hash) in &rows {
        ok |= hash_matches(CREDENTIAL_DOMAIN, salt, hash, credential);
    }
    Ok(ok)
}

/// The first of `wanted-2`, `wanted-3`, ... that no node that is not revoked holds.
fn free_name(tx: &Transaction<'_>, wanted: &str) -> Result<String> {
    let mut stmt =
        tx.prepare("SELECT 1 FROM nodes WHERE lower(name) = lower(?1) AND revoked_at IS NULL")?;
    // Cut to fit the longest name, on a character boundary.
    let base: String = wanted.chars().take(MAX_TEXT_CHARS - 8).collect();
    for n in 2u32.. {
        let candidate = format!("{base}-{n}");
        if !stmt.exists([&candidate])? {
            return Ok(candidate);
        }
    }
    unreachable!("some suffix is free")
}

/// Deletes pending node `id`, gives its invite's use back and restores the node it replaced
/// when that one's name is still free. `false` if `id` is not a pending node.
fn abandon(tx: &Transaction<'_>, id: i64, why: &str) -> Result<bool> {
    let row: Option<(Option<i64>, Option<i64>)> = tx
        .query_row(
            "SELECT invite_id, replaces FROM nodes WHERE id = ?1 AND pending = 1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((invite, replaced)) = row else {
        return Ok(false);
    };
    tx.execute("DELETE FROM nodes WHERE id = ?1", [id])?;
    if let Some(invite) = invite {
        tx.execute(
            "UPDATE invites SET uses_left = uses_left + 1 WHERE id = ?1",
            [invite],
        )?;
    }
    if let Some(old) = replaced {
        let restored = tx.execute(
            "UPDATE nodes SET revoked_at = NULL WHERE id = ?1 AND NOT EXISTS (
                 SELECT 1 FROM nodes o WHERE lower(o.name) = lower(nodes.name)
                 AND o.revoked_at IS NULL AND o.id != nodes.id)",
            [old],
        )?;
        if restored > 0 {
            let state: String =
                tx.query_row("SELECT state FROM nodes WHERE id = ?1", [old], |r| r.get(0))?;
            add_event(
                tx,
                old,
                millis(SystemTime::now())?,
                EventKind::Notice,
                &state,
                &format!("restored: the join that replaced it was undone ({why})"),
            )?;
        }
    }
    tracing::info!(node = id, "join undone: {why}");
    Ok(true)
}

fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        reason: reason.into(),
    }
}

fn millis(t: SystemTime) -> Result<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| invalid("time", "it is before 1970 or too far ahead"))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Creates the database file `0600` on unix if it does not exist, and takes away any access of
/// others from an existing one. SQLite gives its `-wal` and `-shm` files the same permissions.
fn create_private_file(path: &Path) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = file
            .metadata()
            .map_err(io(format!("reading {}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io(format!("restricting {}", path.display())))?;
        }
    }
    drop(file);
    Ok(())
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// The invite `secret` opens, if it can be redeemed at `now` (Unix ms).
fn usable_invite(
    tx: &rusqlite::Transaction<'_>,
    secret: &Secret,
    now: i64,
) -> Result<InviteId, RedeemError> {
    let rows: Vec<InviteRow> = {
        let mut stmt = tx.prepare(
            "SELECT id, salt, hash, uses_left, expires_at, revoked_at IS NOT NULL FROM invites",
        )?;
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    let mut found = None;
    for (id, salt, hash, uses_left, expires_at, withdrawn) in rows {
        if hash_matches(INVITE_DOMAIN, &salt, &hash, secret) {
            found = Some((id, uses_left, expires_at, withdrawn));
        }
    }
    let (id, uses_left, expires_at, withdrawn) = found.ok_or(RedeemError::Unknown)?;
    if withdrawn {
        return Err(RedeemError::Withdrawn);
    }
    if now >= expires_at {
        return Err(RedeemError::Expired);
    }
    if uses_left <= 0 {
        return Err(RedeemError::UsedUp);
    }
    Ok(InviteId(id))
}
