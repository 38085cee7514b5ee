//! The store's writer thread. Every redb write transaction of the log and
//! the state machine runs here, in the order it was submitted, so the Raft
//! thread never waits for an fsync or for redb's write lock.
//!
//! openraft asks this of `append`: return at once, and call back once the
//! entries are durable. Before this thread existed, the append's fsync ran
//! inline on the one Raft thread, and while it ran no heartbeat went out and
//! no peer's answer was read: under a DHCP flood the leader's thread spent a
//! third of its time there (`tandem_raft_append_seconds`), and its 5 ms timer
//! fired up to 95 ms late (`tandem_raft_runtime_delay_seconds`, measured with
//! `tandem-bench overload`).
//!
//! ```text
//!  Raft thread                      writer thread ("raft-store")
//!  append ─▶ pending map ─┐
//!  vote, truncate, purge ─┼─ jobs ─▶ take every queued job (≤ MAX_JOBS)
//!  save_committed ────────┤          one write transaction, fsynced if any
//!  apply (SM rows) ───────┘          job needs it; then each job's `done`
//! ```
//!
//! Queued jobs share one transaction (group commit). redb makes commits
//! durable in commit order, and this thread is the only writer of the log
//! and the state machine tables, so the order of the commits is the order
//! of submission (the durability argument of `state_machine` rests on it).
//! Snapshots are built and installed on the blocking pool: they wait for
//! redb's write lock, never the Raft thread.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use redb::{Database, Durability, WriteTransaction};

use super::error::{redb_err, StoreError};

/// Jobs committed in one transaction at most, so one batch's latency stays
/// bounded under a long queue.
const MAX_JOBS: usize = 256;

/// Nice value of the writer thread: the same as the Raft threads (its fsync
/// is on the commit path of every lease).
const WRITER_NICE: i32 = -10;

/// Work done inside the shared write transaction.
pub(super) type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<(), StoreError> + Send>;
/// Called once the job's transaction committed (or failed).
pub(super) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

struct Task {
    job: Job,
    durable: bool,
    done: Done,
}

/// Handle to the writer thread. Dropping the last handle (it is shared in an
/// `Arc` by the store, the log store and the state machine) lets the thread
/// finish what is queued and waits for it, so the database can be reopened
/// right after.
pub(super) struct Writer {
    tx: Option<mpsc::Sender<Task>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn spawn(db: Arc<Database>) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Task>();
        let thread = std::thread::Builder::new()
            .name("raft-store".into())
            .spawn(move || {
                raise_priority();
                run(&db, &rx);
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `job`; `done` runs on the writer thread after the commit.
    /// Never blocks.
    pub(super) fn submit(&self, durable: bool, job: Job, done: Done) {
        let task = Task { job, durable, done };
        let Some(tx) = &self.tx else {
            unreachable!("the sender is taken only in drop")
        };
        if let Err(mpsc::SendError(task)) = tx.send(task) {
            // The thread is gone (it panicked): nothing will be written.
            (task.done)(Err(StoreError::Writer));
        }
    }

    /// Queues `job` and waits (asynchronously) until its transaction committed.
    pub(super) async fn run(
        &self,
        durable: bool,
        job: impl FnOnce(&WriteTransaction) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            durable,
            Box::new(job),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.unwrap_or(Err(StoreError::Writer))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(target: "tandem::consensus", "the store's writer thread panicked");
            }
        }
    }
}

fn raise_priority() {
    // SAFETY: setpriority on the calling thread (a tid is a valid `who` for
    // PRIO_PROCESS on Linux); failure only loses the priority boost.
    let r = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            nix::unistd::gettid().as_raw().cast_unsigned(),
            WRITER_NICE,
        )
    };
    if r != 0 {
        tracing::warn!(target: "tandem::consensus", error = %std::io::Error::last_os_error(), "cannot raise the store writer's priority");
    }
}

/// The thread's loop: block for a job, take every job queued behind it, and
/// commit them together.
fn run(db: &Database, rx: &mpsc::Receiver<Task>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(t) => batch.push(t),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|t| t.durable);
        let mut dones = Vec::with_capacity(batch.len());
        let jobs: Vec<Job> = batch
            .into_iter()
            .map(|t| {
                dones.push(t.done);
                t.job
            })
            .collect();
        match commit(db, durable, jobs) {
            Ok(()) => dones.into_iter().for_each(|d| d(Ok(()))),
            Err(e) => {
                // The first job learns the error itself; the others, which
                // shared its transaction, a copy of its message.
                let msg = error_chain(&e);
                let mut dones = dones.into_iter();
                if let Some(d) = dones.next() {
                    d(Err(e));
                }
                dones.for_each(|d| d(Err(StoreError::Batch(msg.clone()))));
            }
        }
    }
}

fn commit(db: &Database, durable: bool, jobs: Vec<Job>) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(redb_err("write: begin"))?;
    let d = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(d)
        .map_err(redb_err("write: durability"))?;
    for job in jobs {
        job(&txn)?;
    }
    txn.commit().map_err(redb_err("write: commit"))
}

fn error_chain(e: &StoreError) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
