//! # Layout
//! Two layers, as in openraft's `Config::validate` and dora's `config/wire`:
//! a serde "wire" shape that mirrors the file, then `validate()` into a type
//! that cannot hold nonsense. Every error names the field and the fix.
//!
//! - `error`: [`ConfigError`], which names the field and the fix.
//! - `node`: `/etc/tandem/node.toml`, this node's identity, addresses and paths.
//! - `limits`: its `[limits]` table, the leader's per-sender packet limits.
//! - `service`: checks for the replicated [`crate::model::ServiceConfig`]
//!   (`tandem apply FILE`).

mod error;
mod limits;
mod node;
pub mod service;

pub(crate) use error::field_err;
pub use error::ConfigError;
pub use limits::{PacketLimit, PacketLimits};
pub use node::{LogFormat, NodeConfig, ServiceIface};
