//! [`DirLookup`]: artifacts found by name in a directory, the node's
//! `artifact_dir` (where TFTP serves from too). A file's sha256 is computed
//! the first time it is asked for and kept while its size, mtime and inode
//! stay the same. The replicated artifact index replaces it where the store
//! is wired in.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::services::artifacts::{ArtifactLookup, ArtifactMeta};

/// What identifies one version of a file: (size, mtime ns, inode).
type Version = (u64, i128, u64);

pub struct DirLookup {
    root: PathBuf,
    hashes: Mutex<HashMap<PathBuf, (Version, String)>>,
}

impl DirLookup {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirLookup {
            root: root.into(),
            hashes: Mutex::new(HashMap::new()),
        }
    }

    /// `name` under the root, after following symlinks, if it is a regular
    /// file that stays inside the root.
    fn resolve(&self, name: &str) -> Option<(PathBuf, std::fs::Metadata)> {
        let root = self.root.canonicalize().ok()?;
        let path = root.join(name).canonicalize().ok()?;
        if !path.starts_with(&root) {
            return None;
        }
        let meta = std::fs::metadata(&path).ok()?;
        meta.is_file().then_some((path, meta))
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        }))
}

impl ArtifactLookup for DirLookup {
    fn lookup(&self, name: &str) -> Option<ArtifactMeta> {
        let (path, meta) = self.resolve(name)?;
        let version = (
            meta.len(),
            i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            meta.ino(),
        );
        let cached = self
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&path)
            .filter(|(v, _)| *v == version)
            .map(|(_, s)| s.clone());
        let sha256 = if let Some(s) = cached {
            s
        } else {
            let s = sha256_of(&path).ok()?;
            self.hashes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(path.clone(), (version, s.clone()));
            s
        };
        Some(ArtifactMeta {
            sha256,
            size: meta.len(),
            path,
        })
    }
}
