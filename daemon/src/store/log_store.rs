//! The Raft log and vote: openraft's `RaftLogStorage` and `RaftLogReader`.
//!
//! Writes are serialized by openraft (one `RaftCore` task owns the store) and
//! by redb (one write transaction at a time), so the order of commits is the
//! order of calls. Every write that openraft needs durable — `append`,
//! `save_vote`, `truncate_after`, `purge` — commits with
//! `Durability::Immediate` before it reports success.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::codec;
use super::error::{blocking, redb_err, StoreError};
use super::rows::get_meta;
use super::tables::{self, raft_meta};
use super::types::StoreTypes;

/// Handle to the Raft log in `tandem.redb`. Clones share the database; the
/// log reader openraft asks for is a clone too.
pub struct LogStore<C> {
    db: Arc<Database>,
    _types: PhantomData<C>,
}

// By hand: a derive would ask `C: Clone`, and the handle clones the database only.
impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            _types: PhantomData,
        }
    }
}

impl<C: StoreTypes> LogStore<C> {
    pub(super) fn new(db: Arc<Database>) -> Self {
        LogStore {
            db,
            _types: PhantomData,
        }
    }

    /// Entries in `[lo, hi)`, each verified: checksum, stored index equal to
    /// its key, and no hole between consecutive entries.
    fn read_entries(&self, lo: Bound<u64>, hi: Bound<u64>) -> Result<Vec<EntryOf<C>>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("read logs: begin"))?;
        let table = txn
            .open_table(tables::LOG)
            .map_err(redb_err("read logs: open table"))?;
        let mut out = Vec::new();
        for row in table
            .range((lo, hi))
            .map_err(redb_err("read logs: range"))?
        {
            let (k, v) = row.map_err(redb_err("read logs: next"))?;
            let index = k.value();
            let entry = decode_entry::<C>(index, v.value())?;
            if let Some(prev) = out.last().map(|e: &EntryOf<C>| e.log_id.index) {
                if index != prev + 1 {
                    return Err(StoreError::Corrupt {
                        what: "raft log".into(),
                        detail: format!("hole between entries {prev} and {index}"),
                    });
                }
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<C>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("log state: begin"))?;
        let meta = txn
            .open_table(tables::RAFT_META)
            .map_err(redb_err("log state: open meta"))?;
        let last_purged_log_id: Option<LogIdOf<C>> =
            get_meta(&meta, raft_meta::LAST_PURGED, "log state: read purged")?;
        let log = txn
            .open_table(tables::LOG)
            .map_err(redb_err("log state: open log"))?;
        let last = match log.last().map_err(redb_err("log state: last entry"))? {
            Some((k, v)) => Some(decode_entry::<C>(k.value(), v.value())?.log_id),
            None => None,
        };
        // With no entry left, the last log id is the last purged one.
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    fn read_raft_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        op: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err(op))?;
        let meta = txn.open_table(tables::RAFT_META).map_err(redb_err(op))?;
        get_meta(&meta, key, op)
    }

    /// Writes one `raft_meta` value in its own transaction.
    async fn write_raft_meta(
        &self,
        key: &'static str,
        value: Vec<u8>,
        durability: Durability,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let db = self.db.clone();
        let write = move || {
            let mut txn = db.begin_write().map_err(redb_err(op))?;
            txn.set_durability(durability).map_err(redb_err(op))?;
            {
                let mut meta = txn.open_table(tables::RAFT_META).map_err(redb_err(op))?;
                meta.insert(key, value.as_slice()).map_err(redb_err(op))?;
            }
            txn.commit().map_err(redb_err(op))
        };
        // A commit without fsync only touches the page cache: running it
        // inline saves two thread hand-offs per commit on the hot path.
        if matches!(durability, Durability::None) {
            write()
        } else {
            blocking(write).await
        }
    }
}

pub(super) fn decode_entry<C: StoreTypes>(
    index: u64,
    bytes: &[u8],
) -> Result<EntryOf<C>, StoreError> {
    let entry: EntryOf<C> = codec::decode(index, bytes, &|| format!("log entry {index}"))?;
    if entry.log_id.index != index {
        return Err(StoreError::Corrupt {
            what: format!("log entry {index}"),
            detail: format!("holds index {}", entry.log_id.index),
        });
    }
    Ok(entry)
}

impl<C: StoreTypes> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        Ok(self.read_entries(range.start_bound().cloned(), range.end_bound().cloned())?)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.read_raft_meta(raft_meta::VOTE, "read vote")?)
    }
}

impl<C: StoreTypes> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        Ok(self.log_state()?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Durable before returning, as openraft requires.
    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let v = codec::encode(0, vote, "vote")?;
        Ok(self
            .write_raft_meta(raft_meta::VOTE, v, Durability::Immediate, "save vote")
            .await?)
    }

    /// Not fsynced: the committed id only lets a restarted node re-apply
    /// sooner. redb makes commits durable in order, so whenever this value
    /// is on disk, every append committed before it is too.
    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let v = codec::encode(0, &committed, "committed log id")?;
        Ok(self
            .write_raft_meta(raft_meta::COMMITTED, v, Durability::None, "save committed")
            .await?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        let v: Option<Option<LogIdOf<C>>> =
            self.read_raft_meta(raft_meta::COMMITTED, "read committed")?;
        Ok(v.flatten())
    }

    /// One redb write transaction for the whole batch, fsynced, and only then
    /// the callback: when openraft hands over several entries at once they
    /// share one fsync (group commit). It runs inline on the Raft thread:
    /// Raft cannot commit before the fsync anyway, and handing it to a
    /// blocking thread cost two context switches per batch.
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<EntryOf<C>> = entries.into_iter().collect();
        let db = self.db.clone();
        let res = (move || {
            let rows = entries
                .iter()
                .map(|e| {
                    Ok((
                        e.log_id.index,
                        codec::encode(e.log_id.index, e, "log entry")?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let mut txn = db.begin_write().map_err(redb_err("append: begin"))?;
            txn.set_durability(Durability::Immediate)
                .map_err(redb_err("append: durability"))?;
            {
                let mut log = txn
                    .open_table(tables::LOG)
                    .map_err(redb_err("append: open log"))?;
                for (index, value) in &rows {
                    log.insert(index, value.as_slice())
                        .map_err(redb_err("append: insert"))?;
                }
            }
            txn.commit().map_err(redb_err("append: commit"))
        })();
        match res {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                // Both the waiter on the callback and the caller learn of it.
                callback.io_completed(Err(io::Error::other(e.to_string())));
                Err(e.into())
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(redb_err("truncate: begin"))?;
            {
                let mut log = txn
                    .open_table(tables::LOG)
                    .map_err(redb_err("truncate: open log"))?;
                log.retain_in(from.., |_, _| false)
                    .map_err(redb_err("truncate: delete"))?;
            }
            txn.commit().map_err(redb_err("truncate: commit"))
        })
        .await?;
        Ok(())
    }

    /// Deletes `..=log_id.index` and records `log_id` as purged, in one
    /// durable transaction. openraft only purges up to a snapshot it has
    /// built or installed, i.e. at or below what the state machine applied
    /// in an earlier commit, which this commit makes durable too.
    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(redb_err("purge: begin"))?;
            {
                let mut meta = txn
                    .open_table(tables::RAFT_META)
                    .map_err(redb_err("purge: open meta"))?;
                let prev: Option<LogIdOf<C>> =
                    get_meta(&meta, raft_meta::LAST_PURGED, "purge: read purged")?;
                if prev.as_ref().is_none_or(|p| p.index < log_id.index) {
                    let v = codec::encode(0, &log_id, "last purged log id")?;
                    meta.insert(raft_meta::LAST_PURGED, v.as_slice())
                        .map_err(redb_err("purge: write purged"))?;
                }
                let mut log = txn
                    .open_table(tables::LOG)
                    .map_err(redb_err("purge: open log"))?;
                log.retain_in(..=log_id.index, |_, _| false)
                    .map_err(redb_err("purge: delete"))?;
            }
            txn.commit().map_err(redb_err("purge: commit"))
        })
        .await?;
        Ok(())
    }
}
