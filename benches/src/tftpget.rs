//! `tandem-bench tftp-get`: many TFTP downloads at once from one process,
//! one thread, so that the client side of a TFTP bench costs less than the
//! server it measures.
//!
//! Why: 50 atftp processes fetching with `windowsize` 16 used about as much
//! CPU as tandem serving them (5.5 s against 6.3 s for 50 × 32 MiB on two
//! cores), so the machine was saturated by both sides and the wall time
//! measured the clients as much as the server. Here every transfer has its
//! own non-blocking UDP socket; one `poll(2)` waits for all of them and
//! each ready socket is drained with `recvmmsg(2)`, up to [`BATCH`]
//! datagrams per call; the payload is copied once, into a buffer written
//! to the output file every [`FLUSH`] bytes.
//!
//! The client follows RFC 1350/2347/2348/7440: it asks for `blksize` (and
//! `windowsize` if given), ACKs the OACK with ACK 0, ACKs the end of each
//! window and the final block, ACKs the last in-order block when a block
//! is missing (the server resends from there), and resends its last
//! packet after [`RETRY`] of silence, [`MAX_RETRIES`] times.
//!
//! It prints one line per transfer (`transfer J ok SECONDS BYTES` or
//! `transfer J failed: WHY`) and exits non-zero if any failed.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// Datagrams one `recvmmsg` may return.
const BATCH: usize = 32;
/// Receive buffer per datagram: above any `blksize` this client asks for.
const SLOT: usize = 9000;
/// Downloaded bytes kept in memory before they are written out.
const FLUSH: usize = 1 << 20;
/// Silence after which the last packet is sent again.
const RETRY: Duration = Duration::from_secs(1);
const MAX_RETRIES: u32 = 5;
/// Each socket's receive queue: several windows of 64 blocks.
const RCVBUF: libc::c_int = 4 << 20;

/// What to fetch, from where, how often.
#[derive(Clone, Debug)]
pub struct GetOptions {
    pub server: SocketAddrV4,
    pub file: String,
    /// Transfers at once; transfer J (1-based) writes `DIR/cJ.bin`.
    pub count: usize,
    pub blksize: u16,
    /// `None`: ask for no window (RFC 1350 lock-step).
    pub windowsize: Option<u16>,
    pub dir: PathBuf,
    /// Give up on every transfer still running after this long.
    pub timeout: Duration,
}

/// Transfer `j`'s download path.
#[must_use]
pub fn output_path(dir: &std::path::Path, j: usize) -> PathBuf {
    dir.join(format!("c{j}.bin"))
}

const OP_RRQ: u16 = 1;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// One download's state.
struct Transfer {
    sock: UdpSocket,
    /// The server's transfer port, from its first answer.
    tid: Option<SocketAddr>,
    blksize: usize,
    window: u64,
    /// Absolute number of the next block wanted (1 = first).
    next: u64,
    /// In-order blocks since the last ACK.
    in_window: u64,
    /// An ACK for the current gap was already sent: one per gap, not one
    /// per out-of-order block.
    gap_acked: bool,
    /// The packet to resend on silence (the RRQ, then the last ACK).
    last_sent: Vec<u8>,
    heard: Instant,
    retries: u32,
    started: Instant,
    pending: Vec<u8>,
    file: std::fs::File,
    bytes: u64,
    result: Option<Result<Duration, String>>,
}

fn rrq(opts: &GetOptions) -> Vec<u8> {
    let mut p = OP_RRQ.to_be_bytes().to_vec();
    let mut field = |s: &str| {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    };
    field(&opts.file);
    field("octet");
    field("blksize");
    field(&opts.blksize.to_string());
    if let Some(w) = opts.windowsize {
        field("windowsize");
        field(&w.to_string());
    }
    p
}

fn ack(block: u64) -> Vec<u8> {
    let mut p = OP_ACK.to_be_bytes().to_vec();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the wire block number rolls over"
    )]
    p.extend_from_slice(&(block as u16).to_be_bytes());
    p
}

/// The options of an OACK, as (name, value) pairs.
fn oack_options(body: &[u8]) -> Vec<(String, String)> {
    let fields: Vec<String> = body
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    fields
        .chunks(2)
        .filter(|c| c.len() == 2 && !c[0].is_empty())
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect()
}

impl Transfer {
    /// Transfer `j`'s socket (with a large receive queue) and output file.
    fn open(opts: &GetOptions, j: usize) -> Result<Transfer> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding a UDP socket")?;
        sock.set_nonblocking(true)?;
        let want: libc::c_int = RCVBUF;
        // SAFETY: setsockopt with a valid int option value.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const want).cast(),
                4,
            )
        };
        if rc != 0 {
            eprintln!(
                "could not enlarge the receive queue: {}",
                std::io::Error::last_os_error()
            );
        }
        let path = output_path(&opts.dir, j);
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let now = Instant::now();
        Ok(Transfer {
            sock,
            tid: None,
            blksize: 512,
            window: 1,
            next: 1,
            in_window: 0,
            gap_acked: false,
            last_sent: Vec::new(),
            heard: now,
            retries: 0,
            started: now,
            pending: Vec::with_capacity(FLUSH + usize::from(opts.blksize)),
            file,
            bytes: 0,
            result: None,
        })
    }

    fn send(&mut self, packet: Vec<u8>, to: SocketAddr) {
        // A lost send is like a lost datagram: the retry timer covers it.
        let _ = self.sock.send_to(&packet, to);
        self.last_sent = packet;
    }

    /// Reads every datagram queued on the socket, [`BATCH`] per call.
    fn drain(&mut self, bufs: &mut [[u8; SLOT]], got: &mut Vec<(usize, SocketAddr)>, now: Instant) {
        loop {
            match recv_batch(&self.sock, bufs, got) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Others are ICMP errors for earlier
                // sends, which the retry timer covers.
                Err(_) => break,
            }
            for (slot, &(len, from)) in got.iter().enumerate() {
                if self.result.is_none() {
                    self.on_datagram(&bufs[slot][..len.min(SLOT)], from, now);
                }
            }
            // A full batch means more may be queued.
            if got.len() < BATCH || self.result.is_some() {
                break;
            }
        }
    }

    /// After [`RETRY`] of silence, sends the last packet again, or gives up.
    fn on_tick(&mut self, now: Instant, server: SocketAddr) {
        if self.result.is_some() || now - self.heard < RETRY {
            return;
        }
        if self.retries >= MAX_RETRIES {
            self.finish(Err(format!(
                "no answer after {MAX_RETRIES} retries (at block {})",
                self.next
            )));
        } else {
            self.retries += 1;
            self.heard = now;
            let to = self.tid.unwrap_or(server);
            let last = std::mem::take(&mut self.last_sent);
            self.send(last, to);
        }
    }

    fn finish(&mut self, r: Result<Duration, String>) {
        if r.is_ok() {
            if let Err(e) = self.file.write_all(&self.pending) {
                self.result = Some(Err(format!("writing the download: {e}")));
                return;
            }
        }
        self.pending = Vec::new();
        self.result = Some(r);
    }

    /// Acts on one datagram from `from`.
    fn on_datagram(&mut self, d: &[u8], from: SocketAddr, now: Instant) {
        if d.len() < 4 {
            return;
        }
        match self.tid {
            None => self.tid = Some(from),
            Some(t) if t != from => return,
            Some(_) => {}
        }
        self.heard = now;
        self.retries = 0;
        let op = u16::from_be_bytes([d[0], d[1]]);
        match op {
            OP_OACK if self.next == 1 && self.bytes == 0 => {
                for (k, v) in oack_options(&d[2..]) {
                    match (k.as_str(), v.parse::<u64>()) {
                        ("blksize", Ok(n)) => self.blksize = usize::try_from(n).unwrap_or(512),
                        ("windowsize", Ok(n)) => self.window = n.max(1),
                        _ => {}
                    }
                }
                self.send(ack(0), from);
            }
            OP_DATA => self.on_data(u16::from_be_bytes([d[2], d[3]]), &d[4..], from, now),
            OP_ERROR => {
                let msg = String::from_utf8_lossy(&d[4..])
                    .trim_end_matches('\0')
                    .to_owned();
                let code = u16::from_be_bytes([d[2], d[3]]);
                self.finish(Err(format!("server sent ERROR {code}: {msg}")));
            }
            _ => {}
        }
    }

    fn on_data(&mut self, wire: u16, payload: &[u8], from: SocketAddr, now: Instant) {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the wire block number rolls over"
        )]
        let want = self.next as u16;
        if wire != want {
            // A gap (a block was lost) or a duplicate of an acknowledged
            // block: ACK the last in-order block, once per gap.
            if !self.gap_acked {
                self.gap_acked = true;
                self.in_window = 0;
                self.send(ack(self.next - 1), from);
            }
            return;
        }
        self.gap_acked = false;
        self.pending.extend_from_slice(payload);
        self.bytes += payload.len() as u64;
        if self.pending.len() >= FLUSH {
            if let Err(e) = self.file.write_all(&self.pending) {
                self.finish(Err(format!("writing the download: {e}")));
                return;
            }
            self.pending.clear();
        }
        let block = self.next;
        self.next += 1;
        self.in_window += 1;
        if payload.len() < self.blksize {
            self.send(ack(block), from);
            self.finish(Ok(now - self.started));
        } else if self.in_window >= self.window {
            self.in_window = 0;
            self.send(ack(block), from);
        }
    }
}

/// One `recvmmsg` into `bufs`: the length and source of each datagram.
fn recv_batch(
    sock: &UdpSocket,
    bufs: &mut [[u8; SLOT]],
    out: &mut Vec<(usize, SocketAddr)>,
) -> std::io::Result<()> {
    out.clear();
    let n = bufs.len();
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: SLOT,
        })
        .collect();
    // SAFETY: all-zero is a valid sockaddr_in and a valid mmsghdr.
    let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; n];
    let mut hdrs: Vec<libc::mmsghdr> = (0..n)
        .map(|_| {
            // SAFETY: see above.
            unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() }
        })
        .collect();
    for (i, h) in hdrs.iter_mut().enumerate() {
        h.msg_hdr.msg_iov = &raw mut iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_name = (&raw mut addrs[i]).cast();
        #[allow(clippy::cast_possible_truncation, reason = "16 bytes")]
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_hdr.msg_namelen = len;
    }
    // SAFETY: `hdrs` holds `n` headers whose iovecs and names point into
    // `bufs` and `addrs`, which outlive the call; the vlen is `n`.
    let got = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            u32::try_from(n).unwrap_or(u32::MAX),
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for i in 0..usize::try_from(got).unwrap_or(0) {
        let a = addrs[i];
        let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        let from = SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port)));
        out.push((hdrs[i].msg_len as usize, from));
    }
    Ok(())
}

/// Runs every transfer to its end; returns each one's result, in order.
pub fn run(opts: &GetOptions) -> Result<Vec<Result<(Duration, u64), String>>> {
    ensure!(opts.count > 0, "--count must be positive");
    ensure!(
        usize::from(opts.blksize) + 4 <= SLOT,
        "--blksize {} is above what this client receives ({})",
        opts.blksize,
        SLOT - 4
    );
    let request = rrq(opts);
    let server = SocketAddr::V4(opts.server);
    let mut transfers = Vec::with_capacity(opts.count);
    let start = Instant::now();
    for j in 1..=opts.count {
        let mut t = Transfer::open(opts, j)?;
        t.send(request.clone(), server);
        transfers.push(t);
    }
    let mut bufs = vec![[0u8; SLOT]; BATCH];
    let mut got = Vec::with_capacity(BATCH);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(opts.count);
    let mut live: Vec<usize> = Vec::with_capacity(opts.count);
    loop {
        fds.clear();
        live.clear();
        for (i, t) in transfers.iter().enumerate() {
            if t.result.is_none() {
                fds.push(libc::pollfd {
                    fd: t.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                live.push(i);
            }
        }
        if live.is_empty() {
            break;
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                libc::nfds_t::try_from(fds.len()).unwrap_or(0),
                100,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                bail!("poll: {e}");
            }
        }
        let now = Instant::now();
        for (k, &i) in live.iter().enumerate() {
            let t = &mut transfers[i];
            if fds[k].revents != 0 {
                t.drain(&mut bufs, &mut got, now);
            }
            t.on_tick(now, server);
            if t.result.is_none() && now - start >= opts.timeout {
                t.finish(Err(format!("still running after {:?}", opts.timeout)));
            }
        }
    }
    Ok(transfers
        .into_iter()
        .map(|t| match t.result {
            Some(Ok(d)) => Ok((d, t.bytes)),
            Some(Err(e)) => Err(e),
            None => Err("never finished".to_owned()),
        })
        .collect())
}

/// Parses the `transfer J ok SECONDS BYTES` lines of a run's output into
/// (J, seconds, bytes); lines of failed transfers are skipped.
#[must_use]
pub fn parse_report(out: &str) -> Vec<(usize, Duration, u64)> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["transfer", j, "ok", secs, bytes] => Some((
                    j.parse().ok()?,
                    Duration::from_secs_f64(secs.parse().ok()?),
                    bytes.parse().ok()?,
                )),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests_and_reads_oacks_and_reports() {
        let o = GetOptions {
            server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 69),
            file: "boot.bin".into(),
            count: 1,
            blksize: 1468,
            windowsize: Some(16),
            dir: PathBuf::from("/tmp"),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            rrq(&o),
            b"\x00\x01boot.bin\0octet\0blksize\01468\0windowsize\016\0".to_vec()
        );
        assert_eq!(ack(65_536 + 7), vec![0, 4, 0, 7]);
        assert_eq!(
            oack_options(b"blksize\01468\0WindowSize\016\0"),
            vec![
                ("blksize".to_owned(), "1468".to_owned()),
                ("windowsize".to_owned(), "16".to_owned())
            ]
        );
        let r = parse_report("transfer 2 ok 1.5 100\ntransfer 3 failed: x\n");
        assert_eq!(r, vec![(2, Duration::from_millis(1500), 100)]);
    }

    /// A real exchange on loopback against a scripted server: OACK, a
    /// window of 2 with the second block lost once, the final short block.
    #[test]
    fn fetches_through_a_lost_block() {
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = srv.local_addr().unwrap() else {
            unreachable!()
        };
        let dir = tempfile_dir();
        let opts = GetOptions {
            server: addr,
            file: "f".into(),
            count: 1,
            blksize: 8,
            windowsize: Some(2),
            dir: dir.clone(),
            timeout: Duration::from_secs(10),
        };
        let client = std::thread::spawn(move || run(&opts).unwrap());
        let mut buf = [0u8; 100];
        let (_, peer) = srv.recv_from(&mut buf).unwrap();
        let data = |b: u8, p: &[u8]| [&[0, 3, 0, b][..], p].concat();
        let recv_ack = |srv: &UdpSocket| {
            let mut b = [0u8; 10];
            let n = srv.recv(&mut b).unwrap();
            b[..n].to_vec()
        };
        srv.send_to(b"\x00\x06blksize\x008\x00windowsize\x002\x00", peer)
            .unwrap();
        assert_eq!(recv_ack(&srv), vec![0, 4, 0, 0]);
        // Block 2 is "lost": 1 then 3 arrive; the client ACKs 1.
        srv.send_to(&data(1, b"aaaaaaaa"), peer).unwrap();
        srv.send_to(&data(3, b"cc"), peer).unwrap();
        assert_eq!(recv_ack(&srv), vec![0, 4, 0, 1]);
        srv.send_to(&data(2, b"bbbbbbbb"), peer).unwrap();
        srv.send_to(&data(3, b"cc"), peer).unwrap();
        assert_eq!(recv_ack(&srv), vec![0, 4, 0, 3]);
        let results = client.join().unwrap();
        assert!(matches!(results[0], Ok((_, 18))), "{results:?}");
        let got = std::fs::read(output_path(&dir, 1)).unwrap();
        assert_eq!(got, b"aaaaaaaabbbbbbbbcc");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tftpget-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
