//! [`ClusterStatus`]: this node's view of the cluster as a plain value, for
//! `tandem status`, the API and the TUI. Nothing outside consensus sees
//! openraft's metrics; they are read here, once per call.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;

use super::health::peers;
use super::membership::size_warning;
use super::node::Cluster;
use super::types::{NodeId, NodeInfo};

/// This node's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl Role {
    /// The name `tandem status` prints and the API returns.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// A member's place in the membership, as this node knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
}

impl MemberRole {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Learner => "learner",
        }
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub info: NodeInfo,
    pub role: MemberRole,
    /// Entries behind the leader's log; known on the leader only.
    pub lag_entries: Option<u64>,
    /// Time since it last acked a heartbeat; known on the leader only.
    pub silence: Option<Duration>,
}

/// This node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// What an operator should know: silent peers, a cluster too small to
    /// survive a failure, a fenced leader, no leader at all.
    pub warnings: Vec<String>,
}

impl Cluster {
    /// This node's view of the cluster now.
    #[must_use]
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let health = peers(&m);
        let members = mem
            .nodes()
            .map(|(id, info)| {
                let h = health.iter().find(|h| h.id == *id);
                MemberStatus {
                    id: *id,
                    info: info.clone(),
                    role: if Some(*id) == m.current_leader {
                        MemberRole::Leader
                    } else if voters.contains(id) {
                        MemberRole::Follower
                    } else {
                        MemberRole::Learner
                    },
                    lag_entries: h.map(|h| h.lag_entries),
                    silence: h.and_then(|h| h.silence),
                }
            })
            .collect();
        let mut warnings = Vec::new();
        for h in health.iter().filter(|h| h.is_silent()) {
            warnings.push(match h.silence {
                Some(d) => format!(
                    "node {} has not answered heartbeats for {:.1} s ({} entries behind)",
                    h.id,
                    d.as_secs_f64(),
                    h.lag_entries
                ),
                None => format!(
                    "node {} has never answered a heartbeat from this leader",
                    h.id
                ),
            });
        }
        if let Some(w) = size_warning(voters.len()) {
            warnings.push(w.to_owned());
        }
        if m.state == ServerState::Leader && !self.holds_lease() {
            warnings.push(
                "leader without quorum contact: fenced (not serving) until a quorum answers".into(),
            );
        }
        if m.current_leader.is_none() {
            warnings.push("no leader known: no quorum reachable from this node".into());
        }
        ClusterStatus {
            id: m.id,
            role,
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            members,
            warnings,
        }
    }

    /// The admin API address of the leader this node knows, if any (where
    /// writes sent here are redirected).
    #[must_use]
    pub fn leader_api(&self) -> Option<String> {
        let m = self.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.api.clone())
    }
}
