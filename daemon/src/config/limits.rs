//! node.toml `[limits]`: the leader's per-sender packet limits, enforced in
//! XDP before a packet costs the daemon anything (issue 8, point 4).
//!
//! ```toml
//! [limits]
//! dhcp_per_mac    = { rate = 50, burst = 100 }      # packets/s, packets
//! dhcp_per_relay  = { rate = 20000, burst = 20000 }
//! tftp_per_client = { rate = 100, burst = 256 }
//! arp_per_mac     = { rate = 10, burst = 32 }
//! ```
//!
//! Every limit is a token bucket: `burst` packets at once, then `rate` per
//! second. `rate = 0` switches one off. Why the defaults are what they are:
//!
//! - `dhcp_per_mac` 50/s, burst 100: a PXE boot runs up to three DORAs
//!   (firmware, iPXE, the OS) within a few seconds, about a dozen packets
//!   with retransmissions; after that a client sends one packet per
//!   renewal. Monitoring probes and test loops go faster (the lab's
//!   broadcast probe sends 20 DISCOVERs/s from one MAC, a `udhcpc` loop a
//!   few exchanges a second), so the limit sits well above them. A
//!   starvation tool sending from one MAC gets 50 of its thousands a second
//!   through; one that forges a new source MAC per packet is the daemon's
//!   to hold (`services::dhcp::allocator`, flood policy).
//! - `dhcp_per_relay` 20,000/s: every client behind a relay shares its
//!   giaddr, so this bucket is for the relay as a whole. It sits above what
//!   one node answers (about 6,000 exchanges, 12,000 packets, per second
//!   measured with perfdhcp), so it only sheds what the daemon could not
//!   answer anyway, and a boot storm behind a router is never cut.
//! - `tftp_per_client` 100/s, burst 256, per (MAC, IP): pxelinux probes a
//!   dozen config names in a burst, and labs and NATs put hundreds of TFTP
//!   clients behind one address (the TFTP bench runs 50 from one namespace);
//!   a single flooding host still gets 100 RRQs/s, not the whole server.
//! - `arp_per_mac` 10/s, burst 32: a host asks for the VIP's MAC once per
//!   neighbour timeout, a few times when it boots.

use serde::Deserialize;

use super::error::{field_err, ConfigError};

/// One token bucket: `burst` packets at once, refilled at `rate` per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketLimit {
    pub rate: u32,
    pub burst: u32,
}

impl PacketLimit {
    #[must_use]
    pub const fn new(rate: u32, burst: u32) -> PacketLimit {
        PacketLimit { rate, burst }
    }
}

/// The validated `[limits]` table. See the module docs for the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketLimits {
    /// DHCP from a client on the segment (giaddr 0), per source MAC.
    pub dhcp_per_mac: PacketLimit,
    /// Relayed DHCP, per giaddr.
    pub dhcp_per_relay: PacketLimit,
    /// UDP to the TFTP port, per source MAC and IP.
    pub tftp_per_client: PacketLimit,
    /// ARP requests for the VIP, per source MAC.
    pub arp_per_mac: PacketLimit,
}

impl Default for PacketLimits {
    fn default() -> Self {
        PacketLimits {
            dhcp_per_mac: PacketLimit::new(50, 100),
            dhcp_per_relay: PacketLimit::new(20_000, 20_000),
            tftp_per_client: PacketLimit::new(100, 256),
            arp_per_mac: PacketLimit::new(10, 32),
        }
    }
}

/// `[limits]` as written; every key may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireLimits {
    dhcp_per_mac: Option<PacketLimit>,
    dhcp_per_relay: Option<PacketLimit>,
    tftp_per_client: Option<PacketLimit>,
    arp_per_mac: Option<PacketLimit>,
}

impl WireLimits {
    pub(super) fn validate(self) -> Result<PacketLimits, ConfigError> {
        let d = PacketLimits::default();
        let pick = |name: &str, v: Option<PacketLimit>, def: PacketLimit| {
            let l = v.unwrap_or(def);
            if l.rate > 0 && l.burst == 0 {
                return Err(field_err(
                    format!("limits.{name}.burst"),
                    "0 would drop every packet",
                    "use a burst of at least 1, or rate = 0 to switch the limit off",
                ));
            }
            Ok(l)
        };
        Ok(PacketLimits {
            dhcp_per_mac: pick("dhcp_per_mac", self.dhcp_per_mac, d.dhcp_per_mac)?,
            dhcp_per_relay: pick("dhcp_per_relay", self.dhcp_per_relay, d.dhcp_per_relay)?,
            tftp_per_client: pick("tftp_per_client", self.tftp_per_client, d.tftp_per_client)?,
            arp_per_mac: pick("arp_per_mac", self.arp_per_mac, d.arp_per_mac)?,
        })
    }
}
