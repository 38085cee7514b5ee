//! The replication task: on every node, make the local files match the
//! replicated index, and tell the cluster what this node holds.
//!
//! ```text
//!   start ─▶ hash every blob (corrupt: discarded) ─▶ loop {
//!     pass: GC blobs no name refers to ─▶ unlink stale names ─▶ link verified names
//!           ─▶ report held / not held ─▶ fetch each missing blob (Range resume)
//!     wait: the index or holders changed | retry tick | verify tick (re-hash all) }
//! ```
//!
//! Every call to another node goes through [`Transport`] (the app wires the
//! admin API's client): a blob fetch from any holder, and a holder report
//! to the leader. The leader proposes its own reports directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::blobs::BlobStore;
use super::local::Artifacts;
use crate::consensus::{Cluster, ClusterHandle, ProposeError};
use crate::model::{Artifact, Command, CommandResponse};

const LOG_TARGET: &str = "tandem::artifacts";
/// How often a pass runs even if nothing changed (retries failed fetches
/// and reports).
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// A blob no name refers to is collected only once it is this old: a put
/// moves its blob into the store before its index entry commits, and a pass
/// in between (another artifact's entry, a holder report) would otherwise
/// delete it under the put, leaving an entry whose bytes exist nowhere.
const GC_GRACE: Duration = Duration::from_secs(5);

/// A blob download as the transport starts it.
pub struct BlobStream {
    /// The offset the body starts at: the requested one (206), or 0 when
    /// the server sent the whole blob (200).
    pub start: u64,
    pub body: Box<dyn Read + Send>,
}

/// `POST /v1/holders`: a node holds (or lost) a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldReport {
    pub node: u64,
    pub sha256: String,
    pub held: bool,
}

/// How this node reaches others. Blocking calls (run off the async workers).
pub trait Transport: Clone + Send + Sync + 'static {
    /// Starts `GET /v1/blobs/SHA` on the node whose API is `api`, from `offset`.
    fn fetch_blob(&self, api: &str, sha256: &str, offset: u64) -> Result<BlobStream, String>;
    /// Sends a holder report to the leader's API.
    fn report_held(&self, leader_api: &str, report: &HeldReport) -> Result<(), String>;
}

/// Runs until `cancel`. See the module docs.
pub async fn run<T: Transport>(
    arts: Artifacts,
    cluster: Cluster,
    transport: T,
    cancel: CancellationToken,
) {
    let r = Replicator {
        arts,
        cluster,
        transport,
    };
    tokio::select! {
        () = cancel.cancelled() => {}
        () = r.main() => {}
    }
}

struct Replicator<T> {
    arts: Artifacts,
    cluster: Cluster,
    transport: T,
}

type Index = (BTreeMap<String, Artifact>, BTreeMap<String, BTreeSet<u64>>);

impl<T: Transport> Replicator<T> {
    async fn main(&self) {
        self.verify_all("start").await;
        let mut applied = self.arts.view().watch_applied();
        let mut retry = tokio::time::interval(RETRY_EVERY);
        let mut verify = tokio::time::interval(self.arts.config.verify_every);
        verify.tick().await; // the first tick is now: the start just verified
        let mut last: Option<Index> = None;
        loop {
            let now = self.index();
            if last.as_ref() != Some(&now) {
                self.pass(&now).await;
                last = Some(now);
            }
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                _ = retry.tick() => last = None,
                _ = verify.tick() => {
                    self.verify_all("periodic").await;
                    last = None;
                }
            }
        }
    }

    fn index(&self) -> Index {
        self.arts
            .view()
            .read(|s| (s.artifacts.clone(), s.holders.clone()))
    }

    /// Hashes every blob present (at start) or verified (periodically);
    /// a corrupt one is discarded with its names, to be fetched again.
    async fn verify_all(&self, why: &'static str) {
        let store = self.arts.store.clone();
        let known = self.arts.verified();
        let checked = tokio::task::spawn_blocking(move || {
            let shas = if why == "start" {
                store.list().unwrap_or_default()
            } else {
                known.into_iter().collect()
            };
            shas.into_iter()
                .map(|sha| {
                    let ok = store.verify(&sha);
                    (sha, ok)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (sha, ok) in checked {
            match ok {
                Ok(true) => self.arts.mark_verified(&sha),
                Ok(false) => {
                    tracing::warn!(target: LOG_TARGET, sha256 = %sha, pass = why, "corrupt blob discarded; it will be fetched again");
                    self.arts.unmark(&sha);
                    crate::metrics::get().artifact_corrupt.inc();
                    let store = self.arts.store.clone();
                    let s = sha.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.discard(&s)).await
                    {
                        tracing::error!(target: LOG_TARGET, sha256 = %sha, error = %e, "cannot delete a corrupt blob");
                    }
                }
                Err(e) => {
                    tracing::error!(target: LOG_TARGET, sha256 = %sha, error = %e, "cannot read a blob to verify it");
                }
            }
        }
    }

    async fn pass(&self, (index, holders): &Index) {
        let me = self.arts.node;
        let wanted: BTreeMap<String, u64> =
            index.values().map(|a| (a.sha256.clone(), a.size)).collect();
        // Files first: GC, stale names, names of verified blobs.
        let names: BTreeMap<String, String> = index
            .iter()
            .map(|(n, a)| (n.clone(), a.sha256.clone()))
            .collect();
        let verified = self.arts.verified();
        let store = self.arts.store.clone();
        let (w, n) = (wanted.clone(), names.clone());
        let gone = tokio::task::spawn_blocking(move || tidy(&store, &w, &n, &verified))
            .await
            .unwrap_or_default();
        for sha in gone {
            self.arts.unmark(&sha);
        }
        // What the cluster believes this node holds, corrected.
        for sha in wanted.keys() {
            let recorded = holders.get(sha).is_some_and(|h| h.contains(&me));
            let verified = self.arts.is_verified(sha);
            if recorded != verified {
                self.report(sha, verified).await;
            }
        }
        // Fetch what is missing, one blob at a time.
        for (sha, size) in &wanted {
            if self.arts.is_verified(sha) {
                continue;
            }
            let sources = self.sources(holders.get(sha));
            for api in sources {
                match self.fetch(&api, sha, *size).await {
                    Ok(()) => {
                        self.arts.mark_verified(sha);
                        self.link_names(&names, sha).await;
                        self.report(sha, true).await;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(target: LOG_TARGET, sha256 = %sha, from = %api, error = %e, "blob fetch failed");
                    }
                }
            }
        }
    }

    /// The API addresses to fetch from: the holders, the leader first; the
    /// leader also when no holder is recorded yet.
    fn sources(&self, holders: Option<&BTreeSet<u64>>) -> Vec<String> {
        let status = self.cluster.status();
        let api_of = |id: u64| {
            status
                .members
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.info.api.clone())
        };
        let mut ids: Vec<u64> = holders
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        if let Some(l) = status.leader {
            ids.retain(|i| *i != l);
            ids.insert(0, l);
        }
        ids.into_iter()
            .filter(|i| *i != self.arts.node)
            .filter_map(api_of)
            .collect()
    }

    async fn link_names(&self, names: &BTreeMap<String, String>, sha: &str) {
        let store = self.arts.store.clone();
        let mine: Vec<String> = names
            .iter()
            .filter(|(_, s)| *s == sha)
            .map(|(n, _)| n.clone())
            .collect();
        let sha = sha.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            for n in mine {
                if let Err(e) = store.link(&n, &sha) {
                    tracing::error!(target: LOG_TARGET, name = %n, error = %e, "cannot link an artifact into the served tree");
                }
            }
        })
        .await;
    }

    async fn fetch(&self, api: &str, sha: &str, size: u64) -> Result<(), String> {
        let (store, transport) = (self.arts.store.clone(), self.transport.clone());
        let (api, sha) = (api.to_owned(), sha.to_owned());
        tokio::task::spawn_blocking(move || fetch_blob(&store, &transport, &api, &sha, size))
            .await
            .map_err(|e| format!("fetch task: {e}"))?
    }

    /// Reports that this node holds (or no longer holds) `sha`: proposed
    /// here on the leader, sent to the leader's API elsewhere.
    async fn report(&self, sha: &str, held: bool) {
        let report = HeldReport {
            node: self.arts.node,
            sha256: sha.to_owned(),
            held,
        };
        let cmd = Command::ArtifactHeld {
            node: report.node,
            sha256: report.sha256.clone(),
            held,
        };
        let r = match self.cluster.propose(cmd).await {
            Ok(CommandResponse::Ok) => Ok(()),
            Ok(CommandResponse::Rejected { reason }) => Err(reason),
            Err(ProposeError::NotLeader { .. }) => match self.cluster.leader_api() {
                Some(leader) => {
                    let t = self.transport.clone();
                    tokio::task::spawn_blocking(move || t.report_held(&leader, &report))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r)
                }
                None => Err("no leader known".into()),
            },
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => {
                tracing::info!(target: LOG_TARGET, sha256 = %sha, held, "holder report committed");
            }
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, sha256 = %sha, held, error = %e, "holder report failed; retrying");
            }
        }
    }
}

/// Deletes blobs and partial fetches no name refers to, names that are no
/// longer right, and links the names of verified blobs. Returns the blobs
/// deleted. Errors are logged: the next pass tries again.
fn tidy(
    store: &BlobStore,
    wanted: &BTreeMap<String, u64>,
    names: &BTreeMap<String, String>,
    verified: &BTreeSet<String>,
) -> Vec<String> {
    let mut gone = Vec::new();
    if let Err(e) = store.unlink_stale(names) {
        tracing::error!(target: LOG_TARGET, error = %e, "cannot tidy the served tree");
    }
    for sha in store.list().unwrap_or_default() {
        if !wanted.contains_key(&sha) && !younger_than(&store.blob_path(&sha), GC_GRACE) {
            match store.discard(&sha) {
                Ok(()) => {
                    tracing::info!(target: LOG_TARGET, sha256 = %sha, "blob no name refers to deleted");
                    gone.push(sha);
                }
                Err(e) => {
                    tracing::error!(target: LOG_TARGET, sha256 = %sha, error = %e, "cannot delete an unnamed blob");
                }
            }
        }
    }
    for sha in store.list_partial().unwrap_or_default() {
        if !wanted.contains_key(&sha) {
            let _ = std::fs::remove_file(store.partial_path(&sha));
        }
    }
    for (name, sha) in names {
        if verified.contains(sha) {
            if let Err(e) = store.link(name, sha) {
                tracing::error!(target: LOG_TARGET, name = %name, error = %e, "cannot link an artifact into the served tree");
            }
        }
    }
    gone
}

/// Whether the file at `path` was last written less than `age` ago.
fn younger_than(path: &std::path::Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a < age)
}

/// Downloads `sha` from `api` into its partial file, resuming from what is
/// there, then checks it and moves it into the store.
fn fetch_blob<T: Transport>(
    store: &BlobStore,
    transport: &T,
    api: &str,
    sha: &str,
    size: u64,
) -> Result<(), String> {
    let part = store.partial_path(sha);
    let mut offset = std::fs::metadata(&part).map_or(0, |m| m.len());
    if offset > size {
        offset = 0;
    }
    if offset < size {
        if offset > 0 {
            tracing::info!(target: LOG_TARGET, sha256 = %sha, offset, from = %api, "resuming blob fetch with Range");
            crate::metrics::get().artifact_fetch_resumed.inc();
        } else {
            tracing::info!(target: LOG_TARGET, sha256 = %sha, size, from = %api, "fetching blob");
        }
        let mut stream = transport.fetch_blob(api, sha, offset)?;
        if stream.start != 0 && stream.start != offset {
            return Err(format!("asked for offset {offset}, got {}", stream.start));
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| format!("open {}: {e}", part.display()))?;
        if stream.start == 0 {
            f.set_len(0).map_err(|e| e.to_string())?;
        }
        let mut left = size - stream.start;
        let mut buf = vec![0u8; 256 * 1024];
        let counter = &crate::metrics::get().artifact_fetch_bytes;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = stream
                .body
                .read(&mut buf[..want])
                .map_err(|e| format!("read from {api}: {e}"))?;
            if n == 0 {
                return Err(format!("{api} ended the blob {left} bytes early"));
            }
            f.write_all(&buf[..n]).map_err(|e| {
                if e.kind() == std::io::ErrorKind::StorageFull {
                    format!("disk full writing {}", part.display())
                } else {
                    format!("write {}: {e}", part.display())
                }
            })?;
            counter.inc_by(n as u64);
            left -= n as u64;
        }
        f.sync_all().map_err(|e| e.to_string())?;
    }
    let (got, len) = BlobStore::hash_file(&part).map_err(|e| e.to_string())?;
    if got != sha || len != size {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "content from {api} does not match: sha256 {got}, {len} bytes"
        ));
    }
    store.commit(&part, sha).map_err(|e| e.to_string())?;
    tracing::info!(target: LOG_TARGET, sha256 = %sha, size, from = %api, "blob fetched and verified");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::services::artifacts::hex;

    /// Serves a blob from bytes in memory, as `GET /v1/blobs` with Range
    /// does, and can cut the body after some bytes (a killed connection).
    #[derive(Clone)]
    struct Bytes {
        data: Arc<Vec<u8>>,
        cut_after: Option<usize>,
        offsets: Arc<Mutex<Vec<u64>>>,
    }

    impl Transport for Bytes {
        fn fetch_blob(&self, _: &str, _: &str, offset: u64) -> Result<BlobStream, String> {
            self.offsets.lock().unwrap().push(offset);
            let start = usize::try_from(offset).unwrap();
            let end = self
                .cut_after
                .map_or(self.data.len(), |c| (start + c).min(self.data.len()));
            Ok(BlobStream {
                start: offset,
                body: Box::new(std::io::Cursor::new(self.data[start..end].to_vec())),
            })
        }

        fn report_held(&self, _: &str, _: &HeldReport) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn an_interrupted_fetch_resumes_from_its_partial_file_and_verifies() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&d.path().join("data"), &d.path().join("served")).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let sha = hex(&Sha256::digest(&data));
        let size = data.len() as u64;
        let mut t = Bytes {
            data: Arc::new(data),
            cut_after: Some(1_000_000),
            offsets: Arc::default(),
        };
        let e = fetch_blob(&store, &t, "peer", &sha, size).unwrap_err();
        assert!(e.contains("early"), "{e}");
        assert_eq!(
            std::fs::metadata(store.partial_path(&sha)).unwrap().len(),
            1_000_000
        );
        assert!(
            !store.blob_path(&sha).exists(),
            "a partial blob is never a blob"
        );
        t.cut_after = None;
        fetch_blob(&store, &t, "peer", &sha, size).unwrap();
        assert_eq!(*t.offsets.lock().unwrap(), vec![0, 1_000_000]);
        assert!(store.verify(&sha).unwrap());
        assert!(!store.partial_path(&sha).exists());
    }

    #[test]
    fn wrong_bytes_are_discarded_not_stored() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&d.path().join("data"), &d.path().join("served")).unwrap();
        let t = Bytes {
            data: Arc::new(vec![1; 4096]),
            cut_after: None,
            offsets: Arc::default(),
        };
        let sha = "ab".repeat(32);
        let e = fetch_blob(&store, &t, "peer", &sha, 4096).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        assert!(!store.blob_path(&sha).exists());
        assert!(
            !store.partial_path(&sha).exists(),
            "bad bytes are not resumed from"
        );
    }

    /// A put's blob is in the store before its index entry commits: a pass
    /// in between must leave it, and collect it once it is old and still
    /// unnamed.
    #[test]
    fn unnamed_blobs_are_collected_only_after_the_grace() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&d.path().join("data"), &d.path().join("served")).unwrap();
        let sha = "ab".repeat(32);
        let p = store.partial_path(&sha);
        std::fs::write(&p, b"just put").unwrap();
        store.commit(&p, &sha).unwrap();
        let none = BTreeMap::new();
        let gone = tidy(&store, &BTreeMap::new(), &none, &BTreeSet::new());
        assert!(gone.is_empty(), "a fresh blob was collected");
        assert_eq!(store.list().unwrap(), vec![sha.clone()]);

        let old = std::time::SystemTime::now() - GC_GRACE - Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(store.blob_path(&sha))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let gone = tidy(&store, &BTreeMap::new(), &none, &BTreeSet::new());
        assert_eq!(gone, vec![sha]);
        assert!(store.list().unwrap().is_empty());
    }
}
