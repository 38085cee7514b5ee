//! Root-only: a veth pair between two namespaces this test creates, the
//! program attached on the server side, real frames from the client side.
//!
//! ```text
//!   tsteer-<pid>-<mode>-a (server)          tsteer-<pid>-<mode>-b (client)
//!   veth0 10.99.250.1/24 + VIP .10  <──────>  veth1 10.99.250.2/24
//!   XDP here; UDP sockets on 67, 7480         UDP socket, arping, scapy
//! ```
//!
//! The attach and the sockets are made on short-lived threads that entered
//! the namespace with `setns`; afterwards they work from any thread.

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use super::{AttachMode, Role, Settings, Steering};
use crate::config::{PacketLimit, PacketLimits};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 250, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 250, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 250, 10);
const SERVER_IF: &str = "veth0";
const CLIENT_IF: &str = "veth1";
/// Stands in for Raft/API traffic, which a follower must keep receiving.
const OTHER_PORT: u16 = 7480;
/// The HTTP boot port the program is told (not 80, to show it is read).
const HTTP_PORT: u16 = 8080;
/// Small limits, so a handful of packets shows each bucket run dry; rates of
/// 1/s refill nothing within the few ms a phase takes.
const LIMITS: PacketLimits = PacketLimits {
    dhcp_per_mac: PacketLimit::new(1, 4),
    dhcp_per_relay: PacketLimit::new(1, 2),
    tftp_per_client: PacketLimit::new(1, 3),
    arp_per_mac: PacketLimit::new(100, 100),
};

/// Two namespaces joined by a veth pair; deleted on drop, panics included.
struct NetnsPair {
    server: String,
    client: String,
}

impl NetnsPair {
    fn new(tag: &str) -> NetnsPair {
        let pid = std::process::id();
        // Built before the first namespace exists, so any failing step below
        // still runs `Drop`.
        let pair = NetnsPair {
            server: format!("tsteer-{pid}-{tag}-a"),
            client: format!("tsteer-{pid}-{tag}-b"),
        };
        for ns in [&pair.server, &pair.client] {
            run("ip", &["netns", "add", ns]);
            // No IPv6: router solicitations and DAD would only add "other" noise.
            for key in [
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ] {
                run("ip", &["netns", "exec", ns, "sysctl", "-qw", key]);
            }
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &[
                "-n",
                &pair.server,
                "link",
                "add",
                SERVER_IF,
                "type",
                "veth",
                "peer",
                "name",
                CLIENT_IF,
                "netns",
                &pair.client,
            ],
        );
        for (ns, dev, addrs) in [
            (
                &pair.server,
                SERVER_IF,
                vec![format!("{SERVER_IP}/24"), format!("{VIP}/24")],
            ),
            (&pair.client, CLIENT_IF, vec![format!("{CLIENT_IP}/24")]),
        ] {
            for addr in &addrs {
                run("ip", &["-n", ns, "addr", "add", addr, "dev", dev]);
            }
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            // Ignore failures: a namespace may not have been created yet.
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a fresh thread that first joins network namespace `ns`. The
/// calling thread never changes namespace. Panics in `f` propagate.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
            // Only this thread changes network namespace.
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns({ns}): {e}"));
            f()
        });
        handle
            .join()
            .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    })
}

/// Runs a command to completion; panics with its output if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `arping` for the VIP from the client; true if a reply came back.
fn arping_vip(pair: &NetnsPair) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.client,
            "arping",
            "-c",
            "1",
            "-w",
            "2",
            "-I",
            CLIENT_IF,
        ])
        .arg(VIP.to_string())
        .output()
        .expect("spawn arping")
        .status
        .success()
}

type Snapshot = HashMap<(&'static str, &'static str), u64>;

fn snapshot(steering: &Steering) -> Snapshot {
    steering
        .counters()
        .expect("read counters")
        .into_iter()
        .map(|(p, v, n)| ((p, v), n))
        .collect()
}

fn delta(before: &Snapshot, after: &Snapshot, proto: &'static str, verdict: &'static str) -> u64 {
    after[&(proto, verdict)] - before[&(proto, verdict)]
}

/// Receives one datagram within `wait`, or `None`.
fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).expect("set timeout");
    let mut buf = [0u8; 1500];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    }
}

/// `ip link show` of the server's veth: "xdp" (driver) or "xdpgeneric" (SKB)
/// appears in it while a program is attached.
fn server_link(pair: &NetnsPair) -> String {
    run("ip", &["-n", &pair.server, "link", "show", SERVER_IF])
}

/// Frames a socket cannot send, built with scapy from the client namespace:
/// IPv4 options, an 802.1Q tag, a non-first fragment whose payload looks like
/// a UDP header to port 67, a truncated IPv4 header, an ARP *reply* to the VIP
/// and two gratuitous ARPs claiming the VIP (`arping -U` refuses a source
/// address the host does not own).
fn send_crafted(pair: &NetnsPair) {
    let script = format!(
        r#"
from scapy.all import ARP, Dot1Q, Ether, IP, IPOption_Router_Alert, Raw, UDP, sendp
bc = "ff:ff:ff:ff:ff:ff"
ip = dict(src="{CLIENT_IP}", dst="{SERVER_IP}")
frames = [
    Ether(dst=bc) / IP(options=[IPOption_Router_Alert()], **ip) / UDP(sport=68, dport=67) / b"options",
    Ether(dst=bc) / Dot1Q(vlan=100) / IP(**ip) / UDP(sport=68, dport=67) / b"vlan",
    Ether(dst=bc) / IP(proto=17, frag=4, **ip) / Raw(b"\x00\x44\x00\x43\x00\x10\x00\x00" + b"x" * 8),
    Ether(dst=bc, type=0x0800) / Raw(b"\x45" + b"\x00" * 9),
    Ether(dst=bc) / ARP(op=2, psrc="{CLIENT_IP}", pdst="{VIP}", hwdst=bc),
    # Gratuitous ARP (request and reply) from the client's MAC: a claim on the VIP.
    Ether(dst=bc) / ARP(op=1, psrc="{VIP}", pdst="{VIP}"),
    Ether(dst=bc) / ARP(op=2, psrc="{VIP}", pdst="{VIP}", hwdst=bc),
]
sendp(frames, iface="{CLIENT_IF}", verbose=False)
"#
    );
    // scapy is installed for Debian's python only (TOOLCHAIN.md).
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.client,
            "/usr/bin/python3",
            "-c",
            &script,
        ],
    );
}

fn scenario(mode: AttachMode, tag: &str) {
    println!("=== phase: namespaces ({mode:?})");
    let pair = NetnsPair::new(tag);
    let steering = in_netns(&pair.server, || {
        let settings = Settings {
            http_port: HTTP_PORT,
            limits: LIMITS,
        };
        Steering::attach_modes(SERVER_IF, VIP, &settings, &[mode])
            .unwrap_or_else(|e| panic!("attach {mode:?}: {e:?}"))
    });
    let mut steering = steering;
    assert_eq!(steering.mode(), mode);
    assert_eq!(
        steering.role(),
        Role::Follower,
        "a fresh attach must drop until told otherwise"
    );
    let link = server_link(&pair);
    let shown = if mode == AttachMode::Skb {
        " xdpgeneric "
    } else {
        " xdp "
    };
    assert!(link.contains(shown), "expected `{shown}` in: {link}");

    let dhcp = in_netns(&pair.server, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 67)).expect("bind 67")
    });
    let other = in_netns(&pair.server, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, OTHER_PORT)).expect("bind other")
    });
    let client = in_netns(&pair.client, || {
        UdpSocket::bind((CLIENT_IP, 0)).expect("bind client")
    });

    println!("=== phase: follower drops DHCP, TFTP and ARP for the VIP");
    let before = snapshot(&steering);
    client
        .send_to(b"discover-follower", (SERVER_IP, 67))
        .expect("send 67");
    client
        .send_to(b"rrq-follower", (SERVER_IP, 69))
        .expect("send 69");
    client
        .send_to(b"raft-follower", (SERVER_IP, OTHER_PORT))
        .expect("send other");
    assert_eq!(
        recv_within(&other, Duration::from_secs(2)).as_deref(),
        Some(&b"raft-follower"[..]),
        "a follower must keep passing non-service traffic"
    );
    assert!(
        recv_within(&dhcp, Duration::from_millis(500)).is_none(),
        "follower let DHCP through"
    );
    assert!(!arping_vip(&pair), "follower answered ARP for the VIP");
    let after = snapshot(&steering);
    assert_eq!(delta(&before, &after, "dhcp", "drop"), 1);
    assert_eq!(delta(&before, &after, "dhcp", "pass"), 0);
    assert_eq!(delta(&before, &after, "tftp", "drop"), 1);
    assert!(
        delta(&before, &after, "arp_vip", "drop") >= 1,
        "arping's request was not counted"
    );
    assert_eq!(delta(&before, &after, "arp_vip", "pass"), 0);
    assert!(delta(&before, &after, "other", "pass") >= 1);

    println!("=== phase: follower drops TCP to the VIP's HTTP port, not to its own");
    let before = snapshot(&steering);
    let listener = in_netns(&pair.server, || {
        std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, HTTP_PORT)).expect("bind http")
    });
    // A follower drops ARP for the VIP, so the client is told the VIP's MAC
    // by hand: the SYN must reach the program to be dropped there.
    let server_mac = run(
        "ip",
        &["-n", &pair.server, "-br", "link", "show", SERVER_IF],
    )
    .split_whitespace()
    .nth(2)
    .expect("MAC in `ip -br link`")
    .to_owned();
    run(
        "ip",
        &[
            "-n",
            &pair.client,
            "neigh",
            "replace",
            &VIP.to_string(),
            "lladdr",
            &server_mac,
            "dev",
            CLIENT_IF,
        ],
    );
    let connect = |ip: Ipv4Addr| {
        in_netns(&pair.client, || {
            std::net::TcpStream::connect_timeout(&(ip, HTTP_PORT).into(), Duration::from_secs(1))
        })
    };
    assert!(connect(VIP).is_err(), "a follower accepted HTTP on the VIP");
    assert!(
        connect(SERVER_IP).is_ok(),
        "HTTP to the node's own address must pass"
    );
    let after = snapshot(&steering);
    assert!(
        delta(&before, &after, "http", "drop") >= 1,
        "SYN to VIP:http"
    );
    assert_eq!(delta(&before, &after, "http", "pass"), 0);

    println!("=== phase: follower parses options, VLAN tags and fragments");
    let before = snapshot(&steering);
    send_crafted(&pair);
    let after = snapshot(&steering);
    assert_eq!(
        delta(&before, &after, "dhcp", "drop"),
        2,
        "IPv4-options and VLAN DHCP frames"
    );
    assert_eq!(delta(&before, &after, "dhcp", "pass"), 0);
    assert!(
        delta(&before, &after, "other", "pass") >= 2,
        "fragment and truncated frame pass as other"
    );
    assert_eq!(
        delta(&before, &after, "arp_vip", "pass"),
        1,
        "an ARP reply to the VIP is not dropped"
    );
    assert_eq!(delta(&before, &after, "arp_vip", "drop"), 0);
    // Sender checked before target: a gratuitous request is a claim, never a
    // question, and passes even on a follower so the daemon can see it.
    assert_eq!(
        delta(&before, &after, "arp_conflict", "pass"),
        2,
        "gratuitous ARPs for the VIP"
    );
    assert_eq!(delta(&before, &after, "arp_conflict", "drop"), 0);
    assert!(
        recv_within(&dhcp, Duration::from_millis(200)).is_none(),
        "follower let crafted DHCP through"
    );

    println!("=== phase: leader passes everything");
    steering.set_role(Role::Leader).expect("set leader");
    assert_eq!(steering.role(), Role::Leader);
    let before = snapshot(&steering);
    client
        .send_to(b"discover-leader", (SERVER_IP, 67))
        .expect("send 67");
    assert_eq!(
        recv_within(&dhcp, Duration::from_secs(2)).as_deref(),
        Some(&b"discover-leader"[..]),
        "leader must receive DHCP"
    );
    assert!(arping_vip(&pair), "leader did not answer ARP for the VIP");
    let after = snapshot(&steering);
    assert_eq!(delta(&before, &after, "dhcp", "pass"), 1);
    assert_eq!(delta(&before, &after, "dhcp", "drop"), 0);
    assert!(delta(&before, &after, "arp_vip", "pass") >= 1);
    assert_eq!(delta(&before, &after, "arp_vip", "drop"), 0);
    assert!(
        connect(VIP).is_ok(),
        "the leader must accept HTTP on the VIP"
    );
    drop(listener);

    println!("=== phase: leader rate-limits per MAC, per relay and per TFTP client");
    // The MAC bucket (burst 4) gave one token to discover-leader: three more
    // pass, the rest are dropped as ratelimited and never reach the socket.
    let before = snapshot(&steering);
    for i in 0..10u8 {
        client
            .send_to(&[b'd', i], (SERVER_IP, 67))
            .expect("send 67");
    }
    let mut got = 0;
    while recv_within(&dhcp, Duration::from_millis(300)).is_some() {
        got += 1;
    }
    assert_eq!(got, 3, "DHCP datagrams past a burst-4 bucket with 1 used");
    // Relayed (giaddr set): its own bucket, by giaddr, though the MAC's is empty.
    let mut relayed = vec![0u8; 240];
    relayed[24..28].copy_from_slice(&[10, 1, 0, 1]);
    for _ in 0..5 {
        client
            .send_to(&relayed, (SERVER_IP, 67))
            .expect("send relayed");
    }
    let mut got_relayed = 0;
    while recv_within(&dhcp, Duration::from_millis(300)).is_some() {
        got_relayed += 1;
    }
    assert_eq!(got_relayed, 2, "relayed datagrams past a burst-2 bucket");
    for i in 0..6u8 {
        client
            .send_to(&[0, 1, i], (SERVER_IP, 69))
            .expect("send 69");
    }
    let after = snapshot(&steering);
    assert_eq!(delta(&before, &after, "dhcp", "pass"), 3 + 2);
    assert_eq!(delta(&before, &after, "dhcp", "ratelimited"), 7 + 3);
    assert_eq!(delta(&before, &after, "dhcp", "drop"), 0);
    assert_eq!(delta(&before, &after, "tftp", "pass"), 3);
    assert_eq!(delta(&before, &after, "tftp", "ratelimited"), 3);
    println!("=== phase: a bucket refills at its rate");
    std::thread::sleep(Duration::from_millis(1100));
    client
        .send_to(b"d-later", (SERVER_IP, 67))
        .expect("send 67");
    client
        .send_to(b"d-later2", (SERVER_IP, 67))
        .expect("send 67");
    assert_eq!(
        recv_within(&dhcp, Duration::from_secs(1)).as_deref(),
        Some(&b"d-later"[..])
    );
    assert!(recv_within(&dhcp, Duration::from_millis(300)).is_none());

    println!("=== phase: back to follower");
    steering.set_role(Role::Follower).expect("set follower");
    client
        .send_to(b"discover-again", (SERVER_IP, 67))
        .expect("send 67");
    assert!(
        recv_within(&dhcp, Duration::from_millis(500)).is_none(),
        "role flip back did not take effect"
    );

    if mode == AttachMode::Driver {
        println!("=== phase: metrics export");
        // Only this test exports: the gauges are process-wide.
        steering.export_counters().expect("export");
        let counters = steering.counters().expect("counters");
        let dhcp_drop = counters
            .iter()
            .find(|(p, v, _)| *p == "dhcp" && *v == "drop")
            .expect("dhcp/drop")
            .2;
        let label = crate::metrics::ProtoVerdict {
            proto: "dhcp".into(),
            verdict: "drop".into(),
        };
        let gauge = crate::metrics::get()
            .xdp_packets
            .get_or_create(&label)
            .get();
        assert_eq!(u64::try_from(gauge).expect("non-negative"), dhcp_drop);
        assert_eq!(dhcp_drop, 4, "1 socket + 2 crafted + 1 after the flip back");
    }

    println!("=== phase: drop detaches");
    drop(steering);
    let link = server_link(&pair);
    assert!(
        !link.contains(" xdp"),
        "program still attached after drop: {link}"
    );
}

#[test]
fn steering_driver_mode() {
    scenario(AttachMode::Driver, "drv");
}

#[test]
fn steering_skb_mode() {
    scenario(AttachMode::Skb, "skb");
}
