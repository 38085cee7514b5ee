//! A request off the wire, in two steps:
//!
//! 1. [`decode`]: bytes to a [`Message`], refusing what dhcproto cannot take
//!    safely (the socket loop's only parser).
//! 2. [`Request::parse`]: the validity checks every request must pass
//!    (BOOTREQUEST, 6-byte Ethernet, unicast MAC), then every field and
//!    option the decision and the reply builder read, looked up once.
//!
//! Both return a short `&'static str` reason for what they refuse: the
//! socket loop counts it as malformed and drops the packet.

use std::net::Ipv4Addr;

use dhcproto::v4::{Decodable, Decoder, DhcpOption, Flags, HType, Message, MessageType, Opcode};
use dhcproto::v4::{OptionCode, MIN_PACKET_SIZE};

use crate::model::Mac;

/// The user class iPXE sends (option 77). A client that already runs iPXE must
/// get the script URL, never `undionly.kpxe`, or it chain-loads itself forever.
pub const IPXE_USER_CLASS: &[u8] = b"iPXE";

/// The largest reply we build when the client states no maximum (option 57):
/// RFC 2131 section 2 guarantees 576-octet IP datagrams.
pub const DEFAULT_MAX_MESSAGE: u16 = 576;

/// IPv4 (20) + UDP (8) headers: option 57 counts the whole datagram.
const IP_UDP_HEADERS: usize = 28;

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
pub fn decode(bytes: &[u8]) -> Result<Message, &'static str> {
    if bytes.len() > 2 && bytes[2] > 16 {
        return Err("hlen larger than chaddr");
    }
    if let Some(opts) = bytes.get(OPTIONS_START..) {
        check_option_lengths(opts)?;
    }
    Message::decode(&mut Decoder::new(bytes)).map_err(|_| "undecodable DHCP message")
}

/// Walks the option TLVs (stopping where dhcproto would) and checks the
/// lengths of the codes listed in [`decode`].
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

/// One valid request, typed: what the decision and the reply builder read,
/// looked up once. It borrows from the [`Message`] it was parsed from, so
/// building it copies no option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// chaddr: a unicast Ethernet address (checked).
    pub mac: Mac,
    /// Option 53; `None` for a BOOTP (RFC 951) client.
    pub kind: Option<MessageType>,
    pub xid: u32,
    /// Echoed in every reply; its broadcast bit picks the destination.
    pub flags: Flags,
    /// The relay's address, or unspecified.
    pub giaddr: Ipv4Addr,
    /// The client's address when it has one (renewing, INFORM), or unspecified.
    pub ciaddr: Ipv4Addr,
    /// Option 50, unless unspecified.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54: the server the client selected.
    pub server_id: Option<Ipv4Addr>,
    /// Option 93: the client's system architecture.
    pub arch: Option<u16>,
    /// Option 77 says "iPXE" (see [`is_ipxe`]).
    pub ipxe: bool,
    /// Option 60 starts with "PXEClient": a legacy PXE ROM if `arch` is unset.
    pub pxe_client: bool,
    /// Option 60 starts with "HTTPClient": UEFI HTTP boot.
    pub http_client: bool,
    /// Option 12, if it is a plausible DNS label (see [`client_hostname`]).
    pub hostname: Option<&'a str>,
    /// The largest reply (UDP payload) the client accepts: option 57 for
    /// DHCP clients (see [`max_reply_len`]), the fixed 300 octets for BOOTP.
    pub max_len: usize,
    /// Option 55: which optional options the client asked for.
    pub params: &'a [OptionCode],
    /// Option 61, echoed back (RFC 6842).
    pub client_id: Option<&'a DhcpOption>,
    /// Option 82, echoed back (RFC 3046).
    pub relay_info: Option<&'a DhcpOption>,
}

impl<'a> Request<'a> {
    /// Checks that `msg` is a request a server may answer at all and reads
    /// it; the error is the malformed reason.
    pub fn parse(msg: &'a Message) -> Result<Self, &'static str> {
        if msg.opcode() != Opcode::BootRequest {
            return Err("op is not BOOTREQUEST");
        }
        // hlen is checked before chaddr() is called: dhcproto slices chaddr by
        // hlen and would panic for hlen > 16.
        if msg.htype() != HType::Eth || msg.hlen() != 6 {
            return Err("hardware address is not 6-byte Ethernet");
        }
        let Some(mac) = Mac::from_slice(msg.chaddr()) else {
            return Err("hardware address is not 6-byte Ethernet");
        };
        if mac.0 == [0; 6] || mac.0[0] & 1 == 1 {
            return Err("chaddr is not a unicast MAC");
        }
        let opts = msg.opts();
        let kind = opts.msg_type();
        Ok(Request {
            mac,
            kind,
            xid: msg.xid(),
            flags: msg.flags(),
            giaddr: msg.giaddr(),
            ciaddr: msg.ciaddr(),
            requested_ip: match opts.get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) if !ip.is_unspecified() => Some(*ip),
                _ => None,
            },
            server_id: match opts.get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
                _ => None,
            },
            arch: client_arch(msg),
            ipxe: is_ipxe(msg),
            pxe_client: vendor_class_starts(msg, b"PXEClient"),
            http_client: vendor_class_starts(msg, b"HTTPClient"),
            hostname: client_hostname(msg),
            max_len: if kind.is_none() {
                MIN_PACKET_SIZE
            } else {
                max_reply_len(msg)
            },
            params: match opts.get(OptionCode::ParameterRequestList) {
                Some(DhcpOption::ParameterRequestList(l)) => l.as_slice(),
                _ => &[],
            },
            client_id: opts.get(OptionCode::ClientIdentifier),
            relay_info: opts.get(OptionCode::RelayAgentInformation),
        })
    }

    /// Whether the request came through a relay (giaddr set).
    #[must_use]
    pub fn relayed(&self) -> bool {
        !self.giaddr.is_unspecified()
    }
}

/// Whether the request's user class (option 77) says "iPXE". iPXE sends the
/// bare string; RFC 3004 clients send length-prefixed items. Both are accepted.
fn is_ipxe(req: &Message) -> bool {
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
pub(super) fn client_arch(req: &Message) -> Option<u16> {
    match req.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
        _ => None,
    }
}

/// Whether the vendor class (option 60) starts with `prefix`: `PXEClient`
/// (a PXE ROM that did not say its architecture is a legacy BIOS one, as
/// PXE 2.1 ROMs before RFC 4578) or `HTTPClient` (UEFI HTTP boot).
fn vendor_class_starts(req: &Message, prefix: &[u8]) -> bool {
    matches!(
        req.opts().get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(v)) if v.starts_with(prefix)
    )
}

/// A client-sent hostname (option 12) if it is a plausible DNS label:
/// 1..=63 octets of letters, digits and `-`, and does not start or end with a
/// hyphen. Anything else is ignored rather than stored and echoed in
/// `tandem lease list`.
fn client_hostname(req: &Message) -> Option<&str> {
    let Some(DhcpOption::Hostname(h)) = req.opts().get(OptionCode::Hostname) else {
        return None;
    };
    let ok = (1..=63).contains(&h.len())
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-');
    ok.then_some(h.as_str())
}

/// The largest DHCP message (UDP payload) the client accepts: option 57
/// minus the IP and UDP headers, never less than what RFC 2131 guarantees.
fn max_reply_len(req: &Message) -> usize {
    let stated = match req.opts().get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(n)) => *n,
        _ => DEFAULT_MAX_MESSAGE,
    };
    usize::from(stated.max(DEFAULT_MAX_MESSAGE)) - IP_UDP_HEADERS
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::MessageType;
    use dhcproto::Encodable;

    fn req_with(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    #[test]
    fn decode_request_refuses_what_would_panic_dhcproto() {
        let mut m = Message::default();
        m.set_chaddr(&[2, 0, 0, 0, 0, 1]);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        let good = m.to_vec().unwrap();
        assert!(decode(&good).is_ok());
        let mut bad = good.clone();
        bad[2] = 17;
        assert_eq!(decode(&bad).unwrap_err(), "hlen larger than chaddr");
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
            assert!(decode(&with_opt(raw)).is_err(), "{raw:?}");
        }
        // Two adjacent 4-octet 152s concatenate to 8 octets: refused too.
        assert!(decode(&with_opt(&[152, 4, 0, 0, 0, 1, 152, 4, 0, 0, 0, 2])).is_err());
        // Well-formed ones pass, with padding between.
        let ok = with_opt(&[80, 0, 0, 94, 3, 1, 2, 3, 152, 4, 0, 0, 0, 1]);
        assert!(decode(&ok).is_ok());
        assert!(decode(&good[..100]).is_err());
    }

    #[test]
    fn parse_reads_every_field_and_refuses_what_no_client_sends() {
        use dhcproto::v4::{relay, Architecture};

        let mac = [0x52, 0x54, 0, 0, 0, 7];
        let (ci, gi) = (Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 1, 0, 1));
        let mut m = Message::new_with_id(0x1234, ci, Ipv4Addr::UNSPECIFIED, gi, gi, &mac);
        m.set_flags(Flags::default().set_broadcast());
        let mut info = relay::RelayAgentInformation::default();
        info.insert(relay::RelayInfo::AgentCircuitId(b"port7".to_vec()));
        let params = vec![OptionCode::Router, OptionCode::DomainNameServer];
        for o in [
            DhcpOption::MessageType(MessageType::Request),
            DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, 100)),
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 10)),
            DhcpOption::ClientSystemArchitecture(Architecture::X64),
            DhcpOption::UserClass(b"iPXE".to_vec()),
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007".to_vec()),
            DhcpOption::Hostname("node-7".into()),
            DhcpOption::MaxMessageSize(1500),
            DhcpOption::ParameterRequestList(params.clone()),
            DhcpOption::ClientIdentifier(vec![1, 0x52, 0x54, 0, 0, 0, 7]),
            DhcpOption::RelayAgentInformation(info),
        ] {
            m.opts_mut().insert(o);
        }
        let r = Request::parse(&m).unwrap();
        let want = Request {
            mac: Mac(mac),
            kind: Some(MessageType::Request),
            xid: 0x1234,
            flags: Flags::default().set_broadcast(),
            giaddr: gi,
            ciaddr: ci,
            requested_ip: Some(Ipv4Addr::new(10, 1, 0, 100)),
            server_id: Some(Ipv4Addr::new(10, 0, 0, 10)),
            arch: Some(7),
            ipxe: true,
            pxe_client: true,
            http_client: false,
            hostname: Some("node-7"),
            max_len: 1472,
            params: &params,
            client_id: m.opts().get(OptionCode::ClientIdentifier),
            relay_info: m.opts().get(OptionCode::RelayAgentInformation),
        };
        assert_eq!(r, want);
        assert!(r.relayed() && r.client_id.is_some() && r.relay_info.is_some());

        // BOOTP: no option 53, the fixed 300-octet reply; 0.0.0.0 in option 50
        // means no address asked for.
        let mut b = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        b.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::UNSPECIFIED));
        let r = Request::parse(&b).unwrap();
        assert_eq!((r.kind, r.max_len, r.requested_ip), (None, 300, None));
        assert!(!r.relayed() && r.params.is_empty() && r.hostname.is_none());

        let mut bad = b.clone();
        bad.set_opcode(Opcode::BootReply);
        assert_eq!(Request::parse(&bad), Err("op is not BOOTREQUEST"));
        let mut bad = b.clone();
        bad.set_htype(HType::from(6));
        assert_eq!(
            Request::parse(&bad),
            Err("hardware address is not 6-byte Ethernet")
        );
        for chaddr in [[0; 6], [0xff; 6], [1, 0, 0, 0, 0, 1]] {
            let mut bad = b.clone();
            bad.set_chaddr(&chaddr);
            assert_eq!(Request::parse(&bad), Err("chaddr is not a unicast MAC"));
        }
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
    fn hostnames_are_sanitised() {
        let h = |s: &str| {
            client_hostname(&req_with(vec![DhcpOption::Hostname(s.into())])).map(str::to_owned)
        };
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
}
