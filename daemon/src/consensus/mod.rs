//! # Layout
//! The only module that touches openraft.
//!
//! - `types`: [`TypeConfig`] (log payload = [`crate::model::Command`]) and [`NodeInfo`].
//! - `handle`: [`ClusterHandle`], the small interface services use (propose, read).
//! - `network`: Raft RPCs between peers over TCP (length-prefixed JSON frames).
//! - `detect`: a follower whose peer connection ends probes the leader's port
//!   and, if no process listens there, starts the election at once.
//! - `health`: peer lag and silence on the leader (metrics, status, log).
//! - `node`: starting Raft on the store ([`Cluster::start`]), leadership watch.

mod detect;
mod handle;
mod health;
mod network;
mod node;
mod types;

pub use handle::{ClusterHandle, ProposeError};
pub use health::{peers as peer_health, PeerHealth};
pub use node::{
    Cluster, ConsensusError, Leadership, MembershipError, ELECTION_MAX_MS, ELECTION_MIN_MS,
    HEARTBEAT_MS, LEADER_LEASE_MS, LEASE_CHECK_MS,
};
pub use types::{NodeId, NodeInfo, TypeConfig};

/// The Raft instance: our type config over the redb state machine.
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachine>;
