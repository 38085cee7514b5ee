//! DISCOVER and OFFER: what is offered, to whom, and where the reply goes.

use std::collections::HashMap;

use dhcproto::v4::{relay, Decodable, Decoder, Flags, Opcode};
use dhcproto::Encodable;

use super::super::handler::OFFER_HOLD_SECS;
use super::*;
use crate::model::LeaseState;

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
        held,
    } = a
    else {
        panic!("{a:?}")
    };
    assert!(pool().contains(&ip));
    assert_eq!((m, until, held), (mac(1), s.now + OFFER_HOLD_SECS, true));
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
    assert!(
        s.state().lease_of_ip(ip).is_none(),
        "an offer is not a lease"
    );

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
    assert_eq!(s.state().lease_of_mac(mac(1)).unwrap().ip, ip);
    // A retransmitted DISCOVER from the bound client offers the same address.
    let (a, _) = s.run(&discover(mac(1)));
    assert!(matches!(a, Action::Offer { ip: o, .. } if o == ip), "{a:?}");
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
fn pool_exhaustion_drops_instead_of_offering() {
    let mut s = Server::new();
    let mut got: Vec<Ipv4Addr> = (1..=30).map(|n| s.dora(mac(n))).collect();
    got.sort();
    assert_eq!(got, pool(), "every pool address once");
    let (a, sent) = s.run(&discover(mac(31)));
    assert_eq!(
        a,
        Action::Drop {
            reason: "pool exhausted",
            malformed: false
        }
    );
    assert!(sent.is_none());
    // Bound clients still get their own address.
    let (a, _) = s.run(&discover(mac(7)));
    assert!(matches!(a, Action::Offer { .. }), "{a:?}");
}

#[test]
fn expired_leases_are_reused_by_other_clients() {
    let mut s = Server::new();
    let first: HashMap<Ipv4Addr, Mac> = (1..=30).map(|n| (s.dora(mac(n)), mac(n))).collect();
    s.now += u64::from(LEASE) + 1;
    let taken = s.dora(mac(31));
    let old_owner = first[&taken];
    assert_eq!(s.state().lease_of_ip(taken).unwrap().mac, mac(31));
    // The old owner comes back: its address is gone, so NAK, then it gets another one.
    let (_, sent) = s.run(&init_reboot(old_owner, taken));
    expect_nak(sent, Destination::Broadcast);
    let again = s.dora(old_owner);
    assert_ne!(again, taken);
}
