//! The floating service address. Adding it and announcing it with gratuitous
//! ARP is step 3 of becoming leader (DESIGN.md section 2); removing it is the
//! last step of stepping down. A VIP left over from an earlier run is removed
//! at start-up, so a stale VIP never survives a restart.
//!
//! Who answers ARP for the VIP is the daemon, not the kernel:
//!
//! ```text
//!   VIP/32 on `lo`            the kernel accepts and sends traffic for it
//!   arp_ignore=1 on eth1      the kernel answers ARP only for eth1's own addresses
//!   arp_announce=2 on eth1    the kernel never puts the VIP in its own ARP requests
//!   arp_duty() while serving  the daemon answers "who has VIP?" and sends gratuitous ARP
//! ```
//! So a node whose daemon died (SIGKILL, crash) stops answering ARP for the
//! VIP at once, even though its kernel still holds the address until the next
//! start removes it: only a live, serving leader ever claims the VIP.
//!
//! The address is managed with iproute2 (`ip addr`), the tool every operator
//! reads; each step is checked and its failure reported, never ignored.
//!
//! Before it adds the VIP, a new leader probes for it ([`Vip::probe`], RFC
//! 5227): "who has VIP?" with sender IP 0.0.0.0, so no cache learns from it.
//! A reply, a claim or a probe for the VIP from another MAC is a
//! [`Conflict`]: the node does not take the VIP (the transition driver backs
//! off and reports it). An old leader that stepped down removed its VIP and
//! stopped its ARP duty; a killed one still has the address on `lo`, but its
//! kernel does not answer for it (`arp_ignore=1`) and its daemon is gone, so
//! neither answers a probe. Only a live host that claims the VIP does.
//!
//! ```text
//!   probe: t=0 ms probe ─ t=15 ms probe ─ t=35 ms no answer: free
//!          any reply / claim / probe for the VIP from another MAC: Conflict
//! ```
//! RFC 5227 waits 1–2 s between probes and 2 s after them, for hosts on slow
//! or congested links; tandem's failover target is about 0.1 s, on a LAN
//! where a live host answers ARP in well under a millisecond. Two probes
//! (one lost frame does not hide a holder) 15 ms apart and a 20 ms wait
//! after the second cost 35 ms of the failover and still leave the holder
//! a margin of tens of milliseconds, under load, to answer.
//!
//! While serving, [`arp_duty`] defends the VIP: it answers "who has VIP?"
//! (probes included) and, when another MAC claims the VIP, re-announces it
//! with a gratuitous ARP (at most once a second) so the LAN's caches point
//! back at the leader. Both cases are counted in `tandem_vip_conflicts_total`,
//! logged, and sent to the transition driver for `tandem status`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

use super::link::{garp_frame, probe_frame, Arp, ArpReceiver, RawLink, BROADCAST};
use crate::metrics;
use crate::model::Mac;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("cannot run `ip {args}`: {source}")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot set {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open a raw socket on {iface} for ARP: {source}")]
    Link {
        iface: String,
        #[source]
        source: std::io::Error,
    },
}

/// When to repeat the gratuitous ARP after the first one: about 2 s in all,
/// so a switch or client that missed one still learns the new MAC.
const GARP_REPEATS: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// RFC 5227 probing, shortened for failover (module docs): how many probes,
/// how far apart, and how long to listen after the last one.
pub const PROBE_COUNT: u32 = 2;
pub const PROBE_INTERVAL: Duration = Duration::from_millis(15);
pub const PROBE_WAIT: Duration = Duration::from_millis(20);

/// How often a serving leader re-announces the VIP while another MAC claims it.
const DEFEND_INTERVAL: Duration = Duration::from_secs(1);

/// What another host did with the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// Answered "who has VIP?" with its own MAC.
    Reply,
    /// Announced the VIP as its own (a gratuitous ARP or a request from it).
    Claim,
    /// Probed for the VIP (sender 0.0.0.0): a host about to take it.
    Probe,
}

/// Another MAC that answers for, claims or probes for the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub mac: Mac,
    pub kind: ConflictKind,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            ConflictKind::Reply => "answers ARP for the VIP",
            ConflictKind::Claim => "claims the VIP",
            ConflictKind::Probe => "probes for the VIP",
        };
        write!(f, "host {} {what}", self.mac)
    }
}

/// Classifies one ARP frame seen on the service interface: `Some` when a MAC
/// other than `ours` answers for, claims or probes for `vip` (RFC 5227
/// section 2.1.1's conflict tests, plus the reply we asked for).
#[must_use]
pub fn conflict_in(arp: &Arp, ours: Mac, vip: Ipv4Addr) -> Option<Conflict> {
    if arp.sender_mac == ours {
        return None;
    }
    let kind = if arp.sender_ip == vip {
        if arp.is_request {
            ConflictKind::Claim
        } else {
            ConflictKind::Reply
        }
    } else if arp.is_request && arp.sender_ip.is_unspecified() && arp.target_ip == vip {
        ConflictKind::Probe
    } else {
        return None;
    };
    Some(Conflict {
        mac: arp.sender_mac,
        kind,
    })
}

/// Where ARP duty reports conflicts (the transition driver's status).
/// Bounded; when it is full the report is dropped (the metric still counts).
pub type ConflictTx = tokio::sync::mpsc::Sender<Conflict>;

pub struct Vip {
    iface: String,
    net: Ipv4Net,
}

impl Vip {
    #[must_use]
    pub fn new(iface: &str, net: Ipv4Net) -> Vip {
        Vip {
            iface: iface.to_owned(),
            net,
        }
    }

    #[must_use]
    pub fn addr(&self) -> Ipv4Addr {
        self.net.addr()
    }

    fn ip(args: &[&str]) -> Result<std::process::Output, VipError> {
        Command::new("ip")
            .args(args)
            .output()
            .map_err(|source| VipError::Spawn {
                args: args.join(" "),
                source,
            })
    }

    /// The device that carries the VIP (see the module docs).
    const DEV: &'static str = "lo";

    /// Makes the kernel leave ARP for the VIP to the daemon (module docs).
    /// Run once at start, on every node, leader or not.
    pub fn prepare_interface(&self) -> Result<(), VipError> {
        for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            let path = format!("/proc/sys/net/ipv4/conf/{}/{key}", self.iface);
            std::fs::write(&path, value).map_err(|source| VipError::Sysctl {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The devices where the VIP is configured now (normally none or `lo`;
    /// the service interface if an older version or an operator put it there).
    fn devices_holding(&self) -> Result<Vec<String>, VipError> {
        let out = Self::ip(&["-4", "-o", "addr", "show"])?;
        if !out.status.success() {
            return Err(VipError::Ip {
                args: "-4 -o addr show".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        let needle = format!(" {}/", self.net.addr());
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect())
    }

    /// Whether the VIP is configured on this host now.
    pub fn is_present(&self) -> Result<bool, VipError> {
        Ok(!self.devices_holding()?.is_empty())
    }

    /// Adds the VIP (idempotent).
    pub fn add(&self) -> Result<(), VipError> {
        if self.devices_holding()?.iter().any(|d| d == Self::DEV) {
            metrics::get().vip_held.set(1);
            return Ok(());
        }
        let cidr = format!("{}/32", self.net.addr());
        let args = ["addr", "add", cidr.as_str(), "dev", Self::DEV];
        let out = Self::ip(&args)?;
        if !out.status.success() {
            return Err(VipError::Ip {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        metrics::get().vip_held.set(1);
        Ok(())
    }

    /// Removes the VIP from every device that holds it (idempotent).
    pub fn remove(&self) -> Result<(), VipError> {
        for dev in self.devices_holding()? {
            let dev = dev.trim_end_matches(':').to_owned();
            let out = Self::ip(&["-4", "-o", "addr", "show", "dev", &dev])?;
            let needle = format!(" {}/", self.net.addr());
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            for cidr in text
                .split_whitespace()
                .filter(|w| w.starts_with(needle.trim_start()))
            {
                let args = ["addr", "del", cidr, "dev", dev.as_str()];
                let out = Self::ip(&args)?;
                if !out.status.success() {
                    return Err(VipError::Ip {
                        args: args.join(" "),
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    });
                }
            }
        }
        metrics::get().vip_held.set(0);
        Ok(())
    }

    /// Probes for the VIP (module docs): [`PROBE_COUNT`] probes
    /// [`PROBE_INTERVAL`] apart, then listens [`PROBE_WAIT`]. Returns the
    /// first conflict seen, or `None` when no other host spoke for the VIP.
    /// Bounded: returns within about 35 ms whatever arrives.
    ///
    /// cancel-safety: cancel-safe (nothing is changed but frames sent).
    pub async fn probe(&self) -> Result<Option<Conflict>, VipError> {
        let link_err = |source| VipError::Link {
            iface: self.iface.clone(),
            source,
        };
        // Listen before the first probe goes out, so no answer is missed.
        let rx = ArpReceiver::open(&self.iface).map_err(link_err)?;
        let link = RawLink::open(&self.iface).map_err(link_err)?;
        let (ours, vip) = (link.mac, self.net.addr());
        let frame = probe_frame(ours, vip);
        let start = tokio::time::Instant::now();
        let deadline = start + PROBE_INTERVAL * (PROBE_COUNT - 1) + PROBE_WAIT;
        let (mut sent, mut next_probe) = (0, start);
        let mut buf = [0u8; 128];
        loop {
            let now = tokio::time::Instant::now();
            if sent < PROBE_COUNT && now >= next_probe {
                link.send(BROADCAST, &frame).map_err(link_err)?;
                sent += 1;
                next_probe += PROBE_INTERVAL;
            }
            if sent == PROBE_COUNT && now >= deadline {
                return Ok(None);
            }
            let wake = if sent < PROBE_COUNT {
                next_probe
            } else {
                deadline
            };
            // cancel-safety: recv is cancel-safe (AsyncFd readiness).
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                r = rx.recv(&mut buf) => match r {
                    Ok(n) => {
                        let seen = super::link::parse_arp(&buf[..n])
                            .and_then(|arp| conflict_in(&arp, ours, vip));
                        if seen.is_some() {
                            return Ok(seen);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(target: "tandem::vip", error = %e, "ARP receive failed while probing");
                        // Bounded by the deadline; do not spin on a broken socket.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
            }
        }
    }

    /// Sends one gratuitous ARP now and spawns the repeats; the repeats stop
    /// when `cancel` fires (we stepped down meanwhile).
    pub fn announce(&self, cancel: CancellationToken) -> Result<(), VipError> {
        let link = RawLink::open(&self.iface).map_err(|source| VipError::Link {
            iface: self.iface.clone(),
            source,
        })?;
        let frame = garp_frame(link.mac, self.net.addr());
        send_garp(&link, &frame);
        tokio::spawn(async move {
            let mut last = Duration::ZERO;
            for at in GARP_REPEATS {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(at.saturating_sub(last)) => {}
                }
                last = at;
                send_garp(&link, &frame);
            }
        });
        Ok(())
    }
}

fn send_garp(link: &RawLink, frame: &[u8]) {
    match link.send(super::link::BROADCAST, frame) {
        Ok(()) => {
            metrics::get().vip_garp_sent.inc();
        }
        Err(e) => tracing::warn!(target: "tandem::vip", error = %e, "gratuitous ARP not sent"),
    }
}

/// ARP duty while this node serves: answer "who has VIP?" with our MAC (the
/// kernel does not, see the module docs), probes included, and watch for
/// another MAC that claims the VIP as sender — a second host holding it (a
/// misconfigured box, or an old leader that did not fence) — or probes for
/// it (a host about to take it). A claim is answered with a gratuitous ARP,
/// at most once per [`DEFEND_INTERVAL`], so caches point back at us. Every
/// conflict counts in `tandem_vip_conflicts_total` and goes to `report`; the
/// log line is limited to one a second.
///
/// Input: every ARP frame on the service interface, from anyone on the LAN,
/// at line rate; each costs one parse of 42 bytes, and what we send back is
/// at most one reply per request (XDP passes only ARP for the VIP here) and
/// one gratuitous ARP a second.
pub async fn arp_duty(
    iface: String,
    vip: Ipv4Addr,
    report: ConflictTx,
    cancel: CancellationToken,
) -> Result<(), VipError> {
    let link_err = |source| VipError::Link {
        iface: iface.clone(),
        source,
    };
    let rx = ArpReceiver::open(&iface).map_err(link_err)?;
    let link = RawLink::open(&iface).map_err(link_err)?;
    let ours = link.mac;
    let garp = garp_frame(ours, vip);
    let mut buf = [0u8; 128];
    let mut last_log: Option<std::time::Instant> = None;
    let mut last_defence: Option<std::time::Instant> = None;
    loop {
        // cancel-safety: recv is cancel-safe (AsyncFd readiness).
        let n = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            r = rx.recv(&mut buf) => match r {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(target: "tandem::vip", error = %e, "ARP receive failed");
                    continue;
                }
            },
        };
        let Some(arp) = super::link::parse_arp(&buf[..n]) else {
            continue;
        };
        if arp.sender_mac == ours {
            continue;
        }
        if let Some(c) = conflict_in(&arp, ours, vip) {
            metrics::get().vip_conflicts.inc();
            let _ = report.try_send(c);
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_log = Some(std::time::Instant::now());
                tracing::warn!(target: "tandem::vip", %vip, other = %c.mac, kind = ?c.kind, "VIP conflict: {c}");
                metrics::events::record(metrics::events::Kind::VipConflict, format!("{vip}: {c}"));
            }
            if c.kind != ConflictKind::Probe
                && last_defence.is_none_or(|t| t.elapsed() >= DEFEND_INTERVAL)
            {
                last_defence = Some(std::time::Instant::now());
                send_garp(&link, &garp);
                tracing::warn!(target: "tandem::vip", %vip, other = %c.mac, "re-announced the VIP (gratuitous ARP)");
            }
        }
        if arp.is_request && arp.target_ip == vip && arp.sender_ip != vip {
            let reply = super::link::arp_reply_frame(ours, vip, arp.sender_mac, arp.sender_ip);
            if let Err(e) = link.send(arp.sender_mac, &reply) {
                tracing::debug!(target: "tandem::vip", error = %e, "ARP reply not sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
    const OURS: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const OTHER: Mac = Mac([2, 0, 0, 0, 0, 2]);

    fn parsed(frame: &[u8]) -> Arp {
        super::super::link::parse_arp(frame).expect("an ARP frame")
    }

    #[test]
    fn probe_frames_carry_no_sender_address() {
        let p = parsed(&probe_frame(OURS, VIP));
        assert!(p.is_request);
        assert_eq!(p.sender_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!((p.sender_mac, p.target_ip), (OURS, VIP));
    }

    #[test]
    fn another_macs_reply_claim_or_probe_is_a_conflict() {
        use super::super::link::arp_reply_frame;
        let reply = parsed(&arp_reply_frame(OTHER, VIP, OURS, Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            conflict_in(&reply, OURS, VIP),
            Some(Conflict {
                mac: OTHER,
                kind: ConflictKind::Reply
            })
        );
        let claim = parsed(&garp_frame(OTHER, VIP));
        assert_eq!(
            conflict_in(&claim, OURS, VIP).map(|c| c.kind),
            Some(ConflictKind::Claim)
        );
        let probe = parsed(&probe_frame(OTHER, VIP));
        assert_eq!(
            conflict_in(&probe, OURS, VIP).map(|c| c.kind),
            Some(ConflictKind::Probe)
        );
    }

    #[test]
    fn our_own_frames_and_other_addresses_are_no_conflict() {
        use super::super::link::arp_reply_frame;
        for f in [garp_frame(OURS, VIP), probe_frame(OURS, VIP)] {
            assert_eq!(conflict_in(&parsed(&f), OURS, VIP), None);
        }
        let elsewhere = Ipv4Addr::new(10, 99, 0, 11);
        for f in [
            garp_frame(OTHER, elsewhere),
            probe_frame(OTHER, elsewhere),
            arp_reply_frame(OTHER, elsewhere, OURS, VIP),
        ] {
            assert_eq!(conflict_in(&parsed(&f), OURS, VIP), None, "{f:?}");
        }
        // An ordinary "who has VIP?" from a client (sender is its own address).
        let ask = Arp {
            is_request: true,
            sender_mac: OTHER,
            sender_ip: elsewhere,
            target_ip: VIP,
        };
        assert_eq!(conflict_in(&ask, OURS, VIP), None);
    }
}
