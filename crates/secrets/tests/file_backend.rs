#![cfg(unix)]

//! The fallback file backend, and `auto` with no reachable keyring.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use flotilla_secrets::{
    Backend, BackendKind, Error, FileEncryption, MAX_FILE_BYTES, MAX_SECRET_BYTES, RECOVER_COMMAND,
    Secret, SecretStore, StoreConfig,
};

/// The plain file (its protection is its permissions); the encrypted one has its own test.
fn file_config(state: &Path) -> StoreConfig {
    StoreConfig {
        backend: Backend::File,
        file_encryption: FileEncryption::Off,
        ..StoreConfig::new(state)
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_file_is_created_0600_and_round_trips() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let store = SecretStore::open(&file_config(&state)).unwrap();
    assert_eq!(store.backend(), BackendKind::File);
    let path = state.join(flotilla_secrets::FILE_NAME);
    assert_eq!(store.file_path(), Some(path.as_path()));
    assert_eq!(store.backend_name(), format!("file ({})", path.display()));
    assert_eq!(mode(&state), 0o700, "a new state dir is private");

    store.set("ray-token", &Secret::from("tok-1111")).unwrap();
    store
        .set("clé-API-交易所", &Secret::from("é".repeat(32 * 1024)))
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        store.get("ray-token").unwrap().expose_str(),
        Some("tok-1111")
    );
    assert_eq!(
        store.get("clé-API-交易所").unwrap().expose().len(),
        64 * 1024
    );
    let listed = store.list().unwrap();
    let names: Vec<_> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["clé-API-交易所", "ray-token"]);
    assert!(listed.iter().all(|i| i.backend == BackendKind::File));
    assert!(!format!("{listed:?}").contains("tok-1111"));

    assert!(store.remove("ray-token").unwrap());
    assert!(!store.remove("ray-token").unwrap());
    assert_eq!(mode(&path), 0o600, "a rewrite keeps the file private");

    // Atomic replacement leaves no temporary files behind.
    let mut entries: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["secrets.json", "secrets.json.lock", "secrets.json.prev"]
    );
    assert_eq!(mode(&state.join("secrets.json.prev")), 0o600);

    let reopened = SecretStore::open(&file_config(&state)).unwrap();
    assert_eq!(reopened.list().unwrap().len(), 1);
}

#[test]
fn a_world_readable_file_is_refused_with_the_chmod_hint() {
    let state = tempfile::tempdir().unwrap();
    let store = SecretStore::open(&file_config(state.path())).unwrap();
    store.set("k", &Secret::from("v")).unwrap();
    let path = state.path().join(flotilla_secrets::FILE_NAME);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let err = SecretStore::open(&file_config(state.path())).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::InsecurePermissions { mode: 0o644, .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("chmod 600 {}", path.display())),
        "{msg}"
    );
    assert!(msg.contains("644"), "{msg}");
    // A store opened before the change refuses too, and does not widen or rewrite the file.
    assert!(matches!(
        store.get("k"),
        Err(Error::InsecurePermissions { .. })
    ));
    assert!(matches!(
        store.set("k2", &Secret::from("v2")),
        Err(Error::InsecurePermissions { .. })
    ));
    assert_eq!(mode(&path), 0o644);

    // Group access alone is refused as well; the hint's fix works.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(SecretStore::open(&file_config(state.path())).is_err());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = SecretStore::open(&file_config(state.path())).unwrap();
    assert_eq!(store.get("k").unwrap().expose_str(), Some("v"));
}

#[test]
fn a_missing_secret_is_named_in_the_error() {
    let state = tempfile::tempdir().unwrap();
    let store = SecretStore::open(&file_config(state.path())).unwrap();
    let msg = store.get("absent-clé").unwrap_err().to_string();
    assert!(msg.contains("no secret named \"absent-clé\""), "{msg}");
    assert!(msg.contains("secrets.json"), "{msg}");
}

#[test]
fn invalid_names_are_refused_before_any_write() {
    let state = tempfile::tempdir().unwrap();
    let store = SecretStore::open(&file_config(state.path())).unwrap();
    for bad in ["", "line\nbreak", &"n".repeat(129)] {
        let err = store.set(bad, &Secret::from("v")).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        assert!(store.get(bad).is_err());
        assert!(store.remove(bad).is_err());
    }
    assert!(!state.path().join(flotilla_secrets::FILE_NAME).exists());
    let bad_service = StoreConfig {
        service: String::new(),
        ..file_config(state.path())
    };
    let err = SecretStore::open(&bad_service).unwrap_err().to_string();
    assert!(err.contains("service name"), "{err}");
}

#[test]
fn errors_and_debug_output_never_show_values() {
    let state = tempfile::tempdir().unwrap();
    let store = SecretStore::open(&file_config(state.path())).unwrap();
    let secret = Secret::from("s3cr3t-value-xyz");
    store.set("k", &secret).unwrap();
    let got = store.get("k").unwrap();
    let shown = format!(
        "{secret:?} {secret} {got:?} {got} {store:?} {:?} {}",
        store.list().unwrap(),
        store.get("other").unwrap_err()
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
}

#[test]
fn concurrent_writers_lose_nothing() {
    let state = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let dir = state.path();
            s.spawn(move || {
                let store = SecretStore::open(&file_config(dir)).unwrap();
                for i in 0..10 {
                    store
                        .set(&format!("t{t}-{i}"), &Secret::from(format!("v{t}-{i}")))
                        .unwrap();
                }
            });
        }
    });
    let store = SecretStore::open(&file_config(state.path())).unwrap();
    assert_eq!(store.list().unwrap().len(), 40);
    assert_eq!(store.get("t3-9").unwrap().expose_str(), Some("v3-9"));
}

const NO_BUS_CHILD: &str = "FLOTILLA_SECRETS_NO_BUS_CHILD";

/// `auto` in a process whose session bus address points at nothing: the keyring crate connects
/// once per process, so this runs in a child process of this test binary.
#[test]
fn auto_without_a_session_bus_needs_the_fallback_allowed() {
    if std::env::var_os(NO_BUS_CHILD).is_none() {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args([
                "--exact",
                "auto_without_a_session_bus_needs_the_fallback_allowed",
                "--nocapture",
            ])
            .env(NO_BUS_CHILD, "1")
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/nonexistent/flotilla-test/bus",
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the no-bus child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }

    let state = tempfile::tempdir().unwrap();
    let auto = StoreConfig::new(state.path());
    assert_eq!(auto.backend, Backend::Auto);
    assert!(!auto.allow_file_fallback);
    let err = SecretStore::open(&auto).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NoKeyring { .. }), "{msg}");
    eprintln!("no-keyring message: {msg}");
    assert!(msg.contains("no usable OS keyring"), "{msg}");
    assert!(msg.contains("D-Bus session bus"), "{msg}");
    assert!(msg.contains("allow_file_fallback"), "{msg}");
    assert!(!state.path().join(flotilla_secrets::FILE_NAME).exists());

    let keyring_only = StoreConfig {
        backend: Backend::Keyring,
        allow_file_fallback: true,
        ..StoreConfig::new(state.path())
    };
    assert!(matches!(
        SecretStore::open(&keyring_only),
        Err(Error::NoKeyring { .. })
    ));

    let fallback = StoreConfig {
        allow_file_fallback: true,
        ..StoreConfig::new(state.path())
    };
    let store = SecretStore::open(&fallback).unwrap();
    assert_eq!(store.backend(), BackendKind::File);
    store.set("k", &Secret::from("v")).unwrap();
    assert_eq!(store.get("k").unwrap().expose_str(), Some("v"));
    assert_eq!(store.list().unwrap()[0].backend, BackendKind::File);
    // (Encrypted with systemd-creds where that works, so the name depends on the machine.)
    assert_eq!(mode(store.file_path().unwrap()), 0o600);
}

#[cfg(target_os = "linux")]
const LOCKED_CHILD: &str = "FLOTILLA_SECRETS_LOCKED_CHILD";

/// `auto` on a session bus where the Secret Service is there but its keyring is locked
/// (gnome-keyring activated on demand, never unlocked: a headless login). Without gnome-keyring
/// installed there is no Secret Service at all; either way no keyring is usable.
#[cfg(target_os = "linux")]
#[test]
fn auto_with_a_locked_keyring_needs_the_fallback_allowed() {
    if std::env::var_os(LOCKED_CHILD).is_none() {
        let home = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("dbus-run-session")
            .arg("--")
            .arg(exe)
            .args([
                "--exact",
                "auto_with_a_locked_keyring_needs_the_fallback_allowed",
                "--nocapture",
            ])
            .env(LOCKED_CHILD, "1")
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .output()
            .expect("dbus-run-session is not installed: apt-get install dbus");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the locked-keyring child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }

    let state = tempfile::tempdir().unwrap();
    let err = SecretStore::open(&StoreConfig::new(state.path())).unwrap_err();
    let msg = err.to_string();
    eprintln!("locked-keyring message: {msg}");
    assert!(matches!(err, Error::NoKeyring { .. }), "{msg}");
    assert!(msg.contains("allow_file_fallback"), "{msg}");

    let fallback = StoreConfig {
        allow_file_fallback: true,
        ..StoreConfig::new(state.path())
    };
    let store = SecretStore::open(&fallback).unwrap();
    assert_eq!(store.backend(), BackendKind::File);
    store.set("k", &Secret::from("v")).unwrap();
    assert_eq!(store.get("k").unwrap().expose_str(), Some("v"));
}

/// Encryption at rest with the real `systemd-creds` (the test command installs systemd and runs
/// as root, which can use the host key; a TPM is not needed).
#[test]
fn with_systemd_creds_the_file_is_encrypted_and_a_plain_one_is_migrated() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    // A plain file from before.
    let plain = SecretStore::open(&file_config(&state)).unwrap();
    plain
        .set("old-key", &Secret::from("old-value-4242"))
        .unwrap();
    drop(plain);
    let sealed_config = StoreConfig {
        backend: Backend::File,
        file_encryption: FileEncryption::SystemdCreds,
        ..StoreConfig::new(&state)
    };
    let store = SecretStore::open(&sealed_config).unwrap();
    let path = state.join(flotilla_secrets::SEALED_FILE_NAME);
    assert_eq!(store.file_path(), Some(path.as_path()));
    assert!(
        store
            .backend_name()
            .contains("encrypted with systemd-creds")
    );
    assert!(
        !state.join(flotilla_secrets::FILE_NAME).exists(),
        "migrated"
    );
    assert_eq!(
        store.get("old-key").unwrap().expose_str(),
        Some("old-value-4242")
    );
    store
        .set("new-key", &Secret::from("new-value-9999"))
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    let raw = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&raw);
    for value in ["old-value-4242", "new-value-9999", "old-key", "new-key"] {
        assert!(!text.contains(value), "{value} is readable in the file");
    }
    // Reopened (auto finds systemd-creds working): the same secrets.
    let auto = StoreConfig {
        backend: Backend::File,
        ..StoreConfig::new(&state)
    };
    let reopened = SecretStore::open(&auto).unwrap();
    assert_eq!(
        reopened.get("new-key").unwrap().expose_str(),
        Some("new-value-9999")
    );
    // With encryption turned off, the encrypted file is not silently ignored.
    let err = SecretStore::open(&file_config(&state))
        .unwrap_err()
        .to_string();
    assert!(err.contains("encrypted with systemd-creds"), "{err}");
    assert!(err.contains("encrypt_file"), "{err}");
    // A damaged file is an error naming it, not an empty store.
    std::fs::write(&path, b"garbage").unwrap();
    let err = SecretStore::open(&sealed_config).unwrap_err().to_string();
    assert!(err.contains("secrets.cred"), "{err}");
}

/// The encrypted file with the real `systemd-creds` (see the test above).
fn sealed_config(state: &Path) -> StoreConfig {
    StoreConfig {
        backend: Backend::File,
        file_encryption: FileEncryption::SystemdCreds,
        ..StoreConfig::new(state)
    }
}

/// Both file backends: clear text and encrypted.
fn file_configs(state: &Path) -> [(&'static str, StoreConfig); 2] {
    [
        ("plain", file_config(state)),
        ("encrypted", sealed_config(state)),
    ]
}

fn names(store: &SecretStore) -> Vec<String> {
    store.list().unwrap().into_iter().map(|i| i.name).collect()
}

#[test]
fn a_value_over_the_limit_is_refused_with_the_limit_and_the_store_is_unchanged() {
    for (kind, config) in file_configs(tempfile::tempdir().unwrap().path()) {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            state_dir: root.path().to_path_buf(),
            ..config
        };
        let store = SecretStore::open(&config).unwrap();
        store.set("token", &Secret::from("t-1")).unwrap();
        // The largest value is accepted, text or binary.
        store
            .set("largest", &Secret::from_bytes(vec![0xfe; MAX_SECRET_BYTES]))
            .unwrap();
        let path = store.file_path().unwrap().to_path_buf();
        let before = std::fs::read(&path).unwrap();
        for size in [MAX_SECRET_BYTES + 1, 900_000, 2 * 1024 * 1024] {
            let err = store
                .set("big", &Secret::from("x".repeat(size)))
                .unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::TooLarge { .. }), "{kind}: {msg}");
            assert!(msg.contains(&format!("{size} bytes")), "{kind}: {msg}");
            assert!(msg.contains("limit of 65536 bytes"), "{kind}: {msg}");
            assert_eq!(std::fs::read(&path).unwrap(), before, "{kind}: unchanged");
        }
        let reopened = SecretStore::open(&config).unwrap();
        assert_eq!(names(&reopened), ["largest", "token"], "{kind}");
        assert_eq!(reopened.get("largest").unwrap().len(), MAX_SECRET_BYTES);
    }
}

/// Many values, each within the limit, add up: the write that would take the file past what
/// can be read back (for the encrypted file: what systemd-creds decrypts) is refused, and the
/// store stays readable with everything stored before it.
#[test]
fn the_whole_file_is_kept_within_what_can_be_read_back() {
    for (kind, config) in file_configs(tempfile::tempdir().unwrap().path()) {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            state_dir: root.path().to_path_buf(),
            ..config
        };
        let store = SecretStore::open(&config).unwrap();
        let path = store.file_path().unwrap().to_path_buf();
        let value = Secret::from("v".repeat(MAX_SECRET_BYTES));
        let mut refused = None;
        // 14 such values are about 918,000 bytes: more than systemd-creds can decrypt.
        for i in 0..14 {
            let before = std::fs::read(&path).ok();
            match store.set(&format!("cert-{i:02}"), &value) {
                Ok(()) => {}
                Err(err) => {
                    let msg = err.to_string();
                    assert!(matches!(err, Error::TooLarge { .. }), "{kind}: {msg}");
                    assert!(
                        msg.contains(&format!("limit of {MAX_FILE_BYTES} bytes")),
                        "{kind}: {msg}"
                    );
                    assert!(msg.contains("flotilla secret rm"), "{kind}: {msg}");
                    assert_eq!(std::fs::read(&path).ok(), before, "{kind}: unchanged");
                    refused.get_or_insert(i);
                }
            }
        }
        // 11 values fit in 768 KiB, the 12th does not.
        assert_eq!(refused, Some(11), "{kind}");
        let reopened = SecretStore::open(&config)
            .unwrap_or_else(|e| panic!("{kind}: the store became unreadable: {e}"));
        assert_eq!(reopened.list().unwrap().len(), 11, "{kind}");
        assert_eq!(
            reopened.get("cert-10").unwrap().len(),
            MAX_SECRET_BYTES,
            "{kind}"
        );
        // Room made, the write goes through.
        assert!(reopened.remove("cert-00").unwrap());
        reopened.set("cert-11", &value).unwrap();
        assert_eq!(reopened.list().unwrap().len(), 11, "{kind}");
    }
}

#[test]
fn every_write_keeps_the_previous_version_beside_the_file() {
    for (kind, config) in file_configs(tempfile::tempdir().unwrap().path()) {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            state_dir: root.path().to_path_buf(),
            ..config
        };
        let store = SecretStore::open(&config).unwrap();
        store.set("a", &Secret::from("1")).unwrap();
        let path = store.file_path().unwrap().to_path_buf();
        let first = std::fs::read(&path).unwrap();
        store.set("b", &Secret::from("2")).unwrap();
        let prev = flotilla_secrets::previous_version_path(&path);
        assert_eq!(std::fs::read(&prev).unwrap(), first, "{kind}");
        assert_eq!(mode(&prev), 0o600, "{kind}");
        let second = std::fs::read(&path).unwrap();
        assert!(store.remove("a").unwrap());
        assert_eq!(std::fs::read(&prev).unwrap(), second, "{kind}");
    }
}

/// Ways a secrets file gets damaged: cut short, overwritten, and (encrypted) a file that
/// systemd-creds made but cannot decrypt because it is too large.
fn damage(kind: &str, path: &Path, how: &str) {
    match how {
        "truncated" => {
            let bytes = std::fs::read(path).unwrap();
            std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
        }
        "garbage" => std::fs::write(path, b"\x00\xffnot a secrets file{{").unwrap(),
        "too large" if kind == "encrypted" => {
            let plain = path.with_extension("plain");
            std::fs::write(&plain, "x".repeat(900_000)).unwrap();
            let out = Command::new("systemd-creds")
                .args(["encrypt", "--name=flotilla-secrets"])
                .arg(&plain)
                .arg(path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            std::fs::remove_file(&plain).unwrap();
            assert!(std::fs::metadata(path).unwrap().len() > 1_179_648);
        }
        "too large" => std::fs::write(path, "{".repeat(1_000_000)).unwrap(),
        _ => unreachable!(),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_damaged_store_is_recovered_by_the_documented_command() {
    for (kind, config) in file_configs(tempfile::tempdir().unwrap().path()) {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            state_dir: root.path().to_path_buf(),
            ..config
        };
        for how in ["truncated", "garbage", "too large"] {
            let store = SecretStore::open(&config).unwrap();
            store.set("a", &Secret::from("value-a")).unwrap();
            store.set("b", &Secret::from("value-b")).unwrap();
            let path = store.file_path().unwrap().to_path_buf();
            drop(store);
            damage(kind, &path, how);

            let err = SecretStore::open(&config).unwrap_err().to_string();
            assert!(err.contains(RECOVER_COMMAND), "{kind}, {how}: {err}");
            assert!(
                err.contains(&path.display().to_string()),
                "{kind}, {how}: {err}"
            );
            assert!(
                !err.contains("encrypt_file = \"off\""),
                "{kind}, {how}: {err}"
            );

            let report = flotilla_secrets::recover(&config).unwrap();
            assert_eq!(report.len(), 1, "{kind}, {how}: {report:?}");
            let r = &report[0];
            assert_eq!(r.path, path);
            let prev = flotilla_secrets::previous_version_path(&path);
            assert_eq!(r.restored_from.as_deref(), Some(prev.as_path()));
            let names: Vec<_> = r.secrets.iter().map(|i| i.name.as_str()).collect();
            assert_eq!(
                names,
                ["a"],
                "{kind}, {how}: the version before the last write"
            );
            let damaged = r.damaged_kept_as.clone().unwrap();
            assert!(damaged.exists() && mode(&damaged) == 0o600);
            assert!(!format!("{report:?}").contains("value-a"));

            let store = SecretStore::open(&config).unwrap();
            assert_eq!(store.get("a").unwrap().expose_str(), Some("value-a"));
            assert_eq!(mode(&path), 0o600);
            // Run again on a readable store: nothing to do, nothing changed.
            let again = flotilla_secrets::recover(&config).unwrap();
            assert_eq!(again[0].restored_from, None, "{kind}, {how}");
            assert!(store.remove("a").unwrap());
        }
    }
}

#[test]
fn a_store_with_no_readable_version_is_reported_as_unrecoverable() {
    let root = tempfile::tempdir().unwrap();
    let config = file_config(root.path());
    let store = SecretStore::open(&config).unwrap();
    store.set("a", &Secret::from("1")).unwrap();
    store.set("b", &Secret::from("2")).unwrap();
    let path = store.file_path().unwrap().to_path_buf();
    damage("plain", &path, "garbage");
    damage(
        "plain",
        &flotilla_secrets::previous_version_path(&path),
        "truncated",
    );
    let err = flotilla_secrets::recover(&config).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unrecoverable { .. }), "{msg}");
    assert!(msg.contains("secrets.json.prev"), "{msg}");
    assert!(msg.contains("set the secrets again"), "{msg}");
    // Nothing was moved or overwritten.
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"\x00\xffnot a secrets file{{"
    );
}

/// A file over the limit (written before there was one) stays usable: it reads, a write that
/// grows it is refused, and removing secrets is how it gets back under the limit.
#[test]
fn a_file_over_the_limit_from_before_can_still_be_shrunk() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join(flotilla_secrets::FILE_NAME);
    let value = "v".repeat(MAX_SECRET_BYTES);
    let entries: Vec<String> = (0..13)
        .map(|i| {
            format!(
                "\"old-{i:02}\": {{\"encoding\": \"utf8\", \"value\": \"{value}\", \
                 \"created_ms\": 1, \"updated_ms\": 2}}"
            )
        })
        .collect();
    let doc = format!("{{\"version\": 1, \"secrets\": {{{}}}}}", entries.join(","));
    assert!(doc.len() > MAX_FILE_BYTES);
    std::fs::write(&path, doc).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let store = SecretStore::open(&file_config(root.path())).unwrap();
    assert_eq!(store.list().unwrap().len(), 13);
    let err = store.set("new", &Secret::from("n")).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(
        store.remove("old-00").unwrap(),
        "a removal is never refused for size"
    );
    assert!(store.remove("old-01").unwrap());
    store.set("new", &Secret::from("n")).unwrap();
    assert_eq!(store.list().unwrap().len(), 12);
}
