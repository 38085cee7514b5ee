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

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

use super::link::{garp_frame, RawLink};
use crate::metrics;

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
/// kernel does not, see the module docs), and count frames from another MAC
/// that claim the VIP as sender — a second host holding it (a misconfigured
/// box, or an old leader that did not fence). Conflicts go to
/// `tandem_vip_conflicts_total`; their log line is limited to one a second.
pub async fn arp_duty(
    iface: String,
    vip: Ipv4Addr,
    cancel: CancellationToken,
) -> Result<(), VipError> {
    let link_err = |source| VipError::Link {
        iface: iface.clone(),
        source,
    };
    let rx = super::link::ArpReceiver::open(&iface).map_err(link_err)?;
    let link = RawLink::open(&iface).map_err(link_err)?;
    let ours = link.mac;
    let mut buf = [0u8; 128];
    let mut last_log: Option<std::time::Instant> = None;
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
        if arp.sender_ip == vip {
            metrics::get().vip_conflicts.inc();
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_log = Some(std::time::Instant::now());
                tracing::warn!(target: "tandem::vip", %vip, other = %arp.sender_mac, "another host claims our VIP");
            }
        } else if arp.is_request && arp.target_ip == vip {
            let reply = super::link::arp_reply_frame(ours, vip, arp.sender_mac, arp.sender_ip);
            if let Err(e) = link.send(arp.sender_mac, &reply) {
                tracing::debug!(target: "tandem::vip", error = %e, "ARP reply not sent");
            }
        }
    }
}
