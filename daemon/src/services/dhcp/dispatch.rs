//! Carrying a decision out: [`Responder`] sends what needs no commit at
//! once, and holds every proposal in flight until the cluster has decided
//! it. It reaches the cluster only through [`ClusterHandle`] and the wire
//! only through a [`ReplySink`], so its contract is unit-tested with a fake
//! cluster and a recording sink.
//!
//! ```text
//!   dispatch(action)
//!     Drop, Shed ──────▶ nothing (the loop logs it, and counts it)
//!     Reply ───────────▶ sink.send now
//!     Offer ───────────▶ offers.record (held or not), sink.send now
//!     Commit ──────────▶ in flight full? ─ yes ─▶ shed (counted, no reply)
//!                        └▶ propose ─▶ in flight ─▶ Err ─▶ warn         (RELEASE, DECLINE)
//!     CommitThenReply ─▶ in flight full? ─ yes ─▶ shed (counted, no reply)
//!                        └▶ propose ─▶ in flight ─▶ Ok(Ok) ──────▶ sink.send(ACK)
//!                                             ├▶ Ok(Rejected) ─▶ sink.send(NAK, to.for_nak())
//!                                             └▶ Err ──────────▶ nothing: the client retries
//!
//!   next_request(cancel, recv): sends for proposals as they finish, until
//!     recv is ready (→ the request) or cancel fires (→ None: what is still
//!     in flight is never answered by this node)
//! ```
//!
//! The order is the contract: an ACK leaves only after `propose` returned
//! `Ok(CommandResponse::Ok)`, i.e. the lease is committed on a quorum and
//! applied. Many proposals are in flight at once, so Raft batches them into
//! one fsync (group commit); one task polls them all, so there is no task
//! per request.
//!
//! The proposals in flight are bounded ([`MAX_IN_FLIGHT`]): a commit that
//! finds the bound reached is shed, not queued, and counted in
//! `tandem_dhcp_shed_total{reason="queue_full"}`. The client retransmits as
//! it would after a lost packet. Without the bound a flood of REQUESTs
//! grows the Raft log's queue and this task's memory without limit, and the
//! Raft tasks, which share the runtime with this one (`Cluster::runtime`),
//! fall behind on their heartbeats: the followers then elect a new leader
//! in the middle of the flood.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use dhcproto::v4::Message;
use futures::stream::{FuturesUnordered, StreamExt as _};
use tokio_util::sync::CancellationToken;

use super::allocator::Offers;
use super::handler::Action;
use super::reply::Destination;
use crate::consensus::{ClusterHandle, ProposeError};
use crate::metrics;
use crate::model::CommandResponse;

/// Proposals in flight at most. The Raft log batches whatever is queued into
/// one append and one fsync, so a few hundred in flight already fill each
/// batch (a commit takes a few ms: at 1,024 in flight that is well above
/// the ~6,000 leases/s one node commits), while the queue stays short
/// enough that every ACK leaves within a client's first retransmission
/// timer (4 s).
pub const MAX_IN_FLIGHT: usize = 1024;

/// Every reason a request is shed for (this module's in-flight bound, and
/// the handler's limits on unsolicited REQUESTs and on broadcast replies).
pub const SHED_REASONS: &[&str] = &["queue_full", "unsolicited_request", "broadcast"];

/// Creates every `tandem_dhcp_shed_total{reason}` series at 0, so that
/// dashboards and `rate()` see a flat line rather than no data before the
/// first shed.
pub fn touch_shed_counters() {
    for r in SHED_REASONS {
        let _ = metrics::get()
            .dhcp_shed
            .get_or_create(&metrics::ReasonLabel {
                reason: (*r).to_owned(),
            });
    }
}

/// Counts one request shed for `reason` in `tandem_dhcp_shed_total`.
pub fn count_shed(reason: &'static str) {
    debug_assert!(
        SHED_REASONS.contains(&reason),
        "unlisted shed reason {reason}"
    );
    metrics::get()
        .dhcp_shed
        .get_or_create(&metrics::ReasonLabel {
            reason: reason.to_owned(),
        })
        .inc();
}

/// Where replies go: the socket loop's sender (UDP and the raw link), or a
/// recorder in tests.
pub trait ReplySink {
    /// Sends `reply` to `to`. Runs on the loop's task, so it must not block;
    /// a reply that cannot be sent is the sink's to log.
    fn send(&self, reply: &Message, to: &Destination);
}

/// A proposal in flight and what to send when it is decided.
type Pending = Pin<Box<dyn Future<Output = Finished> + Send>>;

/// What a finished proposal leaves for the responder to do.
struct Finished {
    result: Result<CommandResponse, ProposeError>,
    then: Then,
}

// One per proposal, inside the proposal's boxed future: boxing the messages
// again would add two allocations per lease.
#[allow(clippy::large_enum_variant)]
enum Then {
    /// A lease commit: send `reply` if applied, `nak` if rejected.
    Reply {
        started: Instant,
        reply: Message,
        nak: Message,
        to: Destination,
    },
    /// A RELEASE or DECLINE: nothing to send.
    Nothing,
}

/// Carries out the handler's actions against cluster `C`, replying through
/// sink `S`. See the module docs.
pub struct Responder<C, S> {
    cluster: C,
    sink: S,
    pending: FuturesUnordered<Pending>,
    /// [`MAX_IN_FLIGHT`], or less in tests.
    max_in_flight: usize,
    /// Commits shed because `pending` was full (for tests and logs).
    shed: u64,
}

impl<C: ClusterHandle, S: ReplySink> Responder<C, S> {
    pub fn new(cluster: C, sink: S) -> Self {
        Self::with_limit(cluster, sink, MAX_IN_FLIGHT)
    }

    /// A responder that holds at most `max_in_flight` proposals.
    pub fn with_limit(cluster: C, sink: S, max_in_flight: usize) -> Self {
        Responder {
            cluster,
            sink,
            pending: FuturesUnordered::new(),
            max_in_flight,
            shed: 0,
        }
    }

    /// Commits shed so far because too many were in flight.
    pub fn shed(&self) -> u64 {
        self.shed
    }

    /// Sheds a commit when the bound is reached; true if it was shed.
    fn full(&mut self) -> bool {
        if self.pending.len() < self.max_in_flight {
            return false;
        }
        self.shed += 1;
        count_shed("queue_full");
        true
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Proposals started and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Carries out `action`: a reply or an offer is sent now (an offer is
    /// first recorded in `offers`), a commit is proposed and its reply, if
    /// any, waits in flight for [`Responder::next_request`] to send it.
    pub fn dispatch(&mut self, action: Action, offers: &mut Offers) {
        match action {
            Action::Drop { .. } | Action::Shed { .. } => {}
            Action::Reply { reply, to } => self.sink.send(&reply, &to),
            Action::Offer {
                reply,
                to,
                ip,
                mac,
                until,
                held,
            } => {
                if held {
                    offers.record(ip, mac, until);
                } else {
                    offers.record_unheld(ip, mac, until);
                }
                self.sink.send(&reply, &to);
            }
            Action::CommitThenReply { .. } | Action::Commit { .. } if self.full() => {}
            Action::CommitThenReply {
                cmd,
                reply,
                nak,
                to,
            } => {
                let cluster = self.cluster.clone();
                self.pending.push(Box::pin(async move {
                    let started = Instant::now();
                    let result = cluster.propose(cmd).await;
                    Finished {
                        result,
                        then: Then::Reply {
                            started,
                            reply,
                            nak,
                            to,
                        },
                    }
                }));
            }
            Action::Commit { cmd } => {
                let cluster = self.cluster.clone();
                self.pending.push(Box::pin(async move {
                    Finished {
                        result: cluster.propose(cmd).await,
                        then: Then::Nothing,
                    }
                }));
            }
        }
    }

    /// Waits for `recv` (the next request), sending what each proposal that
    /// finishes meanwhile calls for; finished proposals go first, so replies
    /// leave at the pace their commits finish. Returns `None` once `cancel`
    /// fires (leadership lost, or shutdown): from then on nothing more is
    /// sent for the proposals still in flight, even if they commit, because
    /// a node that stepped down must stay silent; the new leader answers the
    /// client's retransmission.
    ///
    /// cancel-safety: as cancel-safe as `recv` (a finished proposal is sent
    /// in the same poll that takes it, so dropping this future loses none).
    pub async fn next_request<T>(
        &mut self,
        cancel: &CancellationToken,
        recv: impl Future<Output = T>,
    ) -> Option<T> {
        let mut recv = std::pin::pin!(recv);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return None,
                Some(done) = self.pending.next(), if !self.pending.is_empty() => self.finish(done),
                r = &mut recv => return Some(r),
            }
        }
    }

    /// Sends what a finished proposal calls for.
    fn finish(&self, done: Finished) {
        match done.then {
            Then::Reply {
                started,
                reply,
                nak,
                to,
            } => match done.result {
                Ok(CommandResponse::Ok) => {
                    metrics::get()
                        .raft_commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.sink.send(&reply, &to);
                }
                Ok(CommandResponse::Rejected { reason }) => {
                    tracing::info!(target: "tandem::dhcp", xid = reply.xid(), reason, "grant rejected at apply; NAK");
                    self.sink.send(&nak, &to.for_nak());
                }
                Err(e) => {
                    // No ACK without a commit; the client retries.
                    tracing::warn!(target: "tandem::dhcp", xid = reply.xid(), error = %e, "lease not committed; no reply");
                }
            },
            Then::Nothing => {
                if let Err(e) = done.result {
                    tracing::warn!(target: "tandem::dhcp", error = %e, "release/decline not committed");
                }
            }
        }
    }
}
