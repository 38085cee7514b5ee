//! # Layout
//! Raft peer traffic over mutual TLS 1.3 (DESIGN.md: 7480/tcp, section 10):
//! one persistent connection per peer, each RPC a length-prefixed JSON frame
//! and its reply. The TLS configs come from `trust::tls::raft`.
//!
//! - `wire`: the frames and the request/reply enums both halves speak.
//! - `client`: [`Network`] and its per-peer [`client::Peer`] (openraft's
//!   `RaftNetworkV2`), and `send_transfer_leader` for `detect`.
//! - `server`: [`serve`], the listener that completes the handshake (and
//!   counts refusals), bounds connections and frames, feeds RPCs to the
//!   local Raft and tells `detect` when a peer connection ends.
//!
//! ```text
//!  leader: client::Peer ──frame(Request)──▶ server::serve(): raft.append_entries/vote/...
//!                       ◀─frame(Reply)────
//! ```
//! Files depend one way: `wire` ← `client` ← `detect` ← `server`.

pub(super) mod client;
mod server;
pub(crate) mod wire;

pub use client::Network;
pub(in crate::consensus) use server::serve;
