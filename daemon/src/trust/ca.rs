//! The cluster CA and node certificates, and their files.
//!
//! ```text
//!   <data_dir>/tls/        0700
//!                 ca.pem   the cluster CA certificate (public; its sha256 is pinned by join tokens)
//!                 ca.key   the CA key (every member holds it: see the module doc of `trust`)
//!                 node.pem this node's certificate: CN `tandem-node-<id>`, SAN = its IPs
//!                 node.key this node's key
//! ```
//! Every file is written 0600 through a temporary file and a rename, so a
//! crash leaves the old file or the new one, never half of one.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::{cert_err, TrustError};

/// The directory under `data_dir`.
pub const TLS_DIR: &str = "tls";
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const NODE_CERT: &str = "node.pem";
const NODE_KEY: &str = "node.key";
/// The common name of node `id`'s certificate is this prefix and the id.
const NODE_CN_PREFIX: &str = "tandem-node-";

/// A node's trust material, as PEM text.
#[derive(Clone, Serialize, Deserialize)]
pub struct Material {
    pub ca_pem: String,
    /// Present on every member (see the module doc of `trust`).
    pub ca_key_pem: Option<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never go to a log.
        f.debug_struct("Material")
            .field("ca_fingerprint", &fingerprint(&self.ca_pem).ok())
            .field("signs", &self.ca_key_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// `<data_dir>/tls`.
#[must_use]
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR)
}

/// `<data_dir>/tls/ca.pem`: what API clients verify against.
#[must_use]
pub fn ca_path(data_dir: &Path) -> PathBuf {
    tls_dir(data_dir).join(CA_CERT)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads this node's material, or, when `<data_dir>/tls` holds none, creates
/// a new cluster CA and this node's certificate signed by it (the node founds
/// a cluster of one). `ips` go into the node certificate's SAN.
pub fn ensure(data_dir: &Path, node_id: u64, ips: &[IpAddr]) -> Result<Material, TrustError> {
    if let Some(m) = load(data_dir)? {
        return Ok(m);
    }
    let (ca_pem, ca_key_pem) = new_ca()?;
    let key = KeyPair::generate().map_err(cert_err("node key"))?;
    let cert_pem = sign(&ca_pem, &ca_key_pem, &key, node_id, ips)?;
    let m = Material {
        ca_pem,
        ca_key_pem: Some(ca_key_pem),
        cert_pem,
        key_pem: key.serialize_pem(),
    };
    write(data_dir, &m)?;
    tracing::info!(target: "tandem::trust", dir = %tls_dir(data_dir).display(), fingerprint = %fingerprint(&m.ca_pem)?, "created the cluster CA and this node's certificate");
    Ok(m)
}

/// Reads `<data_dir>/tls`; `None` if it holds no CA certificate yet.
pub fn load(data_dir: &Path) -> Result<Option<Material>, TrustError> {
    let dir = tls_dir(data_dir);
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(io_err(&p))
    };
    if !dir.join(CA_CERT).exists() {
        return Ok(None);
    }
    let ca_key = dir.join(CA_KEY);
    Ok(Some(Material {
        ca_pem: read(CA_CERT)?,
        ca_key_pem: if ca_key.exists() {
            Some(read(CA_KEY)?)
        } else {
            None
        },
        cert_pem: read(NODE_CERT)?,
        key_pem: read(NODE_KEY)?,
    }))
}

/// Writes `m` into `<data_dir>/tls` (dir 0700, files 0600), replacing what is there.
pub fn write(data_dir: &Path, m: &Material) -> Result<(), TrustError> {
    let dir = tls_dir(data_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
    // The node's own pair first and the CA last: `load` keys on ca.pem.
    write_private(&dir.join(NODE_KEY), &m.key_pem)?;
    write_private(&dir.join(NODE_CERT), &m.cert_pem)?;
    match &m.ca_key_pem {
        Some(k) => write_private(&dir.join(CA_KEY), k)?,
        None => match std::fs::remove_file(dir.join(CA_KEY)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&dir.join(CA_KEY))(e)),
        },
    }
    write_private(&dir.join(CA_CERT), &m.ca_pem)
}

/// Writes `text` to `path` with mode 0600, through a temporary file and a rename.
pub fn write_private(path: &Path, text: &str) -> Result<(), TrustError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    // A file left by an older run may have had a wider mode.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn random_serial() -> Result<SerialNumber, TrustError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| TrustError::Cert {
        what: "serial number".into(),
        message: e.to_string(),
    })?;
    // A positive DER integer.
    b[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&b))
}

/// A new self-signed cluster CA: (certificate PEM, key PEM).
fn new_ca() -> Result<(String, String), TrustError> {
    let key = KeyPair::generate().map_err(cert_err("CA key"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "tandem cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(random_serial()?);
    let cert = p.self_signed(&key).map_err(cert_err("CA certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The parameters of node `id`'s certificate: CN `tandem-node-<id>`, the
/// given IPs as SANs, usable as TLS server and client.
fn node_params(id: u64, ips: &[IpAddr]) -> Result<CertificateParams, TrustError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{NODE_CN_PREFIX}{id}"));
    p.distinguished_name = dn;
    let mut ips = ips.to_vec();
    ips.sort();
    ips.dedup();
    p.subject_alt_names = ips.into_iter().map(SanType::IpAddress).collect();
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(random_serial()?);
    Ok(p)
}

fn issuer(ca_pem: &str, ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>, TrustError> {
    let key = KeyPair::from_pem(ca_key_pem).map_err(cert_err("CA key"))?;
    Issuer::from_ca_cert_pem(ca_pem, key).map_err(cert_err("CA certificate"))
}

fn sign(
    ca_pem: &str,
    ca_key_pem: &str,
    public: &impl rcgen::PublicKeyData,
    id: u64,
    ips: &[IpAddr],
) -> Result<String, TrustError> {
    let cert = node_params(id, ips)?
        .signed_by(public, &issuer(ca_pem, ca_key_pem)?)
        .map_err(cert_err("node certificate"))?;
    Ok(cert.pem())
}

/// Signs a joiner's CSR as node `id`'s certificate. Only the CSR's public key
/// (and its self-signature) is used: the name and SANs come from the
/// enrollment the leader checked, never from what the CSR asks for.
pub fn sign_csr(
    m: &Material,
    csr_pem: &str,
    id: u64,
    ips: &[IpAddr],
) -> Result<String, TrustError> {
    let Some(ca_key) = &m.ca_key_pem else {
        return Err(TrustError::Cert {
            what: "signing".into(),
            message: "this node holds no CA key".into(),
        });
    };
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(cert_err("CSR"))?;
    sign(&m.ca_pem, ca_key, &csr.public_key, id, ips)
}

/// A new key and a CSR for it: (key PEM, CSR PEM). What a joiner sends.
pub fn new_key_and_csr(id: u64) -> Result<(String, String), TrustError> {
    let key = KeyPair::generate().map_err(cert_err("node key"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{NODE_CN_PREFIX}{id}"));
    p.distinguished_name = dn;
    let csr = p
        .serialize_request(&key)
        .map_err(cert_err("CSR"))?
        .pem()
        .map_err(cert_err("CSR"))?;
    Ok((key.serialize_pem(), csr))
}

/// The DER of the first certificate in `pem`.
pub fn cert_der(pem: &str) -> Result<Vec<u8>, TrustError> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| TrustError::Cert {
            what: "certificate PEM".into(),
            message: e.to_string(),
        })
}

/// The CA fingerprint a join token pins: sha256 of the certificate's DER, hex.
pub fn fingerprint(ca_pem: &str) -> Result<String, TrustError> {
    Ok(hex(&Sha256::digest(cert_der(ca_pem)?)))
}

/// Lower-case hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The node id in a certificate's common name (`tandem-node-<id>`), if any.
#[must_use]
pub fn node_id_of(der: &[u8]) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    cn.strip_prefix(NODE_CN_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_new_cluster_writes_private_files_and_signs_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let ips = ["10.0.0.11".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let m = ensure(dir.path(), 7, &ips).unwrap();
        assert!(m.ca_key_pem.is_some());
        let tls = tls_dir(dir.path());
        assert_eq!(
            std::fs::metadata(&tls).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for f in [CA_CERT, CA_KEY, NODE_CERT, NODE_KEY] {
            let mode = std::fs::metadata(tls.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert_eq!(node_id_of(&cert_der(&m.cert_pem).unwrap()), Some(7));
        // A second start loads the same CA instead of making a new one.
        let again = ensure(dir.path(), 7, &ips).unwrap();
        assert_eq!(
            fingerprint(&again.ca_pem).unwrap(),
            fingerprint(&m.ca_pem).unwrap()
        );
        assert_eq!(fingerprint(&m.ca_pem).unwrap().len(), 64);
    }

    #[test]
    fn a_csr_is_signed_with_the_leaders_name_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let m = ensure(dir.path(), 1, &["10.0.0.11".parse().unwrap()]).unwrap();
        let (_key, csr) = new_key_and_csr(99).unwrap();
        let cert = sign_csr(&m, &csr, 3, &["10.0.0.13".parse().unwrap()]).unwrap();
        assert_eq!(node_id_of(&cert_der(&cert).unwrap()), Some(3));
        assert!(sign_csr(&m, "not a csr", 3, &[]).is_err());
        let no_key = Material {
            ca_key_pem: None,
            ..m
        };
        assert!(sign_csr(&no_key, &csr, 3, &[]).is_err());
    }
}
