//! The desktop app and the `flotilla` command, given the same request, do the same: the same
//! pause reaches the agent from the tray's menu as from `flotilla pause`, and Flotilla's own
//! secrets are refused by both while the owner's are theirs to change.
//!
//! The agent's side is its real control channel (`flotilla_agent::control::serve`) on a real
//! socket in a private home; the command is the real `flotilla` binary; the desktop's side is
//! the app's own command functions, which the window and the tray call.
#![cfg(target_os = "linux")]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use flotilla_agent::control::{self, Feeds};
use flotilla_agent::sampler::ManualRequest;
use flotilla_host::Dirs;
use support::flotilla_bin;

fn flotilla(home: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(flotilla_bin())
        .args(args)
        .env("FLOTILLA_HOME", home)
        .env_remove("FLOTILLA_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One test at a time: the secrets test sets `FLOTILLA_HOME` for this process, which must not
/// happen while the other test starts a process (and so reads the environment).
static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the agent was last asked, taken from its feed.
fn taken(feeds: &Feeds) -> Option<ManualRequest> {
    feeds.manual.lock().unwrap().take()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_from_the_tray_and_from_the_command_reaches_the_agent_the_same() {
    let _one = ONE.lock().await;
    let home = tempfile::tempdir().unwrap();
    let dirs = Dirs::under(home.path());
    dirs.create_all().unwrap();

    // No agent yet: both refuse, and both say the agent is not there.
    let out = flotilla(home.path(), &["pause"], None);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("no Flotilla agent is running"),
        "{}",
        said(&out)
    );
    let e = flotilla_desktop::commands::pause(&dirs, "hour")
        .await
        .unwrap_err();
    assert_eq!(e.code, "agent_unreachable", "{e:?}");

    let feeds = Feeds::default();
    let (_decisions, rx) = tokio::sync::watch::channel(serde_json::json!({}));
    let stop = tokio_util::sync::CancellationToken::new();
    let server = control::serve(&dirs.agent_socket(), feeds.clone(), rx, stop.clone())
        .await
        .unwrap();

    // The tray's menu next to the command a person would type for the same pause.
    for (command, tray) in [
        (vec!["pause", "--for", "1h"], "hour"),
        (vec!["pause", "--until", "08:00"], "tomorrow"),
        (vec!["pause"], "indefinite"),
        (vec!["pause", "--finish"], "finish"),
    ] {
        let out = flotilla(home.path(), &command, None);
        assert!(out.status.success(), "{command:?}: {}", said(&out));
        let by_command = taken(&feeds);
        flotilla_desktop::commands::pause(&dirs, tray)
            .await
            .unwrap();
        let by_tray = taken(&feeds);
        assert!(by_command.is_some(), "{command:?} reached nothing");
        assert_eq!(
            by_command, by_tray,
            "{command:?} against the tray's {tray:?}"
        );
    }
    let out = flotilla(home.path(), &["resume"], None);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(taken(&feeds), Some(ManualRequest::Resume));
    flotilla_desktop::commands::resume(&dirs).await.unwrap();
    assert_eq!(taken(&feeds), Some(ManualRequest::Resume));

    // A pause neither front end offers is refused by both, and reaches nothing.
    let out = flotilla(home.path(), &["pause", "--for", "30s"], None);
    assert!(!out.status.success(), "{}", said(&out));
    let e = flotilla_desktop::commands::pause(&dirs, "forever")
        .await
        .unwrap_err();
    assert_eq!(e.code, "bad_request", "{e:?}");
    assert_eq!(taken(&feeds), None);

    stop.cancel();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flotillas_own_secrets_are_refused_by_both_and_the_owners_are_theirs() {
    let _one = ONE.lock().await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/flotilla.toml"),
        "[secrets]\nbackend = \"file\"\n",
    )
    .unwrap();
    // The desktop's functions read the home from the environment, as the app does.
    // SAFETY: no other thread reads the environment meanwhile (`ONE` keeps the other test
    // out; this test's own threads are idle until it awaits).
    unsafe { std::env::set_var("FLOTILLA_HOME", home.path()) };

    for name in [
        "flotilla.ray-token",
        "flotilla.node-credential",
        "flotilla.anything",
    ] {
        let set = flotilla(
            home.path(),
            &["secret", "set", name, "--from-stdin"],
            Some(b"x"),
        );
        let rm = flotilla(home.path(), &["secret", "rm", name], None);
        let by_app_set = flotilla_desktop::commands::add_secret(name.into(), "x".into())
            .await
            .unwrap_err();
        let by_app_rm = flotilla_desktop::commands::remove_secret(name.into())
            .await
            .unwrap_err();
        for (out, app) in [(&set, &by_app_set), (&rm, &by_app_rm)] {
            assert!(!out.status.success(), "{name}: {}", said(out));
            assert_eq!(app.code, "protected", "{app:?}");
            // One rule, one sentence: the command prints the window's message.
            assert!(
                said(out).contains(&app.message),
                "{name}: the command said {:?}, the window {:?}",
                said(out),
                app.message
            );
        }
    }
    let listed = flotilla_desktop::commands::secrets().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");

    // The owner's: set by one front end, seen and removed by the other.
    let out = flotilla(
        home.path(),
        &["secret", "set", "exchange-key", "--from-stdin"],
        Some(b"by the command"),
    );
    assert!(out.status.success(), "{}", said(&out));
    let listed = flotilla_desktop::commands::secrets().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["exchange-key"]
    );
    flotilla_desktop::commands::remove_secret("exchange-key".into())
        .await
        .unwrap();
    flotilla_desktop::commands::add_secret("broker-key".into(), "by the window".into())
        .await
        .unwrap();
    let out = flotilla(home.path(), &["secret", "list"], None);
    assert!(out.status.success(), "{}", said(&out));
    let list = said(&out);
    assert!(
        list.contains("broker-key") && !list.contains("exchange-key"),
        "{list}"
    );
    let out = flotilla(home.path(), &["secret", "rm", "broker-key"], None);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        flotilla_desktop::commands::secrets()
            .await
            .unwrap()
            .is_empty()
    );
}
