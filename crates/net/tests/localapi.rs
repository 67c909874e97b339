//! Asking tailscaled's LocalAPI, against stand-ins.
//!
//! tailscaled cannot run on the build machines (no TUN device, no network, no account), so
//! these tests serve recorded status documents from a tokio listener in a temporary directory,
//! speaking HTTP/1.1 the way tailscaled does, and from a fake `tailscale` program. They check
//! our side of the exchange: the request we send, how we read each way of framing an answer,
//! and what we say when the other side misbehaves or is not there.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_net::localapi::{self, DEFAULT_CLI_TIMEOUT, Discovery, Endpoint};
use flotilla_net::{BackendState, TailscaleError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/tailscale/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Reads one request's head (up to the blank line) from `stream`.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => request.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&request).into_owned()
}

/// A fake LocalAPI on a unix socket in a fresh temporary directory: it accepts one
/// connection, reads the request, writes `answer` in pieces, and closes. The task yields the
/// request it read.
fn serve_once(answer: Vec<u8>) -> (tempfile::TempDir, PathBuf, JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tailscaled.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_request(&mut stream).await;
        // Several writes, so that the client sees the answer arrive in parts.
        for piece in answer.chunks(1000) {
            if stream.write_all(piece).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _ = stream.shutdown().await;
        request
    });
    (dir, path, task)
}

fn with_length(body: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    answer
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut answer =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for piece in body.chunks(chunk) {
        answer.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        answer.extend_from_slice(piece);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"0\r\n\r\n");
    answer
}

#[tokio::test]
async fn status_at_reads_a_fake_localapi() {
    let (_dir, path, server) = serve_once(with_length(&fixture("running")));
    let status = flotilla_net::status_at(&path).await.unwrap();
    assert_eq!(status.backend_state, BackendState::Running);
    assert_eq!(status.peers.len(), 3);
    assert_eq!(status.self_ipv4(), Some("100.101.7.12".parse().unwrap()));

    let request = server.await.unwrap();
    assert!(
        request.starts_with("GET /localapi/v0/status HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains("\r\nHost: local-tailscaled.sock\r\n"),
        "{request}"
    );
    assert!(!request.contains("Authorization"), "{request}");
}

#[tokio::test]
async fn chunked_answers_are_read() {
    let (_dir, path, _server) = serve_once(chunked(&fixture("ipv6-only"), 333));
    let status = flotilla_net::status_at(&path).await.unwrap();
    assert_eq!(
        status.self_ipv6(),
        Some("fd7a:115c:a1e0::6b01:2c0d".parse().unwrap())
    );
}

#[tokio::test]
async fn a_server_that_closes_early_is_a_clear_error() {
    let whole = with_length(&fixture("running"));
    let (_dir, path, _server) = serve_once(whole[..whole.len() / 2].to_vec());
    let err = flotilla_net::status_at(&path).await.unwrap_err();
    assert!(matches!(err, TailscaleError::LocalApi { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("connection closed after"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    let (_dir, path, _server) = serve_once(Vec::new());
    let message = flotilla_net::status_at(&path)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("closed before answering"), "{message}");

    let cut = chunked(&fixture("running"), 500);
    let (_dir, path, _server) = serve_once(cut[..cut.len() - 40].to_vec());
    let message = flotilla_net::status_at(&path)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("connection closed"), "{message}");
}

#[tokio::test]
async fn an_error_status_is_reported_with_its_body() {
    let body = b"invalid localapi request\n";
    let mut answer = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    let (_dir, path, _server) = serve_once(answer);
    let message = flotilla_net::status_at(&path)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("HTTP 403 Forbidden: invalid localapi request"),
        "{message}"
    );
    assert!(message.contains("`tailscale status`"), "{message}");
}

#[tokio::test]
async fn a_garbage_body_is_a_parse_error_naming_the_socket() {
    let (_dir, path, _server) = serve_once(with_length(b"<html>not json</html>"));
    let err = flotilla_net::status_at(&path).await.unwrap_err();
    assert!(matches!(err, TailscaleError::Parse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("tailscaled at the socket"),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tailscaled.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let _server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    });
    let endpoint = Endpoint::UnixSocket(path);
    let err = localapi::query(&endpoint, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, TailscaleError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("within 0.2 s"), "{err}");
}

#[tokio::test]
async fn a_missing_socket_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let err = flotilla_net::status_at(dir.path().join("nope.sock"))
        .await
        .unwrap_err();
    assert!(matches!(err, TailscaleError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn the_app_port_gets_the_token_as_basic_auth() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = fixture("magicdns-off");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_request(&mut stream).await;
        stream.write_all(&with_length(&body)).await.unwrap();
        request
    });
    let endpoint = Endpoint::LocalTcp {
        port,
        token: "tok3n".into(),
    };
    let status = localapi::query(&endpoint, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!status.magic_dns_enabled);
    let request = server.await.unwrap();
    // base64(":tok3n"): an empty user name and the token as the password.
    assert!(
        request.contains("\r\nAuthorization: Basic OnRvazNu\r\n"),
        "{request}"
    );
    assert!(
        !format!("{endpoint:?}").contains("tok3n"),
        "the token stays out of logs"
    );
}

/// Held by every test that writes and runs a fake program: a program written while another
/// thread forks can fail to start with "text file busy" (the child holds the write handle for
/// an instant), so writing and running take turns.
static CLI_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fake `tailscale` program: a shell script in `dir`.
fn fake_cli(dir: &Path, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("tailscale");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn discovery(endpoints: Vec<Endpoint>, cli: Vec<PathBuf>) -> Discovery {
    Discovery {
        endpoints,
        cli,
        timeout: Duration::from_secs(2),
        cli_timeout: DEFAULT_CLI_TIMEOUT,
    }
}

#[tokio::test]
async fn discovery_uses_the_first_endpoint_that_answers() {
    let (_dir, path, _server) = serve_once(with_length(&fixture("stopped")));
    let absent = Endpoint::UnixSocket(path.with_file_name("absent.sock"));
    let found = discovery(vec![absent, Endpoint::UnixSocket(path)], vec![])
        .status()
        .await
        .unwrap();
    assert_eq!(found.backend_state, BackendState::Stopped);
}

#[tokio::test]
async fn discovery_falls_back_to_the_cli() {
    let _turn = CLI_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let doc = format!(
        "{}/tests/fixtures/tailscale/logged-out.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let cli = fake_cli(
        dir.path(),
        &format!("[ \"$1 $2\" = \"status --json\" ] || exit 3\ncat '{doc}'"),
    );
    let socket = Endpoint::UnixSocket(dir.path().join("absent.sock"));
    let status = discovery(vec![socket], vec![dir.path().join("missing"), cli])
        .status()
        .await
        .unwrap();
    assert_eq!(status.backend_state, BackendState::NeedsLogin);
}

#[tokio::test]
async fn nothing_found_means_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = Endpoint::UnixSocket(dir.path().join("tailscaled.sock"));
    let err = discovery(vec![socket], vec![dir.path().join("tailscale")])
        .status()
        .await
        .unwrap_err();
    assert!(
        matches!(err, TailscaleError::NotInstalled { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("Install it"), "{message}");
    assert!(message.contains("tailscaled.sock"), "{message}");
}

#[tokio::test]
async fn a_dead_socket_or_a_complaining_cli_means_the_daemon_is_not_running() {
    let _turn = CLI_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // A socket file whose listener is gone: connecting is refused.
    let path = dir.path().join("tailscaled.sock");
    drop(UnixListener::bind(&path).unwrap());
    let err = discovery(vec![Endpoint::UnixSocket(path)], vec![])
        .status()
        .await
        .unwrap_err();
    assert!(
        matches!(err, TailscaleError::DaemonNotRunning { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Start it"), "{err}");

    let cli = fake_cli(
        dir.path(),
        "echo \"failed to connect to local tailscaled; it doesn't appear to be running (sudo systemctl start tailscaled ?)\" >&2\nexit 1",
    );
    let err = discovery(vec![], vec![cli.clone()])
        .status()
        .await
        .unwrap_err();
    assert!(
        matches!(err, TailscaleError::DaemonNotRunning { .. }),
        "{err:?}"
    );
    let err = localapi::status_from_cli(&cli, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TailscaleError::DaemonNotRunning { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_or_slow_cli_is_reported() {
    let _turn = CLI_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cli = fake_cli(dir.path(), "echo 'unexpected trouble' >&2\nexit 2");
    let err = localapi::status_from_cli(&cli, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, TailscaleError::Cli { .. }), "{err:?}");
    assert!(err.to_string().contains("unexpected trouble"), "{err}");

    let slow = dir.path().join("slow");
    std::fs::create_dir(&slow).unwrap();
    let cli = fake_cli(&slow, "exec sleep 30");
    let err = localapi::status_from_cli(&cli, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, TailscaleError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn the_system_search_never_panics() {
    // Whatever this machine has (on the build machines: no Tailscale at all), the answer is a
    // status or an error that says what to do.
    match flotilla_net::status().await {
        Ok(status) => assert!(!status.backend_state.as_str().is_empty()),
        Err(err) => assert!(err.to_string().contains('\n'), "{err}"),
    }
}
