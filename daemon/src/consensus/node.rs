use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::handle::{ClusterHandle, ProposeError};
use super::network::{self, Network};
use super::types::{NodeId, NodeInfo};
use super::Raft;
use crate::config::NodeConfig;
use crate::metrics;
use crate::model::{Command, CommandResponse, State};
use crate::store::{StateView, Store};

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("invalid Raft timing config: {0}")]
    Config(String),
    #[error("cannot listen for Raft peers on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Raft failed to start: {0}")]
    Start(String),
    #[error("cannot initialise the single-node cluster: {0}")]
    Init(String),
}

/// Raft timing, tuned for a LAN (DESIGN.md section 2): heartbeats every 50 ms,
/// elections after 150–300 ms of silence.
pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MIN_MS: u64 = 150;
pub const ELECTION_MAX_MS: u64 = 300;

/// This node's view of leadership, derived from openraft's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    pub is_leader: bool,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
}

/// A running Raft node plus the applied-state view: the [`ClusterHandle`]
/// services use.
#[derive(Clone)]
pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    view: StateView,
    leadership: watch::Receiver<Leadership>,
}

impl Cluster {
    /// Starts Raft on `store`, listens for peers, and, on a fresh data dir,
    /// initialises a cluster of one (every node starts as its own cluster and
    /// grows by `join`).
    pub async fn start(cfg: &NodeConfig, store: &Store, cancel: CancellationToken) -> Result<Cluster, ConsensusError> {
        let rc = openraft::Config {
            cluster_name: "tandem".into(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_MIN_MS,
            election_timeout_max: ELECTION_MAX_MS,
            // Snapshot every 10k entries keeps the log short and restart fast.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConsensusError::Config(e.to_string()))?;
        let listener = TcpListener::bind(cfg.raft_listen)
            .await
            .map_err(|source| ConsensusError::Listen { addr: cfg.raft_listen, source })?;
        let raft = Raft::new(cfg.node_id, Arc::new(rc), Network, store.log_store(), store.state_machine())
            .await
            .map_err(|e| ConsensusError::Start(e.to_string()))?;
        tokio::spawn(network::serve(listener, raft.clone(), cancel.clone()));
        let me = NodeInfo { raft: cfg.raft_listen.to_string(), api: cfg.api_listen.to_string() };
        if !raft.is_initialized().await.map_err(|e| ConsensusError::Start(e.to_string()))? {
            let members: BTreeMap<NodeId, NodeInfo> = [(cfg.node_id, me)].into();
            raft.initialize(members).await.map_err(|e| ConsensusError::Init(e.to_string()))?;
            tracing::info!(target: "tandem::raft", node = cfg.node_id, "initialised a new cluster of one");
        }
        let leadership = spawn_leadership_watch(&raft, cancel);
        Ok(Cluster { id: cfg.node_id, raft, view: store.view(), leadership })
    }

    /// Follows leadership changes (for the transition driver, status and metrics).
    #[must_use]
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    #[must_use]
    pub fn view(&self) -> &StateView {
        &self.view
    }
}

fn spawn_leadership_watch(raft: &Raft, cancel: CancellationToken) -> watch::Receiver<Leadership> {
    let mut metrics_rx = raft.metrics();
    let (tx, rx) = watch::channel(Leadership::default());
    tokio::spawn(async move {
        let mut last_leader = None;
        loop {
            let l = {
                let m = metrics_rx.borrow_and_update();
                Leadership {
                    is_leader: m.state == ServerState::Leader,
                    term: m.current_term,
                    leader: m.current_leader,
                    last_log_index: m.last_log_index,
                    applied_index: m.last_applied.as_ref().map(|l| l.index),
                }
            };
            let g = metrics::get();
            g.raft_term.set(i64::try_from(l.term).unwrap_or(i64::MAX));
            g.raft_is_leader.set(i64::from(l.is_leader));
            g.raft_last_log_index.set(i64::try_from(l.last_log_index.unwrap_or(0)).unwrap_or(i64::MAX));
            if l.leader != last_leader {
                if l.leader.is_some() {
                    g.raft_leader_changes.inc();
                }
                tracing::info!(target: "tandem::raft", term = l.term, index = l.last_log_index.unwrap_or(0), leader = ?l.leader, "leader changed");
                last_leader = l.leader;
            }
            tx.send_if_modified(|cur| {
                if *cur == l {
                    false
                } else {
                    *cur = l;
                    true
                }
            });
            tokio::select! {
                () = cancel.cancelled() => return,
                r = metrics_rx.changed() => if r.is_err() { return },
            }
        }
    });
    rx
}

impl ClusterHandle for Cluster {
    async fn propose(&self, cmd: Command) -> Result<CommandResponse, ProposeError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader { leader: f.leader_id }),
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.view.read(f)
    }
}
