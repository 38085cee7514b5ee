//! Loopback tests of the whole server: a small TFTP client written here with
//! tokio's `UdpSocket`, plus tftp-hpa and atftp when they are installed.
//! This file holds the server fixture, the client and the metric snapshots;
//! the tests are by theme in `transfers`, `refusals`, `recovery`, `lifecycle`
//! and `floods`.
//!
//! Every test that starts a server holds [`METRICS_LOCK`]: the metrics are
//! process-wide, and the tests assert exact deltas of them.

mod floods;
mod lifecycle;
mod recovery;
mod refusals;
mod transfers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::packet::{ErrorCode, Mode, Packet, Request};
use super::session::wire_block;
use super::{serve_socket, TftpConfig, TftpError};
use crate::metrics::{self, ResultLabel};

static METRICS_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LOCALHOST: &str = "127.0.0.1:0";

/// Deterministic, non-repeating-looking bytes, so a block served at the wrong
/// offset is caught.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct TestServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    handle: JoinHandle<Result<(), TftpError>>,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(timeout: Duration, retries: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let cfg = TftpConfig {
            root: root.clone(),
            default_timeout: timeout,
            max_retries: retries,
        };
        let handle = tokio::spawn(serve_socket(sock, cfg, cancel.clone()));
        TestServer {
            addr,
            cancel,
            handle,
            root,
            _dir: dir,
        }
    }

    fn write(&self, name: &str, data: &[u8]) {
        let p = self.root.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, data).unwrap();
    }

    async fn stop(self) {
        self.cancel.cancel();
        let res = tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("server did not stop within 5 s of cancel")
            .expect("server task panicked");
        res.expect("server returned an error");
    }
}

fn transfers(result: &str) -> u64 {
    metrics::get()
        .tftp_transfers
        .get_or_create(&ResultLabel {
            result: result.to_owned(),
        })
        .get()
}

/// Snapshot of the TFTP metrics, to compare before/after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snap {
    ok: u64,
    timeout: u64,
    not_found: u64,
    denied: u64,
    error: u64,
    denied_escape: u64,
    bytes: u64,
    active: i64,
}

fn snap() -> Snap {
    let m = metrics::get();
    Snap {
        ok: transfers("ok"),
        timeout: transfers("timeout"),
        not_found: transfers("not_found"),
        denied: transfers("denied"),
        error: transfers("error"),
        denied_escape: m.tftp_denied.get(),
        bytes: m.tftp_bytes.get(),
        active: m.tftp_active.get(),
    }
}

/// Transfer tasks count their result just after the final ACK, which the
/// client has already sent: wait (bounded) for the counters to settle.
async fn wait_for(what: &str, mut cond: impl FnMut(&Snap) -> bool) -> Snap {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = snap();
        if cond(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; metrics now {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn rrq(file: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    Packet::Rrq(Request {
        filename: file.to_owned(),
        mode: Mode::Octet,
        options: opts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
    .encode()
}

#[derive(Debug)]
struct Fetched {
    data: Vec<u8>,
    oack: Option<Vec<(String, String)>>,
    /// The server's transfer address (its TID).
    server_tid: SocketAddr,
}

#[derive(Debug, PartialEq, Eq)]
enum FetchError {
    Error(ErrorCode, String),
    Timeout,
}

async fn recv_from(
    sock: &UdpSocket,
    buf: &mut [u8],
    wait: Duration,
) -> Option<(Packet, SocketAddr)> {
    let (n, from) = tokio::time::timeout(wait, sock.recv_from(buf))
        .await
        .ok()?
        .unwrap();
    Some((
        Packet::parse(&buf[..n]).expect("server sent a malformed packet"),
        from,
    ))
}

/// A read client following RFC 1350/2347/7440: ACKs the end of each window,
/// re-ACKs the last in-order block on a gap or on its own timeout.
async fn fetch(
    server: SocketAddr,
    file: &str,
    opts: &[(&str, &str)],
) -> Result<Fetched, FetchError> {
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    let wait = Duration::from_secs(2);

    // Like tftp-hpa and atftp, resend the request when nothing answers: a
    // burst of requests can overflow the listener's receive queue, and a real
    // client retries rather than giving up.
    let mut attempt = 0;
    let (first, tid) = loop {
        sock.send_to(&rrq(file, opts), server).await.unwrap();
        if let Some(got) = recv_from(&sock, &mut buf, wait).await {
            break got;
        }
        attempt += 1;
        if attempt == 5 {
            return Err(FetchError::Timeout);
        }
    };
    assert_eq!(tid.ip(), server.ip(), "reply from another address");
    assert_ne!(
        tid.port(),
        server.port(),
        "reply must come from a transfer port, not the listener"
    );
    sock.connect(tid).await.unwrap();

    let mut blksize = 512usize;
    let mut window = 1u64;
    let mut oack = None;
    let mut pending = None;
    match first {
        Packet::Oack { options } => {
            for (k, v) in &options {
                match k.as_str() {
                    "blksize" => blksize = v.parse().unwrap(),
                    "windowsize" => window = v.parse().unwrap(),
                    _ => {}
                }
                assert!(
                    opts.iter().any(|(o, _)| o == k),
                    "server negotiated {k}, which was not asked for"
                );
            }
            oack = Some(options);
            sock.send(&Packet::Ack { block: 0 }.encode()).await.unwrap();
        }
        Packet::Data { block, data } => pending = Some((block, data)),
        Packet::Error { code, message } => return Err(FetchError::Error(code, message)),
        other => panic!("unexpected first packet {other:?}"),
    }

    let mut data = Vec::new();
    let mut next: u64 = 1; // absolute number of the block we expect
    let mut in_window = 0u64;
    let mut last_ack: u16 = 0;
    let mut silent_timeouts = 0;
    loop {
        let pkt = if let Some((block, d)) = pending.take() {
            Packet::Data { block, data: d }
        } else {
            let Some((p, _)) = recv_from(&sock, &mut buf, wait).await else {
                silent_timeouts += 1;
                if silent_timeouts > 5 {
                    return Err(FetchError::Timeout);
                }
                sock.send(&Packet::Ack { block: last_ack }.encode())
                    .await
                    .unwrap();
                in_window = 0;
                continue;
            };
            silent_timeouts = 0;
            p
        };
        match pkt {
            Packet::Data { block, data: d } if block == wire_block(next) => {
                assert!(
                    d.len() <= blksize,
                    "block {next} has {} bytes > blksize {blksize}",
                    d.len()
                );
                data.extend_from_slice(&d);
                in_window += 1;
                let last = d.len() < blksize;
                if last || in_window == window {
                    last_ack = block;
                    sock.send(&Packet::Ack { block }.encode()).await.unwrap();
                    in_window = 0;
                }
                if last {
                    return Ok(Fetched {
                        data,
                        oack,
                        server_tid: tid,
                    });
                }
                next += 1;
            }
            Packet::Data { .. } => {
                // Gap or an old retransmission: report what we have.
                last_ack = wire_block(next - 1);
                sock.send(&Packet::Ack { block: last_ack }.encode())
                    .await
                    .unwrap();
                in_window = 0;
            }
            Packet::Error { code, message } => return Err(FetchError::Error(code, message)),
            other => panic!("unexpected packet {other:?}"),
        }
    }
}

fn expect_error(r: Result<Fetched, FetchError>, code: ErrorCode, what: &str) {
    match r {
        Err(FetchError::Error(c, _)) if c == code => {}
        other => panic!("{what}: expected ERROR {code}, got {other:?}"),
    }
}
