//! The accept loop and the bounds of one connection: the caps (total and
//! per source address), hyper's header-read timeout and header limits, an
//! idle watchdog, and the gate every request passes before the routes
//! (GET/HEAD only, no bodies), where every answer is counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, CodeLabel};

/// Header lines and bytes a request may carry: iPXE and firmware send a
/// handful; curl and browsers well under this.
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Connections being refused at once, and how long each may take.
const MAX_REFUSALS: usize = 64;
const REFUSE_WITHIN: Duration = Duration::from_secs(1);

/// Written to a connection over a cap before it is closed.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// How many connections, how slow, how idle.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one source address (a boot storm of distinct
    /// machines fits; one host cannot hold every slot).
    pub max_per_client: usize,
    /// A request's header must arrive within this (slowloris).
    pub header_timeout: Duration,
    /// A connection with no byte read or written for this long is closed
    /// (a stalled reader, an idle keep-alive).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_per_client: 16,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// The client's address, put into each request for the routes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Peer(pub(super) SocketAddr);

/// Counts one answer in `tandem_http_requests_total{code}`.
pub(super) fn count(code: StatusCode) {
    metrics::get()
        .http_requests
        .get_or_create(&CodeLabel {
            code: code.as_str().to_owned(),
        })
        .inc();
}

/// Accepts until `cancel` fires, then drops every connection.
pub(super) async fn run(
    listener: TcpListener,
    limits: Limits,
    router: Router,
    cancel: CancellationToken,
) {
    let per_client = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    let mut conns = JoinSet::new();
    let mut refusals = JoinSet::new();
    let mut incoming = crate::net::Acceptor::new(listener, "http");
    loop {
        // cancel-safety: accept and join_next are cancel-safe.
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            Some(_) = refusals.join_next(), if !refusals.is_empty() => continue,
            r = incoming.next(&cancel) => match r {
                Some(x) => x,
                None => break,
            },
        };
        let slot = if conns.len() >= limits.max_connections {
            None
        } else {
            Slot::take(&per_client, peer.ip(), limits.max_per_client)
        };
        let Some(slot) = slot else {
            tracing::debug!(target: "tandem::packet::http", %peer, open = conns.len(), "connection over the cap refused");
            // Read the request before answering 503, so that closing does not
            // reset the connection over unread bytes (and lose the answer).
            // Refusals are capped too; past that the connection is just closed.
            if refusals.len() < MAX_REFUSALS {
                refusals.spawn(refuse(stream));
            }
            continue;
        };
        let (limits, router) = (limits.clone(), router.clone());
        conns.spawn(async move {
            connection(stream, peer, &limits, router).await;
            drop(slot);
        });
    }
    conns.abort_all();
    refusals.abort_all();
    while conns.join_next().await.is_some() {}
    while refusals.join_next().await.is_some() {}
}

/// Answers one connection over a cap with 503 and closes it, within
/// [`REFUSE_WITHIN`].
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSE_WITHIN, async {
        let mut buf = [0u8; 2048];
        let _ = stream.read(&mut buf).await;
        stream.write_all(BUSY).await?;
        stream.shutdown().await
    })
    .await;
    count(StatusCode::SERVICE_UNAVAILABLE);
}

/// One connection's place under the per-client cap; freed on drop.
struct Slot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Slot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut m = map.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, limits: &Limits, router: Router) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let mut router = router.clone();
        async move {
            let resp = if let Some(refusal) = gate(&req) {
                refusal
            } else {
                req.extensions_mut().insert(Peer(peer));
                // Router is always ready and never fails (Infallible).
                match tower_service::Service::call(&mut router, req).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                }
            };
            count(resp.status());
            tracing::debug!(target: "tandem::packet::http", %peer, status = resp.status().as_u16(), "answered");
            Ok::<_, Infallible>(resp)
        }
    });
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES);
    let conn = b.serve_connection(io, svc);
    tokio::pin!(conn);
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(target: "tandem::packet::http", %peer, error = %e, "connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(idle_at) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!(target: "tandem::packet::http", %peer, "idle connection closed");
                    return;
                }
            }
        }
    }
}

/// What no route sees: methods other than GET and HEAD (405), and requests
/// with a body (413; the connection is closed rather than the body read).
fn gate(req: &Request<Incoming>) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    let h = req.headers();
    let has_body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(r);
    }
    None
}

/// When a connection last moved a byte, in ms since it opened.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The socket, noting every read or write that moved bytes.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
