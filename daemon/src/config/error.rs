//! The one config error: which field, what is wrong, how to fix it.

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
