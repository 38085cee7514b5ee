//! The DHCP socket loop: receive, decode, decide (pure handler), and hand
//! the decision to the [`Responder`], which commits through Raft, then
//! replies. The order is the contract: a lease is committed to a quorum
//! before its DHCPACK leaves the node.
//!
//! ```text
//!   UDP :67 (bound to the service interface)
//!        │ request::decode ── undecodable ──▶ count + rate-limited log, drop
//!        ▼
//!   handler::decide(msg, view, alloc) ──▶ Action
//!        │ = Request::parse ── invalid ──▶ Drop (malformed)
//!        │   then handle(req, view, alloc)
//!        │ Drop ─────────────────────────────▶ log; count if malformed
//!        ▼
//!   Responder::dispatch ── Reply/Offer ──────▶ send now (Sender: UDP or raw link)
//!        │ CommitThenReply ─▶ propose (in flight) ─▶ applied Ok ─▶ send ACK
//!        │                                       └▶ rejected  ─▶ send NAK
//!        │ Commit ──────────▶ propose (RELEASE/DECLINE)
//! ```
//! One task runs the loop and polls every proposal in flight
//! ([`Responder::next_request`]); Raft batches the proposals into one fsync
//! (group commit).

use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{Message, MessageType};
use dhcproto::Encodable;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::allocator::{Allocator, Offers};
use super::dispatch::{ReplySink, Responder};
use super::handler::{self, Action, View};
use super::reply::Destination;
use super::request;
use crate::consensus::ClusterHandle;
use crate::metrics;
use crate::services::link::{udp_frame, RawLink, BROADCAST};

pub const CLIENT_PORT: u16 = 68;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("cannot open the DHCP socket on {iface}:{port}: {source}")]
    Bind {
        iface: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open a raw socket on {iface}: {source}")]
    Link {
        iface: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct DhcpConfig {
    pub iface: String,
    /// The VIP: server identifier and the source of every reply.
    pub server_id: Ipv4Addr,
    pub port: u16,
    /// HTTP boot port on the VIP, for the URLs in boot replies.
    pub http_port: u16,
}

/// Everything a reply needs to leave the node.
struct Sender {
    udp: Arc<UdpSocket>,
    link: RawLink,
    server_id: Ipv4Addr,
    port: u16,
}

impl ReplySink for Sender {
    fn send(&self, msg: &Message, to: &Destination) {
        let Ok(mut bytes) = msg.to_vec() else {
            tracing::error!(target: "tandem::dhcp", "cannot encode reply");
            return;
        };
        // RFC 1542: some BOOTP relays and clients drop replies shorter than 300 bytes.
        if bytes.len() < 300 {
            bytes.resize(300, 0);
        }
        let kind = msg.opts().msg_type().map_or("bootreply", msg_name);
        let res = match *to {
            Destination::Relay(giaddr) => send_from(
                &self.udp,
                &bytes,
                self.server_id,
                SocketAddrV4::new(giaddr, self.port),
            ),
            Destination::Unicast(ip) => send_from(
                &self.udp,
                &bytes,
                self.server_id,
                SocketAddrV4::new(ip, CLIENT_PORT),
            ),
            Destination::L2Unicast { mac, ip } => {
                let f = udp_frame(
                    self.link.mac,
                    mac,
                    (self.server_id, self.port),
                    (ip, CLIENT_PORT),
                    &bytes,
                );
                self.link.send(mac, &f)
            }
            Destination::Broadcast => {
                let f = udp_frame(
                    self.link.mac,
                    BROADCAST,
                    (self.server_id, self.port),
                    (Ipv4Addr::BROADCAST, CLIENT_PORT),
                    &bytes,
                );
                self.link.send(BROADCAST, &f)
            }
        };
        match res {
            Ok(()) => metrics::dhcp_packet(kind, "out"),
            Err(e) => tracing::warn!(target: "tandem::dhcp", error = %e, ?to, "reply not sent"),
        }
    }
}

/// Sends a UDP datagram whose source address is `src` (the VIP) even though
/// the socket is bound to 0.0.0.0, using `IP_PKTINFO`.
fn send_from(
    sock: &UdpSocket,
    buf: &[u8],
    src: Ipv4Addr,
    dst: SocketAddrV4,
) -> std::io::Result<()> {
    let pktinfo = nix::libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: nix::libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: nix::libc::in_addr { s_addr: 0 },
    };
    sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(buf)],
        &[ControlMessage::Ipv4PacketInfo(&pktinfo)],
        MsgFlags::MSG_DONTWAIT,
        Some(&SockaddrIn::from(dst)),
    )?;
    Ok(())
}

fn msg_name(t: MessageType) -> &'static str {
    match t {
        MessageType::Discover => "discover",
        MessageType::Offer => "offer",
        MessageType::Request => "request",
        MessageType::Decline => "decline",
        MessageType::Ack => "ack",
        MessageType::Nak => "nak",
        MessageType::Release => "release",
        MessageType::Inform => "inform",
        _ => "other",
    }
}

fn bind(cfg: &DhcpConfig) -> Result<UdpSocket, DhcpError> {
    let err = |source| DhcpError::Bind {
        iface: cfg.iface.clone(),
        port: cfg.port,
        source,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_broadcast(true).map_err(err)?;
    // Only the service interface: Raft and the API live on the same host.
    s.bind_device(Some(cfg.iface.as_bytes())).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    if let Err(e) =
        crate::services::link::grow_receive_queue(&s, crate::services::link::LISTENER_RCVBUF)
    {
        tracing::warn!(target: "tandem::dhcp", error = %e, "could not enlarge the DHCP receive queue; bursts of DISCOVERs may be dropped");
    }
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, cfg.port)).into())
        .map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Rate limit for malformed-packet warnings: at most one line per second;
/// the counter carries the full number.
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        match self.0 {
            Some(t) if now.duration_since(t).as_secs() < 1 => false,
            _ => {
                self.0 = Some(now);
                true
            }
        }
    }
}

/// Serves DHCP until `cancel` fires.
///
/// One task does everything, as Kea's one thread does: it reads requests,
/// decides, starts proposals, and sends each ACK as soon as its proposal is
/// applied. Many proposals are in flight at once, so Raft batches them into
/// one fsync (group commit); finished ones are sent before more requests are
/// read, so replies leave in the order and at the pace their commits finish
/// instead of waiting for a scheduler to run a task per request.
pub async fn serve<C: ClusterHandle>(
    cfg: DhcpConfig,
    cluster: C,
    cancel: CancellationToken,
) -> Result<(), DhcpError> {
    let udp = Arc::new(bind(&cfg)?);
    let link = RawLink::open(&cfg.iface).map_err(|source| DhcpError::Link {
        iface: cfg.iface.clone(),
        source,
    })?;
    let sender = Sender {
        udp: udp.clone(),
        link,
        server_id: cfg.server_id,
        port: cfg.port,
    };
    let mut responder = Responder::new(cluster.clone(), sender);
    let mut offers = Offers::new();
    let mut alloc = Allocator::new();
    let mut buf = vec![0u8; 4096];
    let mut throttle = Throttle(None);
    let mut last_expire = 0;
    let clock = Instant::now();
    super::dispatch::touch_shed_counters();
    tracing::info!(target: "tandem::dhcp", iface = %cfg.iface, server_id = %cfg.server_id, port = cfg.port, "DHCP responder started");
    // cancel-safety: recv_from is cancel-safe (a datagram is either returned
    // or left queued), and so is next_request with it.
    while let Some(r) = responder
        .next_request(&cancel, udp.recv_from(&mut buf))
        .await
    {
        let (n, peer) = match r {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(target: "tandem::dhcp", error = %e, "recv failed");
                continue;
            }
        };
        let started = Instant::now();
        // decode guards dhcproto's panicking paths (hlen > 16, bad option lengths).
        let msg = match request::decode(&buf[..n]) {
            Ok(m) => m,
            Err(reason) => {
                metrics::get().dhcp_malformed.inc();
                if throttle.ready() {
                    tracing::warn!(target: "tandem::dhcp", %peer, len = n, reason, "malformed DHCP packet dropped");
                }
                continue;
            }
        };
        metrics::dhcp_packet(msg.opts().msg_type().map_or("bootrequest", msg_name), "in");
        let now = unix_now();
        let now_ns = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Times are whole seconds, so expiring more than once a second finds
        // nothing new; doing it per packet cost half the CPU under load.
        if now != last_expire {
            offers.expire(now);
            last_expire = now;
        }
        let action = cluster.read(|state| {
            let view = View {
                state,
                offers: &offers,
                server_id: cfg.server_id,
                http_port: cfg.http_port,
                now,
                now_ns,
            };
            handler::decide(&msg, &view, &mut alloc)
        });
        metrics::get()
            .dhcp_decision_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Action::Shed { reason } = action {
            super::dispatch::count_shed(reason);
        }
        if let Action::Drop { reason, malformed } = action {
            if malformed {
                metrics::get().dhcp_malformed.inc();
            }
            tracing::debug!(target: "tandem::packet::dhcp", xid = msg.xid(), chaddr = ?msg.chaddr(), reason, "no reply");
        }
        responder.dispatch(action, &mut offers);
    }
    // In-flight proposals are dropped unanswered: a node that stepped down
    // must stay silent, and the new leader answers the client's retransmission.
    // (Raft may still commit them; the lease is then known to the new leader.)
    tracing::info!(target: "tandem::dhcp", in_flight = responder.in_flight(), "DHCP responder stopped");
    Ok(())
}
