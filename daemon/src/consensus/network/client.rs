//! The client half of peer traffic: openraft's `RaftNetworkFactory` and
//! `RaftNetworkV2` over one persistent mutual-TLS connection per peer, and
//! the one-shot transfer-leader call of the fast-election path (`detect`).
//!
//! A refused or reset connection, or a failed TLS handshake (the peer's
//! certificate is not of our CA, not for the address dialled, or revoked),
//! comes back to openraft as `Unreachable`, a timeout as `Timeout`; the
//! caller's back-off decides what next.

use std::future::Future;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::wire::{read_frame, write_frame, Reply, Request, Vote, SNAPSHOT_CHUNK};
use crate::consensus::types::{NodeId, NodeInfo, TypeConfig};
use crate::store::SnapshotData;

type C = TypeConfig;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Remote(String);

/// Creates a [`Peer`] per target; every connection presents this node's
/// certificate and verifies the peer's (`trust::tls::raft`).
#[derive(Clone)]
pub struct Network {
    pub(in crate::consensus) tls: Arc<rustls::ClientConfig>,
}

impl RaftNetworkFactory<C> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Peer {
        Peer {
            target,
            addr: node.raft.clone(),
            tls: Arc::clone(&self.tls),
            conn: None,
        }
    }
}

/// One peer's connection; reconnects lazily after any error.
pub struct Peer {
    target: NodeId,
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    conn: Option<TlsStream<TcpStream>>,
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
                let name = crate::trust::tls::server_name(&self.addr).map_err(|e| {
                    CallError::Unreachable(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        e.to_string(),
                    ))
                })?;
                let t = TlsConnector::from(Arc::clone(&self.tls))
                    .connect(name, s)
                    .await
                    .map_err(|e| {
                        CallError::Unreachable(std::io::Error::new(
                            std::io::ErrorKind::ConnectionRefused,
                            format!("TLS handshake with {}: {e}", self.addr),
                        ))
                    })?;
                self.conn = Some(t);
            }
            let s = self.conn.as_mut().expect("connected above");
            write_frame(s, req).await.map_err(CallError::Io)?;
            read_frame::<Reply, _>(s).await.map_err(CallError::Io)
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
pub(in crate::consensus) async fn send_transfer_leader(
    tls: &Arc<rustls::ClientConfig>,
    addr: &str,
    req: TransferLeaderRequest<C>,
    ttl: Duration,
) -> Result<(), String> {
    let mut peer = Peer {
        target: 0,
        addr: addr.to_owned(),
        tls: Arc::clone(tls),
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
        let data = crate::store::snapshot_bytes(&snapshot.snapshot);
        let ttl = option.hard_ttl();
        let net = |m: String| StreamingError::Network(NetworkError::new(&Remote(m)));
        // Chunk by chunk, each acknowledged: the receiver never holds more
        // than one frame in flight, and a dead peer is noticed per chunk.
        let send = async {
            let mut offset = 0usize;
            loop {
                let end = (offset + SNAPSHOT_CHUNK).min(data.len());
                let done = end == data.len();
                let req = Request::SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    offset: offset as u64,
                    data: data[offset..end].to_vec(),
                    done,
                };
                match self.call(&req, ttl).await {
                    Ok(Reply::Chunk(Ok(()))) if !done => offset = end,
                    Ok(Reply::Snapshot(Ok(resp))) if done => return Ok(resp),
                    Ok(Reply::Snapshot(Err(m)) | Reply::Chunk(Err(m))) => return Err(net(m)),
                    Ok(_) => return Err(net("wrong reply kind".into())),
                    Err(CallError::Unreachable(e)) => {
                        return Err(StreamingError::Unreachable(Unreachable::new(&e)))
                    }
                    Err(CallError::Io(e)) => {
                        return Err(StreamingError::Network(NetworkError::new(&e)))
                    }
                    Err(CallError::Timeout) => return Err(net("snapshot timed out".into())),
                }
            }
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r,
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
