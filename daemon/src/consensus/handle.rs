use std::future::Future;

use crate::model::{Command, CommandResponse, State};

/// Why a proposal did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader (or stepped down meanwhile); `leader` is
    /// who it believes leads, if anyone.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// The commit did not reach a quorum in time, or Raft stopped.
    #[error("not committed: {0}")]
    Failed(String),
}

/// What services see of the cluster: propose a command (returns once it is
/// committed on a quorum and applied here) and read the applied state.
/// Services depend on this trait only, so their tests can use a fake.
pub trait ClusterHandle: Clone + Send + Sync + 'static {
    /// cancel-safety: dropping the future does not withdraw the proposal; it
    /// may still commit.
    fn propose(
        &self,
        cmd: Command,
    ) -> impl Future<Output = Result<CommandResponse, ProposeError>> + Send;

    /// Runs `f` against the applied state. `f` must not block.
    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R;
}
