//! The local blob store: files under their sha256 in `<data_dir>/blobs/`,
//! and the served tree (`artifact_dir`) that names them. Plain blocking
//! file-system calls (callers run them off the async workers), except
//! [`Ingest`], which a request handler drives chunk by chunk.
//!
//! ```text
//!   <data_dir>/blobs/<sha256>          verified content, never rewritten
//!   <data_dir>/blobs/.tmp/put-*        an upload being hashed and written
//!   <data_dir>/blobs/.partial/<sha256> a fetch in progress (resumed by Range)
//!   <artifact_dir>/<name>              hard link to blobs/<sha256> (a copy
//!                                      when the two are on different file systems)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::model::is_sha256_hex;

/// A visitor of served files: (relative name, path, (dev, inode)).
type Visit<'a> = dyn FnMut(&str, &Path, (u64, u64)) -> io::Result<()> + 'a;

/// Read and hash in pieces of this size (flat memory whatever the file's size).
const CHUNK: usize = 1 << 20;

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the artifact is larger than the configured cap of {cap} bytes (artifact_max_bytes)")]
    TooBig { cap: u64 },
    #[error("disk full while writing {path}: free space under the data directory and retry")]
    DiskFull { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IngestError + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::StorageFull {
            IngestError::DiskFull {
                path: path.to_owned(),
            }
        } else {
            IngestError::Io {
                what,
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// Lower-case hex of a digest.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The blob directory and the served tree of one node.
#[derive(Debug)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    partial: PathBuf,
    served: PathBuf,
    seq: AtomicU64,
}

impl BlobStore {
    /// Creates `<data_dir>/blobs/` (with `.tmp` and `.partial`) and
    /// `artifact_dir` if needed. Leftover uploads in `.tmp` are deleted:
    /// nothing names them, and their client saw the upload fail.
    pub fn open(data_dir: &Path, artifact_dir: &Path) -> io::Result<BlobStore> {
        let blobs = data_dir.join("blobs");
        let s = BlobStore {
            tmp: blobs.join(".tmp"),
            partial: blobs.join(".partial"),
            blobs,
            served: artifact_dir.to_owned(),
            seq: AtomicU64::new(0),
        };
        for d in [&s.blobs, &s.tmp, &s.partial, &s.served] {
            fs::create_dir_all(d)?;
        }
        for e in fs::read_dir(&s.tmp)? {
            let _ = fs::remove_file(e?.path());
        }
        Ok(s)
    }

    #[must_use]
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blobs.join(sha256)
    }

    #[must_use]
    pub fn partial_path(&self, sha256: &str) -> PathBuf {
        self.partial.join(sha256)
    }

    #[must_use]
    pub fn served_dir(&self) -> &Path {
        &self.served
    }

    /// The blobs present (not necessarily verified), by sha256.
    pub fn list(&self) -> io::Result<Vec<String>> {
        Self::hex_names(&self.blobs)
    }

    /// The partial fetches present, by sha256.
    pub fn list_partial(&self) -> io::Result<Vec<String>> {
        Self::hex_names(&self.partial)
    }

    fn hex_names(dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                if is_sha256_hex(n) && e.file_type()?.is_file() {
                    out.push(n.to_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The sha256 and size of a file's content, read in pieces.
    pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
        let mut f = File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0u64;
        loop {
            let r = f.read(&mut buf)?;
            if r == 0 {
                break;
            }
            h.update(&buf[..r]);
            n += r as u64;
        }
        Ok((hex(&h.finalize()), n))
    }

    /// Whether `blobs/<sha256>` holds exactly those bytes.
    pub fn verify(&self, sha256: &str) -> io::Result<bool> {
        match Self::hash_file(&self.blob_path(sha256)) {
            Ok((h, _)) => Ok(h == sha256),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves a fully written, fsynced file into `blobs/<sha256>` and makes
    /// the rename durable. If the blob exists already, `from` is deleted.
    pub fn commit(&self, from: &Path, sha256: &str) -> io::Result<PathBuf> {
        let to = self.blob_path(sha256);
        if to.exists() {
            fs::remove_file(from)?;
            return Ok(to);
        }
        fs::rename(from, &to)?;
        File::open(&self.blobs)?.sync_all()?;
        Ok(to)
    }

    /// Deletes a blob (and its partial fetch) and every served name that is
    /// a link to it.
    pub fn discard(&self, sha256: &str) -> io::Result<()> {
        let path = self.blob_path(sha256);
        if let Ok(m) = fs::metadata(&path) {
            self.unlink_where(|id| id == (m.dev(), m.ino()))?;
        }
        for p in [path, self.partial_path(sha256)] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Serves blob `sha256` as `name`: a hard link (a copy on `EXDEV`) made
    /// under a temporary name beside the target, then renamed over it, so a
    /// reader sees the old file or the new one, never a part. Does nothing
    /// if `name` already is that blob.
    pub fn link(&self, name: &str, sha256: &str) -> io::Result<()> {
        let blob = self.blob_path(sha256);
        let target = self.served.join(name);
        let bm = fs::metadata(&blob)?;
        if let Ok(tm) = fs::symlink_metadata(&target) {
            if tm.dev() == bm.dev() && tm.ino() == bm.ino() {
                return Ok(());
            }
        }
        let parent = target.parent().unwrap_or(&self.served);
        fs::create_dir_all(parent)?;
        let file = target
            .file_name()
            .map_or_else(|| name.to_owned(), |n| n.to_string_lossy().into_owned());
        let tmp = parent.join(format!(
            ".{file}.tandem-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_file(&tmp);
        match fs::hard_link(&blob, &tmp) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                fs::copy(&blob, &tmp)?;
                File::open(&tmp)?.sync_all()?;
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// Removes served files that are links to a blob but not under a name
    /// that `index` gives that blob (an artifact removed, renamed or moved
    /// to other bytes). Files that are no blob's link (placed by an
    /// operator) are left alone. Returns how many were removed.
    pub fn unlink_stale(&self, index: &BTreeMap<String, String>) -> io::Result<usize> {
        let mut by_inode: HashMap<(u64, u64), String> = HashMap::new();
        for sha in self.list()? {
            if let Ok(m) = fs::metadata(self.blob_path(&sha)) {
                by_inode.insert((m.dev(), m.ino()), sha);
            }
        }
        let mut removed = 0;
        self.walk(&self.served, &mut |rel, path, id| {
            if let Some(sha) = by_inode.get(&id) {
                if index.get(rel) != Some(sha) {
                    fs::remove_file(path)?;
                    removed += 1;
                }
            }
            Ok(())
        })?;
        Ok(removed)
    }

    fn unlink_where(&self, pred: impl Fn((u64, u64)) -> bool) -> io::Result<()> {
        self.walk(&self.served, &mut |_, path, id| {
            if pred(id) {
                fs::remove_file(path)?;
            }
            Ok(())
        })
    }

    /// Calls `f(relative name, path, (dev, inode))` for each regular file
    /// under `dir` (no symlinks followed).
    fn walk(&self, dir: &Path, f: &mut Visit<'_>) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            let path = e.path();
            if ft.is_dir() {
                self.walk(&path, f)?;
            } else if ft.is_file() {
                let m = e.metadata()?;
                let rel = path
                    .strip_prefix(&self.served)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                f(&rel, &path, (m.dev(), m.ino()))?;
            }
        }
        Ok(())
    }

    /// Starts an upload: a fresh file in `.tmp`, hashed as it is written,
    /// refused past `cap` bytes.
    pub async fn ingest(&self, cap: u64) -> Result<Ingest, IngestError> {
        let path = self.tmp.join(format!(
            "put-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(io_err("create", &path))?;
        Ok(Ingest {
            file: tokio::io::BufWriter::with_capacity(CHUNK, file),
            path,
            hasher: Sha256::new(),
            size: 0,
            cap,
        })
    }
}

/// An upload in progress. Memory stays at one buffer ([`CHUNK`]) whatever
/// the size. Dropped without [`Ingest::finish`], it leaves a file in
/// `.tmp` that the next start (or [`Ingest::abort`]) deletes.
pub struct Ingest {
    file: tokio::io::BufWriter<tokio::fs::File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    cap: u64,
}

impl Ingest {
    /// Appends a piece of the upload.
    ///
    /// cancel-safety: not cancel-safe (a piece may be half written); the
    /// caller aborts the upload if it stops midway.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), IngestError> {
        self.size += chunk.len() as u64;
        if self.size > self.cap {
            return Err(IngestError::TooBig { cap: self.cap });
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(io_err("write", &self.path))
    }

    /// Flushes and fsyncs the upload, then moves it into the store under
    /// its sha256. Returns the sha256 and size.
    pub async fn finish(mut self, store: &BlobStore) -> Result<(String, u64), IngestError> {
        self.file
            .flush()
            .await
            .map_err(io_err("flush", &self.path))?;
        self.file
            .get_ref()
            .sync_all()
            .await
            .map_err(io_err("fsync", &self.path))?;
        let sha = hex(&self.hasher.finalize());
        let path = self.path;
        let committed = {
            let sha = sha.clone();
            let from = path.clone();
            let blobs = store.blobs.clone();
            tokio::task::spawn_blocking(move || {
                let path = from;
                let to = blobs.join(&sha);
                if to.exists() {
                    return fs::remove_file(&path);
                }
                fs::rename(&path, &to)?;
                File::open(&blobs)?.sync_all()
            })
            .await
            .map_err(|e| IngestError::Io {
                what: "commit",
                path: path.clone(),
                source: io::Error::other(e),
            })?
        };
        committed.map_err(io_err("commit", &path))?;
        Ok((sha, self.size))
    }

    /// Deletes the partial upload.
    pub async fn abort(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_of(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    fn store() -> (tempfile::TempDir, BlobStore) {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::open(&d.path().join("data"), &d.path().join("served")).unwrap();
        (d, s)
    }

    #[tokio::test]
    async fn ingest_hashes_commits_and_links_by_name() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut up = s.ingest(u64::MAX).await.unwrap();
        for piece in data.chunks(10_000) {
            up.write(piece).await.unwrap();
        }
        let (sha, size) = up.finish(&s).await.unwrap();
        assert_eq!(sha, sha_of(&data));
        assert_eq!(size, data.len() as u64);
        assert!(s.verify(&sha).unwrap());
        assert_eq!(s.list().unwrap(), vec![sha.clone()]);
        assert!(fs::read_dir(&s.tmp).unwrap().next().is_none(), "tmp left");

        s.link("ipxe/ipxe.efi", &sha).unwrap();
        let served = s.served_dir().join("ipxe/ipxe.efi");
        assert_eq!(fs::read(&served).unwrap(), data);
        let (a, b) = (
            fs::metadata(&served).unwrap(),
            fs::metadata(s.blob_path(&sha)).unwrap(),
        );
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "a hard link");
        // Linking again is a no-op; no temporary file stays behind.
        s.link("ipxe/ipxe.efi", &sha).unwrap();
        let names: Vec<_> = fs::read_dir(s.served_dir().join("ipxe"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ipxe.efi")]);
    }

    #[tokio::test]
    async fn a_put_over_the_cap_is_refused_and_aborted() {
        let (_d, s) = store();
        let mut up = s.ingest(100).await.unwrap();
        up.write(&[1; 60]).await.unwrap();
        let e = up.write(&[1; 60]).await.unwrap_err();
        assert!(matches!(e, IngestError::TooBig { cap: 100 }), "{e}");
        up.abort().await;
        assert!(fs::read_dir(&s.tmp).unwrap().next().is_none());
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn names_move_atomically_stale_links_go_and_operator_files_stay() {
        let (_d, s) = store();
        let put = |data: &[u8]| {
            let sha = sha_of(data);
            let p = s.partial_path(&sha);
            fs::write(&p, data).unwrap();
            s.commit(&p, &sha).unwrap();
            sha
        };
        let (a, b) = (put(b"first"), put(b"second"));
        fs::write(s.served_dir().join("by-hand.txt"), b"operator").unwrap();
        s.link("boot/kernel", &a).unwrap();
        s.link("copy", &a).unwrap();
        // The name moves to other bytes: replaced in place.
        s.link("boot/kernel", &b).unwrap();
        assert_eq!(
            fs::read(s.served_dir().join("boot/kernel")).unwrap(),
            b"second"
        );
        // The index now names only boot/kernel -> b: `copy` is stale.
        let index = BTreeMap::from([("boot/kernel".to_string(), b.clone())]);
        assert_eq!(s.unlink_stale(&index).unwrap(), 1);
        assert!(!s.served_dir().join("copy").exists());
        assert!(s.served_dir().join("boot/kernel").exists());
        assert_eq!(
            fs::read(s.served_dir().join("by-hand.txt")).unwrap(),
            b"operator"
        );
        // A corrupt blob is found and discarded with its names.
        fs::write(s.blob_path(&b), b"SECOND").unwrap(); // same inode, new bytes
        assert!(!s.verify(&b).unwrap());
        s.discard(&b).unwrap();
        assert!(!s.served_dir().join("boot/kernel").exists());
        assert!(!s.blob_path(&b).exists());
        assert!(s.verify(&a).unwrap());
        assert!(!s.verify(&b).unwrap(), "a missing blob is not verified");
    }
}
