//! Raft peer traffic over TCP (DESIGN.md: 7480/tcp): one persistent
//! connection per peer, each RPC a length-prefixed JSON frame and its reply.
//!
//! ```text
//!  leader: RaftNetworkV2 (Peer) ──frame(Request)──▶ serve(): raft.append_entries/vote/...
//!                               ◀─frame(Reply)────
//! ```
//! A refused or reset connection comes back to openraft as `Unreachable`, a
//! timeout as `Timeout`; the caller's back-off decides what next.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::detect::Detector;
use super::types::{NodeId, NodeInfo, TypeConfig};
use super::Raft;
use crate::store::SnapshotData;

type C = TypeConfig;
type Vote = openraft::type_config::alias::VoteOf<C>;
type Meta = openraft::type_config::alias::SnapshotMetaOf<C>;

/// Frames larger than this are refused: a peer that sends one is broken or hostile.
const MAX_FRAME: u32 = 256 << 20;

#[derive(Serialize, Deserialize)]
enum Request {
    Append(AppendEntriesRequest<C>),
    Vote(VoteRequest<C>),
    PreVote(VoteRequest<C>),
    Snapshot {
        vote: Vote,
        meta: Meta,
        data: Vec<u8>,
    },
    TransferLeader(TransferLeaderRequest<C>),
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Append(Result<AppendEntriesResponse<C>, String>),
    Vote(Result<VoteResponse<C>, String>),
    Snapshot(Result<SnapshotResponse<C>, String>),
    TransferLeader(Result<(), String>),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Remote(String);

async fn write_frame<T: Serialize>(s: &mut TcpStream, v: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    s.write_all(&buf).await
}

async fn read_frame<T: DeserializeOwned>(s: &mut TcpStream) -> std::io::Result<T> {
    let len = s.read_u32().await?;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Creates a [`Peer`] per target.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<C> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Peer {
        Peer {
            target,
            addr: node.raft.clone(),
            conn: None,
        }
    }
}

/// One peer's connection; reconnects lazily after any error.
pub struct Peer {
    target: NodeId,
    addr: String,
    conn: Option<TcpStream>,
}

#[derive(Debug)]
enum CallError {
    Unreachable(std::io::Error),
    Io(std::io::Error),
    Timeout,
}

impl Peer {
    async fn call(&mut self, req: &Request, ttl: Duration) -> Result<Reply, CallError> {
        let fut = async {
            if self.conn.is_none() {
                let s = TcpStream::connect(&self.addr)
                    .await
                    .map_err(CallError::Unreachable)?;
                s.set_nodelay(true).map_err(CallError::Io)?;
                self.conn = Some(s);
            }
            let s = self.conn.as_mut().expect("connected above");
            write_frame(s, req).await.map_err(CallError::Io)?;
            read_frame::<Reply>(s).await.map_err(CallError::Io)
        };
        let r = match tokio::time::timeout(ttl, fut).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        if r.is_err() {
            // The stream may hold half a frame; never reuse it.
            self.conn = None;
        }
        r
    }

    fn rpc_err(&self, e: CallError) -> RPCError<C> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            CallError::Io(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::Timeout => RPCError::Network(NetworkError::new(&std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "peer {} ({}) did not answer in time",
                    self.target, self.addr
                ),
            ))),
        }
    }
}

/// Sends one transfer-leader request to the peer at `addr` on a fresh
/// connection (the fast-election path in `detect`, which has no [`Peer`]).
pub(super) async fn send_transfer_leader(
    addr: &str,
    req: TransferLeaderRequest<C>,
    ttl: Duration,
) -> Result<(), String> {
    let mut peer = Peer {
        target: 0,
        addr: addr.to_owned(),
        conn: None,
    };
    match peer.call(&Request::TransferLeader(req), ttl).await {
        Ok(Reply::TransferLeader(r)) => r,
        Ok(_) => Err("peer sent a reply of the wrong kind".into()),
        Err(e) => Err(format!("{e:?}")),
    }
}

fn remote(msg: String) -> RPCError<C> {
    RPCError::Network(NetworkError::new(&Remote(msg)))
}

fn unexpected() -> RPCError<C> {
    remote("peer sent a reply of the wrong kind".into())
}

impl RaftNetworkV2<C> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        match self
            .call(&Request::Append(rpc), option.soft_ttl())
            .await
            .map_err(|e| self.rpc_err(e))?
        {
            Reply::Append(r) => r.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        match self
            .call(&Request::Vote(rpc), option.soft_ttl())
            .await
            .map_err(|e| self.rpc_err(e))?
        {
            Reply::Vote(r) => r.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        match self
            .call(&Request::PreVote(rpc), option.soft_ttl())
            .await
            .map_err(|e| self.rpc_err(e))?
        {
            Reply::Vote(r) => r.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<C, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let req = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data: crate::store::snapshot_bytes(&snapshot.snapshot),
        };
        let ttl = option.hard_ttl();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call(&req, ttl) => match r {
                Ok(Reply::Snapshot(Ok(resp))) => Ok(resp),
                Ok(Reply::Snapshot(Err(m))) => Err(StreamingError::Network(NetworkError::new(&Remote(m)))),
                Ok(_) => Err(StreamingError::Network(NetworkError::new(&Remote("wrong reply kind".into())))),
                Err(CallError::Unreachable(e)) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
                Err(CallError::Io(e)) => Err(StreamingError::Network(NetworkError::new(&e))),
                Err(CallError::Timeout) => Err(StreamingError::Network(NetworkError::new(&Remote("snapshot timed out".into())))),
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<openraft::raft::TransferLeaderResponse<C>, RPCError<C>> {
        match self
            .call(&Request::TransferLeader(req), option.soft_ttl())
            .await
            .map_err(|e| self.rpc_err(e))?
        {
            Reply::TransferLeader(r) => r.map_err(remote).map(Ok),
            _ => Err(unexpected()),
        }
    }
}

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
