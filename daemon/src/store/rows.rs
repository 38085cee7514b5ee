//! How the state machine's rows are keyed, sealed and loaded; shared by the
//! state machine (which writes rows batch by batch) and snapshots (which
//! read and replace them all), so neither depends on the other.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use openraft::type_config::alias::{LogIdOf, StoredMembershipOf};
use redb::{ReadTransaction, ReadableTable};

use super::codec;
use super::error::{redb_err, StoreError};
use super::tables::{self, sm_meta};
use super::types::StoreTypes;
use crate::model::{Artifact, Lease, ServiceConfig, State, TrustState};

/// The applied point as stored in redb.
pub(super) struct Applied<C: StoreTypes> {
    pub log_id: Option<LogIdOf<C>>,
    pub membership: StoredMembershipOf<C>,
    pub state: State,
}

/// The `sm_leases` key of an address: big-endian order is address order.
pub(super) fn lease_key(ip: Ipv4Addr) -> u32 {
    u32::from(ip)
}

/// A lease row, sealed with its key as the salt.
pub(super) fn encode_lease(lease: &Lease) -> Result<Vec<u8>, StoreError> {
    codec::encode(u64::from(lease_key(lease.ip)), lease, "lease")
}

/// An artifact index row: the name travels inside the sealed value too.
pub(super) fn encode_artifact(name: &str, a: &Artifact) -> Result<Vec<u8>, StoreError> {
    codec::encode(0, &(name, a), "artifact")
}

/// A holders row: the sha256 travels inside the sealed value too.
pub(super) fn encode_holders(sha256: &str, nodes: &BTreeSet<u64>) -> Result<Vec<u8>, StoreError> {
    codec::encode(0, &(sha256, nodes), "artifact holders")
}

/// Reads every row of a `&str`-keyed table whose sealed value is
/// `(key, T)`, checking that the two keys agree.
fn load_keyed<T: serde::de::DeserializeOwned>(
    txn: &ReadTransaction,
    def: redb::TableDefinition<&'static str, &'static [u8]>,
    what: &'static str,
) -> Result<BTreeMap<String, T>, StoreError> {
    let table = txn
        .open_table(def)
        .map_err(redb_err("load state: open artifact table"))?;
    let mut out = BTreeMap::new();
    for row in table
        .iter()
        .map_err(redb_err("load state: scan artifact table"))?
    {
        let (k, v) = row.map_err(redb_err("load state: next artifact row"))?;
        let key = k.value().to_owned();
        let (inner, value): (String, T) =
            codec::decode(0, v.value(), &|| format!("{what} {key:?}"))?;
        if inner != key {
            return Err(StoreError::Corrupt {
                what: format!("{what} {key:?}"),
                detail: format!("holds the row of {inner:?}"),
            });
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// Reads and decodes one sealed value of a `&str`-keyed table.
pub(super) fn get_meta<T, Tbl>(
    table: &Tbl,
    key: &str,
    op: &'static str,
) -> Result<Option<T>, StoreError>
where
    T: serde::de::DeserializeOwned,
    Tbl: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key).map_err(redb_err(op))? {
        Some(v) => Ok(Some(codec::decode(0, v.value(), &|| key.to_owned())?)),
        None => Ok(None),
    }
}

/// Loads the applied point (meta, config, every lease) from one read
/// transaction and rebuilds the state's derived indexes.
pub(super) fn load_applied<C: StoreTypes>(txn: &ReadTransaction) -> Result<Applied<C>, StoreError> {
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
    let trust: TrustState =
        get_meta(&meta, sm_meta::TRUST, "load state: read trust")?.unwrap_or_default();
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
    state.artifacts = load_keyed(txn, tables::ARTIFACTS, "artifact")?;
    state.holders = load_keyed(txn, tables::HOLDERS, "artifact holders")?;
    state.trust = trust;
    state.reindex();
    Ok(Applied {
        log_id: last_applied,
        membership: last_membership,
        state,
    })
}
