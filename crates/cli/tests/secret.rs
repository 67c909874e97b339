#![cfg(target_os = "linux")]

//! `flotilla secret`: the real binary on a private home, with the file backend (encrypted with
//! the real `systemd-creds` where it works, as in the test command, which runs as root).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{flotilla, text};

/// A home whose secrets live in the file, whatever keyring the machine has.
fn file_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/flotilla.toml"),
        "[secrets]\nbackend = \"file\"\n",
    )
    .unwrap();
    home
}

/// `flotilla secret set NAME --from-stdin` with `value` on standard input.
fn set(home: &Path, name: &str, value: &[u8]) -> Output {
    let mut child = flotilla(home)
        .args(["secret", "set", name, "--from-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The child may refuse before reading everything.
    let _ = stdin.write_all(value);
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn run(home: &Path, args: &[&str]) -> Output {
    flotilla(home).args(args).output().unwrap()
}

/// Runs `flotilla ARGS` with its standard output on a terminal: a pseudo-terminal from
/// util-linux's `script`, which copies what the terminal shows to its own standard output.
fn on_terminal(home: &Path, args: &str) -> Output {
    let command = format!("{} {args}", common::BIN);
    std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("FLOTILLA_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) is needed to give the command a terminal")
}

const BINARY: &[u8] = b"\xff\xfe\x00\x01\x1b]0;title\x07\x80";

#[test]
fn a_binary_value_is_not_written_raw_to_a_terminal() {
    let home = file_home();
    assert!(set(home.path(), "raw-key", BINARY).status.success());
    assert!(set(home.path(), "token", b"tok-1234\n").status.success());

    let shown = on_terminal(home.path(), "secret get raw-key --reveal");
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(!shown.status.success(), "{}", text(&shown));
    assert!(out.contains("not printable text (15 bytes)"), "{out}");
    assert!(
        out.contains("--reveal > FILE") && out.contains("--hex"),
        "{out}"
    );
    assert!(
        !shown.stdout.windows(2).any(|w| w == b"\xff\xfe"),
        "raw bytes reached the terminal: {out}"
    );

    // The ways out the message names work.
    let hex = on_terminal(home.path(), "secret get raw-key --hex");
    assert!(hex.status.success(), "{}", text(&hex));
    assert!(
        String::from_utf8_lossy(&hex.stdout).contains("fffe00011b5d303b7469746c650780"),
        "{}",
        text(&hex)
    );
    let piped = run(home.path(), &["secret", "get", "raw-key", "--reveal"]);
    assert!(piped.status.success(), "{}", text(&piped));
    assert_eq!(piped.stdout, [BINARY, b"\n"].concat());

    // Text still prints on a terminal.
    let token = on_terminal(home.path(), "secret get token --reveal");
    assert!(token.status.success(), "{}", text(&token));
    assert!(String::from_utf8_lossy(&token.stdout).contains("tok-1234"));
}

#[test]
fn a_value_over_the_limit_is_refused_with_the_limit() {
    let home = file_home();
    assert!(set(home.path(), "kept", b"kept-value").status.success());
    let largest = vec![b'k'; 65536];
    let ok = set(home.path(), "largest", &[&largest[..], b"\n"].concat());
    assert!(ok.status.success(), "{}", text(&ok));
    for size in [65537, 1 << 20] {
        let refused = set(home.path(), "big", &vec![b'x'; size]);
        let msg = text(&refused);
        assert!(!refused.status.success(), "{msg}");
        assert!(msg.contains("over 65536 bytes"), "{msg}");
        assert!(msg.contains("Nothing was stored"), "{msg}");
    }
    let list = run(home.path(), &["secret", "list", "--json"]);
    assert!(list.status.success(), "{}", text(&list));
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&list.stdout)
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["kept", "largest"]);
}

#[test]
fn a_damaged_store_is_recovered_by_secret_recover() {
    let home = file_home();
    assert!(set(home.path(), "a", b"value-a").status.success());
    assert!(set(home.path(), "b", b"value-b").status.success());
    let state = home.path().join("state");
    let file = ["secrets.cred", "secrets.json"]
        .map(|n| state.join(n))
        .into_iter()
        .find(|p| p.exists())
        .expect("a secrets file");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();

    let broken = run(home.path(), &["secret", "list"]);
    let msg = text(&broken);
    assert!(!broken.status.success(), "{msg}");
    assert!(msg.contains("`flotilla secret recover`"), "{msg}");
    assert!(!msg.contains("encrypt_file = \"off\""), "{msg}");

    let recovered = run(home.path(), &["secret", "recover", "--json"]);
    assert!(recovered.status.success(), "{}", text(&recovered));
    let report: serde_json::Value = serde_json::from_slice(&recovered.stdout).unwrap();
    let entry = &report.as_array().unwrap()[0];
    assert_eq!(entry["path"], file.display().to_string());
    assert_eq!(entry["restored"], true);
    assert_eq!(entry["secrets"][0]["name"], "a");
    assert_eq!(entry["secrets"].as_array().unwrap().len(), 1);
    assert!(!String::from_utf8_lossy(&recovered.stdout).contains("value-a"));

    let got = run(home.path(), &["secret", "get", "a", "--reveal"]);
    assert_eq!(got.stdout, b"value-a\n", "{}", text(&got));

    // Damaged again: the text report says what it restored, with names, never values.
    assert!(set(home.path(), "b", b"value-b").status.success());
    std::fs::write(&file, b"garbage").unwrap();
    let again = run(home.path(), &["secret", "recover"]);
    let out = text(&again);
    assert!(again.status.success(), "{out}");
    assert!(
        out.contains(&format!("Restored {}", file.display())),
        "{out}"
    );
    assert!(out.contains(".damaged"), "{out}");
    assert!(out.contains("\n  a "), "{out}");
    assert!(!out.contains("value-a"), "{out}");
    let list = run(home.path(), &["secret", "list"]);
    assert!(list.status.success(), "{}", text(&list));
}

#[test]
fn flotillas_own_secrets_cannot_be_changed_by_hand() {
    let home = file_home();
    // Whether the store holds them or not: the rule is the name's.
    for (args, value) in [
        (vec!["secret", "rm", "flotilla.ray-token"], None),
        (
            vec!["secret", "set", "flotilla.node-credential"],
            Some(b"x".as_slice()),
        ),
    ] {
        let out = match value {
            Some(v) => set(home.path(), args[2], v),
            None => run(home.path(), &args),
        };
        assert!(
            !out.status.success(),
            "{args:?} was allowed: {}",
            text(&out)
        );
        let said = text(&out);
        assert!(said.contains("flotilla."), "{said}");
        assert!(said.to_lowercase().contains("flotilla's own"), "{said}");
    }
    // Any other name is the owner's to change.
    let out = set(home.path(), "MY_API_KEY", b"secret value");
    assert!(out.status.success(), "{}", text(&out));
    let out = run(home.path(), &["secret", "rm", "MY_API_KEY"]);
    assert!(out.status.success(), "{}", text(&out));
}
