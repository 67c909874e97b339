//! Two homes of one OS user on one machine, as a person with two checkouts or two accounts'
//! worth of settings has them: both homes use the platform's directories (no `FLOTILLA_HOME`),
//! so they share the one short run dir `/tmp/flotilla-<uid>`, and each home's agent must still
//! answer on its own control channel. `flotilla status` and `flotilla pause` run as the real
//! binary with each home's `HOME`; the agents are the agent's real control channel
//! (`flotilla_agent::control::serve` on the path the agent uses), served from this test so that
//! each can say which home it belongs to without starting two Ray clusters.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flotilla_agent::control::{self, Feeds};
use flotilla_host::Dirs;
use tokio_util::sync::CancellationToken;

/// `flotilla` with the platform's directories under `home`, as a user whose `HOME` it is.
fn flotilla_as(home: &Path) -> Command {
    let mut c = Command::new(common::BIN);
    c.env_remove("FLOTILLA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", home)
        .env("FLOTILLA_DATA_DIR", Dirs::from_env().data)
        .stdin(Stdio::null());
    c
}

/// The directories `flotilla` resolves with `HOME=home` on Linux (see `flotilla_host::dirs`).
fn dirs_of(home: &Path) -> Dirs {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let state = home.join(".local/state/flotilla");
    Dirs {
        config: home.join(".config/flotilla"),
        data: home.join(".local/share/flotilla"),
        logs: state.join("logs"),
        state,
        run: PathBuf::from(format!("/tmp/flotilla-{uid}")),
    }
}

struct Agent {
    feeds: Feeds,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    socket: PathBuf,
    _decision: tokio::sync::watch::Sender<serde_json::Value>,
}

/// An agent's control channel for `dirs`, whose decision names `home` (as its reason).
async fn serve(dirs: &Dirs, home: &str) -> std::io::Result<Agent> {
    std::fs::create_dir_all(&dirs.state)?;
    let (tx, rx) = tokio::sync::watch::channel(serde_json::json!({
        "decision": {"target_cpus": 1, "pause": "none", "reason": {"code": "owner_active"}},
        "reason_en": home,
        "reason_es": home,
    }));
    let feeds = Feeds::default();
    let stop = CancellationToken::new();
    let socket = control::socket_path(dirs);
    let task = control::serve(&socket, feeds.clone(), rx, stop.clone()).await?;
    Ok(Agent {
        feeds,
        stop,
        task,
        socket,
        _decision: tx,
    })
}

/// A head API address nothing listens on: this test's agents are workers whose head is away.
fn no_head() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// `flotilla status --json` as the user of `home`, run off the async runtime's threads.
async fn status(home: &Path) -> (Output, serde_json::Value) {
    let home = home.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        flotilla_as(&home)
            .args(["status", "--json", "--api", &no_head()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

async fn status_names(home: &Path, expected: &str) {
    let (out, v) = status(home).await;
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(
        v["this_machine"]["reason_en"],
        expected,
        "status with HOME={} reached the wrong agent: {}",
        home.display(),
        common::text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_of_one_user_in_two_homes_each_keep_their_own_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let (home_a, home_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (dirs_a, dirs_b) = (dirs_of(&home_a), dirs_of(&home_b));
    assert_eq!(dirs_a.run, dirs_b.run, "the two homes share one run dir");

    let a = serve(&dirs_a, "a").await.expect("the first home's agent");
    let b = serve(&dirs_b, "b")
        .await
        .expect("the second home's agent starts beside the first");
    assert_ne!(a.socket, b.socket);

    status_names(&home_a, "a").await;
    status_names(&home_b, "b").await;

    // `pause` of the second home reaches the second agent only.
    let home = home_b.clone();
    let out =
        tokio::task::spawn_blocking(move || flotilla_as(&home).args(["pause"]).output().unwrap())
            .await
            .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(b.feeds.manual.lock().unwrap().is_some());
    assert!(
        a.feeds.manual.lock().unwrap().is_none(),
        "the first home's agent was paused"
    );

    // A second agent of the same state dir is refused and leaves the first's channel alone.
    let again = serve(&dirs_a, "a again").await.err().expect("refused");
    assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse, "{again}");
    assert!(
        again
            .to_string()
            .contains(&format!("pid {}", std::process::id())),
        "the refusal names the running agent: {again}"
    );
    status_names(&home_a, "a").await;

    // The second home's agent stops: its channel goes, the first's stays and answers.
    b.stop.cancel();
    b.task.await.unwrap();
    assert!(!b.socket.exists());
    assert!(a.socket.exists());
    status_names(&home_a, "a").await;
    let (out, _) = status(&home_b).await;
    assert!(
        !out.status.success(),
        "no agent answers for the second home any more: {}",
        common::text(&out)
    );

    a.stop.cancel();
    a.task.await.unwrap();
    assert!(!a.socket.exists());
}
