//! # Layout
//! The only module that touches redb. One file, `<data_dir>/tandem.redb`,
//! holds the Raft log, the vote, the committed and purged log ids, the state
//! machine (last applied log id, last membership, service config, one row per
//! lease) and the latest snapshot.
//!
//! - [`tables`]: the typed `TableDefinition`s and the invariants between them.
//! - [`codec`]: how a value is framed on disk (tag + CRC-32C + JSON).
//! - [`log_store`]: [`LogStore`], openraft's `RaftLogStorage` and `RaftLogReader`.
//! - [`state_machine`]: [`StateMachine`], openraft's `RaftStateMachine`, and the
//!   in-memory read view ([`StateView`]) the DHCP hot path reads.
//! - [`snapshot`]: snapshot encoding (JSON + zstd), building and installing.
//!
//! ```text
//!                    Store::open(data_dir)
//!                  /        |            \
//!        log_store()   state_machine()    view()
//!        RaftCore task  SM worker task     DHCP, API (sync reads)
//!            \              |              /
//!             Arc<redb::Database>    Arc<RwLock<State>>
//! ```
//!
//! Durability: the log (and the vote) is written with `Durability::Immediate`
//! (fsync) before openraft is told it is flushed. The state machine commits
//! with `Durability::None`; see [`state_machine`] for why that is safe.

mod codec;
mod log_store;
mod snapshot;
mod state_machine;
mod tables;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::watch;

use crate::model::State;

pub use log_store::LogStore;
pub use snapshot::{SnapshotData, SnapshotPayload};
pub use state_machine::{SnapshotBuilder, StateMachine};

/// The bytes that carry a snapshot between nodes. [`SnapshotData`] is
/// already the encoded bytes, so this is a move; the pair keeps the network
/// layer independent of how snapshots are held here.
#[must_use]
pub fn snapshot_bytes(data: &SnapshotData) -> Vec<u8> {
    data.clone()
}

/// The inverse of [`snapshot_bytes`]. The content is verified when the
/// snapshot is installed (zstd checksum, then decoding), not here.
#[must_use]
pub fn snapshot_from_bytes(bytes: Vec<u8>) -> SnapshotData {
    bytes
}

/// The file inside `data_dir`.
pub const DB_FILE: &str = "tandem.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {path} (is another tandem using this data_dir?)")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("{path} has storage format {found}; this build reads format {expected}")]
    Format {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// A redb operation failed; `op` says which (e.g. "append: commit").
    #[error("redb: {op}")]
    Redb {
        op: &'static str,
        #[source]
        source: redb::Error,
    },
    /// A stored value failed its checksum or could not be decoded. Never
    /// served: the caller gets this error instead.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("storage task did not finish")]
    Join(#[source] tokio::task::JoinError),
}

/// openraft 0.10's storage traits speak `io::Error`; openraft itself wraps
/// it into a `StorageError` with the subject (log, vote, state machine,
/// snapshot) and verb (read, write) of the call that failed. Corruption maps
/// to `InvalidData` so it stays recognisable; the `StoreError` is kept as
/// the source.
impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        let kind = match &e {
            StoreError::Corrupt { .. } | StoreError::Format { .. } => io::ErrorKind::InvalidData,
            StoreError::Snapshot(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Wraps any redb error with the operation that hit it.
fn redb_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Redb {
        op,
        source: e.into(),
    }
}

/// Runs blocking redb work (fsync, large scans) off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StoreError::Join)?
}

/// The node's storage. Cheap handles to it are handed to openraft
/// ([`Store::log_store`], [`Store::state_machine`]) and to readers
/// ([`Store::view`]).
pub struct Store {
    db: Arc<Database>,
    view: StateView,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) `<data_dir>/tandem.redb`, creating `data_dir` if
    /// needed, and loads the applied state into memory.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        init_tables(&db, &path)?;
        let applied = {
            let txn = db.begin_read().map_err(redb_err("open: begin read"))?;
            state_machine::load_applied(&txn)?
        };
        let index = applied.log_id.map(|l| l.index);
        tracing::info!(
            target: "tandem::consensus",
            path = %path.display(),
            index = ?index,
            leases = applied.state.leases.len(),
            "store opened"
        );
        let view = StateView::new(applied.state, index);
        Ok(Store {
            db: Arc::new(db),
            view,
            path,
        })
    }

    /// The Raft log and vote, for `Raft::new`. Clones share the database.
    #[must_use]
    pub fn log_store(&self) -> LogStore {
        LogStore::new(self.db.clone())
    }

    /// The state machine, for `Raft::new`. It updates [`Store::view`].
    #[must_use]
    pub fn state_machine(&self) -> StateMachine {
        StateMachine::new(self.db.clone(), self.view.clone())
    }

    /// The applied state, for readers (DHCP handler, API). Cheap to call.
    #[must_use]
    pub fn view(&self) -> StateView {
        self.view.clone()
    }

    /// Path of the database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates every table (so read transactions never meet a missing one) and
/// checks or stamps the format version, in one durable transaction.
fn init_tables(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(redb_err("open: begin write"))?;
    {
        let mut meta = txn
            .open_table(tables::RAFT_META)
            .map_err(redb_err("open: open raft_meta"))?;
        let found = match meta
            .get(tables::raft_meta::FORMAT)
            .map_err(redb_err("open: read format"))?
        {
            Some(v) => Some(codec::decode::<u32>(0, v.value(), &|| {
                "format version".into()
            })?),
            None => None,
        };
        match found {
            Some(v) if v == tables::FORMAT_VERSION => {}
            Some(found) => {
                return Err(StoreError::Format {
                    path: path.to_owned(),
                    found,
                    expected: tables::FORMAT_VERSION,
                })
            }
            None => {
                let v = codec::encode(0, &tables::FORMAT_VERSION, "format version")?;
                meta.insert(tables::raft_meta::FORMAT, v.as_slice())
                    .map_err(redb_err("open: write format"))?;
            }
        }
        txn.open_table(tables::LOG)
            .map_err(redb_err("open: open raft_log"))?;
        txn.open_table(tables::SM_META)
            .map_err(redb_err("open: open sm_meta"))?;
        txn.open_table(tables::LEASES)
            .map_err(redb_err("open: open sm_leases"))?;
        txn.open_table(tables::SNAPSHOT)
            .map_err(redb_err("open: open snapshot"))?;
    }
    txn.commit().map_err(redb_err("open: commit"))
}

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
    fn new(state: State, applied: Option<u64>) -> StateView {
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

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner
            .state
            .write()
            .expect("state lock poisoned: a panic while applying")
    }

    fn publish_applied(&self, index: Option<u64>) {
        set_applied_gauge(index);
        self.inner.applied.send_replace(index);
    }
}

fn set_applied_gauge(index: Option<u64>) {
    let v = index.map_or(0, |i| i64::try_from(i).unwrap_or(i64::MAX));
    crate::metrics::get().raft_applied_index.set(v);
}

/// Reads and decodes one sealed value of a `&str`-keyed table.
fn get_meta<T, Tbl>(table: &Tbl, key: &str, op: &'static str) -> Result<Option<T>, StoreError>
where
    T: serde::de::DeserializeOwned,
    Tbl: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key).map_err(redb_err(op))? {
        Some(v) => Ok(Some(codec::decode(0, v.value(), &|| key.to_owned())?)),
        None => Ok(None),
    }
}
