//! The state machine: openraft's `RaftStateMachine`, persisted in the
//! `sm_meta` and `sm_leases` tables, with the in-memory [`State`] of
//! [`StateView`] as the read view.
//!
//! # Why `apply` does not fsync
//!
//! `apply` commits each batch with `Durability::None`. That is safe because:
//!
//! 1. The log is durable (every append is fsynced) and `last_applied` is
//!    written in the same transaction as the leases and config it produced,
//!    so after a crash the tables describe *some* earlier applied point `A`
//!    consistently, never a mix.
//! 2. On restart openraft reads `applied_state()` (= `A`) and re-applies the
//!    committed entries after `A` from the log. `apply` is deterministic, so
//!    the result is what was lost.
//! 3. That needs the entries after `A` to still be in the log: the log is
//!    never purged past a durably applied index. redb makes commits durable
//!    in commit order (a durable commit persists every earlier non-durable
//!    one), and all of ours go through one database. openraft purges only up
//!    to a snapshot it built or installed; building ends with an `Immediate`
//!    commit after reading the applied state, installing is itself
//!    `Immediate`, and the purge commit (also `Immediate`) comes later
//!    still. So whenever a purge up to `P` is on disk, an applied state at
//!    or past `P` is on disk too.
//!
//! The same ordering argument makes the next log append's fsync persist all
//! applies before it, so in practice the state machine trails the disk by
//! at most one append.
//!
//! # Performance
//!
//! One write transaction per batch (up to [`MAX_BATCH`] entries). Only the
//! lease rows a command can touch are rewritten (a Grant touches its address
//! and the client's previous one), never the whole state.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{ApplyResponder, EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable};

use super::snapshot::{self, SnapshotData};
use super::tables::{self, sm_meta};
use super::{blocking, codec, get_meta, redb_err, StateView, StoreError};
use crate::consensus::TypeConfig;
use crate::model::{Command, CommandResponse, Lease, ServiceConfig, State};

type C = TypeConfig;

/// Entries applied per redb transaction at most; bounds memory when a
/// restarted node re-applies a long log.
pub const MAX_BATCH: usize = 1024;

/// The state machine handed to openraft. It shares the database with the
/// log store and the state with every [`StateView`].
pub struct StateMachine {
    db: Arc<Database>,
    view: StateView,
}

/// Builds snapshots from a read transaction, so it never blocks `apply`.
pub struct SnapshotBuilder {
    db: Arc<Database>,
}

/// The applied point as stored in redb.
pub(super) struct Applied {
    pub log_id: Option<LogIdOf<C>>,
    pub membership: StoredMembershipOf<C>,
    pub state: State,
}

pub(super) fn lease_key(ip: Ipv4Addr) -> u32 {
    u32::from(ip)
}

pub(super) fn encode_lease(lease: &Lease) -> Result<Vec<u8>, StoreError> {
    codec::encode(u64::from(lease_key(lease.ip)), lease, "lease")
}

/// Loads the applied point (meta, config, every lease) from one read
/// transaction and rebuilds the state's derived indexes.
pub(super) fn load_applied(txn: &ReadTransaction) -> Result<Applied, StoreError> {
    let meta = txn
        .open_table(tables::SM_META)
        .map_err(redb_err("load state: open sm_meta"))?;
    let last_applied: Option<LogIdOf<C>> =
        get_meta(&meta, sm_meta::LAST_APPLIED, "load state: read applied")?;
    let last_membership: StoredMembershipOf<C> = get_meta(
        &meta,
        sm_meta::LAST_MEMBERSHIP,
        "load state: read membership",
    )?
    .unwrap_or_default();
    let config: ServiceConfig =
        get_meta(&meta, sm_meta::CONFIG, "load state: read config")?.unwrap_or_default();
    let table = txn
        .open_table(tables::LEASES)
        .map_err(redb_err("load state: open leases"))?;
    let mut leases = BTreeMap::new();
    for row in table.iter().map_err(redb_err("load state: scan leases"))? {
        let (k, v) = row.map_err(redb_err("load state: next lease"))?;
        let key = k.value();
        let ip = Ipv4Addr::from(key);
        let lease: Lease = codec::decode(u64::from(key), v.value(), &|| format!("lease {ip}"))?;
        if lease.ip != ip {
            return Err(StoreError::Corrupt {
                what: format!("lease {ip}"),
                detail: format!("holds {}", lease.ip),
            });
        }
        leases.insert(ip, lease);
    }
    let mut state = State::default();
    state.config = config;
    state.leases = leases;
    state.reindex();
    Ok(Applied {
        log_id: last_applied,
        membership: last_membership,
        state,
    })
}

/// Addresses whose lease row `cmd` may insert, change or delete, judged
/// before applying it. Mirrors `State::apply`; a change outside this set is
/// caught by the row-count check in `apply_batch` and repaired by a full
/// rewrite (and the `apply_then_reload_matches_memory` test fails).
fn touched_addresses(state: &State, cmd: &Command) -> Vec<Ipv4Addr> {
    match cmd {
        Command::SetConfig { .. } => Vec::new(),
        Command::Grant { lease } => {
            let mut v = vec![lease.ip];
            if let Some(prev) = state.lease_of_mac(lease.mac) {
                if prev.ip != lease.ip {
                    v.push(prev.ip);
                }
            }
            v
        }
        Command::Release { ip, .. } | Command::Decline { ip, .. } => vec![*ip],
    }
}

/// What one batch changed, to be written in one transaction.
struct BatchWrite {
    last_applied: Option<LogIdOf<C>>,
    membership: Option<StoredMembershipOf<C>>,
    config: Option<ServiceConfig>,
    /// `Some(lease)` to (re)write a row, `None` to delete it.
    rows: Vec<(Ipv4Addr, Option<Lease>)>,
    /// Every lease, when the row set could not be trusted.
    rewrite_all: Option<Vec<Lease>>,
}

impl StateMachine {
    pub(super) fn new(db: Arc<Database>, view: StateView) -> StateMachine {
        StateMachine { db, view }
    }

    /// Applies one batch: in memory under the view's write lock (pure, no
    /// I/O, so readers wait microseconds), then one redb transaction, then
    /// publishes the applied index and answers the clients.
    fn apply_batch(&mut self, batch: Vec<EntryResponder<C>>) -> Result<(), StoreError> {
        let mut responses: Vec<(Option<ApplyResponder<C>>, CommandResponse)> =
            Vec::with_capacity(batch.len());
        let write = {
            let mut st = self.view.write();
            let mut dirty = BTreeSet::new();
            let mut config_dirty = false;
            let mut rows_trusted = true;
            let mut membership = None;
            let mut last_applied = None;
            for (entry, responder) in batch {
                let log_id = entry.log_id;
                let resp = match entry.payload {
                    EntryPayload::Blank => CommandResponse::Ok,
                    EntryPayload::Normal(cmd) => {
                        let touched = touched_addresses(&st, &cmd);
                        let present = |s: &State| {
                            touched
                                .iter()
                                .filter(|ip| s.leases.contains_key(ip))
                                .count()
                        };
                        let (len_before, present_before) = (st.leases.len(), present(&st));
                        let resp = st.apply(&cmd);
                        // Rows outside `touched` must not appear or vanish.
                        if st.leases.len() + present_before != len_before + present(&st) {
                            rows_trusted = false;
                        }
                        config_dirty |= matches!(cmd, Command::SetConfig { .. });
                        dirty.extend(touched);
                        resp
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(log_id), m));
                        CommandResponse::Ok
                    }
                };
                last_applied = Some(log_id);
                responses.push((responder, resp));
            }
            let rewrite_all = if rows_trusted {
                None
            } else {
                tracing::warn!(
                    target: "tandem::store",
                    "a command changed lease rows it does not name; rewriting the lease table"
                );
                Some(st.leases.values().cloned().collect())
            };
            BatchWrite {
                last_applied,
                membership,
                config: config_dirty.then(|| st.config.clone()),
                rows: dirty
                    .into_iter()
                    .map(|ip| (ip, st.leases.get(&ip).cloned()))
                    .collect(),
                rewrite_all,
            }
        };
        let last = write.last_applied;
        let db = self.db.clone();
        // Not fsynced (see the module docs), so inline: a page-cache commit is
        // cheaper than handing it to the blocking pool and back.
        write_batch(&db, &write)?;

        self.view.publish_applied(last.as_ref().map(|l| l.index));
        if let Some(l) = &last {
            tracing::debug!(
                target: "tandem::consensus",
                term = l.leader_id.term,
                index = l.index,
                entries = responses.len(),
                "applied"
            );
        }
        for (responder, resp) in responses {
            if let Some(r) = responder {
                r.send(resp);
            }
        }
        Ok(())
    }
}

fn write_batch(db: &Database, w: &BatchWrite) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(redb_err("apply: begin"))?;
    // Not fsynced: see the module docs for why this is safe.
    txn.set_durability(Durability::None)
        .map_err(redb_err("apply: durability"))?;
    {
        let mut leases = txn
            .open_table(tables::LEASES)
            .map_err(redb_err("apply: open leases"))?;
        if let Some(all) = &w.rewrite_all {
            leases
                .retain(|_, _| false)
                .map_err(redb_err("apply: clear leases"))?;
            for lease in all {
                leases
                    .insert(lease_key(lease.ip), encode_lease(lease)?.as_slice())
                    .map_err(redb_err("apply: write lease"))?;
            }
        } else {
            for (ip, row) in &w.rows {
                match row {
                    Some(lease) => {
                        leases
                            .insert(lease_key(*ip), encode_lease(lease)?.as_slice())
                            .map_err(redb_err("apply: write lease"))?;
                    }
                    None => {
                        leases
                            .remove(lease_key(*ip))
                            .map_err(redb_err("apply: delete lease"))?;
                    }
                }
            }
        }
        let mut meta = txn
            .open_table(tables::SM_META)
            .map_err(redb_err("apply: open sm_meta"))?;
        if let Some(l) = &w.last_applied {
            let v = codec::encode(0, l, "last applied log id")?;
            meta.insert(sm_meta::LAST_APPLIED, v.as_slice())
                .map_err(redb_err("apply: write applied"))?;
        }
        if let Some(m) = &w.membership {
            let v = codec::encode(0, m, "last membership")?;
            meta.insert(sm_meta::LAST_MEMBERSHIP, v.as_slice())
                .map_err(redb_err("apply: write membership"))?;
        }
        if let Some(c) = &w.config {
            let v = codec::encode(0, c, "service config")?;
            meta.insert(sm_meta::CONFIG, v.as_slice())
                .map_err(redb_err("apply: write config"))?;
        }
    }
    txn.commit().map_err(redb_err("apply: commit"))
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let txn = self
            .db
            .begin_read()
            .map_err(redb_err("applied state: begin"))?;
        let meta = txn
            .open_table(tables::SM_META)
            .map_err(redb_err("applied state: open"))?;
        let last: Option<LogIdOf<C>> =
            get_meta(&meta, sm_meta::LAST_APPLIED, "applied state: read applied")?;
        let membership: Option<StoredMembershipOf<C>> = get_meta(
            &meta,
            sm_meta::LAST_MEMBERSHIP,
            "applied state: read membership",
        )?;
        Ok((last, membership.unwrap_or_default()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            batch.push(item?);
            if batch.len() >= MAX_BATCH {
                self.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.apply_batch(batch)?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let db = self.db.clone();
        let m = meta.clone();
        let state = blocking(move || snapshot::install(&db, &m, &snapshot)).await?;
        *self.view.write() = state;
        self.view
            .publish_applied(meta.last_log_id.as_ref().map(|l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, SnapshotData>>, io::Error> {
        let db = self.db.clone();
        Ok(blocking(move || snapshot::current(&db)).await?)
    }
}

impl RaftSnapshotBuilder<C> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, SnapshotData>, io::Error> {
        let db = self.db.clone();
        Ok(blocking(move || snapshot::build(&db)).await?)
    }
}
