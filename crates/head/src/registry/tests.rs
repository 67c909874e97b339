use std::sync::Arc;

use super::*;

const CRED_A: &str = "cred-A-4f1c9e2b7d83a6051e9c";
const CRED_B: &str = "cred-B-91d0ab3f62c4e8177b2a";
const INVITE: &str = "invite-7c2e91f04ab35d68e1f0";

/// A fixed instant plus `secs`.
fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// The start of hour `n` of the test period.
fn hour(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(3600 * (472_300 + n))
}

fn secret(s: &str) -> Secret {
    Secret::from(s)
}

fn machine<'a>(name: &'a str, hostname: &'a str, cpus: u32) -> NewNode<'a> {
    NewNode {
        name,
        hostname,
        os: "linux",
        arch: "x86_64",
        cpus,
    }
}

/// Enrolls the head's own worker as `name`.
fn enroll(reg: &Registry, name: &str, cred: &str) -> NodeId {
    let hostname = format!("{name}.lan");
    reg.enroll(
        &machine(name, &hostname, 8),
        &secret(cred),
        Admission::Local,
        t(0),
    )
    .unwrap()
    .id
}

/// A machine joins as `name` with the invite `INVITE`.
fn join(
    reg: &Registry,
    name: &str,
    hostname: &str,
    cred: &str,
    previous: Option<(NodeId, &Secret)>,
    pending: bool,
    at: SystemTime,
) -> Result<Enrolled, RedeemError> {
    let invite = secret(INVITE);
    reg.enroll(
        &machine(name, hostname, 4),
        &secret(cred),
        Admission::Invite {
            secret: &invite,
            previous,
            pending,
        },
        at,
    )
}

fn uses_left(reg: &Registry) -> u32 {
    reg.list_invites().unwrap()[0].uses_left
}

fn rec(seq: u64, hour_n: u64, cpu_seconds: f64) -> ContributionRecord {
    ContributionRecord {
        seq,
        hour_start: hour(hour_n),
        cpu_seconds,
    }
}

fn user_version(conn: &Connection) -> u32 {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn table_names(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of every file in `dir` (the database and its `-wal` and `-shm` files).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        out.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    out
}

#[test]
fn a_fresh_database_gets_every_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/registry.db");
    let reg = Registry::open(&path).unwrap();
    assert_eq!(reg.path(), Some(path.as_path()));
    assert_eq!(SCHEMA_VERSION, 3);
    let conn = reg.conn();
    assert_eq!(user_version(&conn), SCHEMA_VERSION);
    let tables = table_names(&conn);
    for t in ["contributions", "credentials", "events", "invites", "nodes"] {
        assert!(tables.iter().any(|n| n == t), "{t} missing from {tables:?}");
    }
    drop(conn);
    drop(reg);
    // Opening again at the current version changes nothing.
    let reg = Registry::open(&path).unwrap();
    assert_eq!(user_version(&reg.conn()), SCHEMA_VERSION);
}

#[test]
fn an_older_database_is_upgraded_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    {
        // A database as the first release left it: version 1, one node with its credential.
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &MIGRATIONS[..1], "old").unwrap();
        assert_eq!(user_version(&conn), 1);
        assert!(!table_names(&conn).iter().any(|n| n == "contributions"));
        conn.execute(
            "INSERT INTO nodes (name, hostname, os, arch, cpus, enrolled_at, last_seen, state)
             VALUES ('old-box', 'old-box.lan', 'linux', 'aarch64', 4, 1000, 2000, 'online')",
            [],
        )
        .unwrap();
        let (salt, hash) = new_hash(CREDENTIAL_DOMAIN, &secret(CRED_A));
        conn.execute(
            "INSERT INTO credentials (node_id, salt, hash, created_at) VALUES (1, ?1, ?2, 1000)",
            params![salt, hash],
        )
        .unwrap();
    }
    let reg = Registry::open(&path).unwrap();
    assert_eq!(user_version(&reg.conn()), SCHEMA_VERSION);
    let nodes = reg.list_nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "old-box");
    assert_eq!(nodes[0].state, NodeState::Online);
    assert_eq!(nodes[0].last_seen, UNIX_EPOCH + Duration::from_secs(2));
    let node = reg.authenticate(NodeId(1), &secret(CRED_A)).unwrap();
    assert_eq!(node.arch, "aarch64");
    // The table the upgrade added works.
    assert_eq!(
        reg.add_contributions(node.id, &[rec(1, 0, 30.0)]).unwrap(),
        1
    );
    assert_eq!(reg.total_cpu_seconds(node.id).unwrap(), 30.0);
}

#[test]
fn a_database_from_a_newer_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    drop(Registry::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = Registry::open(&path).unwrap_err();
    match &err {
        Error::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("newer"), "{message}");
    assert!(message.contains("registry.db"), "{message}");
    assert_eq!(
        user_version(&Connection::open(&path).unwrap()),
        SCHEMA_VERSION + 1
    );
}

#[test]
fn a_failed_migration_leaves_the_previous_version() {
    let mut conn = Connection::open_in_memory().unwrap();
    let broken = [
        MIGRATIONS[0],
        "CREATE TABLE half_done (a INTEGER); NOT VALID SQL",
    ];
    assert!(matches!(
        migrate(&mut conn, &broken, "test"),
        Err(Error::Sqlite(_))
    ));
    assert_eq!(user_version(&conn), 1);
    let tables = table_names(&conn);
    assert!(tables.iter().any(|n| n == "nodes"), "{tables:?}");
    assert!(!tables.iter().any(|n| n == "half_done"), "{tables:?}");
    migrate(&mut conn, MIGRATIONS, "test").unwrap();
    assert_eq!(user_version(&conn), SCHEMA_VERSION);
}

#[test]
fn the_page_cache_stays_bounded_while_events_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path().join("registry.db")).unwrap();
    let node = enroll(&reg, "w1", CRED_A);
    let cache_used = |reg: &Registry| {
        let conn = reg.conn();
        let (mut now, mut high) = (0, 0);
        // SAFETY: the handle is the open connection's, held by the guard for the call.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut now,
                &mut high,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        i64::from(now)
    };
    // About 4 MB of events: twice SQLite's default cache.
    let reason = "x".repeat(200);
    for i in 0..20_000u64 {
        let state = if i % 2 == 0 {
            NodeState::Paused
        } else {
            NodeState::Online
        };
        assert!(
            reg.record_state(node, state, &format!("{reason} {i}"), t(i))
                .unwrap()
        );
    }
    let used = cache_used(&reg);
    assert!(
        used <= (CACHE_KIB + 64) * 1024,
        "the page cache holds {used} bytes, over {CACHE_KIB} KiB"
    );
    // What the head reads still comes back whole.
    assert_eq!(reg.events(0, 100_000).unwrap().len(), 20_001);
}

#[test]
fn a_file_database_runs_in_wal_mode_with_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let reg = Registry::open(&path).unwrap();
    {
        let conn = reg.conn();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = conn
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 5000);
        // Foreign keys are enforced: no credential for a node that does not exist.
        let (salt, hash) = new_hash(CREDENTIAL_DOMAIN, &secret(CRED_A));
        assert!(
            conn.execute(
                "INSERT INTO credentials (node_id, salt, hash, created_at) VALUES (42, ?1, ?2, 0)",
                params![salt, hash],
            )
            .is_err()
        );
    }
    enroll(&reg, "box", CRED_A);
    assert!(dir.path().join("registry.db-wal").exists());
}

#[cfg(unix)]
#[test]
fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let reg = Registry::open(&path).unwrap();
    enroll(&reg, "box", CRED_A);
    for name in ["registry.db", "registry.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
    drop(reg);
    // A file whose permissions were loosened is made private again.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(Registry::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn only_hashes_of_secrets_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let reg = Registry::open(&path).unwrap();
    reg.create_invite(&secret(INVITE), 3, t(3600)).unwrap();
    reg.redeem_invite(&secret(INVITE), t(1)).unwrap();
    let id = enroll(&reg, "hash-scan-node", CRED_A);
    reg.authenticate(id, &secret(CRED_A)).unwrap();
    reg.record_state(id, NodeState::Online, "idle", t(2))
        .unwrap();

    // The stored hash is SHA-256 over the domain, the row's salt and the credential.
    let (salt, stored): (Vec<u8>, Vec<u8>) = reg
        .conn()
        .query_row("SELECT salt, hash FROM credentials", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert_eq!(
        stored,
        hash(CREDENTIAL_DOMAIN, &salt, &secret(CRED_A)).to_vec()
    );

    let scan = |when: &str| {
        let bytes = all_bytes(dir.path());
        // The scan does see what is stored in plain text...
        assert!(
            contains(&bytes, b"hash-scan-node"),
            "{when}: node name not found"
        );
        // ...and neither secret is among it.
        for s in [INVITE, CRED_A] {
            assert!(!contains(&bytes, s.as_bytes()), "{when}: {s} found");
        }
    };
    scan("open");
    drop(reg);
    scan("closed");
}

#[test]
fn an_invite_is_refused_once_its_uses_run_out() {
    let reg = Registry::open_in_memory().unwrap();
    let id = reg.create_invite(&secret(INVITE), 2, t(3600)).unwrap();
    assert_eq!(reg.redeem_invite(&secret(INVITE), t(0)).unwrap(), id);
    assert_eq!(reg.redeem_invite(&secret(INVITE), t(1)).unwrap(), id);
    assert!(matches!(
        reg.redeem_invite(&secret(INVITE), t(2)),
        Err(RedeemError::UsedUp)
    ));
    let left: i64 = reg
        .conn()
        .query_row("SELECT uses_left FROM invites WHERE id = ?1", [id.0], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn checking_an_invite_uses_none_of_it() {
    let reg = Registry::open_in_memory().unwrap();
    let id = reg.create_invite(&secret(INVITE), 1, t(100)).unwrap();
    for _ in 0..3 {
        assert_eq!(reg.check_invite(&secret(INVITE), t(0)).unwrap(), id);
    }
    assert!(matches!(
        reg.check_invite(&secret("not-the-code"), t(0)),
        Err(RedeemError::Unknown)
    ));
    assert!(matches!(
        reg.check_invite(&secret(INVITE), t(100)),
        Err(RedeemError::Expired)
    ));
    // Its one use is still there.
    assert_eq!(reg.redeem_invite(&secret(INVITE), t(1)).unwrap(), id);
    assert!(matches!(
        reg.check_invite(&secret(INVITE), t(2)),
        Err(RedeemError::UsedUp)
    ));
}

#[test]
fn an_invite_is_refused_from_its_expiry_on() {
    let reg = Registry::open_in_memory().unwrap();
    let id = reg.create_invite(&secret(INVITE), 5, t(100)).unwrap();
    assert!(matches!(
        reg.redeem_invite(&secret(INVITE), t(100)),
        Err(RedeemError::Expired)
    ));
    assert!(matches!(
        reg.redeem_invite(&secret(INVITE), t(5000)),
        Err(RedeemError::Expired)
    ));
    assert_eq!(reg.redeem_invite(&secret(INVITE), t(99)).unwrap(), id);
}

#[test]
fn an_unknown_invite_is_refused() {
    let reg = Registry::open_in_memory().unwrap();
    assert!(matches!(
        reg.redeem_invite(&secret(INVITE), t(0)),
        Err(RedeemError::Unknown)
    ));
    let other = reg.create_invite(&secret(CRED_B), 5, t(100)).unwrap();
    assert!(matches!(
        reg.redeem_invite(&secret(INVITE), t(0)),
        Err(RedeemError::Unknown)
    ));
    // A near miss is as unknown as anything else.
    let mut close = INVITE.as_bytes().to_vec();
    *close.last_mut().unwrap() ^= 1;
    assert!(matches!(
        reg.redeem_invite(&Secret::from(close), t(0)),
        Err(RedeemError::Unknown)
    ));
    assert_eq!(reg.redeem_invite(&secret(CRED_B), t(0)).unwrap(), other);
}

#[test]
fn invites_and_enrollments_validate_their_input() {
    let reg = Registry::open_in_memory().unwrap();
    let short = secret("too-short");
    assert!(matches!(
        reg.create_invite(&short, 1, t(10)),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        reg.create_invite(&secret(INVITE), 0, t(10)),
        Err(Error::Invalid { .. })
    ));
    let enroll_as = |name: &str, cred: &Secret| {
        reg.enroll(&machine(name, "h", 4), cred, Admission::Local, t(0))
    };
    assert!(matches!(
        enroll_as("box", &short),
        Err(RedeemError::Registry(Error::Invalid { .. }))
    ));
    for bad in [
        "",
        "a\nb",
        " box",
        &"x".repeat(256),
        "7",
        "0042",
        "vm\u{200b}",
        "\u{202e}mv",
        "two  spaces",
    ] {
        assert!(
            matches!(
                enroll_as(bad, &secret(CRED_A)),
                Err(RedeemError::Registry(Error::Invalid { .. }))
            ),
            "{bad:?}"
        );
    }
    assert!(reg.list_nodes().unwrap().is_empty());
    enroll_as("box", &secret(CRED_A)).unwrap();
}

#[test]
fn concurrent_redemptions_never_exceed_the_uses() {
    let reg = Arc::new(Registry::open_in_memory().unwrap());
    reg.create_invite(&secret(INVITE), 5, t(3600)).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let reg = Arc::clone(&reg);
            std::thread::spawn(move || {
                (0..3)
                    .map(|_| match reg.redeem_invite(&secret(INVITE), t(0)) {
                        Ok(_) => 1,
                        Err(RedeemError::UsedUp) => 0,
                        Err(e) => panic!("{e:?}"),
                    })
                    .sum::<u32>()
            })
        })
        .collect();
    let total: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 5);
}

#[test]
fn authentication_checks_the_credential() {
    let reg = Registry::open_in_memory().unwrap();
    let id = enroll(&reg, "box", CRED_A);
    let node = reg.authenticate(id, &secret(CRED_A)).unwrap();
    assert_eq!(node.id, id);
    assert_eq!(node.name, "box");
    assert_eq!(node.hostname, "box.lan");
    assert_eq!(node.cpus, 8);
    assert_eq!(node.state, NodeState::Enrolled);
    assert_eq!(node.enrolled_at, t(0));
    assert!(!node.is_revoked());
    assert!(matches!(
        reg.authenticate(id, &secret(CRED_B)),
        Err(AuthError::BadCredential)
    ));
    assert!(matches!(
        reg.authenticate(NodeId(id.0 + 100), &secret(CRED_A)),
        Err(AuthError::UnknownNode)
    ));
}

#[test]
fn a_revoked_node_is_refused() {
    let reg = Registry::open_in_memory().unwrap();
    let a = enroll(&reg, "alpha", CRED_A);
    let b = enroll(&reg, "beta", CRED_B);

    assert!(reg.revoke("alpha", t(50)).unwrap());
    assert!(matches!(
        reg.authenticate(a, &secret(CRED_A)),
        Err(AuthError::Revoked)
    ));
    // Without the credential, a revoked node looks like any wrong credential.
    assert!(matches!(
        reg.authenticate(a, &secret(CRED_B)),
        Err(AuthError::BadCredential)
    ));
    assert!(matches!(
        reg.record_state(a, NodeState::Online, "", t(60)),
        Err(Error::Revoked(id)) if id == a
    ));
    // Revoking again, or a node that does not exist, changes nothing.
    assert!(!reg.revoke("alpha", t(70)).unwrap());
    assert!(!reg.revoke(a, t(70)).unwrap());
    assert!(!reg.revoke("gamma", t(70)).unwrap());

    reg.authenticate(b, &secret(CRED_B)).unwrap();
    assert!(reg.revoke(b, t(80)).unwrap());
    assert!(matches!(
        reg.authenticate(b, &secret(CRED_B)),
        Err(AuthError::Revoked)
    ));

    let nodes = reg.list_nodes().unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| (n.id, n.revoked_at))
            .collect::<Vec<_>>(),
        vec![(a, Some(t(50))), (b, Some(t(80)))]
    );
    let revocations: Vec<_> = reg
        .events(0, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Revoked)
        .map(|e| (e.node_id, e.at))
        .collect();
    assert_eq!(revocations, vec![(a, t(50)), (b, t(80))]);
}

#[test]
fn the_heads_own_worker_replaces_its_earlier_self() {
    let reg = Registry::open_in_memory().unwrap();
    let old = enroll(&reg, "box", CRED_A);
    reg.add_contributions(old, &[rec(1, 0, 100.0)]).unwrap();
    let new = reg
        .enroll(
            &machine("box", "box-reinstalled.lan", 16),
            &secret(CRED_B),
            Admission::Local,
            t(500),
        )
        .unwrap();
    assert_eq!(new.name, "box");
    assert_eq!(new.replaced, Some(old));
    let new = new.id;
    assert_ne!(new, old);

    assert!(matches!(
        reg.authenticate(old, &secret(CRED_A)),
        Err(AuthError::Revoked)
    ));
    assert!(matches!(
        reg.authenticate(new, &secret(CRED_A)),
        Err(AuthError::BadCredential)
    ));
    let node = reg.authenticate(new, &secret(CRED_B)).unwrap();
    assert_eq!(node.hostname, "box-reinstalled.lan");
    assert_eq!(node.cpus, 16);

    let nodes = reg.list_nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].id, old);
    assert_eq!(nodes[0].revoked_at, Some(t(500)));
    assert_eq!(nodes[1].id, new);
    assert_eq!(nodes[1].revoked_at, None);

    // The new agent numbers its records from the start again; they are its own, not duplicates.
    assert_eq!(reg.add_contributions(new, &[rec(1, 0, 7.0)]).unwrap(), 1);
    assert_eq!(reg.total_cpu_seconds(old).unwrap(), 100.0);
    assert_eq!(reg.total_cpu_seconds(new).unwrap(), 7.0);

    // A name means the node that is not revoked.
    assert!(reg.revoke("box", t(600)).unwrap());
    assert!(reg.node(new).unwrap().unwrap().is_revoked());

    let events = reg.events(0, 100).unwrap();
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.node_id, e.kind, e.reason.as_str()))
        .collect();
    let replaces = format!("replaces node {old}");
    assert_eq!(
        summary,
        vec![
            (old, EventKind::Enrolled, ""),
            (
                old,
                EventKind::Revoked,
                "replaced by a new enrollment of the same machine"
            ),
            (new, EventKind::Enrolled, replaces.as_str()),
            (new, EventKind::Revoked, "revoked"),
        ]
    );
}

#[test]
fn state_changes_are_logged_once_with_their_reasons() {
    let reg = Registry::open_in_memory().unwrap();
    let id = enroll(&reg, "box", CRED_A);
    let other = enroll(&reg, "other", CRED_B);

    assert!(
        reg.record_state(id, NodeState::Online, "idle", t(10))
            .unwrap()
    );
    assert!(
        !reg.record_state(id, NodeState::Online, "idle", t(20))
            .unwrap()
    );
    let node = reg.node(id).unwrap().unwrap();
    assert_eq!(node.last_seen, t(20));
    assert_eq!(node.state, NodeState::Online);
    assert!(
        reg.record_state(id, NodeState::Paused, "owner active", t(30))
            .unwrap()
    );
    // The same state for another reason is a change too.
    assert!(
        reg.record_state(id, NodeState::Paused, "on battery", t(40))
            .unwrap()
    );
    assert!(
        reg.record_state(other, NodeState::Offline, "", t(45))
            .unwrap()
    );
    // A report that arrives late does not move last_seen back.
    assert!(
        !reg.record_state(id, NodeState::Paused, "on battery", t(35))
            .unwrap()
    );

    let node = reg.node(id).unwrap().unwrap();
    assert_eq!(node.state, NodeState::Paused);
    assert_eq!(node.reason, "on battery");
    assert_eq!(node.last_seen, t(40));

    let events = reg.events(0, 100).unwrap();
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.node_id, e.kind, e.state, e.reason.as_str(), e.at))
        .collect();
    assert_eq!(
        summary,
        vec![
            (id, EventKind::Enrolled, NodeState::Enrolled, "", t(0)),
            (other, EventKind::Enrolled, NodeState::Enrolled, "", t(0)),
            (id, EventKind::State, NodeState::Online, "idle", t(10)),
            (
                id,
                EventKind::State,
                NodeState::Paused,
                "owner active",
                t(30)
            ),
            (id, EventKind::State, NodeState::Paused, "on battery", t(40)),
            (other, EventKind::State, NodeState::Offline, "", t(45)),
        ]
    );
    // Paging: ids grow, and `since_id` continues where the last page ended.
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let first = reg.events(0, 2).unwrap();
    assert_eq!(first, events[..2]);
    let rest = reg.events(first[1].id, 100).unwrap();
    assert_eq!(rest, events[2..]);
    assert!(reg.events(events[5].id, 100).unwrap().is_empty());

    assert!(matches!(
        reg.record_state(NodeId(other.0 + 100), NodeState::Online, "", t(50)),
        Err(Error::UnknownNode(_))
    ));
}

#[test]
fn a_contribution_record_delivered_twice_is_counted_once() {
    let reg = Registry::open_in_memory().unwrap();
    let id = enroll(&reg, "box", CRED_A);

    // Seq 3 and 4 are missing (still in the agent's outbox).
    let first = [rec(1, 0, 10.0), rec(2, 0, 20.0), rec(5, 1, 40.0)];
    assert_eq!(reg.add_contributions(id, &first).unwrap(), 3);
    // After a reconnect the outbox resends everything, out of order, with the missing ones.
    let resent = [
        rec(5, 1, 40.0),
        rec(3, 0, 1.0),
        rec(1, 0, 10.0),
        rec(4, 1, 2.0),
        rec(2, 0, 20.0),
    ];
    assert_eq!(reg.add_contributions(id, &resent).unwrap(), 2);
    assert_eq!(reg.add_contributions(id, &resent).unwrap(), 0);
    // Twice in one batch; and a resend whose value differs keeps the first one received.
    assert_eq!(
        reg.add_contributions(id, &[rec(6, 2, 4.0), rec(6, 2, 4.0), rec(1, 0, 999.0)])
            .unwrap(),
        1
    );
    assert_eq!(reg.add_contributions(id, &[]).unwrap(), 0);
    assert_eq!(reg.total_cpu_seconds(id).unwrap(), 77.0);

    let rows: i64 = reg
        .conn()
        .query_row("SELECT count(*) FROM contributions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 6);
}

#[test]
fn contributions_are_summed_per_node_and_hour() {
    let reg = Registry::open_in_memory().unwrap();
    let a = enroll(&reg, "alpha", CRED_A);
    let b = enroll(&reg, "beta", CRED_B);
    reg.add_contributions(a, &[rec(1, 0, 10.0), rec(2, 0, 5.0), rec(3, 2, 8.0)])
        .unwrap();
    reg.add_contributions(b, &[rec(1, 0, 3.0), rec(2, 1, 6.0), rec(3, 3, 1.0)])
        .unwrap();

    let hourly = |from, to| {
        reg.contributions_by_node_hour(hour(from), hour(to))
            .unwrap()
            .into_iter()
            .map(|h| (h.node_id, h.hour_start, h.cpu_seconds))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        hourly(0, 3),
        vec![
            (a, hour(0), 15.0),
            (b, hour(0), 3.0),
            (b, hour(1), 6.0),
            (a, hour(2), 8.0),
        ]
    );
    // `to` is exclusive, `from` inclusive.
    assert_eq!(hourly(1, 2), vec![(b, hour(1), 6.0)]);
    assert_eq!(hourly(3, 10), vec![(b, hour(3), 1.0)]);
    assert!(hourly(4, 10).is_empty());

    assert_eq!(reg.total_cpu_seconds(a).unwrap(), 23.0);
    assert_eq!(reg.total_cpu_seconds(b).unwrap(), 10.0);
    let nobody = NodeId(b.0 + 100);
    assert!(matches!(
        reg.total_cpu_seconds(nobody),
        Err(Error::UnknownNode(n)) if n == nobody
    ));
    assert!(matches!(
        reg.add_contributions(nobody, &[rec(1, 0, 1.0)]),
        Err(Error::UnknownNode(_))
    ));
}

#[test]
fn an_invalid_contribution_batch_stores_nothing() {
    let reg = Registry::open_in_memory().unwrap();
    let id = enroll(&reg, "box", CRED_A);
    let off_hour = ContributionRecord {
        seq: 2,
        hour_start: hour(0) + Duration::from_secs(60),
        cpu_seconds: 1.0,
    };
    for bad in [
        off_hour,
        rec(2, 0, -1.0),
        rec(2, 0, f64::NAN),
        rec(2, 0, f64::INFINITY),
        rec(u64::MAX, 0, 1.0),
    ] {
        assert!(
            matches!(
                reg.add_contributions(id, &[rec(1, 0, 5.0), bad]),
                Err(Error::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(reg.total_cpu_seconds(id).unwrap(), 0.0);
}

#[test]
fn the_registry_can_be_used_from_many_threads_and_connections() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let first = Arc::new(Registry::open(&path).unwrap());
    // A second connection to the same file, as another process would have.
    let second = Arc::new(Registry::open(&path).unwrap());
    shareable(&*first);

    const THREADS: u64 = 4;
    const RECORDS: u64 = 40;
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let reg = Arc::clone(if i % 2 == 0 { &first } else { &second });
            let other = Arc::clone(if i % 2 == 0 { &second } else { &first });
            std::thread::spawn(move || {
                let cred = format!("thread-credential-{i:04}-abcdef");
                let id = reg
                    .enroll(
                        &machine(&format!("node-{i}"), "h", 2),
                        &secret(&cred),
                        Admission::Local,
                        t(i),
                    )
                    .unwrap()
                    .id;
                let records: Vec<_> = (1..=RECORDS).map(|s| rec(s, s % 3, 1.0)).collect();
                let mut added = 0;
                for batch in records.chunks(7) {
                    added += reg.add_contributions(id, batch).unwrap();
                    // Delivered twice, the second time through the other connection.
                    added += other.add_contributions(id, batch).unwrap();
                    let state = if added % 2 == 0 {
                        NodeState::Online
                    } else {
                        NodeState::Paused
                    };
                    reg.record_state(id, state, "", t(100)).unwrap();
                }
                let mut reversed = records;
                reversed.reverse();
                added += other.add_contributions(id, &reversed).unwrap();
                other.authenticate(id, &secret(&cred)).unwrap();
                (id, added)
            })
        })
        .collect();
    for h in handles {
        let (id, added) = h.join().unwrap();
        assert_eq!(added, RECORDS);
        assert_eq!(first.total_cpu_seconds(id).unwrap(), RECORDS as f64);
    }
    let nodes = second.list_nodes().unwrap();
    assert_eq!(nodes.len(), THREADS as usize);
    let total: f64 = first
        .contributions_by_node_hour(hour(0), hour(3))
        .unwrap()
        .iter()
        .map(|h| h.cpu_seconds)
        .sum();
    assert_eq!(total, (THREADS * RECORDS) as f64);
}

#[test]
fn a_join_never_takes_a_name_another_machine_holds() {
    let reg = Registry::open_in_memory().unwrap();
    reg.create_invite(&secret(INVITE), 10, t(3600)).unwrap();
    let laptop = join(&reg, "mbp", "mbp.lan", CRED_A, None, false, t(1)).unwrap();
    assert_eq!((laptop.name.as_str(), laptop.name_held_by), ("mbp", None));
    let head = enroll(&reg, "studio", "cred-head-0a1b2c3d4e5f6a7b");

    // Another laptop of the same host name, a name in another case, and a stranger aiming at
    // the head's own worker: none evicts the holder; each gets a name of its own.
    let twin = join(&reg, "mbp", "mbp.lan", CRED_B, None, false, t(2)).unwrap();
    assert_eq!(twin.name, "mbp-2");
    assert_eq!(twin.name_held_by, Some(laptop.id));
    let cased = join(
        &reg,
        "MBP",
        "x",
        "cred-C-5e6f7a8b9c0d1e2f",
        None,
        false,
        t(3),
    )
    .unwrap();
    assert_eq!(cased.name, "MBP-3");
    let stranger = join(
        &reg,
        "studio",
        "x",
        "cred-D-7a8b9c0d1e2f3a4b",
        None,
        false,
        t(4),
    );
    assert_eq!(stranger.unwrap().name, "studio-2");
    // A proof that is not the holder's current credential is no proof.
    let wrong = join(
        &reg,
        "mbp",
        "x",
        "cred-E-9c0d1e2f3a4b5c6d",
        Some((laptop.id, &secret(CRED_B))),
        false,
        t(5),
    )
    .unwrap();
    assert_eq!((wrong.name.as_str(), wrong.replaced), ("mbp-4", None));

    for held in [laptop.id, head] {
        assert!(!reg.node(held).unwrap().unwrap().is_revoked());
    }
    assert!(reg.authenticate(laptop.id, &secret(CRED_A)).is_ok());
    let notices: Vec<_> = reg
        .events(0, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Notice)
        .map(|e| (e.node_id, e.reason))
        .collect();
    assert_eq!(notices.len(), 4, "{notices:?}");
    assert!(notices[0].1.contains("\"mbp-2\""), "{notices:?}");
    assert!(notices.iter().any(|(id, _)| *id == head));
}

#[test]
fn a_machine_that_proves_it_is_the_holder_takes_its_name_back() {
    let reg = Registry::open_in_memory().unwrap();
    reg.create_invite(&secret(INVITE), 2, t(3600)).unwrap();
    let first = join(&reg, "mbp", "mbp.lan", CRED_A, None, false, t(1)).unwrap();
    let again = join(
        &reg,
        "mbp",
        "mbp.lan",
        CRED_B,
        Some((first.id, &secret(CRED_A))),
        false,
        t(2),
    )
    .unwrap();
    assert_eq!(again.name, "mbp");
    assert_eq!(again.replaced, Some(first.id));
    assert!(matches!(
        reg.authenticate(first.id, &secret(CRED_A)),
        Err(AuthError::Revoked)
    ));
    assert!(reg.authenticate(again.id, &secret(CRED_B)).is_ok());
}

#[test]
fn a_join_is_all_or_nothing() {
    let reg = Registry::open_in_memory().unwrap();
    reg.create_invite(&secret(INVITE), 1, t(3600)).unwrap();
    // Refused after the code was found: the use is not spent.
    assert!(join(&reg, "bad\u{200b}", "h", CRED_A, None, false, t(1)).is_err());
    assert_eq!(uses_left(&reg), 1);

    // A pending join holds the use and the name, is not listed, and is undone when the agent
    // says it could not keep its credential.
    let pending = join(&reg, "mbp", "mbp.lan", CRED_A, None, true, t(2)).unwrap();
    assert_eq!(uses_left(&reg), 0);
    assert!(reg.list_nodes().unwrap().is_empty());
    assert!(matches!(
        reg.abandon_join(pending.id, &secret(CRED_B)),
        Err(AuthError::BadCredential)
    ));
    assert!(reg.abandon_join(pending.id, &secret(CRED_A)).unwrap());
    assert_eq!(uses_left(&reg), 1);
    assert!(reg.node(pending.id).unwrap().is_none());
    assert!(reg.list_invites().unwrap()[0].joined.is_empty());

    // Confirmed: final, listed, and the invite shows who joined with it.
    let kept = join(&reg, "mbp", "mbp.lan", CRED_B, None, true, t(3)).unwrap();
    assert_eq!(kept.name, "mbp");
    let (record, replaced) = reg.confirm_join(kept.id, &secret(CRED_B)).unwrap().unwrap();
    assert_eq!(replaced, None);
    assert_eq!(record.name, "mbp");
    assert!(
        reg.confirm_join(kept.id, &secret(CRED_B))
            .unwrap()
            .is_none()
    );
    assert!(!reg.abandon_join(kept.id, &secret(CRED_B)).unwrap());
    assert_eq!(reg.list_nodes().unwrap().len(), 1);
    assert_eq!(
        reg.list_invites().unwrap()[0].joined,
        vec!["mbp".to_string()]
    );
}

#[test]
fn an_undone_rejoin_restores_the_node_it_replaced_and_unconfirmed_joins_expire() {
    let reg = Registry::open_in_memory().unwrap();
    reg.create_invite(&secret(INVITE), 3, t(3600)).unwrap();
    let first = join(&reg, "mbp", "mbp.lan", CRED_A, None, false, t(1)).unwrap();
    let again = join(
        &reg,
        "mbp",
        "mbp.lan",
        CRED_B,
        Some((first.id, &secret(CRED_A))),
        true,
        t(2),
    )
    .unwrap();
    assert_eq!(again.replaced, Some(first.id));
    assert!(reg.abandon_join(again.id, &secret(CRED_B)).unwrap());
    assert!(reg.authenticate(first.id, &secret(CRED_A)).is_ok());
    assert_eq!(uses_left(&reg), 2);

    let silent = join(&reg, "air", "air.lan", CRED_B, None, true, t(10)).unwrap();
    assert_eq!(
        reg.expire_pending(t(69), Duration::from_secs(60)).unwrap(),
        0
    );
    assert_eq!(
        reg.expire_pending(t(70), Duration::from_secs(60)).unwrap(),
        1
    );
    assert!(reg.node(silent.id).unwrap().is_none());
    assert_eq!(uses_left(&reg), 2);
}

#[test]
fn invites_are_listed_and_withdrawn() {
    let reg = Registry::open_in_memory().unwrap();
    let first = reg.create_invite(&secret(INVITE), 3, t(3600)).unwrap();
    let other = "invite-other-0f1e2d3c4b5a6978";
    let second = reg.create_invite(&secret(other), 1, t(60)).unwrap();
    let listed = reg.list_invites().unwrap();
    assert_eq!(
        listed.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![second, first]
    );
    assert_eq!((listed[1].uses, listed[1].uses_left), (3, 3));
    assert_eq!(listed[1].status(t(10)), "usable");
    assert_eq!(listed[0].status(t(60)), "expired");

    assert!(reg.revoke_invite(first, t(20)).unwrap());
    assert!(!reg.revoke_invite(first, t(21)).unwrap());
    assert!(matches!(
        reg.revoke_invite(InviteId(99), t(22)),
        Err(Error::UnknownInvite(_))
    ));
    assert!(matches!(
        join(&reg, "mbp", "h", CRED_A, None, false, t(30)),
        Err(RedeemError::Withdrawn)
    ));
    assert!(matches!(
        reg.redeem_invite(&secret(INVITE), t(30)),
        Err(RedeemError::Withdrawn)
    ));
    let listed = reg.list_invites().unwrap();
    assert_eq!(listed[1].revoked_at, Some(t(20)));
    assert_eq!(listed[1].status(t(30)), "withdrawn");
    assert_eq!(listed[1].uses_left, 3);
}
