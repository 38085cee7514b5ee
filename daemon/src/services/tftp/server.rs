//! The socket half: the listener loop, artifact file access and one tokio
//! task per transfer that drives a [`Session`] over its own UDP socket.
//!
//! ```text
//!  listener (VIP:69) ── RRQ ──▶ spawn transfer task ─┐
//!        │                                           │ own socket bound to the
//!        ├── WRQ ──▶ ERROR 2 (read-only)             │ listener's IP, port 0,
//!        └── junk ─▶ debug log, dropped              │ connect()ed to the client
//!                                                    ▼
//!              resolve + open file ─▶ OACK/DATA ◀─▶ ACKs, timer ─▶ log + metrics
//! ```
//!
//! Because each transfer socket is `connect()`ed, the kernel drops datagrams
//! from any other address/port, so RFC 1350's "unknown TID" case never reaches
//! the task.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::batch::Batch;
use super::config::{TftpConfig, TftpError};
use super::packet::{encode_error, ErrorCode, Mode, Packet, ParseError, Request};
use super::session::{wire_block, Action, Negotiated, Session};
use crate::metrics::{self, ResultLabel};

const LOG_TARGET: &str = "tandem::tftp";
/// Per-packet and per-transfer debug lines: their own target, so turning
/// them on (`TANDEM_LOG=info,tandem::packet=debug`) drowns nothing else.
const PACKET_TARGET: &str = "tandem::packet::tftp";
/// Largest datagram we accept on the listener; requests with long option
/// lists can exceed 512 bytes.
const LISTEN_BUF: usize = 65_536;
/// Transfer sockets only receive ACKs and ERRORs; a longer ERROR message is
/// truncated by the kernel, which the parser tolerates.
const TRANSFER_BUF: usize = 2048;
/// Bytes read from the file at once, so a transfer at small block sizes does
/// not hop to the blocking pool for every block.
const READ_AHEAD: usize = 128 * 1024;
/// Concurrent transfers at most. Each holds a socket (a file descriptor) and
/// a read-ahead buffer; the cap keeps an RRQ flood from exhausting either,
/// while staying far above what a boot storm of a few hundred clients needs.
const MAX_TRANSFERS: usize = 4096;
/// Concurrent transfers per client IP address at most, so one host cannot
/// take more than an eighth of [`MAX_TRANSFERS`]. Not lower: NATs, labs and
/// benches put hundreds of clients behind one address (the TFTP bench runs
/// 50 from one namespace, a boot-storm test 300 from one loopback address),
/// and the XDP bucket (`tftp_per_client`) already holds one address to 100
/// RRQs a second.
pub(super) const MAX_TRANSFERS_PER_CLIENT: usize = 512;
/// Read-ahead buffers of [`READ_AHEAD`] bytes that may exist at once: 32 MiB
/// in all. A transfer that finds none free reads one block at a time from
/// the page cache instead, so memory stays bounded by this plus one block
/// per transfer, however many transfers run.
const READ_AHEAD_BUFFERS: usize = 256;
/// How long shutdown waits for transfer tasks to send their ERROR and end
/// before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Shared, read-only state of one server.
struct Ctx {
    /// Canonical artifact directory: every served file must resolve under it.
    root: PathBuf,
    /// The root as configured, so an absolute request naming it verbatim
    /// (e.g. through a symlinked `/var/lib`) is recognised too.
    root_configured: PathBuf,
    /// Transfer sockets bind here, so replies leave from the address the
    /// client talked to (the VIP). If the listener is bound to the unspecified
    /// address, the kernel picks the source per route instead.
    local_ip: IpAddr,
    default_timeout: Duration,
    max_retries: u32,
    /// Permits for read-ahead buffers ([`READ_AHEAD_BUFFERS`]).
    read_ahead: Arc<tokio::sync::Semaphore>,
}

pub(super) async fn serve_socket(
    sock: UdpSocket,
    cfg: TftpConfig,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    if cfg.default_timeout.is_zero() {
        return Err(TftpError::Config(
            "default_timeout must be greater than zero",
        ));
    }
    let root = std::fs::canonicalize(&cfg.root).map_err(|source| TftpError::Root {
        path: cfg.root.clone(),
        source,
    })?;
    if !root.is_dir() {
        return Err(TftpError::RootNotDir(cfg.root));
    }
    let local = sock.local_addr().map_err(TftpError::LocalAddr)?;
    if let Err(e) =
        crate::services::link::grow_receive_queue(&sock, crate::services::link::LISTENER_RCVBUF)
    {
        warn!(target: LOG_TARGET, error = %e, "could not enlarge the listener's receive queue; request bursts may be dropped");
    }
    let ctx = Arc::new(Ctx {
        root,
        root_configured: cfg.root,
        local_ip: local.ip(),
        default_timeout: cfg.default_timeout,
        max_retries: cfg.max_retries,
        read_ahead: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_BUFFERS)),
    });
    info!(target: LOG_TARGET, addr = %local, root = %ctx.root.display(), "tftp serving");

    let mut listener = Listener {
        sock,
        ctx,
        cancel,
        tasks: JoinSet::new(),
        malformed: 0,
        per_client: std::collections::HashMap::new(),
    };
    let mut buf = vec![0u8; LISTEN_BUF];
    loop {
        // Reap finished transfers so the set stays as large as the live ones.
        while let Some(res) = listener.tasks.try_join_next() {
            log_join(res);
        }
        let (n, peer) = tokio::select! {
            biased;
            () = listener.cancel.cancelled() => break,
            r = listener.sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // An unconnected UDP socket reports ICMP errors for earlier
                    // replies here; none of them concern the listener itself.
                    debug!(target: LOG_TARGET, error = %e, "listener recv error");
                    if !is_transient(&e) {
                        // Do not spin if the error persists.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            },
        };
        listener.dispatch(&buf[..n], peer).await;
    }

    // Transfer tokens are children of `cancel`: every task is already
    // stopping. Give them a moment to tell their clients, then abort.
    let mut tasks = listener.tasks;
    info!(target: LOG_TARGET, active = tasks.len(), "tftp stopping");
    let drain = async {
        while let Some(res) = tasks.join_next().await {
            log_join(res);
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}

/// The listener's state between datagrams.
struct Listener {
    sock: UdpSocket,
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    /// Malformed or stray datagrams seen, for the debug log.
    malformed: u64,
    /// Live transfers per client address; each task holds a [`ClientSlot`]
    /// that gives its count back when the task ends (or is aborted).
    per_client: std::collections::HashMap<IpAddr, Arc<()>>,
}

/// One transfer's share of its client's count: the count is the number of
/// clones of the client's `Arc` (minus the listener's own).
struct ClientSlot(#[allow(dead_code, reason = "held for its Drop")] Arc<()>);

impl Listener {
    /// A slot for one more transfer from `ip`, or `None` at the cap.
    fn client_slot(&mut self, ip: IpAddr) -> Option<ClientSlot> {
        // Forget clients whose transfers all ended, so the map stays as
        // large as the clients with live transfers.
        if self.per_client.len() > MAX_TRANSFERS {
            self.per_client.retain(|_, a| Arc::strong_count(a) > 1);
        }
        let count = self.per_client.entry(ip).or_default();
        if Arc::strong_count(count) > MAX_TRANSFERS_PER_CLIENT {
            return None;
        }
        Some(ClientSlot(Arc::clone(count)))
    }
}

impl Listener {
    /// Acts on one datagram received on the listening port.
    async fn dispatch(&mut self, datagram: &[u8], peer: SocketAddr) {
        let sock = &self.sock;
        match Packet::parse(datagram) {
            Ok(Packet::Rrq(req)) if req.mode == Mode::Mail => {
                let msg = "mail mode is not supported";
                refuse(sock, peer, ErrorCode::IllegalOperation, msg, "error").await;
            }
            Ok(Packet::Rrq(req)) if self.tasks.len() >= MAX_TRANSFERS => {
                debug!(target: PACKET_TARGET, file = %req.filename, peer = %peer, "too many transfers; request refused");
                let msg = "server busy, retry later";
                refuse(sock, peer, ErrorCode::NotDefined, msg, "error").await;
            }
            Ok(Packet::Rrq(req)) => {
                let Some(slot) = self.client_slot(peer.ip()) else {
                    debug!(target: PACKET_TARGET, file = %req.filename, peer = %peer, "too many transfers from this client; request refused");
                    let msg = "too many transfers from this address, retry later";
                    refuse(&self.sock, peer, ErrorCode::NotDefined, msg, "busy").await;
                    return;
                };
                let ctx = Arc::clone(&self.ctx);
                let cancel = self.cancel.child_token();
                self.tasks.spawn(async move {
                    run_transfer(ctx, peer, req, cancel).await;
                    // Also given back if the task is aborted (dropped).
                    drop(slot);
                });
            }
            Ok(Packet::Wrq(req)) => {
                info!(target: LOG_TARGET, file = %req.filename, peer = %peer, result = "denied", "write request refused: server is read-only");
                refuse(
                    sock,
                    peer,
                    ErrorCode::AccessViolation,
                    "read-only server",
                    "denied",
                )
                .await;
            }
            Ok(other) => {
                // DATA/ACK/ERROR/OACK belong on a transfer port; on :69 they
                // are strays (e.g. from a transfer that already ended).
                self.malformed += 1;
                debug!(target: PACKET_TARGET, peer = %peer, packet = kind(&other), malformed = self.malformed, "stray packet on listener dropped");
            }
            Err(e) => {
                self.malformed += 1;
                debug!(target: PACKET_TARGET, peer = %peer, error = %e, malformed = self.malformed, "malformed datagram on listener");
                if is_request_opcode(datagram) {
                    // A broken request is a failed transfer: tell the client why.
                    let code = if matches!(e, ParseError::UnknownMode(_)) {
                        ErrorCode::IllegalOperation
                    } else {
                        ErrorCode::NotDefined
                    };
                    refuse(
                        sock,
                        peer,
                        code,
                        &format!("malformed request: {e}"),
                        "error",
                    )
                    .await;
                }
            }
        }
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            error!(target: LOG_TARGET, error = %e, "tftp transfer task panicked");
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EHOSTUNREACH)
        || e.raw_os_error() == Some(libc::ENETUNREACH)
}

fn is_request_opcode(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf[0] == 0 && (buf[1] == 1 || buf[1] == 2)
}

fn kind(p: &Packet) -> &'static str {
    match p {
        Packet::Rrq(_) => "RRQ",
        Packet::Wrq(_) => "WRQ",
        Packet::Data { .. } => "DATA",
        Packet::Ack { .. } => "ACK",
        Packet::Error { .. } => "ERROR",
        Packet::Oack { .. } => "OACK",
    }
}

pub(super) fn count(result: &str) {
    metrics::get()
        .tftp_transfers
        .get_or_create(&ResultLabel {
            result: result.to_owned(),
        })
        .inc();
}

/// Answers a request straight from the listener with an ERROR and counts it.
async fn refuse(sock: &UdpSocket, peer: SocketAddr, code: ErrorCode, msg: &str, result: &str) {
    count(result);
    if let Err(e) = sock.send_to(&encode_error(code, msg), peer).await {
        debug!(target: PACKET_TARGET, peer = %peer, error = %e, "sending ERROR failed");
    }
}

/// How a transfer ended; the label of `tftp_transfers{result}`.
#[derive(Debug)]
enum Outcome {
    Ok,
    Timeout,
    NotFound,
    Denied(&'static str),
    Error(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::NotFound => "not_found",
            Outcome::Denied(_) => "denied",
            Outcome::Error(_) => "error",
        }
    }
}

/// Keeps `tftp_active` right even when a task is aborted mid-transfer.
struct ActiveGuard;

impl ActiveGuard {
    fn new() -> Self {
        metrics::get().tftp_active.inc();
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        metrics::get().tftp_active.dec();
    }
}

/// Figures for the per-transfer log line.
#[derive(Default)]
struct Stats {
    file_size: u64,
    /// DATA payload bytes put on the wire, retransmissions included.
    sent: u64,
    blksize: u16,
    windowsize: u16,
    retransmits: u64,
    malformed: u64,
}

async fn run_transfer(ctx: Arc<Ctx>, peer: SocketAddr, req: Request, cancel: CancellationToken) {
    let _active = ActiveGuard::new();
    let started = Instant::now();
    let mut stats = Stats::default();
    let outcome = match bind_transfer_socket(ctx.local_ip, peer).await {
        Ok(sock) => transfer(&ctx, &sock, peer, &req, &cancel, &mut stats).await,
        Err(e) => Outcome::Error(format!("cannot open transfer socket: {e}")),
    };
    count(outcome.label());
    let duration_ms = started.elapsed().as_millis() as u64;
    match &outcome {
        Outcome::Denied(reason) => {
            metrics::get().tftp_denied.inc();
            warn!(target: LOG_TARGET, file = %req.filename, peer = %peer, reason, result = "denied", "tftp request outside the artifact directory refused");
        }
        Outcome::Error(reason) => {
            info!(target: LOG_TARGET, file = %req.filename, bytes = stats.file_size, sent = stats.sent, peer = %peer, duration_ms, result = "error", reason = %reason, blksize = stats.blksize, windowsize = stats.windowsize, retransmits = stats.retransmits, malformed = stats.malformed, "tftp transfer finished");
        }
        other => {
            info!(target: LOG_TARGET, file = %req.filename, bytes = stats.file_size, sent = stats.sent, peer = %peer, duration_ms, result = other.label(), blksize = stats.blksize, windowsize = stats.windowsize, retransmits = stats.retransmits, malformed = stats.malformed, "tftp transfer finished");
        }
    }
}

async fn bind_transfer_socket(ip: IpAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    sock.connect(peer).await?;
    Ok(sock)
}

fn port_unreachable() -> Outcome {
    Outcome::Error("client port unreachable".to_owned())
}

/// Sends the DATA packets of `batch`; `Err` as for [`send`].
async fn flush(batch: &mut Batch, sock: &UdpSocket) -> Result<(), Outcome> {
    batch.flush(sock).await.map_err(|_| port_unreachable())
}

/// Sends one datagram. `Err` only when the client is certainly gone (ICMP
/// port unreachable); other failures are left to the retransmit timer.
async fn send(sock: &UdpSocket, buf: &[u8]) -> Result<(), Outcome> {
    match sock.send(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(port_unreachable()),
        Err(e) => {
            debug!(target: PACKET_TARGET, error = %e, "tftp send failed; the timer will retry");
            Ok(())
        }
    }
}

/// Best effort: the transfer is over whatever happens to this datagram.
async fn send_error(sock: &UdpSocket, code: ErrorCode, msg: &str) {
    let _ = sock.send(&encode_error(code, msg)).await;
}

/// Resolves and opens the requested file; on failure the client has been
/// sent the matching ERROR and the transfer's outcome is returned.
async fn open_for_transfer(
    ctx: &Ctx,
    sock: &UdpSocket,
    name: &str,
) -> Result<(std::fs::File, u64), Outcome> {
    // Path checks and open touch the filesystem: keep them off the runtime.
    let opened = {
        let root = ctx.root.clone();
        let root_configured = ctx.root_configured.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || open_artifact(&root, &root_configured, &name)).await
    };
    let (code, msg, outcome) = match opened {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(OpenError::NotFound)) => {
            (ErrorCode::FileNotFound, "file not found", Outcome::NotFound)
        }
        Ok(Err(OpenError::Denied(why))) => (
            ErrorCode::AccessViolation,
            "access violation",
            Outcome::Denied(why),
        ),
        Ok(Err(OpenError::Io(e))) if e.kind() == io::ErrorKind::PermissionDenied => (
            ErrorCode::AccessViolation,
            "access violation",
            Outcome::Error(format!("open: {e}")),
        ),
        Ok(Err(OpenError::Io(e))) => (
            ErrorCode::NotDefined,
            "cannot read file",
            Outcome::Error(format!("open: {e}")),
        ),
        Err(join) => (
            ErrorCode::NotDefined,
            "internal error",
            Outcome::Error(format!("open task failed: {join}")),
        ),
    };
    send_error(sock, code, msg).await;
    Err(outcome)
}

async fn transfer(
    ctx: &Ctx,
    sock: &UdpSocket,
    peer: SocketAddr,
    req: &Request,
    cancel: &CancellationToken,
    stats: &mut Stats,
) -> Outcome {
    let (file, size) = match open_for_transfer(ctx, sock, &req.filename).await {
        Ok(v) => v,
        Err(outcome) => return outcome,
    };
    stats.file_size = size;

    // netascii is served byte-for-byte like octet: artifacts are binaries and
    // boot scripts, and every PXE/iPXE client asks for octet anyway. Converting
    // line endings would also make `tsize` lie.
    let negotiated = Negotiated::from_request(&req.options, size);
    stats.blksize = negotiated.block_size();
    stats.windowsize = negotiated.window_size();
    let timeout = negotiated
        .timeout
        .map_or(ctx.default_timeout, |s| Duration::from_secs(u64::from(s)));
    let oack = Packet::Oack {
        options: negotiated.oack_options(),
    }
    .encode();
    let mut session = Session::new(
        size,
        negotiated.block_size(),
        negotiated.window_size(),
        !negotiated.is_empty(),
        ctx.max_retries,
    );
    let mut reader = BlockReader {
        file: Arc::new(file),
        buf: Vec::new(),
        start: 0,
        read_ahead: Arc::clone(&ctx.read_ahead).try_acquire_owned().ok(),
    };
    let mut batch = Batch::new(negotiated.block_size());
    let mut rbuf = vec![0u8; TRANSFER_BUF];
    let bytes_metric = &metrics::get().tftp_bytes;
    debug!(target: PACKET_TARGET, file = %req.filename, peer = %peer, ?negotiated, blocks = session.last_block(), "tftp transfer starting");

    let mut action = session.start();
    let mut deadline = Instant::now() + timeout;
    loop {
        match action {
            Action::SendOack => {
                if let Err(o) = send(sock, &oack).await {
                    return o;
                }
                deadline = Instant::now() + timeout;
            }
            Action::SendData { first, last } => {
                // The window goes out in as few sends as GSO allows
                // (`batch`); the byte counts stay per block.
                for abs in first..=last {
                    if batch.is_full() {
                        if let Err(o) = flush(&mut batch, sock).await {
                            return o;
                        }
                    }
                    let (offset, len) = session.block_span(abs);
                    let payload = match reader.block(offset, len).await {
                        Ok(p) => p,
                        Err(e) => {
                            send_error(sock, ErrorCode::NotDefined, "read error").await;
                            return Outcome::Error(format!("read at {offset}: {e}"));
                        }
                    };
                    batch.push(wire_block(abs), payload);
                    stats.sent += len as u64;
                    bytes_metric.inc_by(len as u64);
                }
                if let Err(o) = flush(&mut batch, sock).await {
                    return o;
                }
                deadline = Instant::now() + timeout;
            }
            Action::Wait => {}
            Action::Complete => return Outcome::Ok,
            Action::GiveUp => {
                stats.retransmits = session.retransmits();
                send_error(sock, ErrorCode::NotDefined, "timed out waiting for ACK").await;
                return Outcome::Timeout;
            }
        }
        stats.retransmits = session.retransmits();
        // cancel-safety: every branch is cancel-safe (`recv` loses nothing
        // when another branch wins), so the loop can be re-entered freely.
        action = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                send_error(sock, ErrorCode::NotDefined, "server shutting down").await;
                return Outcome::Error("server shutting down".to_owned());
            }
            () = tokio::time::sleep_until(deadline) => session.on_timeout(),
            r = sock.recv(&mut rbuf) => {
                match on_received(&mut session, stats, peer, r.map(|n| &rbuf[..n])) {
                    Ok(a) => a,
                    Err(outcome) => return outcome,
                }
            }
        };
    }
}

/// Turns what the transfer socket received into the session's next action;
/// `Err` ends the transfer.
fn on_received(
    session: &mut Session,
    stats: &mut Stats,
    peer: SocketAddr,
    received: io::Result<&[u8]>,
) -> Result<Action, Outcome> {
    match received.map(Packet::parse) {
        Ok(Ok(Packet::Ack { block })) => Ok(session.on_ack(block)),
        Ok(Ok(Packet::Error { code, message })) => Err(Outcome::Error(format!(
            "client sent ERROR {code}: {message}"
        ))),
        Ok(Ok(other)) => {
            stats.malformed += 1;
            debug!(target: PACKET_TARGET, peer = %peer, packet = kind(&other), "unexpected packet during transfer ignored");
            Ok(Action::Wait)
        }
        Ok(Err(e)) => {
            stats.malformed += 1;
            debug!(target: PACKET_TARGET, peer = %peer, error = %e, "malformed packet during transfer ignored");
            Ok(Action::Wait)
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Err(Outcome::Error("client port unreachable".to_owned()))
        }
        Err(e) => {
            debug!(target: PACKET_TARGET, peer = %peer, error = %e, "transfer recv error");
            Ok(Action::Wait)
        }
    }
}

/// Why a requested file cannot be served.
#[derive(Debug)]
enum OpenError {
    NotFound,
    /// The request escapes the artifact directory.
    Denied(&'static str),
    Io(io::Error),
}

/// Resolves `requested` under `root` (canonical) and opens it.
///
/// Order matters: the path is fully canonicalised (symlinks resolved) and
/// checked to lie under `root` before the file is opened; after opening, the
/// descriptor's real path is checked again, so a symlink swapped in between
/// the check and the open is caught too.
///
/// - any `..` component is refused outright, even one that would stay inside;
/// - an absolute path naming a file under the root is served as is; any other
///   absolute path has its leading `/` stripped (as tftp-hpa does, so
///   `/pxelinux.0` works) and must then resolve inside the root: if it does
///   not exist there, it is refused as access violation rather than reported
///   missing, without probing the filesystem outside the root.
fn open_artifact(
    root: &Path,
    root_configured: &Path,
    requested: &str,
) -> Result<(std::fs::File, u64), OpenError> {
    let req = Path::new(requested);
    if req.components().any(|c| c == Component::ParentDir) {
        return Err(OpenError::Denied("path contains .."));
    }
    let absolute = req.is_absolute();
    let candidate = if absolute && (req.starts_with(root) || req.starts_with(root_configured)) {
        req.to_path_buf()
    } else {
        root.join(requested.trim_start_matches('/'))
    };
    let not_found = || {
        if absolute && !req.starts_with(root) && !req.starts_with(root_configured) {
            OpenError::Denied("absolute path outside the artifact directory")
        } else {
            OpenError::NotFound
        }
    };
    let canonical = match std::fs::canonicalize(&candidate) {
        Ok(p) => p,
        // ENOTDIR: a path through a regular file ("file/x").
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Err(not_found());
        }
        Err(e) => return Err(OpenError::Io(e)),
    };
    if !canonical.starts_with(root) {
        return Err(OpenError::Denied("resolves outside the artifact directory"));
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&canonical)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(OpenError::Denied("became a symlink while opening"));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(OpenError::Io(e)),
    };
    // Where the descriptor really points (Linux); skipped if /proc is absent.
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            if !real.starts_with(root) {
                return Err(OpenError::Denied(
                    "moved outside the artifact directory while opening",
                ));
            }
        }
    }
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        // Directories, devices, fifos: nothing a client can download.
        return Err(not_found());
    }
    Ok((file, meta.len()))
}

/// Reads blocks through a read-ahead buffer filled on the blocking pool.
struct BlockReader {
    file: Arc<std::fs::File>,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// A read-ahead permit, if one was free at the start: then `buf` holds
    /// [`READ_AHEAD`] bytes, else one block.
    read_ahead: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl BlockReader {
    /// The `len` bytes at `offset`. Fails if the file became shorter than the
    /// size announced at open (it was replaced or truncated mid-transfer).
    async fn block(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        let cached = offset >= self.start && end <= self.start + self.buf.len() as u64;
        if !cached {
            let file = Arc::clone(&self.file);
            let mut buf = std::mem::take(&mut self.buf);
            let want = if self.read_ahead.is_some() {
                len.max(READ_AHEAD)
            } else {
                len
            };
            self.buf = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
                buf.resize(want, 0);
                let got = read_up_to(&file, &mut buf, offset)?;
                buf.truncate(got);
                Ok(buf)
            })
            .await
            .map_err(io::Error::other)??;
            self.start = offset;
            if self.buf.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank during transfer",
                ));
            }
        }
        let s = (offset - self.start) as usize;
        Ok(&self.buf[s..s + len])
    }
}

/// Fills `buf` from `offset`, stopping early only at end of file.
fn read_up_to(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
        let root_dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root_dir.path()).unwrap();
        std::fs::write(root.join("a.bin"), b"hello").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/b.bin"), b"bee").unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("outdir")).unwrap();
        std::os::unix::fs::symlink("sub/b.bin", root.join("in")).unwrap();
        (root_dir, root, outside)
    }

    fn open(root: &Path, name: &str) -> Result<Vec<u8>, String> {
        match open_artifact(root, root, name) {
            Ok((f, size)) => {
                let mut buf = vec![0; size as usize];
                f.read_exact_at(&mut buf, 0).unwrap();
                Ok(buf)
            }
            Err(OpenError::NotFound) => Err("not_found".to_owned()),
            Err(OpenError::Denied(_)) => Err("denied".to_owned()),
            Err(OpenError::Io(e)) => Err(format!("io: {e}")),
        }
    }

    #[test]
    fn resolution_rules() {
        let (_keep, root, outside) = setup();
        let ok = |n: &str, want: &[u8]| assert_eq!(open(&root, n).as_deref(), Ok(want), "{n}");
        let err = |n: &str, want: &str| assert_eq!(open(&root, n), Err(want.to_owned()), "{n}");
        ok("a.bin", b"hello");
        ok("./sub//b.bin", b"bee");
        ok("/a.bin", b"hello");
        ok("//sub/b.bin", b"bee");
        ok(&format!("{}/a.bin", root.display()), b"hello");
        ok("in", b"bee");
        err("missing", "not_found");
        err("sub", "not_found");
        err("a.bin/x", "not_found");
        err(&format!("{}/missing", root.display()), "not_found");
        err("../a.bin", "denied");
        err("sub/../a.bin", "denied");
        err("../../etc/passwd", "denied");
        err("/../etc/passwd", "denied");
        err("out", "denied");
        err("outdir/secret", "denied");
        // Absolute and outside: stripped, not found inside the root → refused,
        // whether or not it exists out there.
        err("/etc/passwd", "denied");
        err(&format!("{}/secret", outside.path().display()), "denied");
        err("/no/such/file", "denied");
    }
}
