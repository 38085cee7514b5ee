//! The in-memory read view of the applied state: what the DHCP hot path and
//! the API read, without touching redb or holding a lock across an await.

use std::sync::{Arc, RwLock, RwLockWriteGuard};

use tokio::sync::watch;

use crate::model::State;

/// Read access to the applied [`State`] without holding a lock across awaits.
///
/// Invariant: the state behind the lock is the result of applying the log up
/// to (at least) [`StateView::applied_index`]; the index is published only
/// after the batch that reached it is committed to redb.
#[derive(Clone)]
pub struct StateView {
    inner: Arc<ViewInner>,
}

struct ViewInner {
    state: RwLock<State>,
    /// The sender lives as long as any view, so receivers never see it closed.
    applied: watch::Sender<Option<u64>>,
}

impl StateView {
    pub(super) fn new(state: State, applied: Option<u64>) -> StateView {
        set_applied_gauge(applied);
        StateView {
            inner: Arc::new(ViewInner {
                state: RwLock::new(state),
                applied: watch::channel(applied).0,
            }),
        }
    }

    /// Runs `f` on the applied state under a read lock. Keep `f` short: the
    /// state machine waits for it to finish before applying the next batch.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self
            .inner
            .state
            .read()
            .expect("state lock poisoned: a panic while applying");
        f(&guard)
    }

    /// Index of the last log entry reflected in the view.
    #[must_use]
    pub fn applied_index(&self) -> Option<u64> {
        *self.inner.applied.borrow()
    }

    /// Resolves when `applied_index >= idx` (used after `client_write` to be
    /// sure the view includes a commit).
    ///
    /// cancel-safety: cancel-safe; nothing is consumed.
    pub async fn wait_applied(&self, idx: u64) {
        let mut rx = self.inner.applied.subscribe();
        // Err only if the sender is dropped, and `self` holds it.
        let _ = rx.wait_for(|a| a.is_some_and(|a| a >= idx)).await;
    }

    /// A receiver that changes whenever the applied index moves.
    #[must_use]
    pub fn watch_applied(&self) -> watch::Receiver<Option<u64>> {
        self.inner.applied.subscribe()
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner
            .state
            .write()
            .expect("state lock poisoned: a panic while applying")
    }

    pub(super) fn publish_applied(&self, index: Option<u64>) {
        set_applied_gauge(index);
        self.inner.applied.send_replace(index);
    }
}

fn set_applied_gauge(index: Option<u64>) {
    let v = index.map_or(0, |i| i64::try_from(i).unwrap_or(i64::MAX));
    crate::metrics::get().raft_applied_index.set(v);
}
