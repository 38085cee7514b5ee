//! The store's one error type, and the two helpers every room of the store
//! uses to produce it: [`redb_err`] names the operation that failed, and
//! [`blocking`] runs fsyncing work off the async workers.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {path} (is another tandem using this data_dir?)")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("cannot remove {path}")]
    Discard {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has storage format {found}; this build reads format {expected}")]
    Format {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// A redb operation failed; `op` says which (e.g. "append: commit").
    #[error("redb: {op}")]
    Redb {
        op: &'static str,
        #[source]
        source: redb::Error,
    },
    /// A stored value failed its checksum or could not be decoded. Never
    /// served: the caller gets this error instead.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("storage task did not finish")]
    Join(#[source] tokio::task::JoinError),
    #[error("cannot start the store's writer thread")]
    Spawn(#[source] io::Error),
    /// The writer thread is gone (it panicked): nothing more is written.
    #[error("the store's writer thread is gone")]
    Writer,
    /// Another write in the same transaction failed; its error, as text.
    #[error("{0}")]
    Batch(String),
}

/// openraft 0.10's storage traits speak `io::Error`; openraft itself wraps
/// it into a `StorageError` with the subject (log, vote, state machine,
/// snapshot) and verb (read, write) of the call that failed. Corruption maps
/// to `InvalidData` so it stays recognisable; the `StoreError` is kept as
/// the source.
impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        let kind = match &e {
            StoreError::Corrupt { .. } | StoreError::Format { .. } => io::ErrorKind::InvalidData,
            StoreError::Snapshot(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Wraps any redb error with the operation that hit it.
pub(super) fn redb_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Redb {
        op,
        source: e.into(),
    }
}

/// Runs blocking redb work (fsync, large scans) off the async workers.
pub(super) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StoreError::Join)?
}
