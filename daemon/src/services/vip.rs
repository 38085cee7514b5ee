//! The floating service address. Adding it and announcing it with gratuitous
//! ARP is step 3 of becoming leader (DESIGN.md section 2); removing it is the
//! last step of stepping down. A VIP left over from an earlier run is removed
//! at start-up, so a stale VIP never survives a restart.
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
    #[error("cannot open a raw socket on {iface} for gratuitous ARP: {source}")]
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
        Vip { iface: iface.to_owned(), net }
    }

    #[must_use]
    pub fn addr(&self) -> Ipv4Addr {
        self.net.addr()
    }

    fn ip(args: &[&str]) -> Result<std::process::Output, VipError> {
        Command::new("ip").args(args).output().map_err(|source| VipError::Spawn { args: args.join(" "), source })
    }

    /// Whether the VIP is configured on the interface now.
    pub fn is_present(&self) -> Result<bool, VipError> {
        let out = Self::ip(&["-4", "-o", "addr", "show", "dev", &self.iface])?;
        if !out.status.success() {
            return Err(VipError::Ip { args: format!("addr show dev {}", self.iface), stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
        }
        let needle = format!(" {}/", self.net.addr());
        Ok(String::from_utf8_lossy(&out.stdout).contains(&needle))
    }

    /// Adds the VIP (idempotent).
    pub fn add(&self) -> Result<(), VipError> {
        if self.is_present()? {
            return Ok(());
        }
        let cidr = self.net.to_string();
        let args = ["addr", "add", cidr.as_str(), "dev", self.iface.as_str()];
        let out = Self::ip(&args)?;
        if !out.status.success() {
            return Err(VipError::Ip { args: args.join(" "), stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
        }
        metrics::get().vip_held.set(1);
        Ok(())
    }

    /// Removes the VIP (idempotent).
    pub fn remove(&self) -> Result<(), VipError> {
        if self.is_present()? {
            let cidr = self.net.to_string();
            let args = ["addr", "del", cidr.as_str(), "dev", self.iface.as_str()];
            let out = Self::ip(&args)?;
            if !out.status.success() {
                return Err(VipError::Ip { args: args.join(" "), stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
            }
        }
        metrics::get().vip_held.set(0);
        Ok(())
    }

    /// Sends one gratuitous ARP now and spawns the repeats; the repeats stop
    /// when `cancel` fires (we stepped down meanwhile).
    pub fn announce(&self, cancel: CancellationToken) -> Result<(), VipError> {
        let link = RawLink::open(&self.iface).map_err(|source| VipError::Link { iface: self.iface.clone(), source })?;
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

/// Watches ARP on the service interface while this node holds the VIP: a
/// frame from another MAC whose sender address is the VIP means a second
/// host claims it (a misconfigured box, or an old leader that did not fence).
/// Each one is counted in `tandem_vip_conflicts_total`; the log line is rate
/// limited to one per second.
pub async fn watch_conflicts(iface: String, vip: Ipv4Addr, cancel: CancellationToken) -> Result<(), VipError> {
    let link_err = |source| VipError::Link { iface: iface.clone(), source };
    let rx = super::link::ArpReceiver::open(&iface).map_err(link_err)?;
    let ours = RawLink::open(&iface).map_err(link_err)?.mac;
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
        let Some((sender_mac, sender_ip)) = super::link::arp_sender(&buf[..n]) else { continue };
        if sender_ip == vip && sender_mac != ours {
            metrics::get().vip_conflicts.inc();
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_log = Some(std::time::Instant::now());
                tracing::warn!(target: "tandem::vip", %vip, other = %sender_mac, "another host claims our VIP");
            }
        }
    }
}
