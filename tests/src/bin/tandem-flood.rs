//! A DHCP flooder for the starvation test (tests/cluster/flood.rs): sends
//! prebuilt DISCOVERs or SELECTING REQUESTs with random client MACs on a
//! raw packet socket, at a fixed rate, for a fixed time, then prints one
//! line `sent=N secs=S rate=R`. scapy builds about 1,300 frames a second
//! here; prebuilt frames on an `AF_PACKET` socket go well past 10,000.
//!
//! ```text
//! tandem-flood IFACE discover|request RATE SECS random|own SERVER_ID POOL_FIRST POOL_LAST
//! ```
//!
//! - `random`: every frame has its own Ethernet source MAC (the client MAC
//!   of the BOOTP header), so per-MAC limits see a new sender each time;
//!   `own`: the interface's MAC, random client MACs inside (what XDP limits).
//! - A REQUEST names `SERVER_ID` (option 54) and a random address of the pool
//!   (option 50), with no OFFER before it.
//!
//! It only runs in a test's client namespace (the caller's job), sends
//! only broadcast frames on IFACE, and stops by itself after SECS.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Distinct frames built up front, then sent round-robin.
const FRAMES: usize = 8192;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 9 {
        eprintln!(
            "usage: {} IFACE discover|request RATE SECS random|own SERVER_ID POOL_FIRST POOL_LAST",
            args[0]
        );
        std::process::exit(2);
    }
    let iface = &args[1];
    let request = match args[2].as_str() {
        "discover" => false,
        "request" => true,
        other => die(&format!("unknown kind {other}")),
    };
    let rate: u64 = args[3].parse().unwrap_or_else(|_| die("RATE"));
    let secs: u64 = args[4].parse().unwrap_or_else(|_| die("SECS"));
    let random_src = match args[5].as_str() {
        "random" => true,
        "own" => false,
        other => die(&format!("unknown source {other}")),
    };
    let server: Ipv4Addr = args[6].parse().unwrap_or_else(|_| die("SERVER_ID"));
    let first: Ipv4Addr = args[7].parse().unwrap_or_else(|_| die("POOL_FIRST"));
    let last: Ipv4Addr = args[8].parse().unwrap_or_else(|_| die("POOL_LAST"));
    assert!(secs <= 120 && rate <= 100_000, "bounded floods only");

    let own = own_mac(iface);
    let mut rng = Rng(u64::from(std::process::id()) << 20 | u64::from(request) << 8 | 1);
    let span = u32::from(last) - u32::from(first) + 1;
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|_| {
            let r = rng.next();
            let chaddr = [
                0x02,
                (r >> 8) as u8,
                (r >> 16) as u8,
                (r >> 24) as u8,
                (r >> 32) as u8,
                (r >> 40) as u8,
            ];
            let src = if random_src { chaddr } else { own };
            let ip = Ipv4Addr::from(u32::from(first) + (rng.next() % u64::from(span)) as u32);
            let xid = rng.next() as u32;
            frame(src, chaddr, xid, request.then_some((server, ip)))
        })
        .collect();

    let sock = PacketSocket::open(iface);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut sent: u64 = 0;
    let mut failed: u64 = 0;
    while Instant::now() < end {
        // Send what is due by now: rate * elapsed, in 1 ms steps.
        let due = rate * u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX) / 1_000_000;
        while sent + failed < due {
            let f = &frames[((sent + failed) % FRAMES as u64) as usize];
            if sock.send(f) {
                sent += 1;
            } else {
                failed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = f64::from(u32::try_from(sent).unwrap_or(u32::MAX)) / secs;
    println!("sent={sent} failed={failed} secs={secs:.2} rate={rate:.0}");
}

fn die(what: &str) -> ! {
    eprintln!("tandem-flood: bad {what}");
    std::process::exit(2)
}

fn own_mac(iface: &str) -> [u8; 6] {
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .unwrap_or_else(|e| die(&format!("interface {iface}: {e}")));
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(text.trim().split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap_or_else(|_| die("MAC"));
    }
    mac
}

/// Ethernet + IPv4 + UDP 68 -> 67 + BOOTP, broadcast, padded to 300 bytes
/// of BOOTP (RFC 1542), UDP checksum 0 (allowed for IPv4).
fn frame(
    src: [u8; 6],
    chaddr: [u8; 6],
    xid: u32,
    request: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut bootp = vec![0u8; 236];
    bootp[0] = 1; // BOOTREQUEST
    bootp[1] = 1; // Ethernet
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&xid.to_be_bytes());
    bootp[10] = 0x80; // broadcast flag
    bootp[28..34].copy_from_slice(&chaddr);
    bootp.extend_from_slice(&[99, 130, 83, 99]);
    match request {
        None => bootp.extend_from_slice(&[53, 1, 1]),
        Some((server, ip)) => {
            bootp.extend_from_slice(&[53, 1, 3, 54, 4]);
            bootp.extend_from_slice(&server.octets());
            bootp.extend_from_slice(&[50, 4]);
            bootp.extend_from_slice(&ip.octets());
        }
    }
    bootp.push(255);
    bootp.resize(300, 0);

    let udp_len = 8 + bootp.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&u16::try_from(ip_len).expect("small").to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[16..20].copy_from_slice(&[255, 255, 255, 255]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&u16::try_from(udp_len).expect("small").to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&bootp);
    f
}

fn checksum(hdr: &[u8]) -> u16 {
    let mut s: u32 = hdr
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An `AF_PACKET` socket bound to one interface.
struct PacketSocket(libc::c_int);

impl PacketSocket {
    fn open(iface: &str) -> PacketSocket {
        let name = std::ffi::CString::new(iface).unwrap_or_else(|_| die("IFACE"));
        // SAFETY: plain syscalls on values built here; errors are checked.
        unsafe {
            let index = libc::if_nametoindex(name.as_ptr());
            if index == 0 {
                die(&format!("interface {iface}"));
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                die("socket(AF_PACKET) (root?)");
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = i32::try_from(index).unwrap_or_else(|_| die("ifindex"));
            let r = libc::bind(
                fd,
                std::ptr::addr_of!(addr).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("small"),
            );
            if r != 0 {
                die("bind(AF_PACKET)");
            }
            PacketSocket(fd)
        }
    }

    /// One frame; false if the kernel refused it (queue full).
    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: `frame` is a live slice for the duration of the call.
        let n = unsafe { libc::send(self.0, frame.as_ptr().cast(), frame.len(), 0) };
        n == isize::try_from(frame.len()).unwrap_or(-1)
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
