//! # Layout
//! The XDP program that keeps followers silent (DESIGN.md §2, §9: "two
//! independent guards"). One entry point, [`steer`], classifies each frame
//! into a [`Proto`], decides a [`Verdict`] from the role map, counts the pair
//! and returns the action.
//!
//! - Leader (`ROLE` = [`ROLE_LEADER`]): pass everything, except what a
//!   sender's token bucket refuses (verdict `ratelimited`): DHCP per source
//!   MAC (or per giaddr when relayed), UDP to port 69 per source MAC and IP,
//!   ARP requests for the VIP per source MAC. The buckets live in the LRU map
//!   `BUCKETS`, their limits in `CONFIG` (from node.toml `[limits]`).
//! - Follower (`ROLE` = [`ROLE_DROP`], also the value of a fresh map): drop
//!   DHCP (UDP dst 67), TFTP (UDP dst 69), ARP requests for the VIP and TCP
//!   to VIP:`http_port`; pass everything else, so Raft, the API and ssh keep
//!   working. Followers drop before any bucket: they answer nothing anyway.
//!
//! Frames are Ethernet with at most one 802.1Q/802.1ad tag. Parsing never
//! drops: a frame too short for the header the program wants next is
//! "other" and passes, so the kernel decides about it as it would without
//! XDP. `XDP_ABORTED` is reserved for map lookups failing, which cannot
//! happen with the fixed single-entry maps and would mean a broken loader.
#![no_std]
#![no_main]
#![allow(
    clippy::inline_always,
    reason = "packet pointers must stay in one function so the verifier can track their bounds"
)]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use tandem_ebpf_common::{
    counter_index, Bucket, Config, Limit, Proto, RateClass, RateKey, Verdict, BUCKET_SLOTS,
    COUNTER_SLOTS, PORT_DHCP, PORT_TFTP, ROLE_LEADER,
};

#[map(name = "ROLE")]
static ROLE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "BUCKETS")]
static BUCKETS: LruHashMap<RateKey, Bucket> = LruHashMap::with_max_entries(BUCKET_SLOTS, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;
/// Offset of giaddr in a BOOTP message (after op, htype, hlen, hops, xid,
/// secs, flags, ciaddr, yiaddr, siaddr).
const BOOTP_GIADDR: usize = 24;
const UDP_HLEN: usize = 8;
/// ARP opcode of a request.
const ARPOP_REQUEST: u16 = 1;

#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro passes the context by value"
)]
pub fn steer(ctx: XdpContext) -> u32 {
    match try_steer(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_ABORTED,
    }
}

fn try_steer(ctx: &XdpContext) -> Result<u32, ()> {
    let config = CONFIG.get(0).ok_or(())?;
    let leader = *ROLE.get(0).ok_or(())? == ROLE_LEADER;

    let frame = classify(ctx, config);
    let verdict = match frame.proto {
        Proto::Dhcp | Proto::Tftp | Proto::Http if !leader => Verdict::Drop,
        // Only requests: a reply addressed to the VIP answers the leader's own
        // ARP and is unicast to its MAC; a follower has no reason to eat it.
        Proto::ArpVip if !leader && frame.arp_request => Verdict::Drop,
        _ if !admit(&frame.key, frame.limit) => Verdict::RateLimited,
        _ => Verdict::Pass,
    };

    let slot = COUNTERS
        .get_ptr_mut(counter_index(frame.proto, verdict))
        .ok_or(())?;
    // SAFETY: the pointer comes from a successful lookup in a per-CPU array,
    // so it is valid and only this CPU writes it while this program runs.
    unsafe { *slot += 1 };

    Ok(match verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop | Verdict::RateLimited => xdp_action::XDP_DROP,
    })
}

/// Takes a token from `key`'s bucket, creating it (full, minus this packet)
/// on first sight. A failed insert passes the packet: the limits shield the
/// daemon; they are no reason to go deaf.
#[inline(always)]
fn admit(key: &RateKey, limit: Limit) -> bool {
    if limit.rate == 0 {
        return true;
    }
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(bucket) = BUCKETS.get_ptr_mut(key) {
        // SAFETY: the pointer is a live map value of this type. Other CPUs may
        // update it at the same time; see `Bucket`: the race costs accuracy
        // for one packet, never memory safety.
        return unsafe { (*bucket).take(now, limit) };
    }
    let _ = BUCKETS.insert(key, Bucket::first(now, limit), 0);
    true
}

/// What [`classify`] learns about a frame.
struct Frame {
    proto: Proto,
    /// ARP opcode 1.
    arp_request: bool,
    /// The bucket that limits this frame on the leader, and its limit
    /// (`rate` 0: none). Plain fields, not an `Option` of an enum: the
    /// verifier must see every config read at a constant offset.
    key: RateKey,
    limit: Limit,
}

impl Frame {
    #[inline(always)]
    fn other() -> Frame {
        Frame {
            proto: Proto::Other,
            arp_request: false,
            key: RateKey {
                mac: [0; 6],
                class: 0,
                _pad: 0,
                addr_be: 0,
            },
            limit: Limit::OFF,
        }
    }

    /// Limits this frame by `class`'s bucket for `mac` and `addr_be`.
    #[inline(always)]
    fn limit(&mut self, config: &Config, class: RateClass, mac: [u8; 6], addr_be: u32) {
        self.key = RateKey {
            mac,
            class: class as u8,
            _pad: 0,
            addr_be,
        };
        // Constant indices only (see `Frame::limit`'s field doc).
        self.limit = match class {
            RateClass::DhcpMac => config.limits[0],
            RateClass::DhcpRelay => config.limits[1],
            RateClass::TftpRrq => config.limits[2],
            RateClass::ArpVip => config.limits[3],
        };
    }
}

/// Classifies a frame. Never fails: anything it cannot read is
/// [`Proto::Other`].
#[inline(always)]
fn classify(ctx: &XdpContext, config: &Config) -> Frame {
    let Some(mut ethertype) = read_be16(ctx, 12) else {
        return Frame::other();
    };
    let Ok(src) = ptr_at::<[u8; 6]>(ctx, 6) else {
        return Frame::other();
    };
    // SAFETY: `ptr_at` checked that the 6 bytes lie inside the packet.
    let src_mac = unsafe { *src };
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // One tag: TCI (2 bytes), then the inner ethertype.
        let Some(inner) = read_be16(ctx, ETH_HLEN + 2) else {
            return Frame::other();
        };
        ethertype = inner;
        l3 += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_ARP => {
            let (proto, arp_request) = classify_arp(ctx, l3, config.vip_be);
            let mut frame = Frame::other();
            frame.proto = proto;
            frame.arp_request = arp_request;
            if proto == Proto::ArpVip && arp_request {
                frame.limit(config, RateClass::ArpVip, src_mac, 0);
            }
            frame
        }
        ETH_P_IPV4 => classify_ipv4(ctx, l3, config, src_mac),
        _ => Frame::other(),
    }
}

/// ARP for Ethernet/IPv4 (the only kind that carries an IPv4 VIP):
///
/// ```text
/// 0 htype(2) 2 ptype(2) 4 hlen(1) 5 plen(1) 6 oper(2)
/// 8 sha(6) 14 spa(4) 18 tha(6) 24 tpa(4)   = 28 bytes
/// ```
#[inline(always)]
fn classify_arp(ctx: &XdpContext, arp: usize, vip_be: u32) -> (Proto, bool) {
    // One bounds check for the whole body, then plain array reads: separate
    // checks per field let LLVM merge their results with a bitwise `&` on a
    // register that still holds a packet pointer, which the verifier refuses
    // ("R1 bitwise operator &= on pointer prohibited", seen 2026-12-02).
    let Ok(body) = ptr_at::<[u8; 28]>(ctx, arp) else {
        return (Proto::Other, false);
    };
    // SAFETY: `ptr_at` checked that the 28 bytes lie inside the packet.
    let body = unsafe { *body };
    let eth_ipv4 = body[0..4] == [0, 1, 0x08, 0x00] && body[4] == 6 && body[5] == 4;
    if !eth_ipv4 || vip_be == 0 {
        return (Proto::Other, false);
    }
    let request = u16::from_be_bytes([body[6], body[7]]) == ARPOP_REQUEST;
    let spa = u32::from_ne_bytes([body[14], body[15], body[16], body[17]]);
    let tpa = u32::from_ne_bytes([body[24], body[25], body[26], body[27]]);
    // Sender first: a gratuitous ARP from another host (spa == tpa == VIP)
    // is a claim on the VIP, which the daemon must see, never a question.
    if spa == vip_be {
        (Proto::ArpConflict, request)
    } else if tpa == vip_be {
        (Proto::ArpVip, request)
    } else {
        (Proto::Other, request)
    }
}

/// IPv4, with options (IHL > 5), then UDP's or TCP's destination port.
#[inline(always)]
fn classify_ipv4(ctx: &XdpContext, ip: usize, config: &Config, src_mac: [u8; 6]) -> Frame {
    let Ok(hdr) = ptr_at::<[u8; 20]>(ctx, ip) else {
        return Frame::other();
    };
    // SAFETY: `ptr_at` checked that the 20 bytes lie inside the packet.
    let hdr = unsafe { *hdr };
    let l4 = hdr[9];
    if hdr[0] >> 4 != 4 || (l4 != IPPROTO_UDP && l4 != IPPROTO_TCP) {
        return Frame::other();
    }
    // A non-first fragment carries no UDP header: its first bytes are payload,
    // so reading a "port" there would drop random traffic.
    let frag_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1FFF;
    if frag_offset != 0 {
        return Frame::other();
    }
    let ihl = usize::from(hdr[0] & 0x0F) * 4;
    if ihl < 20 {
        return Frame::other();
    }
    let src_be = u32::from_ne_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
    let dst_be = u32::from_ne_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
    let Some(dport) = read_be16(ctx, ip + ihl + 2) else {
        return Frame::other();
    };
    let mut frame = Frame::other();
    if l4 == IPPROTO_TCP {
        if config.http_port != 0 && dport == config.http_port && dst_be == config.vip_be {
            frame.proto = Proto::Http;
        }
        return frame;
    }
    match dport {
        PORT_DHCP => {
            frame.proto = Proto::Dhcp;
            // A frame too short for giaddr is still DHCP (the daemon counts it
            // malformed); it is limited as if sent from its MAC.
            let giaddr = read_ne32(ctx, ip + ihl + UDP_HLEN + BOOTP_GIADDR).unwrap_or(0);
            if giaddr == 0 {
                frame.limit(config, RateClass::DhcpMac, src_mac, 0);
            } else {
                frame.limit(config, RateClass::DhcpRelay, [0; 6], giaddr);
            }
        }
        PORT_TFTP => {
            frame.proto = Proto::Tftp;
            frame.limit(config, RateClass::TftpRrq, src_mac, src_be);
        }
        _ => {}
    }
    frame
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, offset).ok()?;
    // SAFETY: `ptr_at` checked that the 2 bytes lie inside the packet.
    Some(u16::from_be_bytes(unsafe { *p }))
}

/// Reads 4 bytes as they lie in the packet (network order kept), for
/// comparing against addresses stored in network order.
#[inline(always)]
fn read_ne32(ctx: &XdpContext, offset: usize) -> Option<u32> {
    let p = ptr_at::<[u8; 4]>(ctx, offset).ok()?;
    // SAFETY: `ptr_at` checked that the 4 bytes lie inside the packet.
    Some(u32::from_ne_bytes(unsafe { *p }))
}

/// The one bounds check every read goes through: a pointer to a `T` at
/// `offset` bytes into the packet, if all of it lies before `data_end`. `T`
/// is always a byte array, so alignment does not matter. The verifier
/// accepts the later dereference because of exactly this comparison.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that
    // could get here. The loop satisfies the `!` type.
    loop {}
}

/// The kernel reads the license from this section. No GPL-only helper is
/// used, so the project's own licence is declared.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
