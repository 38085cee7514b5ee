//! Admin and join tokens.
//!
//! - The admin token: 32 random bytes, hex, in `<data_dir>/admin.token`
//!   (0600). Created with the cluster and handed to every joiner, so the CLI
//!   on any member finds it and `ssh node tandem …` just works. The API
//!   compares it in constant time.
//! - A join token, kubeadm style: `tdm1.<secret>.<fingerprint>`, 16 random
//!   bytes of secret and the sha256 of the CA certificate, both hex. The
//!   cluster keeps only the secret's sha256 and an expiry (replicated, so any
//!   leader checks it); using it removes it, through Raft.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::ca::{hex, write_private};
use super::error::TrustError;

/// The file under `data_dir`.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
const JOIN_PREFIX: &str = "tdm1";
const SECRET_BYTES: usize = 16;
/// The longest TTL a join token may have: a token is a key to the cluster.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> Result<String, TrustError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| TrustError::Token(format!("no randomness: {e}")))?;
    Ok(hex(&b))
}

/// `<data_dir>/admin.token`.
#[must_use]
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// Reads the admin token, creating it (0600) when there is none.
pub fn ensure_admin_token(data_dir: &Path) -> Result<String, TrustError> {
    let path = admin_token_path(data_dir);
    if path.exists() {
        return read_admin_token(&path);
    }
    let t = random_hex(32)?;
    write_private(&path, &t)?;
    Ok(t)
}

/// Reads an admin token file (trimmed). An empty file is an error.
pub fn read_admin_token(path: &Path) -> Result<String, TrustError> {
    let t = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
        path: path.to_owned(),
        source,
    })?;
    let t = t.trim();
    if t.is_empty() {
        return Err(TrustError::Token(format!("{} is empty", path.display())));
    }
    Ok(t.to_owned())
}

/// Replaces the admin token (a joiner takes its cluster's).
pub fn write_admin_token(data_dir: &Path, token: &str) -> Result<(), TrustError> {
    write_private(&admin_token_path(data_dir), token)
}

/// Equality that takes the same time wherever `a` and `b` differ.
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The sha256 (hex) of a join token's secret: what the cluster stores.
#[must_use]
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A join token as the joiner holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub secret: String,
    /// sha256 of the CA certificate's DER, hex.
    pub ca_fingerprint: String,
}

impl JoinToken {
    /// A fresh token for the CA with this fingerprint.
    pub fn generate(ca_fingerprint: &str) -> Result<JoinToken, TrustError> {
        Ok(JoinToken {
            secret: random_hex(SECRET_BYTES)?,
            ca_fingerprint: ca_fingerprint.to_owned(),
        })
    }

    /// Parses `tdm1.<32 hex>.<64 hex>`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<JoinToken, TrustError> {
        let bad = |why: &str| {
            TrustError::Token(format!(
                "malformed join token ({why}); it looks like tdm1.<32 hex>.<64 hex>, \
                 as `tandem cluster token` prints it"
            ))
        };
        let mut parts = s.trim().split('.');
        if parts.next() != Some(JOIN_PREFIX) {
            return Err(bad("it does not start with tdm1."));
        }
        let secret = parts.next().ok_or_else(|| bad("no secret"))?;
        let fp = parts.next().ok_or_else(|| bad("no CA fingerprint"))?;
        if parts.next().is_some() {
            return Err(bad("too many parts"));
        }
        let is_hex = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(secret, SECRET_BYTES * 2) {
            return Err(bad("the secret is not 32 hex digits"));
        }
        if !is_hex(fp, 64) {
            return Err(bad("the CA fingerprint is not 64 hex digits"));
        }
        Ok(JoinToken {
            secret: secret.to_ascii_lowercase(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }

    #[must_use]
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{JOIN_PREFIX}.{}.{}", self.secret, self.ca_fingerprint)
    }
}

/// Parses a TTL such as `1h`, `30m`, `90s`, `2d` or `1h30m`; at most [`MAX_TTL`].
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    crate::model::parse_duration(s, MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_and_bad_ones_say_why() {
        let t = JoinToken::generate(&"ab".repeat(32)).unwrap();
        let s = t.to_string();
        assert!(s.starts_with("tdm1."), "{s}");
        assert_eq!(JoinToken::parse(&s).unwrap(), t);
        assert_eq!(
            JoinToken::parse(&format!("  {}\n", s.to_uppercase().replace("TDM1", "tdm1"))).unwrap(),
            t
        );
        assert_ne!(
            JoinToken::generate(&"ab".repeat(32)).unwrap().secret,
            t.secret
        );
        for (bad, why) in [
            ("", "tdm1"),
            ("tdm2.00.11", "tdm1"),
            (&format!("tdm1.{}", "a".repeat(32)), "fingerprint"),
            (
                &format!("tdm1.{}.{}", "a".repeat(31), "b".repeat(64)),
                "secret",
            ),
            (
                &format!("tdm1.{}.{}", "g".repeat(32), "b".repeat(64)),
                "secret",
            ),
            (
                &format!("tdm1.{}.{}", "a".repeat(32), "b".repeat(63)),
                "fingerprint",
            ),
            (
                &format!("tdm1.{}.{}.x", "a".repeat(32), "b".repeat(64)),
                "too many",
            ),
        ] {
            let e = JoinToken::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // The cluster stores the hash, never the secret.
        assert_eq!(t.secret_hash().len(), 64);
        assert_ne!(t.secret_hash(), t.secret);
    }

    #[test]
    fn ttls_parse_with_units_and_are_bounded() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "h", "1x", "0s", "8d", "1h 2"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_admin_token_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let a = ensure_admin_token(dir.path()).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(ensure_admin_token(dir.path()).unwrap(), a);
        let mode = std::fs::metadata(admin_token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(ct_eq(a.as_bytes(), a.as_bytes()));
        assert!(!ct_eq(a.as_bytes(), &a.as_bytes()[1..]));
        assert!(!ct_eq(b"abcd", b"abce"));
    }
}
