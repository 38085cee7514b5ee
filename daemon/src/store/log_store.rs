//! The Raft log and vote: openraft's `RaftLogStorage` and `RaftLogReader`.
//!
//! Every write goes to the store's writer thread ([`super::writer`]), in call
//! order, so the order of commits is the order of calls. `append` returns at
//! once: its entries wait in the pending map, where readers find them, until
//! their transaction committed with `Durability::Immediate`; only then is
//! openraft told they are flushed. `save_vote`, `truncate_after` and `purge`
//! wait for their durable commit before they return.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::codec;
use super::error::{redb_err, StoreError};
use super::rows::get_meta;
use super::tables::{self, raft_meta};
use super::types::StoreTypes;
use super::writer::Writer;

/// Entries appended but not yet committed, by index: readable at once, as
/// openraft requires of `append`.
type Pending<C> = Arc<Mutex<BTreeMap<u64, EntryOf<C>>>>;

/// Handle to the Raft log in `tandem.redb`. Clones share the database, the
/// writer and the pending entries; the log reader openraft asks for is a
/// clone too.
pub struct LogStore<C: StoreTypes> {
    db: Arc<Database>,
    writer: Arc<Writer>,
    pending: Pending<C>,
}

// By hand: a derive would ask `C: Clone`, and the handle clones handles only.
impl<C: StoreTypes> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            writer: self.writer.clone(),
            pending: self.pending.clone(),
        }
    }
}

impl<C: StoreTypes> LogStore<C> {
    pub(super) fn new(db: Arc<Database>, writer: Arc<Writer>) -> Self {
        LogStore {
            db,
            writer,
            pending: Arc::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, EntryOf<C>>> {
        // The map is never left half-changed: every holder does one insert,
        // remove or clone.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries in `[lo, hi)`: the pending ones, then the committed ones
    /// (in that order: an entry leaves the map only after its commit, so
    /// each is found in one or the other), without a hole.
    fn read_entries(&self, lo: Bound<u64>, hi: Bound<u64>) -> Result<Vec<EntryOf<C>>, StoreError> {
        let pending: Vec<EntryOf<C>> = self
            .pending()
            .range((lo, hi))
            .map(|(_, e)| e.clone())
            .collect();
        let Some(first_pending) = pending.first().map(|e| e.log_id.index) else {
            return self.read_committed_entries(lo, hi);
        };
        let mut out = self.read_committed_entries(lo, Bound::Excluded(first_pending))?;
        if let Some(prev) = out.last().map(|e| e.log_id.index) {
            if prev + 1 != first_pending {
                return Err(StoreError::Corrupt {
                    what: "raft log".into(),
                    detail: format!("hole between entries {prev} and {first_pending}"),
                });
            }
        }
        out.extend(pending);
        Ok(out)
    }

    /// Committed entries in `[lo, hi)`, each verified: checksum, stored
    /// index equal to its key, and no hole between consecutive entries.
    fn read_committed_entries(
        &self,
        lo: Bound<u64>,
        hi: Bound<u64>,
    ) -> Result<Vec<EntryOf<C>>, StoreError> {
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
        // Pending entries are newer than every committed one; with no entry
        // left, the last log id is the last purged one.
        let pending = self
            .pending()
            .last_key_value()
            .map(|(_, e)| e.log_id.clone());
        let last_log_id = pending.or(last).or(last_purged_log_id);
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

    /// Writes one `raft_meta` value, waiting for its commit.
    async fn write_raft_meta(
        &self,
        key: &'static str,
        value: Vec<u8>,
        durable: bool,
        op: &'static str,
    ) -> Result<(), StoreError> {
        self.writer
            .run(durable, move |txn| {
                let mut meta = txn.open_table(tables::RAFT_META).map_err(redb_err(op))?;
                meta.insert(key, value.as_slice()).map_err(redb_err(op))?;
                Ok(())
            })
            .await
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
            .write_raft_meta(raft_meta::VOTE, v, true, "save vote")
            .await?)
    }

    /// Not fsynced: the committed id only lets a restarted node re-apply
    /// sooner. redb makes commits durable in order, so whenever this value
    /// is on disk, every append committed before it is too.
    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let v = codec::encode(0, &committed, "committed log id")?;
        // Queued, not awaited: nothing waits for this value.
        self.writer.submit(
            false,
            Box::new(move |txn| {
                let op = "save committed";
                let mut meta = txn.open_table(tables::RAFT_META).map_err(redb_err(op))?;
                meta.insert(raft_meta::COMMITTED, v.as_slice())
                    .map_err(redb_err(op))?;
                Ok(())
            }),
            Box::new(|r| {
                if let Err(e) = r {
                    tracing::warn!(target: "tandem::consensus", error = %e, "cannot save the committed log id");
                }
            }),
        );
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        let v: Option<Option<LogIdOf<C>>> =
            self.read_raft_meta(raft_meta::COMMITTED, "read committed")?;
        Ok(v.flatten())
    }

    /// Puts the entries in the pending map (readable at once) and queues
    /// their write; the writer commits them, with whatever else is queued,
    /// in one fsynced transaction (group commit), and only then calls
    /// `callback`. Encoding happens on the writer thread too, off the Raft
    /// thread.
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<EntryOf<C>> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        {
            let mut p = self.pending();
            for e in &entries {
                p.insert(e.log_id.index, e.clone());
            }
        }
        let ids: Vec<LogIdOf<C>> = entries.iter().map(|e| e.log_id.clone()).collect();
        let pending = self.pending.clone();
        let started = std::time::Instant::now();
        self.writer.submit(
            true,
            Box::new(move |txn| {
                let mut log = txn
                    .open_table(tables::LOG)
                    .map_err(redb_err("append: open log"))?;
                for e in &entries {
                    let v = codec::encode(e.log_id.index, e, "log entry")?;
                    log.insert(e.log_id.index, v.as_slice())
                        .map_err(redb_err("append: insert"))?;
                }
                Ok(())
            }),
            Box::new(move |r| {
                crate::metrics::get()
                    .raft_append_seconds
                    .observe(started.elapsed().as_secs_f64());
                match r {
                    Ok(()) => {
                        {
                            // Committed now: readers find them in redb. An
                            // index re-appended since (after a truncation)
                            // holds another log id and stays.
                            let mut p = pending.lock().unwrap_or_else(PoisonError::into_inner);
                            for id in &ids {
                                if p.get(&id.index).is_some_and(|e| e.log_id == *id) {
                                    p.remove(&id.index);
                                }
                            }
                        }
                        callback.io_completed(Ok(()));
                    }
                    Err(e) => callback.io_completed(Err(io::Error::from(e))),
                }
            }),
        );
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.writer
            .run(true, move |txn| {
                let mut log = txn
                    .open_table(tables::LOG)
                    .map_err(redb_err("truncate: open log"))?;
                log.retain_in(from.., |_, _| false)
                    .map_err(redb_err("truncate: delete"))?;
                Ok(())
            })
            .await?;
        // Every append queued before this call committed before it (one
        // writer, in order), so nothing at or past `from` is still pending;
        // this only makes sure.
        drop(self.pending().split_off(&from));
        Ok(())
    }

    /// Deletes `..=log_id.index` and records `log_id` as purged, in one
    /// durable transaction. openraft only purges up to a snapshot it has
    /// built or installed, i.e. at or below what the state machine applied
    /// in an earlier commit, which this commit makes durable too.
    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.writer
            .run(true, move |txn| {
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
                Ok(())
            })
            .await?;
        Ok(())
    }
}
