//! # Layout
//! Types and constants shared by the XDP program (`ebpf/xdp`, built for
//! `bpfel-unknown-none`) and its loader (`daemon/src/steering`).
//!
//! Everything here is `#[repr(C)]` with fixed-width fields and no `usize`, so
//! the kernel and user views of a map value are the same bytes. The `user`
//! feature adds the `aya::Pod` impls the loader needs; the eBPF side builds
//! without it (and without `std`).
//!
//! Maps (names are the ELF symbols the loader looks up):
//! - [`MAP_ROLE`]: `Array<u32>`, one entry, [`ROLE_DROP`] or [`ROLE_LEADER`].
//! - [`MAP_CONFIG`]: `Array<Config>`, one entry.
//! - [`MAP_COUNTERS`]: `PerCpuArray<u64>`, [`COUNTER_SLOTS`] entries indexed by
//!   [`counter_index`].
//! - [`MAP_BUCKETS`]: `LruHashMap<RateKey, Bucket>`, [`BUCKET_SLOTS`] entries:
//!   the leader's token buckets, one per (class, source) pair. The refill
//!   arithmetic ([`Bucket::take`]) lives here, so the kernel and the unit
//!   tests run the same code.
#![cfg_attr(not(test), no_std)]

/// Name of the XDP program (the `#[xdp]` function) inside the object.
pub const PROGRAM_NAME: &str = "steer";

/// Name of the role map.
pub const MAP_ROLE: &str = "ROLE";
/// Name of the config map.
pub const MAP_CONFIG: &str = "CONFIG";
/// Name of the per-CPU counters map.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the token-bucket map.
pub const MAP_BUCKETS: &str = "BUCKETS";

/// Entries of the bucket map. An entry is 32 bytes of value plus the
/// kernel's overhead, so 16,384 cost about 1.5 MiB. When the map is full the
/// kernel evicts the least recently used bucket, so a flood of random source
/// MACs churns its own entries instead of failing the lookup; an evicted
/// sender simply starts again with a full burst.
pub const BUCKET_SLOTS: u32 = 16_384;

/// Role value for a follower: drop service traffic (DHCP, TFTP, ARP for the VIP).
/// It is also what an unwritten map entry reads as, so a freshly loaded
/// program fails closed (drops) until the daemon says it leads.
pub const ROLE_DROP: u32 = 0;
/// Role value for the leader: pass everything.
pub const ROLE_LEADER: u32 = 1;

/// The program's configuration, written once by the loader before the
/// program sees traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The service VIP in network byte order, exactly as it appears in ARP
    /// and IPv4 headers, so the program compares without swapping. 0 (unset)
    /// matches no ARP frame the program acts on, because 0.0.0.0 only ever
    /// appears as the sender of ARP probes.
    pub vip_be: u32,
    /// TCP port of the HTTP boot server on the VIP (host order); followers
    /// drop TCP to VIP:`http_port`. 0 drops nothing.
    pub http_port: u16,
    /// Keeps the layout free of implicit padding (`Pod` needs that).
    pub _pad: u16,
    /// The leader's limits, indexed by [`RateClass`].
    pub limits: [Limit; RATE_CLASSES as usize],
}

/// One token bucket's parameters: `rate` packets per second refill it, up to
/// `burst` packets. `rate == 0` means "no limit" for that class.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub rate: u32,
    pub burst: u32,
}

impl Limit {
    #[must_use]
    pub const fn new(rate: u32, burst: u32) -> Limit {
        Limit { rate, burst }
    }

    /// No limit.
    pub const OFF: Limit = Limit { rate: 0, burst: 0 };
}

/// What a bucket limits, and so which [`Limit`] applies. Part of the
/// bucket key, so one sender has one bucket per class.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateClass {
    /// DHCP from a client on the segment (giaddr 0), keyed by source MAC.
    DhcpMac = 0,
    /// Relayed DHCP (giaddr set), keyed by giaddr: all clients behind one
    /// relay share its Ethernet MAC, so they share this (larger) bucket.
    DhcpRelay = 1,
    /// UDP to port 69 (RRQs), keyed by source MAC and source IPv4 address,
    /// so clients behind a router (one MAC) each get their own bucket.
    TftpRrq = 2,
    /// ARP requests for the VIP, keyed by source MAC.
    ArpVip = 3,
}

/// Number of [`RateClass`] values.
pub const RATE_CLASSES: u32 = 4;

/// The key of one bucket: 12 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateKey {
    /// Source MAC; zero for [`RateClass::DhcpRelay`].
    pub mac: [u8; 6],
    /// A [`RateClass`] discriminant.
    pub class: u8,
    pub _pad: u8,
    /// giaddr ([`RateClass::DhcpRelay`]) or the source IPv4 address
    /// ([`RateClass::TftpRrq`]), in network order; zero otherwise.
    pub addr_be: u32,
}

/// One unit of a packet in [`Bucket::tokens`]: a thousandth, so refills at
/// low rates still add up between packets that come a few ms apart.
pub const TOKEN: u64 = 1_000;

/// Longest refill interval accounted for, in ns. It only matters for
/// overflow: `elapsed * rate` stays below 2^64 for any `u32` rate, and a
/// bucket idle this long (100 s) is full anyway for any sane burst.
const MAX_REFILL_NS: u64 = 100_000_000_000;

/// A token bucket's state. Written racily by several CPUs in the kernel
/// (the LRU map is shared, not per CPU, so that a sender's limit does not
/// grow with the core count); a lost update only ever misjudges one packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens left, in thousandths of a packet ([`TOKEN`]).
    pub tokens: u64,
    /// `bpf_ktime_get_ns` of the last refill.
    pub last_ns: u64,
}

impl Bucket {
    /// A full bucket at `now_ns`, with the first packet already taken.
    #[inline(always)]
    #[must_use]
    pub fn first(now_ns: u64, limit: Limit) -> Bucket {
        Bucket {
            tokens: (u64::from(limit.burst) * TOKEN).saturating_sub(TOKEN),
            last_ns: now_ns,
        }
    }

    /// Refills for the time since the last call, then takes one packet's
    /// token if there is one. True means "pass". A clock that goes back (it
    /// cannot: ktime is monotonic) adds nothing. Loop-free, so it costs the
    /// verifier nothing.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, limit: Limit) -> bool {
        if limit.rate == 0 {
            return true;
        }
        let elapsed = now_ns.saturating_sub(self.last_ns).min(MAX_REFILL_NS);
        // rate packets/s = rate * TOKEN per 1e9 ns = rate per 1e6 ns.
        let add = elapsed * u64::from(limit.rate) / 1_000_000;
        // Only move the clock by the time that produced whole thousandths, so
        // packets arriving faster than one per (1e6 / rate) ns still refill.
        if add > 0 {
            self.last_ns = now_ns;
        }
        let cap = u64::from(limit.burst) * TOKEN;
        self.tokens = (self.tokens + add).min(cap);
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            false
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `Config` is `repr(C)`, `Copy`, has no padding and every bit pattern is valid.
unsafe impl aya::Pod for Config {}
#[cfg(feature = "user")]
// SAFETY: `repr(C)`, `Copy`, two u64 (no padding), every bit pattern valid.
unsafe impl aya::Pod for Bucket {}
#[cfg(feature = "user")]
// SAFETY: `repr(C)`, `Copy`, 6 + 1 + 1 + 4 bytes (no padding), every bit pattern valid.
unsafe impl aya::Pod for RateKey {}

/// What kind of frame a counter counts. The discriminant is part of the
/// counter index; keep [`PROTO_NAMES`] in the same order.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// UDP to port 67 (DHCP server).
    Dhcp = 0,
    /// UDP to port 69 (TFTP).
    Tftp = 1,
    /// ARP whose target IP is the VIP.
    ArpVip = 2,
    /// ARP whose sender IP is the VIP: someone else claims it. Always passed,
    /// so the daemon can compare the MAC and count a conflict.
    ArpConflict = 3,
    /// TCP to the VIP's HTTP boot port ([`Config::http_port`]).
    Http = 4,
    /// Everything else (Raft, API, ssh, IPv6, non-first IP fragments, frames
    /// too short to classify).
    Other = 5,
}

/// Number of [`Proto`] values.
pub const PROTOS: u32 = 6;

impl Proto {
    /// Every value, in discriminant order.
    pub const ALL: [Proto; PROTOS as usize] = [
        Proto::Dhcp,
        Proto::Tftp,
        Proto::ArpVip,
        Proto::ArpConflict,
        Proto::Http,
        Proto::Other,
    ];

    /// The metric label.
    #[must_use]
    pub const fn name(self) -> &'static str {
        PROTO_NAMES[self as usize]
    }
}

/// What the program did with a frame. Keep [`VERDICT_NAMES`] in the same order.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `XDP_PASS`.
    Pass = 0,
    /// `XDP_DROP`: a follower's service traffic.
    Drop = 1,
    /// `XDP_DROP` on the leader: the sender's token bucket was empty.
    RateLimited = 2,
}

/// Number of [`Verdict`] values.
pub const VERDICTS: u32 = 3;

impl Verdict {
    /// Every value, in discriminant order.
    pub const ALL: [Verdict; VERDICTS as usize] =
        [Verdict::Pass, Verdict::Drop, Verdict::RateLimited];

    /// The metric label.
    #[must_use]
    pub const fn name(self) -> &'static str {
        VERDICT_NAMES[self as usize]
    }
}

/// Size of the counters map.
pub const COUNTER_SLOTS: u32 = PROTOS * VERDICTS;

/// Metric label for each [`Proto`], indexed by its discriminant.
pub const PROTO_NAMES: [&str; PROTOS as usize] =
    ["dhcp", "tftp", "arp_vip", "arp_conflict", "http", "other"];

/// Metric label for each [`Verdict`], indexed by its discriminant.
pub const VERDICT_NAMES: [&str; VERDICTS as usize] = ["pass", "drop", "ratelimited"];

/// Index of the (proto, verdict) counter. Always `< COUNTER_SLOTS`.
#[inline]
#[must_use]
pub const fn counter_index(proto: Proto, verdict: Verdict) -> u32 {
    proto as u32 * VERDICTS + verdict as u32
}

/// UDP destination port of a DHCP server.
pub const PORT_DHCP: u16 = 67;
/// UDP destination port of a TFTP server.
pub const PORT_TFTP: u16 = 69;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        let limit = Limit::new(4, 10);
        let t0 = 5_000 * MS;
        let mut b = Bucket::first(t0, limit);
        // The first packet made the bucket; nine more pass at once.
        let passed = (0..20).filter(|_| b.take(t0, limit)).count();
        assert_eq!(passed, 9);
        // 4/s: one token every 250 ms, not before.
        assert!(!b.take(t0 + 249 * MS, limit));
        assert!(b.take(t0 + 250 * MS, limit));
        assert!(!b.take(t0 + 251 * MS, limit));
        // Ten seconds idle refills to the burst, never beyond.
        let t1 = t0 + 10_250 * MS;
        let passed = (0..100).filter(|_| b.take(t1, limit)).count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn packets_faster_than_a_thousandth_still_refill() {
        // 1,000/s: a packet every 100 µs for 1 s is 10,000 packets; about
        // 1,000 (+ the burst) may pass, even though each gap adds < 1 token.
        let limit = Limit::new(1_000, 50);
        let mut b = Bucket::first(0, limit);
        let passed = (1..=10_000u64)
            .filter(|i| b.take(i * 100_000, limit))
            .count();
        assert!((1_000..=1_050).contains(&passed), "{passed}");
    }

    #[test]
    fn rate_zero_is_unlimited_and_huge_gaps_do_not_overflow() {
        let mut b = Bucket::default();
        assert!((0..1_000).all(|_| b.take(0, Limit::OFF)));
        let limit = Limit::new(u32::MAX, u32::MAX);
        let mut b = Bucket::first(0, limit);
        assert!(b.take(u64::MAX, limit));
        // A clock before the last refill adds nothing and does not panic.
        let limit = Limit::new(1, 1);
        let mut b = Bucket::first(10 * MS, limit);
        assert!(!b.take(MS, limit));
    }

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<RateKey>(), 12);
        assert_eq!(core::mem::size_of::<Bucket>(), 16);
        assert_eq!(
            core::mem::size_of::<Config>(),
            8 + 8 * RATE_CLASSES as usize
        );
    }

    #[test]
    fn counter_slots_cover_every_pair_once() {
        let mut seen = [false; COUNTER_SLOTS as usize];
        for p in Proto::ALL {
            for v in Verdict::ALL {
                let i = counter_index(p, v) as usize;
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
