//! # Layout
//! A read-only TFTP server for the node's artifact directory: RFC 1350 with
//! option negotiation (RFC 2347 OACK, 2348 `blksize`, 2349 `timeout`/`tsize`,
//! 7440 `windowsize`). Write requests are refused.
//!
//! - `packet`: pure parse/serialize of RRQ/WRQ/DATA/ACK/ERROR/OACK. Malformed
//!   input is a `ParseError`, never a panic.
//! - `session`: pure option negotiation and the send-window state machine of
//!   one transfer: events (ACK n, timer) in, what to send out. No sockets.
//! - `server`: the socket loop. The listener spawns one task per RRQ; each
//!   task resolves the file (refusing anything that escapes the root), then
//!   drives a `Session` over its own UDP socket bound to the listener's IP
//!   and `connect()`ed to the client.
//!
//! Metrics: `tftp_transfers{result=ok|timeout|not_found|denied|error}`,
//! `tftp_bytes`, `tftp_active`, `tftp_denied`. Logs go to target `tandem::tftp`.

mod packet;
mod server;
mod session;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

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

/// Binds `addr` (e.g. VIP:69) and serves until `cancel` fires. Returns after all transfer tasks ended or were aborted.
pub async fn serve(
    addr: SocketAddr,
    cfg: TftpConfig,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    let sock = UdpSocket::bind(addr)
        .await
        .map_err(|source| TftpError::Bind { addr, source })?;
    serve_socket(sock, cfg, cancel).await
}

/// Same, but with an already-bound socket (lets tests bind port 0).
pub async fn serve_socket(
    sock: UdpSocket,
    cfg: TftpConfig,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    server::serve_socket(sock, cfg, cancel).await
}
