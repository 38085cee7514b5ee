//! # Layout
//! The content-addressed artifact store of one node (DESIGN.md section 3):
//! files live under their sha256, the replicated index names them, and
//! every node fetches the blobs it lacks. Unlike the responders it runs on
//! every node, leader or not.
//!
//! - `blobs`: [`BlobStore`], the files: `<data_dir>/blobs/<sha256>`, the
//!   served tree (`artifact_dir/<name>`, hard links to verified blobs) and
//!   [`Ingest`], an upload hashed while it is written.
//! - `replicate`: [`run`], the task that makes this node's files match the
//!   index: verify at start and periodically, fetch what is missing (with
//!   Range resume), link names, garbage-collect, and report what it holds.
//!   It reaches other nodes only through a [`Transport`] (the API's).
//! - `complete`: [`handover_target`] and [`prefer_complete`]: whether a new leader should hand over
//!   to a peer that holds more of the index (issue 7, point 2).
//! - `local`: [`Artifacts`], the shared handle (blobs, the verified set, the
//!   applied index) and [`ArtifactConfig`].
//! - this file: [`ArtifactLookup`] and [`ArtifactMeta`], what HTTP boot asks
//!   of the store, implemented by [`Artifacts`].
//!
//! Files depend one way: `blobs` ← `local` ← `replicate`; `complete` alone;
//! this file on top.
//!
//! Files an operator placed in `artifact_dir` by hand stay where they are
//! and are served as before, as long as no artifact has their name. `artifact
//! put` of that name replaces such a file atomically with a link to the
//! blob, and `artifact rm` deletes only links to blobs, never a file that is
//! no blob's link. (A served copy made across file systems, on `EXDEV`, is
//! removed when its blob is; a stale copy left by a crash meanwhile stays.)
//! A served name is the blob itself (a hard link): writing into it in place
//! changes the blob, which the next verify pass finds corrupt and replaces
//! from a peer. Replace files by `artifact put`, not by editing them.
//!
//! Only verified blobs ever appear under a name: a blob enters the store
//! after its sha256 was checked (the upload's own hash, or a fetch checked
//! against the index), and one found corrupt loses its names first.

mod blobs;
mod complete;
mod local;
mod replicate;

pub use blobs::{hex, BlobStore, Ingest, IngestError};
pub use complete::{handover_target, prefer_complete};
pub use local::{ArtifactConfig, Artifacts};
pub use replicate::{run, BlobStream, HeldReport, Transport};

/// What the HTTP boot server needs to serve one artifact by name.
pub struct ArtifactMeta {
    pub sha256: String,
    pub size: u64,
    pub path: std::path::PathBuf,
}

/// Looks an artifact up by name for a responder.
pub trait ArtifactLookup: Send + Sync + 'static {
    /// `Some` only for an artifact this node holds verified.
    fn lookup(&self, name: &str) -> Option<ArtifactMeta>;
}

impl ArtifactLookup for Artifacts {
    fn lookup(&self, name: &str) -> Option<ArtifactMeta> {
        let a = self.view().read(|s| s.artifacts.get(name).cloned())?;
        let path = self.blob(&a.sha256)?;
        Some(ArtifactMeta {
            sha256: a.sha256,
            size: a.size,
            path,
        })
    }
}
