//! The DHCP socket loop: receive, decide (pure handler), commit through Raft,
//! then reply. The order is the contract: a lease is committed to a quorum
//! before its DHCPACK leaves the node.
//!
//! ```text
//!   UDP :67 (bound to the service interface)
//!        │ decode ── malformed ──▶ count + rate-limited log, drop
//!        ▼
//!   handler::handle(req, state, offers, now) ──▶ Action
//!        │ Reply/Offer ────────────────────────▶ send now
//!        │ CommitThenReply ─▶ propose (in flight) ─▶ applied Ok ─▶ send ACK
//!        │                                       └▶ rejected  ─▶ send NAK
//!        │ Commit ──────────▶ propose (RELEASE/DECLINE)
//! ```
//! One task runs the loop and polls every proposal in flight; Raft batches
//! the proposals into one fsync (group commit).

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
use super::handler::{self, Action, Context, Destination};
use super::options;
use crate::consensus::ClusterHandle;
use crate::metrics;
use crate::model::CommandResponse;
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
}

/// Everything a reply needs to leave the node.
struct Sender {
    udp: Arc<UdpSocket>,
    link: RawLink,
    server_id: Ipv4Addr,
    port: u16,
}

impl Sender {
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

/// A proposal in flight and what to send when it is decided.
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Committed> + Send>>;

/// What a finished proposal leaves for the loop to do.
enum Committed {
    /// A lease commit: reply with `reply` if applied, `nak` if rejected.
    Lease {
        result: Result<CommandResponse, crate::consensus::ProposeError>,
        started: Instant,
        reply: Box<Message>,
        nak: Box<Message>,
        to: Destination,
    },
    /// A RELEASE or DECLINE: nothing to send.
    Quiet(Result<CommandResponse, crate::consensus::ProposeError>),
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
    use futures::stream::{FuturesUnordered, StreamExt as _};

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
    let mut offers = Offers::new();
    let mut alloc = Allocator::new();
    let mut buf = vec![0u8; 4096];
    let mut throttle = Throttle(None);
    let mut last_expire = 0;
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    tracing::info!(target: "tandem::dhcp", iface = %cfg.iface, server_id = %cfg.server_id, port = cfg.port, "DHCP responder started");
    loop {
        // cancel-safety: recv_from is cancel-safe (a datagram is either
        // returned or left queued); dropping `pending.next()` loses nothing.
        let (n, peer) = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(done) = pending.next(), if !pending.is_empty() => {
                finish(done, &sender);
                continue;
            }
            r = udp.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!(target: "tandem::dhcp", error = %e, "recv failed"); continue; }
            },
        };
        let started = Instant::now();
        // decode_request guards dhcproto's panicking paths (hlen > 16, bad option lengths).
        let req = match options::decode_request(&buf[..n]) {
            Ok(m) => m,
            Err(reason) => {
                metrics::get().dhcp_malformed.inc();
                if throttle.ready() {
                    tracing::warn!(target: "tandem::dhcp", %peer, len = n, reason, "malformed DHCP packet dropped");
                }
                continue;
            }
        };
        metrics::dhcp_packet(req.opts().msg_type().map_or("bootrequest", msg_name), "in");
        let now = unix_now();
        // Times are whole seconds, so expiring more than once a second finds
        // nothing new; doing it per packet cost half the CPU under load.
        if now != last_expire {
            offers.expire(now);
            last_expire = now;
        }
        let ctx = Context {
            server_id: cfg.server_id,
            now,
        };
        let action = cluster.read(|state| handler::handle(&req, state, &offers, &mut alloc, &ctx));
        metrics::get()
            .dhcp_decision_seconds
            .observe(started.elapsed().as_secs_f64());
        match action {
            Action::Drop { reason } => {
                tracing::debug!(target: "tandem::dhcp::packet", xid = req.xid(), chaddr = ?req.chaddr(), reason, "no reply");
            }
            Action::Reply { reply, to } => sender.send(&reply, &to),
            Action::Offer {
                reply,
                to,
                ip,
                mac,
                until,
            } => {
                offers.record(ip, mac, until);
                sender.send(&reply, &to);
            }
            Action::CommitThenReply {
                cmd,
                reply,
                nak,
                to,
            } => {
                let cluster = cluster.clone();
                pending.push(Box::pin(async move {
                    let started = Instant::now();
                    let result = cluster.propose(cmd).await;
                    Committed::Lease {
                        result,
                        started,
                        reply: Box::new(reply),
                        nak: Box::new(nak),
                        to,
                    }
                }));
            }
            Action::Commit { cmd } => {
                let cluster = cluster.clone();
                pending.push(Box::pin(async move {
                    Committed::Quiet(cluster.propose(cmd).await)
                }));
            }
        }
    }
    // In-flight proposals are dropped unanswered: a node that stepped down
    // must stay silent, and the new leader answers the client's retransmission.
    // (Raft may still commit them; the lease is then known to the new leader.)
    tracing::info!(target: "tandem::dhcp", in_flight = pending.len(), "DHCP responder stopped");
    Ok(())
}

/// Sends what a finished proposal calls for.
fn finish(done: Committed, sender: &Sender) {
    match done {
        Committed::Lease {
            result,
            started,
            reply,
            nak,
            to,
        } => match result {
            Ok(CommandResponse::Ok) => {
                metrics::get()
                    .raft_commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                sender.send(&reply, &to);
            }
            Ok(CommandResponse::Rejected { reason }) => {
                tracing::info!(target: "tandem::dhcp", xid = reply.xid(), reason, "grant rejected at apply; NAK");
                sender.send(&nak, &to.for_nak());
            }
            Err(e) => {
                // No ACK without a commit; the client retries.
                tracing::warn!(target: "tandem::dhcp", xid = reply.xid(), error = %e, "lease not committed; no reply");
            }
        },
        Committed::Quiet(Err(e)) => {
            tracing::warn!(target: "tandem::dhcp", error = %e, "release/decline not committed");
        }
        Committed::Quiet(Ok(_)) => {}
    }
}
