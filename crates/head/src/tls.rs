//! The head's TLS identity: a self-signed certificate made at first start, whose private key
//! lives in the secret store and whose SHA-256 fingerprint travels in every join code. An agent
//! pins that fingerprint ([`pinned_client_config`]), so no certificate authority is needed and a
//! code cannot be replayed against an impostor.

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_host::Dirs;
pub use flotilla_proto::Fingerprint;
pub use flotilla_proto::transport::pinned_client_config;
use flotilla_secrets::{Secret, SecretStore};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Result, io};

/// The secret-store name of the head's TLS private key.
pub const TLS_KEY_SECRET: &str = "flotilla.head-tls-key";

/// The head's certificate and key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_der: CertificateDer<'static>,
    /// PKCS#8 DER of the private key.
    pub key_der: Secret,
    pub fingerprint: Fingerprint,
}

impl Identity {
    fn cert_path(dirs: &Dirs) -> PathBuf {
        dirs.state.join("head-cert.der")
    }

    /// Loads the head's identity, or makes one for `names` (host names and addresses the
    /// certificate names; pinning does not depend on them). The certificate is public and kept
    /// in the state dir; the key only in the secret store.
    pub fn load_or_create(dirs: &Dirs, store: &SecretStore, names: &[String]) -> Result<Identity> {
        let path = Self::cert_path(dirs);
        let key = match store.get(TLS_KEY_SECRET) {
            Ok(k) => Some(k),
            Err(flotilla_secrets::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let (Some(key_der), Ok(cert)) = (key, std::fs::read(&path)) {
            return Ok(Identity {
                fingerprint: Fingerprint::of_der(&cert),
                cert_der: CertificateDer::from(cert),
                key_der,
            });
        }
        let mut names = names.to_vec();
        names.push("flotilla-head".into());
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| io("cannot make the head's TLS certificate")(std::io::Error::other(e)))?;
        let cert = certified.cert.der().to_vec();
        let key_der = Secret::from_bytes(certified.signing_key.serialize_der());
        store.set(TLS_KEY_SECRET, &key_der)?;
        std::fs::write(&path, &cert).map_err(io(format!("cannot write {}", path.display())))?;
        Ok(Identity {
            fingerprint: Fingerprint::of_der(&cert),
            cert_der: CertificateDer::from(cert),
            key_der,
        })
    }

    /// A rustls server configuration presenting this identity.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let key = PrivateKeyDer::try_from(self.key_der.expose().to_vec())
            .map_err(|e| io("the head's TLS key is unreadable")(std::io::Error::other(e)))?;
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![self.cert_der.clone()], key)
            })
            .map_err(|e| io("cannot use the head's TLS identity")(std::io::Error::other(e)))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    flotilla_proto::transport::provider()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn store(dir: &std::path::Path) -> SecretStore {
        let mut c = flotilla_secrets::StoreConfig::new(dir);
        c.backend = flotilla_secrets::Backend::File;
        SecretStore::open(&c).unwrap()
    }

    fn identity(tmp: &std::path::Path) -> Identity {
        let dirs = Dirs::under(tmp);
        dirs.create_all().unwrap();
        Identity::load_or_create(&dirs, &store(&dirs.state), &["head.example".into()]).unwrap()
    }

    #[test]
    fn the_identity_is_made_once_and_its_key_stays_in_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let a = identity(tmp.path());
        let b = identity(tmp.path());
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.to_string().len(), 32 * 3 - 1);
        let cert = std::fs::read(tmp.path().join("state/head-cert.der")).unwrap();
        assert_eq!(Fingerprint::of_der(&cert), a.fingerprint);
        // The key is in the store, not beside the certificate.
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.contains("key")), "{names:?}");
        assert!(store(&tmp.path().join("state")).get(TLS_KEY_SECRET).is_ok());
    }

    /// A TLS handshake against a server with `server`'s identity, pinning `pin`.
    async fn handshake(server: &Identity, pin: Fingerprint) -> std::result::Result<String, String> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server.server_config().unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"hello").await;
                let _ = tls.shutdown().await;
            }
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(pinned_client_config(pin)));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("any-name.invalid").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut got = String::new();
        tls.read_to_string(&mut got)
            .await
            .map_err(|e| e.to_string())?;
        Ok(got)
    }

    #[tokio::test]
    async fn the_pinned_head_is_accepted_and_an_impostor_refused() {
        let real = tempfile::tempdir().unwrap();
        let fake = tempfile::tempdir().unwrap();
        let head = identity(real.path());
        let impostor = identity(fake.path());
        assert_ne!(head.fingerprint, impostor.fingerprint);
        assert_eq!(handshake(&head, head.fingerprint).await.unwrap(), "hello");
        let err = handshake(&impostor, head.fingerprint).await.unwrap_err();
        assert!(
            err.contains("not the head the join code was made for"),
            "{err}"
        );
    }
}
