//! The flood guards (issue 8, point 4): an OFFER holds its address for a few
//! seconds and not at all under pressure; a SELECTING REQUEST that no OFFER
//! preceded gets a NAK under pressure and held to per-MAC and global buckets
//! otherwise; the commits in flight are bounded and the rest shed.

use dhcproto::v4::Flags;

use super::*;
use crate::services::dhcp::allocator::{BROADCAST_REPLIES, UNSOLICITED_PER_MAC, UNSOLICITED_TOTAL};
use crate::services::dhcp::dispatch::MAX_IN_FLIGHT;
use crate::services::dhcp::handler::OFFER_HOLD_SECS;

/// A MAC of the flood, distinct from every `mac(n)` of a real client.
fn flood_mac(n: u32) -> Mac {
    let bytes = n.to_be_bytes();
    Mac([0x02, 0xf1, bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn held(a: &Action) -> bool {
    match a {
        Action::Offer { held, .. } => *held,
        other => panic!("not an offer: {other:?}"),
    }
}

/// The pool has 30 addresses: 24 (80 %) DISCOVERs from random MACs hold
/// theirs, the rest hold nothing, and a real client mid-flood still gets a
/// lease at once. Before, every OFFER held its address for 30 s and the
/// 31st DISCOVER found the pool exhausted.
#[test]
fn a_discover_flood_leaves_the_pool_to_real_clients() {
    let mut s = Server::new();
    let mut holds = 0;
    for n in 0..1_000 {
        let (a, sent) = s.run(&discover(flood_mac(n)));
        assert!(sent.is_some(), "every DISCOVER is answered: {a:?}");
        holds += usize::from(held(&a));
    }
    assert_eq!(holds, 24, "80 % of the 30-address pool is held, no more");
    assert_eq!(s.offers.len(), 24);
    // A real client in the middle of the flood: OFFER, then its REQUEST.
    let ip = s.dora(mac(1));
    assert!(pool().contains(&ip));
    // The next second is recounted: 24 holds + 1 lease stay under pressure.
    s.now += 1;
    assert!(!held(&s.run(&discover(flood_mac(5_000))).0));
    // The holds end after OFFER_HOLD_SECS, and a renewal is never in question.
    s.now = START + OFFER_HOLD_SECS;
    s.offers.expire(s.now);
    assert_eq!(s.offers.len(), 0);
    let (_, sent) = s.run(&renew(mac(1), ip));
    assert_eq!(sent.unwrap().0.opts().msg_type(), Some(MessageType::Ack));
}

/// An OFFER that held nothing still counts as an OFFER for the REQUEST that
/// follows it, so its client is not taken for a flood.
#[test]
fn a_request_after_an_unheld_offer_is_granted_under_pressure() {
    let mut s = Server::new();
    for n in 1..=25 {
        s.dora(mac(n));
    }
    let (a, _) = s.run(&discover(mac(26)));
    assert!(!held(&a), "25 of 30 leased: under pressure");
    let Action::Offer { ip, .. } = a else {
        unreachable!()
    };
    let (a, sent) = s.run(&select(mac(26), ip, SID));
    assert!(matches!(a, Action::CommitThenReply { .. }), "{a:?}");
    assert_eq!(sent.unwrap().0.opts().msg_type(), Some(MessageType::Ack));
}

/// A client whose OFFER is slow to come (a flood fills the socket queue)
/// retransmits its DISCOVER, takes the first OFFER and REQUESTs it while
/// the server is still answering the retransmission. Under pressure, both
/// OFFERs must name the same address and the REQUEST for the first must be
/// granted. Before, the second OFFER picked a new address and replaced the
/// first in the unheld record, so the REQUEST looked unsolicited: refused
/// with a NAK under pressure, and the client had to start again.
#[test]
fn a_retransmitted_discover_under_pressure_gets_the_same_unheld_offer() {
    let mut s = Server::new();
    for n in 1..=25 {
        s.dora(mac(n));
    }
    let first = s.run(&discover(mac(26))).0;
    assert!(!held(&first), "25 of 30 leased: under pressure");
    let Action::Offer { ip, .. } = first else {
        unreachable!()
    };
    // The flood's DISCOVERs in between move the allocator's cursor.
    for n in 0..50 {
        s.run(&discover(flood_mac(n)));
    }
    s.now += 1;
    let Action::Offer { ip: again, .. } = s.run(&discover(mac(26))).0 else {
        panic!("no second offer")
    };
    assert_eq!(again, ip, "a retransmitted DISCOVER gets the same answer");
    let (a, sent) = s.run(&select(mac(26), ip, SID));
    assert!(matches!(a, Action::CommitThenReply { .. }), "{a:?}");
    assert_eq!(sent.unwrap().0.opts().msg_type(), Some(MessageType::Ack));
}

/// A flood that asks for broadcast replies is not reflected onto the LAN:
/// the OFFERs and NAKs that go out at once to L2 broadcast stop at the
/// bucket's burst, then pass at its rate; the rest are shed. A real client
/// without the flag mid-flood still gets its OFFER and its ACK. (In the
/// flood test the leader sent 4,400 broadcasts/s, 40 % of what a real
/// udhcpc's packet socket had to read there, and it dropped its own ACKs.)
#[test]
fn broadcast_replies_to_a_flood_are_bounded() {
    let mut s = Server::new();
    for n in 1..=24 {
        s.dora(mac(n));
    }
    let broadcast = |mut m: Message| {
        m.set_flags(Flags::default().set_broadcast());
        m
    };
    let mut sent = 0;
    let mut shed = 0;
    for n in 0..3_000 {
        let m = if n % 2 == 0 {
            broadcast(discover(flood_mac(n)))
        } else {
            // Unsolicited under pressure (24 of 30 leased): a broadcast NAK each.
            select(flood_mac(n), v4(100 + u8::try_from(n % 30).unwrap()), SID)
        };
        match s.run(&m) {
            (Action::Shed { reason }, None) => {
                assert_eq!(reason, "broadcast");
                shed += 1;
            }
            (_, Some((_, Destination::Broadcast))) => sent += 1,
            other => panic!("{other:?}"),
        }
    }
    let burst = usize::try_from(BROADCAST_REPLIES.burst).unwrap();
    assert_eq!((sent, shed), (burst, 3_000 - burst));
    // The real client: OFFER by L2 unicast, REQUEST, ACK, all mid-flood.
    let ip = s.dora(mac(25));
    assert!(pool().contains(&ip));
    // A second later the bucket has refilled by its rate.
    s.now += 1;
    let again = (0..2_000)
        .filter(|&n| {
            s.run(&broadcast(discover(flood_mac(10_000 + n))))
                .1
                .is_some()
        })
        .count();
    assert_eq!(again, usize::try_from(BROADCAST_REPLIES.rate).unwrap());
}

/// Under pressure, a SELECTING REQUEST without an OFFER gets a NAK (a real
/// client then DISCOVERs again) and commits nothing, whatever it names.
#[test]
fn unsolicited_requests_under_pressure_are_refused() {
    let mut s = Server::new();
    for n in 1..=24 {
        s.dora(mac(n));
    }
    let free: Vec<Ipv4Addr> = pool()
        .into_iter()
        .filter(|ip| s.state().lease_of_ip(*ip).is_none())
        .collect();
    assert_eq!(free.len(), 6);
    for (n, ip) in (0..100).zip(free.iter().cycle()) {
        let (a, sent) = s.run(&select(flood_mac(n), *ip, SID));
        assert!(matches!(a, Action::Reply { .. }), "{a:?}");
        expect_nak(sent, Destination::Broadcast);
    }
    assert_eq!(s.state().leases.len(), 24, "no flood lease committed");
    // A client with a lease of its own is no stranger: its SELECTING REQUEST
    // for that address (a reboot that kept the OFFER's server id) is granted.
    let own = s.state().lease_of_mac(mac(3)).unwrap().ip;
    let (a, _) = s.run(&select(mac(3), own, SID));
    assert!(matches!(a, Action::CommitThenReply { .. }), "{a:?}");
}

/// With room in the pool, unsolicited REQUESTs (a client whose OFFER came
/// from the old leader) pass, up to the per-MAC burst; the rest are shed
/// without a reply and without a commit.
#[test]
fn unsolicited_requests_from_one_mac_are_held_to_its_bucket() {
    let mut cfg = config();
    // A big pool, so the pressure rule stays out of the way.
    cfg.subnets[0].cidr = "10.0.0.0/16".parse().unwrap();
    cfg.subnets[0].pools = vec!["10.0.1.0-10.0.8.255".parse().unwrap()];
    let mut s = Server::with(cfg);
    let ip = Ipv4Addr::new(10, 0, 1, 7);
    let burst = UNSOLICITED_PER_MAC.burst;
    let mut granted = 0;
    let mut shed = 0;
    for _ in 0..3 * burst {
        match s.run(&select(mac(9), ip, SID)) {
            (Action::CommitThenReply { .. }, Some(_)) => granted += 1,
            (Action::Shed { reason }, None) => {
                assert_eq!(reason, "unsolicited_request");
                shed += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // The first grant makes the lease the client's own: later REQUESTs for
    // it are renewals of a live lease, not unsolicited. So use a new address
    // each time for the bucket to see them all.
    assert_eq!(
        (granted, shed),
        (3 * burst, 0),
        "own live lease: never shed"
    );

    let mut granted = 0;
    for k in 0..3 * burst {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 2, 0)) + k);
        match s.run(&select(mac(10), ip, SID)) {
            (Action::CommitThenReply { .. }, Some(_)) => granted += 1,
            (Action::Shed { .. }, None) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(granted, burst, "one MAC: its burst, then nothing");
    // 4 per second refill it.
    s.now += 1;
    let ip = Ipv4Addr::new(10, 0, 3, 1);
    assert!(matches!(
        s.run(&select(mac(10), ip, SID)).0,
        Action::CommitThenReply { .. }
    ));
}

/// Random MACs get a fresh per-MAC bucket each, so the global bucket is what
/// bounds them.
#[test]
fn unsolicited_requests_from_random_macs_share_one_global_bucket() {
    let mut alloc = Allocator::new();
    let t = 7_000_000_000;
    let admitted = (0..1_000)
        .filter(|&n| alloc.admit_unsolicited(flood_mac(n), t))
        .count();
    assert_eq!(admitted, usize::try_from(UNSOLICITED_TOTAL.burst).unwrap());
    // One second later: the global rate's worth, no more.
    let admitted = (1_000..2_000)
        .filter(|&n| alloc.admit_unsolicited(flood_mac(n), t + 1_000_000_000))
        .count();
    assert_eq!(admitted, usize::try_from(UNSOLICITED_TOTAL.rate).unwrap());
}

// The real bound leaves room for group commit.
const _: () = assert!(MAX_IN_FLIGHT >= 256);

/// Past the bound, commits are shed: no proposal, no reply, counted; the
/// ones in flight still get their ACKs.
#[tokio::test(start_paused = true)]
async fn commits_beyond_the_in_flight_bound_are_shed() {
    let cluster = FakeCluster::new(state_with(config()));
    cluster.set_delay(Duration::from_millis(50));
    let mut r = Responder::with_limit(cluster.clone(), Recorder::default(), 3);
    let mut offers = Offers::new();
    let mut alloc = Allocator::new();
    let shed_before = shed_metric("queue_full");
    for n in 0..8u8 {
        let a = decide_on(
            &cluster,
            &offers,
            &mut alloc,
            START,
            &select(mac(n), v4(100 + n), SID),
        );
        assert!(matches!(a, Action::CommitThenReply { .. }), "{a:?}");
        r.dispatch(a, &mut offers);
    }
    assert_eq!(r.in_flight(), 3);
    assert_eq!(r.shed(), 5);
    assert!(shed_metric("queue_full") >= shed_before + 5);
    let cancel = CancellationToken::new();
    let idle = tokio::time::sleep(Duration::from_millis(200));
    assert_eq!(r.next_request(&cancel, idle).await, Some(()));
    let sent = r.sink().take();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent
        .iter()
        .all(|s| s.reply.opts().msg_type() == Some(MessageType::Ack)));
    assert_eq!(
        cluster.state().leases.len(),
        3,
        "shed requests commit nothing"
    );
    // Room again: the next one is proposed.
    let a = decide_on(
        &cluster,
        &offers,
        &mut alloc,
        START,
        &select(mac(50), v4(120), SID),
    );
    r.dispatch(a, &mut offers);
    assert_eq!((r.in_flight(), r.shed()), (1, 5));
}

fn shed_metric(reason: &str) -> u64 {
    crate::metrics::get()
        .dhcp_shed
        .get_or_create(&crate::metrics::ReasonLabel {
            reason: reason.to_owned(),
        })
        .get()
}
