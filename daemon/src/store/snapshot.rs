//! Snapshots: the whole [`State`] plus the last applied log id and
//! membership, as JSON compressed with zstd (with zstd's content checksum).
//!
//! The latest snapshot (built here or installed from the leader) is kept in
//! the `snapshot` table, so `get_current_snapshot` survives a restart.

use std::io::Read as _;
use std::sync::Arc;

use openraft::storage::{Snapshot, SnapshotMeta};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec;
use super::error::{redb_err, StoreError};
use super::rows::{
    encode_artifact, encode_holders, encode_lease, get_meta, lease_key, load_applied,
};
use super::tables::{self, sm_meta};
use super::types::StoreTypes;
use crate::model::State;

/// What travels between nodes and sits in the `snapshot` table:
/// zstd-compressed JSON of a [`SnapshotPayload`].
pub type SnapshotData = Vec<u8>;

/// A snapshot's content, decoded. Also the format of `tandem backup`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SnapshotPayload<C: StoreTypes> {
    /// Bumped when the layout changes incompatibly.
    pub format: u32,
    pub last_applied: Option<LogIdOf<C>>,
    pub last_membership: StoredMembershipOf<C>,
    pub state: State,
}

const SNAPSHOT_FORMAT: u32 = 1;
/// The largest snapshot content (JSON) [`SnapshotPayload::decode`] inflates:
/// about 400,000 leases, six times a full /16 (a /16 of leases is ~10 MiB).
/// Past it the snapshot is refused, so a few KiB of zstd cannot make a node
/// allocate without bound (a zstd bomb).
pub const MAX_SNAPSHOT_JSON: usize = 64 << 20;
/// zstd's window for decoding (16 MiB): `encode` at level 3 uses at most
/// 2^21, so only a crafted frame asks for more.
const MAX_WINDOW_LOG: u32 = 24;
/// zstd's default level: JSON lease rows repeat the same keys, so even the
/// fast levels shrink them several times; snapshots are built off the async
/// workers (`spawn_blocking`), so a higher level would only cost CPU.
const ZSTD_LEVEL: i32 = 3;

impl<C: StoreTypes> SnapshotPayload<C> {
    #[must_use]
    pub fn meta(&self) -> SnapshotMetaOf<C> {
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        }
    }

    /// JSON, then zstd with a content checksum.
    pub fn encode(&self) -> Result<SnapshotData, StoreError> {
        let snap_err = |e: std::io::Error| StoreError::Snapshot(format!("compress: {e}"));
        let mut enc = zstd::stream::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(snap_err)?;
        enc.include_checksum(true).map_err(snap_err)?;
        serde_json::to_writer(&mut enc, self).map_err(|source| StoreError::Encode {
            what: "snapshot",
            source,
        })?;
        enc.finish().map_err(snap_err)
    }

    /// The inverse of [`SnapshotPayload::encode`]; rebuilds the state's
    /// derived indexes. Inflates at most [`MAX_SNAPSHOT_JSON`] bytes, with
    /// a window of at most 2^[`MAX_WINDOW_LOG`] (what zstd allocates per
    /// frame), so a small input cannot make it allocate without bound.
    pub fn decode(data: &[u8]) -> Result<Self, StoreError> {
        let snap_err = |e: std::io::Error| StoreError::Snapshot(format!("decompress: {e}"));
        let mut dec = zstd::stream::read::Decoder::new(data).map_err(snap_err)?;
        dec.window_log_max(MAX_WINDOW_LOG).map_err(snap_err)?;
        let mut json = Vec::new();
        dec.take(MAX_SNAPSHOT_JSON as u64 + 1)
            .read_to_end(&mut json)
            .map_err(snap_err)?;
        if json.len() > MAX_SNAPSHOT_JSON {
            return Err(StoreError::Snapshot(format!(
                "content larger than {MAX_SNAPSHOT_JSON} bytes"
            )));
        }
        let mut p: Self = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Snapshot(format!("decode: {e}")))?;
        if p.format != SNAPSHOT_FORMAT {
            return Err(StoreError::Snapshot(format!(
                "format {} (this build reads {SNAPSHOT_FORMAT})",
                p.format
            )));
        }
        p.state.reindex();
        Ok(p)
    }
}

/// Builds a snapshot of what is applied now and keeps it as the current one.
///
/// The read transaction is a consistent point (last applied, membership,
/// config and leases are always committed together). The final write is
/// `Durability::Immediate`, which also makes durable every earlier
/// non-durable state-machine commit: after this returns, the state machine
/// is durable at least up to the snapshot, so purging the log up to it
/// cannot lose anything (see `state_machine`).
pub(super) fn build<C: StoreTypes>(
    db: &Arc<Database>,
) -> Result<SnapshotOf<C, SnapshotData>, StoreError> {
    let payload = {
        let txn = db
            .begin_read()
            .map_err(redb_err("build snapshot: begin read"))?;
        let a = load_applied::<C>(&txn)?;
        SnapshotPayload::<C> {
            format: SNAPSHOT_FORMAT,
            last_applied: a.log_id,
            last_membership: a.membership,
            state: a.state,
        }
    };
    let meta = payload.meta();
    let data = payload.encode()?;

    let mut txn = db
        .begin_write()
        .map_err(redb_err("build snapshot: begin write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(redb_err("build snapshot: durability"))?;
    let stored = {
        let t = txn
            .open_table(tables::SNAPSHOT)
            .map_err(redb_err("build snapshot: open"))?;
        get_meta::<SnapshotMetaOf<C>, _>(&t, tables::snapshot::META, "build snapshot: read meta")?
    };
    // A snapshot installed meanwhile from the leader may be newer; keep it.
    let newer_stored = stored.is_some_and(|s| {
        s.last_log_id.as_ref().map(|l| l.index) > meta.last_log_id.as_ref().map(|l| l.index)
    });
    if !newer_stored {
        store_current::<C>(&txn, &meta, &data)?;
    }
    txn.commit().map_err(redb_err("build snapshot: commit"))?;
    tracing::info!(
        target: "tandem::consensus",
        term = meta.last_log_id.as_ref().map(|l| l.leader_id.term),
        index = meta.last_log_id.as_ref().map(|l| l.index),
        bytes = data.len(),
        "snapshot built"
    );
    Ok(Snapshot {
        meta,
        snapshot: data,
    })
}

/// Replaces the state-machine tables with the snapshot's content and makes
/// it the current snapshot, in one durable transaction. Returns the state
/// to publish in the view.
pub(super) fn install<C: StoreTypes>(
    db: &Arc<Database>,
    meta: &SnapshotMetaOf<C>,
    data: &[u8],
) -> Result<State, StoreError> {
    let payload = SnapshotPayload::<C>::decode(data)?;
    if payload.last_applied != meta.last_log_id || payload.last_membership != meta.last_membership {
        return Err(StoreError::Snapshot(format!(
            "content (last applied {:?}) does not match its meta (last log id {:?})",
            payload.last_applied, meta.last_log_id
        )));
    }
    let mut txn = db
        .begin_write()
        .map_err(redb_err("install snapshot: begin"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(redb_err("install snapshot: durability"))?;
    {
        let mut leases = txn
            .open_table(tables::LEASES)
            .map_err(redb_err("install snapshot: open leases"))?;
        leases
            .retain(|_, _| false)
            .map_err(redb_err("install snapshot: clear leases"))?;
        for lease in payload.state.leases.values() {
            let key = lease_key(lease.ip);
            leases
                .insert(key, encode_lease(lease)?.as_slice())
                .map_err(redb_err("install snapshot: write lease"))?;
        }
        let mut arts = txn
            .open_table(tables::ARTIFACTS)
            .map_err(redb_err("install snapshot: open artifacts"))?;
        arts.retain(|_, _| false)
            .map_err(redb_err("install snapshot: clear artifacts"))?;
        for (name, a) in &payload.state.artifacts {
            arts.insert(name.as_str(), encode_artifact(name, a)?.as_slice())
                .map_err(redb_err("install snapshot: write artifact"))?;
        }
        let mut holders = txn
            .open_table(tables::HOLDERS)
            .map_err(redb_err("install snapshot: open holders"))?;
        holders
            .retain(|_, _| false)
            .map_err(redb_err("install snapshot: clear holders"))?;
        for (sha, h) in &payload.state.holders {
            holders
                .insert(sha.as_str(), encode_holders(sha, h)?.as_slice())
                .map_err(redb_err("install snapshot: write holders"))?;
        }
        let mut m = txn
            .open_table(tables::SM_META)
            .map_err(redb_err("install snapshot: open sm_meta"))?;
        match &meta.last_log_id {
            Some(l) => {
                let v = codec::encode(0, l, "last applied log id")?;
                m.insert(sm_meta::LAST_APPLIED, v.as_slice())
                    .map_err(redb_err("install snapshot: write applied"))?;
            }
            None => {
                m.remove(sm_meta::LAST_APPLIED)
                    .map_err(redb_err("install snapshot: clear applied"))?;
            }
        }
        let v = codec::encode(0, &meta.last_membership, "last membership")?;
        m.insert(sm_meta::LAST_MEMBERSHIP, v.as_slice())
            .map_err(redb_err("install snapshot: write membership"))?;
        let v = codec::encode(0, &payload.state.config, "service config")?;
        m.insert(sm_meta::CONFIG, v.as_slice())
            .map_err(redb_err("install snapshot: write config"))?;
        let v = codec::encode(0, &payload.state.trust, "trust state")?;
        m.insert(sm_meta::TRUST, v.as_slice())
            .map_err(redb_err("install snapshot: write trust"))?;
    }
    store_current::<C>(&txn, meta, data)?;
    txn.commit().map_err(redb_err("install snapshot: commit"))?;
    tracing::info!(
        target: "tandem::consensus",
        term = meta.last_log_id.as_ref().map(|l| l.leader_id.term),
        index = meta.last_log_id.as_ref().map(|l| l.index),
        leases = payload.state.leases.len(),
        "snapshot installed"
    );
    Ok(payload.state)
}

fn store_current<C: StoreTypes>(
    txn: &WriteTransaction,
    meta: &SnapshotMetaOf<C>,
    data: &[u8],
) -> Result<(), StoreError> {
    let mut t = txn
        .open_table(tables::SNAPSHOT)
        .map_err(redb_err("snapshot: open table"))?;
    let m = codec::encode(0, meta, "snapshot meta")?;
    t.insert(tables::snapshot::META, m.as_slice())
        .map_err(redb_err("snapshot: write meta"))?;
    t.insert(tables::snapshot::DATA, codec::seal(0, data).as_slice())
        .map_err(redb_err("snapshot: write data"))?;
    Ok(())
}

/// The snapshot last built or installed, if any.
pub(super) fn current<C: StoreTypes>(
    db: &Arc<Database>,
) -> Result<Option<SnapshotOf<C, SnapshotData>>, StoreError> {
    let txn = db
        .begin_read()
        .map_err(redb_err("current snapshot: begin"))?;
    let t = txn
        .open_table(tables::SNAPSHOT)
        .map_err(redb_err("current snapshot: open"))?;
    let meta: Option<SnapshotMetaOf<C>> =
        get_meta(&t, tables::snapshot::META, "current snapshot: read meta")?;
    let data = t
        .get(tables::snapshot::DATA)
        .map_err(redb_err("current snapshot: read data"))?;
    match (meta, data) {
        (None, None) => Ok(None),
        (Some(meta), Some(data)) => {
            let data = codec::unseal(0, data.value(), &|| "snapshot data".into())?.to_vec();
            Ok(Some(Snapshot {
                meta,
                snapshot: data,
            }))
        }
        _ => Err(StoreError::Corrupt {
            what: "snapshot table".into(),
            detail: "meta and data not both present".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::consensus::TypeConfig;

    /// A real payload's JSON, then spaces (valid JSON whitespace) past the
    /// cap, in a few KiB of zstd: a bomb that parses if inflated whole.
    #[test]
    fn decode_refuses_content_past_the_cap_and_accepts_its_own() {
        let p = SnapshotPayload::<TypeConfig> {
            format: SNAPSHOT_FORMAT,
            last_applied: None,
            last_membership: StoredMembershipOf::<TypeConfig>::default(),
            state: State::default(),
        };
        let good = p.encode().unwrap();
        assert!(SnapshotPayload::<TypeConfig>::decode(&good).is_ok());

        let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        serde_json::to_writer(&mut enc, &p).unwrap();
        let spaces = vec![b' '; 1 << 20];
        for _ in 0..=(MAX_SNAPSHOT_JSON >> 20) {
            enc.write_all(&spaces).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let err = SnapshotPayload::<TypeConfig>::decode(&bomb).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }
}
