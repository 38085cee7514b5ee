//! The dispatch contract, with a fake cluster that delays, fails and loses
//! leadership, under paused time: an ACK only after its commit, a NAK when
//! the commit is rejected, nothing when it fails or when this node is no
//! longer the leader, and an OFFER at once.

use std::future;

use tokio::time::{sleep, timeout, Instant};

use super::fake::Outcome;
use super::*;
use crate::model::{Lease, LeaseState};

const COMMIT: Duration = Duration::from_millis(50);

/// A responder over a fake cluster serving [`config`], the fake and the
/// offers table of a loop.
fn responder() -> (Responder<FakeCluster, Recorder>, FakeCluster, Offers) {
    let cluster = FakeCluster::new(state_with(config()));
    let responder = Responder::new(cluster.clone(), Recorder::default());
    (responder, cluster, Offers::new())
}

/// The handler's decision for `msg` at [`START`].
fn decided(cluster: &FakeCluster, offers: &Offers, msg: &Message) -> Action {
    decide_on(cluster, offers, &mut Allocator::new(), START, msg)
}

/// A grant of `ip` to `m` as a SELECTING client asks for it.
fn grant(cluster: &FakeCluster, offers: &Offers, m: Mac, ip: Ipv4Addr) -> Action {
    let a = decided(cluster, offers, &select(m, ip, SID));
    assert!(
        matches!(&a, Action::CommitThenReply { cmd: Command::Grant { lease }, .. } if lease.ip == ip),
        "{a:?}"
    );
    a
}

/// Binds `ip` to `m` in the cluster's state directly, as an entry proposed
/// by another leader would.
fn bind_elsewhere(cluster: &FakeCluster, ip: Ipv4Addr, m: Mac) {
    let lease = Lease {
        ip,
        mac: m,
        state: LeaseState::Bound,
        hostname: None,
        granted_at: START,
        expires_at: START + u64::from(LEASE),
    };
    let applied = cluster.state().apply(&Command::Grant { lease });
    assert_eq!(applied, CommandResponse::Ok);
}

/// Lets the responder run until `d` has passed, as the loop does while no
/// request arrives.
async fn idle(r: &mut Responder<FakeCluster, Recorder>, cancel: &CancellationToken, d: Duration) {
    assert_eq!(r.next_request(cancel, sleep(d)).await, Some(()));
}

#[tokio::test(start_paused = true)]
async fn the_ack_leaves_only_once_the_commit_is_applied() {
    let (mut r, cluster, mut offers) = responder();
    let cancel = CancellationToken::new();
    cluster.set_delay(COMMIT);
    let ip = v4(100);
    let start = Instant::now();
    r.dispatch(grant(&cluster, &offers, mac(1), ip), &mut offers);
    assert_eq!(r.in_flight(), 1);
    assert!(r.sink().is_empty(), "nothing before the proposal is polled");

    // Just short of the commit: the loop runs, nothing is sent.
    let early = timeout(
        COMMIT.saturating_sub(Duration::from_millis(1)),
        r.next_request(&cancel, future::pending::<()>()),
    )
    .await;
    assert!(early.is_err(), "no request arrived, so no return");
    assert!(r.sink().is_empty(), "ACK sent before the commit");
    assert!(cluster.state().lease_of_ip(ip).is_none());

    idle(&mut r, &cancel, Duration::from_millis(10)).await;
    let sent = r.sink().take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].reply.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(sent[0].reply.yiaddr(), ip);
    assert_eq!(sent[0].to, Destination::L2Unicast { mac: mac(1), ip });
    assert_eq!(
        sent[0].at - start,
        COMMIT,
        "sent the moment the commit was applied"
    );
    assert_eq!(cluster.state().lease_of_ip(ip).unwrap().mac, mac(1));
    assert_eq!(r.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_commit_sends_a_nak_broadcast_or_to_the_relay() {
    let (mut r, cluster, mut offers) = responder();
    let cancel = CancellationToken::new();
    cluster.set_delay(COMMIT);
    let direct = grant(&cluster, &offers, mac(1), v4(100));
    let relayed_ip = Ipv4Addr::new(10, 1, 0, 100);
    let via_relay = decided(&cluster, &offers, &relayed(select(mac(3), relayed_ip, SID)));
    // Before they commit, other clients' grants of the same addresses are
    // applied (proposed by an earlier leader, say).
    bind_elsewhere(&cluster, v4(100), mac(2));
    bind_elsewhere(&cluster, relayed_ip, mac(4));
    r.dispatch(direct, &mut offers);
    r.dispatch(via_relay, &mut offers);
    idle(&mut r, &cancel, 2 * COMMIT).await;

    let sent = r.sink().take();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let to: Vec<Destination> = sent.iter().map(|s| s.to).collect();
    assert!(to.contains(&Destination::Broadcast), "{to:?}");
    assert!(to.contains(&Destination::Relay(RELAY)), "{to:?}");
    for s in &sent {
        assert_eq!(s.reply.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(s.reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    }
    assert_eq!(cluster.state().lease_of_ip(v4(100)).unwrap().mac, mac(2));
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_sends_no_ack() {
    let (mut r, cluster, mut offers) = responder();
    let cancel = CancellationToken::new();
    cluster.set_delay(COMMIT);
    cluster.set_outcome(Outcome::Fail);
    r.dispatch(grant(&cluster, &offers, mac(1), v4(100)), &mut offers);
    idle(&mut r, &cancel, 2 * COMMIT).await;
    assert_eq!(r.in_flight(), 0, "the proposal finished");
    assert!(r.sink().is_empty(), "no reply without a commit");
    assert!(cluster.state().leases.is_empty());

    // The client retries once the cluster commits again, and gets its ACK.
    cluster.set_outcome(Outcome::Commit);
    r.dispatch(grant(&cluster, &offers, mac(1), v4(100)), &mut offers);
    idle(&mut r, &cancel, 2 * COMMIT).await;
    let sent = r.sink().take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].reply.opts().msg_type(), Some(MessageType::Ack));
}

#[tokio::test(start_paused = true)]
async fn a_proposal_refused_for_lost_leadership_sends_nothing() {
    let (mut r, cluster, mut offers) = responder();
    let cancel = CancellationToken::new();
    cluster.set_delay(COMMIT);
    cluster.set_outcome(Outcome::NotLeader);
    r.dispatch(grant(&cluster, &offers, mac(1), v4(100)), &mut offers);
    idle(&mut r, &cancel, 2 * COMMIT).await;
    assert_eq!(r.in_flight(), 0);
    assert!(r.sink().is_empty());
    assert!(cluster.state().leases.is_empty());
}

#[tokio::test(start_paused = true)]
async fn leadership_lost_mid_commit_sends_nothing_even_once_it_commits() {
    let (mut r, cluster, mut offers) = responder();
    let cancel = CancellationToken::new();
    cluster.set_delay(COMMIT);
    r.dispatch(grant(&cluster, &offers, mac(1), v4(100)), &mut offers);
    // A RELEASE in flight too: nothing to send for it either way.
    bind_elsewhere(&cluster, v4(101), mac(2));
    let release = decided(&cluster, &offers, &release(mac(2), v4(101)));
    assert!(matches!(release, Action::Commit { .. }), "{release:?}");
    r.dispatch(release, &mut offers);

    // The serve token is cancelled halfway through the commit.
    let stepped_down = cancel.clone();
    tokio::spawn(async move {
        sleep(COMMIT / 2).await;
        stepped_down.cancel();
    });
    let start = Instant::now();
    assert_eq!(r.next_request(&cancel, future::pending::<()>()).await, None);
    assert_eq!(start.elapsed(), COMMIT / 2);

    // Raft commits the proposals anyway; the node stays silent.
    sleep(4 * COMMIT).await;
    assert_eq!(cluster.state().lease_of_ip(v4(100)).unwrap().mac, mac(1));
    assert!(!cluster
        .state()
        .lease_of_ip(v4(101))
        .unwrap()
        .is_active(START));
    assert_eq!(r.next_request(&cancel, future::ready(())).await, None);
    assert!(r.sink().is_empty(), "a node that stepped down answered");
    drop(r);
}

#[tokio::test(start_paused = true)]
async fn an_offer_is_sent_at_once_and_recorded() {
    let (mut r, cluster, mut offers) = responder();
    cluster.set_delay(COMMIT);
    let a = decided(&cluster, &offers, &discover(mac(1)));
    let Action::Offer { ip, until, .. } = a else {
        panic!("{a:?}")
    };
    r.dispatch(a, &mut offers);
    assert_eq!(r.in_flight(), 0, "an offer is not a proposal");
    let sent = r.sink().take();
    assert_eq!(sent.len(), 1, "sent without awaiting anything");
    assert_eq!(sent[0].reply.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(sent[0].to, Destination::L2Unicast { mac: mac(1), ip });
    assert_eq!(offers.get(ip), Some((mac(1), until)));
    assert_eq!(offers.of_mac(mac(1)), Some((ip, until)));
    assert!(cluster.state().leases.is_empty(), "an offer is not a lease");
    // So the next DISCOVER from another client gets another address.
    let other = decided(&cluster, &offers, &discover(mac(2)));
    assert!(
        matches!(other, Action::Offer { ip: o, .. } if o != ip),
        "{other:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_are_read_while_commits_are_in_flight_and_replies_follow_commit_order() {
    let (mut r, cluster, mut offers) = responder();
    let cancel = CancellationToken::new();
    let start = Instant::now();
    cluster.set_delay(2 * COMMIT);
    r.dispatch(grant(&cluster, &offers, mac(1), v4(100)), &mut offers);
    // The next request is returned at once: a commit does not hold up the loop.
    assert_eq!(r.next_request(&cancel, future::ready(7)).await, Some(7));
    assert_eq!(start.elapsed(), Duration::ZERO);
    cluster.set_delay(COMMIT);
    r.dispatch(grant(&cluster, &offers, mac(2), v4(101)), &mut offers);
    assert_eq!(r.next_request(&cancel, future::ready(8)).await, Some(8));
    assert_eq!(r.in_flight(), 2);
    assert!(r.sink().is_empty());

    idle(&mut r, &cancel, 3 * COMMIT).await;
    let sent = r.sink().take();
    let order: Vec<(Ipv4Addr, Duration)> = sent
        .iter()
        .map(|s| (s.reply.yiaddr(), s.at - start))
        .collect();
    assert_eq!(
        order,
        vec![(v4(101), COMMIT), (v4(100), 2 * COMMIT)],
        "each ACK leaves when its own commit is applied"
    );
}

#[tokio::test(start_paused = true)]
async fn a_drop_sends_nothing() {
    let (mut r, cluster, mut offers) = responder();
    let a = decided(&cluster, &offers, &select(mac(1), v4(100), v4(99)));
    assert_eq!(a, Action::ignore("client selected another server"));
    r.dispatch(a, &mut offers);
    assert_eq!(r.in_flight(), 0);
    assert!(r.sink().is_empty() && offers.is_empty());
}
