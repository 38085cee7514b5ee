//! Boot profiles across the usual chains, one test per row: BIOS PXE by
//! TFTP, x64 and ARM64 UEFI PXE, iPXE (reserved, by profile, by explicit
//! script, never a NBP), UEFI HTTP boot (URL in `file`, `HTTPClient`
//! echoed), and iPXE's no-pxedhcp.

use dhcproto::v4::Architecture;

use super::super::reply::{boot_file, BootFile};
use super::super::request::Request;
use super::*;

/// The subnet's profile "pxe" (with `ipxe_script`) and a profile "linux"
/// with a kernel and no script, named by the reservation.
fn cfg() -> ServiceConfig {
    let mut c = config();
    c.reservations[0].profile = Some("linux".into());
    c.profiles.push(BootProfile {
        name: "linux".into(),
        bios: Some("undionly.kpxe".into()),
        uefi_x64: Some("snponly.efi".into()),
        uefi_arm64: Some("arm/snp.efi".into()),
        kernel: Some("vmlinuz".into()),
        initrd: Some("initrd.img".into()),
        cmdline: Some("console=ttyS0".into()),
        ..BootProfile::default()
    });
    c
}

fn offer_for(s: &mut Server, msg: &Message) -> Message {
    match s.run(msg).0 {
        Action::Offer { reply, .. } => reply,
        other => panic!("expected an offer, got {other:?}"),
    }
}

fn arch(m: Message, a: Architecture) -> Message {
    with(m, DhcpOption::ClientSystemArchitecture(a))
}

fn ipxe(m: Message) -> Message {
    with(m, DhcpOption::UserClass(b"iPXE".to_vec()))
}

fn class(m: Message, c: &[u8]) -> Message {
    with(m, DhcpOption::ClassIdentifier(c.to_vec()))
}

fn no_pxedhcp(m: &Message) -> bool {
    matches!(
        m.opts().get(OptionCode::Unknown(175)),
        Some(DhcpOption::Unknown(o)) if o.data() == [176, 1, 1]
    )
}

#[test]
fn bios_gets_the_bios_nbp_by_tftp_from_the_vip() {
    let mut s = Server::with(cfg());
    let r = offer_for(&mut s, &arch(discover(mac(1)), Architecture::X86_Bios));
    assert_eq!(fname(&r), Some("undionly.kpxe"));
    assert_eq!(r.siaddr(), SID);
    assert!(!no_pxedhcp(&r) && opt(&r, OptionCode::ClassIdentifier).is_none());
    // Reserved (profile "linux"): the same row, from its own profile.
    let r = offer_for(
        &mut s,
        &arch(discover(RESERVED_MAC), Architecture::X86_Bios),
    );
    assert_eq!(fname(&r), Some("undionly.kpxe"));
    // next_server overrides the VIP as siaddr.
    let mut c = cfg();
    c.subnets[0].next_server = Some(v4(20));
    let r = offer_for(
        &mut Server::with(c),
        &arch(discover(mac(2)), Architecture::X86_Bios),
    );
    assert_eq!(r.siaddr(), v4(20));
}

#[test]
fn uefi_x64_and_arm64_get_their_binaries() {
    let mut s = Server::with(cfg());
    for (a, want) in [
        (Architecture::X64, "snponly.efi"),
        (Architecture(9), "snponly.efi"),
        (Architecture::Arm64, "arm/snp.efi"),
    ] {
        let r = offer_for(&mut s, &arch(discover(RESERVED_MAC), a));
        assert_eq!(fname(&r), Some(want), "{a:?}");
        assert_eq!(r.siaddr(), SID);
    }
    // The subnet's profile, for a client without a reservation.
    let r = offer_for(&mut s, &arch(discover(mac(3)), Architecture::X64));
    assert_eq!(fname(&r), Some("ipxe.efi"));
    // IA-32 UEFI cannot run an x86-64 image: nothing.
    let r = offer_for(&mut s, &arch(discover(mac(4)), Architecture(6)));
    assert_eq!(fname(&r), None);
}

#[test]
fn ipxe_gets_the_reservation_script_or_the_profile_script_never_a_nbp() {
    let mut s = Server::with(cfg());
    // Reserved, profile with a kernel: the script for its MAC, as ${mac}.
    let r = offer_for(
        &mut s,
        &ipxe(arch(discover(RESERVED_MAC), Architecture::X86_Bios)),
    );
    assert_eq!(
        fname(&r),
        Some("http://10.0.0.10/boot/52:54:00:00:ee:01.ipxe")
    );
    assert!(no_pxedhcp(&r));
    // Not reserved, subnet profile "pxe" has ipxe_script: that.
    let r = offer_for(&mut s, &ipxe(discover(mac(5))));
    assert_eq!(fname(&r), Some("http://10.0.0.10/boot.ipxe"));
    assert!(no_pxedhcp(&r));
    // Not reserved, subnet profile with a kernel and no script: its profile script.
    let mut c = cfg();
    c.subnets[0].profile = Some("linux".into());
    let mut s = Server::with(c);
    let r = offer_for(&mut s, &ipxe(arch(discover(mac(6)), Architecture::X64)));
    assert_eq!(fname(&r), Some("http://10.0.0.10/boot/profile/linux.ipxe"));
    // A profile with neither: no file at all, never undionly.kpxe or an EFI.
    let mut c = cfg();
    c.profiles[1].kernel = None;
    let mut s = Server::with(c);
    for a in [Architecture::X86_Bios, Architecture::X64] {
        let r = offer_for(&mut s, &ipxe(arch(discover(RESERVED_MAC), a)));
        assert_eq!(fname(&r), None);
        assert!(opt(&r, OptionCode::BootfileName).is_none());
        assert!(no_pxedhcp(&r), "no-pxedhcp goes to every iPXE client");
    }
}

#[test]
fn uefi_http_boot_gets_a_url_and_the_class_echoed() {
    let mut s = Server::with(cfg());
    for (a, want) in [
        (16, "http://10.0.0.10/snponly.efi"),
        (19, "http://10.0.0.10/arm/snp.efi"),
    ] {
        let m = class(
            arch(discover(RESERVED_MAC), Architecture(a)),
            b"HTTPClient:Arch:00016:UNDI:003001",
        );
        let r = offer_for(&mut s, &m);
        assert_eq!(fname(&r), Some(want), "arch {a}");
        assert_eq!(
            opt(&r, OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
        );
        // The ACK carries the same.
        let ip = r.yiaddr();
        let (_, sent) = s.run(&with(
            class(
                arch(select(RESERVED_MAC, ip, SID), Architecture(a)),
                b"HTTPClient",
            ),
            DhcpOption::ParameterRequestList(vec![OptionCode::BootfileName]),
        ));
        let (ack, _) = sent.expect("an ACK");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(fname(&ack), Some(want));
        assert!(opt(&ack, OptionCode::ClassIdentifier).is_some());
    }
    // IA-32 HTTP (15): nothing, and no HTTPClient echo.
    let m = class(arch(discover(mac(7)), Architecture(15)), b"HTTPClient");
    let r = offer_for(&mut s, &m);
    assert_eq!(fname(&r), None);
    assert!(opt(&r, OptionCode::ClassIdentifier).is_none());
}

#[test]
fn urls_carry_the_http_port_unless_80_and_artifact_urls_stay_urls() {
    let mut p = cfg().profiles[1].clone();
    let m = ipxe(discover(RESERVED_MAC));
    let req = Request::parse(&m).unwrap();
    assert_eq!(
        boot_file(&p, &req, "http://10.0.0.10:8080", true),
        Some(BootFile {
            file: "http://10.0.0.10:8080/boot/52:54:00:00:ee:01.ipxe".into(),
            http_client: false
        })
    );
    p.uefi_x64 = Some("https://mirror.example/snp.efi".into());
    let m = arch(discover(RESERVED_MAC), Architecture(16));
    let req = Request::parse(&m).unwrap();
    assert_eq!(
        boot_file(&p, &req, "http://10.0.0.10:8080", true).map(|b| b.file),
        Some("https://mirror.example/snp.efi".into())
    );
    // An ordinary OS asking for an address (no 93, no PXEClient): nothing.
    let m = discover(RESERVED_MAC);
    let req = Request::parse(&m).unwrap();
    assert_eq!(boot_file(&p, &req, "http://10.0.0.10", true), None);
}
