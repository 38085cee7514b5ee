//! The redb tables of `tandem.redb`. Every value is sealed (see
//! [`super::codec`]): a tag, a CRC-32C and a JSON payload.
//!
//! ```text
//!   raft_log    u64 index      -> Entry<TypeConfig>        log store
//!   raft_meta   &str           -> vote | committed | last_purged | format
//!   sm_meta     &str           -> last_applied | last_membership | config | trust
//!   sm_leases   u32 (IPv4, BE) -> Lease                    one row per address
//!   sm_artifacts &str name     -> (name, Artifact)         the artifact index
//!   sm_holders  &str sha256    -> (sha256, node ids)       who holds each blob
//!   snapshot    &str           -> meta | data              the latest snapshot
//! ```
//!
//! Invariants:
//! - `raft_log` keys are contiguous; every key is greater than the index of
//!   `raft_meta.last_purged`.
//! - `sm_meta.last_applied`, `sm_meta.config`, `sm_meta.trust`, `sm_leases`,
//!   `sm_artifacts` and `sm_holders` are written in the same transaction, so
//!   they always describe the same point of the log.
//! - Artifact and holder rows repeat their key inside the sealed value, so a
//!   row under the wrong key is reported (string keys have no numeric salt).
//! - `snapshot.meta` and `snapshot.data` are written together.

use redb::TableDefinition;

pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(super) const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
pub(super) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Keyed by the address as a big-endian `u32`, so the table's order is the
/// address order of `State::leases`.
pub(super) const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("sm_leases");
pub(super) const ARTIFACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_artifacts");
pub(super) const HOLDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_holders");
pub(super) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// Keys of [`RAFT_META`].
pub(super) mod raft_meta {
    pub const VOTE: &str = "vote";
    pub const COMMITTED: &str = "committed";
    pub const LAST_PURGED: &str = "last_purged";
    /// The on-disk layout version; a file written by a newer layout is refused.
    pub const FORMAT: &str = "format";
}

/// Keys of [`SM_META`].
pub(super) mod sm_meta {
    pub const LAST_APPLIED: &str = "last_applied";
    pub const LAST_MEMBERSHIP: &str = "last_membership";
    pub const CONFIG: &str = "config";
    /// Join tokens and revoked node ids (`model::TrustState`).
    pub const TRUST: &str = "trust";
}

/// Keys of [`SNAPSHOT`].
pub(super) mod snapshot {
    pub const META: &str = "meta";
    pub const DATA: &str = "data";
}

/// The layout described above. (Version 1 files without the artifact
/// tables are the same layout with an empty index: opening creates them.)
pub(super) const FORMAT_VERSION: u32 = 1;
