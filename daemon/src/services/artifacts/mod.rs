//! The replicated artifact store (built on branch `artifacts`); here only the face the HTTP boot server serves through.

/// What the HTTP boot server needs to serve one artifact by name.
pub struct ArtifactMeta { pub sha256: String, pub size: u64, pub path: std::path::PathBuf }
pub trait ArtifactLookup: Send + Sync + 'static { fn lookup(&self, name: &str) -> Option<ArtifactMeta>; }
