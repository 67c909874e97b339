#![cfg(target_os = "linux")]

//! The keyring backend against a real Secret Service: gnome-keyring on a private D-Bus session.
//!
//! Each test re-runs this test binary, filtered to itself, under `dbus-run-session` with a fresh
//! unlocked gnome-keyring, a temporary HOME and runtime dir, and a marker variable; with the
//! marker set the test body runs. So a plain `cargo test` works from a shell with no session
//! bus, and never touches the developer's own keyring. If gnome-keyring cannot start, the test
//! fails and says why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flotilla_secrets::{Backend, BackendKind, Error, Secret, SecretStore, StoreConfig};

const MARKER: &str = "FLOTILLA_SECRETS_KEYRING_SESSION";
const WORKER: &str = "FLOTILLA_SECRETS_WORKER";
const WORKER_STATE: &str = "FLOTILLA_SECRETS_WORKER_STATE";
const WORKER_SERVICE: &str = "FLOTILLA_SECRETS_WORKER_SERVICE";

/// Starts gnome-keyring (secrets component, unlocked with a known password) and then execs the
/// test binary with the arguments that follow.
const SESSION_SCRIPT: &str = r#"printf testpw | gnome-keyring-daemon --unlock --components=secrets >/dev/null || { echo "gnome-keyring-daemon --unlock failed (exit $?)" >&2; exit 97; }; exec "$0" "$@""#;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `body` inside a private keyring session (see the module docs).
fn in_keyring_session(test: &str, body: impl FnOnce()) {
    if std::env::var_os(MARKER).is_some() {
        body();
        return;
    }
    for tool in ["dbus-run-session", "gnome-keyring-daemon"] {
        assert!(
            on_path(tool),
            "{tool} is not installed; the keyring tests need a real Secret Service: \
             apt-get install gnome-keyring dbus libsecret-tools"
        );
    }
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", SESSION_SCRIPT])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(MARKER, "1")
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("XDG_DATA_HOME")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .expect("could not run dbus-run-session");
    let report = text(&out);
    assert!(
        out.status.success(),
        "the keyring test {test} failed inside its D-Bus session:\n{report}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the test {test} did not run inside the session:\n{report}"
    );
}

fn keyring_config(state: &Path, service: &str) -> StoreConfig {
    StoreConfig {
        backend: Backend::Keyring,
        service: service.to_owned(),
        ..StoreConfig::new(state)
    }
}

fn open_keyring(state: &Path, service: &str) -> SecretStore {
    SecretStore::open(&keyring_config(state, service)).unwrap_or_else(|e| {
        panic!("gnome-keyring did not come up on the session bus, or cannot be used: {e}")
    })
}

fn names(store: &SecretStore) -> Vec<String> {
    store.list().unwrap().into_iter().map(|i| i.name).collect()
}

/// What `secret-tool` (libsecret, not our code) finds in the Secret Service.
fn secret_tool_lookup(service: &str, name: &str) -> Option<String> {
    let out = Command::new("secret-tool")
        .args(["lookup", "service", service, "username", name])
        .output()
        .expect("secret-tool is not installed: apt-get install libsecret-tools");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn set_get_list_remove() {
    in_keyring_session("set_get_list_remove", || {
        let state = tempfile::tempdir().unwrap();
        let service = "flotilla-test-basic";
        let store = open_keyring(state.path(), service);
        assert_eq!(store.backend(), BackendKind::Keyring);
        assert!(
            store.backend_name().contains("Secret Service"),
            "{}",
            store.backend_name()
        );
        assert!(store.list().unwrap().is_empty());

        store.set("ray-token", &Secret::from("tok-1111")).unwrap();
        store
            .set("exchange-key", &Secret::from("key-2222"))
            .unwrap();
        assert_eq!(
            store.get("ray-token").unwrap().expose_str(),
            Some("tok-1111")
        );
        assert_eq!(
            secret_tool_lookup(service, "exchange-key").as_deref(),
            Some("key-2222")
        );

        let listed = store.list().unwrap();
        assert_eq!(names(&store), ["exchange-key", "ray-token"]);
        assert!(listed.iter().all(|i| i.backend == BackendKind::Keyring));
        assert!(listed.iter().all(|i| i.created <= i.updated));

        std::thread::sleep(Duration::from_millis(5));
        store.set("ray-token", &Secret::from("tok-3333")).unwrap();
        assert_eq!(
            store.get("ray-token").unwrap().expose_str(),
            Some("tok-3333")
        );
        let token_info = |s: &SecretStore| {
            s.list()
                .unwrap()
                .into_iter()
                .find(|i| i.name == "ray-token")
                .unwrap()
        };
        let after = token_info(&store);
        let before = listed.iter().find(|i| i.name == "ray-token").unwrap();
        assert_eq!(after.created, before.created);
        assert!(after.updated > before.updated);

        // The index holds names and times, never values.
        let index =
            std::fs::read_to_string(state.path().join(flotilla_secrets::INDEX_FILE_NAME)).unwrap();
        assert!(index.contains("ray-token"));
        assert!(
            !index.contains("tok-") && !index.contains("key-2222"),
            "{index}"
        );

        // A second store on the same state dir sees the same secrets.
        let again = open_keyring(state.path(), service);
        assert_eq!(names(&again), ["exchange-key", "ray-token"]);

        assert!(store.remove("ray-token").unwrap());
        assert!(!store.remove("ray-token").unwrap());
        assert_eq!(secret_tool_lookup(service, "ray-token"), None);
        assert!(matches!(
            store.get("ray-token"),
            Err(Error::NotFound { ref name, .. }) if name == "ray-token"
        ));
        assert_eq!(names(&store), ["exchange-key"]);

        // Another service name on the same keyring is a separate namespace.
        let other = open_keyring(state.path(), "flotilla-test-other");
        assert!(other.list().unwrap().is_empty());
        assert!(other.get("exchange-key").is_err());
    });
}

#[test]
fn unicode_names_and_64_kib_values() {
    in_keyring_session("unicode_names_and_64_kib_values", || {
        let state = tempfile::tempdir().unwrap();
        let store = open_keyring(state.path(), "flotilla-test-unicode");
        let name = "clé-API-交易所";
        // As many characters as fit in 64 KiB, the largest value.
        let mut text = String::new();
        for c in "пароль-密码-🔑-".chars().cycle() {
            if text.len() + c.len_utf8() > 64 * 1024 {
                break;
            }
            text.push(c);
        }
        assert!(text.len() > 64 * 1024 - 4);
        store.set(name, &Secret::from(text.clone())).unwrap();
        assert_eq!(store.get(name).unwrap().expose_str(), Some(text.as_str()));

        let binary: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 256) as u8).collect();
        store
            .set("binaire-バイナリ", &Secret::from(binary.clone()))
            .unwrap();
        assert_eq!(store.get("binaire-バイナリ").unwrap().expose(), binary);

        assert_eq!(names(&store), ["binaire-バイナリ", name]);
        assert!(store.remove(name).unwrap());
        assert_eq!(names(&store), ["binaire-バイナリ"]);
    });
}

#[test]
fn a_missing_secret_is_named_in_the_error() {
    in_keyring_session("a_missing_secret_is_named_in_the_error", || {
        let state = tempfile::tempdir().unwrap();
        let store = open_keyring(state.path(), "flotilla-test-missing");
        let err = store.get("absent-clé").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NotFound { .. }), "{msg}");
        assert!(msg.contains("\"absent-clé\""), "{msg}");
        assert!(msg.contains("keyring"), "{msg}");
        assert!(!store.remove("absent-clé").unwrap());
    });
}

#[test]
fn auto_prefers_a_reachable_keyring() {
    in_keyring_session("auto_prefers_a_reachable_keyring", || {
        let state = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            allow_file_fallback: true,
            service: "flotilla-test-auto".into(),
            ..StoreConfig::new(state.path())
        };
        let store = SecretStore::open(&config).unwrap();
        assert_eq!(store.backend(), BackendKind::Keyring);
        store.set("k", &Secret::from("v")).unwrap();
        assert_eq!(
            secret_tool_lookup("flotilla-test-auto", "k").as_deref(),
            Some("v")
        );
        assert!(!state.path().join(flotilla_secrets::FILE_NAME).exists());
        assert!(
            !state
                .path()
                .join(flotilla_secrets::SEALED_FILE_NAME)
                .exists()
        );
    });
}

const ROUNDS: usize = 12;

/// One of two processes writing and reading at once: its own names, and one shared name.
fn worker(id: &str, state: &Path, service: &str) {
    let go = state.join("go");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "worker {id}: no start signal");
        std::thread::sleep(Duration::from_millis(5));
    }
    let store = open_keyring(state, service);
    for i in 0..ROUNDS {
        let own = format!("w{id}-{i}");
        store
            .set(&own, &Secret::from(format!("value-{id}-{i}")))
            .unwrap();
        store
            .set("shared", &Secret::from(format!("from-{id}-{i}")))
            .unwrap();
        assert_eq!(
            store.get(&own).unwrap().expose_str().unwrap(),
            format!("value-{id}-{i}")
        );
        let shared = store.get("shared").unwrap();
        assert!(shared.expose_str().unwrap().starts_with("from-"));
        if i > 0 {
            let earlier = format!("w{id}-{}", i - 1);
            assert!(names(&store).contains(&earlier), "{earlier} left the index");
        }
    }
}

#[test]
fn two_processes_write_and_read_at_once() {
    in_keyring_session("two_processes_write_and_read_at_once", || {
        if let Some(id) = std::env::var_os(WORKER) {
            let state = PathBuf::from(std::env::var_os(WORKER_STATE).unwrap());
            let service = std::env::var(WORKER_SERVICE).unwrap();
            worker(&id.to_string_lossy(), &state, &service);
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let service = "flotilla-test-concurrent";
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = ["a", "b"]
            .iter()
            .map(|id| {
                let child = Command::new(&exe)
                    .args([
                        "--exact",
                        "two_processes_write_and_read_at_once",
                        "--nocapture",
                    ])
                    .env(WORKER, id)
                    .env(WORKER_STATE, state.path())
                    .env(WORKER_SERVICE, service)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (id, child)
            })
            .collect();
        std::fs::write(state.path().join("go"), b"").unwrap();
        for (id, child) in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
                "worker {id} failed:\n{}",
                text(&out)
            );
        }

        let store = open_keyring(state.path(), service);
        let listed = names(&store);
        assert_eq!(listed.len(), 2 * ROUNDS + 1, "{listed:?}");
        for id in ["a", "b"] {
            for i in 0..ROUNDS {
                assert_eq!(
                    store
                        .get(&format!("w{id}-{i}"))
                        .unwrap()
                        .expose_str()
                        .unwrap(),
                    format!("value-{id}-{i}")
                );
            }
        }
        let last = format!("-{}", ROUNDS - 1);
        let shared = store.get("shared").unwrap();
        let shared = shared.expose_str().unwrap();
        assert!(
            shared == format!("from-a{last}") || shared == format!("from-b{last}"),
            "{shared}"
        );
    });
}

/// A value over the keyring's limit (Flotilla's 64 KiB here; 2560 bytes in Windows' Credential
/// Manager) is refused with the limit, before the keyring or the index changes.
#[test]
fn a_value_over_the_limit_is_refused_and_nothing_changes() {
    in_keyring_session(
        "a_value_over_the_limit_is_refused_and_nothing_changes",
        || {
            let state = tempfile::tempdir().unwrap();
            let service = "flotilla-test-limit";
            let store = open_keyring(state.path(), service);
            let limit = flotilla_secrets::keyring_max_secret_bytes();
            assert_eq!(limit, flotilla_secrets::MAX_SECRET_BYTES);
            store.set("kept", &Secret::from("kept-value")).unwrap();
            store
                .set("largest", &Secret::from("l".repeat(limit)))
                .unwrap();
            let index = state.path().join(flotilla_secrets::INDEX_FILE_NAME);
            let index_before = std::fs::read(&index).unwrap();
            for (name, size) in [("kept", limit + 1), ("new", limit + 1), ("new", 8 << 20)] {
                let err = store
                    .set(name, &Secret::from("x".repeat(size)))
                    .unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, Error::TooLarge { .. }), "{msg}");
                assert!(msg.contains(&format!("is {size} bytes")), "{msg}");
                assert!(msg.contains(&format!("limit of {limit} bytes")), "{msg}");
            }
            assert_eq!(std::fs::read(&index).unwrap(), index_before);
            assert_eq!(
                secret_tool_lookup(service, "kept").as_deref(),
                Some("kept-value")
            );
            assert_eq!(secret_tool_lookup(service, "new"), None);
            assert_eq!(names(&store), ["kept", "largest"]);
            assert_eq!(store.get("largest").unwrap().len(), limit);
        },
    );
}

/// The keyring's index of names is a file too: each write keeps its previous version, and a
/// damaged index is put back by the recovery command.
#[test]
fn a_damaged_index_is_recovered_by_the_documented_command() {
    in_keyring_session(
        "a_damaged_index_is_recovered_by_the_documented_command",
        || {
            let state = tempfile::tempdir().unwrap();
            let service = "flotilla-test-recover";
            let store = open_keyring(state.path(), service);
            store.set("a", &Secret::from("value-a")).unwrap();
            store.set("b", &Secret::from("value-b")).unwrap();
            let index = state.path().join(flotilla_secrets::INDEX_FILE_NAME);
            std::fs::write(&index, b"{\"version\": 1, \"services\": {").unwrap();

            let err = SecretStore::open(&keyring_config(state.path(), service))
                .unwrap_err()
                .to_string();
            assert!(err.contains(flotilla_secrets::RECOVER_COMMAND), "{err}");
            // A write is refused before it reaches the keyring.
            let err = store.set("c", &Secret::from("value-c")).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert_eq!(secret_tool_lookup(service, "c"), None);

            let report = flotilla_secrets::recover(&keyring_config(state.path(), service)).unwrap();
            assert_eq!(report.len(), 1, "{report:?}");
            assert_eq!(report[0].path, index);
            assert!(report[0].restored_from.is_some(), "{report:?}");
            let restored: Vec<_> = report[0].secrets.iter().map(|i| i.name.as_str()).collect();
            assert_eq!(restored, ["a"]);

            let store = open_keyring(state.path(), service);
            assert_eq!(names(&store), ["a"]);
            // The value of the last write is still in the keyring; setting it again lists it.
            assert_eq!(store.get("b").unwrap().expose_str(), Some("value-b"));
            store.set("b", &Secret::from("value-b")).unwrap();
            assert_eq!(names(&store), ["a", "b"]);
        },
    );
}
