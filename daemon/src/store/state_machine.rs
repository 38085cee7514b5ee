//! The state machine: openraft's `RaftStateMachine`, persisted in the
//! `sm_meta`, `sm_leases`, `sm_artifacts` and `sm_holders` tables, with the in-memory [`State`] of
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
//! One write job per batch (up to [`MAX_BATCH`] entries), in the writer's shared transaction. Only the
//! lease rows that `State::apply_tracked` reports changed are rewritten (a
//! Grant touches its address and the client's previous one), never the
//! whole state; likewise the artifact and holder rows.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::marker::PhantomData;
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{ApplyResponder, EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use redb::{Database, ReadableDatabase, WriteTransaction};

use super::codec;
use super::error::{blocking, redb_err, StoreError};
use super::rows::{encode_artifact, encode_holders, encode_lease, get_meta, lease_key};
use super::snapshot::{self, SnapshotData};
use super::tables::{self, sm_meta};
use super::types::StoreTypes;
use super::view::StateView;
use super::writer::Writer;
use crate::model::{Artifact, CommandResponse, Lease, ServiceConfig, TrustState};

/// Entries applied per redb transaction at most; bounds memory when a
/// restarted node re-applies a long log.
pub const MAX_BATCH: usize = 1024;

/// The state machine handed to openraft. It shares the database with the
/// log store and the state with every [`StateView`].
pub struct StateMachine<C> {
    db: Arc<Database>,
    writer: Arc<Writer>,
    view: StateView,
    _types: PhantomData<C>,
}

/// Builds snapshots from a read transaction, so it never blocks `apply`.
pub struct SnapshotBuilder<C> {
    db: Arc<Database>,
    _types: PhantomData<C>,
}

/// What one batch changed, to be written in one transaction.
struct BatchWrite<C: StoreTypes> {
    last_applied: Option<LogIdOf<C>>,
    membership: Option<StoredMembershipOf<C>>,
    config: Option<ServiceConfig>,
    trust: Option<TrustState>,
    /// `Some(lease)` to (re)write a row, `None` to delete it.
    rows: Vec<(Ipv4Addr, Option<Lease>)>,
    /// Artifact index rows, `None` to delete.
    artifacts: BTreeMap<String, Option<Artifact>>,
    /// Holder rows by sha256, `None` to delete.
    holders: BTreeMap<String, Option<BTreeSet<u64>>>,
}

impl<C: StoreTypes> StateMachine<C> {
    pub(super) fn new(db: Arc<Database>, writer: Arc<Writer>, view: StateView) -> Self {
        StateMachine {
            db,
            writer,
            view,
            _types: PhantomData,
        }
    }

    /// Applies one batch: in memory under the view's write lock (pure, no
    /// I/O, so readers wait microseconds), then one redb transaction, then
    /// publishes the applied index and answers the clients.
    async fn apply_batch(&mut self, batch: Vec<EntryResponder<C>>) -> Result<(), StoreError> {
        let mut responses: Vec<(Option<ApplyResponder<C>>, CommandResponse)> =
            Vec::with_capacity(batch.len());
        let write = {
            let mut st = self.view.write();
            let mut dirty = BTreeSet::new();
            let mut artifacts_dirty = BTreeSet::new();
            let mut holders_dirty = BTreeSet::new();
            let mut config_dirty = false;
            let mut trust_dirty = false;
            let mut membership = None;
            let mut last_applied = None;
            for (entry, responder) in batch {
                let log_id = entry.log_id;
                let resp = match entry.payload {
                    EntryPayload::Blank => CommandResponse::Ok,
                    EntryPayload::Normal(cmd) => {
                        // The state names the rows it changed (`apply_tracked`).
                        // A panic here would unwind through the view's
                        // write guard and poison it: every later read
                        // (DHCP, status) would fail while Raft looks alive.
                        // Abort instead (see `abort_on_apply_panic`).
                        let (resp, changes) =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                st.apply_tracked(&cmd)
                            }))
                            .unwrap_or_else(|_| abort_on_apply_panic(log_id.index));
                        config_dirty |= changes.config;
                        trust_dirty |= changes.trust;
                        dirty.extend(changes.leases);
                        artifacts_dirty.extend(changes.artifacts);
                        holders_dirty.extend(changes.holders);
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
            BatchWrite::<C> {
                last_applied,
                membership,
                config: config_dirty.then(|| st.config.clone()),
                trust: trust_dirty.then(|| st.trust.clone()),
                rows: dirty
                    .into_iter()
                    .map(|ip| (ip, st.leases.get(&ip).cloned()))
                    .collect(),
                artifacts: artifacts_dirty
                    .into_iter()
                    .map(|n| {
                        let row = st.artifacts.get(&n).cloned();
                        (n, row)
                    })
                    .collect(),
                holders: holders_dirty
                    .into_iter()
                    .map(|h| {
                        let row = st.holders.get(&h).cloned();
                        (h, row)
                    })
                    .collect(),
            }
        };
        let last = write.last_applied.clone();
        // Not fsynced (see the module docs); in the writer's order, after
        // every log append queued before it.
        self.writer
            .run(false, move |txn| write_batch(txn, &write))
            .await?;

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

/// A committed entry's apply panicked: the in-memory state may be half
/// changed, and the entry is in the log, so a retry would panic again. The
/// process aborts (no unwinding, so the view's lock is never left poisoned
/// for a live process to trip on): systemd restarts it and the other nodes
/// elect meanwhile. The panic message was already printed by the hook.
fn abort_on_apply_panic(index: u64) -> ! {
    tracing::error!(target: "tandem::consensus", index, "panic while applying committed entry {index}: aborting the process (the state machine cannot go on)");
    eprintln!("tandem: panic while applying committed entry {index}; aborting");
    std::process::abort()
}

fn write_batch<C: StoreTypes>(txn: &WriteTransaction, w: &BatchWrite<C>) -> Result<(), StoreError> {
    {
        let mut leases = txn
            .open_table(tables::LEASES)
            .map_err(redb_err("apply: open leases"))?;
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
        if !w.artifacts.is_empty() {
            let mut t = txn
                .open_table(tables::ARTIFACTS)
                .map_err(redb_err("apply: open artifacts"))?;
            for (name, row) in &w.artifacts {
                match row {
                    Some(a) => t
                        .insert(name.as_str(), encode_artifact(name, a)?.as_slice())
                        .map(drop),
                    None => t.remove(name.as_str()).map(drop),
                }
                .map_err(redb_err("apply: write artifact"))?;
            }
        }
        if !w.holders.is_empty() {
            let mut t = txn
                .open_table(tables::HOLDERS)
                .map_err(redb_err("apply: open holders"))?;
            for (sha, row) in &w.holders {
                match row {
                    Some(h) => t
                        .insert(sha.as_str(), encode_holders(sha, h)?.as_slice())
                        .map(drop),
                    None => t.remove(sha.as_str()).map(drop),
                }
                .map_err(redb_err("apply: write holders"))?;
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
        if let Some(t) = &w.trust {
            let v = codec::encode(0, t, "trust state")?;
            meta.insert(sm_meta::TRUST, v.as_slice())
                .map_err(redb_err("apply: write trust"))?;
        }
    }
    Ok(())
}

impl<C: StoreTypes> RaftStateMachine<C> for StateMachine<C> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder<C>;

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
                self.apply_batch(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.apply_batch(batch).await?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            _types: PhantomData,
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let db = self.db.clone();
        let m = meta.clone();
        let state = blocking(move || snapshot::install::<C>(&db, &m, &snapshot)).await?;
        *self.view.write() = state;
        self.view
            .publish_applied(meta.last_log_id.as_ref().map(|l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, SnapshotData>>, io::Error> {
        let db = self.db.clone();
        Ok(blocking(move || snapshot::current::<C>(&db)).await?)
    }
}

impl<C: StoreTypes> RaftSnapshotBuilder<C> for SnapshotBuilder<C> {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, SnapshotData>, io::Error> {
        let db = self.db.clone();
        Ok(blocking(move || snapshot::build::<C>(&db)).await?)
    }
}
