//! REQUEST in each client state (RFC 2131 4.3.2): SELECTING, INIT-REBOOT,
//! RENEWING/REBINDING; grants, NAKs and silence.

use super::*;
use crate::model::{Lease, LeaseState};

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
    s.state().apply(&Command::Grant { lease: other });
    let Action::CommitThenReply {
        cmd: Command::Grant { lease },
        nak,
        to,
        ..
    } = &decided
    else {
        panic!("{decided:?}")
    };
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(to.for_nak(), Destination::Broadcast);
    // The real dispatch: the fake cluster's state machine refuses the grant,
    // and the NAK goes out instead of the ACK.
    let sent = s.carry_out(decided.clone());
    assert!(matches!(
        s.cluster.last_applied(),
        Some((Command::Grant { lease: l }, CommandResponse::Rejected { .. })) if &l == lease
    ));
    assert_eq!(&expect_nak(sent, Destination::Broadcast), nak);
    assert_eq!(s.state().lease_of_ip(ip).unwrap().mac, mac(2));
}

#[test]
fn reservation_gives_the_fixed_address_and_name() {
    let mut s = Server::new();
    assert_eq!(s.dora(RESERVED_MAC), v4(50));
    let l = s.state().lease_of_mac(RESERVED_MAC).unwrap().clone();
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
        s.state().lease_of_ip(ip).unwrap().hostname.as_deref(),
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
    assert_eq!(s.state().lease_of_ip(ip1).unwrap().expires_at, s.now + 600);
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
            reason: "INIT-REBOOT from a client with no lease here",
            malformed: false
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
            reason: "client selected another server",
            malformed: false
        }
    );
    assert!(sent.is_none());
    assert!(s.state().leases.is_empty());
}
