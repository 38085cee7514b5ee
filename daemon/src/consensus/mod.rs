//! # Layout
//! The only module (with `store`) that touches openraft. The rest of the
//! daemon sees a closed face: [`Cluster`]'s verbs and plain values
//! ([`ClusterStatus`], [`Leadership`]), and [`ClusterHandle`] for services.
//!
//! - `types`: [`TypeConfig`] (log payload = [`crate::model::Command`]),
//!   [`NodeInfo`], the `Raft` alias (private) and [`NodeStore`].
//! - `handle`: [`ClusterHandle`], the small interface services use (propose, read).
//! - `network`: Raft RPCs between peers over TCP: `wire`, `client`, `server`.
//! - `detect`: a follower whose peer connection ends probes the leader's port
//!   and, if no process listens there, starts the election at once.
//! - `health`: peer lag and silence on the leader (metrics, log).
//! - `node`: starting Raft on the store ([`Cluster::start`]), the timers,
//!   leadership watch, ensure-applied and shutdown; this process's log
//!   [`position`] (term, index) for every log line.
//! - `membership`: add, remove, handover, and the join protocol ([`join`], [`JoinMarker`]).
//! - `status`: [`ClusterStatus`], this node's view as a plain value.
//!
//! Files depend one way: `types` and `handle` at the bottom; then
//! `network::wire` ← `network::client` ← `detect` ← `network::server`, and
//! `health`; `node` above those; `membership` above `node`; `status` on top.

mod detect;
mod handle;
mod health;
mod membership;
pub(crate) mod network;
mod node;
mod status;
mod timing;
mod types;

pub use handle::{ClusterHandle, ProposeError};
pub use membership::{join, size_warning, JoinMarker, MembershipError};
pub use node::{
    position, scaled, scaled_ms, Cluster, ConsensusError, EnsureError, Leadership, RaftFatal,
    ELECTION_MAX_MS, ELECTION_MIN_MS, HEARTBEAT_MS, LEADER_LEASE_MS, LEASE_CHECK_MS,
};
pub use status::{ClusterStatus, MemberRole, MemberStatus, Role};
pub use types::{NodeId, NodeInfo, NodeStore, TypeConfig};

/// The log filter that keeps openraft's per-heartbeat chatter out of the
/// journal by default: it warns on every failed heartbeat and replication
/// RPC (dozens a second while a peer is down); `health` reports a silent
/// peer once instead. `TANDEM_LOG` overrides it.
pub const QUIET_OPENRAFT_LOG: &str = "openraft=warn,openraft::core::heartbeat=error,\
    openraft::replication=error,openraft::engine::handler::replication_handler=error";
