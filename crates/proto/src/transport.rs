//! gRPC over TLS for the control plane, on both ends.
//!
//! The head presents a self-signed certificate; an agent accepts exactly the certificate whose
//! SHA-256 fingerprint came in its join code ([`pinned_client_config`]), whatever name it
//! carries, so no certificate authority is involved and a join code cannot be replayed against
//! an impostor. Both ends speak HTTP/2 only (ALPN `h2`).
//!
//! [`connect`] opens a tonic [`Channel`] to the first of the head's addresses that answers;
//! [`TlsIncoming`] turns a TCP listener into the stream of TLS connections that tonic's server
//! takes. Handshakes run concurrently, each with a deadline, so a peer that sends garbage or
//! nothing at all neither crashes the server nor stalls the others.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::{Fingerprint, HeadAddress};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider both ends use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration that accepts exactly the server certificate with `fingerprint`.
pub fn pinned_client_config(fingerprint: Fingerprint) -> rustls::ClientConfig {
    let provider = provider();
    let verifier = Arc::new(Pinned {
        fingerprint,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions are supported")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// The text of the error a pinned client gives for a certificate it does not expect; callers
/// look for it to tell an impostor from an unreachable head.
pub const IMPOSTOR: &str = "this is not the head the join code was made for";

#[derive(Debug)]
struct Pinned {
    fingerprint: Fingerprint,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of_der(end_entity);
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "{IMPOSTOR}: its certificate's fingerprint is {seen}, the code expects {}",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why [`connect`] failed, per address tried.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The head answered with a certificate other than the pinned one.
    #[error("{0}")]
    Impostor(String),
    /// No address answered.
    #[error("cannot reach the head at {}", tried.join(", "))]
    Unreachable {
        /// `address: error` for every address tried.
        tried: Vec<String>,
    },
}

/// Opens a channel to the first of `addresses` that completes a TLS handshake with the pinned
/// certificate. Every call on the channel has `call_timeout` as its deadline unless the call
/// sets its own; a stream's deadline is its whole life, so long-lived streams must not rely on
/// it (the session sets none: see `Endpoint::timeout`).
pub async fn connect(
    addresses: &[HeadAddress],
    fingerprint: Fingerprint,
    connect_timeout: Duration,
) -> Result<Channel, ConnectError> {
    let config = Arc::new(pinned_client_config(fingerprint));
    let mut tried = Vec::new();
    for address in addresses {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .expect("a HeadAddress is a valid authority")
            .connect_timeout(connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let target = address.to_string();
        let connector = {
            let config = config.clone();
            tower::service_fn(move |_uri: tonic::transport::Uri| {
                let (config, target) = (config.clone(), target.clone());
                async move { tls_connect(&target, config, connect_timeout).await }
            })
        };
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => return Ok(channel),
            Err(e) => {
                let text = error_chain(&e);
                if text.contains(IMPOSTOR) {
                    return Err(ConnectError::Impostor(format!(
                        "{address}: {}",
                        text.split_once(IMPOSTOR)
                            .map_or(text.clone(), |(_, rest)| format!("{IMPOSTOR}{rest}"))
                    )));
                }
                tried.push(format!("{address}: {text}"));
            }
        }
    }
    Err(ConnectError::Unreachable { tried })
}

async fn tls_connect(
    target: &str,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let work = async {
        let tcp = TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        // The name is not checked (the fingerprint is); any valid name will do.
        let name = ServerName::try_from("flotilla-head").expect("a valid DNS name");
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    };
    let tls = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake timed out"))??;
    Ok(TokioIo::new(tls))
}

/// An error and its causes on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// One accepted TLS connection, as tonic's server takes it.
#[derive(Debug)]
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The TLS connections accepted on a listener: a stream for
/// `Server::serve_with_incoming_shutdown`. The accept loop ends when the stream is dropped.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    /// Accepts on `listener`, handshaking with `config` (its ALPN is set to `h2`).
    pub fn new(listener: TcpListener, mut config: rustls::ServerConfig) -> TlsIncoming {
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let accept = tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!("accepting a control-plane connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let local = tcp.local_addr().ok();
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let conn = TlsConn {
                        inner: tls,
                        info: connect_info(local, remote),
                    };
                    let _ = tx.send(Ok(conn)).await;
                });
            }
        });
        TlsIncoming {
            rx: tokio_stream::wrappers::ReceiverStream::new(rx),
            accept,
        }
    }
}

fn connect_info(local: Option<SocketAddr>, remote: SocketAddr) -> TcpConnectInfo {
    TcpConnectInfo {
        local_addr: local,
        remote_addr: Some(remote),
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}
