//! The wire format of peer traffic (inside mutual TLS): one RPC is a
//! length-prefixed JSON frame of a [`Request`], answered by one frame of a
//! [`Reply`].
//!
//! ```text
//!   +----------------+---------------------------+
//!   | len (u32 BE)   | JSON of Request or Reply  |
//!   +----------------+---------------------------+
//! ```
//!
//! Bounds: a frame is at most [`MAX_FRAME`]. A snapshot, the one large
//! message, travels as [`Request::SnapshotChunk`]s of [`SNAPSHOT_CHUNK`]
//! bytes, each acknowledged, and the receiver holds at most
//! [`MAX_SNAPSHOT`] bytes of one (its decompression is bounded in `store`).

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::consensus::types::TypeConfig;

type C = TypeConfig;
pub(super) type Vote = openraft::type_config::alias::VoteOf<C>;
pub(super) type Meta = openraft::type_config::alias::SnapshotMetaOf<C>;

/// Frames larger than this are refused: a peer that sends one is broken or
/// hostile. An append of openraft's default 300 entries of service configs
/// fits; a snapshot comes in chunks.
pub(crate) const MAX_FRAME: u32 = 16 << 20;
/// Raw snapshot bytes per chunk (about 4 MiB of JSON).
pub(super) const SNAPSHOT_CHUNK: usize = 1 << 20;
/// The largest (compressed) snapshot a node accepts: some million leases.
pub(super) const MAX_SNAPSHOT: usize = 256 << 20;

#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<C>),
    Vote(VoteRequest<C>),
    PreVote(VoteRequest<C>),
    /// One piece of a snapshot at byte `offset`; `done` on the last, which
    /// the receiver answers with [`Reply::Snapshot`] (the others with
    /// [`Reply::Chunk`]).
    SnapshotChunk {
        vote: Vote,
        meta: Meta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    TransferLeader(TransferLeaderRequest<C>),
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<C>, String>),
    Vote(Result<VoteResponse<C>, String>),
    Snapshot(Result<SnapshotResponse<C>, String>),
    Chunk(Result<(), String>),
    TransferLeader(Result<(), String>),
}

pub(super) async fn write_frame<T: Serialize, S: AsyncWrite + Unpin>(
    s: &mut S,
    v: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    if body.len() > MAX_FRAME as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "frame of {} bytes exceeds the {MAX_FRAME}-byte cap",
                body.len()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    s.write_all(&buf).await?;
    // TLS buffers records; a frame must leave now.
    s.flush().await
}

pub(super) async fn read_frame<T: DeserializeOwned, S: AsyncRead + Unpin>(
    s: &mut S,
) -> std::io::Result<T> {
    let len = s.read_u32().await?;
    read_body(s, len).await
}

/// The rest of a frame whose length prefix was read.
pub(super) async fn read_body<T: DeserializeOwned, S: AsyncRead + Unpin>(
    s: &mut S,
    len: u32,
) -> std::io::Result<T> {
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
