use std::fmt;

use serde::{Deserialize, Serialize};

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
