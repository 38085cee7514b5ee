//! # Layout
//! A read-only TFTP server for the node's artifact directory: RFC 1350 with
//! option negotiation (RFC 2347 OACK, 2348 `blksize`, 2349 `timeout`/`tsize`,
//! 7440 `windowsize`). Write requests are refused.
//!
//! - `config`: [`TftpConfig`] with its defaults, and [`TftpError`].
//! - `packet`: pure parse/serialize of RRQ/WRQ/DATA/ACK/ERROR/OACK. Malformed
//!   input is a `ParseError`, never a panic.
//! - `session`: pure option negotiation and the send-window state machine of
//!   one transfer: events (ACK n, timer) in, what to send out. No sockets.
//! - `server`: the socket loop. The listener spawns one task per RRQ; each
//!   task resolves the file (refusing anything that escapes the root), then
//!   drives a `Session` over its own UDP socket bound to the listener's IP
//!   and `connect()`ed to the client. Per client address at most
//!   `MAX_TRANSFERS_PER_CLIENT` at once; read-ahead memory is bounded in all.
//! - `batch`: a window's DATA packets laid end to end and sent with UDP GSO
//!   (one `sendmsg` per up to 44 blocks of 1468 bytes), falling back to one
//!   `send` per block on a socket whose path cannot do GSO.
//! - `unknown_tid`: on the VIP, answers ACKs to ephemeral ports that no
//!   transfer owns (a client whose transfer began on the old leader) with
//!   ERROR 5, so it restarts at once instead of after its timeout.
//!
//! Metrics: `tftp_transfers{result=ok|timeout|not_found|denied|error}`,
//! `tftp_bytes`, `tftp_active`, `tftp_denied`. Logs go to target `tandem::tftp`.

mod batch;
mod config;
pub(crate) mod packet;
mod server;
pub(crate) mod session;
#[cfg(test)]
mod tests;
mod unknown_tid;

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

pub use config::{TftpConfig, TftpError, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT};

/// Binds `addr` (e.g. VIP:69) and serves until `cancel` fires. Returns after all transfer tasks ended or were aborted.
pub async fn serve(
    addr: SocketAddr,
    cfg: TftpConfig,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    let sock = UdpSocket::bind(addr)
        .await
        .map_err(|source| TftpError::Bind { addr, source })?;
    serve_bound(sock, cfg, cancel).await
}

/// Serves on `sock`, already bound to the VIP's port (the leader binds it
/// before it announces the VIP), and answers ACKs for transfers this node
/// does not know on the VIP's other ports with ERROR 5 (`unknown_tid`).
/// A socket bound to the unspecified address gets no such answerer: it
/// would answer for the host's other UDP traffic.
pub async fn serve_bound(
    sock: UdpSocket,
    cfg: TftpConfig,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    let strays = match sock.local_addr() {
        Ok(SocketAddr::V4(v4)) if !v4.ip().is_unspecified() => Some(tokio::spawn(
            unknown_tid::serve(*v4.ip(), v4.port(), cancel.child_token()),
        )),
        _ => None,
    };
    let served = serve_socket(sock, cfg, cancel).await;
    if let Some(t) = strays {
        t.abort();
        let _ = t.await;
    }
    served
}

/// Same, with an already-bound socket and no ERROR 5 answerer (lets tests
/// bind port 0 on loopback without answering the host's other traffic).
pub async fn serve_socket(
    sock: UdpSocket,
    cfg: TftpConfig,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    server::serve_socket(sock, cfg, cancel).await
}
