//! What the TFTP server serves and how patiently, and why it may not start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Retransmit interval when the client does not negotiate `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Retransmissions of one window before a transfer is abandoned.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// What the server serves and how patiently.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// The artifact directory. Only files that resolve inside it (after
    /// following symlinks) are served.
    pub root: PathBuf,
    /// Retransmit interval unless the client negotiates `timeout`. Must be > 0.
    pub default_timeout: Duration,
    /// Timer-driven retransmissions of a window before giving up.
    pub max_retries: u32,
}

impl TftpConfig {
    /// A config serving `root` with the default timeout (1 s) and retries (5).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TftpConfig {
            root: root.into(),
            default_timeout: DEFAULT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }
}

/// Errors that stop the server from starting. Per-transfer failures never
/// surface here: they are answered with an ERROR packet, counted and logged.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("cannot bind the TFTP socket on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TFTP root {path} is not usable; it must be an existing directory")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TFTP root {0} is not a directory")]
    RootNotDir(PathBuf),
    #[error("cannot read the TFTP socket's local address")]
    LocalAddr(#[source] std::io::Error),
    #[error("invalid TFTP config: {0}")]
    Config(&'static str),
}
