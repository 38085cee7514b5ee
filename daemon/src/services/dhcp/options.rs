//! Reading client hints out of a request and shaping the reply's options:
//! boot file choice (PXE architecture, iPXE detection), hostnames, and
//! trimming a reply to the size the client can take.

use dhcproto::v4::{Decodable, Decoder, DhcpOption, Encodable, Message, OptionCode, UnknownOption};

use crate::model::BootProfile;

/// The user class iPXE sends (option 77). A client that already runs iPXE must
/// get the script URL, never `undionly.kpxe`, or it chain-loads itself forever.
pub const IPXE_USER_CLASS: &[u8] = b"iPXE";

/// iPXE's encapsulated option space (175) and its "no-pxedhcp" setting (176):
/// set to 1, iPXE does not wait ~3 s for proxy DHCP offers that never come.
pub const IPXE_ENCAP: u8 = 175;
pub const IPXE_NO_PXEDHCP: u8 = 176;

/// The largest reply we build when the client states no maximum (option 57):
/// RFC 2131 section 2 guarantees 576-octet IP datagrams.
pub const DEFAULT_MAX_MESSAGE: u16 = 576;

/// IPv4 (20) + UDP (8) headers: option 57 counts the whole datagram.
const IP_UDP_HEADERS: usize = 28;

/// Longest boot file name that fits the 128-octet `file` header field with
/// its terminating NUL; longer names (long iPXE URLs) go in option 67.
pub const MAX_FILE_FIELD: usize = 127;

/// Fixed header (236 octets) plus the magic cookie: where options start.
const OPTIONS_START: usize = 240;

/// Parses a request off the wire, refusing what dhcproto 0.15 cannot take
/// safely. Use this instead of `Message::decode` in the socket loop:
///
/// - `hlen` > 16: `Message::chaddr()` (and `Display`) would slice out of
///   bounds and panic;
/// - options whose length dhcproto only `debug_assert!`s or subtracts from
///   unchecked (80 rapid commit, 81 client FQDN, 94 client NII, 151-155 bulk
///   leasequery): a debug build panics on them, a release build wraps. A run
///   of the same code counts as one option (RFC 3396 concatenation, as
///   dhcproto does it).
///
/// The error is a short reason for the malformed counter and the log.
pub fn decode_request(bytes: &[u8]) -> Result<Message, &'static str> {
    if bytes.len() > 2 && bytes[2] > 16 {
        return Err("hlen larger than chaddr");
    }
    if let Some(opts) = bytes.get(OPTIONS_START..) {
        check_option_lengths(opts)?;
    }
    Message::decode(&mut Decoder::new(bytes)).map_err(|_| "undecodable DHCP message")
}

/// Walks the option TLVs (stopping where dhcproto would) and checks the
/// lengths of the codes listed in [`decode_request`].
fn check_option_lengths(mut opts: &[u8]) -> Result<(), &'static str> {
    let ok = |code: u8, len: usize| match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    };
    // (code, concatenated length) of the run being read.
    let mut run: Option<(u8, usize)> = None;
    loop {
        let next = match opts {
            [] | [255, ..] => None,
            [0, rest @ ..] => {
                opts = rest;
                Some(None)
            }
            [code, len, rest @ ..] if usize::from(*len) <= rest.len() => {
                opts = &rest[usize::from(*len)..];
                Some(Some((*code, usize::from(*len))))
            }
            // Truncated TLV: dhcproto stops here.
            _ => None,
        };
        match (run, next) {
            (Some((c, total)), Some(Some((code, len)))) if c == code => {
                run = Some((c, total + len));
            }
            (prev, next) => {
                if let Some((c, total)) = prev {
                    if !ok(c, total) {
                        return Err("option with an impossible length");
                    }
                }
                match next {
                    None => return Ok(()),
                    Some(tlv) => run = tlv,
                }
            }
        }
    }
}

/// Whether the request's user class (option 77) says "iPXE". iPXE sends the
/// bare string; RFC 3004 clients send length-prefixed items. Both are accepted.
#[must_use]
pub fn is_ipxe(req: &Message) -> bool {
    let Some(DhcpOption::UserClass(data)) = req.opts().get(OptionCode::UserClass) else {
        return false;
    };
    if data.as_slice() == IPXE_USER_CLASS {
        return true;
    }
    // RFC 3004: a list of (len, bytes) items.
    let mut rest = data.as_slice();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == IPXE_USER_CLASS {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// The client's system architecture (option 93), if it sent one.
#[must_use]
pub fn client_arch(req: &Message) -> Option<u16> {
    match req.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
        _ => None,
    }
}

/// Whether the vendor class (option 60) starts with "PXEClient": a PXE ROM
/// that did not say its architecture is a legacy BIOS one (PXE 2.1 ROMs
/// before RFC 4578).
#[must_use]
pub fn is_pxe_client(req: &Message) -> bool {
    matches!(
        req.opts().get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(v)) if v.starts_with(b"PXEClient")
    )
}

/// Which file of `profile` this client boots.
///
/// - iPXE (user class) gets `ipxe_script` or nothing: never a NBP it would
///   chain-load again.
/// - By architecture (RFC 4578 / IANA processor architecture types):
///   0 → `bios`; 7 (x64 UEFI) and 9 (EFI BC, which every real firmware using
///   it is x86-64) → `uefi_x64`; 11 → `uefi_arm64`.
/// - 6 (IA-32 UEFI) gets nothing: a 32-bit UEFI firmware cannot execute an
///   x86-64 EFI image, so handing it `uefi_x64` would fail at boot in a way
///   that is harder to diagnose than "no boot file".
/// - No option 93: `bios` when `legacy_default` (a `PXEClient` vendor class or
///   a BOOTP client), else nothing (an ordinary OS asking for an address).
#[must_use]
pub fn boot_file(
    profile: &BootProfile,
    ipxe: bool,
    arch: Option<u16>,
    legacy_default: bool,
) -> Option<&str> {
    if ipxe {
        return profile.ipxe_script.as_deref();
    }
    let arch = arch.or(if legacy_default { Some(0) } else { None })?;
    match arch {
        0 => profile.bios.as_deref(),
        7 | 9 => profile.uefi_x64.as_deref(),
        11 => profile.uefi_arm64.as_deref(),
        _ => None,
    }
}

/// iPXE's "no-pxedhcp = 1", encapsulated in option 175.
#[must_use]
pub fn ipxe_no_pxedhcp() -> DhcpOption {
    DhcpOption::Unknown(UnknownOption::new(
        OptionCode::Unknown(IPXE_ENCAP),
        vec![IPXE_NO_PXEDHCP, 1, 1],
    ))
}

/// A client-sent hostname (option 12) if it is a plausible DNS label:
/// 1..=63 octets of letters, digits and `-`, and does not start or end with a
/// hyphen. Anything else is ignored rather than stored and echoed in
/// `tandem lease list`.
#[must_use]
pub fn client_hostname(req: &Message) -> Option<String> {
    let Some(DhcpOption::Hostname(h)) = req.opts().get(OptionCode::Hostname) else {
        return None;
    };
    let ok = (1..=63).contains(&h.len())
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-');
    ok.then(|| h.clone())
}

/// The largest DHCP message (UDP payload) the client accepts: option 57
/// minus the IP and UDP headers, never less than what RFC 2131 guarantees.
#[must_use]
pub fn max_reply_len(req: &Message) -> usize {
    let stated = match req.opts().get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(n)) => *n,
        _ => DEFAULT_MAX_MESSAGE,
    };
    usize::from(stated.max(DEFAULT_MAX_MESSAGE)) - IP_UDP_HEADERS
}

/// Encoded length of `msg` (header, cookie, options, end).
#[must_use]
pub fn encoded_len(msg: &Message) -> usize {
    // Encoding into a Vec cannot fail for messages we build (every option
    // fits its length octet or is split by dhcproto); treat a failure as
    // "too big" so trimming removes what it can.
    msg.to_vec().map_or(usize::MAX, |v| v.len())
}

/// Options that may go, in the order they go, when a reply is too large:
/// first the cosmetic ones (domain, hostname), then whatever the client did
/// not ask for in its parameter request list (55). Message type, server id,
/// lease times, subnet mask, relay agent info and the iPXE option always stay.
const TRIM_ORDER: [OptionCode; 5] = [
    OptionCode::DomainName,
    OptionCode::Hostname,
    OptionCode::DomainNameServer,
    OptionCode::Router,
    OptionCode::BootfileName,
];

/// Removes optional options from `reply` until it encodes in `max` octets.
/// Returns whether it fits in the end.
pub fn fit(reply: &mut Message, max: usize, requested: &[OptionCode]) -> bool {
    if encoded_len(reply) <= max {
        return true;
    }
    // Pass 1: the cosmetic ones, requested or not. Pass 2: the rest of the
    // list, but only if the client did not ask for them. Pass 3: anything
    // on the list.
    let cosmetic = &TRIM_ORDER[..2];
    let passes: [&dyn Fn(OptionCode) -> bool; 3] = [
        &|c| cosmetic.contains(&c),
        &|c| !requested.contains(&c),
        &|_| true,
    ];
    for pass in passes {
        for code in TRIM_ORDER {
            if pass(code) && reply.opts_mut().remove(code).is_some() && encoded_len(reply) <= max {
                return true;
            }
        }
    }
    encoded_len(reply) <= max
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, MessageType};

    fn req_with(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    fn profile() -> BootProfile {
        BootProfile {
            name: "p".into(),
            bios: Some("undionly.kpxe".into()),
            uefi_x64: Some("ipxe.efi".into()),
            uefi_arm64: Some("ipxe-arm64.efi".into()),
            ipxe_script: Some("http://10.0.0.10/boot.ipxe".into()),
        }
    }

    #[test]
    fn decode_request_refuses_what_would_panic_dhcproto() {
        let mut m = Message::default();
        m.set_chaddr(&[2, 0, 0, 0, 0, 1]);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        let good = m.to_vec().unwrap();
        assert!(decode_request(&good).is_ok());
        let mut bad = good.clone();
        bad[2] = 17;
        assert_eq!(decode_request(&bad).unwrap_err(), "hlen larger than chaddr");
        // Splice a raw option in before the end marker.
        let with_opt = |raw: &[u8]| {
            let mut b = good[..good.len() - 1].to_vec();
            b.extend_from_slice(raw);
            b.push(255);
            b
        };
        for raw in [
            &[80u8, 1, 0][..],
            &[94, 2, 1, 2],
            &[151, 0],
            &[152, 3, 0, 0, 0],
            &[81, 1, 0],
        ] {
            assert!(decode_request(&with_opt(raw)).is_err(), "{raw:?}");
        }
        // Two adjacent 4-octet 152s concatenate to 8 octets: refused too.
        assert!(decode_request(&with_opt(&[152, 4, 0, 0, 0, 1, 152, 4, 0, 0, 0, 2])).is_err());
        // Well-formed ones pass, with padding between.
        let ok = with_opt(&[80, 0, 0, 94, 3, 1, 2, 3, 152, 4, 0, 0, 0, 1]);
        assert!(decode_request(&ok).is_ok());
        assert!(decode_request(&good[..100]).is_err());
    }

    #[test]
    fn ipxe_user_class_in_both_encodings() {
        assert!(is_ipxe(&req_with(vec![DhcpOption::UserClass(
            b"iPXE".to_vec()
        )])));
        assert!(is_ipxe(&req_with(vec![DhcpOption::UserClass(
            b"\x03foo\x04iPXE".to_vec()
        )])));
        assert!(!is_ipxe(&req_with(vec![DhcpOption::UserClass(
            b"\x05iPXE".to_vec()
        )])));
        assert!(!is_ipxe(&req_with(vec![DhcpOption::UserClass(
            b"gPXE".to_vec()
        )])));
        assert!(!is_ipxe(&req_with(vec![])));
    }

    #[test]
    fn boot_file_by_arch_and_ipxe() {
        let p = profile();
        assert_eq!(
            boot_file(&p, true, Some(0), true),
            Some("http://10.0.0.10/boot.ipxe")
        );
        assert_eq!(boot_file(&p, false, Some(0), false), Some("undionly.kpxe"));
        assert_eq!(boot_file(&p, false, Some(7), false), Some("ipxe.efi"));
        assert_eq!(boot_file(&p, false, Some(9), false), Some("ipxe.efi"));
        assert_eq!(boot_file(&p, false, Some(6), false), None);
        assert_eq!(
            boot_file(&p, false, Some(11), false),
            Some("ipxe-arm64.efi")
        );
        assert_eq!(boot_file(&p, false, None, true), Some("undionly.kpxe"));
        assert_eq!(boot_file(&p, false, None, false), None);
        // iPXE without a script never falls back to the BIOS NBP.
        let no_script = BootProfile {
            ipxe_script: None,
            ..p
        };
        assert_eq!(boot_file(&no_script, true, Some(0), true), None);
        let r = req_with(vec![DhcpOption::ClientSystemArchitecture(
            Architecture::X64,
        )]);
        assert_eq!(client_arch(&r), Some(7));
    }

    #[test]
    fn hostnames_are_sanitised() {
        let h = |s: &str| client_hostname(&req_with(vec![DhcpOption::Hostname(s.into())]));
        assert_eq!(h("node-7"), Some("node-7".into()));
        assert_eq!(h("-bad"), None);
        assert_eq!(h("has space"), None);
        assert_eq!(h(&"x".repeat(64)), None);
    }

    #[test]
    fn max_len_respects_option_57_with_a_floor() {
        assert_eq!(max_reply_len(&req_with(vec![])), 548);
        assert_eq!(
            max_reply_len(&req_with(vec![DhcpOption::MaxMessageSize(300)])),
            548
        );
        assert_eq!(
            max_reply_len(&req_with(vec![DhcpOption::MaxMessageSize(1500)])),
            1472
        );
    }

    #[test]
    fn fit_drops_cosmetic_options_first() {
        let mut m = Message::default();
        m.set_chaddr(&[2, 0, 0, 0, 0, 1]);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        m.opts_mut().insert(DhcpOption::DomainName("d".repeat(250)));
        m.opts_mut().insert(DhcpOption::Hostname("h".repeat(60)));
        m.opts_mut()
            .insert(DhcpOption::DomainNameServer(vec![[10, 0, 0, 53].into(); 8]));
        let dns_only = {
            let mut c = m.clone();
            c.opts_mut().remove(OptionCode::DomainName);
            c.opts_mut().remove(OptionCode::Hostname);
            encoded_len(&c)
        };
        assert!(encoded_len(&m) > 548);
        assert!(fit(&mut m, 548, &[OptionCode::DomainNameServer]));
        assert!(!m.opts().contains(OptionCode::DomainName));
        // The hostname may stay if dropping the domain was enough.
        assert!(encoded_len(&m) <= 548);
        assert!(m.opts().contains(OptionCode::DomainNameServer));
        // With a tiny budget, requested options go too, but never option 53.
        assert!(!fit(&mut m, dns_only - 1 - 34, &[]));
        assert!(m.opts().contains(OptionCode::MessageType));
        assert!(!m.opts().contains(OptionCode::DomainNameServer));
    }
}
