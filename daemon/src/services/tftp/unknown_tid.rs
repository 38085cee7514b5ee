//! The new leader's answer to transfers it does not know (issue 7, point 5).
//!
//! A TFTP transfer lives on an ephemeral port of the VIP. When the leader
//! dies mid-transfer, the VIP moves, and the client's next ACK reaches the
//! new leader on a port where nothing listens. The kernel answers ICMP port
//! unreachable, which iPXE, curl and most clients ignore: they wait out
//! their own timer (iPXE: ~17 s measured) before starting again. RFC 1350
//! has the answer for a packet to an unknown transfer ID: ERROR 5. This
//! module sends it, so the client restarts at once.
//!
//! ```text
//!   client ACK ──▶ VIP:eph (new leader; no socket there)
//!        ├─▶ kernel UDP: no socket ─▶ ICMP port unreachable (ignored by clients)
//!        └─▶ raw IPPROTO_UDP socket (a copy of every UDP datagram to the host)
//!              │ cBPF in the kernel: first fragment, dst port in the ephemeral
//!              │ range, opcode ACK (4)       ── anything else never leaves the kernel
//!              ▼
//!            dst == VIP, port != 69? ── no ──▶ ignored
//!              ▼
//!            token bucket (ERRORS_PER_SEC) ── empty ──▶ counted, ignored
//!              ▼
//!            bind VIP:eph ── EADDRINUSE (a live transfer owns it) ──▶ ignored
//!              ▼ ok
//!            send ERROR 5 "unknown transfer ID" from VIP:eph, close
//! ```
//!
//! Why a raw socket and not XDP or a packet socket: the answer must leave
//! from exactly VIP:eph, which a UDP socket bound there does best (the
//! kernel routes it, fills checksums and ARP); and the bind doubles as the
//! "is this port a live transfer?" test, atomically, with no registry of
//! ports to keep in step. The raw socket sees datagrams after XDP, so a
//! follower (whose XDP passes ephemeral ports, but which holds no VIP)
//! receives none addressed to the VIP, and the leader's own transfers are
//! recognised by the failing bind.
//!
//! Who may call it: anyone on the LAN can send an ACK to any port of the
//! VIP. How fast: the cBPF filter keeps everything but ACKs to the
//! ephemeral range in the kernel, and the ERRORs leave at most
//! [`ERRORS_PER_SEC`] a second (bursts of [`ERRORS_BURST`]), so the node
//! cannot be turned into a reflector: one ERROR (about 25 bytes) per ACK at
//! most, never more bytes than were sent to it. Refused answers are counted
//! in `tandem_tftp_transfers_total{result="unknown_tid_limited"}`, answers in
//! `{result="unknown_tid"}`.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Instant;

use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tandem_ebpf_common::{Bucket, Limit};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::packet::{encode_error, ErrorCode};

const LOG_TARGET: &str = "tandem::tftp";
/// ERRORs sent per second at most, whoever asks.
pub const ERRORS_PER_SEC: u32 = 200;
/// ERRORs sent at once at most: a failover in the middle of a boot storm has
/// a few hundred transfers to end at once.
pub const ERRORS_BURST: u32 = 400;
/// The message of the ERROR 5.
pub const UNKNOWN_TID: &str = "unknown transfer ID";

/// The kernel's ephemeral port range, where transfer sockets are bound.
fn ephemeral_range() -> (u16, u16) {
    let parsed = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(str::parse::<u16>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        });
    // Linux's default when /proc is not there to ask.
    parsed.unwrap_or((32_768, 60_999))
}

/// cBPF: accept first fragments of UDP datagrams whose destination port is
/// in `lo..=hi` and whose payload starts with opcode 4 (ACK); drop the rest.
/// A raw socket's packets start at the IPv4 header.
fn filter(lo: u16, hi: u16) -> [SockFilter; 10] {
    const DROP: u8 = 9;
    [
        // 0: A = ip frag field; 1: any offset -> drop.
        SockFilter::new(0x28, 0, 0, 6),
        SockFilter::new(0x45, DROP - 2, 0, 0x1fff),
        // 2: X = IP header length.
        SockFilter::new(0xb1, 0, 0, 0),
        // 3: A = UDP destination port; 4, 5: lo <= A <= hi.
        SockFilter::new(0x48, 0, 0, 2),
        SockFilter::new(0x35, 0, DROP - 5, u32::from(lo)),
        SockFilter::new(0x25, DROP - 6, 0, u32::from(hi)),
        // 6: A = TFTP opcode (after the 8-byte UDP header); 7: ACK?
        SockFilter::new(0x48, 0, 0, 8),
        SockFilter::new(0x15, 0, DROP - 8, 4),
        // 8: accept the whole packet; 9: drop.
        SockFilter::new(0x06, 0, 0, 0xffff),
        SockFilter::new(0x06, 0, 0, 0),
    ]
}

/// An ACK addressed to `dst` from `src`, read from a raw IPv4 packet.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StrayAck {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// Parses what the raw socket read (the filter already checked most of it;
/// this is the user-space half, written for any input).
pub(super) fn parse(packet: &[u8]) -> Option<StrayAck> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if packet.first()? >> 4 != 4 || ihl < 20 || packet.get(9) != Some(&17) {
        return None;
    }
    let ip = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    let port = |at: usize| -> Option<u16> {
        let b: [u8; 2] = packet.get(at..at + 2)?.try_into().ok()?;
        Some(u16::from_be_bytes(b))
    };
    let opcode = port(ihl + 8)?;
    if opcode != 4 {
        return None;
    }
    Some(StrayAck {
        src: SocketAddrV4::new(ip(12)?, port(ihl)?),
        dst: SocketAddrV4::new(ip(16)?, port(ihl + 2)?),
    })
}

/// Answers stray ACKs to `vip`'s ephemeral ports (never `listen_port`) with
/// ERROR 5 until `cancel` fires. Returns at once, with a warning, if the raw
/// socket cannot be opened (no `CAP_NET_RAW`): the server then works as
/// before, and clients fall back on their timers.
pub async fn serve(vip: Ipv4Addr, listen_port: u16, cancel: CancellationToken) {
    let (lo, hi) = ephemeral_range();
    let sock = match open(lo, hi) {
        Ok(s) => s,
        Err(e) => {
            warn!(target: LOG_TARGET, error = %e, "no raw UDP socket: clients of a transfer lost in a failover wait for their own timeout");
            return;
        }
    };
    info!(target: LOG_TARGET, %vip, lo, hi, "answering ACKs for unknown transfers with ERROR 5");
    let clock = Instant::now();
    let mut bucket: Option<Bucket> = None;
    let limit = Limit::new(ERRORS_PER_SEC, ERRORS_BURST);
    let mut buf = [MaybeUninit::<u8>::uninit(); 1536];
    loop {
        let n = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            r = recv(&sock, &mut buf) => match r {
                Ok(n) => n,
                Err(e) => {
                    debug!(target: LOG_TARGET, error = %e, "raw UDP recv failed");
                    continue;
                }
            },
        };
        // SAFETY: `recv` initialised the first `n` bytes.
        let packet: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
        let Some(ack) = parse(packet) else { continue };
        if *ack.dst.ip() != vip || ack.dst.port() == listen_port {
            continue;
        }
        let now = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let admitted = if let Some(b) = &mut bucket {
            b.take(now, limit)
        } else {
            bucket = Some(Bucket::first(now, limit));
            true
        };
        if !admitted {
            super::server::count("unknown_tid_limited");
            continue;
        }
        match answer(&ack) {
            Ok(true) => {
                super::server::count("unknown_tid");
                info!(target: LOG_TARGET, peer = %ack.src, port = ack.dst.port(), "ACK for an unknown transfer: ERROR 5 sent");
            }
            Ok(false) => {}
            Err(e) => {
                debug!(target: LOG_TARGET, peer = %ack.src, error = %e, "ERROR 5 not sent");
            }
        }
    }
}

fn open(lo: u16, hi: u16) -> io::Result<AsyncFd<Socket>> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))?;
    s.attach_filter(&filter(lo, hi))?;
    // The socket got every UDP datagram between socket() and the filter;
    // drain those, or the first reads would skip the filter's judgement.
    // (parse() checks again anyway.)
    s.set_nonblocking(true)?;
    let mut junk = [MaybeUninit::<u8>::uninit(); 64];
    while s.recv(&mut junk).is_ok() {}
    // SAFETY: the socket is owned by the AsyncFd from here on and only
    // closed when it drops; `Socket::as_raw_fd` always returns that one fd.
    unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)
}

/// cancel-safety: a datagram is either returned or left queued.
async fn recv(sock: &AsyncFd<Socket>, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    loop {
        let mut guard = sock.readable().await?;
        match guard.try_io(|s| s.get_ref().recv(buf)) {
            Ok(r) => return r,
            Err(_would_block) => {}
        }
    }
}

/// Sends ERROR 5 from `ack.dst` to `ack.src`; `Ok(false)` when a live
/// transfer holds the port (the bind fails with `EADDRINUSE`).
fn answer(ack: &StrayAck) -> io::Result<bool> {
    let sock = match UdpSocket::bind(SocketAddr::V4(ack.dst)) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(false),
        Err(e) => return Err(e),
    };
    sock.send_to(&encode_error(ErrorCode::UnknownTid, UNKNOWN_TID), ack.src)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(opcode: u16, ihl_words: u8) -> Vec<u8> {
        let ihl = usize::from(ihl_words) * 4;
        let mut p = vec![0u8; ihl + 12];
        p[0] = 0x40 | ihl_words;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 2]);
        p[16..20].copy_from_slice(&[10, 0, 0, 10]);
        p[ihl..ihl + 2].copy_from_slice(&4000u16.to_be_bytes());
        p[ihl + 2..ihl + 4].copy_from_slice(&40_000u16.to_be_bytes());
        p[ihl + 8..ihl + 10].copy_from_slice(&opcode.to_be_bytes());
        p
    }

    #[test]
    fn parses_acks_with_and_without_ip_options() {
        let want = StrayAck {
            src: "10.0.0.2:4000".parse().unwrap(),
            dst: "10.0.0.10:40000".parse().unwrap(),
        };
        assert_eq!(parse(&packet(4, 5)), Some(want));
        let with_options = parse(&packet(4, 6)).unwrap();
        assert_eq!(with_options.dst.port(), 40_000);
    }

    #[test]
    fn refuses_anything_else() {
        assert_eq!(parse(&packet(3, 5)), None, "DATA");
        assert_eq!(parse(&packet(5, 5)), None, "ERROR: never answered");
        let mut tcp = packet(4, 5);
        tcp[9] = 6;
        assert_eq!(parse(&tcp), None);
        let mut short_ihl = packet(4, 5);
        short_ihl[0] = 0x44;
        assert_eq!(parse(&short_ihl), None);
        for n in 0..29 {
            assert_eq!(parse(&packet(4, 5)[..n]), None, "cut at {n}");
        }
        assert_eq!(parse(&[]), None);
    }

    /// Root only: a network namespace of its own (so the raw socket sees
    /// only this test's datagrams), the responder on its loopback, and a
    /// client that ACKs a port nobody holds, a port a live socket holds, and
    /// sends a DATA to a free port.
    #[test]
    fn stray_acks_get_error_5_and_live_ports_are_left_alone() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip");
            assert!(up.success());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(scenario());
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    }

    async fn recv_within(
        sock: &tokio::net::UdpSocket,
        ms: u64,
    ) -> Option<(Vec<u8>, std::net::SocketAddr)> {
        let mut buf = [0u8; 100];
        let wait = std::time::Duration::from_millis(ms);
        let (n, from) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some((buf[..n].to_vec(), from))
    }

    async fn scenario() {
        use std::time::Duration;
        use tokio::net::UdpSocket as Udp;
        let vip = Ipv4Addr::LOCALHOST;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(vip, 69, cancel.clone()));
        // The raw socket opens synchronously at the start of `serve`.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let live = Udp::bind((vip, 0)).await.unwrap();
        let gone = Udp::bind((vip, 0)).await.unwrap().local_addr().unwrap();
        let client = Udp::bind((vip, 0)).await.unwrap();
        let ack = [0, 4, 0, 7];
        client.send_to(&ack, gone).await.unwrap();
        let (reply, from) = recv_within(&client, 2000).await.expect("an ERROR 5");
        assert_eq!(from, gone, "sent from the port the ACK went to");
        let want = encode_error(ErrorCode::UnknownTid, UNKNOWN_TID);
        assert_eq!(reply, want);

        let live_addr = live.local_addr().unwrap();
        client.send_to(&ack, live_addr).await.unwrap();
        let (got, _) = recv_within(&live, 2000)
            .await
            .expect("the live socket's ACK");
        assert_eq!(got, ack);
        client.send_to(&[0, 3, 0, 1, b'x'], gone).await.unwrap();
        assert!(
            recv_within(&client, 500).await.is_none(),
            "a live port or a DATA is never answered"
        );

        cancel.cancel();
        task.await.unwrap();
    }
}
