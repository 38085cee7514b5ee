//! The DHCP responder without sockets: the real decision ([`decide`]) and
//! the real dispatch ([`Responder`]) against a fake cluster
//! ([`fake::FakeCluster`], a `State` that proposals are applied to, with
//! optional delays and failures) and a recording sink ([`fake::Recorder`]).
//!
//! - this file: the service config, the request builders and [`Server`],
//!   which drives one request at a time to its end, as the socket loop does;
//! - [`fake`]: the fake cluster and the recording sink;
//! - [`dispatch`]: the commit-then-reply contract, under paused time;
//! - the others, by theme: [`discover`], [`request`], [`release_decline`],
//!   [`bootp`], [`options`], [`profiles`] (the boot chains), [`malformed`],
//!   [`random`] (traffic checked against a reference model), [`flood`] (the
//!   flood guards: short and pressure-aware offer holds, unsolicited
//!   REQUESTs, the shed queue).

mod bootp;
mod discover;
mod dispatch;
mod fake;
mod flood;
mod malformed;
mod options;
mod profiles;
mod random;
mod release_decline;
mod request;

use std::net::Ipv4Addr;
use std::sync::MutexGuard;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use tokio_util::sync::CancellationToken;

use super::allocator::{Allocator, Offers};
use super::dispatch::Responder;
use super::handler::{decide, Action, View};
use super::reply::Destination;
use crate::consensus::ClusterHandle as _;
use crate::model::{
    BootProfile, BootpPolicy, Command, CommandResponse, Mac, PoolRange, Reservation, ServiceConfig,
    State, Subnet,
};
use fake::{FakeCluster, Recorder};

const SID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const LEASE: u32 = 600;
const RESERVED_MAC: Mac = Mac([0x52, 0x54, 0, 0, 0xee, 1]);
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// Where every [`Server`] starts its clock (Unix seconds).
const START: u64 = 1_000_000;

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
            ..BootProfile::default()
        }],
    }
}

/// A replicated state holding `config`, as after `tandem apply`.
fn state_with(config: ServiceConfig) -> State {
    let mut state = State::default();
    state.apply(&Command::SetConfig { config });
    state
}

/// The decision the socket loop takes for `msg`, against `cluster`'s state.
fn decide_on(
    cluster: &FakeCluster,
    offers: &Offers,
    alloc: &mut Allocator,
    now: u64,
    msg: &Message,
) -> Action {
    cluster.read(|state| {
        let view = View {
            state,
            offers,
            server_id: SID,
            http_port: 80,
            now,
            // The tests' clock is whole seconds; the buckets see the same time.
            now_ns: now * 1_000_000_000,
        };
        decide(msg, &view, alloc)
    })
}

/// The server side, driven the way the socket loop drives it: the real
/// decision, then the real dispatch against a fake cluster that commits at
/// once; every proposal is carried to its end before the next request.
struct Server {
    cluster: FakeCluster,
    responder: Responder<FakeCluster, Recorder>,
    offers: Offers,
    alloc: Allocator,
    now: u64,
    /// Paused clock: a wait ends only once nothing else can run, so each
    /// request is settled deterministically.
    rt: tokio::runtime::Runtime,
}

impl Server {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: ServiceConfig) -> Self {
        let cluster = FakeCluster::new(state_with(config));
        Server {
            responder: Responder::new(cluster.clone(), Recorder::default()),
            cluster,
            offers: Offers::new(),
            alloc: Allocator::new(),
            now: START,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap(),
        }
    }

    /// The applied state (the fake cluster's). Do not hold it across `run`.
    fn state(&self) -> MutexGuard<'_, State> {
        self.cluster.state()
    }

    fn decide(&mut self, req: &Message) -> Action {
        decide_on(&self.cluster, &self.offers, &mut self.alloc, self.now, req)
    }

    /// Carries `action` out with the real dispatch and waits until nothing
    /// is in flight; returns what was sent (at most one reply).
    fn carry_out(&mut self, action: Action) -> Option<(Message, Destination)> {
        let commits = matches!(
            action,
            Action::Commit { .. } | Action::CommitThenReply { .. }
        );
        let quiet = match &action {
            Action::Commit { cmd } => Some(cmd.clone()),
            _ => None,
        };
        let what = format!("{action:?}");
        let applied_before = self.cluster.applied_count();
        let Server {
            responder,
            offers,
            rt,
            ..
        } = self;
        rt.block_on(async {
            responder.dispatch(action, offers);
            let never = CancellationToken::new();
            let idle = tokio::time::sleep(Duration::from_secs(1));
            assert_eq!(responder.next_request(&never, idle).await, Some(()));
        });
        assert_eq!(self.responder.in_flight(), 0);
        assert_eq!(
            self.cluster.applied_count() - applied_before,
            usize::from(commits),
            "{what}"
        );
        if let Some(cmd) = quiet {
            // RELEASE and DECLINE are only proposed when they apply.
            let want = Some((cmd, CommandResponse::Ok));
            assert_eq!(self.cluster.last_applied(), want, "{what}");
        }
        let mut sent = self.responder.sink().take();
        assert!(sent.len() <= 1, "{sent:?}");
        sent.pop().map(|s| (s.reply, s.to))
    }

    /// Decides and carries the action out; returns it and what was sent.
    fn run(&mut self, req: &Message) -> (Action, Option<(Message, Destination)>) {
        let a = self.decide(req);
        let sent = self.carry_out(a.clone());
        (a, sent)
    }

    /// DISCOVER from `m`; the offered address (panics without an offer).
    fn offer(&mut self, m: Mac) -> Ipv4Addr {
        let (a, _) = self.run(&discover(m));
        let Action::Offer { ip, .. } = a else {
            panic!("no offer for {m}: {a:?}")
        };
        ip
    }

    /// DISCOVER, then REQUEST what was offered; returns the acknowledged address.
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

fn bootp(m: Mac) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    Message::new_with_id(7, z, z, z, z, &m.0)
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
