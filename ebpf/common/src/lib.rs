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
#![no_std]

/// Name of the XDP program (the `#[xdp]` function) inside the object.
pub const PROGRAM_NAME: &str = "steer";

/// Name of the role map.
pub const MAP_ROLE: &str = "ROLE";
/// Name of the config map.
pub const MAP_CONFIG: &str = "CONFIG";
/// Name of the per-CPU counters map.
pub const MAP_COUNTERS: &str = "COUNTERS";

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
}

#[cfg(feature = "user")]
// SAFETY: `Config` is `repr(C)`, `Copy`, has no padding and every bit pattern is valid.
unsafe impl aya::Pod for Config {}

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
    /// Everything else (Raft, API, ssh, IPv6, non-first IP fragments, frames
    /// too short to classify).
    Other = 4,
}

/// Number of [`Proto`] values.
pub const PROTOS: u32 = 5;

impl Proto {
    /// Every value, in discriminant order.
    pub const ALL: [Proto; PROTOS as usize] = [
        Proto::Dhcp,
        Proto::Tftp,
        Proto::ArpVip,
        Proto::ArpConflict,
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
    /// `XDP_DROP`.
    Drop = 1,
}

/// Number of [`Verdict`] values.
pub const VERDICTS: u32 = 2;

impl Verdict {
    /// Every value, in discriminant order.
    pub const ALL: [Verdict; VERDICTS as usize] = [Verdict::Pass, Verdict::Drop];

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
    ["dhcp", "tftp", "arp_vip", "arp_conflict", "other"];

/// Metric label for each [`Verdict`], indexed by its discriminant.
pub const VERDICT_NAMES: [&str; VERDICTS as usize] = ["pass", "drop"];

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
