//! Membership: adding, removing and handing over to members on the leader,
//! and the join protocol of a node that gives up its own cluster of one.
//!
//! ```text
//!  tandem cluster join ADDR (on the new node)
//!    └▶ JoinMarker::write(ADDR); the epoch ends
//!  next epoch: Store::discard, Raft starts uninitialised
//!    └▶ join(): ask ADDR (any member; followers redirect) to add us,
//!               with back-off, until we see ourselves in the membership
//!    └▶ JoinMarker::clear
//!  leader: add_member(): learner ──catch up──▶ voter
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::{ChangeMembers, ServerState};
use tokio_util::sync::CancellationToken;

use super::node::Cluster;
use super::types::{NodeId, NodeInfo, TypeConfig};
use crate::model::Command;

/// Why a membership change or handover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    #[error("no other voter to hand leadership to")]
    NoTarget,
    #[error(
        "node {0} leads: hand leadership over first (`tandem cluster handover`), then remove it"
    )]
    IsLeader(NodeId),
    #[error("{0}")]
    Raft(String),
}

/// The warning for a cluster too small to survive a failure, if it is one:
/// computed here once, for the log and for `tandem status`.
#[must_use]
pub fn size_warning(voters: usize) -> Option<&'static str> {
    (voters == 2).then_some("a cluster of two cannot survive the loss of either node; add a third")
}

impl Cluster {
    pub(super) fn not_leader(&self) -> MembershipError {
        MembershipError::NotLeader {
            leader: self.raft.metrics().borrow_watched().current_leader,
        }
    }

    fn map_write_err(
        &self,
        e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    ) -> MembershipError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => self.not_leader(),
            other => MembershipError::Raft(other.to_string()),
        }
    }

    /// Adds a node: first as a learner (it catches up by snapshot and log),
    /// then as a voter. Runs on the leader.
    pub async fn add_member(&self, id: NodeId, info: NodeInfo) -> Result<(), MembershipError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return Err(self.not_leader());
        }
        let mem = m.membership_config.membership();
        // Idempotent: a joining node retries until it sees itself as a member.
        if mem.voter_ids().any(|v| v == id) {
            return Ok(());
        }
        if mem.get_node(&id).is_none() {
            tracing::info!(target: "tandem::raft", node = id, %info, "adding member as learner");
            self.raft
                .change_membership(ChangeMembers::AddNodes([(id, info)].into()), true)
                .await
                .map_err(|e| self.map_write_err(&e))?;
        }
        tracing::info!(target: "tandem::raft", node = id, "promoting learner to voter");
        let r = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds([id].into()), true)
            .await
            .map_err(|e| self.map_write_err(&e))?;
        tracing::info!(target: "tandem::raft", node = id, index = r.log_id.index, "member added");
        if let Some(w) = size_warning(self.voters().len()) {
            tracing::warn!(target: "tandem::raft", "{w}");
        }
        Ok(())
    }

    /// Removes a node from the membership. Runs on the leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MembershipError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.membership_config.membership().get_node(&id).is_none() {
            return Err(MembershipError::UnknownNode(id));
        }
        // Its revocation is proposed after the removal commits, by a leader
        // that must still lead then.
        if id == self.id && m.state == ServerState::Leader {
            return Err(MembershipError::IsLeader(id));
        }
        let voters: std::collections::BTreeSet<NodeId> =
            m.membership_config.membership().voter_ids().collect();
        if voters.contains(&id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                .await
                .map_err(|e| self.map_write_err(&e))?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                .await
                .map_err(|e| self.map_write_err(&e))?;
        }
        tracing::info!(target: "tandem::raft", node = id, "member removed");
        // From now on its certificate is refused (by every node, as they
        // apply this), so a removed node cannot come back on its own.
        let r = self
            .raft
            .client_write(Command::RevokeNode { node: id })
            .await
            .map_err(|e| self.map_write_err(&e))?;
        tracing::info!(target: "tandem::raft", node = id, index = r.log_id.index, "certificate revoked");
        Ok(())
    }

    /// Hands leadership to `to`, or to the most caught-up other voter.
    pub async fn handover(&self, to: Option<NodeId>) -> Result<NodeId, MembershipError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return Err(self.not_leader());
        }
        let voters: Vec<NodeId> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .collect();
        let target = match to {
            Some(t) if voters.contains(&t) => t,
            Some(t) => return Err(MembershipError::UnknownNode(t)),
            None => {
                let matched = |id: &NodeId| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .map_or(0, |l| l.index)
                };
                *voters
                    .iter()
                    .max_by_key(|id| matched(id))
                    .ok_or(MembershipError::NoTarget)?
            }
        };
        tracing::info!(target: "tandem::raft", term = m.current_term, index = m.last_log_index.unwrap_or(0), to = target, "handing over leadership");
        self.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| MembershipError::Raft(e.to_string()))?;
        Ok(target)
    }
}

/// Present while this node waits to be added to another cluster; holds that
/// cluster's API address. While it exists, the node never initialises a
/// cluster of its own, and each start discards the local database first.
pub struct JoinMarker {
    path: PathBuf,
}

impl JoinMarker {
    #[must_use]
    pub fn new(data_dir: &Path) -> JoinMarker {
        JoinMarker {
            path: data_dir.join("join-pending"),
        }
    }

    /// The cluster address this node is joining, if a join is pending.
    #[must_use]
    pub fn pending(&self) -> Option<String> {
        std::fs::read_to_string(&self.path)
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Records that this node joins the cluster at `addr`.
    pub fn write(&self, addr: &str) -> std::io::Result<()> {
        std::fs::write(&self.path, addr)
    }

    /// The join is done.
    pub fn clear(&self) -> std::io::Result<()> {
        std::fs::remove_file(&self.path)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Asks the cluster at `addr` to add this node, through `ask` (the admin API
/// client, injected by the app so consensus does not depend on the API),
/// until this node sees itself in the membership; then clears the marker.
/// Retries with doubling back-off from 200 ms to 5 s.
///
/// cancel-safety: meant to be spawned; `cancel` ends it.
pub async fn join<F, Fut>(
    cluster: Cluster,
    marker: JoinMarker,
    addr: String,
    ask: F,
    cancel: CancellationToken,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        if cluster.is_member() {
            break;
        }
        tracing::info!(target: "tandem::raft", node = cluster.id, cluster = %addr, "asking the cluster to add this node");
        match ask(addr.clone()).await {
            Ok(message) => tracing::info!(target: "tandem::raft", "{message}"),
            Err(e) => {
                tracing::warn!(target: "tandem::raft", error = %e, "join request failed; retrying");
            }
        }
        if cluster.is_member() {
            break;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    match marker.clear() {
        Ok(()) => tracing::info!(target: "tandem::raft", node = cluster.id, "joined the cluster"),
        Err(e) => {
            tracing::error!(target: "tandem::raft", error = %e, path = %marker.path().display(), "joined, but cannot remove the join marker");
        }
    }
}
