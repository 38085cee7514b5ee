//! Peer health as the leader sees it: how many entries each peer lags and
//! how long since it last acknowledged a heartbeat.
//!
//! It feeds `tandem_raft_peer_lag_entries{peer}`,
//! `tandem_raft_peer_silence_seconds{peer}`, the warnings of `tandem status`,
//! and one log line when a peer goes silent or comes back. openraft's own
//! warning per failed heartbeat (dozens a second) is filtered out in `main`.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::{RaftMetrics, ServerState};
use tokio_util::sync::CancellationToken;

use super::types::Raft;
use super::types::{NodeId, TypeConfig};
use crate::metrics::{self, PeerLabel};

const LOG_TARGET: &str = "tandem::raft";
/// A peer that has not acked for this long is reported as silent: a few
/// election timeouts, far above heartbeat jitter.
pub const SILENT_AFTER: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_millis(500);

/// One peer, seen from the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHealth {
    pub id: NodeId,
    /// Entries between the leader's last log index and the peer's matched index.
    pub lag_entries: u64,
    /// Time since the peer last acked a heartbeat; `None` if it never did.
    pub silence: Option<Duration>,
}

impl PeerHealth {
    #[must_use]
    pub fn is_silent(&self) -> bool {
        self.silence.is_none_or(|s| s >= SILENT_AFTER)
    }
}

/// The other members' health, when this node leads; empty otherwise.
#[must_use]
pub fn peers(m: &RaftMetrics<TypeConfig>) -> Vec<PeerHealth> {
    if m.state != ServerState::Leader {
        return Vec::new();
    }
    let last = m.last_log_index.unwrap_or(0);
    let matched = m.replication.clone().unwrap_or_default();
    let acked = m.heartbeat.clone().unwrap_or_default();
    m.membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| *id != m.id)
        .map(|id| PeerHealth {
            id,
            lag_entries: last
                .saturating_sub(matched.get(&id).copied().flatten().map_or(0, |l| l.index)),
            silence: acked
                .get(&id)
                .copied()
                .flatten()
                .map(|t| openraft::Instant::elapsed(&*t)),
        })
        .collect()
}

/// Exports peer health every half second and logs peers that go silent or
/// come back, until `cancel`.
pub(super) fn spawn(raft: Raft, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        let mut silent: BTreeMap<NodeId, bool> = BTreeMap::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let peers = peers(&raft.metrics().borrow_watched());
            let g = metrics::get();
            g.raft_peer_lag.clear();
            g.raft_peer_silence.clear();
            if peers.is_empty() {
                silent.clear();
                continue;
            }
            for p in &peers {
                let label = PeerLabel {
                    peer: p.id.to_string(),
                };
                g.raft_peer_lag
                    .get_or_create(&label)
                    .set(i64::try_from(p.lag_entries).unwrap_or(i64::MAX));
                if let Some(s) = p.silence {
                    g.raft_peer_silence
                        .get_or_create(&label)
                        .set(s.as_secs_f64());
                }
                let now_silent = p.is_silent();
                let was_silent = silent.insert(p.id, now_silent).unwrap_or(false);
                if now_silent && !was_silent {
                    tracing::warn!(target: LOG_TARGET, peer = p.id, silence = ?p.silence, lag = p.lag_entries, "peer is not answering heartbeats");
                    metrics::events::record(
                        metrics::events::Kind::PeerLost,
                        format!(
                            "peer {} is not answering heartbeats (lag {})",
                            p.id, p.lag_entries
                        ),
                    );
                } else if was_silent && !now_silent {
                    tracing::info!(target: LOG_TARGET, peer = p.id, lag = p.lag_entries, "peer answers again");
                    metrics::events::record(
                        metrics::events::Kind::PeerFound,
                        format!("peer {} answers again (lag {})", p.id, p.lag_entries),
                    );
                }
            }
            silent.retain(|id, _| peers.iter().any(|p| p.id == *id));
        }
    });
}
