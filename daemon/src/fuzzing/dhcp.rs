//! `dhcp_decode_handle`: one datagram through what the DHCP socket loop does
//! with it (`request::decode`, then `handler::decide`), against a fixed
//! config, lease table and offer table that have something of every kind: a
//! relayed subnet, reservations inside and outside a pool, a live lease, an
//! expired one, a quarantined address and an outstanding offer.
//!
//! Every decision is checked against a reference written from the rules
//! rather than from the handler's code: an address offered or granted is
//! on the request's network, in a pool or the client's reservation (or its
//! own bound lease, for a grant), never infrastructure, never held,
//! quarantined, reserved or offered for someone else; a grant applies to the
//! state machine; every reply encodes, decodes, and answers this client.

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use dhcproto::v4::{Decodable, Decoder, Message, MessageType, Opcode};
use dhcproto::Encodable;

use crate::model::{
    BootProfile, BootpPolicy, Command, CommandResponse, Lease, LeaseState, Mac, PoolRange,
    Reservation, ServiceConfig, State, Subnet,
};
use crate::services::dhcp::allocator::{Allocator, Offers};
use crate::services::dhcp::handler::{decide, Action, View};
use crate::services::dhcp::request::{decode, Request};

/// The server id (VIP) of the fixture.
const SID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// The fixture's clock (Unix seconds).
const NOW: u64 = 1_000_000;

const fn mac(n: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0, 0, n])
}

struct Fixture {
    state: State,
    offers: Offers,
}

/// Built once: the fuzzer runs the target millions of times.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let v4 = |d| Ipv4Addr::new(10, 0, 0, d);
        let config = ServiceConfig {
            bootp: BootpPolicy::Dynamic,
            subnets: vec![
                Subnet {
                    cidr: "10.0.0.0/24".parse().expect("cidr"),
                    pools: vec![PoolRange {
                        start: v4(100),
                        end: v4(109),
                    }],
                    router: Some(v4(1)),
                    dns: vec![v4(53)],
                    domain: Some("lab.example".into()),
                    lease_time: 600,
                    next_server: None,
                    profile: Some("pxe".into()),
                },
                Subnet {
                    cidr: "10.1.0.0/29".parse().expect("cidr"),
                    pools: vec!["10.1.0.2-10.1.0.6".parse().expect("pool")],
                    router: Some(Ipv4Addr::new(10, 1, 0, 1)),
                    dns: vec![],
                    domain: None,
                    lease_time: 300,
                    next_server: Some(v4(20)),
                    profile: None,
                },
            ],
            reservations: vec![
                Reservation {
                    mac: mac(0xe1),
                    ip: v4(50),
                    hostname: Some("fixed".into()),
                    profile: Some("pxe".into()),
                },
                Reservation {
                    mac: mac(0xe2),
                    ip: v4(105),
                    hostname: None,
                    profile: None,
                },
            ],
            profiles: vec![BootProfile {
                name: "pxe".into(),
                bios: Some("undionly.kpxe".into()),
                uefi_x64: Some("ipxe.efi".into()),
                uefi_arm64: Some("ipxe-arm64.efi".into()),
                ipxe_script: Some("http://10.0.0.10/boot.ipxe".into()),
                kernel: Some("vmlinuz".into()),
                initrd: Some("initrd.img".into()),
                cmdline: Some("console=ttyS0".into()),
            }],
        };
        let mut state = State::default();
        state.apply(&Command::SetConfig { config });
        let lease = |ip, m, granted_at, expires_at| Lease {
            ip,
            mac: m,
            state: LeaseState::Bound,
            hostname: None,
            granted_at,
            expires_at,
        };
        for cmd in [
            // Live, expired, and a declined (quarantined) address.
            Command::Grant {
                lease: lease(v4(100), mac(1), NOW - 10, NOW + 590),
            },
            Command::Grant {
                lease: lease(v4(101), mac(2), NOW - 1000, NOW - 400),
            },
            Command::Grant {
                lease: lease(v4(102), mac(3), NOW - 10, NOW + 590),
            },
            Command::Decline {
                ip: v4(102),
                mac: mac(3),
                at: NOW - 10,
                until: NOW + 5000,
            },
            Command::Grant {
                lease: lease(Ipv4Addr::new(10, 1, 0, 2), mac(4), NOW - 10, NOW + 290),
            },
        ] {
            assert_eq!(state.apply(&cmd), CommandResponse::Ok, "fixture {cmd:?}");
        }
        let mut offers = Offers::new();
        offers.record(v4(103), mac(5), NOW + 20);
        offers.record(v4(104), mac(6), NOW - 1);
        Fixture { state, offers }
    })
}

/// Decodes `data` as the socket loop does, decides, and checks the action.
pub fn dhcp_decode_handle(data: &[u8]) {
    let Ok(msg) = decode(data) else {
        return;
    };
    // What a reply is compared with; `decide` parses the same way.
    let parsed = Request::parse(&msg);
    let f = fixture();
    let view = View {
        state: &f.state,
        offers: &f.offers,
        server_id: SID,
        http_port: 80,
        now: NOW,
        now_ns: NOW * 1_000_000_000,
    };
    let mut alloc = Allocator::new();
    let action = decide(&msg, &view, &mut alloc);
    let req = match (parsed, &action) {
        (Ok(req), _) => req,
        (
            Err(_),
            Action::Drop {
                malformed: true, ..
            },
        ) => return,
        (Err(why), a) => panic!("invalid request ({why}) not dropped as malformed: {a:?}"),
    };
    check(f, &req, &action);
}

fn check(f: &Fixture, req: &Request<'_>, action: &Action) {
    let state = &f.state;
    // RFC 2131 4.3.1: the request's network.
    let select = [req.giaddr, req.ciaddr]
        .into_iter()
        .find(|a| !a.is_unspecified())
        .unwrap_or(SID);
    let subnet = state.config.subnet_for(select);
    if subnet.is_none() {
        assert!(
            matches!(action, Action::Drop { .. }),
            "answered a request for an unserved network: {action:?}"
        );
        return;
    }
    match action {
        Action::Drop { .. } | Action::Shed { .. } => {}
        Action::Reply { reply, .. } => {
            let out = check_reply(req, reply);
            match out.opts().msg_type() {
                Some(MessageType::Nak) => {
                    assert!(out.yiaddr().is_unspecified(), "NAK with yiaddr {out:?}");
                }
                Some(MessageType::Ack) => {
                    // INFORM: no address, no lease time.
                    assert_eq!(req.kind, Some(MessageType::Inform), "{out:?}");
                    assert!(out.yiaddr().is_unspecified(), "INFORM ACK with yiaddr");
                }
                None => {
                    // BOOTP to a reservation: the reserved address.
                    assert_eq!(req.kind, None);
                    let r = state
                        .config
                        .reservation_for(req.mac)
                        .expect("BOOTP reply without a reservation");
                    assert_eq!(out.yiaddr(), r.ip);
                }
                other => panic!("unexpected reply type {other:?}"),
            }
        }
        Action::Offer {
            reply,
            ip,
            mac,
            until,
            ..
        } => {
            assert_eq!(req.kind, Some(MessageType::Discover));
            assert_eq!(*mac, req.mac);
            assert!(*until > NOW, "offer already expired");
            let out = check_reply(req, reply);
            assert_eq!(
                out.yiaddr(),
                *ip,
                "OFFER's yiaddr is not the offered address"
            );
            assert_eq!(out.opts().msg_type(), Some(MessageType::Offer));
            check_assignable(f, select, *ip, req.mac, false);
        }
        Action::CommitThenReply {
            cmd, reply, nak, ..
        } => {
            let Command::Grant { lease } = cmd else {
                panic!("CommitThenReply with {cmd:?}");
            };
            assert!(
                matches!(req.kind, Some(MessageType::Request) | None),
                "a grant for {:?}",
                req.kind
            );
            assert_eq!(lease.mac, req.mac);
            assert_eq!(lease.state, LeaseState::Bound);
            assert_eq!(lease.granted_at, NOW);
            assert!(lease.expires_at > NOW, "granted an expired lease");
            let out = check_reply(req, reply);
            assert_eq!(out.yiaddr(), lease.ip, "ACK's yiaddr is not the lease's");
            let refusal = check_reply(req, nak);
            assert!(
                refusal.yiaddr().is_unspecified(),
                "fallback NAK with yiaddr"
            );
            check_assignable(f, select, lease.ip, req.mac, true);
            let mut after = state.clone();
            assert_eq!(
                after.apply(cmd),
                CommandResponse::Ok,
                "the state machine refuses the handler's grant {lease:?}"
            );
        }
        Action::Commit { cmd } => check_commit(state, req, cmd),
    }
}

/// RELEASE and DECLINE: only a lease's own client may let it go.
fn check_commit(state: &State, req: &Request<'_>, cmd: &Command) {
    let (ip, kind) = match cmd {
        Command::Release { ip, at } => {
            assert_eq!(*at, NOW);
            (*ip, MessageType::Release)
        }
        Command::Decline { ip, mac, at, until } => {
            assert_eq!(*mac, req.mac);
            assert!(*at == NOW && *until > NOW, "quarantine {at}..{until}");
            (*ip, MessageType::Decline)
        }
        other => panic!("Commit with {other:?}"),
    };
    assert_eq!(req.kind, Some(kind));
    // Only the client of a bound lease may release (while it lasts) or
    // decline it (as Kea, also once expired: the address is still the one
    // it was given, and quarantining it harms no other client).
    let l = state
        .lease_of_ip(ip)
        .unwrap_or_else(|| panic!("{kind:?} of {ip}, which has no lease"));
    assert!(
        l.mac == req.mac
            && l.state == LeaseState::Bound
            && (kind == MessageType::Decline || l.is_active(NOW)),
        "{kind:?} of {ip} by {} accepted; lease {l:?}",
        req.mac
    );
}

/// The reply encodes, decodes, and is a BOOTREPLY to this client.
fn check_reply(req: &Request<'_>, reply: &Message) -> Message {
    let bytes = reply
        .to_vec()
        .unwrap_or_else(|e| panic!("reply does not encode: {e}: {reply:?}"));
    let out = Message::decode(&mut Decoder::new(&bytes))
        .unwrap_or_else(|e| panic!("reply does not decode: {e}"));
    assert_eq!(out.opcode(), Opcode::BootReply);
    assert_eq!(out.xid(), req.xid);
    assert_eq!(out.giaddr(), req.giaddr);
    assert_eq!(Mac::from_slice(out.chaddr()), Some(req.mac));
    if out.opts().msg_type().is_some() {
        assert!(
            matches!(
                out.opts().get(dhcproto::v4::OptionCode::ServerIdentifier),
                Some(dhcproto::v4::DhcpOption::ServerIdentifier(s)) if *s == SID
            ),
            "reply without our server id"
        );
    }
    out
}

/// The reference for an address handed to `mac`, independent of the
/// allocator: on the request's network; not the VIP, the router, or the
/// network or broadcast address; not bound to another client, quarantined,
/// reserved for another client or offered to one; and in a pool or the
/// client's reservation (or, for a grant, the client's own bound lease).
fn check_assignable(f: &Fixture, select: Ipv4Addr, ip: Ipv4Addr, mac: Mac, grant: bool) {
    let cfg = &f.state.config;
    let subnet = cfg.subnet_for(select).expect("checked by the caller");
    let net = subnet.cidr;
    assert!(net.contains(&ip), "{ip} handed out on {net}");
    assert!(
        ip != SID && subnet.router != Some(ip) && ip != net.network() && ip != net.broadcast(),
        "{ip} is infrastructure of {net}"
    );
    if let Some(l) = f.state.lease_of_ip(ip) {
        if l.is_active(NOW) {
            assert!(
                l.state == LeaseState::Bound && l.mac == mac,
                "{ip} handed to {mac} while {l:?}"
            );
        }
    }
    if let Some((m, until)) = f.offers.get(ip) {
        assert!(m == mac || until <= NOW, "{ip} is offered to {m}");
    }
    if let Some(r) = cfg.reservation_of_ip(ip) {
        assert_eq!(r.mac, mac, "{ip} is reserved for {}", r.mac);
    }
    let in_pool = subnet.pools.iter().any(|p| p.contains(ip));
    let reserved = cfg.reservation_for(mac).is_some_and(|r| r.ip == ip);
    let own = grant
        && f.state
            .lease_of_ip(ip)
            .is_some_and(|l| l.mac == mac && l.state == LeaseState::Bound);
    assert!(
        in_pool || reserved || own,
        "{ip} is neither in a pool, nor reserved for {mac}, nor its lease"
    );
}
