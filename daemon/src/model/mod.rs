//! # Layout
//! Plain data that every other layer speaks: hardware addresses, leases,
//! the replicated service configuration, and the commands that Raft carries.
//! Nothing here does I/O; everything is `serde` so it can travel in the log,
//! in snapshots and over the admin API.
//!
//! - [`Mac`]: a 48-bit hardware address, written `aa:bb:cc:dd:ee:ff`.
//! - [`Lease`], [`LeaseState`]: one address bound (or quarantined) for a client.
//! - [`ServiceConfig`] and its parts ([`Subnet`], [`Reservation`], [`BootProfile`]):
//!   the declarative config that `tandem apply` replaces as a whole.
//! - [`Command`], [`CommandResponse`]: what a Raft log entry asks the state machine to do.
//! - [`Artifact`], [`validate_name`], [`profile_artifacts`]: the artifact index
//!   (name -> sha256, size) and the rules for names.
//! - [`NodeInfo`]: what the cluster records of a member (its Raft and API addresses).
//! - [`State`]: the state machine's data, and the pure `apply` that changes it.
//! - [`pool_usage`]: how full each subnet's pools are (bound, declined, free).
//! - [`parse_duration`]: `250ms`, `1.5s`, `1h30m` as an operator writes them.

mod artifact;
mod config;
mod duration;
mod lease;
mod mac;
mod node;
mod state;
mod usage;

pub use artifact::{
    is_sha256_hex, profile_artifacts, validate_name, Artifact, NameError, MAX_ARTIFACTS,
    MAX_NAME_BYTES, MAX_NAME_DEPTH,
};
pub use config::{BootProfile, BootpPolicy, PoolRange, Reservation, ServiceConfig, Subnet};
pub use duration::parse_duration;
pub use lease::{Lease, LeaseState};
pub use mac::{Mac, ParseMacError};
pub use node::NodeInfo;
pub use state::{
    Changes, Command, CommandResponse, State, TrustState, MAX_JOIN_TOKENS, MAX_RESERVATIONS,
};
pub use usage::{pool_usage, PoolUsage};
