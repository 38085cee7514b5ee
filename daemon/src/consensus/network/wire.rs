//! The wire format of peer traffic: one RPC is a length-prefixed JSON frame
//! of a [`Request`], answered by one frame of a [`Reply`].
//!
//! ```text
//!   +----------------+---------------------------+
//!   | len (u32 BE)   | JSON of Request or Reply  |
//!   +----------------+---------------------------+
//! ```

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::consensus::types::TypeConfig;

type C = TypeConfig;
pub(super) type Vote = openraft::type_config::alias::VoteOf<C>;
pub(super) type Meta = openraft::type_config::alias::SnapshotMetaOf<C>;

/// Frames larger than this are refused: a peer that sends one is broken or hostile.
pub(crate) const MAX_FRAME: u32 = 256 << 20;

#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
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
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<C>, String>),
    Vote(Result<VoteResponse<C>, String>),
    Snapshot(Result<SnapshotResponse<C>, String>),
    TransferLeader(Result<(), String>),
}

pub(super) async fn write_frame<T: Serialize>(s: &mut TcpStream, v: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    s.write_all(&buf).await
}

pub(super) async fn read_frame<T: DeserializeOwned>(s: &mut TcpStream) -> std::io::Result<T> {
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
