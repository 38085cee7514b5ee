//! Who answered: a tcpdump capture on the client's switch port, and a
//! reader for the classic pcap files it writes.
//!
//! Every server answers from the VIP, so the probe's UDP socket cannot tell
//! the servers apart; the Ethernet source address can. The capture runs in
//! the switch namespace on the client's veth end (`c1`), so it holds exactly
//! the frames the bridge delivered to the client, and nothing a cut-off
//! node sent into its dead port.
//!
//! A transaction (xid) answered by two different MACs is the failure
//! DESIGN.md section 9 calls the one users fear most.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use lab::LabProcess;
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::udp::UdpPacket;
use pnet_packet::Packet;

use crate::{tail, wait_for, Bench};

/// A BOOTP reply seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireReply {
    pub src_mac: [u8; 6],
    pub xid: u32,
}

/// Every BOOTREPLY (UDP source port 67, op 2) in a classic pcap file of
/// Ethernet frames (what `tcpdump -w` writes), in capture order. Frames
/// cut short by the snap length are skipped if the xid is missing.
pub fn bootp_replies(pcap: &[u8]) -> Result<Vec<WireReply>> {
    ensure!(pcap.len() >= 24, "pcap file shorter than its header");
    let magic = u32::from_le_bytes(pcap[0..4].try_into()?);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => bail!("not a pcap file (magic {magic:#x})"),
    };
    let u32_at = |b: &[u8], i: usize| -> Result<u32> {
        let a: [u8; 4] = b.get(i..i + 4).context("truncated")?.try_into()?;
        Ok(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let linktype = u32_at(pcap, 20)?;
    ensure!(
        linktype == 1,
        "pcap link type {linktype}, expected Ethernet (1)"
    );
    let mut out = Vec::new();
    let mut i = 24;
    // A capture stopped by a signal can end in a partial record: stop there.
    while i + 16 <= pcap.len() {
        let incl = u32_at(pcap, i + 8)? as usize;
        let start = i + 16;
        let Some(frame) = pcap.get(start..start + incl) else {
            break;
        };
        if let Some(r) = frame_reply(frame) {
            out.push(r);
        }
        i = start + incl;
    }
    Ok(out)
}

/// The reply in one Ethernet frame, if it is an IPv4/UDP BOOTREPLY from port 67.
fn frame_reply(f: &[u8]) -> Option<WireReply> {
    let eth = EthernetPacket::new(f)?;
    if eth.get_ethertype() != EtherTypes::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new(eth.payload())?;
    if ip.get_version() != 4
        || ip.get_next_level_protocol() != IpNextHeaderProtocols::Udp
        || ip.get_header_length() < 5
    {
        return None;
    }
    // The payloads end at the IPv4 and UDP lengths, or where the snap length cut.
    let udp = UdpPacket::new(ip.payload())?;
    if udp.get_source() != 67 {
        return None;
    }
    let bootp = udp.payload();
    if *bootp.first()? != 2 {
        return None;
    }
    let xid = u32::from_be_bytes(bootp.get(4..8)?.try_into().ok()?);
    Some(WireReply {
        src_mac: eth.get_source().octets(),
        xid,
    })
}

/// xid → every MAC that answered it.
#[must_use]
pub fn answerers(replies: &[WireReply]) -> BTreeMap<u32, BTreeSet<[u8; 6]>> {
    let mut m: BTreeMap<u32, BTreeSet<[u8; 6]>> = BTreeMap::new();
    for r in replies {
        m.entry(r.xid).or_default().insert(r.src_mac);
    }
    m
}

/// How many transactions two or more different MACs answered.
#[must_use]
pub fn dual_answered(replies: &[WireReply]) -> usize {
    answerers(replies)
        .values()
        .filter(|macs| macs.len() > 1)
        .count()
}

/// `"02:99:0e:00:00:01"` → bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {s:?}"))?;
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {s:?} has not 6 bytes"))
}

/// A running `tcpdump -w` of DHCP traffic on the client's switch port.
pub struct Capture {
    process: LabProcess,
    file: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Starts capturing on switch port `c{client}` into `<root>/<name>.pcap`
    /// and waits until tcpdump says it listens.
    pub fn start(bench: &Bench, client: usize, name: &str) -> Result<Capture> {
        let file = bench.lab.root().join(format!("{name}.pcap"));
        let log = bench.lab.root().join(format!("{name}.tcpdump.log"));
        let port = format!("c{client}");
        // -U: write each packet at once, so a stop by signal loses nothing;
        // -s 128: headers and the xid are all we read.
        let args = [
            "-i",
            &port,
            "-n",
            "-U",
            "-s",
            "128",
            "-w",
            &file.display().to_string(),
            "udp",
            "port",
            "67",
        ]
        .map(str::to_owned);
        let process = bench.spawn(&bench.lab.switch_ns(), "tcpdump", &args, &log)?;
        wait_for(Duration::from_secs(10), "tcpdump to listen", || {
            if let Some(status) = process.try_status() {
                bail!("tcpdump exited ({status}): {}", tail(&log, 10));
            }
            Ok(std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on")))
        })?;
        Ok(Capture { process, file, log })
    }

    /// Stops the capture (SIGINT, so tcpdump closes the file) and returns
    /// the replies it holds.
    pub fn finish(self) -> Result<Vec<WireReply>> {
        let _ = self.process.signal(libc::SIGINT);
        if self.process.wait_timeout(Duration::from_secs(5)).is_none() {
            self.process.kill_and_wait();
        }
        read_pcap(&self.file).with_context(|| format!("tcpdump log: {}", tail(&self.log, 5)))
    }
}

fn read_pcap(path: &Path) -> Result<Vec<WireReply>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    bootp_replies(&bytes).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/UDP frame from `src` with a BOOTP payload of `op` and `xid`.
    fn frame(src: [u8; 6], sport: u16, op: u8, xid: u32) -> Vec<u8> {
        use pnet_packet::ethernet::MutableEthernetPacket;
        use pnet_packet::ipv4::MutableIpv4Packet;
        use pnet_packet::udp::MutableUdpPacket;
        use pnet_packet::MutablePacket;

        let bootp = [&[op, 1, 6, 1][..], &xid.to_be_bytes(), &[0; 20]].concat();
        let udp_len = 8 + bootp.len();
        let mut f = vec![0; 14 + 20 + udp_len];
        let mut eth = MutableEthernetPacket::new(&mut f).unwrap();
        eth.set_destination([0x02, 0x99, 0xcc, 0, 0, 1].into());
        eth.set_source(src.into());
        eth.set_ethertype(EtherTypes::Ipv4);
        let mut ip = MutableIpv4Packet::new(eth.payload_mut()).unwrap();
        ip.set_version(4);
        ip.set_header_length(5);
        ip.set_total_length(u16::try_from(20 + udp_len).unwrap());
        ip.set_ttl(64);
        ip.set_next_level_protocol(IpNextHeaderProtocols::Udp);
        ip.set_source([10, 99, 0, 10].into());
        ip.set_destination([10, 99, 3, 1].into());
        let mut udp = MutableUdpPacket::new(ip.payload_mut()).unwrap();
        udp.set_source(sport);
        udp.set_destination(67);
        udp.set_length(u16::try_from(udp_len).unwrap());
        udp.set_payload(&bootp);
        f
    }

    fn pcap(frames: &[Vec<u8>], partial_tail: bool) -> Vec<u8> {
        // magic, version 2.4, thiszone, sigfigs, snaplen, linktype Ethernet.
        let mut p = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        p.extend_from_slice(&[2, 0, 4, 0]);
        for v in [0u32, 0, 65535, 1] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        for f in frames {
            let len = u32::try_from(f.len()).unwrap();
            for v in [1u32, 2, len, len] {
                p.extend_from_slice(&v.to_le_bytes());
            }
            p.extend_from_slice(f);
        }
        if partial_tail {
            p.extend_from_slice(&[1, 2, 3]);
        }
        p
    }

    #[test]
    fn finds_replies_and_counts_dual_answers() {
        let (a, b) = ([2, 0x99, 0x0e, 0, 0, 1], [2, 0x99, 0x0e, 0, 0, 2]);
        let frames = [
            frame(a, 67, 2, 10),
            frame(a, 67, 1, 11), // a request: ignored
            frame(a, 68, 2, 12), // not from port 67: ignored
            frame(b, 67, 2, 10), // xid 10 answered twice, by two MACs
            frame(a, 67, 2, 13),
            frame(a, 67, 2, 13), // xid 13 twice, but one MAC
            frame(b, 67, 2, 14)[..14 + 20 + 8 + 6].to_vec(), // cut before the xid ends: skipped
        ];
        let replies = bootp_replies(&pcap(&frames, true)).unwrap();
        assert_eq!(
            replies.iter().map(|r| r.xid).collect::<Vec<_>>(),
            [10, 10, 13, 13]
        );
        assert_eq!(dual_answered(&replies), 1);
        assert_eq!(answerers(&replies)[&10].len(), 2);
    }

    #[test]
    fn refuses_non_pcap_and_parses_macs() {
        assert!(bootp_replies(&[0; 30]).is_err());
        assert!(bootp_replies(&[0; 3]).is_err());
        assert_eq!(
            parse_mac("02:99:0e:00:00:0a").unwrap(),
            [2, 0x99, 0x0e, 0, 0, 10]
        );
        assert!(parse_mac("02:99").is_err());
    }
}
