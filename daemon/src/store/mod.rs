//! # Layout
//! The only module that touches redb. One file, `<data_dir>/tandem.redb`,
//! holds the Raft log, the vote, the committed and purged log ids, the state
//! machine (last applied log id, last membership, service config, one row per
//! lease, one per artifact name and one per held blob) and the latest snapshot.
//!
//! The store is generic over the Raft type config ([`StoreTypes`]), as
//! openraft's own `examples/sm-mem` and `log-mem` are: it needs only that the
//! log carries [`crate::model::Command`]s, so it depends on `model` and never
//! on `consensus`, which instantiates it.
//!
//! - [`types`]: [`StoreTypes`], what the store needs of a type config.
//! - [`error`]: [`StoreError`], and the helpers that make it.
//! - [`tables`]: the typed `TableDefinition`s and the invariants between them.
//! - [`codec`]: how a value is framed on disk (tag + CRC-32C + JSON).
//! - [`rows`]: lease keys and rows, meta values, loading the applied point;
//!   shared by the state machine and snapshots.
//! - [`view`]: [`StateView`], the in-memory read view the DHCP hot path reads.
//! - [`log_store`]: [`LogStore`], openraft's `RaftLogStorage` and `RaftLogReader`.
//! - [`state_machine`]: [`StateMachine`], openraft's `RaftStateMachine`.
//! - [`snapshot`]: snapshot encoding (JSON + zstd), building and installing.
//!
//! Files depend one way: `types`, `error` ← `codec`, `tables` ← `rows` ←
//! `snapshot` ← `state_machine`; `view` and `log_store` beside them; this
//! file (the [`Store`] that opens them) above all.
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
mod error;
mod log_store;
mod rows;
mod snapshot;
mod state_machine;
mod tables;
#[cfg(test)]
mod tests;
mod types;
mod view;
mod writer;

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

pub use error::StoreError;
pub use log_store::LogStore;
pub use snapshot::{SnapshotData, SnapshotPayload, MAX_SNAPSHOT_JSON};
pub use state_machine::{SnapshotBuilder, StateMachine};
pub use types::StoreTypes;
pub use view::StateView;

use error::redb_err;

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

/// The node's storage. Cheap handles to it are handed to openraft
/// ([`Store::log_store`], [`Store::state_machine`]) and to readers
/// ([`Store::view`]).
pub struct Store<C> {
    db: Arc<Database>,
    writer: Arc<writer::Writer>,
    view: StateView,
    path: PathBuf,
    _types: PhantomData<C>,
}

impl<C: StoreTypes> Store<C> {
    /// Opens (or creates) `<data_dir>/tandem.redb`, creating `data_dir` if
    /// needed, and loads the applied state into memory.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
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
            rows::load_applied::<C>(&txn)?
        };
        // Before Raft starts, the last applied entry is this node's place
        // in the log (0, 0: nothing applied yet).
        let index = applied.log_id.map(|l| l.index);
        let last = applied.log_id.as_ref();
        tracing::info!(
            target: "tandem::consensus",
            path = %path.display(),
            term = last.map_or(0, |l| l.leader_id.term),
            index = last.map_or(0, |l| l.index),
            leases = applied.state.leases.len(),
            "store opened"
        );
        let view = StateView::new(applied.state, index);
        let db = Arc::new(db);
        let writer = writer::Writer::spawn(db.clone()).map_err(StoreError::Spawn)?;
        Ok(Store {
            writer: Arc::new(writer),
            db,
            view,
            path,
            _types: PhantomData,
        })
    }

    /// The Raft log and vote, for `Raft::new`. Clones share the database.
    #[must_use]
    pub fn log_store(&self) -> LogStore<C> {
        LogStore::new(self.db.clone(), self.writer.clone())
    }

    /// The state machine, for `Raft::new`. It updates [`Store::view`].
    #[must_use]
    pub fn state_machine(&self) -> StateMachine<C> {
        StateMachine::new(self.db.clone(), self.writer.clone(), self.view.clone())
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

    /// Deletes the database in `data_dir` (a node that joins another cluster
    /// gives up its own state; that cluster's log and snapshot replace it).
    /// Returns whether there was one. Call it only while no `Store` is open.
    pub fn discard(data_dir: &Path) -> Result<bool, StoreError> {
        let path = data_dir.join(DB_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Discard { path, source }),
        }
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
        txn.open_table(tables::ARTIFACTS)
            .map_err(redb_err("open: open sm_artifacts"))?;
        txn.open_table(tables::HOLDERS)
            .map_err(redb_err("open: open sm_holders"))?;
        txn.open_table(tables::SNAPSHOT)
            .map_err(redb_err("open: open snapshot"))?;
    }
    txn.commit().map_err(redb_err("open: commit"))
}
