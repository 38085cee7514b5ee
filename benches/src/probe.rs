//! A DHCP probe: a relay-style client that sends one DHCPDISCOVER every
//! interval to the VIP and timestamps every reply, in-process.
//!
//! ```text
//!   client namespace, UDP socket 10.99.3.1:67
//!     sender thread ── DISCOVER xid=base+seq, giaddr 10.99.3.1 ──▶ 10.99.0.10:67
//!     receiver thread ◀── OFFER xid=base+seq (to giaddr:67) ─────── whoever holds the VIP
//! ```
//!
//! Like perfdhcp it speaks as a relay (giaddr = its own address), so every
//! server answers by unicast to 10.99.3.1:67 and no broadcast or raw socket
//! is needed. Every DISCOVER carries the same client MAC ([`PROBE_MAC`]):
//! a server re-offers the same address to a retransmitting client, so the
//! probe never drains a pool however long it runs.
//!
//! Invariant: request `seq` has xid `base + seq` (wrapping) and its send
//! time is `sent[seq]`; a reply is matched to its request by xid alone, so
//! a late or duplicated answer is attributed to the request that caused it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::nsenter;

/// The client hardware address of every probe DISCOVER (locally
/// administered, distinct from the lab's node and client MACs).
pub const PROBE_MAC: [u8; 6] = [0x02, 0x99, 0xee, 0x00, 0x00, 0x01];
/// DHCP server and relay port.
const DHCP_PORT: u16 = 67;
/// The BOOTP magic cookie that starts the options.
const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// BOOTP op codes.
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// DHCP message types (option 53).
pub const DHCPDISCOVER: u8 = 1;
pub const DHCPOFFER: u8 = 2;

/// A DHCPDISCOVER as a relay at `giaddr` forwards it for `chaddr`.
#[must_use]
pub fn discover(xid: u32, giaddr: Ipv4Addr, chaddr: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = BOOTREQUEST;
    p[1] = 1; // htype: Ethernet
    p[2] = 6; // hlen
    p[3] = 1; // hops: one relay
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[24..28].copy_from_slice(&giaddr.octets());
    p[28..34].copy_from_slice(&chaddr);
    p.extend_from_slice(&COOKIE);
    p.extend_from_slice(&[53, 1, DHCPDISCOVER]);
    // Parameter request list: subnet mask, router.
    p.extend_from_slice(&[55, 2, 1, 3]);
    p.push(255);
    // Pad to the 300-byte minimum BOOTP length some servers expect.
    p.resize(300, 0);
    p
}

/// What the probe keeps of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyInfo {
    pub xid: u32,
    /// Option 53, if present.
    pub msg_type: Option<u8>,
    /// Option 54, if present.
    pub server_id: Option<Ipv4Addr>,
}

/// Parses a BOOTREPLY; `None` for anything else (too short, a request, no
/// magic cookie). Malformed options end the option walk, not the parse.
#[must_use]
pub fn parse_reply(buf: &[u8]) -> Option<ReplyInfo> {
    if buf.len() < 240 || buf[0] != BOOTREPLY || buf[236..240] != COOKIE {
        return None;
    }
    let xid = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    let mut info = ReplyInfo {
        xid,
        msg_type: None,
        server_id: None,
    };
    let mut i = 240;
    while i < buf.len() {
        let code = buf[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let Some(&len) = buf.get(i + 1) else { break };
        let Some(value) = buf.get(i + 2..i + 2 + usize::from(len)) else {
            break;
        };
        match (code, value) {
            (53, [t]) => info.msg_type = Some(*t),
            (54, &[o1, o2, o3, o4]) => info.server_id = Some(Ipv4Addr::new(o1, o2, o3, o4)),
            _ => {}
        }
        i += 2 + usize::from(len);
    }
    Some(info)
}

/// One reply as received.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// The request it answers.
    pub seq: u32,
    pub at: Instant,
    pub from: SocketAddr,
    pub info: ReplyInfo,
}

/// Everything a finished probe saw.
#[derive(Clone, Debug, Default)]
pub struct ProbeLog {
    /// Send time of request `seq` at index `seq`.
    pub sent: Vec<Instant>,
    /// Replies in arrival order.
    pub replies: Vec<Received>,
    /// The xid of request 0.
    pub base: u32,
}

impl ProbeLog {
    /// The xid of request `seq`.
    #[must_use]
    pub fn xid(&self, seq: u32) -> u32 {
        self.base.wrapping_add(seq)
    }

    /// The first reply (in arrival order) to a request sent at or after `t`.
    #[must_use]
    pub fn first_reply_to_request_after(&self, t: Instant) -> Option<Received> {
        self.replies
            .iter()
            .copied()
            .find(|r| self.sent.get(r.seq as usize).is_some_and(|&s| s >= t))
    }

    /// How many requests got at least one reply.
    #[must_use]
    pub fn answered(&self) -> usize {
        let mut seen = vec![false; self.sent.len()];
        for r in &self.replies {
            if let Some(s) = seen.get_mut(r.seq as usize) {
                *s = true;
            }
        }
        seen.into_iter().filter(|&s| s).count()
    }
}

#[derive(Default)]
struct Shared {
    log: Mutex<ProbeLog>,
}

impl Shared {
    fn log(&self) -> std::sync::MutexGuard<'_, ProbeLog> {
        // A panicking probe thread cannot leave a half-pushed Vec.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running probe. [`Probe::finish`] stops it; dropping it stops it too.
pub struct Probe {
    shared: Arc<Shared>,
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    sender: Option<JoinHandle<()>>,
    receiver: Option<JoinHandle<()>>,
}

impl Probe {
    /// Starts probing `server`:67 from `local`:67 inside `ns`, one DISCOVER
    /// every `interval`. The sender stops by itself after `max_duration`
    /// (a bound on the traffic however the caller fails), the receiver
    /// 5 s later.
    pub fn start(
        ns: &str,
        local: Ipv4Addr,
        server: Ipv4Addr,
        interval: Duration,
        max_duration: Duration,
    ) -> Result<Probe> {
        let socket = nsenter::udp_socket(ns, SocketAddrV4::new(local, DHCP_PORT))?;
        // The receiver wakes this often to see whether it should stop.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let recv_socket = socket.try_clone().context("cloning the probe socket")?;
        let base = xid_base();
        let shared = Arc::new(Shared::default());
        shared.log().base = base;
        let stop_send = Arc::new(AtomicBool::new(false));
        let stop_recv = Arc::new(AtomicBool::new(false));
        let started = Instant::now();

        let sender = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop_send));
            let dest = SocketAddrV4::new(server, DHCP_PORT);
            std::thread::Builder::new()
                .name("probe-send".into())
                .spawn(move || {
                    send_loop(
                        &socket,
                        dest,
                        local,
                        interval,
                        started + max_duration,
                        &shared,
                        &stop,
                    );
                })?
        };
        let receiver = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop_recv));
            let end = started + max_duration + Duration::from_secs(5);
            std::thread::Builder::new()
                .name("probe-recv".into())
                .spawn(move || recv_loop(&recv_socket, end, &shared, &stop))?
        };
        Ok(Probe {
            shared,
            stop_send,
            stop_recv,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// A copy of what the probe has seen so far.
    #[must_use]
    pub fn snapshot(&self) -> ProbeLog {
        self.shared.log().clone()
    }

    /// The first reply to a request sent at or after `t`, if one came.
    #[must_use]
    pub fn first_reply_after(&self, t: Instant) -> Option<Received> {
        self.shared.log().first_reply_to_request_after(t)
    }

    /// Whether each of the last `n` requests sent more than `grace` ago got
    /// a reply (false while fewer than `n` such requests exist).
    #[must_use]
    pub fn healthy(&self, n: usize, grace: Duration) -> bool {
        let log = self.shared.log();
        let Some(cutoff) = Instant::now().checked_sub(grace) else {
            return false;
        };
        let old = log.sent.iter().rposition(|&s| s <= cutoff);
        let Some(last) = old else { return false };
        if last + 1 < n {
            return false;
        }
        let first = last + 1 - n;
        let mut got = vec![false; n];
        for r in &log.replies {
            let s = r.seq as usize;
            if (first..=last).contains(&s) {
                got[s - first] = true;
            }
        }
        got.into_iter().all(|g| g)
    }

    /// Stops sending, waits `grace` for late replies, stops receiving and
    /// returns everything seen.
    #[must_use = "the log holds the figures"]
    pub fn finish(mut self, grace: Duration) -> ProbeLog {
        self.stop_send.store(true, Ordering::SeqCst);
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
        std::thread::sleep(grace);
        self.stop_recv.store(true, Ordering::SeqCst);
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
        self.snapshot()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop_send.store(true, Ordering::SeqCst);
        self.stop_recv.store(true, Ordering::SeqCst);
        for h in [self.sender.take(), self.receiver.take()]
            .into_iter()
            .flatten()
        {
            let _ = h.join();
        }
    }
}

/// A per-run xid base, so captures of different runs never share xids.
fn xid_base() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::process::id().rotate_left(16) ^ nanos
}

fn send_loop(
    socket: &UdpSocket,
    dest: SocketAddrV4,
    local: Ipv4Addr,
    interval: Duration,
    end: Instant,
    shared: &Shared,
    stop: &AtomicBool,
) {
    let mut next = Instant::now();
    let mut seq: u32 = 0;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        let base = shared.log().base;
        let packet = discover(base.wrapping_add(seq), local, PROBE_MAC);
        // The send time is recorded before the send, under the lock, so a
        // reply can never be seen before its request is.
        {
            let mut log = shared.log();
            log.sent.push(Instant::now());
        }
        // A failed send (no route while a link is down, ARP failure) is a
        // request the servers never saw: it stays unanswered, as it should.
        let _ = socket.send_to(&packet, dest);
        seq = seq.wrapping_add(1);
        next += interval;
        // Fell behind (a starved CPU): do not burst to catch up, keep the spacing.
        if next + interval < Instant::now() {
            next = Instant::now() + interval;
        }
    }
}

fn recv_loop(socket: &UdpSocket, end: Instant, shared: &Shared, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        let Some(info) = parse_reply(&buf[..n]) else {
            continue;
        };
        let mut log = shared.log();
        let seq = info.xid.wrapping_sub(log.base);
        if (seq as usize) < log.sent.len() {
            log.replies.push(Received {
                seq,
                at,
                from,
                info,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(xid: u32, extra: &[u8]) -> Vec<u8> {
        let mut p = discover(xid, Ipv4Addr::new(10, 99, 3, 1), PROBE_MAC);
        p[0] = BOOTREPLY;
        p.truncate(240);
        p.extend_from_slice(extra);
        p
    }

    #[test]
    fn discover_is_a_relayed_bootrequest() {
        let p = discover(0xdead_beef, Ipv4Addr::new(10, 99, 3, 1), PROBE_MAC);
        assert_eq!(p.len(), 300);
        assert_eq!(p[0], BOOTREQUEST);
        assert_eq!(&p[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&p[24..28], &[10, 99, 3, 1]);
        assert_eq!(&p[28..34], &PROBE_MAC);
        assert_eq!(&p[236..243], &[99, 130, 83, 99, 53, 1, DHCPDISCOVER]);
        assert!(parse_reply(&p).is_none(), "a request is not a reply");
    }

    #[test]
    fn parses_type_and_server_id_and_survives_bad_options() {
        let r = parse_reply(&offer(7, &[0, 53, 1, DHCPOFFER, 54, 4, 10, 99, 0, 10, 255])).unwrap();
        assert_eq!(
            r,
            ReplyInfo {
                xid: 7,
                msg_type: Some(DHCPOFFER),
                server_id: Some(Ipv4Addr::new(10, 99, 0, 10))
            }
        );
        // An option running past the end stops the walk but keeps the xid.
        let r = parse_reply(&offer(8, &[53, 1, DHCPOFFER, 54, 9, 1])).unwrap();
        assert_eq!((r.xid, r.msg_type, r.server_id), (8, Some(DHCPOFFER), None));
        assert!(parse_reply(&offer(9, &[])[..239]).is_none());
    }

    #[test]
    fn first_reply_after_ignores_answers_to_older_requests() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let from: SocketAddr = "10.99.0.10:67".parse().unwrap();
        let rx = |seq, ms| Received {
            seq,
            at: at(ms),
            from,
            info: ReplyInfo {
                xid: seq,
                msg_type: None,
                server_id: None,
            },
        };
        let log = ProbeLog {
            sent: vec![at(0), at(10), at(20), at(30)],
            // Request 1 (sent before the fault at 15 ms) is answered late, after request 3.
            replies: vec![rx(0, 1), rx(3, 31), rx(1, 40)],
            base: 0,
        };
        let first = log.first_reply_to_request_after(at(15)).unwrap();
        assert_eq!((first.seq, first.at), (3, at(31)));
        assert!(log.first_reply_to_request_after(at(35)).is_none());
        assert_eq!(log.answered(), 3);
    }
}
