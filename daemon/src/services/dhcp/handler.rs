//! The DHCP (IPv4) decision, as a pure function.
//!
//! [`handle`] maps one typed [`Request`], a [`View`] (the replicated
//! [`State`], the leader's outstanding [`Offers`], the server id and `now`)
//! and the [`Allocator`]'s cursors to one [`Action`]; [`decide`] does the
//! same for a decoded message, dropping one that is not a valid request as
//! malformed. It opens no socket, reads no clock and counts nothing (the
//! loop counts what [`Action::Drop`] marks malformed); the replies are
//! built by [`Replies`], and the dispatch ([`super::dispatch`]) carries the
//! action out, with the Raft round trip for leases:
//!
//! ```text
//!   request ──▶ handle() ──▶ Drop ─────────────▶ (the loop counts a malformed one)
//!                       ├──▶ Reply ────────────▶ send now           (NAK, INFORM ACK, BOOTP reservation)
//!                       ├──▶ Offer ────────────▶ Offers::record, send OFFER
//!                       ├──▶ Shed ─────────────▶ (counted)          (a flood guard's limit)
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

use dhcproto::v4::{Message, MessageType};

use super::allocator::{Allocator, Offers, Pool};
use super::reply::{Destination, Replies};
use super::request::Request;
use crate::model::{BootpPolicy, Command, Lease, LeaseState, Mac, Reservation, State};

/// What a decision reads besides the request.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The applied replicated state: config and leases.
    pub state: &'a State,
    /// The leader's outstanding offers (not replicated).
    pub offers: &'a Offers,
    /// Server identifier = the VIP; also the default next-server (siaddr).
    pub server_id: Ipv4Addr,
    /// HTTP boot port on the VIP (`service.http_port`), for boot URLs.
    pub http_port: u16,
    /// Unix seconds.
    pub now: u64,
    /// A monotonic clock in ns (any origin), for the token buckets of
    /// [`Allocator::admit_unsolicited`].
    pub now_ns: u64,
}

/// The handler's decision for one request.
// One Action per packet, moved once into the dispatch: boxing the large
// variants would add an allocation per packet for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send; `reason` is logged by the caller, and counted in
    /// `tandem_dhcp_malformed_total` when `malformed` (a request no client
    /// should send, as opposed to one this server must not answer).
    Drop {
        reason: &'static str,
        malformed: bool,
    },
    /// Send now, no state change (NAK, INFORM ACK, BOOTP reservation reply).
    Reply { reply: Message, to: Destination },
    /// DISCOVER answered: send OFFER and remember `ip` as offered to `mac`
    /// until `until` (the dispatch records it in `Offers`); `held` says
    /// whether the address is kept from others meanwhile (not when the pool
    /// is under pressure, see [`super::allocator`]).
    Offer {
        reply: Message,
        to: Destination,
        ip: Ipv4Addr,
        mac: Mac,
        until: u64,
        held: bool,
    },
    /// Not answered because a limit says so (the loop counts `reason` in
    /// `tandem_dhcp_shed_total`): the request may be fine, but it comes
    /// too fast for its kind.
    Shed { reason: &'static str },
    /// Commit `cmd` through Raft (quorum) FIRST; only once it is applied with
    /// `CommandResponse::Ok`, send `reply` (the ACK). If the commit is
    /// rejected, the dispatch sends `nak` instead, to [`Destination::for_nak`].
    ///
    /// For dynamic BOOTP (which has no NAK), `nak` is
    /// [`Replies::bootp_refusal`] of the reply.
    CommitThenReply {
        cmd: Command,
        reply: Message,
        nak: Message,
        to: Destination,
    },
    /// Commit with no reply (RELEASE, DECLINE).
    Commit { cmd: Command },
}

impl Action {
    /// A request this server does not answer (not malformed).
    #[must_use]
    pub fn ignore(reason: &'static str) -> Action {
        Action::Drop {
            reason,
            malformed: false,
        }
    }

    /// A request no client should send: counted as malformed by the loop.
    #[must_use]
    pub fn malformed(reason: &'static str) -> Action {
        Action::Drop {
            reason,
            malformed: true,
        }
    }
}

/// How long an OFFER holds its address for the client (seconds). Clients
/// send their REQUEST within milliseconds of the OFFER; a few seconds cover
/// one lost OFFER and its retransmitted DISCOVER. It used to be 30 s, as
/// ISC dhcpd does, which let a flood of 1,000 DISCOVERs/s from random MACs
/// hold a 200-address pool forever (issue 8); under pressure an OFFER holds
/// nothing at all ([`Allocator::may_hold`]).
pub const OFFER_HOLD_SECS: u64 = 5;

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

/// Reads `msg` ([`Request::parse`]) and decides ([`handle`]); a message
/// that is not a valid request is dropped as malformed.
pub fn decide(msg: &Message, view: &View<'_>, alloc: &mut Allocator) -> Action {
    match Request::parse(msg) {
        Ok(req) => handle(&req, view, alloc),
        Err(reason) => Action::malformed(reason),
    }
}

/// Decides what to do with one request. See the module docs.
pub fn handle(req: &Request<'_>, view: &View<'_>, alloc: &mut Allocator) -> Action {
    let select = [req.giaddr, req.ciaddr]
        .into_iter()
        .find(|a| !a.is_unspecified())
        .unwrap_or(view.server_id);
    let Some(subnet) = view.state.config.subnet_for(select) else {
        return Action::ignore("no subnet configured for the request's network");
    };
    let d = Decision {
        req,
        pool: Pool {
            state: view.state,
            offers: view.offers,
            subnet,
            server_id: view.server_id,
            now: view.now,
        },
        replies: Replies::new(
            req,
            &view.state.config,
            subnet,
            view.server_id,
            view.http_port,
        ),
    };

    let action = match req.kind {
        None => d.bootp(alloc),
        Some(MessageType::Discover) => d.discover(alloc),
        Some(MessageType::Request) => d.request(alloc, view.now_ns),
        Some(MessageType::Release) => d.release(),
        Some(MessageType::Decline) => d.decline(),
        Some(MessageType::Inform) => d.inform(),
        Some(_) => Action::ignore("message type a server does not answer"),
    };
    // What goes out at once to L2 broadcast reaches every host: one budget
    // for all of it, so a flood is not reflected onto the LAN (see
    // `allocator::BROADCAST_REPLIES`). Replies after a commit do not wait on it.
    match action {
        Action::Offer {
            to: Destination::Broadcast,
            ..
        }
        | Action::Reply {
            to: Destination::Broadcast,
            ..
        } if !alloc.admit_broadcast(view.now_ns) => Action::Shed {
            reason: "broadcast",
        },
        a => a,
    }
}

/// One request and everything it is judged against.
struct Decision<'a> {
    req: &'a Request<'a>,
    /// The request's subnet, bound at `now`.
    pool: Pool<'a>,
    replies: Replies<'a>,
}

impl Decision<'_> {
    fn now(&self) -> u64 {
        self.pool.now
    }

    fn free(&self, ip: Ipv4Addr) -> bool {
        self.pool.is_free(ip, self.req.mac)
    }

    /// The client's reservation if it applies here: its address is in the
    /// selected subnet and nobody else holds it. A reservation whose address
    /// is busy (a lease granted before the reservation was added, or a
    /// quarantine) is set aside, the client gets a pool address meanwhile,
    /// and the REQUEST path agrees, so the client is never refused in a loop.
    fn reservation(&self) -> Option<&Reservation> {
        self.pool
            .state
            .config
            .reservation_for(self.req.mac)
            .filter(|r| self.pool.subnet.cidr.contains(&r.ip) && self.free(r.ip))
    }

    fn lease_time(&self) -> u32 {
        self.pool.subnet.lease_time
    }

    // ---- DISCOVER -------------------------------------------------------

    fn discover(&self, alloc: &mut Allocator) -> Action {
        let Some(ip) = self.choose(alloc) else {
            return Action::ignore("pool exhausted");
        };
        // A reservation is the client's alone: holding it costs the pool nothing.
        let reserved = self.reservation().is_some_and(|r| r.ip == ip);
        Action::Offer {
            reply: self.replies.offer(ip),
            to: Destination::of(self.req, ip),
            ip,
            mac: self.req.mac,
            until: self.now() + OFFER_HOLD_SECS,
            held: reserved || alloc.may_hold(&self.pool),
        }
    }

    /// The address to offer, in order of preference: the reservation, an
    /// outstanding offer, held or not (a retransmitted DISCOVER gets the
    /// same answer), the client's own lease record (live or expired), the
    /// address it asks for (option 50), and finally a fresh pick from the
    /// pools.
    fn choose(&self, alloc: &mut Allocator) -> Option<Ipv4Addr> {
        if let Some(r) = self.reservation() {
            return Some(r.ip);
        }
        let reusable = |ip: Ipv4Addr| self.pool.in_pool(ip) && self.free(ip);
        // Held or not: under a flood the OFFER may reach the client after it
        // retransmitted its DISCOVER, and the REQUEST it then sends names the
        // first OFFER's address, which must still be what we offered it.
        let offers = self.pool.offers;
        for (ip, until) in [
            offers.of_mac(self.req.mac),
            offers.unheld_of_mac(self.req.mac),
        ]
        .into_iter()
        .flatten()
        {
            if until > self.now() && reusable(ip) {
                return Some(ip);
            }
        }
        if let Some(l) = self.pool.state.lease_of_mac(self.req.mac) {
            if reusable(l.ip) {
                return Some(l.ip);
            }
        }
        if let Some(ip) = self.req.requested_ip {
            if reusable(ip) {
                return Some(ip);
            }
        }
        alloc.pick(&self.pool, self.req.mac)
    }

    // ---- REQUEST --------------------------------------------------------

    /// RFC 2131 4.3.2: the client's state is told apart by which of server id
    /// (option 54), requested address (option 50) and ciaddr it sets.
    fn request(&self, alloc: &mut Allocator, now_ns: u64) -> Action {
        let ciaddr = self.req.ciaddr;
        if let Some(sid) = self.req.server_id {
            // SELECTING.
            if sid != self.pool.server_id {
                return Action::ignore("client selected another server");
            }
            let ip = self
                .req
                .requested_ip
                .or((!ciaddr.is_unspecified()).then_some(ciaddr));
            let Some(ip) = ip else {
                return Action::malformed("SELECTING REQUEST without a requested address");
            };
            if let Some(refused) = self.unsolicited(ip, alloc, now_ns) {
                return refused;
            }
            return self.grant_or_nak(ip);
        }
        if ciaddr.is_unspecified() {
            // INIT-REBOOT.
            let Some(ip) = self.req.requested_ip else {
                return Action::malformed(
                    "REQUEST with neither server id, requested address nor ciaddr",
                );
            };
            return self.init_reboot(ip);
        }
        // RENEWING (unicast) or REBINDING (broadcast): judged alike, since
        // there is one server (cluster) to ask.
        self.grant_or_nak(ciaddr)
    }

    /// The flood guard of a SELECTING REQUEST (see [`super::allocator`]):
    /// `None` when it follows an OFFER of ours for `ip` (or names the
    /// client's own reservation or live lease), or when no OFFER preceded it
    /// but the pool has room and the buckets a token; else the refusal: a NAK
    /// under pressure (a real client, e.g. one whose OFFER came from the old
    /// leader, then DISCOVERs again at once), shedding otherwise.
    fn unsolicited(&self, ip: Ipv4Addr, alloc: &mut Allocator, now_ns: u64) -> Option<Action> {
        let mac = self.req.mac;
        if self.pool.offers.was_offered(mac, ip, self.now())
            || self.reservation().is_some_and(|r| r.ip == ip)
            || self
                .pool
                .state
                .lease_of_ip(ip)
                .is_some_and(|l| l.mac == mac && l.is_active(self.now()))
        {
            return None;
        }
        if alloc.under_pressure(&self.pool) {
            return Some(self.nak("no offer for this address and the pool is nearly full"));
        }
        if !alloc.admit_unsolicited(mac, now_ns) {
            return Some(Action::Shed {
                reason: "unsolicited_request",
            });
        }
        None
    }

    /// A rebooting client asks to keep `ip`. NAK when the address is wrong
    /// for it; stay silent when we know nothing about the client (RFC 2131
    /// 4.3.2), so another server that does know it may answer.
    fn init_reboot(&self, ip: Ipv4Addr) -> Action {
        let mac = self.req.mac;
        if !self.pool.subnet.cidr.contains(&ip) {
            return self.nak("requested address is not on the client's network");
        }
        if let Some(l) = self.pool.state.lease_of_ip(ip) {
            if l.is_active(self.now()) && (l.mac != mac || l.state == LeaseState::Declined) {
                return self.nak("requested address is in use by another client");
            }
        }
        // What we know of the client: its reservation, else its lease record.
        let known = match (self.reservation(), self.pool.state.lease_of_mac(mac)) {
            (Some(r), _) => Some((r.ip, "client has a reservation for another address")),
            (None, Some(l)) => Some((l.ip, "client's lease is for another address")),
            (None, None) => None,
        };
        match known {
            None => Action::ignore("INIT-REBOOT from a client with no lease here"),
            Some((theirs, why)) if theirs != ip => self.nak(why),
            Some(_) => self.grant_or_nak(ip),
        }
    }

    /// Whether `ip` may be bound to this client now; the reservation that
    /// applies, if any, on success, and the NAK text otherwise.
    fn check_grant(&self, ip: Ipv4Addr) -> Result<Option<&Reservation>, &'static str> {
        if !self.pool.subnet.cidr.contains(&ip) {
            return Err("requested address is not on the client's network");
        }
        if self.pool.is_excluded(ip) {
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
            .pool
            .state
            .lease_of_ip(ip)
            .is_some_and(|l| l.mac == self.req.mac && l.state == LeaseState::Bound);
        if own || self.pool.in_pool(ip) {
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
        Action::CommitThenReply {
            cmd: Command::Grant {
                lease: self.lease(ip, res),
            },
            reply: self.replies.ack(ip),
            nak: self.replies.nak("lease could not be committed"),
            to: Destination::of(self.req, ip),
        }
    }

    fn lease(&self, ip: Ipv4Addr, res: Option<&Reservation>) -> Lease {
        Lease {
            ip,
            mac: self.req.mac,
            state: LeaseState::Bound,
            // The operator's name wins over what the client calls itself.
            hostname: res
                .and_then(|r| r.hostname.clone())
                .or_else(|| self.req.hostname.map(str::to_owned)),
            granted_at: self.now(),
            expires_at: self.now() + u64::from(self.lease_time()),
        }
    }

    fn nak(&self, why: &'static str) -> Action {
        tracing::debug!(target: "tandem::packet::dhcp", mac = %self.req.mac, reason = why, "NAK");
        Action::Reply {
            reply: self.replies.nak(why),
            to: Destination::of_nak(self.req),
        }
    }

    // ---- RELEASE, DECLINE, INFORM ----------------------------------------

    fn foreign(&self) -> bool {
        self.req.server_id.is_some_and(|s| s != self.pool.server_id)
    }

    fn release(&self) -> Action {
        if self.foreign() {
            return Action::ignore("RELEASE addressed to another server");
        }
        let ip = self.req.ciaddr;
        if ip.is_unspecified() {
            return Action::malformed("RELEASE without ciaddr");
        }
        match self.pool.state.lease_of_ip(ip) {
            Some(l) if l.mac == self.req.mac && l.state == LeaseState::Bound => {
                if l.is_active(self.now()) {
                    Action::Commit {
                        cmd: Command::Release { ip, at: self.now() },
                    }
                } else {
                    Action::ignore("RELEASE of an expired lease")
                }
            }
            _ => Action::ignore("RELEASE of an address the client does not hold"),
        }
    }

    /// Only the holder may decline an address; otherwise any host on the
    /// segment could quarantine the whole pool with forged DECLINEs.
    fn decline(&self) -> Action {
        if self.foreign() {
            return Action::ignore("DECLINE addressed to another server");
        }
        let Some(ip) = self.req.requested_ip else {
            return Action::malformed("DECLINE without a requested address");
        };
        let mac = self.req.mac;
        match self.pool.state.lease_of_ip(ip) {
            Some(l) if l.mac == mac && l.state == LeaseState::Bound => {
                let lease_time = self
                    .pool
                    .state
                    .config
                    .subnet_for(ip)
                    .unwrap_or(self.pool.subnet)
                    .lease_time;
                let at = self.now();
                tracing::info!(target: "tandem::dhcp", %ip, %mac, "address declined: quarantined");
                Action::Commit {
                    cmd: Command::Decline {
                        ip,
                        mac,
                        at,
                        until: at + quarantine_secs(lease_time),
                    },
                }
            }
            _ => Action::ignore("DECLINE of an address the client does not hold"),
        }
    }

    /// RFC 2131 3.4: a client with an address configured by other means
    /// asks for the rest: options, no yiaddr, no lease time.
    fn inform(&self) -> Action {
        let to = if self.req.relayed() {
            Destination::Relay(self.req.giaddr)
        } else if !self.req.ciaddr.is_unspecified() {
            Destination::Unicast(self.req.ciaddr)
        } else {
            return Action::malformed("INFORM without ciaddr");
        };
        Action::Reply {
            reply: self.replies.inform_ack(),
            to,
        }
    }

    // ---- BOOTP ----------------------------------------------------------

    /// RFC 951 clients (no option 53): a BOOTREPLY without DHCP-only options.
    fn bootp(&self, alloc: &mut Allocator) -> Action {
        if let Some(r) = self.reservation() {
            return Action::Reply {
                reply: self.replies.bootreply(r.ip),
                to: Destination::of(self.req, r.ip),
            };
        }
        if self.pool.state.config.bootp == BootpPolicy::ReservationsOnly {
            return Action::ignore("BOOTP client without a reservation");
        }
        let own = self
            .pool
            .state
            .lease_of_mac(self.req.mac)
            .map(|l| l.ip)
            .filter(|&ip| self.pool.in_pool(ip) && self.free(ip));
        let Some(ip) = own.or_else(|| alloc.pick(&self.pool, self.req.mac)) else {
            return Action::ignore("pool exhausted");
        };
        let reply = self.replies.bootreply(ip);
        Action::CommitThenReply {
            cmd: Command::Grant {
                lease: self.lease(ip, None),
            },
            nak: Replies::bootp_refusal(&reply),
            reply,
            to: Destination::of(self.req, ip),
        }
    }
}
