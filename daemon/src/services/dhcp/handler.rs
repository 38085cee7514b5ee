//! The DHCP (IPv4) decision, as a pure function.
//!
//! [`handle`] maps one parsed request, the replicated [`State`], the leader's
//! outstanding [`Offers`] and a [`Context`] (server id, `now`) to one
//! [`Action`]. It opens no socket and reads no clock; the socket loop does the
//! I/O and, for leases, the Raft round trip:
//!
//! ```text
//!   request ──▶ handle() ──▶ Drop ─────────────▶ (count reason)
//!                       ├──▶ Reply ────────────▶ send now           (NAK, INFORM ACK, BOOTP reservation)
//!                       ├──▶ Offer ────────────▶ Offers::record, send OFFER
//!                       ├──▶ Commit ───────────▶ propose            (RELEASE, DECLINE)
//!                       └──▶ CommitThenReply ──▶ propose ─▶ applied Ok? ─ yes ─▶ send ACK
//!                                                                       └ no ──▶ send NAK
//! ```
//!
//! Invariant: an ACK is sent only for a `Command::Grant` that the cluster has
//! applied, so every address a client believes it holds is in the replicated
//! lease table of a quorum.
//!
//! Subnet selection follows RFC 2131 4.3.1: `giaddr` if set (relayed), else
//! `ciaddr` if set (renewing, INFORM), else the server id, i.e. the VIP's own
//! subnet (a client on the server's segment).

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};

use super::allocator::{in_pool, is_excluded, is_free, Allocator, Offers};
use super::options;
use crate::model::{BootpPolicy, Command, Lease, LeaseState, Mac, Reservation, State, Subnet};

/// What the handler needs to know besides the request and the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// Server identifier = the VIP; also the default next-server (siaddr).
    pub server_id: Ipv4Addr,
    /// Unix seconds.
    pub now: u64,
}

/// Where a reply goes (RFC 2131 section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// giaddr != 0: send to giaddr:67 (relay). perfdhcp depends on this.
    Relay(Ipv4Addr),
    /// ciaddr != 0 (renewing/rebinding/inform): unicast UDP to ciaddr:68.
    Unicast(Ipv4Addr),
    /// No address yet and broadcast flag clear: L2 unicast to chaddr, IP dst = yiaddr, port 68.
    L2Unicast { mac: Mac, ip: Ipv4Addr },
    /// Broadcast flag set (or NAK with no giaddr): 255.255.255.255:68, L2 broadcast.
    Broadcast,
}

impl Destination {
    /// Where the fallback `nak` of [`Action::CommitThenReply`] goes when the
    /// ACK would have gone to `self`: RFC 2131 4.1 broadcasts every NAK that
    /// is not relayed, since the client may not accept a unicast to an
    /// address it was just refused.
    #[must_use]
    pub fn for_nak(self) -> Destination {
        match self {
            Destination::Relay(g) => Destination::Relay(g),
            _ => Destination::Broadcast,
        }
    }
}

/// The handler's decision for one request.
// One Action per packet, moved once into the socket loop: boxing the large
// variants would add an allocation per packet for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send; `reason` is logged/counted by the caller.
    Drop { reason: &'static str },
    /// Send now, no state change (NAK, INFORM ACK, BOOTP reservation reply).
    Reply { reply: Message, to: Destination },
    /// DISCOVER answered: send OFFER and remember `ip` as offered to `mac`
    /// until `until` (the caller records it in `Offers`).
    Offer {
        reply: Message,
        to: Destination,
        ip: Ipv4Addr,
        mac: Mac,
        until: u64,
    },
    /// Commit `cmd` through Raft (quorum) FIRST; only once it is applied with
    /// `CommandResponse::Ok`, send `reply` (the ACK). If the commit is
    /// rejected, the caller sends `nak` instead, to [`Destination::for_nak`].
    ///
    /// For dynamic BOOTP (which has no NAK), `nak` is the same BOOTREPLY with
    /// `yiaddr`, `siaddr` and the file cleared: sending the address the
    /// cluster just refused would create a conflict, while an empty reply is
    /// ignored by BOOTP clients, which then retry.
    CommitThenReply {
        cmd: Command,
        reply: Message,
        nak: Message,
        to: Destination,
    },
    /// Commit with no reply (RELEASE, DECLINE).
    Commit { cmd: Command },
}

/// How long an OFFER holds its address for the client (seconds). Clients
/// answer within a second; ISC dhcpd and dnsmasq hold offers for tens of
/// seconds too, so a slow client retransmitting still gets the same address.
pub const OFFER_HOLD_SECS: u64 = 30;

/// Upper bound on the DECLINE quarantine: Kea's default probation period.
pub const MAX_QUARANTINE_SECS: u64 = 86_400;

/// How long a declined address is kept out of the pool: ten lease times
/// (long enough that the squatting host has either left or been found by an
/// operator, short enough that a small pool heals by itself), at most
/// [`MAX_QUARANTINE_SECS`].
#[must_use]
pub fn quarantine_secs(lease_time: u32) -> u64 {
    (10 * u64::from(lease_time)).min(MAX_QUARANTINE_SECS)
}

/// Decides what to do with one request. See the module docs.
pub fn handle(
    req: &Message,
    state: &State,
    offers: &Offers,
    alloc: &mut Allocator,
    ctx: &Context,
) -> Action {
    if req.opcode() != Opcode::BootRequest {
        return malformed("op is not BOOTREQUEST");
    }
    // hlen is checked before chaddr() is called: dhcproto slices chaddr by
    // hlen and would panic for hlen > 16.
    if req.htype() != HType::Eth || req.hlen() != 6 {
        return malformed("hardware address is not 6-byte Ethernet");
    }
    let Some(mac) = Mac::from_slice(req.chaddr()) else {
        return malformed("hardware address is not 6-byte Ethernet");
    };
    if mac.0 == [0; 6] || mac.0[0] & 1 == 1 {
        return malformed("chaddr is not a unicast MAC");
    }

    let select = [req.giaddr(), req.ciaddr()]
        .into_iter()
        .find(|a| !a.is_unspecified())
        .unwrap_or(ctx.server_id);
    let Some(subnet) = state.config.subnet_for(select) else {
        return Action::Drop {
            reason: "no subnet configured for the request's network",
        };
    };
    let v = View {
        req,
        state,
        offers,
        ctx,
        mac,
        subnet,
    };

    match req.opts().msg_type() {
        None => v.bootp(alloc),
        Some(MessageType::Discover) => v.discover(alloc),
        Some(MessageType::Request) => v.request(),
        Some(MessageType::Release) => v.release(),
        Some(MessageType::Decline) => v.decline(),
        Some(MessageType::Inform) => v.inform(),
        Some(_) => Action::Drop {
            reason: "message type a server does not answer",
        },
    }
}

/// A malformed packet is counted and dropped, never propagated as an error.
fn malformed(reason: &'static str) -> Action {
    crate::metrics::get().dhcp_malformed.inc();
    Action::Drop { reason }
}

/// One request and everything it is judged against.
struct View<'a> {
    req: &'a Message,
    state: &'a State,
    offers: &'a Offers,
    ctx: &'a Context,
    mac: Mac,
    subnet: &'a Subnet,
}

impl View<'_> {
    fn now(&self) -> u64 {
        self.ctx.now
    }

    fn free(&self, ip: Ipv4Addr) -> bool {
        is_free(
            self.state,
            self.offers,
            self.subnet,
            ip,
            self.mac,
            self.ctx.server_id,
            self.now(),
        )
    }

    fn requested_ip(&self) -> Option<Ipv4Addr> {
        match self.req.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) if !ip.is_unspecified() => Some(*ip),
            _ => None,
        }
    }

    fn server_id_opt(&self) -> Option<Ipv4Addr> {
        match self.req.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// The client's reservation if it applies here: its address is in the
    /// selected subnet and nobody else holds it. A reservation whose address
    /// is busy (a lease granted before the reservation was added, or a
    /// quarantine) is set aside, the client gets a pool address meanwhile,
    /// and the REQUEST path agrees, so the client is never refused in a loop.
    fn reservation(&self) -> Option<&Reservation> {
        self.state
            .config
            .reservation_for(self.mac)
            .filter(|r| self.subnet.cidr.contains(&r.ip) && self.free(r.ip))
    }

    fn lease_time(&self) -> u32 {
        self.subnet.lease_time
    }

    // ---- DISCOVER -------------------------------------------------------

    fn discover(&self, alloc: &mut Allocator) -> Action {
        let Some(ip) = self.choose(alloc) else {
            return Action::Drop {
                reason: "pool exhausted",
            };
        };
        let mut reply = self.base(Some(MessageType::Offer));
        reply.set_yiaddr(ip);
        self.add_config(&mut reply, Some(self.lease_time()), false);
        Action::Offer {
            reply,
            to: destination(self.req, self.mac, ip),
            ip,
            mac: self.mac,
            until: self.now() + OFFER_HOLD_SECS,
        }
    }

    /// The address to offer, in order of preference: the reservation, an
    /// outstanding offer (a retransmitted DISCOVER gets the same answer), the
    /// client's own lease record (live or expired), the address it asks for
    /// (option 50), and finally a fresh pick from the pools.
    fn choose(&self, alloc: &mut Allocator) -> Option<Ipv4Addr> {
        if let Some(r) = self.reservation() {
            return Some(r.ip);
        }
        let reusable = |ip: Ipv4Addr| in_pool(self.subnet, ip) && self.free(ip);
        if let Some((ip, until)) = self.offers.of_mac(self.mac) {
            if until > self.now() && reusable(ip) {
                return Some(ip);
            }
        }
        if let Some(l) = self.state.lease_of_mac(self.mac) {
            if reusable(l.ip) {
                return Some(l.ip);
            }
        }
        if let Some(ip) = self.requested_ip() {
            if reusable(ip) {
                return Some(ip);
            }
        }
        self.pick_fresh(alloc)
    }

    /// A free address from the subnet's pools, from the allocator's cursor.
    fn pick_fresh(&self, alloc: &mut Allocator) -> Option<Ipv4Addr> {
        alloc.pick(
            self.state,
            self.offers,
            self.subnet,
            self.mac,
            self.ctx.server_id,
            self.now(),
        )
    }

    // ---- REQUEST --------------------------------------------------------

    /// RFC 2131 4.3.2: the client's state is told apart by which of server id
    /// (option 54), requested address (option 50) and ciaddr it sets.
    fn request(&self) -> Action {
        let ciaddr = self.req.ciaddr();
        if let Some(sid) = self.server_id_opt() {
            // SELECTING.
            if sid != self.ctx.server_id {
                return Action::Drop {
                    reason: "client selected another server",
                };
            }
            let ip = self
                .requested_ip()
                .or((!ciaddr.is_unspecified()).then_some(ciaddr));
            let Some(ip) = ip else {
                return malformed("SELECTING REQUEST without a requested address");
            };
            return self.grant_or_nak(ip);
        }
        if ciaddr.is_unspecified() {
            // INIT-REBOOT.
            let Some(ip) = self.requested_ip() else {
                return malformed("REQUEST with neither server id, requested address nor ciaddr");
            };
            return self.init_reboot(ip);
        }
        // RENEWING (unicast) or REBINDING (broadcast): judged alike, since
        // there is one server (cluster) to ask.
        self.grant_or_nak(ciaddr)
    }

    /// A rebooting client asks to keep `ip`. NAK when the address is wrong
    /// for it; stay silent when we know nothing about the client (RFC 2131
    /// 4.3.2), so another server that does know it may answer.
    fn init_reboot(&self, ip: Ipv4Addr) -> Action {
        if !self.subnet.cidr.contains(&ip) {
            return self.nak("requested address is not on the client's network");
        }
        if let Some(l) = self.state.lease_of_ip(ip) {
            if l.is_active(self.now()) && (l.mac != self.mac || l.state == LeaseState::Declined) {
                return self.nak("requested address is in use by another client");
            }
        }
        // What we know of the client: its reservation, else its lease record.
        let known = match (self.reservation(), self.state.lease_of_mac(self.mac)) {
            (Some(r), _) => Some((r.ip, "client has a reservation for another address")),
            (None, Some(l)) => Some((l.ip, "client's lease is for another address")),
            (None, None) => None,
        };
        match known {
            None => Action::Drop {
                reason: "INIT-REBOOT from a client with no lease here",
            },
            Some((theirs, why)) if theirs != ip => self.nak(why),
            Some(_) => self.grant_or_nak(ip),
        }
    }

    /// Whether `ip` may be bound to this client now; the reservation that
    /// applies, if any, on success, and the NAK text otherwise.
    fn check_grant(&self, ip: Ipv4Addr) -> Result<Option<&Reservation>, &'static str> {
        if !self.subnet.cidr.contains(&ip) {
            return Err("requested address is not on the client's network");
        }
        if is_excluded(self.subnet, ip, self.ctx.server_id) {
            return Err("requested address belongs to the network's infrastructure");
        }
        if let Some(r) = self.reservation() {
            return if r.ip == ip {
                Ok(Some(r))
            } else {
                Err("client has a reservation for another address")
            };
        }
        if !self.free(ip) {
            return Err("requested address is in use by another client");
        }
        let own = self
            .state
            .lease_of_ip(ip)
            .is_some_and(|l| l.mac == self.mac && l.state == LeaseState::Bound);
        if own || in_pool(self.subnet, ip) {
            Ok(None)
        } else {
            Err("requested address is not in a pool")
        }
    }

    fn grant_or_nak(&self, ip: Ipv4Addr) -> Action {
        let res = match self.check_grant(ip) {
            Ok(res) => res,
            Err(why) => return self.nak(why),
        };
        let cmd = Command::Grant {
            lease: self.lease(ip, res),
        };
        let mut reply = self.base(Some(MessageType::Ack));
        reply.set_yiaddr(ip).set_ciaddr(self.req.ciaddr());
        self.add_config(&mut reply, Some(self.lease_time()), false);
        Action::CommitThenReply {
            cmd,
            reply,
            nak: self.nak_message("lease could not be committed"),
            to: destination(self.req, self.mac, ip),
        }
    }

    fn lease(&self, ip: Ipv4Addr, res: Option<&Reservation>) -> Lease {
        Lease {
            ip,
            mac: self.mac,
            state: LeaseState::Bound,
            // The operator's name wins over what the client calls itself.
            hostname: res
                .and_then(|r| r.hostname.clone())
                .or_else(|| options::client_hostname(self.req)),
            granted_at: self.now(),
            expires_at: self.now() + u64::from(self.lease_time()),
        }
    }

    fn nak_message(&self, why: &str) -> Message {
        let mut m = self.base(Some(MessageType::Nak));
        m.opts_mut().insert(DhcpOption::Message(why.to_owned()));
        if !self.req.giaddr().is_unspecified() {
            // RFC 2131 4.3.2: so the relay broadcasts it on the client's segment.
            m.set_flags(m.flags().set_broadcast());
        }
        m
    }

    fn nak(&self, why: &'static str) -> Action {
        tracing::debug!(target: "tandem::dhcp", mac = %self.mac, reason = why, "NAK");
        Action::Reply {
            reply: self.nak_message(why),
            to: nak_destination(self.req),
        }
    }

    // ---- RELEASE, DECLINE, INFORM ----------------------------------------

    fn foreign(&self) -> bool {
        self.server_id_opt()
            .is_some_and(|s| s != self.ctx.server_id)
    }

    fn release(&self) -> Action {
        if self.foreign() {
            return Action::Drop {
                reason: "RELEASE addressed to another server",
            };
        }
        let ip = self.req.ciaddr();
        if ip.is_unspecified() {
            return malformed("RELEASE without ciaddr");
        }
        match self.state.lease_of_ip(ip) {
            Some(l) if l.mac == self.mac && l.state == LeaseState::Bound => {
                if l.is_active(self.now()) {
                    Action::Commit {
                        cmd: Command::Release { ip, at: self.now() },
                    }
                } else {
                    Action::Drop {
                        reason: "RELEASE of an expired lease",
                    }
                }
            }
            _ => Action::Drop {
                reason: "RELEASE of an address the client does not hold",
            },
        }
    }

    /// Only the holder may decline an address; otherwise any host on the
    /// segment could quarantine the whole pool with forged DECLINEs.
    fn decline(&self) -> Action {
        if self.foreign() {
            return Action::Drop {
                reason: "DECLINE addressed to another server",
            };
        }
        let Some(ip) = self.requested_ip() else {
            return malformed("DECLINE without a requested address");
        };
        match self.state.lease_of_ip(ip) {
            Some(l) if l.mac == self.mac && l.state == LeaseState::Bound => {
                let lease_time = self
                    .state
                    .config
                    .subnet_for(ip)
                    .unwrap_or(self.subnet)
                    .lease_time;
                let at = self.now();
                tracing::info!(target: "tandem::dhcp", %ip, mac = %self.mac, "address declined: quarantined");
                Action::Commit {
                    cmd: Command::Decline {
                        ip,
                        mac: self.mac,
                        at,
                        until: at + quarantine_secs(lease_time),
                    },
                }
            }
            _ => Action::Drop {
                reason: "DECLINE of an address the client does not hold",
            },
        }
    }

    /// RFC 2131 3.4: a client with an address configured by other means
    /// asks for the rest: options, no yiaddr, no lease time.
    fn inform(&self) -> Action {
        let to = if !self.req.giaddr().is_unspecified() {
            Destination::Relay(self.req.giaddr())
        } else if !self.req.ciaddr().is_unspecified() {
            Destination::Unicast(self.req.ciaddr())
        } else {
            return malformed("INFORM without ciaddr");
        };
        let mut reply = self.base(Some(MessageType::Ack));
        reply.set_ciaddr(self.req.ciaddr());
        self.add_config(&mut reply, None, false);
        Action::Reply { reply, to }
    }

    // ---- BOOTP ----------------------------------------------------------

    /// RFC 951 clients (no option 53): a BOOTREPLY without DHCP-only options.
    fn bootp(&self, alloc: &mut Allocator) -> Action {
        let build = |ip: Ipv4Addr| {
            let mut reply = self.base(None);
            reply.set_yiaddr(ip).set_ciaddr(self.req.ciaddr());
            self.add_config(&mut reply, None, true);
            reply
        };
        if let Some(r) = self.reservation() {
            return Action::Reply {
                reply: build(r.ip),
                to: destination(self.req, self.mac, r.ip),
            };
        }
        if self.state.config.bootp == BootpPolicy::ReservationsOnly {
            return Action::Drop {
                reason: "BOOTP client without a reservation",
            };
        }
        let own = self
            .state
            .lease_of_mac(self.mac)
            .map(|l| l.ip)
            .filter(|&ip| in_pool(self.subnet, ip) && self.free(ip));
        let Some(ip) = own.or_else(|| self.pick_fresh(alloc)) else {
            return Action::Drop {
                reason: "pool exhausted",
            };
        };
        let reply = build(ip);
        let mut nak = reply.clone();
        nak.set_yiaddr(Ipv4Addr::UNSPECIFIED)
            .set_siaddr(Ipv4Addr::UNSPECIFIED)
            .clear_fname();
        Action::CommitThenReply {
            cmd: Command::Grant {
                lease: self.lease(ip, None),
            },
            reply,
            nak,
            to: destination(self.req, self.mac, ip),
        }
    }

    // ---- reply building ---------------------------------------------------

    /// A BOOTREPLY echoing the request's identity fields (xid, flags, giaddr,
    /// chaddr), with option 53 and 54 when `kind` is given, and the options
    /// a server must copy back: client identifier (RFC 6842) and relay agent
    /// information (RFC 3046).
    fn base(&self, kind: Option<MessageType>) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(self.req.xid(), z, z, z, self.req.giaddr(), &self.mac.0);
        m.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_flags(self.req.flags());
        if let Some(kind) = kind {
            m.opts_mut().insert(DhcpOption::MessageType(kind));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(self.ctx.server_id));
        }
        for code in [
            OptionCode::ClientIdentifier,
            OptionCode::RelayAgentInformation,
        ] {
            if let Some(o) = self.req.opts().get(code) {
                m.opts_mut().insert(o.clone());
            }
        }
        m
    }

    /// The subnet's parameters, lease times (unless `lease` is `None`) and
    /// boot information, trimmed to what the client can receive.
    fn add_config(&self, reply: &mut Message, lease: Option<u32>, bootp: bool) {
        let s = self.subnet;
        let opts = reply.opts_mut();
        if let Some(t) = lease {
            opts.insert(DhcpOption::AddressLeaseTime(t));
            opts.insert(DhcpOption::Renewal(t / 2));
            opts.insert(DhcpOption::Rebinding((u64::from(t) * 7 / 8) as u32));
        }
        opts.insert(DhcpOption::SubnetMask(s.cidr.netmask()));
        if let Some(r) = s.router {
            opts.insert(DhcpOption::Router(vec![r]));
        }
        if !s.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(s.dns.clone()));
        }
        if let Some(d) = &s.domain {
            opts.insert(DhcpOption::DomainName(d.clone()));
        }
        // For INFORM and BOOTP the reservation is looked up without the
        // free check: it only names the host and its profile here.
        let res = self
            .state
            .config
            .reservation_for(self.mac)
            .filter(|r| s.cidr.contains(&r.ip));
        if let Some(h) = res.and_then(|r| r.hostname.clone()) {
            opts.insert(DhcpOption::Hostname(h));
        }
        reply.set_siaddr(s.next_server.unwrap_or(self.ctx.server_id));
        self.add_boot(reply, res);

        let max = if bootp {
            dhcproto::v4::MIN_PACKET_SIZE
        } else {
            options::max_reply_len(self.req)
        };
        let requested = match self.req.opts().get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(l)) => l.as_slice(),
            _ => &[],
        };
        if !options::fit(reply, max, requested) {
            tracing::debug!(target: "tandem::dhcp", mac = %self.mac, max, "reply exceeds the client's maximum size");
        }
    }

    /// Boot file from the reservation's profile or the subnet's (see
    /// [`options::boot_file`]), and iPXE's no-pxedhcp when the client is iPXE.
    fn add_boot(&self, reply: &mut Message, res: Option<&Reservation>) {
        let ipxe = options::is_ipxe(self.req);
        if ipxe {
            reply.opts_mut().insert(options::ipxe_no_pxedhcp());
        }
        let Some(name) = res
            .and_then(|r| r.profile.as_deref())
            .or(self.subnet.profile.as_deref())
        else {
            return;
        };
        let Some(profile) = self.state.config.profile(name) else {
            tracing::debug!(target: "tandem::dhcp", profile = name, "boot profile not found");
            return;
        };
        let legacy = self.req.opts().msg_type().is_none() || options::is_pxe_client(self.req);
        let Some(file) = options::boot_file(profile, ipxe, options::client_arch(self.req), legacy)
        else {
            return;
        };
        if file.len() <= options::MAX_FILE_FIELD {
            reply.set_fname_str(file);
        } else {
            reply
                .opts_mut()
                .insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
        }
    }
}

/// RFC 2131 4.1, for OFFER, ACK and BOOTREPLY.
fn destination(req: &Message, mac: Mac, yiaddr: Ipv4Addr) -> Destination {
    if !req.giaddr().is_unspecified() {
        Destination::Relay(req.giaddr())
    } else if !req.ciaddr().is_unspecified() {
        Destination::Unicast(req.ciaddr())
    } else if req.flags().broadcast() || yiaddr.is_unspecified() {
        Destination::Broadcast
    } else {
        Destination::L2Unicast { mac, ip: yiaddr }
    }
}

/// RFC 2131 4.1: a NAK goes to the relay, or is broadcast.
fn nak_destination(req: &Message) -> Destination {
    if req.giaddr().is_unspecified() {
        Destination::Broadcast
    } else {
        Destination::Relay(req.giaddr())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use dhcproto::v4::{relay, Architecture, Decodable, Decoder, Encodable, Flags};

    use super::*;
    use crate::model::{BootProfile, CommandResponse, PoolRange, ServiceConfig};

    const SID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
    const LEASE: u32 = 600;
    const RESERVED_MAC: Mac = Mac([0x52, 0x54, 0, 0, 0xee, 1]);
    const RELAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

    fn v4(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, d)
    }

    fn mac(n: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, n])
    }

    fn pool() -> Vec<Ipv4Addr> {
        (100..=129).map(v4).collect()
    }

    fn config() -> ServiceConfig {
        ServiceConfig {
            bootp: BootpPolicy::ReservationsOnly,
            subnets: vec![
                Subnet {
                    cidr: "10.0.0.0/24".parse().unwrap(),
                    pools: vec![PoolRange {
                        start: v4(100),
                        end: v4(129),
                    }],
                    router: Some(v4(1)),
                    dns: vec![v4(53)],
                    domain: Some("lab.example".into()),
                    lease_time: LEASE,
                    next_server: None,
                    profile: Some("pxe".into()),
                },
                Subnet {
                    cidr: "10.1.0.0/24".parse().unwrap(),
                    pools: vec!["10.1.0.100-10.1.0.109".parse().unwrap()],
                    router: Some(RELAY),
                    dns: vec![],
                    domain: None,
                    lease_time: 300,
                    next_server: Some(v4(20)),
                    profile: None,
                },
            ],
            reservations: vec![Reservation {
                mac: RESERVED_MAC,
                ip: v4(50),
                hostname: Some("fixed".into()),
                profile: None,
            }],
            profiles: vec![BootProfile {
                name: "pxe".into(),
                bios: Some("undionly.kpxe".into()),
                uefi_x64: Some("ipxe.efi".into()),
                uefi_arm64: Some("ipxe-arm64.efi".into()),
                ipxe_script: Some("http://10.0.0.10/boot.ipxe".into()),
            }],
        }
    }

    /// The server side, driven the way the socket loop drives it: offers are
    /// recorded, commands applied, and the ACK sent only on `Ok`.
    struct Server {
        state: State,
        offers: Offers,
        alloc: Allocator,
        now: u64,
    }

    impl Server {
        fn new() -> Self {
            Self::with(config())
        }

        fn with(config: ServiceConfig) -> Self {
            let mut state = State::default();
            state.apply(&Command::SetConfig { config });
            Server {
                state,
                offers: Offers::new(),
                alloc: Allocator::new(),
                now: 1_000_000,
            }
        }

        fn decide(&mut self, req: &Message) -> Action {
            let ctx = Context {
                server_id: SID,
                now: self.now,
            };
            handle(req, &self.state, &self.offers, &mut self.alloc, &ctx)
        }

        /// Decides and carries the action out; returns it and what was sent.
        fn run(&mut self, req: &Message) -> (Action, Option<(Message, Destination)>) {
            let a = self.decide(req);
            let sent = match &a {
                Action::Drop { .. } => None,
                Action::Reply { reply, to } => Some((reply.clone(), *to)),
                Action::Offer {
                    reply,
                    to,
                    ip,
                    mac,
                    until,
                } => {
                    self.offers.record(*ip, *mac, *until);
                    Some((reply.clone(), *to))
                }
                Action::CommitThenReply {
                    cmd,
                    reply,
                    nak,
                    to,
                } => match self.state.apply(cmd) {
                    CommandResponse::Ok => Some((reply.clone(), *to)),
                    CommandResponse::Rejected { .. } => Some((nak.clone(), to.for_nak())),
                },
                Action::Commit { cmd } => {
                    assert_eq!(self.state.apply(cmd), CommandResponse::Ok, "{cmd:?}");
                    None
                }
            };
            (a, sent)
        }

        /// DISCOVER, then REQUEST what was offered; returns the acknowledged address.
        /// DISCOVER from `m`; the offered address (panics without an offer).
        fn offer(&mut self, m: Mac) -> Ipv4Addr {
            let (a, _) = self.run(&discover(m));
            let Action::Offer { ip, .. } = a else {
                panic!("no offer for {m}: {a:?}")
            };
            ip
        }

        fn dora(&mut self, m: Mac) -> Ipv4Addr {
            let ip = self.offer(m);
            let (a, sent) = self.run(&select(m, ip, SID));
            let (ack, _) = sent.unwrap_or_else(|| panic!("no reply to REQUEST: {a:?}"));
            assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack), "{a:?}");
            assert_eq!(ack.yiaddr(), ip);
            ip
        }
    }

    fn req(m: Mac, kind: MessageType) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut r = Message::new_with_id(0xabcd, z, z, z, z, &m.0);
        r.opts_mut().insert(DhcpOption::MessageType(kind));
        r
    }

    fn with(mut r: Message, o: DhcpOption) -> Message {
        r.opts_mut().insert(o);
        r
    }

    fn discover(m: Mac) -> Message {
        req(m, MessageType::Discover)
    }

    fn select(m: Mac, ip: Ipv4Addr, sid: Ipv4Addr) -> Message {
        let r = with(
            req(m, MessageType::Request),
            DhcpOption::RequestedIpAddress(ip),
        );
        with(r, DhcpOption::ServerIdentifier(sid))
    }

    fn init_reboot(m: Mac, ip: Ipv4Addr) -> Message {
        with(
            req(m, MessageType::Request),
            DhcpOption::RequestedIpAddress(ip),
        )
    }

    fn renew(m: Mac, ip: Ipv4Addr) -> Message {
        let mut r = req(m, MessageType::Request);
        r.set_ciaddr(ip);
        r
    }

    fn release(m: Mac, ip: Ipv4Addr) -> Message {
        let mut r = with(
            req(m, MessageType::Release),
            DhcpOption::ServerIdentifier(SID),
        );
        r.set_ciaddr(ip);
        r
    }

    fn decline(m: Mac, ip: Ipv4Addr) -> Message {
        let r = with(
            req(m, MessageType::Decline),
            DhcpOption::RequestedIpAddress(ip),
        );
        with(r, DhcpOption::ServerIdentifier(SID))
    }

    fn relayed(mut r: Message) -> Message {
        r.set_giaddr(RELAY);
        r
    }

    fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
        m.opts().get(code)
    }

    fn fname(m: &Message) -> Option<&str> {
        m.fname_str().map(Result::unwrap)
    }

    fn expect_nak(sent: Option<(Message, Destination)>, to: Destination) -> Message {
        let (m, dest) = sent.expect("a NAK");
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(dest, to);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(opt(&m, OptionCode::AddressLeaseTime).is_none());
        m
    }

    #[test]
    fn full_dora_binds_a_pool_address_and_acks_after_commit() {
        let mut s = Server::new();
        let (a, _) = s.run(&discover(mac(1)));
        let Action::Offer {
            reply,
            to,
            ip,
            mac: m,
            until,
        } = a
        else {
            panic!("{a:?}")
        };
        assert!(pool().contains(&ip));
        assert_eq!((m, until), (mac(1), s.now + OFFER_HOLD_SECS));
        assert_eq!(to, Destination::L2Unicast { mac: mac(1), ip });
        assert_eq!(reply.opcode(), Opcode::BootReply);
        assert_eq!(
            (reply.xid(), reply.yiaddr(), reply.siaddr()),
            (0xabcd, ip, SID)
        );
        assert_eq!(reply.chaddr(), &mac(1).0);
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(
            opt(&reply, OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SID))
        );
        assert_eq!(
            opt(&reply, OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(600))
        );
        assert_eq!(
            opt(&reply, OptionCode::Renewal),
            Some(&DhcpOption::Renewal(300))
        );
        assert_eq!(
            opt(&reply, OptionCode::Rebinding),
            Some(&DhcpOption::Rebinding(525))
        );
        assert_eq!(
            opt(&reply, OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            opt(&reply, OptionCode::Router),
            Some(&DhcpOption::Router(vec![v4(1)]))
        );
        assert_eq!(
            opt(&reply, OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![v4(53)]))
        );
        assert_eq!(
            opt(&reply, OptionCode::DomainName),
            Some(&DhcpOption::DomainName("lab.example".into()))
        );
        assert_eq!(fname(&reply), None, "not a PXE client: no boot file");
        // The reply survives the wire format.
        let bytes = reply.to_vec().unwrap();
        let back = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!((back.yiaddr(), back.opts()), (ip, reply.opts()));
        assert!(s.state.lease_of_ip(ip).is_none(), "an offer is not a lease");

        let (a, sent) = s.run(&select(mac(1), ip, SID));
        let Action::CommitThenReply {
            cmd: Command::Grant { lease },
            reply,
            nak,
            to,
        } = &a
        else {
            panic!("{a:?}")
        };
        assert_eq!(lease.ip, ip);
        assert_eq!(lease.mac, mac(1));
        assert_eq!(lease.state, LeaseState::Bound);
        assert_eq!((lease.granted_at, lease.expires_at), (s.now, s.now + 600));
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(*to, Destination::L2Unicast { mac: mac(1), ip });
        assert_eq!(to.for_nak(), Destination::Broadcast);
        assert_eq!(sent.unwrap().0.yiaddr(), ip);
        assert_eq!(s.state.lease_of_mac(mac(1)).unwrap().ip, ip);
        // A retransmitted DISCOVER from the bound client offers the same address.
        let (a, _) = s.run(&discover(mac(1)));
        assert!(matches!(a, Action::Offer { ip: o, .. } if o == ip), "{a:?}");
    }

    #[test]
    fn a_rejected_commit_sends_the_nak() {
        let mut s = Server::new();
        let ip = s.offer(mac(1));
        let decided = s.decide(&select(mac(1), ip, SID));
        // Meanwhile another client's grant for the same address is applied
        // (e.g. proposed by an earlier leader).
        let other = Lease {
            ip,
            mac: mac(2),
            state: LeaseState::Bound,
            hostname: None,
            granted_at: s.now,
            expires_at: s.now + 600,
        };
        s.state.apply(&Command::Grant { lease: other });
        let Action::CommitThenReply { cmd, nak, to, .. } = decided else {
            panic!()
        };
        assert!(matches!(
            s.state.apply(&cmd),
            CommandResponse::Rejected { .. }
        ));
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(to.for_nak(), Destination::Broadcast);
    }

    #[test]
    fn reservation_gives_the_fixed_address_and_name() {
        let mut s = Server::new();
        assert_eq!(s.dora(RESERVED_MAC), v4(50));
        let l = s.state.lease_of_mac(RESERVED_MAC).unwrap();
        assert_eq!(l.hostname.as_deref(), Some("fixed"));
        let (_, sent) = s.run(&renew(RESERVED_MAC, v4(50)));
        let ack = sent.unwrap().0;
        assert_eq!(
            opt(&ack, OptionCode::Hostname),
            Some(&DhcpOption::Hostname("fixed".into()))
        );
        // The reserved client asking for a pool address is told to go home.
        let (_, sent) = s.run(&select(RESERVED_MAC, v4(100), SID));
        expect_nak(sent, Destination::Broadcast);
        // Nobody else gets the reserved address, even by asking for it.
        let (a, _) = s.run(&with(
            discover(mac(2)),
            DhcpOption::RequestedIpAddress(v4(50)),
        ));
        assert!(
            matches!(a, Action::Offer { ip: o, .. } if o != v4(50)),
            "{a:?}"
        );
        let (_, sent) = s.run(&select(mac(2), v4(50), SID));
        expect_nak(sent, Destination::Broadcast);
    }

    #[test]
    fn client_hostname_is_recorded_when_no_reservation_names_it() {
        let mut s = Server::new();
        let ip = s.offer(mac(1));
        s.run(&with(
            select(mac(1), ip, SID),
            DhcpOption::Hostname("node-1".into()),
        ));
        assert_eq!(
            s.state.lease_of_ip(ip).unwrap().hostname.as_deref(),
            Some("node-1")
        );
    }

    #[test]
    fn renew_keeps_the_address_and_extends_the_lease() {
        let mut s = Server::new();
        let ip1 = s.dora(mac(1));
        s.now += 300;
        let (a, sent) = s.run(&renew(mac(1), ip1));
        let Action::CommitThenReply {
            cmd: Command::Grant { lease },
            ..
        } = &a
        else {
            panic!("{a:?}")
        };
        assert_eq!((lease.ip, lease.expires_at), (ip1, s.now + 600));
        let (ack, to) = sent.unwrap();
        assert_eq!(to, Destination::Unicast(ip1));
        assert_eq!((ack.ciaddr(), ack.yiaddr()), (ip1, ip1));
        assert_eq!(s.state.lease_of_ip(ip1).unwrap().expires_at, s.now + 600);
        // Rebinding after expiry, address untouched: still granted.
        s.now += 1000;
        let (_, sent) = s.run(&renew(mac(1), ip1));
        assert_eq!(sent.unwrap().0.opts().msg_type(), Some(MessageType::Ack));
        // Renewing someone else's address is refused.
        let ip2 = s.dora(mac(2));
        let (_, sent) = s.run(&renew(mac(1), ip2));
        expect_nak(sent, Destination::Broadcast);
    }

    #[test]
    fn init_reboot_with_a_wrong_address_is_naked() {
        let mut s = Server::new();
        let ip1 = s.dora(mac(1));
        let ip2 = s.dora(mac(2));
        let free = *pool().iter().find(|&&a| a != ip1 && a != ip2).unwrap();
        for wrong in [free, ip2, Ipv4Addr::new(192, 168, 7, 7), v4(10)] {
            let (a, sent) = s.run(&init_reboot(mac(1), wrong));
            let nak = expect_nak(sent, Destination::Broadcast);
            assert!(
                matches!(opt(&nak, OptionCode::Message), Some(DhcpOption::Message(_))),
                "{a:?}"
            );
        }
        let (_, sent) = s.run(&init_reboot(mac(1), ip1));
        let (ack, to) = sent.unwrap();
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(
            to,
            Destination::L2Unicast {
                mac: mac(1),
                ip: ip1
            }
        );
    }

    #[test]
    fn init_reboot_from_an_unknown_client_is_ignored() {
        let mut s = Server::new();
        let (a, _) = s.run(&init_reboot(mac(9), v4(110)));
        assert_eq!(
            a,
            Action::Drop {
                reason: "INIT-REBOOT from a client with no lease here"
            }
        );
        // ...unless the address plainly belongs to someone else.
        let ip1 = s.dora(mac(1));
        let (_, sent) = s.run(&init_reboot(mac(9), ip1));
        expect_nak(sent, Destination::Broadcast);
    }

    #[test]
    fn selecting_another_server_is_ignored() {
        let mut s = Server::new();
        let ip = s.offer(mac(1));
        let (a, sent) = s.run(&select(mac(1), ip, Ipv4Addr::new(10, 0, 0, 99)));
        assert_eq!(
            a,
            Action::Drop {
                reason: "client selected another server"
            }
        );
        assert!(sent.is_none());
        assert!(s.state.leases.is_empty());
    }

    #[test]
    fn relayed_requests_use_giaddr_for_subnet_and_destination() {
        let mut s = Server::new();
        let mut info = relay::RelayAgentInformation::default();
        info.insert(relay::RelayInfo::AgentCircuitId(b"port7".to_vec()));
        let o82 = DhcpOption::RelayAgentInformation(info);
        let (a, _) = s.run(&relayed(with(discover(mac(1)), o82.clone())));
        let Action::Offer { reply, to, ip, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!(to, Destination::Relay(RELAY));
        assert!(
            (100..=109)
                .map(|d| Ipv4Addr::new(10, 1, 0, d))
                .any(|p| p == ip),
            "{ip}"
        );
        assert_eq!(reply.giaddr(), RELAY);
        assert_eq!(reply.siaddr(), v4(20), "next_server");
        assert_eq!(
            opt(&reply, OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(300))
        );
        assert_eq!(opt(&reply, OptionCode::RelayAgentInformation), Some(&o82));
        let (_, sent) = s.run(&relayed(select(mac(1), ip, SID)));
        let (ack, to) = sent.unwrap();
        assert_eq!(
            (ack.opts().msg_type(), to),
            (Some(MessageType::Ack), Destination::Relay(RELAY))
        );
        // A relayed NAK goes to the relay with the broadcast bit set.
        let (_, sent) = s.run(&relayed(init_reboot(mac(1), Ipv4Addr::new(10, 1, 0, 105))));
        let nak = expect_nak(sent, Destination::Relay(RELAY));
        assert!(nak.flags().broadcast());
        // A relay on a network we do not serve: silence.
        let mut r = discover(mac(2));
        r.set_giaddr(Ipv4Addr::new(172, 16, 0, 1));
        assert!(matches!(s.run(&r).0, Action::Drop { .. }));
    }

    #[test]
    fn broadcast_flag_gets_a_broadcast_reply() {
        let mut s = Server::new();
        let mut r = discover(mac(1));
        r.set_flags(Flags::default().set_broadcast());
        let (a, _) = s.run(&r);
        let Action::Offer { reply, to, .. } = a else {
            panic!()
        };
        assert_eq!(to, Destination::Broadcast);
        assert!(reply.flags().broadcast());
    }

    #[test]
    fn pool_exhaustion_drops_instead_of_offering() {
        let mut s = Server::new();
        let mut got: Vec<Ipv4Addr> = (1..=30).map(|n| s.dora(mac(n))).collect();
        got.sort();
        assert_eq!(got, pool(), "every pool address once");
        let (a, sent) = s.run(&discover(mac(31)));
        assert_eq!(
            a,
            Action::Drop {
                reason: "pool exhausted"
            }
        );
        assert!(sent.is_none());
        // Bound clients still get their own address.
        let (a, _) = s.run(&discover(mac(7)));
        assert!(matches!(a, Action::Offer { .. }), "{a:?}");
    }

    #[test]
    fn decline_quarantines_the_address_until_the_deadline() {
        let mut s = Server::new();
        let bad = s.dora(mac(1));
        // Only the holder may decline.
        assert!(matches!(
            s.run(&decline(mac(2), bad)).0,
            Action::Drop { .. }
        ));
        let (a, _) = s.run(&decline(mac(1), bad));
        let until = s.now + 6000;
        assert_eq!(
            a,
            Action::Commit {
                cmd: Command::Decline {
                    ip: bad,
                    mac: mac(1),
                    at: s.now,
                    until
                }
            }
        );
        // The other 29 addresses go to 29 clients; the declined one to nobody.
        let mut others = vec![];
        for n in 2..=30 {
            let got = s.dora(mac(n));
            assert_ne!(got, bad);
            others.push((mac(n), got));
        }
        assert_eq!(
            s.run(&discover(mac(31))).0,
            Action::Drop {
                reason: "pool exhausted"
            }
        );
        assert_eq!(
            s.run(&discover(mac(1))).0,
            Action::Drop {
                reason: "pool exhausted"
            }
        );
        // Just before the deadline (the others renewed), still nothing.
        s.now = until - 1;
        for (m, a) in &others {
            let (_, sent) = s.run(&renew(*m, *a));
            assert_eq!(sent.unwrap().0.opts().msg_type(), Some(MessageType::Ack));
        }
        assert_eq!(
            s.run(&discover(mac(31))).0,
            Action::Drop {
                reason: "pool exhausted"
            }
        );
        s.now = until;
        let (a, _) = s.run(&discover(mac(31)));
        assert!(matches!(a, Action::Offer { ip, .. } if ip == bad), "{a:?}");
    }

    #[test]
    fn expired_leases_are_reused_by_other_clients() {
        let mut s = Server::new();
        let first: HashMap<Ipv4Addr, Mac> = (1..=30).map(|n| (s.dora(mac(n)), mac(n))).collect();
        s.now += u64::from(LEASE) + 1;
        let taken = s.dora(mac(31));
        let old_owner = first[&taken];
        assert_eq!(s.state.lease_of_ip(taken).unwrap().mac, mac(31));
        // The old owner comes back: its address is gone, so NAK, then it gets another one.
        let (_, sent) = s.run(&init_reboot(old_owner, taken));
        expect_nak(sent, Destination::Broadcast);
        let again = s.dora(old_owner);
        assert_ne!(again, taken);
    }

    #[test]
    fn release_then_discover_gives_the_same_address_back() {
        let mut s = Server::new();
        let ip1 = s.dora(mac(1));
        // Only the holder can release, and only to us.
        assert!(matches!(
            s.run(&release(mac(2), ip1)).0,
            Action::Drop { .. }
        ));
        let mut foreign = release(mac(1), ip1);
        foreign
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(v4(99)));
        assert!(matches!(s.run(&foreign).0, Action::Drop { .. }));
        s.now += 10;
        let (a, _) = s.run(&release(mac(1), ip1));
        assert_eq!(
            a,
            Action::Commit {
                cmd: Command::Release { ip: ip1, at: s.now }
            }
        );
        assert!(!s.state.lease_of_ip(ip1).unwrap().is_active(s.now));
        // A newcomer prefers never-used addresses, so the released one waits.
        let ip2 = s.dora(mac(2));
        assert_ne!(ip2, ip1);
        let (a, _) = s.run(&discover(mac(1)));
        assert!(matches!(a, Action::Offer { ip, .. } if ip == ip1), "{a:?}");
        // Releasing twice is a no-op.
        assert!(matches!(
            s.run(&release(mac(1), ip1)).0,
            Action::Drop { .. }
        ));
    }

    #[test]
    fn boot_file_follows_ipxe_and_architecture() {
        let mut s = Server::new();
        let ipxe = with(
            with(discover(mac(1)), DhcpOption::UserClass(b"iPXE".to_vec())),
            DhcpOption::ClientSystemArchitecture(Architecture::X86_Bios),
        );
        let (a, _) = s.run(&ipxe);
        let Action::Offer { reply, .. } = a else {
            panic!()
        };
        assert_eq!(fname(&reply), Some("http://10.0.0.10/boot.ipxe"));
        assert_eq!(reply.siaddr(), SID);
        let Some(DhcpOption::Unknown(o)) = reply.opts().get(OptionCode::Unknown(175)) else {
            panic!("no 175")
        };
        assert_eq!(o.data(), &[176, 1, 1]);

        let (a, _) = s.run(&with(
            discover(mac(2)),
            DhcpOption::ClientSystemArchitecture(Architecture::X64),
        ));
        let Action::Offer { reply, .. } = a else {
            panic!()
        };
        assert_eq!(fname(&reply), Some("ipxe.efi"));
        assert!(reply.opts().get(OptionCode::Unknown(175)).is_none());

        let legacy = with(
            discover(mac(3)),
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
        );
        let Action::Offer { reply, .. } = s.run(&legacy).0 else {
            panic!()
        };
        assert_eq!(fname(&reply), Some("undionly.kpxe"));

        let arm = with(
            discover(mac(4)),
            DhcpOption::ClientSystemArchitecture(Architecture::Arm64),
        );
        let Action::Offer { reply, .. } = s.run(&arm).0 else {
            panic!()
        };
        assert_eq!(fname(&reply), Some("ipxe-arm64.efi"));

        // A script URL too long for the file field travels in option 67.
        let mut cfg = config();
        let long = format!("http://10.0.0.10/{}.ipxe", "x".repeat(150));
        cfg.profiles[0].ipxe_script = Some(long.clone());
        let mut s = Server::with(cfg);
        let Action::Offer { reply, .. } = s.run(&ipxe).0 else {
            panic!()
        };
        assert_eq!(fname(&reply), None);
        assert_eq!(
            opt(&reply, OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(long.into_bytes()))
        );
    }

    fn bootp(m: Mac) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        Message::new_with_id(7, z, z, z, z, &m.0)
    }

    #[test]
    fn bootp_reservations_only_and_dynamic() {
        let mut s = Server::new();
        let (a, _) = s.run(&bootp(RESERVED_MAC));
        let Action::Reply { reply, to } = a else {
            panic!("{a:?}")
        };
        assert_eq!(reply.opcode(), Opcode::BootReply);
        assert_eq!(reply.yiaddr(), v4(50));
        assert_eq!(
            to,
            Destination::L2Unicast {
                mac: RESERVED_MAC,
                ip: v4(50)
            }
        );
        assert_eq!(
            reply.opts().msg_type(),
            None,
            "BOOTP replies carry no DHCP message type"
        );
        assert!(opt(&reply, OptionCode::AddressLeaseTime).is_none());
        assert!(opt(&reply, OptionCode::ServerIdentifier).is_none());
        assert_eq!(
            fname(&reply),
            Some("undionly.kpxe"),
            "BOOTP clients are legacy PXE"
        );
        assert!(reply.to_vec().unwrap().len() <= 300);
        assert_eq!(
            s.run(&bootp(mac(1))).0,
            Action::Drop {
                reason: "BOOTP client without a reservation"
            }
        );
        assert!(s.state.leases.is_empty());

        let mut cfg = config();
        cfg.bootp = BootpPolicy::Dynamic;
        let mut s = Server::with(cfg);
        let (a, sent) = s.run(&bootp(mac(1)));
        let Action::CommitThenReply {
            cmd: Command::Grant { lease },
            reply,
            nak,
            ..
        } = &a
        else {
            panic!("{a:?}")
        };
        assert!(pool().contains(&lease.ip));
        assert_eq!(lease.expires_at, s.now + u64::from(LEASE));
        assert_eq!(reply.yiaddr(), lease.ip);
        assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(sent.unwrap().0.yiaddr(), lease.ip);
        // The same BOOTP client asking again keeps its address.
        let (a, _) = s.run(&bootp(mac(1)));
        assert!(
            matches!(&a, Action::CommitThenReply { cmd: Command::Grant { lease: l }, .. } if l.ip == lease.ip)
        );
    }

    #[test]
    fn inform_gets_options_without_an_address() {
        let mut s = Server::new();
        let mut r = req(mac(1), MessageType::Inform);
        r.set_ciaddr(v4(77));
        let (a, _) = s.run(&r);
        let Action::Reply { reply, to } = a else {
            panic!("{a:?}")
        };
        assert_eq!(to, Destination::Unicast(v4(77)));
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(
            (reply.yiaddr(), reply.ciaddr()),
            (Ipv4Addr::UNSPECIFIED, v4(77))
        );
        assert!(opt(&reply, OptionCode::AddressLeaseTime).is_none());
        assert!(opt(&reply, OptionCode::Renewal).is_none());
        assert_eq!(
            opt(&reply, OptionCode::Router),
            Some(&DhcpOption::Router(vec![v4(1)]))
        );
        assert!(s.state.leases.is_empty());
        let r = req(mac(1), MessageType::Inform);
        assert!(
            matches!(s.run(&r).0, Action::Drop { .. }),
            "INFORM needs ciaddr"
        );
    }

    #[test]
    fn malformed_and_foreign_requests_are_dropped() {
        let mut s = Server::new();
        let mut r = discover(mac(1));
        r.set_opcode(Opcode::BootReply);
        assert_eq!(
            s.run(&r).0,
            Action::Drop {
                reason: "op is not BOOTREQUEST"
            }
        );
        let mut r = discover(mac(1));
        r.set_chaddr(&[1; 16]);
        assert_eq!(
            s.run(&r).0,
            Action::Drop {
                reason: "hardware address is not 6-byte Ethernet"
            }
        );
        let mut r = discover(mac(1));
        r.set_htype(HType::from(6));
        assert!(matches!(s.run(&r).0, Action::Drop { .. }));
        assert!(matches!(
            s.run(&discover(Mac([0; 6]))).0,
            Action::Drop { .. }
        ));
        assert!(matches!(
            s.run(&discover(Mac([0xff; 6]))).0,
            Action::Drop { .. }
        ));
        assert!(matches!(
            s.run(&req(mac(1), MessageType::Offer)).0,
            Action::Drop { .. }
        ));
        let r = req(mac(1), MessageType::Request);
        assert!(
            matches!(s.run(&r).0, Action::Drop { .. }),
            "REQUEST with nothing to request"
        );
        // hlen > 16 in a decoded packet must not reach chaddr() (for callers
        // that used Message::decode rather than options::decode_request).
        let mut bytes = discover(mac(1)).to_vec().unwrap();
        bytes[2] = 200;
        let r = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert!(matches!(s.run(&r).0, Action::Drop { .. }));
        assert!(s.offers.is_empty() && s.state.leases.is_empty());
    }

    #[test]
    fn replies_fit_the_clients_maximum_size() {
        let mut cfg = config();
        cfg.subnets[0].domain = Some(format!("{}.example", "d".repeat(200)));
        cfg.subnets[0].dns = (1..=40).map(|d| Ipv4Addr::new(10, 0, 53, d)).collect();
        let mut s = Server::with(cfg);
        let (a, _) = s.run(&discover(mac(1)));
        let Action::Offer { reply, .. } = a else {
            panic!()
        };
        assert!(reply.to_vec().unwrap().len() <= 548);
        assert!(
            opt(&reply, OptionCode::DomainName).is_none(),
            "domain goes first"
        );
        assert!(opt(&reply, OptionCode::AddressLeaseTime).is_some());
        let big = with(discover(mac(2)), DhcpOption::MaxMessageSize(1500));
        let Action::Offer { reply, .. } = s.run(&big).0 else {
            panic!()
        };
        assert!(
            opt(&reply, OptionCode::DomainName).is_some(),
            "room enough with option 57"
        );
    }

    /// Mutation fuzzing: valid requests with random bytes overwritten, decoded
    /// the way the socket loop decodes them, must never make the handler
    /// panic, and whatever it decides must stay within the pools.
    #[test]
    fn mutated_packets_never_panic_the_handler() {
        let mut rng = Rng(0x5eed_f00d);
        let seeds: Vec<Vec<u8>> = [
            with(discover(mac(1)), DhcpOption::UserClass(b"iPXE".to_vec())),
            select(mac(2), v4(100), SID),
            init_reboot(mac(3), v4(101)),
            relayed(renew(mac(4), Ipv4Addr::new(10, 1, 0, 100))),
            decline(mac(5), v4(102)),
            release(mac(6), v4(103)),
            bootp(RESERVED_MAC),
        ]
        .iter()
        .map(|m| m.to_vec().unwrap())
        .collect();
        let mut s = Server::new();
        for _ in 0..20 {
            s.dora(mac(200 + rng.below(50) as u8));
        }
        let mut decided = 0;
        for i in 0..20_000 {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..=rng.below(6) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                b.truncate(rng.below(b.len() as u64) as usize);
            }
            let Ok(req) = options::decode_request(&b) else {
                continue;
            };
            decided += 1;
            match s.decide(&req) {
                Action::Offer { ip, .. } => {
                    let sub = s
                        .state
                        .config
                        .subnet_for(ip)
                        .expect("offer inside a subnet");
                    assert!(
                        in_pool(sub, ip) || s.state.config.reservation_of_ip(ip).is_some(),
                        "{ip}"
                    );
                }
                Action::CommitThenReply {
                    cmd: Command::Grant { lease },
                    ..
                } => {
                    assert_eq!(
                        s.state.apply(&Command::Grant { lease }),
                        CommandResponse::Ok
                    );
                }
                Action::Commit { cmd } => assert_eq!(s.state.apply(&cmd), CommandResponse::Ok),
                _ => {}
            }
        }
        assert!(decided > 10_000, "only {decided} mutants decoded");
    }

    /// xorshift64*: a tiny deterministic PRNG, so failures replay by seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Client {
        Idle,
        Offered(Ipv4Addr),
        Bound(Ipv4Addr, u64),
    }

    /// What the server's lease table must look like, kept by hand from the
    /// replies the clients saw: ip -> (mac, expires) for granted addresses,
    /// ip -> until for quarantined ones, ip -> (mac, until) for offers.
    #[derive(Default)]
    struct Reference {
        bound: HashMap<Ipv4Addr, (Mac, u64)>,
        quarantine: HashMap<Ipv4Addr, u64>,
        offers: HashMap<Ipv4Addr, (Mac, u64)>,
    }

    impl Reference {
        /// Pool addresses this MAC could be offered right now.
        fn free_for(&self, cfg: &ServiceConfig, m: Mac, now: u64) -> Vec<Ipv4Addr> {
            pool()
                .into_iter()
                .filter(|a| cfg.reservation_of_ip(*a).is_none_or(|r| r.mac == m))
                .filter(|a| self.bound.get(a).is_none_or(|&(o, e)| o == m || e <= now))
                .filter(|a| self.quarantine.get(a).is_none_or(|&u| u <= now))
                .filter(|a| self.offers.get(a).is_none_or(|&(o, u)| o == m || u <= now))
                .collect()
        }

        fn grant(&mut self, ip: Ipv4Addr, m: Mac, expires: u64) {
            self.bound.retain(|_, (o, _)| *o != m);
            self.bound.insert(ip, (m, expires));
            self.quarantine.remove(&ip);
        }
    }

    /// Random DISCOVER/REQUEST/RENEW/INIT-REBOOT/RELEASE/DECLINE traffic from
    /// 50 clients on a 30-address pool (two of the clients have reservations,
    /// one inside the pool), checked against a reference model:
    ///
    /// - no address is ever held by two clients at once (as the clients see it);
    /// - every acknowledged address is in the pool or the client's reservation;
    /// - every `Grant` the handler proposes is accepted by the state machine;
    /// - the server's live leases are exactly the reference's;
    /// - a DISCOVER is answered whenever the reference has a free address for it.
    #[test]
    #[allow(clippy::too_many_lines)] // one scenario loop; splitting it would hide the flow
    fn random_traffic_never_double_binds_an_address() {
        let reserved_in_pool = mac(2);
        let mut cfg = config();
        cfg.subnets[0].lease_time = 200;
        cfg.reservations = vec![
            Reservation {
                mac: mac(1),
                ip: v4(50),
                hostname: None,
                profile: None,
            },
            Reservation {
                mac: reserved_in_pool,
                ip: v4(105),
                hostname: None,
                profile: None,
            },
            // Reserved for a MAC that never shows up: never handed out.
            Reservation {
                mac: Mac([9; 6]),
                ip: v4(110),
                hostname: None,
                profile: None,
            },
        ];
        let macs: Vec<Mac> = (1..=50).map(mac).collect();
        let mut acks = 0;
        let mut exhausted = 0;
        for seed in 1..=12u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut s = Server::with(cfg.clone());
            let mut clients: HashMap<Mac, Client> =
                macs.iter().map(|&m| (m, Client::Idle)).collect();
            let mut refm = Reference::default();
            for step in 0..1500 {
                s.now += 1 + rng.below(4);
                let now = s.now;
                let m = macs[rng.below(50) as usize];
                let c = match clients[&m] {
                    Client::Bound(_, e) if e <= now => Client::Idle,
                    c => c,
                };
                let ctx = format!("seed {seed} step {step} {m} {c:?}");
                let req = match (c, rng.below(10)) {
                    (Client::Offered(a), 0..=5) => select(m, a, SID),
                    (Client::Offered(_), 6) => select(m, pool()[rng.below(30) as usize], SID),
                    (Client::Offered(a), 7) => select(m, a, v4(99)),
                    (Client::Bound(a, _), 0..=2) => renew(m, a),
                    (Client::Bound(a, _), 3) => release(m, a),
                    (Client::Bound(a, _), 4) => decline(m, a),
                    (Client::Bound(a, _), 5) => init_reboot(m, a),
                    (_, 8) => init_reboot(m, pool()[rng.below(30) as usize]),
                    _ => discover(m),
                };
                let kind = req.opts().msg_type().unwrap();
                let free = refm.free_for(&s.state.config, m, now);
                let action = s.decide(&req);
                match &action {
                    Action::Drop { reason } => {
                        if kind == MessageType::Discover {
                            assert!(
                                free.is_empty(),
                                "{ctx}: dropped ({reason}) though {free:?} are free"
                            );
                            assert_eq!(*reason, "pool exhausted", "{ctx}");
                            exhausted += 1;
                        }
                        if req.opts().get(OptionCode::ServerIdentifier)
                            == Some(&DhcpOption::ServerIdentifier(v4(99)))
                        {
                            assert_eq!(*reason, "client selected another server");
                        }
                    }
                    Action::Offer {
                        ip: a,
                        mac: om,
                        until,
                        ..
                    } => {
                        assert_eq!(*om, m);
                        let reserved = s.state.config.reservation_for(m).map(|r| r.ip);
                        assert!(
                            free.contains(a) || reserved == Some(*a),
                            "{ctx}: offered {a}, free {free:?}"
                        );
                        s.offers.record(*a, m, *until);
                        refm.offers.retain(|_, (o, _)| *o != m);
                        refm.offers.insert(*a, (m, *until));
                        clients.insert(m, Client::Offered(*a));
                    }
                    Action::CommitThenReply { cmd, reply, .. } => {
                        let Command::Grant { lease } = cmd else {
                            panic!("{ctx}: {cmd:?}")
                        };
                        assert_eq!(
                            s.state.apply(cmd),
                            CommandResponse::Ok,
                            "{ctx}: handler proposed a bad grant"
                        );
                        let a = reply.yiaddr();
                        assert_eq!(a, lease.ip);
                        let reserved = s.state.config.reservation_for(m).map(|r| r.ip);
                        assert!(
                            pool().contains(&a) || reserved == Some(a),
                            "{ctx}: ACKed {a}"
                        );
                        assert!(
                            s.state
                                .config
                                .reservation_of_ip(a)
                                .is_none_or(|r| r.mac == m),
                            "{ctx}: ACKed another client's reservation {a}"
                        );
                        for (&other, oc) in &clients {
                            if let Client::Bound(b, e) = oc {
                                assert!(
                                    other == m || *b != a || *e <= now,
                                    "{ctx}: {a} also held by {other}"
                                );
                            }
                        }
                        refm.grant(a, m, lease.expires_at);
                        clients.insert(m, Client::Bound(a, lease.expires_at));
                        acks += 1;
                    }
                    Action::Reply { reply, .. } => {
                        assert_eq!(reply.opts().msg_type(), Some(MessageType::Nak), "{ctx}");
                        clients.insert(m, Client::Idle);
                    }
                    Action::Commit { cmd } => {
                        assert_eq!(s.state.apply(cmd), CommandResponse::Ok, "{ctx}: {cmd:?}");
                        match cmd {
                            Command::Release { ip: a, at } => {
                                refm.bound.insert(*a, (m, *at));
                            }
                            Command::Decline { ip: a, until, .. } => {
                                refm.bound.remove(a);
                                refm.quarantine.insert(*a, *until);
                            }
                            _ => panic!("{ctx}: {cmd:?}"),
                        }
                        clients.insert(m, Client::Idle);
                    }
                }
                if step % 50 == 0 {
                    s.offers.expire(now);
                }

                // One client, one address: State::apply keeps at most one Bound
                // record per MAC. (This fails if Grant drops the previous holder's
                // by_mac entry without checking that it points at this address,
                // e.g. after DECLINE, quarantine, then reuse by another client.)
                let mut owners = HashSet::new();
                for l in s
                    .state
                    .leases
                    .values()
                    .filter(|l| l.state == LeaseState::Bound)
                {
                    assert!(
                        owners.insert(l.mac),
                        "{ctx}: {} has two lease records: {:?}",
                        l.mac,
                        s.state.leases
                    );
                }

                // The server's live bindings are exactly the reference's.
                let live: HashMap<Ipv4Addr, (Mac, u64)> = s
                    .state
                    .leases
                    .values()
                    .filter(|l| l.state == LeaseState::Bound && l.is_active(now))
                    .map(|l| (l.ip, (l.mac, l.expires_at)))
                    .collect();
                let ref_live: HashMap<Ipv4Addr, (Mac, u64)> = refm
                    .bound
                    .iter()
                    .filter(|(_, (_, e))| *e > now)
                    .map(|(a, v)| (*a, *v))
                    .collect();
                assert_eq!(live, ref_live, "{ctx}");
                // No address is held by two clients.
                let mut held = HashSet::new();
                for c in clients.values() {
                    if let Client::Bound(a, e) = c {
                        if *e > now {
                            assert!(held.insert(*a), "{ctx}: {a} held twice");
                        }
                    }
                }
            }
        }
        eprintln!("{acks} ACKs, {exhausted} exhausted DISCOVERs");
        // The traffic really exercised both the happy path and exhaustion.
        assert!(acks > 3000, "only {acks} ACKs");
        assert!(exhausted > 10, "pool never ran out ({exhausted})");
    }
}
