//! The channel on this system: on Linux here, and on Windows under Wine (`tests/cross-os`).

use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{Listener, connect};

const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_request_and_its_reply_cross_the_channel() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let mut listener = Listener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let stream = listener.accept().await.unwrap();
                let (r, mut w) = tokio::io::split(stream);
                let mut line = String::new();
                BufReader::new(r).read_line(&mut line).await.unwrap();
                w.write_all(format!("you said {line}").as_bytes())
                    .await
                    .unwrap();
                w.flush().await.unwrap();
            }
        });
        // Two connections one after the other: the listener keeps listening.
        for word in ["hello", "again"] {
            let stream = connect(&path, WAIT).await.unwrap();
            let (r, mut w) = tokio::io::split(stream);
            w.write_all(format!("{word}\n").as_bytes()).await.unwrap();
            w.flush().await.unwrap();
            let mut reply = String::new();
            BufReader::new(r).read_line(&mut reply).await.unwrap();
            assert_eq!(reply, format!("you said {word}\n"));
        }
        tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    });
}

#[test]
fn a_live_listener_is_never_taken_over_and_a_gone_one_is() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let first = Listener::bind(&path).unwrap();
        let second = Listener::bind(&path).unwrap_err();
        assert_eq!(second.kind(), ErrorKind::AddrInUse, "{second}");
        drop(first);
        let mut again = Listener::bind(&path).unwrap();
        let accepted = tokio::spawn(async move { again.accept().await.map(|_| ()) });
        connect(&path, WAIT).await.unwrap();
        tokio::time::timeout(WAIT, accepted)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    });
}

#[cfg(unix)]
#[test]
fn a_socket_left_by_a_dead_listener_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    // std's listener leaves its file behind when dropped, as a killed process does.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    runtime().block_on(async {
        let _listener = Listener::bind(&path).unwrap();
    });
}

#[cfg(unix)]
#[test]
fn a_listener_removes_only_its_own_socket_and_names_the_live_one() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let first = Listener::bind(&path).unwrap();
        // The first one's file goes (as a cleaner of /tmp might take it); a second listener
        // binds the name again, and the first one ending must leave the second's socket.
        std::fs::remove_file(&path).unwrap();
        let mut second = Listener::bind(&path).unwrap();
        drop(first);
        assert!(
            path.exists(),
            "the first listener removed the second's socket"
        );
        let accepted = tokio::spawn(async move { second.accept().await.map(|_| second) });
        connect(&path, WAIT).await.unwrap();
        let second = tokio::time::timeout(WAIT, accepted)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // A third is refused, and the refusal names the live listener's process.
        let err = Listener::bind(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
        #[cfg(any(target_os = "linux", target_os = "macos"))]
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(second);
        assert!(!path.exists(), "a listener removes its own socket");
    });
}

#[test]
fn connecting_to_nothing_fails_at_once() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let err = connect(&dir.path().join("agent.sock"), WAIT)
            .await
            .unwrap_err();
        assert_ne!(err.kind(), ErrorKind::TimedOut, "{err}");
    });
}
