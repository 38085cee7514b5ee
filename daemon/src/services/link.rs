//! Layer-2 sending on the service interface: DHCP replies to clients that have
//! no address yet (unicast to chaddr or broadcast) and gratuitous ARP both need
//! frames built by hand, because the kernel would ARP for an address the
//! client does not hold yet.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::model::Mac;

pub const BROADCAST: Mac = Mac([0xff; 6]);

/// Receive queue asked for on the DHCP and TFTP listeners: a rack powering on
/// sends hundreds of DISCOVERs or RRQs in the same millisecond, and the
/// kernel default (`net.core.rmem_default`, about 208 KiB) holds only a few
/// hundred small datagrams before it drops them.
pub const LISTENER_RCVBUF: usize = 4 << 20;

/// Enlarges a listener's receive queue to `bytes`. As root `SO_RCVBUFFORCE`
/// passes the `net.core.rmem_max` cap; otherwise the kernel clamps
/// `SO_RCVBUF` to that cap. Returns the size the kernel granted.
pub fn grow_receive_queue(sock: &impl AsRawFd, bytes: usize) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |opt| {
        // SAFETY: valid fd and a pointer to a c_int of the given length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(&want).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, out pointers to a c_int and its length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_mut(&mut got).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(got).unwrap_or(0))
}

/// An `AF_PACKET` socket bound to one interface, used for sending only.
pub struct RawLink {
    fd: OwnedFd,
    ifindex: i32,
    /// The interface's own hardware address (the Ethernet source).
    pub mac: Mac,
}

/// A non-blocking `AF_PACKET` raw socket for `proto` (network byte order;
/// 0 = send only) and the interface's index.
fn packet_socket(iface: &str, proto: u16) -> io::Result<(OwnedFd, i32)> {
    let name = CString::new(iface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
    // SAFETY: plain libc call with a valid C string; result checked.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: socket(2) with constant arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, owned descriptor.
    Ok((unsafe { OwnedFd::from_raw_fd(raw) }, ifindex))
}

impl RawLink {
    pub fn open(iface: &str) -> io::Result<RawLink> {
        // Protocol 0: this socket receives nothing, it only sends.
        let (fd, ifindex) = packet_socket(iface, 0)?;
        let mac = hw_addr(&fd, iface)?;
        Ok(RawLink { fd, ifindex, mac })
    }

    /// Sends one complete Ethernet frame (the caller built the header).
    pub fn send(&self, dst: Mac, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&dst.0);
        // SAFETY: the buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn hw_addr(fd: &OwnedFd, iface: &str) -> io::Result<Mac> {
    // SAFETY: ifreq is plain old data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = libc::c_char::from_ne_bytes([s]);
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of a valid ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl succeeded, so the union holds the hardware address.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(data.iter()) {
        *d = s.to_ne_bytes()[0];
    }
    Ok(Mac(m))
}

/// An `AF_PACKET` socket that receives ARP frames of one interface.
pub struct ArpReceiver {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl ArpReceiver {
    pub fn open(iface: &str) -> io::Result<ArpReceiver> {
        let proto = (libc::ETH_P_ARP as u16).to_be();
        let (fd, ifindex) = packet_socket(iface, proto)?;
        // SAFETY: sockaddr_ll is plain old data; zeroed is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: valid fd and address of the right length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is owned by the AsyncFd from here on and is not closed
        // or registered elsewhere while it lives (register's I/O-safety contract).
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(ArpReceiver { fd })
    }

    /// Receives one frame. cancel-safety: cancel-safe (readiness only).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: buf is valid for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
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
    if frame.len() < 42 || frame[12..14] != [8, 6] || frame[14..20] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    Some(Arp {
        is_request: frame[20..22] == [0, 1],
        sender_mac: Mac::from_slice(&frame[22..28])?,
        sender_ip: Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]),
        target_ip: Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]),
    })
}

/// An ARP reply: `ip` is at `mac`, sent to the asker.
#[must_use]
pub fn arp_reply_frame(mac: Mac, ip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&to_mac.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]); // Ethernet, IPv4, reply
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&to_mac.0);
    f.extend_from_slice(&to_ip.octets());
    f
}

/// The one's-complement checksum of IPv4 headers (RFC 1071).
fn checksum(words: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for c in words.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0x10]); // IHL 5; DSCP low-delay like ISC dhcpd
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, DF
    f.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum placeholder
    f.extend_from_slice(&src.0.octets());
    f.extend_from_slice(&dst.0.octets());
    let ck = checksum(&f[ip_start..ip_start + 20], 0);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&ck.to_be_bytes());
    let udp_start = f.len();
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    // UDP checksum over the pseudo-header; 0 would mean "none", so map it to 0xffff.
    let mut pseudo = u32::from(u16::from_be_bytes([src.0.octets()[0], src.0.octets()[1]]));
    pseudo += u32::from(u16::from_be_bytes([src.0.octets()[2], src.0.octets()[3]]));
    pseudo += u32::from(u16::from_be_bytes([dst.0.octets()[0], dst.0.octets()[1]]));
    pseudo += u32::from(u16::from_be_bytes([dst.0.octets()[2], dst.0.octets()[3]]));
    pseudo += 17 + udp_len as u32;
    let mut ck = checksum(&f[udp_start..], pseudo);
    if ck == 0 {
        ck = 0xffff;
    }
    f[udp_start + 6..udp_start + 8].copy_from_slice(&ck.to_be_bytes());
    f
}

/// A gratuitous ARP request announcing that `ip` is at `mac`.
#[must_use]
pub fn garp_frame(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn ip_header_checksum_verifies() {
        let f = udp_frame(
            Mac([2; 6]),
            BROADCAST,
            ([10, 0, 0, 1].into(), 67),
            ([255; 4].into(), 68),
            b"hello",
        );
        // Summing a header that carries its checksum gives 0 after complement.
        assert_eq!(checksum(&f[14..34], 0), 0);
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
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
        assert_eq!(parse_arp(&garp_frame(m, vip)[..30]), None);
    }

    #[test]
    fn garp_is_a_request_for_itself() {
        let f = garp_frame(Mac([2, 0, 0, 0, 0, 9]), [10, 0, 0, 10].into());
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[28..32], &[10, 0, 0, 10]);
        assert_eq!(&f[38..42], &[10, 0, 0, 10]);
    }
}
