//! Errors of the Ray adapter. Every message says what happened and what to do about it.

use std::net::SocketAddr;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} version {value:?}: expected something like {example}")]
    InvalidVersion {
        what: &'static str,
        value: String,
        example: &'static str,
    },

    #[error(
        "cannot download uv from {url}: {detail}\n  \
         Check the network connection (or a proxy in HTTPS_PROXY), or install uv yourself \
         (`pip install uv`) and put it on PATH or set FLOTILLA_UV"
    )]
    UvDownload { url: String, detail: String },

    #[error(
        "no Python {python} found, and uv could not download one: {detail}\n  \
         Install Python {python} (for example `apt install python{python}` or from python.org) \
         and run this again"
    )]
    NoPython { python: String, detail: String },

    #[error(
        "cannot reach the package index to install {spec}: {detail}\n  \
         Check the network connection (or a proxy in HTTPS_PROXY); runtimes that are already \
         installed keep working offline"
    )]
    Offline { spec: String, detail: String },

    #[error(
        "the disk is full while installing into {}: {detail}\n  \
         A runtime needs about 400 MB: free some space, or remove old runtimes with \
         `flotilla runtime remove`", path.display()
    )]
    DiskFull { path: PathBuf, detail: String },

    #[error("installing {spec} failed: {detail}")]
    Install { spec: String, detail: String },

    #[error("the runtime at {} is not usable: {detail}", path.display())]
    Verify { path: PathBuf, detail: String },

    #[error("no runtime for {spec} is installed (run `flotilla runtime ensure`)")]
    RuntimeMissing { spec: String },

    #[error(
        "port {port} ({what}) is already in use on this machine\n  \
         Stop the program that uses it, or choose another port with {option}"
    )]
    PortInUse {
        port: u16,
        what: &'static str,
        option: &'static str,
    },

    #[error(
        "cannot reach the Ray head at {addr}: {detail}\n  \
         Check that the head is running (`flotilla status` on the head) and that this machine \
         can reach {addr} (same LAN or tailnet, firewall open for that port)"
    )]
    HeadUnreachable { addr: SocketAddr, detail: String },

    #[error(
        "the Ray {role} node made no progress for {secs} s without becoming ready; its log is {}",
        log.display()
    )]
    NotReady {
        role: &'static str,
        secs: u64,
        log: PathBuf,
    },

    /// The node's first start failed, with Ray's reason; its supervisor keeps retrying.
    #[error("the Ray node cannot start: {failure}")]
    NodeFailed { failure: crate::Failure },

    #[error("the Ray dashboard at {url} answered {status}: {detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },

    #[error("cannot talk to the Ray dashboard at {url}: {detail}")]
    Unreachable { url: String, detail: String },

    #[error(
        "Ray's {service} at {addr} refused the call: {problem} ({detail})\n  \
         Use the cluster's current Ray token (the head hands it to enrolled machines), or \
         re-enroll this machine"
    )]
    RpcAuth {
        service: &'static str,
        addr: SocketAddr,
        /// "the token is wrong for this cluster" or "no token was sent, ...".
        problem: &'static str,
        detail: String,
    },

    #[error(
        "cannot reach Ray's {service} at {addr}: {detail}\n  \
         Check that the Ray node is running and that this machine can reach {addr}"
    )]
    RpcUnreachable {
        service: &'static str,
        addr: SocketAddr,
        detail: String,
    },

    #[error(
        "Ray's {service} at {addr} does not offer {call}: the Ray version there lacks {what}\n  \
         Run a Ray version Flotilla supports (2.60 or newer)"
    )]
    RpcUnsupported {
        service: &'static str,
        addr: SocketAddr,
        call: &'static str,
        what: &'static str,
    },

    #[error("{call} on Ray's {service} at {addr} failed ({code}): {detail}")]
    Rpc {
        service: &'static str,
        addr: SocketAddr,
        call: &'static str,
        code: String,
        detail: String,
    },

    #[error("{what} {value:?} is not valid: {expected}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
