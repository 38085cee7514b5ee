//! [`Artifacts`], the node's artifact store handle: blobs, the verified
//! set and the applied index, shared by the API, the replication task and
//! the responders.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::blobs::BlobStore;
use crate::store::StateView;

/// Limits and timers of the artifact store (from `node.toml`).
#[derive(Clone, Debug)]
pub struct ArtifactConfig {
    /// An upload larger than this is refused (413).
    pub max_bytes: u64,
    /// How often every held blob is hashed again.
    pub verify_every: Duration,
}

/// The node's artifact store: blobs, the verified set, and the index as
/// applied here. Cheap to clone; shared by the API (uploads, blob serving),
/// the replication task and the responders.
#[derive(Clone)]
pub struct Artifacts {
    pub store: Arc<BlobStore>,
    pub config: ArtifactConfig,
    /// This node's id (what it reports as holder).
    pub node: u64,
    view: StateView,
    /// Blobs whose content was checked against their name since this
    /// process started. Only these are served, linked and reported held.
    verified: Arc<RwLock<BTreeSet<String>>>,
}

impl Artifacts {
    /// Opens the blob store under `data_dir`. Nothing is verified yet: the
    /// replication task checks every blob first.
    pub fn open(
        data_dir: &std::path::Path,
        artifact_dir: &std::path::Path,
        node: u64,
        config: ArtifactConfig,
        view: StateView,
    ) -> std::io::Result<Artifacts> {
        Ok(Artifacts {
            store: Arc::new(BlobStore::open(data_dir, artifact_dir)?),
            config,
            node,
            view,
            verified: Arc::default(),
        })
    }

    /// The applied state, as this node sees it.
    #[must_use]
    pub fn view(&self) -> &StateView {
        &self.view
    }

    #[must_use]
    pub fn is_verified(&self, sha256: &str) -> bool {
        self.verified
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(sha256)
    }

    /// Marks a blob verified (its bytes were just checked).
    pub fn mark_verified(&self, sha256: &str) {
        let mut v = self
            .verified
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.insert(sha256.to_owned());
        crate::metrics::get()
            .artifacts_held
            .set(i64::try_from(v.len()).unwrap_or(i64::MAX));
    }

    /// Forgets a blob (corrupt, or garbage-collected).
    pub fn unmark(&self, sha256: &str) {
        let mut v = self
            .verified
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.remove(sha256);
        crate::metrics::get()
            .artifacts_held
            .set(i64::try_from(v.len()).unwrap_or(i64::MAX));
    }

    /// The verified blobs, by sha256.
    #[must_use]
    pub fn verified(&self) -> BTreeSet<String> {
        self.verified
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Where the verified blob `sha256` lives, if it is verified here.
    #[must_use]
    pub fn blob(&self, sha256: &str) -> Option<PathBuf> {
        self.is_verified(sha256)
            .then(|| self.store.blob_path(sha256))
    }
}
