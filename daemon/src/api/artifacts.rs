//! The artifact routes of the admin API.
//!
//! - `GET /v1/artifacts`: the index with holders (any node, its own view).
//! - `PUT /v1/artifacts/{*name}`: an upload, streamed to disk and hashed on
//!   the way (leader only; followers answer 421 before reading the body).
//!   Bounded by `artifact_max_bytes` (413) and by [`MAX_UPLOADS`] at once (429).
//! - `DELETE /v1/artifacts/{*name}`: drops the name (leader only).
//! - `GET /v1/blobs/{sha256}`: a verified blob, whole or from a `Range`
//!   (`bytes=N-` or `bytes=N-M`), for peers that fetch it. Streamed from the
//!   file; only blobs this node verified are served.
//! - `POST /v1/holders`: a node's holder report (leader only).
//!
//! Who may call: whoever reaches the admin API (the trust work adds TLS and
//! bearer tokens in front of every route).

use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Semaphore;

use super::dto::{ArtifactDto, ErrorDto, OkDto};
use super::reply::error as err;
use crate::consensus::{Cluster, ClusterHandle, ProposeError};
use crate::model::{is_sha256_hex, validate_name, Command, CommandResponse};
use crate::services::artifacts::{Artifacts, HeldReport, IngestError};

/// Uploads in progress at most: each holds a 1 MiB buffer and a disk stream.
pub const MAX_UPLOADS: usize = 2;
static UPLOADS: Semaphore = Semaphore::const_new(MAX_UPLOADS);

/// What the artifact routes use.
#[derive(Clone)]
struct Api {
    cluster: Cluster,
    artifacts: Artifacts,
}

/// The artifact routes, with their state (merged into the API's router).
pub(super) fn routes(cluster: Cluster, artifacts: Artifacts) -> Router {
    Router::new()
        .route("/v1/artifacts", get(list))
        .route("/v1/artifacts/{*name}", put(upload).delete(remove))
        .route("/v1/blobs/{sha}", get(blob))
        .route("/v1/holders", post(holders))
        .with_state(Api { cluster, artifacts })
}

fn not_leader(api: &Api) -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        Json(ErrorDto {
            error: "not the leader".into(),
            leader_api: api.cluster.leader_api(),
            hint: None,
        }),
    )
        .into_response()
}

async fn propose(api: &Api, cmd: Command) -> Result<(), Response> {
    match api.cluster.propose(cmd).await {
        Ok(CommandResponse::Ok) => Ok(()),
        Ok(CommandResponse::Rejected { reason }) => Err(err(StatusCode::CONFLICT, reason)),
        Err(ProposeError::NotLeader { .. }) => Err(not_leader(api)),
        Err(ProposeError::Failed(m)) => Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not committed (no quorum?): {m}"),
        )),
    }
}

async fn list(AxState(api): AxState<Api>) -> Json<Vec<ArtifactDto>> {
    Json(api.cluster.read(|s| {
        s.artifacts
            .iter()
            .map(|(name, a)| ArtifactDto {
                name: name.clone(),
                sha256: a.sha256.clone(),
                size: a.size,
                added_at: a.added_at,
                holders: s
                    .holders
                    .get(&a.sha256)
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default(),
            })
            .collect()
    }))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn upload(
    AxState(api): AxState<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !api.cluster.leadership().borrow().is_leader {
        return not_leader(&api);
    }
    if let Err(e) = validate_name(&name) {
        return err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
    }
    let arts = &api.artifacts;
    let cap = arts.config.max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::TooBig { cap }.to_string(),
        );
    }
    let Ok(_permit) = UPLOADS.try_acquire() else {
        return err(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_UPLOADS} uploads are running already; retry when one ends"),
        );
    };
    let mut up = match arts.store.ingest(cap).await {
        Ok(u) => u,
        Err(e) => return ingest_err(&e),
    };
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let r = match chunk {
            Ok(c) => up.write(&c).await,
            Err(e) => {
                up.abort().await;
                return err(StatusCode::BAD_REQUEST, format!("upload interrupted: {e}"));
            }
        };
        if let Err(e) = r {
            up.abort().await;
            return ingest_err(&e);
        }
    }
    let (sha256, size) = match up.finish(&arts.store).await {
        Ok(x) => x,
        Err(e) => return ingest_err(&e),
    };
    if declared.is_some_and(|n| n != size) {
        return err(
            StatusCode::BAD_REQUEST,
            format!("upload ended after {size} bytes of a declared {declared:?}"),
        );
    }
    arts.mark_verified(&sha256);
    let at = now();
    let put = Command::PutArtifact {
        name: name.clone(),
        sha256: sha256.clone(),
        size,
        at,
    };
    if let Err(r) = propose(&api, put).await {
        return r;
    }
    let held = Command::ArtifactHeld {
        node: arts.node,
        sha256: sha256.clone(),
        held: true,
    };
    if let Err(r) = propose(&api, held).await {
        return r;
    }
    // Served at once here; the replication task links it too (and on peers).
    let (store, n, s) = (arts.store.clone(), name.clone(), sha256.clone());
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.link(&n, &s)).await {
        tracing::error!(target: "tandem::artifacts", name = %name, error = %e, "cannot link the artifact into the served tree");
    }
    tracing::info!(target: "tandem::artifacts", name = %name, sha256 = %sha256, size, index = api.cluster.view().applied_index().unwrap_or(0), "artifact put");
    Json(ArtifactDto {
        name,
        sha256,
        size,
        added_at: at,
        holders: vec![arts.node],
    })
    .into_response()
}

fn ingest_err(e: &IngestError) -> Response {
    let code = match e {
        IngestError::TooBig { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        IngestError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        IngestError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::warn!(target: "tandem::artifacts", error = %e, "upload refused");
    err(code, e.to_string())
}

async fn remove(AxState(api): AxState<Api>, Path(name): Path<String>) -> Response {
    match propose(&api, Command::RemoveArtifact { name: name.clone() }).await {
        Ok(()) => Json(OkDto {
            message: format!("artifact {name} removed; every node deletes its blob"),
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn holders(AxState(api): AxState<Api>, Json(r): Json<HeldReport>) -> Response {
    if !is_sha256_hex(&r.sha256) {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "sha256 must be 64 lower-case hex digits",
        );
    }
    let cmd = Command::ArtifactHeld {
        node: r.node,
        sha256: r.sha256,
        held: r.held,
    };
    match propose(&api, cmd).await {
        Ok(()) => Json(OkDto {
            message: "recorded".into(),
        })
        .into_response(),
        Err(r) => r,
    }
}

/// `bytes=N-` or `bytes=N-M` (one range) -> (start, end exclusive).
fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        size
    } else {
        b.trim().parse::<u64>().ok()?.checked_add(1)?.min(size)
    };
    (start < end).then_some((start, end))
}

async fn blob(AxState(api): AxState<Api>, Path(sha): Path<String>, headers: HeaderMap) -> Response {
    if !is_sha256_hex(&sha) {
        return err(StatusCode::BAD_REQUEST, "not a sha256");
    }
    let Some(path) = api.artifacts.blob(&sha) else {
        return err(StatusCode::NOT_FOUND, "this node holds no verified copy");
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, size),
        Some(r) => match parse_range(r, size) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
            None => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                )
                    .into_response()
            }
        },
    };
    if start > 0 {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    }
    let reader = file.take(end - start);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        reader,
        256 * 1024,
    ));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, (end - start).into());
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = format!("bytes {start}-{}/{size}", end - 1).parse() {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 10)));
        assert_eq!(parse_range("bytes=4-", 10), Some((4, 10)));
        assert_eq!(parse_range("bytes=2-5", 10), Some((2, 6)));
        assert_eq!(parse_range("bytes=2-50", 10), Some((2, 10)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=5-2", 10), None);
        assert_eq!(parse_range("items=0-", 10), None);
        assert_eq!(parse_range("bytes=-5", 10), None);
    }
}
