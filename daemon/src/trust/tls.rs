//! rustls configs from a node's [`Material`]: TLS 1.3 only, ring as the
//! crypto provider (it builds with the C compiler alone; aws-lc-rs needs
//! cmake and a much longer build on these 2-core machines).
//!
//! - Raft: mutual TLS. Both sides present their node certificate and verify
//!   the other's chain to the cluster CA; then [`PeerVerifier`] reads the
//!   peer's node id from its CN and refuses a revoked one (the replicated
//!   list, read through a closure so this layer needs no store). The client
//!   side also checks the server's IP SAN against the address it dialled.
//! - API: the server presents the node certificate; callers prove
//!   themselves with the admin token, not a certificate. Clients verify the
//!   server against the cluster CA.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

use super::ca::{node_id_of, Material};
use super::error::TrustError;

/// Whether node `id` is revoked (removed from the cluster).
pub type Revoked = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// The crypto provider of every TLS config here.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> TrustError {
    TrustError::Tls(e.to_string())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let v: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(tls_err)?;
    if v.is_empty() {
        return Err(TrustError::Tls("no certificate in PEM".into()));
    }
    Ok(v)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TrustError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(tls_err)
}

/// The cluster CA as the only trust anchor.
pub fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TrustError> {
    let mut r = RootCertStore::empty();
    for c in certs(ca_pem)? {
        r.add(c).map_err(tls_err)?;
    }
    Ok(Arc::new(r))
}

/// The name a client checks a server certificate against: the IP it dials
/// (node certificates carry their IPs as SANs).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TrustError> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned()).map_err(tls_err)
}

/// Both ends of Raft's mutual TLS.
#[derive(Clone)]
pub struct RaftTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

/// Builds [`RaftTls`] from `m`; `revoked` is consulted on every handshake.
pub fn raft(m: &Material, revoked: Revoked) -> Result<RaftTls, TrustError> {
    let p = provider();
    let roots = roots(&m.ca_pem)?;
    let chain = certs(&m.cert_pem)?;
    let client_inner =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&p))
            .build()
            .map_err(tls_err)?;
    let server_inner = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&p))
        .build()
        .map_err(tls_err)?;
    let verifier = Arc::new(PeerVerifier {
        client: client_inner,
        server: server_inner,
        revoked,
    });
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&p))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::clone(&verifier) as Arc<dyn ClientCertVerifier>)
        .with_single_cert(chain.clone(), key(&m.key_pem)?)
        .map_err(tls_err)?;
    // No session resumption: a resumed session skips the verifiers, so a
    // revoked node could come back on a ticket from before its removal.
    // Peers reconnect rarely; a full handshake costs a millisecond.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let mut client = ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key(&m.key_pem)?)
        .map_err(tls_err)?;
    client.resumption = rustls::client::Resumption::disabled();
    Ok(RaftTls {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// The API server's config: the node certificate, no client certificates
/// (callers authenticate with the admin token).
pub fn api_server(m: &Material) -> Result<Arc<ServerConfig>, TrustError> {
    let c = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(certs(&m.cert_pem)?, key(&m.key_pem)?)
        .map_err(tls_err)?;
    Ok(Arc::new(c))
}

/// Checks a Raft peer: the chain to the cluster CA (webpki), then the node
/// id in its CN, which must be present and not revoked.
pub struct PeerVerifier {
    client: Arc<dyn ClientCertVerifier>,
    server: Arc<WebPkiServerVerifier>,
    revoked: Revoked,
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerVerifier")
    }
}

impl PeerVerifier {
    fn check_id(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match node_id_of(end_entity) {
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            Some(id) if (self.revoked)(id) => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Some(_) => Ok(()),
        }
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.client.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .client
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check_id(end_entity)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.client.supported_verify_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.server.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.check_id(end_entity)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.server.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.server.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.server.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::trust::ca;

    /// A cluster CA in a temp dir, and node `id`'s material signed by it
    /// (through a CSR, as a joiner gets it).
    fn node(founder: &Material, id: u64) -> Material {
        let (key_pem, csr) = ca::new_key_and_csr(id).unwrap();
        let cert_pem = ca::sign_csr(founder, &csr, id, &["127.0.0.1".parse().unwrap()]).unwrap();
        Material {
            ca_pem: founder.ca_pem.clone(),
            ca_key_pem: None,
            cert_pem,
            key_pem,
        }
    }

    /// One handshake of `client` against `server` on loopback; a byte goes
    /// each way so both sides have finished verifying.
    async fn handshake(server: &RaftTls, client: Arc<ClientConfig>) -> Result<(), String> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::clone(&server.server));
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut t = acceptor.accept(s).await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            t.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            t.write_all(&b).await.map_err(|e| e.to_string())?;
            t.flush().await.map_err(|e| e.to_string())
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let c = async {
            let mut t = TlsConnector::from(client)
                .connect(server_name(&addr.to_string()).unwrap(), s)
                .await
                .map_err(|e| e.to_string())?;
            t.write_all(b"x").await.map_err(|e| e.to_string())?;
            t.flush().await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            t.read_exact(&mut b).await.map_err(|e| e.to_string())
        };
        let (c, s) = tokio::join!(c, srv);
        s.unwrap().map_err(|e| format!("server: {e}"))?;
        c.map(|_| ()).map_err(|e| format!("client: {e}"))
    }

    #[tokio::test]
    async fn peers_of_one_ca_connect_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let founder = ca::ensure(dir.path(), 1, &["127.0.0.1".parse().unwrap()]).unwrap();
        let revoked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
        let r = Arc::clone(&revoked);
        let check: Revoked = Arc::new(move |id| r.lock().unwrap().contains(&id));
        let server = raft(&founder, Arc::clone(&check)).unwrap();

        let two = raft(&node(&founder, 2), Arc::clone(&check)).unwrap();
        handshake(&server, Arc::clone(&two.client)).await.unwrap();

        // A node of another cluster (another CA) is refused.
        let other_dir = tempfile::tempdir().unwrap();
        let other = ca::ensure(other_dir.path(), 2, &["127.0.0.1".parse().unwrap()]).unwrap();
        let stranger = raft(&other, Arc::clone(&check)).unwrap();
        assert!(handshake(&server, stranger.client).await.is_err());

        // A client without any certificate is refused.
        let anon = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots(&founder.ca_pem).unwrap())
            .with_no_client_auth();
        let e = handshake(&server, Arc::new(anon)).await.unwrap_err();
        assert!(e.contains("server") || e.contains("client"), "{e}");

        // Once node 2 is revoked, its certificate is refused, both as a
        // client and as a server, even though it connected before (no
        // session resumption past the verifier).
        revoked.lock().unwrap().insert(2);
        let e = handshake(&server, Arc::clone(&two.client))
            .await
            .unwrap_err();
        assert!(e.to_lowercase().contains("revoked"), "{e}");
        assert!(handshake(&two, Arc::clone(&server.client)).await.is_err());
        // Node 3 is unaffected.
        let three = raft(&node(&founder, 3), check).unwrap();
        handshake(&server, three.client).await.unwrap();
    }

    #[test]
    fn server_names_are_the_dialled_ip() {
        assert!(matches!(
            server_name("10.0.0.1:7480").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:7480").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("node1:7480").unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
