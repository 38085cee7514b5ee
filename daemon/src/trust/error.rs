//! The errors of `trust`.

use std::path::PathBuf;

/// Why trust material could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Cert { what: String, message: String },
    #[error("{0}")]
    Token(String),
    #[error("TLS config: {0}")]
    Tls(String),
}

pub(super) fn cert_err(what: &str) -> impl Fn(rcgen::Error) -> TrustError + '_ {
    move |e| TrustError::Cert {
        what: what.to_owned(),
        message: e.to_string(),
    }
}
