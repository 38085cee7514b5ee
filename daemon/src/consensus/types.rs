use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Command, CommandResponse};

pub type NodeId = u64;

/// What the cluster knows of a member: where to reach its Raft port and its
/// admin API (the CLI follows `api` to find the leader).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the Raft peer listener (DESIGN.md: 7480/tcp).
    pub raft: String,
    /// `host:port` of the admin API (DESIGN.md: 7481/tcp).
    pub api: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft, self.api)
    }
}

openraft::declare_raft_types!(
    /// tandem's Raft types: the log carries [`Command`]s, applying one answers a [`CommandResponse`].
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = NodeInfo,
);
