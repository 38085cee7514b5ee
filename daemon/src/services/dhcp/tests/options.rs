//! What replies carry: boot file by iPXE and architecture, INFORM's
//! options, and trimming to the client's maximum size.

use dhcproto::v4::Architecture;
use dhcproto::Encodable;

use super::*;

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
    assert!(s.state().leases.is_empty());
    let r = req(mac(1), MessageType::Inform);
    assert!(
        matches!(s.run(&r).0, Action::Drop { .. }),
        "INFORM needs ciaddr"
    );
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
