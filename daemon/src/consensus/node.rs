use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::{ReadPolicy, ServerState};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::detect::Detector;
use super::handle::{ClusterHandle, ProposeError};
use super::network::{self, Network};
use super::types::{NodeId, NodeInfo, NodeStore, Raft};
use crate::config::NodeConfig;
use crate::metrics;
use crate::model::{Command, CommandResponse, State};
use crate::store::StateView;
use crate::trust::tls::Revoked;
use crate::trust::Material;

/// Why Raft stopped on its own ([`Cluster::fatal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftFatal {
    /// A storage error (disk full, I/O error), with its causes.
    Storage(String),
    /// Raft's core task panicked.
    Panicked,
}

/// Why [`Cluster::ensure_applied`] could not confirm an up-to-date view.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("no quorum confirmed leadership within {0:?}")]
    Timeout(Duration),
    #[error("not leader after all: {0}")]
    NotLeader(String),
}

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

/// Raft timing, tuned for a LAN (DESIGN.md section 2).
///
/// openraft 0.10 keeps, on each follower, a lease of `ELECTION_MAX_MS` since
/// the last heartbeat during which it refuses (pre-)votes, and a follower's
/// election timer runs *after* that lease: it campaigns at last heartbeat +
/// `ELECTION_MAX_MS` + a random `ELECTION_MIN_MS..ELECTION_MAX_MS`, here
/// 170–220 ms. That is the failover time of a silent failure (cut link,
/// frozen host). A dead process is detected by its refused port and elects at
/// once (`detect`). Ten heartbeats fit in the shortest silence, and the Raft
/// threads' raised priority keeps them timely under CPU load. Measured with
/// `cargo xtask bench failover` and `cargo xtask bench stability`.
pub const HEARTBEAT_MS: u64 = 15;
pub const ELECTION_MIN_MS: u64 = 60;
pub const ELECTION_MAX_MS: u64 = 110;

/// The leader lease (fencing). A leader serves only while a quorum acked a
/// heartbeat that it *sent* less than `LEADER_LEASE_MS` ago.
///
/// Timing argument (numbers from the constants above):
/// - `last_quorum_acked` is the *send* time `S` of the newest heartbeat or
///   append that a quorum acknowledged; every follower that acked it received
///   it at or after `S`.
/// - A new leader needs the vote of at least one of those followers (quorums
///   intersect), and each refuses every (pre-)vote until its lease of
///   `ELECTION_MAX_MS` (110 ms) since its last heartbeat has run out. So no
///   new leader exists before `S` + 110 ms, even if the candidate is a node
///   that was cut off long ago and campaigns all the time.
/// - Our lease ends at `S` + 50 ms; the app checks it every `LEASE_CHECK_MS`
///   (5 ms) and steps down at once: cancelling the responders stops replies
///   (a reply already decided checks the token before it is sent), then XDP
///   drop, then VIP removal. So the old leader sends nothing after about
///   `S` + 56 ms: 54 ms of margin for a late timer on a loaded box.
/// - With heartbeats every 15 ms, a healthy leader renews the lease about
///   three times per lease period, so a late heartbeat or two does not
///   interrupt service.
/// - The one exception, `detect`: followers drop their lease and elect at once
///   only after the leader's Raft port refused a connection, that is when no
///   leader process exists to answer clients at all.
pub const LEADER_LEASE_MS: u64 = 50;
/// How long Raft waits for more client writes to batch into one append.
const LINGER_MS: u64 = 1;
/// How often the app checks the leader lease.
pub const LEASE_CHECK_MS: u64 = 5;

pub use super::timing::{scaled, scaled_ms, set_timing_scale};

/// This node's place in the log, for log lines: the current term and last
/// log index, kept up to date by the leadership watch (which wakes on every
/// change of Raft's metrics), read by the log formatter. Zero until Raft
/// has started in this process ([`position`] says `None` then).
static POSITION: Position = Position {
    term: AtomicU64::new(0),
    index: AtomicU64::new(0),
    known: AtomicBool::new(false),
};

struct Position {
    term: AtomicU64,
    index: AtomicU64,
    known: AtomicBool,
}

/// `(term, last log index)` of this process's Raft node as of now; `None`
/// before Raft first started. Every log line carries it (`app::logging`),
/// so the logs of several nodes line up (DESIGN.md section 6).
#[must_use]
pub fn position() -> Option<(u64, u64)> {
    POSITION.known.load(Ordering::Relaxed).then(|| {
        (
            POSITION.term.load(Ordering::Relaxed),
            POSITION.index.load(Ordering::Relaxed),
        )
    })
}

fn set_position(term: u64, index: u64) {
    POSITION.term.store(term, Ordering::Relaxed);
    POSITION.index.store(index, Ordering::Relaxed);
    POSITION.known.store(true, Ordering::Relaxed);
}

/// This node's view of leadership, derived from openraft's metrics. It holds
/// only what changes on an election, so watchers wake on elections, not on
/// every commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    pub is_leader: bool,
    pub term: u64,
    pub leader: Option<NodeId>,
}

/// A running Raft node plus the applied-state view: the [`ClusterHandle`]
/// services use.
#[derive(Clone)]
pub struct Cluster {
    pub id: NodeId,
    /// Private to consensus: the daemon asks for the verbs below instead.
    pub(super) raft: Raft,
    view: StateView,
    leadership: watch::Receiver<Leadership>,
}

impl Cluster {
    /// Starts Raft on `store`, listens for peers, and, on a fresh data dir,
    /// initialises a cluster of one (every node starts as its own cluster and
    /// grows by `join`).
    /// `init = false` starts an empty node that waits to be added to an
    /// existing cluster (`tandem cluster join`).
    /// Peer traffic runs over mutual TLS with `material`'s certificate; a
    /// peer whose node id the replicated state revokes is refused.
    pub async fn start(
        cfg: &NodeConfig,
        store: &NodeStore,
        material: &Material,
        init: bool,
        cancel: CancellationToken,
    ) -> Result<Cluster, ConsensusError> {
        set_timing_scale(cfg.timing_scale);
        let rc = openraft::Config {
            cluster_name: "tandem".into(),
            heartbeat_interval: scaled_ms(HEARTBEAT_MS),
            election_timeout_min: scaled_ms(ELECTION_MIN_MS),
            election_timeout_max: scaled_ms(ELECTION_MAX_MS),
            // A snapshot serialises the whole lease table; every 100k entries
            // keeps that off the hot path (at 5k leases/s, once in 20 s) while
            // the log stays short enough for a fast restart.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(100_000),
            max_in_snapshot_log_to_keep: 1_000,
            // Wait up to 1 ms for more client writes before appending: under
            // load the DHCP loop adds several leases in that time, and they
            // share one fsync (most of a lease's CPU cost is its share of a
            // redb commit). A DHCP client does not notice a millisecond.
            // Measured at 4,000 leases/s (perf stat, 6 s): 395 fsyncs/s and
            // 0.58 CPU with it, 1,185 fsyncs/s and 0.78 CPU without.
            api_batch_linger_ms: LINGER_MS,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConsensusError::Config(e.to_string()))?;
        // Raft's tasks and its peer listener run on their own runtime, whose
        // thread has a higher scheduling priority: heartbeats stay timely
        // when DHCP, TFTP, the API or anything else on the box saturates the
        // CPUs. Its log writes run on the store's writer thread.
        let rt = raft_runtime().map_err(|e| ConsensusError::Start(format!("raft runtime: {e}")))?;
        let (id, addr, c) = (cfg.node_id, cfg.raft_listen, cancel.clone());
        let (log_store, state_machine) = (store.log_store(), store.state_machine());
        let view = store.view();
        let revoked: Revoked = Arc::new(move |node| view.read(|s| s.trust.revoked.contains(&node)));
        let tls = crate::trust::tls::raft(material, revoked)
            .map_err(|e| ConsensusError::Start(format!("Raft TLS: {e}")))?;
        let raft = rt
            .spawn(async move {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ConsensusError::Listen { addr, source })?;
                let net = Network {
                    tls: Arc::clone(&tls.client),
                };
                let raft = Raft::new(id, Arc::new(rc), net, log_store, state_machine)
                    .await
                    .map_err(|e| ConsensusError::Start(e.to_string()))?;
                let detector = Detector::new(raft.clone(), tls.client);
                tokio::spawn(network::serve(
                    listener,
                    raft.clone(),
                    tls.server,
                    detector,
                    c,
                ));
                Ok::<_, ConsensusError>(raft)
            })
            .await
            .map_err(|e| ConsensusError::Start(e.to_string()))??;
        {
            // Log lines from here on carry term and index (the watch below
            // keeps them current).
            let m = raft.metrics();
            let m = m.borrow_watched();
            set_position(m.current_term, m.last_log_index.unwrap_or(0));
        }
        let me = NodeInfo {
            raft: cfg.raft_listen.to_string(),
            api: cfg.api_listen.to_string(),
        };
        if init
            && !raft
                .is_initialized()
                .await
                .map_err(|e| ConsensusError::Start(e.to_string()))?
        {
            let members: BTreeMap<NodeId, NodeInfo> = [(cfg.node_id, me)].into();
            raft.initialize(members)
                .await
                .map_err(|e| ConsensusError::Init(e.to_string()))?;
            tracing::info!(target: "tandem::raft", node = cfg.node_id, "initialised a new cluster of one");
        }
        super::health::spawn(raft.clone(), cancel.clone());
        rt.spawn(watch_runtime_delay(cancel.clone()));
        let leadership = spawn_leadership_watch(&raft, cancel);
        Ok(Cluster {
            id: cfg.node_id,
            raft,
            view: store.view(),
            leadership,
        })
    }

    /// The Raft runtime: one thread at raised priority, for Raft's tasks and
    /// for short work that must not be delayed by a busy box (the VIP
    /// probe). The DHCP responder does not run here: under a flood it is
    /// busy all the time, and on this thread it delayed heartbeats (see
    /// `tandem_raft_runtime_delay_seconds`).
    #[must_use]
    pub fn runtime(&self) -> tokio::runtime::Handle {
        raft_runtime()
            .expect("the Raft runtime was created when the cluster started")
            .handle()
            .clone()
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

    /// This node's info as the cluster should record it.
    #[must_use]
    pub fn me(cfg: &NodeConfig) -> NodeInfo {
        NodeInfo {
            raft: cfg.raft_listen.to_string(),
            api: cfg.api_listen.to_string(),
        }
    }

    /// Voter ids of the effective membership.
    #[must_use]
    pub fn voters(&self) -> Vec<NodeId> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Whether this node is a voter or learner of the cluster it knows.
    #[must_use]
    pub fn is_member(&self) -> bool {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some()
    }

    /// Whether this node may serve now: it leads, and either it is the only
    /// voter or a quorum acked a heartbeat sent within [`LEADER_LEASE_MS`].
    #[must_use]
    pub fn holds_lease(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.state != ServerState::Leader {
            return false;
        }
        if m.membership_config
            .membership()
            .voter_ids()
            .nth(1)
            .is_none()
        {
            return true;
        }
        m.last_quorum_acked
            .as_ref()
            .is_some_and(|sent| openraft::Instant::elapsed(&**sent) < scaled(LEADER_LEASE_MS))
    }

    /// Why Raft stopped on its own, if it did: a storage error (disk full,
    /// I/O error; every cause in the chain) or a panic in its core. `None`
    /// while it runs or after an orderly [`Cluster::shutdown`].
    #[must_use]
    pub fn fatal(&self) -> Option<RaftFatal> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        match &m.running_state {
            Ok(()) | Err(openraft::errors::Fatal::Stopped) => None,
            Err(openraft::errors::Fatal::Panicked) => Some(RaftFatal::Panicked),
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    let part = s.to_string();
                    if !msg.contains(&part) {
                        msg.push_str(": ");
                        msg.push_str(&part);
                    }
                    src = s.source();
                }
                Some(RaftFatal::Storage(msg))
            }
        }
    }

    /// The last log index, for log lines that must carry `index=`.
    #[must_use]
    pub fn last_log_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0)
    }

    /// Whether Raft's core loop answers a request within `within`: a round
    /// trip through the core task (not a read of its published metrics), so
    /// a wedged or stopped core says `false`. The systemd watchdog is fed
    /// only while this holds (`app::notify`).
    ///
    /// cancel-safety: cancel-safe; nothing is changed.
    pub async fn core_answers(&self, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.raft.with_raft_state(|_| ())).await,
            Ok(Ok(()))
        )
    }

    /// Waits until everything committed so far is applied here, confirming
    /// with a quorum that this node still leads (a read index), for at most
    /// `within`. Returns the index the view reached. The first step of
    /// becoming leader: serve no stale view.
    ///
    /// cancel-safety: cancel-safe; nothing is changed.
    pub async fn ensure_applied(&self, within: Duration) -> Result<u64, EnsureError> {
        match tokio::time::timeout(within, self.raft.ensure_linearizable(ReadPolicy::ReadIndex))
            .await
        {
            Err(_) => Err(EnsureError::Timeout(within)),
            Ok(Ok(read)) => Ok(read.log_id().index),
            Ok(Err(e)) => Err(EnsureError::NotLeader(e.to_string())),
        }
    }

    /// Stops Raft: no more votes, appends or applies on this node. Call it
    /// once, after the responders have stopped.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(target: "tandem::raft", error = %e, "raft shutdown");
        }
    }
}

/// Nice value of the Raft threads (lower is more CPU). -10 wins against
/// ordinary load without starving the kernel's own work.
const RAFT_NICE: i32 = -10;

/// The process-wide runtime for Raft (created once; it outlives every epoch).
fn raft_runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("raft")
        .enable_all()
        .on_thread_start(|| {
            // SAFETY: setpriority on the calling thread (a tid is a valid `who`
            // for PRIO_PROCESS on Linux); failure only loses the priority boost.
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, nix::unistd::gettid().as_raw().cast_unsigned(), RAFT_NICE) };
            if r != 0 {
                tracing::warn!(target: "tandem::raft", error = %std::io::Error::last_os_error(), "cannot raise the Raft threads' priority");
            }
        })
        .build()?;
    Ok(RT.get_or_init(|| rt))
}

/// How often [`watch_runtime_delay`] samples the Raft thread.
const DELAY_TICK: Duration = Duration::from_millis(5);

/// Samples how late a timer on the Raft runtime fires, into
/// `tandem_raft_runtime_delay_seconds`: a Raft thread kept busy (or
/// starved of CPU) delays heartbeats by as much.
async fn watch_runtime_delay(cancel: CancellationToken) {
    let h = &metrics::get().raft_runtime_delay_seconds;
    loop {
        let due = tokio::time::Instant::now() + DELAY_TICK;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        h.observe(
            tokio::time::Instant::now()
                .saturating_duration_since(due)
                .as_secs_f64(),
        );
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
                let l = Leadership {
                    is_leader: m.state == ServerState::Leader,
                    term: m.current_term,
                    leader: m.current_leader,
                };
                (l, m.last_log_index.unwrap_or(0))
            };
            let (l, index) = l;
            set_position(l.term, index);
            let g = metrics::get();
            g.raft_term.set(i64::try_from(l.term).unwrap_or(i64::MAX));
            g.raft_is_leader.set(i64::from(l.is_leader));
            g.raft_last_log_index
                .set(i64::try_from(index).unwrap_or(i64::MAX));
            if l.leader != last_leader {
                if l.leader.is_some() {
                    g.raft_leader_changes.inc();
                }
                tracing::info!(target: "tandem::raft", term = l.term, index, leader = ?l.leader, "leader changed");
                metrics::events::record(
                    metrics::events::Kind::Election,
                    match l.leader {
                        Some(n) => format!("leader is node {n} (term {}, index {index})", l.term),
                        None => format!("no leader known (term {}, index {index})", l.term),
                    },
                );
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
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.view.read(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A free port on 127.0.0.1 (bound, then released).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// What the systemd watchdog is fed on (`app::notify`): a running core
    /// answers the round trip, a stopped one does not; and log lines learn
    /// the node's place in the log once Raft has started.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn core_answers_while_raft_runs_and_not_after_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::parse(&format!(
            "node_id = 1\ndata_dir = {:?}\n[cluster]\nlisten = \"127.0.0.1:{}\"\n\
             [api]\nlisten = \"127.0.0.1:{}\"\n[service]\ninterface = \"lo\"\nvip = \"10.250.0.10/24\"\n",
            dir.path().display().to_string(),
            free_port(),
            free_port()
        ))
        .unwrap();
        let material = crate::trust::ca::ensure(&cfg.data_dir, 1, &[cfg.raft_listen.ip()]).unwrap();
        let store = NodeStore::open(&cfg.data_dir).unwrap();
        let cancel = CancellationToken::new();
        let cluster = Cluster::start(&cfg, &store, &material, true, cancel.clone())
            .await
            .unwrap();
        assert!(position().is_some(), "known once Raft started");
        assert!(cluster.core_answers(Duration::from_secs(2)).await);
        cluster.shutdown().await;
        assert!(
            !cluster.core_answers(Duration::from_millis(500)).await,
            "a stopped core must starve the watchdog"
        );
        cancel.cancel();
    }
}
