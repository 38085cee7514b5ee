//! Fast detection of a dead leader process.
//!
//! When the leader's process dies, its kernel closes its sockets at once, so
//! the followers see their peer connections end within a millisecond, long
//! before a heartbeat is missed. A closed connection alone proves nothing (the
//! leader reconnects after any RPC error), so the follower then probes the
//! leader's Raft port:
//!
//! ```text
//!  peer connection ends ─▶ follower? leader known? ─▶ connect(leader.raft)
//!                                                       │ refused / reset: no process listens
//!                                                       ▼
//!              raft.handle_transfer_leader(from = dead leader's vote, to = successor)
//!                ├─ on every node: drop the lease kept for the dead leader
//!                └─ on the successor: elect at once (voters grant it despite their lease)
//! ```
//!
//! The successor is the lowest-id voter other than the dead leader, so the
//! survivors agree without talking and do not split the vote; each survivor
//! that notices also forwards the request to the successor, in case it has not
//! noticed yet. If it cannot win
//! (its log is behind, or it is down too), the ordinary election timers still
//! run, and with the leases dropped they win at their first expiry.
//!
//! Safety: the probe acts only on "connection refused" or a reset of a
//! freshly accepted probe, which the kernel sends when no process listens on
//! the port: a leader with no process cannot answer clients, so skipping the
//! follower-side lease (see `LEADER_LEASE_MS`) cannot let two nodes serve. A
//! timeout (cut link, frozen host) proves nothing and is left to the timers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::raft::TransferLeaderRequest;
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::network::client::send_transfer_leader;
use super::types::{NodeId, Raft};

const LOG_TARGET: &str = "tandem::raft";
/// A live leader on the LAN accepts within a millisecond; a dead host never
/// answers, and the timers handle that case anyway.
const CONNECT_TIMEOUT_MS: u64 = 50;
/// A dying process's listener still completes handshakes until the kernel
/// closes it at the end of the exit (after unmapping its memory, which takes a
/// while for a large process); then it resets them. A live server keeps the
/// connection open waiting for a request. Past this wait the timers win anyway.
const RESET_WAIT_MS: u64 = 150;
/// Forwarding the news to the successor is one small RPC on the LAN.
const FORWARD_TIMEOUT_MS: u64 = 100;

/// Watches for peer connections that end and runs at most one probe at a time.
pub(super) struct Detector {
    raft: Raft,
    /// Raft's client TLS config, for the forwarded transfer-leader request.
    tls: Arc<rustls::ClientConfig>,
    probing: AtomicBool,
}

impl Detector {
    pub(super) fn new(raft: Raft, tls: Arc<rustls::ClientConfig>) -> Arc<Self> {
        Arc::new(Self {
            raft,
            tls,
            probing: AtomicBool::new(false),
        })
    }

    /// Called when any inbound peer connection ends (EOF, reset or error).
    pub(super) fn peer_closed(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.check().await;
            me.probing.store(false, Ordering::Release);
        });
    }

    async fn check(&self) {
        let m = self.raft.server_metrics().borrow_watched().clone();
        if m.state != ServerState::Follower {
            return;
        }
        let Some(leader) = m.current_leader.filter(|l| *l != m.id) else {
            return;
        };
        let membership = m.membership_config.membership();
        let Some(info) = membership.get_node(&leader) else {
            return;
        };
        let Some(gone) = process_gone(&info.raft).await else {
            return;
        };
        // The leader may have changed while we probed; act only on the one we probed.
        if self.raft.server_metrics().borrow_watched().vote != m.vote {
            return;
        }
        let Some(successor) = successor(membership.voter_ids(), leader) else {
            return;
        };
        tracing::warn!(
            target: LOG_TARGET,
            leader,
            addr = %info.raft,
            how = gone,
            vote = %m.vote,
            successor,
            "leader process is gone; electing at once instead of waiting for the election timeout"
        );
        let req = TransferLeaderRequest::new(m.vote, successor, None);
        // Tell the successor too: it may not have noticed yet, and if its own
        // election timer and ours fired together they would split the vote.
        let forward = (successor != m.id)
            .then(|| membership.get_node(&successor).map(|n| n.raft.clone()))
            .flatten();
        if let Some(addr) = forward {
            let req = req.clone();
            let tls = Arc::clone(&self.tls);
            tokio::spawn(async move {
                if let Err(e) = send_transfer_leader(
                    &tls,
                    &addr,
                    req,
                    super::timing::scaled(FORWARD_TIMEOUT_MS),
                )
                .await
                {
                    tracing::info!(target: LOG_TARGET, successor, error = %e, "successor not told; it will notice itself or by timeout");
                }
            });
        }
        match self.raft.handle_transfer_leader(req).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::info!(target: LOG_TARGET, error = %e, "fast election not started");
            }
            Err(e) => tracing::warn!(target: LOG_TARGET, error = %e, "fast election failed"),
        }
    }
}

/// The voter that takes over from `dead`: the lowest id among the others.
fn successor(voters: impl Iterator<Item = NodeId>, dead: NodeId) -> Option<NodeId> {
    voters.filter(|v| *v != dead).min()
}

/// `Some(how)` when no process listens on `addr`; `None` when one does or we
/// cannot tell.
async fn process_gone(addr: &str) -> Option<&'static str> {
    match tokio::time::timeout(
        super::timing::scaled(CONNECT_TIMEOUT_MS),
        TcpStream::connect(addr),
    )
    .await
    {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some("refused"),
        Ok(Ok(mut s)) => {
            let mut b = [0u8; 1];
            match tokio::time::timeout(super::timing::scaled(RESET_WAIT_MS), s.read(&mut b)).await {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Some("reset"),
                // Our server never closes a connection before a request except
                // when it stops, and it steps down before it stops.
                Ok(Ok(0)) => Some("closed"),
                _ => {
                    tracing::debug!(target: LOG_TARGET, addr, "leader still accepts connections");
                    None
                }
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_is_the_lowest_other_voter() {
        assert_eq!(successor([1, 2, 3].into_iter(), 1), Some(2));
        assert_eq!(successor([1, 2, 3].into_iter(), 2), Some(1));
        assert_eq!(successor([5, 3, 4].into_iter(), 3), Some(4));
        assert_eq!(successor([7].into_iter(), 7), None);
    }

    #[tokio::test]
    async fn a_closed_port_is_gone_and_a_listening_one_is_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = l.local_addr().unwrap().to_string();
        let _accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        assert_eq!(process_gone(&live).await, None);

        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        assert_eq!(process_gone(&dead).await, Some("refused"));

        let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closing.local_addr().unwrap().to_string();
        let _closer = tokio::spawn(async move {
            while let Ok((s, _)) = closing.accept().await {
                drop(s);
            }
        });
        assert_eq!(process_gone(&addr).await, Some("closed"));
    }
}
