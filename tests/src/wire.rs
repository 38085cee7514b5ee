//! What really went over the wire, for tests whose claims are about packets
//! ("every ACK sent is kept", "no two servers answer"): tcpdump captures
//! inside lab namespaces, the DHCP replies in them, and the two DHCP load
//! sources the cluster tests use.
//!
//! - [`Capture`]: `tcpdump -U -w FILE` in a namespace; the file is written
//!   packet by packet, so it can be read while the capture still runs.
//! - [`dhcp_replies`]: every BOOTREPLY of a pcap file as a [`DhcpReply`],
//!   dissected by `tests/scripts/dhcp_replies.py` (scapy).
//! - [`start_perfdhcp`]: perfdhcp as a relay from a client's static address.
//! - [`start_broadcast_probe`]: broadcast DISCOVERs that reach every node
//!   (`tests/scripts/dhcp_probe.py`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::{describe_output, lab, wait_until, Lab, LabProcess};

/// The helper scripts of the test crate.
pub const SCRIPTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
/// scapy imports only under the system python (TOOLCHAIN.md).
pub const PYTHON: &str = "/usr/bin/python3";

/// DHCP message types (RFC 2132 option 53) the tests look for.
pub const DHCPOFFER: u8 = 2;
pub const DHCPACK: u8 = 5;
pub const DHCPNAK: u8 = 6;

/// Signal numbers, fixed by the Linux ABI on every architecture; the test
/// library itself does not link libc.
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// How long tcpdump may take to open the interface, and to flush and exit.
const TCPDUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the scapy parser may take over one capture.
const PARSE_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `tcpdump` writing a pcap file. Stop it with [`Capture::stop`]
/// before reading the last packets; the [`Lab`] kills it on drop anyway.
pub struct Capture {
    process: LabProcess,
    file: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i IFACE -U -Z root -w <lab root>/NAME.pcap FILTER` in
    /// `ns` and returns once it reports that it listens, so nothing sent
    /// after this call is missed. `-Z root`: tcpdump must not drop to its own
    /// user, which could not write under the lab root. No `-p`: on a bridge,
    /// promiscuous mode is what makes the bridge pass up frames forwarded
    /// between its ports.
    pub fn start(lab: &Lab, ns: &str, iface: &str, filter: &str, name: &str) -> Result<Capture> {
        let file = lab.root().join(format!("{name}.pcap"));
        let log = lab.root().join(format!("{name}.tcpdump.log"));
        let file_s = file.to_str().context("lab paths are UTF-8")?;
        let mut args = vec!["-i", iface, "-n", "-U", "-Z", "root", "-w", file_s];
        args.extend(filter.split_whitespace());
        let process = lab.spawn_in(ns, "tcpdump", &args, &log)?;
        let listening = wait_until(TCPDUMP_TIMEOUT, || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on"))
                || !process.is_running()
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        ensure!(
            listening && process.is_running(),
            "tcpdump in {ns} did not start listening on {iface}: {text}"
        );
        Ok(Capture { process, file, log })
    }

    /// The pcap file.
    #[must_use]
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The DHCP replies captured so far (a partial last record is skipped).
    pub fn replies_so_far(&self) -> Result<Vec<DhcpReply>> {
        dhcp_replies(&self.file)
    }

    /// SIGTERMs tcpdump, waits until it has flushed and exited, and returns
    /// every DHCP reply it captured, with tcpdump's own summary line
    /// ("N packets captured ... dropped by kernel").
    pub fn stop(self) -> Result<(Vec<DhcpReply>, String)> {
        self.process.signal(SIGTERM)?;
        if self.process.wait_timeout(TCPDUMP_TIMEOUT).is_none() {
            self.process.kill_and_wait();
            bail!("tcpdump did not exit within {TCPDUMP_TIMEOUT:?} of SIGTERM");
        }
        let summary = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("captured") || l.contains("dropped"))
            .collect::<Vec<_>>()
            .join("; ");
        Ok((dhcp_replies(&self.file)?, summary))
    }
}

/// One DHCP reply (BOOTP op 2 from UDP port 67) seen on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct DhcpReply {
    /// Capture time, seconds since the epoch; captures from one interface
    /// are in this order.
    pub time: f64,
    /// Ethernet source, lower-case: the interface of the server that answered.
    pub src_mac: String,
    pub xid: u32,
    /// DHCP message type ([`DHCPOFFER`], [`DHCPACK`], [`DHCPNAK`]); 0 if none.
    pub kind: u8,
    /// The client's hardware address, lower-case.
    pub chaddr: String,
    pub yiaddr: Ipv4Addr,
}

/// Every DHCP reply in the pcap file `file`, in capture order.
pub fn dhcp_replies(file: &Path) -> Result<Vec<DhcpReply>> {
    let script = format!("{SCRIPTS_DIR}/dhcp_replies.py");
    // Reading a file needs no namespace; the script sends nothing. A plain
    // Command has no timeout, so run it through `timeout` (coreutils).
    let out = Command::new("timeout")
        .arg(PARSE_TIMEOUT.as_secs().to_string())
        .arg(PYTHON)
        .arg(&script)
        .arg(file)
        .output()
        .with_context(|| format!("running {script}"))?;
    ensure!(
        out.status.success(),
        "{script} {} failed: {}",
        file.display(),
        describe_output(&out)
    );
    parse_replies(&String::from_utf8_lossy(&out.stdout))
}

/// Parses the lines of `dhcp_replies.py`: `TIME SRC_MAC XID TYPE CHADDR YIADDR`.
pub fn parse_replies(text: &str) -> Result<Vec<DhcpReply>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            ensure!(f.len() == 6, "expected 6 fields: {line:?}");
            Ok(DhcpReply {
                time: f[0].parse().with_context(|| format!("time in {line:?}"))?,
                src_mac: f[1].to_ascii_lowercase(),
                xid: u32::from_str_radix(f[2], 16).with_context(|| format!("xid in {line:?}"))?,
                kind: f[3].parse().with_context(|| format!("type in {line:?}"))?,
                chaddr: f[4].to_ascii_lowercase(),
                yiaddr: f[5]
                    .parse()
                    .with_context(|| format!("yiaddr in {line:?}"))?,
            })
        })
        .collect()
}

/// Starts `perfdhcp -4 -l ADDR -r RATE -R CLIENTS [-p SECS] VIP` in client
/// `j`, which must hold the static address `addr` (perfdhcp is a relay: it
/// sends from `addr`:67 with giaddr = `addr`, and the server answers there).
/// With `period` it exits after that many seconds and its drop time; with
/// `None` it runs until [`stop_perfdhcp`].
pub fn start_perfdhcp(
    lab: &Lab,
    j: usize,
    addr: Ipv4Addr,
    rate: u32,
    clients: u32,
    period: Option<u64>,
    log: &Path,
) -> Result<LabProcess> {
    let mut args = vec![
        "-4".to_owned(),
        "-l".to_owned(),
        addr.to_string(),
        "-r".to_owned(),
        rate.to_string(),
        "-R".to_owned(),
        clients.to_string(),
    ];
    if let Some(secs) = period {
        args.extend(["-p".to_owned(), secs.to_string()]);
    }
    args.push(lab::VIP.to_string());
    lab.spawn_in(&lab.client_ns(j), "perfdhcp", &args, log)
}

/// SIGINTs perfdhcp (it then prints its final report) and waits for it to
/// exit, killing it if it does not within 10 s. Returns the log's text.
pub fn stop_perfdhcp(p: &LabProcess, log: &Path) -> Result<String> {
    if p.signal(SIGINT)? && p.wait_timeout(Duration::from_secs(10)).is_none() {
        p.kill_and_wait();
    }
    std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))
}

/// Starts `dhcp_probe.py` in client `j`: `count` broadcast DISCOVERs,
/// `interval` apart, each with a fresh xid. Its stdout (the number sent)
/// goes to `log`.
pub fn start_broadcast_probe(
    lab: &Lab,
    j: usize,
    count: u32,
    interval: Duration,
    log: &Path,
) -> Result<LabProcess> {
    let script = format!("{SCRIPTS_DIR}/dhcp_probe.py");
    let args = [
        script,
        lab::INTERFACE.to_owned(),
        count.to_string(),
        format!("{:.3}", interval.as_secs_f64()),
    ];
    lab.spawn_in(&lab.client_ns(j), PYTHON, &args, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reply_lines() {
        let text = "1763776000.123456 02:99:0E:00:00:01 0000abcd 5 02:99:cc:00:00:01 10.99.1.7\n\n\
                    1763776000.200000 02:99:0e:00:00:02 ffffffff 2 00:0c:01:02:03:04 10.99.16.3\n";
        let r = parse_replies(text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].src_mac, "02:99:0e:00:00:01");
        assert_eq!(r[0].xid, 0xabcd);
        assert_eq!(r[0].kind, DHCPACK);
        assert_eq!(r[0].yiaddr, Ipv4Addr::new(10, 99, 1, 7));
        assert_eq!(r[1].xid, u32::MAX);
        assert_eq!(r[1].kind, DHCPOFFER);
        assert!((r[1].time - 1_763_776_000.2).abs() < 1e-6);
        assert!(parse_replies("1.0 aa 12 5 bb\n").is_err());
        assert!(parse_replies("1.0 aa zz 5 bb 10.0.0.1\n").is_err());
    }
}
