pub use crate::model::NodeInfo;
use crate::model::{Command, CommandResponse};
use crate::store::StateMachine;

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// tandem's Raft types: the log carries [`Command`]s, applying one answers a [`CommandResponse`].
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = NodeInfo,
);

/// The Raft instance: our type config over the redb state machine. Private
/// to consensus: the rest of the daemon asks [`super::Cluster`] for verbs.
pub(super) type Raft = openraft::Raft<TypeConfig, StateMachine<TypeConfig>>;

/// The store as consensus instantiates it.
pub type NodeStore = crate::store::Store<TypeConfig>;
