//! Leadership prefers completeness (issue 7, point 2): a new leader that
//! lacks artifacts a healthy peer holds hands leadership to that peer.
//!
//! Why this never loops: the target must hold a *strict superset* of what
//! this node holds (among the blobs the index names). Each handover thus
//! moves leadership to a node holding strictly more, which can only happen
//! finitely often; a node that holds everything never hands over. The
//! caller also asks at most once per term.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::consensus::{Cluster, ClusterHandle};
use crate::model::State;

/// How long a new leader waits before it judges its peers: heartbeat acks
/// (what "healthy" is made of) need a few rounds to arrive.
const SETTLE: Duration = Duration::from_secs(1);
/// A peer is healthy if it acked a heartbeat this recently...
const HEALTHY_SILENCE: Duration = Duration::from_millis(500);
/// ...and lags at most this many entries.
const HEALTHY_LAG: u64 = 64;

/// Called once per won term (by the app): after [`SETTLE`], if this node
/// still leads in `term` and a healthy peer holds more of the index (see
/// [`handover_target`]), hands leadership to it. Meanwhile this node serves
/// and fetches as usual.
pub async fn prefer_complete(cluster: Cluster, term: u64) {
    // Once per term, even if this node serves twice in it (a lease lapse).
    static CHECKED: AtomicU64 = AtomicU64::new(0);
    if CHECKED.fetch_max(term, Ordering::Relaxed) >= term {
        return;
    }
    tokio::time::sleep(SETTLE).await;
    let l = cluster.leadership().borrow().clone();
    if !l.is_leader || l.term != term {
        return;
    }
    let status = cluster.status();
    let healthy: Vec<u64> = status
        .members
        .iter()
        .filter(|m| m.id != cluster.id)
        .filter(|m| {
            m.silence.is_some_and(|s| s < HEALTHY_SILENCE)
                && m.lag_entries.is_some_and(|l| l <= HEALTHY_LAG)
        })
        .map(|m| m.id)
        .collect();
    let Some(to) = cluster.read(|s| handover_target(s, cluster.id, &healthy)) else {
        return;
    };
    tracing::info!(target: "tandem::raft", term, index = cluster.last_log_index(), to, "node {to} holds artifacts this leader lacks: handing over");
    if let Err(e) = cluster.handover(Some(to)).await {
        tracing::warn!(target: "tandem::raft", term, to, error = %e, "handover to a more complete peer failed");
    }
}

/// The peer to hand leadership to, if any: among `healthy_peers`, one that
/// holds a strict superset of the named blobs `me` holds, preferring the
/// one that holds most (then the lowest id). `None` when `me` holds every
/// named blob.
#[must_use]
pub fn handover_target(state: &State, me: u64, healthy_peers: &[u64]) -> Option<u64> {
    let named: BTreeSet<&str> = state
        .artifacts
        .values()
        .map(|a| a.sha256.as_str())
        .collect();
    let held_by = |node: u64| -> BTreeSet<&str> {
        named
            .iter()
            .copied()
            .filter(|sha| state.holders.get(*sha).is_some_and(|h| h.contains(&node)))
            .collect()
    };
    let mine = held_by(me);
    if mine.len() == named.len() {
        return None;
    }
    healthy_peers
        .iter()
        .copied()
        .filter(|p| *p != me)
        .map(|p| (p, held_by(p)))
        .filter(|(_, theirs)| theirs.len() > mine.len() && theirs.is_superset(&mine))
        .max_by_key(|(p, theirs)| (theirs.len(), std::cmp::Reverse(*p)))
        .map(|(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;

    fn state(names: &[(&str, char)], held: &[(u64, char)]) -> State {
        let mut s = State::default();
        for (n, c) in names {
            s.apply(&Command::PutArtifact {
                name: (*n).into(),
                sha256: c.to_string().repeat(64),
                size: 1,
                at: 1,
            });
        }
        for (node, c) in held {
            s.apply(&Command::ArtifactHeld {
                node: *node,
                sha256: c.to_string().repeat(64),
                held: true,
            });
        }
        s
    }

    #[test]
    fn hands_over_only_to_a_strict_superset_and_never_when_complete() {
        let names = [("a", 'a'), ("b", 'b'), ("c", 'c')];
        // 1 holds a; 2 holds a, b; 3 holds a, b, c.
        let s = state(
            &names,
            &[(1, 'a'), (2, 'a'), (2, 'b'), (3, 'a'), (3, 'b'), (3, 'c')],
        );
        assert_eq!(
            handover_target(&s, 1, &[2, 3]),
            Some(3),
            "the most complete"
        );
        assert_eq!(handover_target(&s, 1, &[2]), Some(2), "3 is not healthy");
        assert_eq!(handover_target(&s, 2, &[1, 3]), Some(3));
        assert_eq!(handover_target(&s, 3, &[1, 2]), None, "3 holds everything");
        // Incomparable sets: no handover (it could ping-pong).
        let s = state(&names, &[(1, 'a'), (2, 'b')]);
        assert_eq!(handover_target(&s, 1, &[2]), None);
        assert_eq!(handover_target(&s, 2, &[1]), None);
        // Nothing named: nothing to prefer.
        assert_eq!(handover_target(&State::default(), 1, &[2]), None);
        // Equal sets: no handover.
        let s = state(&names, &[(1, 'a'), (2, 'a')]);
        assert_eq!(handover_target(&s, 1, &[2]), None);
    }
}
