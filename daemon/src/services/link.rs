//! Layer-2 sending on the service interface: DHCP replies to clients that have
//! no address yet (unicast to chaddr or broadcast) and gratuitous ARP both need
//! whole Ethernet frames, because the kernel would ARP for an address the
//! client does not hold yet.
//!
//! Frames are built and parsed with `pnet_packet`; the sockets come from
//! `socket2` and `nix`. The interface's index and MAC come from one
//! `getifaddrs` entry, whose `sockaddr_ll` also serves as the bind and send
//! address, so no `sockaddr_ll` or `ifreq` is ever filled in by hand.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, LinkAddr, MsgFlags};
use pnet_packet::arp::{
    ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket,
};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{self, Ipv4Flags, MutableIpv4Packet};
use pnet_packet::udp::{self, MutableUdpPacket};
use pnet_packet::{MutablePacket, Packet};

use crate::model::Mac;

pub const BROADCAST: Mac = Mac([0xff; 6]);

const ETHERNET_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// An ARP body for Ethernet and IPv4 (hardware length 6, protocol length 4).
const ARP_LEN: usize = 28;

/// Receive queue asked for on the DHCP and TFTP listeners: a rack powering on
/// sends hundreds of DISCOVERs or RRQs in the same millisecond, and the
/// kernel default (`net.core.rmem_default`, about 208 KiB) holds only a few
/// hundred small datagrams before it drops them.
pub const LISTENER_RCVBUF: usize = 4 << 20;

/// Enlarges a listener's receive queue to `bytes`. As root `SO_RCVBUFFORCE`
/// passes the `net.core.rmem_max` cap; otherwise the kernel clamps
/// `SO_RCVBUF` to that cap. Returns the size the kernel granted.
pub fn grow_receive_queue(sock: &impl AsFd, bytes: usize) -> io::Result<usize> {
    // The option is a C int; nix would wrap a larger usize.
    let want = bytes.min(i32::MAX as usize);
    if socket::setsockopt(sock, sockopt::RcvBufForce, &want).is_err() {
        socket::setsockopt(sock, sockopt::RcvBuf, &want)?;
    }
    Ok(socket::getsockopt(sock, sockopt::RcvBuf)?)
}

/// An `AF_PACKET` socket bound to one interface, used for sending only.
pub struct RawLink {
    fd: OwnedFd,
    /// The interface's `sockaddr_ll`: its index picks the interface to send on.
    addr: LinkAddr,
    /// The interface's own hardware address (the Ethernet source).
    pub mac: Mac,
}

/// The link-layer address the kernel lists for `iface` (index, hardware
/// type and MAC). `ENODEV` when there is no such interface, as
/// `if_nametoindex` would say.
fn link_addr(iface: &str) -> io::Result<LinkAddr> {
    nix::ifaddrs::getifaddrs()?
        .filter(|a| a.interface_name == iface)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
        .ok_or_else(|| Errno::ENODEV.into())
}

/// A non-blocking `AF_PACKET` raw socket for `proto` (network byte order;
/// 0 = send only) and the interface's link-layer address.
fn packet_socket(iface: &str, proto: u16) -> io::Result<(OwnedFd, LinkAddr)> {
    let addr = link_addr(iface)?;
    // socket2 sets close-on-exec itself; nix has no protocol constant for ARP.
    let sock = socket2::Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::RAW.nonblocking(),
        Some(socket2::Protocol::from(i32::from(proto))),
    )?;
    Ok((sock.into(), addr))
}

impl RawLink {
    pub fn open(iface: &str) -> io::Result<RawLink> {
        // Protocol 0: this socket receives nothing, it only sends.
        let (fd, addr) = packet_socket(iface, 0)?;
        let mac = Mac(addr.addr().ok_or(Errno::EADDRNOTAVAIL)?);
        Ok(RawLink { fd, addr, mac })
    }

    /// Sends one complete Ethernet frame (the caller built the header). A raw
    /// packet socket sends the frame as it is, so the destination is the
    /// frame's own; `dst` must match it.
    pub fn send(&self, dst: Mac, frame: &[u8]) -> io::Result<()> {
        if frame.get(..6) != Some(&dst.0[..]) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame not addressed to {dst}"),
            ));
        }
        socket::sendto(self.fd.as_raw_fd(), frame, &self.addr, MsgFlags::empty())?;
        Ok(())
    }
}

/// An `AF_PACKET` socket that receives ARP frames of one interface.
pub struct ArpReceiver {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl ArpReceiver {
    pub fn open(iface: &str) -> io::Result<ArpReceiver> {
        let (fd, addr) = packet_socket(iface, EtherTypes::Arp.0.to_be())?;
        // The listed address has protocol 0, which makes bind keep the
        // socket's own (ARP) and only pick the interface (packet(7)).
        socket::bind(fd.as_raw_fd(), &addr)?;
        // SAFETY: `fd` is owned by the AsyncFd from here on and is not closed
        // or registered elsewhere while it lives (register's I/O-safety contract).
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(ArpReceiver { fd })
    }

    /// Receives one frame. cancel-safety: cancel-safe (readiness only).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| Ok(socket::recv(fd.as_raw_fd(), buf, MsgFlags::empty())?));
            match res {
                Ok(r) => return r,
                Err(_would_block) => {}
            }
        }
    }
}

/// The fields of an Ethernet ARP frame for IPv4 that the VIP duty needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Arp {
    pub is_request: bool,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

#[must_use]
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(eth.payload())?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return None;
    }
    Some(Arp {
        is_request: arp.get_operation() == ArpOperations::Request,
        sender_mac: Mac(arp.get_sender_hw_addr().octets()),
        sender_ip: arp.get_sender_proto_addr(),
        target_ip: arp.get_target_proto_addr(),
    })
}

/// An Ethernet ARP frame for IPv4 from `sender`, about `target`.
fn arp_frame(
    op: ArpOperation,
    eth_dst: Mac,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
) -> Vec<u8> {
    let mut f = vec![0; ETHERNET_LEN + ARP_LEN];
    let mut eth = MutableEthernetPacket::new(&mut f).expect("sized for Ethernet");
    eth.set_destination(eth_dst.0.into());
    eth.set_source(sender.0 .0.into());
    eth.set_ethertype(EtherTypes::Arp);
    let mut arp = MutableArpPacket::new(eth.payload_mut()).expect("sized for ARP");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(op);
    arp.set_sender_hw_addr(sender.0 .0.into());
    arp.set_sender_proto_addr(sender.1);
    arp.set_target_hw_addr(target.0 .0.into());
    arp.set_target_proto_addr(target.1);
    f
}

/// An ARP reply: `ip` is at `mac`, sent to the asker.
#[must_use]
pub fn arp_reply_frame(mac: Mac, ip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(ArpOperations::Reply, to_mac, (mac, ip), (to_mac, to_ip))
}

/// Ethernet + IPv4 + UDP around `payload`.
#[must_use]
pub fn udp_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = UDP_LEN + payload.len();
    let ip_len = IPV4_LEN + udp_len;
    let mut f = vec![0; ETHERNET_LEN + ip_len];
    let mut eth = MutableEthernetPacket::new(&mut f).expect("sized for Ethernet");
    eth.set_destination(dst_mac.0.into());
    eth.set_source(src_mac.0.into());
    eth.set_ethertype(EtherTypes::Ipv4);
    let mut ip = MutableIpv4Packet::new(eth.payload_mut()).expect("sized for IPv4");
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_dscp(0x10 >> 2); // TOS 0x10, low delay, like ISC dhcpd
    ip.set_total_length(ip_len as u16);
    ip.set_flags(Ipv4Flags::DontFragment); // id 0
    ip.set_ttl(64);
    ip.set_next_level_protocol(IpNextHeaderProtocols::Udp);
    ip.set_source(src.0);
    ip.set_destination(dst.0);
    ip.set_checksum(ipv4::checksum(&ip.to_immutable()));
    let mut u = MutableUdpPacket::new(ip.payload_mut()).expect("sized for UDP");
    u.set_source(src.1);
    u.set_destination(dst.1);
    u.set_length(udp_len as u16);
    u.set_payload(payload);
    // A UDP checksum of 0 means "none" (RFC 768), so a computed 0 goes out as 0xffff.
    let ck = udp::ipv4_checksum(&u.to_immutable(), &src.0, &dst.0);
    u.set_checksum(if ck == 0 { 0xffff } else { ck });
    f
}

/// A gratuitous ARP request announcing that `ip` is at `mac`.
#[must_use]
pub fn garp_frame(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        ArpOperations::Request,
        BROADCAST,
        (mac, ip),
        (Mac([0; 6]), ip),
    )
}

/// An ARP probe (RFC 5227 section 2.1.1): "who has `ip`?" with sender IP
/// 0.0.0.0, so no host's ARP cache learns anything from it.
#[must_use]
pub fn probe_frame(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        ArpOperations::Request,
        BROADCAST,
        (mac, Ipv4Addr::UNSPECIFIED),
        (Mac([0; 6]), ip),
    )
}

#[cfg(test)]
mod tests {
    use pnet_packet::ipv4::Ipv4Packet;
    use pnet_packet::udp::UdpPacket;

    use super::*;

    /// The RFC 1071 one's-complement sum, folded (not complemented): a
    /// header that carries a right checksum sums to 0xffff. Written out here
    /// so the tests do not trust pnet's checksum to check pnet's checksum.
    fn ones_sum(data: &[u8], initial: u32) -> u16 {
        let mut sum = initial;
        for c in data.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The UDP pseudo-header sum (addresses, protocol 17, UDP length).
    fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, udp_len: usize) -> u32 {
        [src.octets(), dst.octets()]
            .iter()
            .flat_map(|o| [o[0..2].to_vec(), o[2..4].to_vec()])
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>()
            + 17
            + udp_len as u32
    }

    #[test]
    fn receive_queue_grows_past_the_default() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = grow_receive_queue(&sock, 1).unwrap();
        let after = grow_receive_queue(&sock, LISTENER_RCVBUF).unwrap();
        assert!(after > before, "{before} -> {after}");
        // Tests run as root, so SO_RCVBUFFORCE passes rmem_max; the kernel
        // doubles the value for bookkeeping.
        assert!(after >= LISTENER_RCVBUF, "granted only {after}");
    }

    #[test]
    fn udp_frame_checksums_verify() {
        let (src, dst): (Ipv4Addr, Ipv4Addr) = ([10, 0, 0, 1].into(), [255; 4].into());
        // Odd and even payload lengths: the odd one pads the last word.
        for payload in [&b"hello"[..], &[0xa5; 300][..]] {
            let f = udp_frame(Mac([2; 6]), BROADCAST, (src, 67), (dst, 68), payload);
            assert_eq!(f.len(), 14 + 20 + 8 + payload.len());
            assert_eq!(ones_sum(&f[14..34], 0), 0xffff, "IPv4 header checksum");
            let udp_len = 8 + payload.len();
            assert_eq!(
                ones_sum(&f[34..], pseudo(src, dst, udp_len)),
                0xffff,
                "UDP checksum"
            );
            // pnet's parsers read the same frame back.
            let eth = EthernetPacket::new(&f).unwrap();
            assert_eq!(eth.get_ethertype(), EtherTypes::Ipv4);
            let ip = Ipv4Packet::new(eth.payload()).unwrap();
            assert_eq!(ipv4::checksum(&ip), ip.get_checksum());
            assert_eq!(usize::from(ip.get_total_length()), 20 + udp_len);
            assert_eq!((ip.get_source(), ip.get_destination()), (src, dst));
            let u = UdpPacket::new(ip.payload()).unwrap();
            assert_eq!(udp::ipv4_checksum(&u, &src, &dst), u.get_checksum());
            assert_eq!((u.get_source(), u.get_destination()), (67, 68));
            assert_eq!(u.payload(), payload);
        }
    }

    #[test]
    fn a_zero_udp_checksum_goes_out_as_all_ones() {
        let frame = |p: &[u8]| {
            udp_frame(
                Mac([2; 6]),
                BROADCAST,
                ([10, 0, 0, 1].into(), 67),
                ([10, 0, 0, 7].into(), 68),
                p,
            )
        };
        // With payload word 0 the checksum is !S; a payload word equal to that
        // checksum makes the sum 0xffff, whose complement is 0.
        let c0 = UdpPacket::new(&frame(&[0, 0])[34..])
            .unwrap()
            .get_checksum();
        let f = frame(&c0.to_be_bytes());
        assert_eq!(UdpPacket::new(&f[34..]).unwrap().get_checksum(), 0xffff);
        assert_eq!(
            ones_sum(
                &f[34..],
                pseudo([10, 0, 0, 1].into(), [10, 0, 0, 7].into(), 10)
            ),
            0xffff
        );
    }

    #[test]
    fn frames_are_the_bytes_clients_expect() {
        let (us, them) = (Mac([2, 0, 0, 0, 0, 9]), Mac([2, 0, 0, 0, 0, 7]));
        let (vip, asker): (Ipv4Addr, Ipv4Addr) = ([10, 0, 0, 10].into(), [10, 0, 0, 7].into());
        let arp_head = [8, 6, 0, 1, 8, 0, 6, 4]; // ARP; Ethernet, IPv4, lengths 6 and 4
        let garp = [
            &[0xff; 6][..],
            &us.0,
            &arp_head,
            &[0, 1], // request
            &us.0,
            &vip.octets(),
            &[0; 6],
            &vip.octets(),
        ]
        .concat();
        assert_eq!(garp_frame(us, vip), garp);
        let reply = [
            &them.0[..],
            &us.0,
            &arp_head,
            &[0, 2], // reply
            &us.0,
            &vip.octets(),
            &them.0,
            &asker.octets(),
        ]
        .concat();
        assert_eq!(arp_reply_frame(us, vip, them, asker), reply);
        let (src, dst) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 7]));
        let (server, client): (Ipv4Addr, Ipv4Addr) = ([10, 0, 0, 1].into(), [10, 0, 0, 7].into());
        let udp = [
            &dst.0[..],
            &src.0,
            &[8, 0],
            // IHL 5, TOS 0x10, length 33, id 0, DF, TTL 64, UDP, checksum
            &[0x45, 0x10, 0, 33, 0, 0, 0x40, 0, 64, 17, 0x26, 0xb5],
            &server.octets(),
            &client.octets(),
            &[0, 67, 0, 68, 0, 13, 0xa7, 0x73], // ports, length 13, checksum
            b"hello",
        ]
        .concat();
        assert_eq!(
            udp_frame(src, dst, (server, 67), (client, 68), b"hello"),
            udp
        );
    }

    #[test]
    fn parse_arp_reads_what_we_write() {
        let m = Mac([2, 0, 0, 0, 0, 9]);
        let vip = Ipv4Addr::new(10, 0, 0, 10);
        let g = parse_arp(&garp_frame(m, vip)).unwrap();
        assert_eq!(
            g,
            Arp {
                is_request: true,
                sender_mac: m,
                sender_ip: vip,
                target_ip: vip
            }
        );
        let asker = Mac([2, 0, 0, 0, 0, 7]);
        let r = parse_arp(&arp_reply_frame(m, vip, asker, [10, 0, 0, 7].into())).unwrap();
        assert_eq!(
            r,
            Arp {
                is_request: false,
                sender_mac: m,
                sender_ip: vip,
                target_ip: [10, 0, 0, 7].into()
            }
        );
        assert_eq!(parse_arp(&garp_frame(m, vip)[..41]), None);
        // Not ARP, or ARP for another hardware address length.
        let udp = udp_frame(m, BROADCAST, (vip, 67), ([255; 4].into(), 68), &[0; 28]);
        assert_eq!(parse_arp(&udp), None);
        let mut odd = garp_frame(m, vip);
        odd[18] = 8;
        assert_eq!(parse_arp(&odd), None);
    }

    #[test]
    fn garp_is_a_request_for_itself() {
        let f = garp_frame(Mac([2, 0, 0, 0, 0, 9]), [10, 0, 0, 10].into());
        let eth = EthernetPacket::new(&f).unwrap();
        assert!(eth.get_destination().is_broadcast());
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_operation(), ArpOperations::Request);
        assert_eq!(arp.get_sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 10));
        assert_eq!(arp.get_target_proto_addr(), Ipv4Addr::new(10, 0, 0, 10));
        assert!(arp.get_target_hw_addr().is_zero());
    }

    #[test]
    fn raw_link_refuses_a_missing_interface_and_a_misaddressed_frame() {
        let e = RawLink::open("tandem-none0").err().unwrap();
        assert_eq!(e.raw_os_error(), Some(Errno::ENODEV as i32), "{e}");
        let link = RawLink::open("lo").unwrap();
        let f = garp_frame(link.mac, [127, 0, 0, 1].into());
        let e = link.send(Mac([2; 6]), &f).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    /// The sockets for real, on `lo` (tests run as root): what `RawLink`
    /// sends, `ArpReceiver` hears, with the interface's MAC as sender.
    #[tokio::test]
    async fn arp_receiver_hears_what_raw_link_sends() {
        let rx = ArpReceiver::open("lo").unwrap();
        let link = RawLink::open("lo").unwrap();
        assert_eq!(link.mac, Mac([0; 6]), "lo's hardware address");
        // An address of this process only: other runs may send on lo too.
        let [_, _, a, b] = std::process::id().to_be_bytes();
        let ip = Ipv4Addr::new(127, 77, a, b);
        link.send(BROADCAST, &garp_frame(link.mac, ip)).unwrap();
        let mut buf = [0u8; 128];
        let heard = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let n = rx.recv(&mut buf).await.unwrap();
                match parse_arp(&buf[..n]) {
                    Some(arp) if arp.sender_ip == ip => return arp,
                    _ => {}
                }
            }
        })
        .await
        .expect("the ARP frame sent on lo");
        assert_eq!(
            heard,
            Arp {
                is_request: true,
                sender_mac: link.mac,
                sender_ip: ip,
                target_ip: ip
            }
        );
    }
}
