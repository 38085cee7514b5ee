//! The event ring: the last [`CAPACITY`] things an operator watches a
//! cluster for (elections, transitions with their durations, VIP conflicts,
//! peers lost and found, storage errors), numbered in order, in memory only.
//! `GET /v1/events?since=SEQ` serves it and `tandem top` merges the rings of
//! all members. Beside the metrics because, like them, anything may record
//! into it; nothing reads it but the API.
//!
//! Bounded: at most [`CAPACITY`] events of at most [`MAX_MESSAGE`] bytes
//! each, so an answer is at most about 70 KiB. The oldest event falls out
//! first; a reader whose `since` fell out sees the gap as a jump in `seq`.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Events kept.
pub const CAPACITY: usize = 256;
/// Longest message kept, in bytes (longer ones are cut at a char boundary).
pub const MAX_MESSAGE: usize = 240;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The leader this node knows changed (or it knows none).
    Election,
    /// This node started or stopped serving; the message says how long it took.
    Transition,
    /// Another host answers for, claims or probes for the VIP.
    VipConflict,
    /// A peer stopped acking heartbeats (seen by the leader).
    PeerLost,
    /// A silent peer acks again.
    PeerFound,
    /// Raft stopped on a storage error.
    Storage,
}

impl Kind {
    /// The stable name in `/v1/events` and `tandem top`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Election => "election",
            Kind::Transition => "transition",
            Kind::VipConflict => "vip-conflict",
            Kind::PeerLost => "peer-lost",
            Kind::PeerFound => "peer-found",
            Kind::Storage => "storage",
        }
    }
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// 1, 2, 3 … in the order of recording, per process.
    pub seq: u64,
    /// Unix milliseconds, so that the rings of several nodes merge by time.
    pub at_ms: u64,
    pub kind: Kind,
    pub message: String,
}

/// A bounded ring of events. [`ring()`] is the process's own; tests make their own.
pub struct Ring {
    /// Unix milliseconds when the ring was made: a reader that sees it change
    /// knows the process restarted and its `seq` began again at 1.
    pub boot_ms: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    last_seq: u64,
    events: VecDeque<Event>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            boot_ms: unix_ms(),
            inner: Mutex::new(Inner {
                last_seq: 0,
                events: VecDeque::with_capacity(CAPACITY),
            }),
        }
    }
}

impl Ring {
    /// Records one event now; the oldest falls out past [`CAPACITY`].
    pub fn record(&self, kind: Kind, message: impl Into<String>) {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let at_ms = unix_ms();
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.last_seq += 1;
        let seq = g.last_seq;
        if g.events.len() == CAPACITY {
            g.events.pop_front();
        }
        g.events.push_back(Event {
            seq,
            at_ms,
            kind,
            message,
        });
    }

    /// The events after `since` (all with 0), oldest first, and the last
    /// sequence number recorded so far.
    #[must_use]
    pub fn since(&self, since: u64) -> (Vec<Event>, u64) {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let events = g.events.iter().filter(|e| e.seq > since).cloned().collect();
        (events, g.last_seq)
    }
}

/// The process's ring.
pub fn ring() -> &'static Ring {
    static R: OnceLock<Ring> = OnceLock::new();
    R.get_or_init(Ring::default)
}

/// Records into the process's ring: `events::record(Kind::Election, …)`.
pub fn record(kind: Kind, message: impl Into<String>) {
    ring().record(kind, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_capacity_events_in_order_and_answers_after_since() {
        let r = Ring::default();
        for i in 0..300 {
            r.record(Kind::Election, format!("event {i}"));
        }
        let (all, last) = r.since(0);
        assert_eq!(last, 300);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 300 - CAPACITY as u64 + 1);
        assert_eq!(all[0].message, format!("event {}", 300 - CAPACITY));
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        let (tail, _) = r.since(297);
        let seqs: Vec<u64> = tail.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [298, 299, 300]);
        assert!(r.since(300).0.is_empty());
        assert!(r.since(u64::MAX).0.is_empty());
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let r = Ring::default();
        // "a" then two-byte chars: byte MAX_MESSAGE falls inside one.
        r.record(Kind::Storage, format!("a{}", "é".repeat(MAX_MESSAGE)));
        let (e, _) = r.since(0);
        assert_eq!(e[0].message.len(), MAX_MESSAGE - 1);
        assert_eq!(e[0].kind.as_str(), "storage");
    }
}
