//! Loopback tests of the whole server: a small TFTP client written here with
//! tokio's `UdpSocket`, plus tftp-hpa and atftp when they are installed.
//!
//! Every test that starts a server holds [`METRICS_LOCK`]: the metrics are
//! process-wide, and the tests assert exact deltas of them.

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

#[tokio::test]
async fn three_mb_windowed_transfer_is_byte_identical() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    let content = pattern(3 * 1024 * 1024 + 17, 1);
    srv.write("images/big.bin", &content);
    let before = snap();

    let got = fetch(
        srv.addr,
        "images/big.bin",
        &[("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")],
    )
    .await
    .unwrap();
    assert!(
        got.data == content,
        "content differs ({} vs {} bytes)",
        got.data.len(),
        content.len()
    );
    let mut oack = got.oack.unwrap();
    oack.sort();
    let want: Vec<(String, String)> = [
        ("blksize", "1468"),
        ("tsize", &content.len().to_string()),
        ("windowsize", "4"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(oack, want);
    assert_eq!(got.server_tid.ip(), srv.addr.ip());

    let after = wait_for("ok transfer counted", |s| s.ok == before.ok + 1).await;
    assert!(
        after.bytes - before.bytes >= content.len() as u64,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.active, before.active);
    assert_eq!(
        (after.timeout, after.error, after.denied),
        (before.timeout, before.error, before.denied)
    );
    srv.stop().await;
}

#[tokio::test]
async fn plain_rfc1350_and_netascii_and_edge_sizes() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    for (name, len) in [
        ("empty", 0usize),
        ("one", 1),
        ("exact", 1024),
        ("odd", 5000),
    ] {
        let content = pattern(len, len as u64);
        srv.write(name, &content);
        // No options → no OACK, lock-step 512-byte blocks.
        let got = fetch(srv.addr, name, &[]).await.unwrap();
        assert!(got.oack.is_none());
        assert_eq!(got.data, content, "{name}");
        // Unknown options only → also no OACK.
        let got = fetch(srv.addr, name, &[("multicast", ""), ("utimeout", "5000")])
            .await
            .unwrap();
        assert!(got.oack.is_none());
        assert_eq!(got.data, content, "{name}");
    }
    // netascii is served byte-for-byte.
    srv.write("script.ipxe", b"#!ipxe\nchain http://x/y\n");
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    let req = Packet::Rrq(Request {
        filename: "script.ipxe".into(),
        mode: Mode::Netascii,
        options: vec![],
    });
    sock.send_to(&req.encode(), srv.addr).await.unwrap();
    let mut buf = [0u8; 600];
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        p,
        Packet::Data {
            block: 1,
            data: b"#!ipxe\nchain http://x/y\n".to_vec()
        }
    );
    srv.stop().await;
}

#[tokio::test]
async fn block_numbers_roll_over_past_65535() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    // 70_000 blocks of 8 bytes: crosses 65535 → 0.
    let content = pattern(8 * 70_000 + 5, 7);
    srv.write("roll.bin", &content);
    let got = fetch(
        srv.addr,
        "roll.bin",
        &[("blksize", "8"), ("windowsize", "16")],
    )
    .await
    .unwrap();
    assert!(
        got.data == content,
        "content differs ({} vs {} bytes)",
        got.data.len(),
        content.len()
    );
    srv.stop().await;
}

#[tokio::test]
async fn traversal_and_symlinks_out_are_denied() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    srv.write("ok.bin", b"fine");
    std::os::unix::fs::symlink(outside.path().join("secret"), srv.root.join("link-out")).unwrap();
    std::os::unix::fs::symlink(outside.path(), srv.root.join("dir-out")).unwrap();
    std::os::unix::fs::symlink("ok.bin", srv.root.join("link-in")).unwrap();
    let before = snap();

    let attempts = [
        "../../etc/passwd".to_owned(),
        "../ok.bin".to_owned(),
        "/../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        format!("{}/secret", outside.path().display()),
        "link-out".to_owned(),
        "dir-out/secret".to_owned(),
    ];
    for a in &attempts {
        expect_error(fetch(srv.addr, a, &[]).await, ErrorCode::AccessViolation, a);
    }
    // Inside the root, via a symlink or an absolute path: served.
    assert_eq!(fetch(srv.addr, "link-in", &[]).await.unwrap().data, b"fine");
    assert_eq!(fetch(srv.addr, "/ok.bin", &[]).await.unwrap().data, b"fine");
    let abs = format!("{}/ok.bin", srv.root.display());
    assert_eq!(
        fetch(srv.addr, &abs, &[("tsize", "0")]).await.unwrap().data,
        b"fine"
    );

    let n = attempts.len() as u64;
    let after = wait_for("denials counted", |s| {
        s.denied == before.denied + n && s.ok == before.ok + 3
    })
    .await;
    assert_eq!(after.denied_escape, before.denied_escape + n);
    assert_eq!(after.active, before.active);
    srv.stop().await;
}

#[tokio::test]
async fn wrq_missing_files_and_bad_requests_get_errors() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    srv.write("sub/x", b"x");
    let before = snap();

    // WRQ: refused, counted as denied (but not as an escape).
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    let wrq = Packet::Wrq(Request {
        filename: "new.bin".into(),
        mode: Mode::Octet,
        options: vec![],
    });
    sock.send_to(&wrq.encode(), srv.addr).await.unwrap();
    let mut buf = [0u8; 600];
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .expect("no reply to WRQ");
    assert!(
        matches!(
            p,
            Packet::Error {
                code: ErrorCode::AccessViolation,
                ..
            }
        ),
        "{p:?}"
    );
    assert!(!srv.root.join("new.bin").exists());

    expect_error(
        fetch(srv.addr, "nope.bin", &[]).await,
        ErrorCode::FileNotFound,
        "missing",
    );
    expect_error(
        fetch(srv.addr, "sub", &[]).await,
        ErrorCode::FileNotFound,
        "directory",
    );

    // Junk and broken requests: the server answers requests, drops the rest, and keeps serving.
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x09junk",
        b"\x00\x04\x00\x01",
        b"\x00\x01unterminated",
    ] {
        sock.send_to(junk, srv.addr).await.unwrap();
    }
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .expect("no reply to broken RRQ");
    assert!(
        matches!(
            p,
            Packet::Error {
                code: ErrorCode::NotDefined,
                ..
            }
        ),
        "{p:?}"
    );
    let mut bad_mode = b"\x00\x01sub/x\x00binary\x00".to_vec();
    sock.send_to(&bad_mode, srv.addr).await.unwrap();
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        matches!(
            p,
            Packet::Error {
                code: ErrorCode::IllegalOperation,
                ..
            }
        ),
        "{p:?}"
    );
    bad_mode = b"\x00\x01sub/x\x00MAIL\x00".to_vec();
    sock.send_to(&bad_mode, srv.addr).await.unwrap();
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        matches!(
            p,
            Packet::Error {
                code: ErrorCode::IllegalOperation,
                ..
            }
        ),
        "{p:?}"
    );
    assert_eq!(fetch(srv.addr, "sub/x", &[]).await.unwrap().data, b"x");

    let after = wait_for("results counted", |s| {
        s.not_found == before.not_found + 2 && s.ok == before.ok + 1
    })
    .await;
    assert_eq!(after.denied, before.denied + 1);
    assert_eq!(after.denied_escape, before.denied_escape);
    assert_eq!(after.error, before.error + 3);
    srv.stop().await;
}

#[tokio::test]
async fn silent_client_makes_server_give_up() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_millis(100), 2).await;
    srv.write("f", &pattern(4000, 3));
    let before = snap();

    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    sock.send_to(&rrq("f", &[("windowsize", "2")]), srv.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 700];
    let (p, tid) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(matches!(p, Packet::Oack { .. }), "{p:?}");
    sock.send_to(&Packet::Ack { block: 0 }.encode(), tid)
        .await
        .unwrap();
    // Now never ACK: the window (blocks 1, 2) comes 1 + 2 retries times, then an ERROR.
    let mut blocks = Vec::new();
    let err = loop {
        let (p, from) = recv_from(&sock, &mut buf, Duration::from_secs(3))
            .await
            .expect("server went silent without ERROR");
        assert_eq!(from, tid);
        match p {
            Packet::Data { block, .. } => blocks.push(block),
            Packet::Error { code, .. } => break code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(blocks, vec![1, 2, 1, 2, 1, 2]);
    assert_eq!(err, ErrorCode::NotDefined);
    let after = wait_for("timeout counted", |s| s.timeout == before.timeout + 1).await;
    assert_eq!(after.active, before.active);
    assert_eq!(after.ok, before.ok);
    srv.stop().await;
}

#[tokio::test]
async fn oack_is_retransmitted_and_client_error_ends_transfer() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_millis(100), 3).await;
    srv.write("f", b"data");
    let before = snap();

    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    sock.send_to(&rrq("f", &[("tsize", "0")]), srv.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 700];
    let (p1, tid) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    let (p2, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        p1,
        Packet::Oack {
            options: vec![("tsize".into(), "4".into())]
        }
    );
    assert_eq!(p1, p2, "OACK not retransmitted on timeout");
    sock.send_to(
        &Packet::Error {
            code: ErrorCode::OptionNegotiation,
            message: "no".into(),
        }
        .encode(),
        tid,
    )
    .await
    .unwrap();
    let after = wait_for("error counted", |s| s.error == before.error + 1).await;
    assert_eq!(after.active, before.active);
    assert_eq!(after.timeout, before.timeout);
    srv.stop().await;
}

#[tokio::test]
async fn mid_window_ack_resends_from_there_and_duplicates_are_ignored() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(5), 5).await;
    let content = pattern(100 * 10, 5);
    srv.write("f", &content);

    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    sock.send_to(
        &rrq("f", &[("blksize", "100"), ("windowsize", "4")]),
        srv.addr,
    )
    .await
    .unwrap();
    let mut buf = [0u8; 700];
    let wait = Duration::from_secs(2);
    let (_, tid) = recv_from(&sock, &mut buf, wait).await.unwrap();
    sock.connect(tid).await.unwrap();
    let ack = |b: u16| Packet::Ack { block: b }.encode();
    let mut window = Vec::new();
    sock.send(&ack(0)).await.unwrap();
    for _ in 0..4 {
        let (p, _) = recv_from(&sock, &mut buf, wait).await.unwrap();
        let Packet::Data { block, .. } = p else {
            panic!("{p:?}")
        };
        window.push(block);
    }
    assert_eq!(window, vec![1, 2, 3, 4]);
    // "Lost" 3 and 4: ACK 2, then a duplicate ACK 2 and a stale ACK 1 that must not trigger anything.
    sock.send(&ack(2)).await.unwrap();
    sock.send(&ack(2)).await.unwrap();
    sock.send(&ack(1)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let (p, _) = recv_from(&sock, &mut buf, wait).await.unwrap();
        let Packet::Data { block, data } = p else {
            panic!("{p:?}")
        };
        let b = usize::from(block);
        assert_eq!(data, content[(b - 1) * 100..b * 100]);
        got.push(block);
    }
    assert_eq!(got, vec![3, 4, 5, 6]);
    // Nothing else is sent before the (5 s) timer: the duplicates were ignored.
    assert!(recv_from(&sock, &mut buf, Duration::from_millis(300))
        .await
        .is_none());
    sock.send(&ack(6)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let (p, _) = recv_from(&sock, &mut buf, wait).await.unwrap();
        let Packet::Data { block, data } = p else {
            panic!("{p:?}")
        };
        got.push((block, data.len()));
        if data.len() < 100 {
            sock.send(&ack(block)).await.unwrap();
        } else if block == 10 {
            sock.send(&ack(10)).await.unwrap();
        }
    }
    assert_eq!(got, vec![(7, 100), (8, 100), (9, 100), (10, 100), (11, 0)]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_transfers() {
    const N: u64 = 300;
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_millis(500), 5).await;
    let content = pattern(200 * 1024 + 3, 11);
    srv.write("kernel", &content);
    let before = snap();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..N {
        let addr = srv.addr;
        clients.spawn(async move {
            let opts: &[(&str, &str)] = if i % 2 == 0 {
                &[("blksize", "1468"), ("windowsize", "4")]
            } else {
                &[("blksize", "1024")]
            };
            fetch(addr, "kernel", opts).await
        });
    }
    let mut done = 0;
    while let Some(r) = clients.join_next().await {
        let got = r
            .unwrap()
            .unwrap_or_else(|e| panic!("a concurrent fetch failed: {e:?}"));
        assert!(got.data == content, "content differs");
        done += 1;
    }
    assert_eq!(done, N);
    // A resent request whose first answer was only slow starts a second
    // transfer that the client ignores; it ends by timing out, so wait for it.
    let after = wait_for("all transfers counted and ended", |s| {
        s.ok == before.ok + N && s.active == before.active
    })
    .await;
    assert_eq!(after.ok, before.ok + N);
    srv.stop().await;
}

#[tokio::test]
async fn cancel_stops_server_with_transfers_in_flight() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(30), 5).await;
    srv.write("f", &pattern(10_000, 9));
    let before = snap();
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    sock.send_to(&rrq("f", &[]), srv.addr).await.unwrap();
    let mut buf = [0u8; 700];
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(matches!(p, Packet::Data { block: 1, .. }));
    wait_for("transfer active", |s| s.active == before.active + 1).await;

    let started = std::time::Instant::now();
    srv.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        started.elapsed()
    );
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .expect("client not told about shutdown");
    assert!(matches!(p, Packet::Error { .. }), "{p:?}");
    let after = snap();
    assert_eq!(after.active, before.active);
    assert_eq!(after.error, before.error + 1);
}

#[tokio::test]
async fn serve_rejects_missing_root_and_binds_given_addr() {
    let cancel = CancellationToken::new();
    let cfg = TftpConfig::new("/nonexistent/tandem-tftp-root");
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    let r = serve_socket(sock, cfg, cancel.clone()).await;
    assert!(matches!(r, Err(TftpError::Root { .. })), "{r:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TftpConfig::new(dir.path());
    cfg.default_timeout = Duration::ZERO;
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    assert!(matches!(
        serve_socket(sock, cfg, cancel.clone()).await,
        Err(TftpError::Config(_))
    ));

    // `serve` binds itself; a taken port is a Bind error naming the address.
    let taken = UdpSocket::bind(LOCALHOST).await.unwrap();
    let addr = taken.local_addr().unwrap();
    let r = super::serve(addr, TftpConfig::new(dir.path()), cancel).await;
    assert!(
        matches!(r, Err(TftpError::Bind { addr: a, .. }) if a == addr),
        "{r:?}"
    );
}

/// Runs an external client with a deadline; `None` if it is not installed.
async fn run_client(bin: &str, args: &[String], cwd: &Path) -> Option<std::process::Output> {
    if !Path::new(bin).exists() {
        eprintln!("{bin} not installed; skipping");
        return None;
    }
    let child = tokio::process::Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(45), child)
        .await
        .unwrap_or_else(|_| panic!("{bin} did not finish within 45 s"))
        .unwrap();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_tftp_hpa_and_atftp() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    let content = pattern(3 * 1024 * 1024 + 1234, 21);
    srv.write("big.bin", &content);
    let out_dir = tempfile::tempdir().unwrap();
    let port = srv.addr.port().to_string();

    // tftp-hpa's client negotiates no options: plain 512-byte lock-step.
    let dest = out_dir.path().join("hpa.bin");
    let args: Vec<String> = [
        "-m",
        "binary",
        "127.0.0.1",
        &port,
        "-c",
        "get",
        "big.bin",
        dest.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    if let Some(out) = run_client("/usr/bin/tftp", &args, out_dir.path()).await {
        let got = std::fs::read(&dest).unwrap_or_default();
        assert!(
            got == content,
            "tftp-hpa: {} bytes of {}; output {out:?}",
            got.len(),
            content.len()
        );
    }

    let dest = out_dir.path().join("atftp.bin");
    let args: Vec<String> = [
        "--option",
        "blksize 1468",
        "--option",
        "windowsize 4",
        "-g",
        "-r",
        "big.bin",
        "-l",
        dest.to_str().unwrap(),
        "127.0.0.1",
        &port,
    ]
    .map(String::from)
    .to_vec();
    if let Some(out) = run_client("/usr/bin/atftp", &args, out_dir.path()).await {
        assert!(out.status.success(), "atftp failed: {out:?}");
        let got = std::fs::read(&dest).unwrap_or_default();
        assert!(
            got == content,
            "atftp: {} bytes of {}; output {out:?}",
            got.len(),
            content.len()
        );
    }

    // A missing file is reported to the real client as an error.
    let dest = out_dir.path().join("missing.bin");
    let args: Vec<String> = [
        "-g",
        "-r",
        "missing.bin",
        "-l",
        dest.to_str().unwrap(),
        "127.0.0.1",
        &port,
    ]
    .map(String::from)
    .to_vec();
    if let Some(out) = run_client("/usr/bin/atftp", &args, out_dir.path()).await {
        assert!(
            !out.status.success(),
            "atftp fetched a missing file: {out:?}"
        );
    }
    srv.stop().await;
}
