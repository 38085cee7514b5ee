//! The server half of peer traffic: accepts peer connections, completes the
//! mutual-TLS handshake, and feeds their RPCs to the local Raft. When an
//! authenticated connection ends, the [`Detector`] checks whether the
//! leader's process died.
//!
//! Who may call: only holders of a certificate of the cluster CA whose node
//! id is not revoked (`trust::tls::raft`); anything else ends at the
//! handshake and is counted in `tandem_raft_tls_refused_total`. How much and
//! how fast:
//! - [`MAX_CONNS`] connections at once from outside the membership, and
//!   [`MAX_CONNS_PER_IP`] from any one address: an over-limit connection is
//!   closed at once (members' addresses are exempt from the first limit, so
//!   a stranger cannot crowd the peers out, nor make `detect` see the
//!   leader's port close);
//! - [`HANDSHAKE_TIMEOUT`] to finish the handshake, [`IDLE_TIMEOUT`] between
//!   frames, [`FRAME_TIMEOUT`] for the rest of a frame once it started;
//! - frames of at most `wire::MAX_FRAME`, snapshots of at most `wire::MAX_SNAPSHOT`;
//! - `accept` errors (e.g. out of file descriptors) back off from 10 ms to 1 s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::storage::Snapshot;
use openraft::type_config::async_runtime::WatchReceiver as _;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::wire::{read_body, write_frame, Meta, Reply, Request, Vote, MAX_SNAPSHOT};
use crate::consensus::detect::Detector;
use crate::consensus::types::Raft;
use crate::metrics;

/// Connections at once from addresses outside the membership.
pub const MAX_CONNS: usize = 64;
/// Connections at once from one address (a peer needs one or two).
pub const MAX_CONNS_PER_IP: usize = 8;
/// A peer on the LAN finishes a handshake in milliseconds. Longer than
/// `detect`'s probe wait, which must not see its connection closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A leader sends a heartbeat every few ms; a candidate's connection may sit
/// idle between elections, and closing it would cost it one failed vote.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The rest of a frame, once its length arrived (a 16 MiB frame on a LAN
/// takes well under a second).
const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// Open connections per source address, and how many of them came from
/// outside the membership.
#[derive(Default)]
struct Slots {
    per_ip: HashMap<IpAddr, usize>,
    strangers: usize,
}

/// A held connection slot; released on drop.
struct Slot {
    slots: Arc<Mutex<Slots>>,
    ip: IpAddr,
    stranger: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
        if self.stranger {
            s.strangers -= 1;
        }
    }
}

fn take_slot(slots: &Arc<Mutex<Slots>>, ip: IpAddr, member: bool) -> Option<Slot> {
    let mut s = slots.lock().unwrap_or_else(PoisonError::into_inner);
    let n = s.per_ip.get(&ip).copied().unwrap_or(0);
    if n >= MAX_CONNS_PER_IP || (!member && s.strangers >= MAX_CONNS) {
        return None;
    }
    s.per_ip.insert(ip, n + 1);
    if !member {
        s.strangers += 1;
    }
    Some(Slot {
        slots: Arc::clone(slots),
        ip,
        stranger: !member,
    })
}

/// Whether `ip` is the Raft address of a member (voter or learner).
fn is_member_ip(raft: &Raft, ip: IpAddr) -> bool {
    let m = raft.metrics();
    let m = m.borrow_watched();
    let member = m
        .membership_config
        .membership()
        .nodes()
        .any(|(_, n)| n.raft.parse::<SocketAddr>().is_ok_and(|a| a.ip() == ip));
    member
}

/// Accepts peer connections on `listener` and feeds their RPCs to `raft`
/// until `cancel`. `detector` checks for a dead leader when an
/// authenticated connection ends.
pub(in crate::consensus) async fn serve(
    listener: TcpListener,
    raft: Raft,
    tls: Arc<rustls::ServerConfig>,
    detector: Arc<Detector>,
    cancel: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots: Arc<Mutex<Slots>> = Arc::default();
    let mut incoming = crate::net::Acceptor::new(listener, "raft");
    while let Some((stream, peer)) = incoming.next(&cancel).await {
        let Some(slot) = take_slot(&slots, peer.ip(), is_member_ip(&raft, peer.ip())) else {
            tracing::debug!(target: "tandem::raft", %peer, "connection limit reached; closed");
            metrics::get().raft_tls_refused.inc();
            continue;
        };
        let raft = raft.clone();
        let cancel = cancel.clone();
        let detector = Arc::clone(&detector);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let Some(tls) = handshake(&acceptor, stream, peer).await else {
                return;
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                () = connection(tls, peer, raft) => detector.peer_closed(),
            }
        });
    }
}

/// The TLS handshake, bounded in time. A refusal is counted and logged at
/// debug (a scanner must not fill the journal); a connection closed before
/// it sent a byte (`detect`'s probe, a port scan) is neither.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    // Peek so that an empty connection is told apart from a bad handshake.
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(0) | Err(_)) => return None,
        Err(_) => {
            metrics::get().raft_tls_refused.inc();
            tracing::debug!(target: "tandem::raft", %peer, "no TLS handshake in time; closed");
            return None;
        }
        Ok(Ok(_)) => {}
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(t)) => Some(t),
        Ok(Err(e)) => {
            metrics::get().raft_tls_refused.inc();
            tracing::debug!(target: "tandem::raft", %peer, error = %e, "TLS handshake refused");
            None
        }
        Err(_) => {
            metrics::get().raft_tls_refused.inc();
            tracing::debug!(target: "tandem::raft", %peer, "TLS handshake timed out");
            None
        }
    }
}

/// A snapshot being received on one connection.
struct Incoming {
    vote: Vote,
    meta: Meta,
    data: Vec<u8>,
}

/// Adds one chunk to `cur`; the error is sent back to the peer.
fn add_chunk(
    cur: &mut Option<Incoming>,
    vote: Vote,
    meta: &Meta,
    offset: u64,
    data: &[u8],
) -> Result<(), String> {
    if offset == 0 {
        *cur = Some(Incoming {
            vote,
            meta: meta.clone(),
            data: Vec::new(),
        });
    }
    let Some(inc) = cur.as_mut() else {
        return Err(format!("snapshot chunk at {offset} without a start"));
    };
    if inc.meta != *meta || inc.data.len() as u64 != offset {
        *cur = None;
        return Err(format!("snapshot chunk at {offset} out of order"));
    }
    if inc.data.len() + data.len() > MAX_SNAPSHOT {
        *cur = None;
        return Err(format!("snapshot larger than {MAX_SNAPSHOT} bytes"));
    }
    inc.data.extend_from_slice(data);
    Ok(())
}

async fn connection(mut s: TlsStream<TcpStream>, peer: SocketAddr, raft: Raft) {
    let mut snapshot: Option<Incoming> = None;
    loop {
        let len = match tokio::time::timeout(IDLE_TIMEOUT, s.read_u32()).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(target: "tandem::raft", %peer, error = %e, "peer connection closed");
                }
                return;
            }
            Err(_) => {
                tracing::debug!(target: "tandem::raft", %peer, "idle peer connection closed");
                return;
            }
        };
        let req: Request = match tokio::time::timeout(FRAME_TIMEOUT, read_body(&mut s, len)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(target: "tandem::raft", %peer, error = %e, "bad frame from an authenticated peer; closed");
                return;
            }
            Err(_) => {
                tracing::warn!(target: "tandem::raft", %peer, "frame not completed in time; closed");
                return;
            }
        };
        let reply = match req {
            Request::Append(r) => {
                Reply::Append(raft.append_entries(r).await.map_err(|e| e.to_string()))
            }
            Request::Vote(r) => Reply::Vote(raft.vote(r).await.map_err(|e| e.to_string())),
            Request::PreVote(r) => Reply::Vote(raft.pre_vote(r).await.map_err(|e| e.to_string())),
            Request::SnapshotChunk {
                vote,
                meta,
                offset,
                data,
                done,
            } => match add_chunk(&mut snapshot, vote, &meta, offset, &data) {
                Err(m) if done => Reply::Snapshot(Err(m)),
                Err(m) => Reply::Chunk(Err(m)),
                Ok(()) if !done => Reply::Chunk(Ok(())),
                Ok(()) => {
                    let inc = snapshot.take().expect("add_chunk keeps it");
                    let snap = Snapshot {
                        meta: inc.meta,
                        snapshot: crate::store::snapshot_from_bytes(inc.data),
                    };
                    Reply::Snapshot(
                        raft.install_full_snapshot(inc.vote, snap)
                            .await
                            .map_err(|e| e.to_string()),
                    )
                }
            },
            Request::TransferLeader(r) => {
                Reply::TransferLeader(match raft.handle_transfer_leader(r).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                })
            }
        };
        if let Err(e) = write_frame(&mut s, &reply).await {
            tracing::debug!(target: "tandem::raft", %peer, error = %e, "reply not sent");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_limit_per_address_and_strangers_but_not_members() {
        let slots: Arc<Mutex<Slots>> = Arc::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Slot> = (0..MAX_CONNS_PER_IP)
            .map(|_| take_slot(&slots, a, false).unwrap())
            .collect();
        assert!(take_slot(&slots, a, false).is_none());
        assert!(
            take_slot(&slots, a, true).is_none(),
            "the per-address cap holds for members too"
        );
        drop(held);
        assert!(take_slot(&slots, a, false).is_some());
        // Fill the strangers' slots from many addresses; a member still gets in.
        let many: Vec<Slot> = (0..MAX_CONNS)
            .map(|i| {
                let ip = IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8 + 1]);
                take_slot(&slots, ip, false).unwrap()
            })
            .collect();
        assert!(take_slot(&slots, "10.2.0.1".parse().unwrap(), false).is_none());
        assert!(take_slot(&slots, "10.0.0.12".parse().unwrap(), true).is_some());
        drop(many);
        assert_eq!(slots.lock().unwrap().strangers, 0);
    }
}
