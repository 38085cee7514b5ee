//! Socket plumbing shared by every TCP listener (the admin API, Raft, HTTP
//! boot): an `accept` that backs off on errors instead of spinning.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts on one listener. An accept error (EMFILE, ENOBUFS: the process or
/// the host is out of something) is logged and waited out, doubling from
/// 10 ms to 1 s while it lasts, so a full fd table cannot turn the loop into
/// a busy spin; the first success resets the wait.
pub struct Acceptor {
    listener: TcpListener,
    /// Names the listener in the log (`api`, `raft`, `http`).
    name: &'static str,
    backoff: Duration,
}

impl Acceptor {
    #[must_use]
    pub fn new(listener: TcpListener, name: &'static str) -> Self {
        Acceptor {
            listener,
            name,
            backoff: FIRST_BACKOFF,
        }
    }

    #[must_use]
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// The next connection, or `None` once `cancel` fires.
    ///
    /// Cancel-safe: it only awaits `accept` (cancel-safe) and a sleep.
    pub async fn next(&mut self, cancel: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let r = tokio::select! {
                () = cancel.cancelled() => return None,
                r = self.listener.accept() => r,
            };
            match r {
                Ok(x) => {
                    self.backoff = FIRST_BACKOFF;
                    return Some(x);
                }
                Err(e) => {
                    tracing::warn!(target: "tandem::net", listener = self.name, error = %e,
                        backoff_ms = self.backoff.as_millis(), "accept failed; backing off");
                    tokio::select! {
                        () = cancel.cancelled() => return None,
                        () = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
