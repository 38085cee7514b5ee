//! Which addresses are free, and which one to hand out next.
//!
//! Leader-local, non-replicated memory lives here:
//!
//! - [`Offers`]: addresses offered and not yet requested. An offer is not
//!   worth a Raft round trip (most are answered within milliseconds, and a
//!   new leader losing them only means a client sees a NAK or a different
//!   offer), but while it holds, the address is not offered to anyone else.
//!   Offers also remember, briefly, what was offered to whom without a hold,
//!   so a REQUEST can be told apart from one that no OFFER preceded.
//! - [`Allocator`]: one scan cursor per subnet, so that picking a free pool
//!   address costs O(1) amortised instead of a walk over 20,000 leases; the
//!   pool pressure per subnet ([`Allocator::may_hold`]); and the limiter of
//!   unsolicited SELECTING REQUESTs ([`Allocator::admit_unsolicited`]).
//!
//! Flood policy (issue 8, point 4): a flood of DISCOVERs from random MACs
//! must not take the pool away from real clients.
//!
//! ```text
//!   DISCOVER ─▶ pick a free address ─▶ pool busy < 80 %? ─ yes ─▶ OFFER, held OFFER_HOLD_SECS
//!                                                      └ no ──▶ OFFER, not held
//!   SELECTING REQUEST ─▶ offered to this MAC? ─ yes ─────────────────────▶ commit
//!                                          └ no ─▶ pool busy >= 80 %? ─ yes ─▶ NAK (DISCOVER again)
//!                                                  └ no ─▶ MAC and global buckets ─ ok ─▶ commit
//!                                                                                 └ empty ─▶ shed
//!   OFFER or NAK sent at once to L2 broadcast ─▶ broadcast bucket ─ ok ─▶ send
//!                                                             └ empty ─▶ shed
//! ```
//!
//! "Busy" counts live leases and held offers in the subnet's pools. Past
//! 80 % an OFFER reserves nothing, so a flood's offers cannot keep the last
//! fifth of the pool away from a client whose REQUEST follows its OFFER at
//! once; at worst two clients race for one address and the loser gets a NAK
//! and starts again, as Kea (which holds no offers at all) does.
//!
//! Replies broadcast at L2 reach every host, so the server must not turn a
//! flood into as many broadcasts: those sent at once (OFFERs to clients
//! that set the broadcast flag, NAKs to SELECTING or INIT-REBOOT REQUESTs)
//! share one bucket ([`BROADCAST_REPLIES`]) and the rest are shed; a
//! client that is shed retransmits. Replies to commits never wait on it.
//!
//! Both are read through a [`Pool`]: one request's bound view of its subnet
//! (state, offers, subnet, server id, now). The freedom rule itself is
//! [`Pool::is_free`]; the handler uses the same function for requested
//! addresses, so "what the allocator would hand out" and "what a REQUEST may
//! claim" cannot drift apart.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tandem_ebpf_common::{Bucket, Limit};

use crate::model::{LeaseState, Mac, PoolRange, State, Subnet};

/// Addresses offered and not yet taken: ip -> (mac, until). A MAC holds at
/// most one offer: recording a new one drops its previous offer.
#[derive(Clone, Debug, Default)]
pub struct Offers {
    by_ip: HashMap<Ipv4Addr, (Mac, u64)>,
    by_mac: HashMap<Mac, Ipv4Addr>,
    /// Offers sent without a hold (pool under pressure): mac -> (ip, until).
    /// Holds nothing; only tells a REQUEST that follows an OFFER from one
    /// that does not. Bounded by the DISCOVER rate times the hold time, and
    /// emptied by [`Offers::expire`].
    unheld: HashMap<Mac, (Ipv4Addr, u64)>,
}

impl Offers {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers that `ip` was offered to `mac` until `until` (Unix seconds).
    pub fn record(&mut self, ip: Ipv4Addr, mac: Mac, until: u64) {
        if let Some(old_ip) = self.by_mac.insert(mac, ip) {
            if old_ip != ip {
                self.by_ip.remove(&old_ip);
            }
        }
        if let Some((old_mac, _)) = self.by_ip.insert(ip, (mac, until)) {
            // Invariant: by_mac points only at addresses whose by_ip entry names that MAC.
            if old_mac != mac && self.by_mac.get(&old_mac) == Some(&ip) {
                self.by_mac.remove(&old_mac);
            }
        }
    }

    /// Remembers that `ip` was offered to `mac` until `until` without holding
    /// it for the client ([`Offers::was_offered`] sees it, nothing else).
    pub fn record_unheld(&mut self, ip: Ipv4Addr, mac: Mac, until: u64) {
        self.unheld.insert(mac, (ip, until));
    }

    /// Whether `ip` was offered to `mac`, held or not, and the offer stands at `now`.
    #[must_use]
    pub fn was_offered(&self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        let held = matches!(self.by_ip.get(&ip), Some(&(m, until)) if m == mac && until > now);
        held || matches!(self.unheld.get(&mac), Some(&(i, until)) if i == ip && until > now)
    }

    /// Held, unexpired offers whose address satisfies `within`.
    fn held_where(&self, now: u64, within: impl Fn(Ipv4Addr) -> bool) -> u64 {
        let n = self
            .by_ip
            .iter()
            .filter(|(&ip, &(_, until))| until > now && within(ip))
            .count();
        n as u64
    }

    /// Who `ip` was offered to and until when; expired entries are returned
    /// too (callers compare `until` with their `now`).
    #[must_use]
    pub fn get(&self, ip: Ipv4Addr) -> Option<(Mac, u64)> {
        self.by_ip.get(&ip).copied()
    }

    /// The address offered to `mac`, if any, and until when.
    #[must_use]
    pub fn of_mac(&self, mac: Mac) -> Option<(Ipv4Addr, u64)> {
        let ip = *self.by_mac.get(&mac)?;
        self.by_ip.get(&ip).map(|&(_, until)| (ip, until))
    }

    /// The address offered to `mac` without a hold, if any, and until when
    /// (expired entries too, as with [`Offers::of_mac`]).
    #[must_use]
    pub fn unheld_of_mac(&self, mac: Mac) -> Option<(Ipv4Addr, u64)> {
        self.unheld.get(&mac).copied()
    }

    /// Forgets every offer whose `until <= now`; returns how many went.
    /// The caller runs it periodically; correctness does not depend on it
    /// (expired offers are ignored everywhere), only memory does.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.by_ip.len();
        self.by_ip.retain(|_, &mut (_, until)| until > now);
        let by_ip = &self.by_ip;
        self.by_mac.retain(|_, ip| by_ip.contains_key(ip));
        self.unheld.retain(|_, &mut (_, until)| until > now);
        before - self.by_ip.len()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// One request's view of the addresses of its subnet, bound once per
/// request: the replicated state, the leader's outstanding offers, the
/// selected subnet, the server's own address and the decision's clock.
/// Every freedom question ([`Pool::is_free`]) and every pick
/// ([`Allocator::pick`]) is asked of it.
#[derive(Clone, Copy, Debug)]
pub struct Pool<'a> {
    pub state: &'a State,
    pub offers: &'a Offers,
    pub subnet: &'a Subnet,
    /// The VIP: never handed out.
    pub server_id: Ipv4Addr,
    /// Unix seconds; leases, quarantines and offers end at it.
    pub now: u64,
}

impl Pool<'_> {
    /// True for addresses that must never be handed out in the subnet,
    /// whoever asks: the server's own address (the VIP), the router, and the
    /// network and broadcast addresses (for prefixes shorter than /31, where
    /// they exist).
    #[must_use]
    pub fn is_excluded(&self, ip: Ipv4Addr) -> bool {
        let net = self.subnet.cidr;
        ip == self.server_id
            || self.subnet.router == Some(ip)
            || (net.prefix_len() < 31 && (ip == net.network() || ip == net.broadcast()))
    }

    /// Whether `ip` lies in one of the subnet's dynamic pools.
    #[must_use]
    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        let subnet = self.subnet;
        subnet.cidr.contains(&ip) && subnet.pools.iter().any(|p| p.contains(ip))
    }

    /// Whether `ip` may be handed to `mac` now as far as bindings go:
    ///
    /// - not excluded ([`Pool::is_excluded`]);
    /// - not bound (unexpired) to another MAC;
    /// - not quarantined by an unexpired DECLINE (whoever declined it);
    /// - not reserved for another MAC;
    /// - not offered (unexpired) to another MAC.
    ///
    /// It does not check pool membership: callers decide whether the address
    /// must be in a pool (dynamic) or may be outside it (reservations, the
    /// client's own lease).
    #[must_use]
    pub fn is_free(&self, ip: Ipv4Addr, mac: Mac) -> bool {
        if self.is_excluded(ip) || self.held_by_other(ip, mac) {
            return false;
        }
        self.state
            .config
            .reservation_of_ip(ip)
            .is_none_or(|r| r.mac == mac)
    }

    /// The binding part of [`Pool::is_free`] without the config checks
    /// (exclusions, reservations), so the allocator can do those from a
    /// precomputed set.
    fn held_by_other(&self, ip: Ipv4Addr, mac: Mac) -> bool {
        let now = self.now;
        if let Some(l) = self.state.leases.get(&ip) {
            if l.is_active(now) {
                match l.state {
                    LeaseState::Declined => return true,
                    LeaseState::Bound if l.mac != mac => return true,
                    LeaseState::Bound => {}
                }
            }
        }
        matches!(self.offers.get(ip), Some((m, until)) if m != mac && until > now)
    }
}

/// Picks free pool addresses with one cursor per subnet.
///
/// Order of preference (like Kea's iterative allocator): addresses that have
/// no lease record at all come first, walking the pools from a cursor that
/// only moves forward; once a whole lap finds none, expired records of other
/// clients are reused, in the same cursor order (so the address the cursor
/// passed longest ago, roughly the oldest grant, goes first). A client's own
/// expired record is the handler's business, before it asks here.
///
/// Cost: each pick resumes where the last one stopped, so a lap over the pool
/// is shared by all the picks made during it: O(1) amortised while the pool
/// has room. The two expensive cases are memoised: "no never-used address
/// left" until the lease table shrinks, and "pool exhausted" for the rest of
/// that second (unless the lease table changes size), so a flood of DISCOVERs
/// against a full pool costs one lap per second, not one per packet.
///
/// Deterministic: the same sequence of calls with the same inputs gives the
/// same answers (no hashing order or clock is consulted).
#[derive(Debug, Default)]
pub struct Allocator {
    cursors: HashMap<Ipv4Net, Cursor>,
    /// Candidates examined by all picks so far: the cost measure that the
    /// amortisation claims are about (tests and diagnostics read it).
    examined: u64,
    /// Per-subnet pool pressure, recounted once a second.
    pressure: HashMap<Ipv4Net, Pressure>,
    /// Unsolicited SELECTING REQUESTs, per MAC and in all.
    unsolicited: Unsolicited,
    /// Broadcast OFFERs and immediate NAKs ([`BROADCAST_REPLIES`]).
    broadcasts: Option<Bucket>,
}

/// Share of a pool, in percent, past which an OFFER holds nothing and an
/// unsolicited SELECTING REQUEST is refused.
pub const PRESSURE_PERCENT: u64 = 80;

/// One subnet's busy count: live leases and held offers in its pools, as
/// counted at `at`, plus the holds granted since.
#[derive(Debug)]
struct Pressure {
    at: u64,
    busy: u64,
    total: u64,
}

impl Pressure {
    fn high(&self) -> bool {
        self.busy * 100 >= self.total * PRESSURE_PERCENT
    }
}

/// Per-MAC limit of SELECTING REQUESTs that no OFFER of this node preceded:
/// a client that got its OFFER from the old leader sends one or two; a
/// flood sends thousands: 4 per second, bursts of 16.
pub const UNSOLICITED_PER_MAC: Limit = Limit::new(4, 16);
/// All unsolicited SELECTING REQUESTs together, whatever their MACs: a
/// flood from random MACs gets a fresh per-MAC bucket for each packet, so
/// this one bounds the leases such a flood can commit (50/s, bursts of 200:
/// a failover with hundreds of clients mid-DORA still passes).
pub const UNSOLICITED_TOTAL: Limit = Limit::new(50, 200);
/// Replies to clients that asked for broadcast (flag set, or an immediate
/// NAK), in all: 500/s, bursts of 1,000. Each such reply reaches every host
/// on the segment, so a flood of DISCOVERs or SELECTING REQUESTs from random
/// MACs that got one each would be reflected onto the whole LAN at its own
/// rate, and a real client's packet socket, which sees every broadcast to
/// port 68, overflows and drops its own ACK (measured: 4,400 broadcasts/s
/// from the leader under the flood test's 6,200 frames/s, and udhcpc
/// missed three ACKs in a row that had reached its interface). L2-unicast
/// replies and the replies to commits (ACK or NAK after a REQUEST, which a
/// real client waits for) never draw on it.
pub const BROADCAST_REPLIES: Limit = Limit::new(500, 1_000);
/// MAC buckets kept at most; past it the map is cleared (a flood of random
/// MACs is what fills it, and the global bucket still holds meanwhile).
const UNSOLICITED_MACS: usize = 4096;

/// The buckets of [`Allocator::admit_unsolicited`]. Time is in ns since an
/// arbitrary origin (the caller's monotonic clock), as in the XDP program.
#[derive(Debug, Default)]
struct Unsolicited {
    per_mac: HashMap<Mac, Bucket>,
    total: Option<Bucket>,
}

#[derive(Debug)]
struct Cursor {
    /// The pools this cursor was built for; a config change rebuilds it.
    pools: Vec<PoolRange>,
    /// Non-empty ranges, clamped to the subnet, in config order.
    ranges: Vec<(u32, u32)>,
    /// Sum of the range lengths.
    total: u64,
    /// Position (0..total) of the next candidate.
    next: u64,
    /// `state.leases.len()` when a whole lap found no never-used address.
    /// While the table is at least that large, the never-used lap is skipped.
    fresh_gone_at: Option<usize>,
    /// `(now, state.leases.len())` of the last lap that found nothing at all.
    exhausted_at: Option<(u64, usize)>,
    /// When the last "pool exhausted" warning was logged (rate limit).
    warned_at: Option<u64>,
}

/// How often, at most, to warn about an exhausted pool (seconds).
const EXHAUSTED_WARN_EVERY: u64 = 60;

impl Cursor {
    fn new(subnet: &Subnet) -> Self {
        let lo = u32::from(subnet.cidr.network());
        let hi = u32::from(subnet.cidr.broadcast());
        let ranges: Vec<(u32, u32)> = subnet
            .pools
            .iter()
            .map(|p| (u32::from(p.start).max(lo), u32::from(p.end).min(hi)))
            .filter(|(s, e)| s <= e)
            .collect();
        let total = ranges.iter().map(|&(s, e)| u64::from(e - s) + 1).sum();
        Cursor {
            pools: subnet.pools.clone(),
            ranges,
            total,
            next: 0,
            fresh_gone_at: None,
            exhausted_at: None,
            warned_at: None,
        }
    }

    /// The address at position `pos` (< total).
    fn addr(&self, mut pos: u64) -> Ipv4Addr {
        for &(s, e) in &self.ranges {
            let len = u64::from(e - s) + 1;
            if pos < len {
                // pos < len <= 2^32, and s + pos <= e.
                return Ipv4Addr::from(s + pos as u32);
            }
            pos -= len;
        }
        unreachable!("cursor position beyond the pool total")
    }

    /// Walks at most one lap from the cursor; returns the first address for
    /// which `ok` holds and leaves the cursor just past it. Adds the number of
    /// candidates looked at to `examined`.
    fn lap(
        &mut self,
        examined: &mut u64,
        mut ok: impl FnMut(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        for _ in 0..self.total {
            let ip = self.addr(self.next);
            self.next = (self.next + 1) % self.total;
            *examined += 1;
            if ok(ip) {
                return Some(ip);
            }
        }
        None
    }
}

impl Allocator {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many candidate addresses all picks so far have examined.
    #[must_use]
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Whether an OFFER made now from `pool`'s subnet may hold its address:
    /// true while live leases and held offers fill less than
    /// [`PRESSURE_PERCENT`] of the subnet's pools. A true answer counts one
    /// more hold, so a burst within one second cannot overshoot.
    pub fn may_hold(&mut self, pool: &Pool<'_>) -> bool {
        let p = self.pressure_of(pool);
        if p.high() {
            return false;
        }
        p.busy += 1;
        true
    }

    /// Whether `pool`'s subnet is under pressure (see [`Allocator::may_hold`]).
    pub fn under_pressure(&mut self, pool: &Pool<'_>) -> bool {
        self.pressure_of(pool).high()
    }

    /// The subnet's pressure, recounted when the second changed: one walk
    /// over the lease table and the held offers per second and subnet, not
    /// one per packet.
    fn pressure_of(&mut self, pool: &Pool<'_>) -> &mut Pressure {
        let now = pool.now;
        let p = self.pressure.entry(pool.subnet.cidr).or_insert(Pressure {
            at: now.wrapping_sub(1),
            busy: 0,
            total: 0,
        });
        if p.at != now {
            let in_pool = |ip: Ipv4Addr| pool.in_pool(ip);
            let leases = pool
                .state
                .leases
                .values()
                .filter(|l| l.is_active(now) && in_pool(l.ip))
                .count() as u64;
            let total = Cursor::new(pool.subnet).total;
            *p = Pressure {
                at: now,
                busy: leases + pool.offers.held_where(now, in_pool),
                total,
            };
        }
        p
    }

    /// Takes a token for an unsolicited SELECTING REQUEST from `mac` at
    /// `now_ns` (monotonic ns): its MAC's bucket ([`UNSOLICITED_PER_MAC`])
    /// and the global one ([`UNSOLICITED_TOTAL`]) must both have one.
    pub fn admit_unsolicited(&mut self, mac: Mac, now_ns: u64) -> bool {
        let u = &mut self.unsolicited;
        if u.per_mac.len() >= UNSOLICITED_MACS && !u.per_mac.contains_key(&mac) {
            u.per_mac.clear();
        }
        let mac_ok = if let Some(b) = u.per_mac.get_mut(&mac) {
            b.take(now_ns, UNSOLICITED_PER_MAC)
        } else {
            u.per_mac
                .insert(mac, Bucket::first(now_ns, UNSOLICITED_PER_MAC));
            true
        };
        if !mac_ok {
            return false;
        }
        if let Some(b) = &mut u.total {
            b.take(now_ns, UNSOLICITED_TOTAL)
        } else {
            u.total = Some(Bucket::first(now_ns, UNSOLICITED_TOTAL));
            true
        }
    }

    /// Takes a token for one L2-broadcast reply at `now_ns` from the
    /// [`BROADCAST_REPLIES`] bucket; false means "shed it".
    pub fn admit_broadcast(&mut self, now_ns: u64) -> bool {
        if let Some(b) = &mut self.broadcasts {
            return b.take(now_ns, BROADCAST_REPLIES);
        }
        self.broadcasts = Some(Bucket::first(now_ns, BROADCAST_REPLIES));
        true
    }

    /// A free address from `pool`'s subnet for `mac`, or `None` when the
    /// pool is exhausted (logged at warn level, target `tandem::dhcp`, at most
    /// once a minute per subnet). Advances the subnet's cursor past the
    /// address returned, so the caller should use it (offer it or grant it).
    pub fn pick(&mut self, pool: &Pool<'_>, mac: Mac) -> Option<Ipv4Addr> {
        let (state, subnet, now) = (pool.state, pool.subnet, pool.now);
        let cur = self
            .cursors
            .entry(subnet.cidr)
            .or_insert_with(|| Cursor::new(subnet));
        if cur.pools != subnet.pools {
            *cur = Cursor::new(subnet);
        }
        if cur.total == 0 {
            return None;
        }
        let n_leases = state.leases.len();
        if cur.exhausted_at == Some((now, n_leases)) {
            return None;
        }

        // Reserved addresses of other clients, computed once per pick so each
        // candidate costs a hash lookup, not a walk over the reservations.
        let reserved: HashSet<Ipv4Addr> = state
            .config
            .reservations
            .iter()
            .filter(|r| r.mac != mac && subnet.cidr.contains(&r.ip))
            .map(|r| r.ip)
            .collect();
        let usable = |ip: Ipv4Addr| {
            !pool.is_excluded(ip) && !reserved.contains(&ip) && !pool.held_by_other(ip, mac)
        };

        if cur.fresh_gone_at.is_some_and(|n| n_leases < n) {
            cur.fresh_gone_at = None;
        }
        if cur.fresh_gone_at.is_none() {
            if let Some(ip) = cur.lap(&mut self.examined, |ip| {
                !state.leases.contains_key(&ip) && usable(ip)
            }) {
                return Some(ip);
            }
            cur.fresh_gone_at = Some(n_leases);
        }
        if let Some(ip) = cur.lap(&mut self.examined, usable) {
            cur.exhausted_at = None;
            return Some(ip);
        }

        cur.exhausted_at = Some((now, n_leases));
        if cur
            .warned_at
            .is_none_or(|t| now >= t + EXHAUSTED_WARN_EVERY || now < t)
        {
            cur.warned_at = Some(now);
            tracing::warn!(
                target: "tandem::dhcp",
                subnet = %subnet.cidr,
                pool_size = cur.total,
                leases = n_leases,
                "pool exhausted: no free address to offer"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Command, Lease, Reservation};

    fn mac(n: u16) -> Mac {
        let [a, b] = n.to_be_bytes();
        Mac([2, 0, 0, 0, a, b])
    }

    fn subnet(pool: &str) -> Subnet {
        Subnet {
            cidr: "10.0.0.0/16".parse().unwrap(),
            pools: vec![pool.parse().unwrap()],
            router: Some(Ipv4Addr::new(10, 0, 0, 1)),
            dns: vec![],
            domain: None,
            lease_time: 600,
            next_server: None,
            profile: None,
        }
    }

    fn state_with(sub: &Subnet) -> State {
        let mut s = State::default();
        s.config.subnets.push(sub.clone());
        s
    }

    fn grant(s: &mut State, ip: Ipv4Addr, m: Mac, at: u64, len: u64) {
        let lease = Lease {
            ip,
            mac: m,
            state: LeaseState::Bound,
            hostname: None,
            granted_at: at,
            expires_at: at + len,
        };
        assert_eq!(
            s.apply(&Command::Grant { lease }),
            crate::model::CommandResponse::Ok
        );
    }

    const SID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// `state`'s view of `subnet` at `now`, as the handler binds it.
    fn at<'a>(state: &'a State, offers: &'a Offers, subnet: &'a Subnet, now: u64) -> Pool<'a> {
        Pool {
            state,
            offers,
            subnet,
            server_id: SID,
            now,
        }
    }

    #[test]
    fn offers_keep_one_per_mac_and_expire() {
        let mut o = Offers::new();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6));
        o.record(a, mac(1), 100);
        o.record(b, mac(1), 110);
        assert_eq!(o.get(a), None, "a MAC's older offer is dropped");
        assert_eq!(o.of_mac(mac(1)), Some((b, 110)));
        // Another MAC taking over the address removes the first MAC's index.
        o.record(b, mac(2), 120);
        assert_eq!(o.of_mac(mac(1)), None);
        assert_eq!(o.get(b), Some((mac(2), 120)));
        o.record(a, mac(3), 90);
        assert_eq!(o.expire(100), 1);
        assert_eq!(o.len(), 1);
        assert_eq!(o.of_mac(mac(3)), None);
        assert_eq!(o.expire(120), 1);
        assert!(o.is_empty());
    }

    #[test]
    fn skips_excluded_reserved_offered_and_bound_addresses() {
        // Pool 10.0.0.0-10.0.0.8 includes the network address, the router (.1)
        // and the server (.2).
        let sub = subnet("10.0.0.0-10.0.0.8");
        let mut s = state_with(&sub);
        s.config.reservations.push(Reservation {
            mac: mac(99),
            ip: Ipv4Addr::new(10, 0, 0, 3),
            hostname: None,
            profile: None,
        });
        grant(&mut s, Ipv4Addr::new(10, 0, 0, 4), mac(50), 0, 600);
        let mut offers = Offers::new();
        offers.record(Ipv4Addr::new(10, 0, 0, 5), mac(51), 100);
        s.apply(&Command::Decline {
            ip: Ipv4Addr::new(10, 0, 0, 6),
            mac: mac(52),
            at: 0,
            until: 1000,
        });

        let mut a = Allocator::new();
        let mut got = vec![];
        while let Some(ip) = a.pick(&at(&s, &offers, &sub, 10), mac(1)) {
            offers.record(ip, mac(1000 + got.len() as u16), 100);
            got.push(ip);
        }
        assert_eq!(
            got,
            vec![Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 0, 0, 8)]
        );

        // The reserved address is free for its owner, never for others.
        let view = at(&s, &offers, &sub, 10);
        assert!(view.is_free(Ipv4Addr::new(10, 0, 0, 3), mac(99)));
        assert!(!view.is_free(Ipv4Addr::new(10, 0, 0, 3), mac(1)));
        // After the offers, the lease and the quarantine run out, all come back.
        let mut later = vec![];
        let mut fresh = Offers::new();
        while let Some(ip) = a.pick(&at(&s, &fresh, &sub, 1000), mac(1)) {
            fresh.record(ip, mac(2000 + later.len() as u16), 2000);
            later.push(ip);
        }
        later.sort();
        let want: Vec<Ipv4Addr> = [4, 5, 6, 7, 8]
            .iter()
            .map(|&d| Ipv4Addr::new(10, 0, 0, d))
            .collect();
        assert_eq!(later, want);
    }

    #[test]
    fn prefers_never_used_addresses_over_expired_ones() {
        let sub = subnet("10.0.1.0-10.0.1.9");
        let mut s = state_with(&sub);
        // .0-.4 were leased long ago and have expired.
        for d in 0..5u8 {
            grant(&mut s, Ipv4Addr::new(10, 0, 1, d), mac(u16::from(d)), 0, 10);
        }
        let mut a = Allocator::new();
        let offers = Offers::new();
        let mut picks = vec![];
        for i in 0..10u16 {
            let ip = a
                .pick(&at(&s, &offers, &sub, 100), mac(100 + i))
                .expect("pool has room");
            grant(&mut s, ip, mac(100 + i), 100, 600);
            picks.push(ip.octets()[3]);
        }
        assert_eq!(&picks[..5], &[5, 6, 7, 8, 9], "never-used first");
        let mut reused = picks[5..].to_vec();
        reused.sort_unstable();
        assert_eq!(reused, vec![0, 1, 2, 3, 4], "then the expired ones");
        assert_eq!(
            a.pick(&at(&s, &offers, &sub, 100), mac(200)),
            None,
            "all ten are live now"
        );
        // One second later, one lease released: the pick finds it again.
        s.apply(&Command::Release {
            ip: Ipv4Addr::new(10, 0, 1, 7),
            at: 101,
        });
        assert_eq!(
            a.pick(&at(&s, &offers, &sub, 101), mac(200)),
            Some(Ipv4Addr::new(10, 0, 1, 7))
        );
    }

    #[test]
    fn config_change_rebuilds_the_cursor() {
        let sub = subnet("10.0.2.10-10.0.2.10");
        let s = state_with(&sub);
        let mut a = Allocator::new();
        let offers = Offers::new();
        assert_eq!(
            a.pick(&at(&s, &offers, &sub, 0), mac(1)),
            Some(Ipv4Addr::new(10, 0, 2, 10))
        );
        let sub2 = subnet("10.0.2.20-10.0.2.21");
        assert_eq!(
            a.pick(&at(&s, &offers, &sub2, 0), mac(1)),
            Some(Ipv4Addr::new(10, 0, 2, 20))
        );
        // Empty (reversed) pool: nothing, no panic.
        let mut empty = subnet("10.0.2.30-10.0.2.30");
        empty.pools = vec![PoolRange {
            start: Ipv4Addr::new(10, 0, 2, 9),
            end: Ipv4Addr::new(10, 0, 2, 1),
        }];
        assert_eq!(a.pick(&at(&s, &offers, &empty, 0), mac(1)), None);
    }

    /// 20,000 live leases spread over a /16 and 5,000 picks: each pick
    /// examines a couple of candidates, not the lease table.
    #[test]
    fn picks_are_amortised_constant_with_20000_leases() {
        let sub = subnet("10.0.0.10-10.0.255.250");
        let mut state = state_with(&sub);
        let first = u32::from(Ipv4Addr::new(10, 0, 0, 10));
        // Every third address is leased, granted directly (not by the allocator).
        for i in 0..20_000u16 {
            grant(
                &mut state,
                Ipv4Addr::from(first + 3 * u32::from(i)),
                mac(i),
                0,
                600,
            );
        }
        let mut alloc = Allocator::new();
        let mut offers = Offers::new();
        for i in 0..5_000u16 {
            let m = Mac([2, 2, 0, 0, (i >> 8) as u8, i as u8]);
            let ip = alloc
                .pick(&at(&state, &offers, &sub, 1), m)
                .expect("pool has room");
            assert!(!state.leases.contains_key(&ip));
            assert!(offers.get(ip).is_none(), "{ip} offered twice");
            offers.record(ip, m, 31);
        }
        assert!(
            alloc.examined() <= 2 * 5_000,
            "5,000 picks examined {} addresses",
            alloc.examined()
        );
    }

    /// A flood of DISCOVERs against a full pool costs one lap per second.
    #[test]
    fn exhausted_pool_is_not_rescanned_within_the_same_second() {
        let sub = subnet("10.0.3.0-10.0.3.99");
        let mut state = state_with(&sub);
        for d in 0..100u8 {
            grant(
                &mut state,
                Ipv4Addr::new(10, 0, 3, d),
                mac(u16::from(d)),
                0,
                600,
            );
        }
        let (mut alloc, offers) = (Allocator::new(), Offers::new());
        assert_eq!(alloc.pick(&at(&state, &offers, &sub, 5), mac(500)), None);
        let one_lap = alloc.examined();
        assert!((100..=200).contains(&one_lap), "{one_lap}");
        for _ in 0..1_000 {
            assert_eq!(alloc.pick(&at(&state, &offers, &sub, 5), mac(500)), None);
        }
        assert_eq!(alloc.examined(), one_lap, "no rescans within the second");
        assert_eq!(alloc.pick(&at(&state, &offers, &sub, 6), mac(500)), None);
        assert!(alloc.examined() > one_lap, "a new second rescans");
        // A lease that ends is found again in the next second.
        state.apply(&Command::Release {
            ip: Ipv4Addr::new(10, 0, 3, 42),
            at: 7,
        });
        assert_eq!(
            alloc.pick(&at(&state, &offers, &sub, 7), mac(500)),
            Some(Ipv4Addr::new(10, 0, 3, 42))
        );
    }
}
