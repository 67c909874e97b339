//! Finding and asking the Tailscale daemon for its status.
//!
//! [`status`] asks the LocalAPI of this machine's tailscaled (`GET /localapi/v0/status`) over
//! the platform's local transport, and falls back to running `tailscale status --json` when no
//! endpoint answers. [`Discovery`] is the same search with its places spelt out, so that a test
//! (or a caller that knows better) can point it elsewhere; [`status_at`] asks one unix socket.
//!
//! # Platform behavior
//!
//! - Linux: the unix socket `/var/run/tailscale/tailscaled.sock` (then `/run/tailscale/…` when
//!   `/var/run` is not a link to `/run`).
//! - macOS (untested here): the GUI app's localhost port and token, from the
//!   `/Library/Tailscale/ipnport` link and `sameuserproof-<port>` file (the standalone app) or a
//!   `sameuserproof-<port>-<token>` file in the app's group container (the App Store app), sent
//!   as Basic authentication with an empty user; then the open-source tailscaled's socket
//!   `/var/run/tailscaled.socket`; the CLI also at `/Applications/Tailscale.app/…`.
//! - Windows (untested here): the named pipe
//!   `\\.\pipe\ProtectedPrefix\Administrators\Tailscale\tailscaled`; the CLI also at
//!   `C:\Program Files\Tailscale\tailscale.exe`.
//! - Elsewhere: the CLI on `PATH` only.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::{self, HttpError};
use crate::{Status, TailscaleError};

mod app_token;

flotilla_host::os_module!();

pub(crate) use imp::advice;

/// The `Host` tailscaled's LocalAPI expects, whatever the transport.
pub const LOCALAPI_HOST: &str = "local-tailscaled.sock";
/// The LocalAPI path of the status document.
pub const STATUS_PATH: &str = "/localapi/v0/status";
/// How long one LocalAPI endpoint may take to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `tailscale status --json` may take.
pub const DEFAULT_CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// One way to reach tailscaled's LocalAPI.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket (Linux, and the open-source tailscaled on macOS).
    UnixSocket(PathBuf),
    /// A localhost TCP port guarded by a token (the Tailscale GUI app on macOS).
    LocalTcp {
        /// The port on 127.0.0.1.
        port: u16,
        /// The token, sent as the password of Basic authentication with an empty user.
        token: String,
    },
    /// A named pipe (Windows).
    NamedPipe(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnixSocket(p) => write!(f, "the socket {}", p.display()),
            Self::LocalTcp { port, .. } => write!(f, "the Tailscale app's port 127.0.0.1:{port}"),
            Self::NamedPipe(name) => write!(f, "the pipe {name}"),
        }
    }
}

impl fmt::Debug for Endpoint {
    // By hand so that the token never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnixSocket(p) => f.debug_tuple("UnixSocket").field(p).finish(),
            Self::LocalTcp { port, .. } => f
                .debug_struct("LocalTcp")
                .field("port", port)
                .field("token", &"<redacted>")
                .finish(),
            Self::NamedPipe(name) => f.debug_tuple("NamedPipe").field(name).finish(),
        }
    }
}

/// Where to look for Tailscale, in order: LocalAPI endpoints first, then `tailscale` programs.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// LocalAPI endpoints, tried in order.
    pub endpoints: Vec<Endpoint>,
    /// `tailscale` programs to run with `status --json` when no endpoint answers; those that
    /// do not exist are skipped.
    pub cli: Vec<PathBuf>,
    /// Time limit for each endpoint.
    pub timeout: Duration,
    /// Time limit for each CLI run.
    pub cli_timeout: Duration,
}

impl Discovery {
    /// This platform's places (see the module's documentation), as they are on disk now.
    pub fn system() -> Self {
        let mut cli: Vec<PathBuf> = find_on_path(imp::CLI_NAME).into_iter().collect();
        for extra in imp::extra_cli() {
            if !cli.contains(&extra) {
                cli.push(extra);
            }
        }
        Discovery {
            endpoints: imp::endpoints(),
            cli,
            timeout: DEFAULT_TIMEOUT,
            cli_timeout: DEFAULT_CLI_TIMEOUT,
        }
    }

    /// Asks each endpoint, then each program, and returns the first status had. When none
    /// answers, the error says whether Tailscale seems not installed, installed but not
    /// running, or what else went wrong first.
    pub async fn status(&self) -> Result<Status, TailscaleError> {
        let mut absent = Vec::new();
        let mut down = Vec::new();
        let mut failed = Vec::new();
        let mut record = |attempt: Attempt| match attempt {
            Attempt::Absent(what) => absent.push(what),
            Attempt::Down(what) => down.push(what),
            Attempt::Failed(e) => failed.push(e),
        };
        for endpoint in &self.endpoints {
            match query_attempt(endpoint, self.timeout).await {
                Ok(status) => return Ok(status),
                Err(attempt) => {
                    tracing::debug!(%endpoint, ?attempt, "Tailscale LocalAPI endpoint did not answer");
                    record(attempt);
                }
            }
        }
        let mut any_program = false;
        for program in &self.cli {
            if !is_executable(program) {
                continue;
            }
            any_program = true;
            match cli_attempt(program, self.cli_timeout).await {
                Ok(status) => return Ok(status),
                Err(attempt) => {
                    tracing::debug!(program = %program.display(), ?attempt, "`tailscale status --json` did not answer");
                    record(attempt);
                }
            }
        }
        if !down.is_empty() {
            return Err(TailscaleError::DaemonNotRunning {
                detail: down.join("; "),
            });
        }
        if let Some(first) = failed.into_iter().next() {
            return Err(first);
        }
        if !any_program {
            absent.push(format!("a `{}` program on PATH", imp::CLI_NAME));
            absent.extend(self.cli.iter().map(|p| p.display().to_string()));
        }
        Err(TailscaleError::NotInstalled {
            looked: absent.join(", "),
        })
    }
}

/// Tailscale's status on this machine, from the LocalAPI or else the CLI
/// (`Discovery::system().status()`).
pub async fn status() -> Result<Status, TailscaleError> {
    Discovery::system().status().await
}

/// Tailscale's status from the LocalAPI on the unix socket at `socket`, within
/// [`DEFAULT_TIMEOUT`].
pub async fn status_at(socket: impl AsRef<Path>) -> Result<Status, TailscaleError> {
    query(
        &Endpoint::UnixSocket(socket.as_ref().to_path_buf()),
        DEFAULT_TIMEOUT,
    )
    .await
}

/// Tailscale's status from one LocalAPI endpoint, within `timeout`.
pub async fn query(endpoint: &Endpoint, timeout: Duration) -> Result<Status, TailscaleError> {
    query_attempt(endpoint, timeout)
        .await
        .map_err(|attempt| match attempt {
            Attempt::Absent(detail) | Attempt::Down(detail) => TailscaleError::Unreachable {
                endpoint: endpoint.to_string(),
                detail,
            },
            Attempt::Failed(e) => e,
        })
}

/// Tailscale's status from running `program status --json`, within `timeout`.
pub async fn status_from_cli(program: &Path, timeout: Duration) -> Result<Status, TailscaleError> {
    cli_attempt(program, timeout)
        .await
        .map_err(|attempt| match attempt {
            Attempt::Absent(detail) => TailscaleError::NotInstalled { looked: detail },
            Attempt::Down(detail) => TailscaleError::DaemonNotRunning { detail },
            Attempt::Failed(e) => e,
        })
}

/// How one place failed to give a status.
#[derive(Debug)]
enum Attempt {
    /// Nothing there: no socket, no program.
    Absent(String),
    /// Something there, but the daemon behind it is not running.
    Down(String),
    /// Anything else.
    Failed(TailscaleError),
}

async fn query_attempt(endpoint: &Endpoint, timeout: Duration) -> Result<Status, Attempt> {
    match tokio::time::timeout(timeout, exchange(endpoint)).await {
        Ok(result) => result,
        Err(_) => Err(Attempt::Failed(TailscaleError::Timeout {
            what: format!("tailscaled at {endpoint}"),
            after: timeout,
        })),
    }
}

/// Connects, asks, and reads the status.
async fn exchange(endpoint: &Endpoint) -> Result<Status, Attempt> {
    let answer = match endpoint {
        Endpoint::UnixSocket(path) => {
            #[cfg(unix)]
            {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| connect_failure(endpoint, &e))?;
                http::get(stream, LOCALAPI_HOST, STATUS_PATH, None).await
            }
            #[cfg(not(unix))]
            {
                let _ = path;
                return Err(Attempt::Absent(format!(
                    "{endpoint} (unix sockets are not used on this OS)"
                )));
            }
        }
        Endpoint::LocalTcp { port, token } => {
            let stream = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, *port))
                .await
                .map_err(|e| connect_failure(endpoint, &e))?;
            http::get(stream, LOCALAPI_HOST, STATUS_PATH, Some(token)).await
        }
        Endpoint::NamedPipe(name) => {
            #[cfg(windows)]
            {
                let pipe = imp::open_pipe(name)
                    .await
                    .map_err(|e| connect_failure(endpoint, &e))?;
                http::get(pipe, LOCALAPI_HOST, STATUS_PATH, None).await
            }
            #[cfg(not(windows))]
            {
                let _ = name;
                return Err(Attempt::Absent(format!(
                    "{endpoint} (named pipes exist only on Windows)"
                )));
            }
        }
    };
    let local_api = |detail: String| {
        Attempt::Failed(TailscaleError::LocalApi {
            endpoint: endpoint.to_string(),
            detail,
        })
    };
    let response = answer.map_err(|e: HttpError| local_api(e.to_string()))?;
    if response.status != 200 {
        let body = String::from_utf8_lossy(&response.body);
        let body = body.trim();
        let mut detail = format!("it answered HTTP {} {}", response.status, response.reason);
        if !body.is_empty() {
            detail.push_str(&format!(": {}", first_chars(body, 300)));
        }
        if matches!(response.status, 401 | 403) && matches!(endpoint, Endpoint::LocalTcp { .. }) {
            detail.push_str(" (the app's token may be stale: quit and reopen the Tailscale app)");
        }
        return Err(local_api(detail));
    }
    Status::from_json_at(&response.body, &format!("tailscaled at {endpoint}"))
        .map_err(Attempt::Failed)
}

fn connect_failure(endpoint: &Endpoint, e: &io::Error) -> Attempt {
    match e.kind() {
        io::ErrorKind::NotFound => Attempt::Absent(endpoint.to_string()),
        io::ErrorKind::ConnectionRefused => {
            Attempt::Down(format!("{endpoint} exists but nothing answers there ({e})"))
        }
        io::ErrorKind::PermissionDenied => Attempt::Failed(TailscaleError::PermissionDenied {
            endpoint: endpoint.to_string(),
            detail: e.to_string(),
        }),
        _ => Attempt::Failed(TailscaleError::LocalApi {
            endpoint: endpoint.to_string(),
            detail: format!("cannot connect: {e}"),
        }),
    }
}

async fn cli_attempt(program: &Path, timeout: Duration) -> Result<Status, Attempt> {
    let shown = program.display().to_string();
    let mut command = tokio::process::Command::new(program);
    command
        .args(["status", "--json"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => {
            return Err(Attempt::Failed(TailscaleError::Timeout {
                what: format!("`{shown} status --json`"),
                after: timeout,
            }));
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Attempt::Absent(format!("the program {shown}")));
        }
        Ok(Err(e)) => {
            return Err(Attempt::Failed(TailscaleError::Cli {
                program: shown,
                detail: format!("cannot run it: {e}"),
            }));
        }
        Ok(Ok(output)) => output,
    };
    // With --json the CLI prints the document whatever the state, so a document on stdout is
    // the answer even if the exit code is not 0.
    let origin = format!("`{shown} status --json`");
    let parsed = Status::from_json_at(&output.stdout, &origin);
    if output.status.success() || parsed.is_ok() {
        return parsed.map_err(Attempt::Failed);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = first_chars(stderr.trim(), 500);
    let lower = said.to_ascii_lowercase();
    if [
        "failed to connect",
        "doesn't appear to be running",
        "is tailscale running",
        "is tailscaled running",
        "connection refused",
    ]
    .iter()
    .any(|s| lower.contains(s))
    {
        return Err(Attempt::Down(format!("`{shown}` says: {said}")));
    }
    Err(Attempt::Failed(TailscaleError::Cli {
        program: shown,
        detail: format!("{} and printed {said:?} on stderr", output.status),
    }))
}

/// The first `max` characters of `s`.
fn first_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `name` (with `.exe` on Windows) in a directory of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(&file))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}
