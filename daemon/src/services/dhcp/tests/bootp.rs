//! BOOTP (RFC 951) clients: reservations only, or dynamic.

use dhcproto::v4::Opcode;
use dhcproto::Encodable;

use super::*;

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
            reason: "BOOTP client without a reservation",
            malformed: false
        }
    );
    assert!(s.state().leases.is_empty());

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
