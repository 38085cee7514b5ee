//! # Layout
//! The DHCP (IPv4) responder, split by concern:
//!
//! ```text
//!   bytes ─▶ request ─▶ handler ─▶ dispatch ─▶ reply sink
//!            (typed)    (decide)   (commit, then reply)
//! ```
//!
//! - [`server`]: the socket loop: bind, receive, decode, decide, dispatch;
//!   the UDP/raw-link sender; counts malformed packets.
//! - [`request`]: wire decoding that dhcproto cannot panic on, and the typed
//!   [`request::Request`] (MAC, addresses, options read once).
//! - [`handler`]: the pure decision `(request, view, allocator) -> Action`.
//! - [`allocator`]: the outstanding-offer table, the bound [`allocator::Pool`]
//!   view of one subnet (freedom rule), and the free-address picker.
//! - [`reply`]: reply building: destination (RFC 2131 4.1), echoed fields,
//!   subnet and boot options, fitting to the client's maximum size.
//! - [`dispatch`]: [`dispatch::Responder`] carries actions out through a
//!   `ClusterHandle` and a [`dispatch::ReplySink`]: an ACK only after its
//!   commit, nothing after leadership is lost.
//! - `tests`: the handler and the dispatch driven together (a fake cluster
//!   and a recording sink), by theme.

pub mod allocator;
pub mod dispatch;
pub mod handler;
pub mod reply;
pub mod request;
pub mod server;
#[cfg(test)]
mod tests;
