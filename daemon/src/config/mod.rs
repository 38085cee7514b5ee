//! # Layout
//! Two layers, as in openraft's `Config::validate` and dora's `config/wire`:
//! a serde "wire" shape that mirrors the file, then `validate()` into a type
//! that cannot hold nonsense. Every error names the field and the fix.
//!
//! - `node`: `/etc/tandem/node.toml`, this node's identity, addresses and paths.
//! - `service`: checks for the replicated [`crate::model::ServiceConfig`]
//!   (`tandem apply FILE`).

mod node;
pub mod service;

pub use node::{NodeConfig, ServiceIface};

/// A config problem, phrased for the operator: which field, what is wrong, how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("field `{field}`: {problem}; fix: {fix}")]
    Field {
        field: String,
        problem: String,
        fix: String,
    },
}

pub(crate) fn field_err(
    field: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}
