//! A fake cluster and a recording reply sink, for driving the real
//! [`Responder`](super::Responder) without Raft or sockets.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dhcproto::v4::Message;

use super::super::dispatch::ReplySink;
use super::super::reply::Destination;
use crate::consensus::{ClusterHandle, ProposeError};
use crate::model::{Command, CommandResponse, State};

/// How the fake cluster answers the proposals made from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to the state: `Ok` or `Rejected` as `State::apply` says.
    Commit,
    /// No quorum: `ProposeError::Failed`, the state untouched.
    Fail,
    /// Leadership lost before the commit: `ProposeError::NotLeader`.
    NotLeader,
}

#[derive(Clone, Copy, Debug)]
struct Knobs {
    delay: Duration,
    outcome: Outcome,
}

/// A [`ClusterHandle`] over one in-memory [`State`]. A proposal is applied
/// after `delay` in a task of its own, as Raft commits a proposal whether or
/// not its proposer still waits: dropping the future returned by `propose`
/// only stops the waiting.
#[derive(Clone)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
    knobs: Arc<Mutex<Knobs>>,
    /// Every command applied, with the state machine's answer, in order.
    applied: Arc<Mutex<Vec<(Command, CommandResponse)>>>,
}

impl FakeCluster {
    /// Commits every proposal at once.
    pub fn new(state: State) -> Self {
        FakeCluster {
            state: Arc::new(Mutex::new(state)),
            knobs: Arc::new(Mutex::new(Knobs {
                delay: Duration::ZERO,
                outcome: Outcome::Commit,
            })),
            applied: Arc::default(),
        }
    }

    /// How long proposals started from now on take to be decided.
    pub fn set_delay(&self, delay: Duration) {
        self.knobs.lock().unwrap().delay = delay;
    }

    /// How proposals started from now on end.
    pub fn set_outcome(&self, outcome: Outcome) {
        self.knobs.lock().unwrap().outcome = outcome;
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// How many commands were applied so far.
    pub fn applied_count(&self) -> usize {
        self.applied.lock().unwrap().len()
    }

    /// The last command applied and what the state machine answered.
    pub fn last_applied(&self) -> Option<(Command, CommandResponse)> {
        self.applied.lock().unwrap().last().cloned()
    }
}

impl ClusterHandle for FakeCluster {
    fn propose(
        &self,
        cmd: Command,
    ) -> impl Future<Output = Result<CommandResponse, ProposeError>> + Send {
        let Knobs { delay, outcome } = *self.knobs.lock().unwrap();
        let (state, applied) = (self.state.clone(), self.applied.clone());
        let commit = tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match outcome {
                Outcome::Commit => {
                    let r = state.lock().unwrap().apply(&cmd);
                    applied.lock().unwrap().push((cmd, r.clone()));
                    Ok(r)
                }
                Outcome::Fail => Err(ProposeError::Failed("fake: no quorum".into())),
                Outcome::NotLeader => Err(ProposeError::NotLeader { leader: Some(2) }),
            }
        });
        async move { commit.await.expect("the fake commit task panicked") }
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.lock().unwrap())
    }
}

/// One reply the sink was given, and when (tokio's clock, paused in tests).
#[derive(Clone, Debug)]
pub struct Sent {
    pub reply: Message,
    pub to: Destination,
    pub at: tokio::time::Instant,
}

/// A [`ReplySink`] that keeps what it is given.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Sent>>>);

impl Recorder {
    /// What was sent since the last `take`, oldest first.
    pub fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap().is_empty()
    }
}

impl ReplySink for Recorder {
    fn send(&self, reply: &Message, to: &Destination) {
        self.0.lock().unwrap().push(Sent {
            reply: reply.clone(),
            to: *to,
            at: tokio::time::Instant::now(),
        });
    }
}
