//! TLS 1.3 on the site link (`link.tls_cert`, `link.tls_key`; `PROTOCOL.md §1`): the
//! controller's certificate, checked by the gateway, and the site's HMAC handshake
//! (§3) inside it, unchanged.
//!
//! Why the HMAC handshake inside TLS rather than per-site client certificates: every
//! site already has its 32-byte key, provisioned and rotated with the site
//! (`trunkd site key`), and the handshake proves it; TLS adds what the link lacked
//! (privacy, and integrity of every frame after the handshake) with one certificate
//! for the controller, the same kind operators already run for the API. Client
//! certificates would add a per-site PKI (issuing, revoking, renewing at every site)
//! to prove what the key already proves.
//!
//! Only TLS 1.3, on rustls with the ring provider (as the API). The certificate and
//! key are read at start and again on [`ServerTls::reload`] (`SIGHUP`): connections
//! accepted afterwards get the new ones, links already up keep theirs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(what: &str, path: &Path, e: &dyn std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what} {}: {e}", path.display()))
}

/// The certificates of a PEM file, at least one.
fn certificates(what: &str, path: &Path) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(what, path, &e))?;
    if certs.is_empty() {
        return Err(bad(what, path, &"holds no certificate"));
    }
    Ok(certs)
}

/// The controller's side: what it serves, swapped whole on reload.
pub struct ServerTls {
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// The certificate chain in `cert` and the private key in `key`, both PEM.
    pub fn load(cert: &Path, key: &Path) -> std::io::Result<ServerTls> {
        Ok(ServerTls {
            config: RwLock::new(server_config(cert, key)?),
        })
    }

    /// Reads `cert` and `key` again: new connections get them. On an error nothing
    /// changes.
    pub fn reload(&self, cert: &Path, key: &Path) -> std::io::Result<()> {
        let fresh = server_config(cert, key)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn server_config(cert: &Path, key: &Path) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let chain = certificates("link.tls_cert", cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("link.tls_key", key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| bad("link.tls_key", key, &e))?;
    Ok(Arc::new(config))
}

/// A gateway's side: whom it trusts, and the name the controller's certificate must
/// carry.
#[derive(Clone)]
pub struct GatewayTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl GatewayTls {
    /// Trusting the CA certificates in the PEM file `ca`, for a controller whose
    /// certificate names `name` (a DNS name or an IP address).
    pub fn new(ca: &Path, name: &str) -> std::io::Result<GatewayTls> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates("the CA file", ca)? {
            roots.add(c).map_err(|e| bad("the CA file", ca, &e))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| std::io::Error::other(format!("controller name {name:?}: {e}")))?;
        Ok(GatewayTls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    pub(super) fn connector(&self) -> (&TlsConnector, ServerName<'static>) {
        (&self.connector, self.name.clone())
    }
}

impl std::fmt::Debug for GatewayTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
