//! The server half of peer traffic: accepts peer connections and feeds
//! their RPCs to the local Raft. When a connection ends, the [`Detector`]
//! checks whether the leader's process died.

use std::net::SocketAddr;
use std::sync::Arc;

use openraft::storage::Snapshot;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::wire::{read_frame, write_frame, Reply, Request};
use crate::consensus::detect::Detector;
use crate::consensus::types::Raft;

/// Accepts peer connections on `addr` and feeds their RPCs to `raft` until `cancel`.
/// When a connection ends, [`Detector`] checks whether the leader's process died.
pub async fn serve(listener: TcpListener, raft: Raft, cancel: CancellationToken) {
    let detector = Detector::new(raft.clone());
    loop {
        // cancel-safety: accept is cancel-safe.
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!(target: "tandem::raft", error = %e, "accept failed"); continue; }
            },
        };
        let raft = raft.clone();
        let cancel = cancel.clone();
        let detector = Arc::clone(&detector);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            tokio::select! {
                () = cancel.cancelled() => {}
                () = connection(stream, peer, raft) => detector.peer_closed(),
            }
        });
    }
}

async fn connection(mut s: TcpStream, peer: SocketAddr, raft: Raft) {
    loop {
        let req: Request = match read_frame(&mut s).await {
            Ok(r) => r,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(target: "tandem::raft", %peer, error = %e, "peer connection closed");
                }
                return;
            }
        };
        let reply = match req {
            Request::Append(r) => {
                Reply::Append(raft.append_entries(r).await.map_err(|e| e.to_string()))
            }
            Request::Vote(r) => Reply::Vote(raft.vote(r).await.map_err(|e| e.to_string())),
            Request::PreVote(r) => Reply::Vote(raft.pre_vote(r).await.map_err(|e| e.to_string())),
            Request::Snapshot { vote, meta, data } => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: crate::store::snapshot_from_bytes(data),
                };
                Reply::Snapshot(
                    raft.install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
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
