//! The local control channel over a real Unix socket: the desktop session's idle feed, bad
//! input, and another user being kept out.
#![cfg(target_os = "linux")]

use std::time::Duration;

use flotilla_agent::control;
use flotilla_agent::control::Feeds;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// The channel's socket in the test's directory.
fn socket_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("agent.sock")
}

async fn start(dir: &std::path::Path) -> (Feeds, CancellationToken, tokio::task::JoinHandle<()>) {
    let feed = Feeds::default();
    let (_tx, rx) = tokio::sync::watch::channel(serde_json::json!({"target_cpus": 3}));
    let stop = CancellationToken::new();
    let task = control::serve(&socket_path(dir), feed.clone(), rx, stop.clone())
        .await
        .unwrap();
    // Keep the sender alive for the channel's lifetime.
    std::mem::forget(_tx);
    (feed, stop, task)
}

#[tokio::test]
async fn the_session_feeds_idle_time_and_reads_the_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let (feed, stop, task) = start(tmp.path()).await;
    let sock = socket_path(tmp.path());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut ask = async |line: &str| -> serde_json::Value {
        w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap()
    };
    assert_eq!(
        ask(r#"{"idle_ms": 4200, "source": "desktop"}"#).await["ok"],
        true
    );
    let fed = feed.idle.lock().unwrap().clone().unwrap();
    assert_eq!(fed.idle, Duration::from_millis(4200));
    // Garbage gets an error and the connection stays usable.
    let e = ask("GET / HTTP/1.1").await;
    assert_eq!(e["ok"], false);
    assert_eq!(
        ask(r#"{"get": "decision"}"#).await["decision"]["target_cpus"],
        3
    );

    stop.cancel();
    task.await.unwrap();
    assert!(!sock.exists(), "the socket is removed on shutdown");
}

#[tokio::test]
async fn an_overlong_request_is_refused_without_buffering_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (_feed, stop, _task) = start(tmp.path()).await;
    let stream = tokio::net::UnixStream::connect(socket_path(tmp.path()))
        .await
        .unwrap();
    let (r, mut w) = stream.into_split();
    let big = vec![b'x'; 100 * 1024];
    let _ = w.write_all(&big).await;
    let mut lines = BufReader::new(r).lines();
    let reply: serde_json::Value =
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(reply["error"], "request too long");
    stop.cancel();
}

#[tokio::test]
async fn another_user_cannot_feed_the_agent() {
    // Acting as another user needs root; the test command runs as root.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test must run as root to act as another user"
    );
    let tmp = tempfile::tempdir().unwrap();
    // Even with the directory and the socket opened up, the peer check refuses the stranger.
    let (feed, stop, _task) = start(tmp.path()).await;
    let sock = socket_path(tmp.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\n\
         try:\n    s.sendall(b'{{\"idle_ms\": 1}}\\n')\n    s.settimeout(5)\n    print(repr(s.recv(100)))\n\
         except OSError:\n    print(repr(b''))\n",
        sock.display().to_string()
    );
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.trim(), "b''", "the stranger got an answer: {said}");
    assert!(
        feed.idle.lock().unwrap().is_none(),
        "the stranger's reading was taken"
    );
    stop.cancel();
}
