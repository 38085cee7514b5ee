//! Reply building: where a reply goes ([`Destination`], RFC 2131 4.1) and
//! what it says ([`Replies`]): the identity fields and options echoed from
//! the request, the subnet's parameters, the boot file, and trimming to the
//! size the client accepts. No decision is taken here: the handler says
//! which reply, with which address.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::Encodable;

use super::request::Request;
use crate::model::{BootProfile, Mac, Reservation, ServiceConfig, Subnet};
use crate::services::http;

/// iPXE's encapsulated option space (175) and its "no-pxedhcp" setting (176):
/// set to 1, iPXE does not wait ~3 s for proxy DHCP offers that never come.
pub const IPXE_ENCAP: u8 = 175;
pub const IPXE_NO_PXEDHCP: u8 = 176;

/// Longest boot file name that fits the 128-octet `file` header field with
/// its terminating NUL; longer names (long iPXE URLs) go in option 67.
pub const MAX_FILE_FIELD: usize = 127;

/// Where a reply goes (RFC 2131 section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// giaddr != 0: send to giaddr:67 (relay). perfdhcp depends on this.
    Relay(Ipv4Addr),
    /// ciaddr != 0 (renewing/rebinding/inform): unicast UDP to ciaddr:68.
    Unicast(Ipv4Addr),
    /// No address yet and broadcast flag clear: L2 unicast to chaddr, IP dst = yiaddr, port 68.
    L2Unicast { mac: Mac, ip: Ipv4Addr },
    /// Broadcast flag set (or NAK with no giaddr): 255.255.255.255:68, L2 broadcast.
    Broadcast,
}

impl Destination {
    /// RFC 2131 4.1, for OFFER, ACK and BOOTREPLY carrying `yiaddr`.
    #[must_use]
    pub fn of(req: &Request<'_>, yiaddr: Ipv4Addr) -> Destination {
        if req.relayed() {
            Destination::Relay(req.giaddr)
        } else if !req.ciaddr.is_unspecified() {
            Destination::Unicast(req.ciaddr)
        } else if req.flags.broadcast() || yiaddr.is_unspecified() {
            Destination::Broadcast
        } else {
            Destination::L2Unicast {
                mac: req.mac,
                ip: yiaddr,
            }
        }
    }

    /// RFC 2131 4.1: a NAK goes to the relay, or is broadcast.
    #[must_use]
    pub fn of_nak(req: &Request<'_>) -> Destination {
        if req.relayed() {
            Destination::Relay(req.giaddr)
        } else {
            Destination::Broadcast
        }
    }

    /// Where the fallback `nak` of a commit goes when the ACK would have gone
    /// to `self`: RFC 2131 4.1 broadcasts every NAK that is not relayed,
    /// since the client may not accept a unicast to an address it was just
    /// refused.
    #[must_use]
    pub fn for_nak(self) -> Destination {
        match self {
            Destination::Relay(g) => Destination::Relay(g),
            _ => Destination::Broadcast,
        }
    }
}

/// Builds the replies to one request, bound to what they are built from:
/// the request, the service config (reservations, profiles), the selected
/// subnet and the server id.
pub struct Replies<'a> {
    req: &'a Request<'a>,
    config: &'a ServiceConfig,
    subnet: &'a Subnet,
    server_id: Ipv4Addr,
    /// The HTTP boot port on the VIP, for the URLs handed to iPXE and UEFI
    /// HTTP boot clients.
    http_port: u16,
}

impl<'a> Replies<'a> {
    #[must_use]
    pub fn new(
        req: &'a Request<'a>,
        config: &'a ServiceConfig,
        subnet: &'a Subnet,
        server_id: Ipv4Addr,
        http_port: u16,
    ) -> Self {
        Replies {
            req,
            config,
            subnet,
            server_id,
            http_port,
        }
    }

    /// DHCPOFFER of `ip` for the subnet's lease time.
    #[must_use]
    pub fn offer(&self, ip: Ipv4Addr) -> Message {
        let mut reply = self.base(Some(MessageType::Offer));
        reply.set_yiaddr(ip);
        self.add_config(&mut reply, Some(self.subnet.lease_time));
        reply
    }

    /// DHCPACK binding `ip` for the subnet's lease time.
    #[must_use]
    pub fn ack(&self, ip: Ipv4Addr) -> Message {
        let mut reply = self.base(Some(MessageType::Ack));
        reply.set_yiaddr(ip).set_ciaddr(self.req.ciaddr);
        self.add_config(&mut reply, Some(self.subnet.lease_time));
        reply
    }

    /// DHCPACK to an INFORM (RFC 2131 3.4): options, no yiaddr, no lease time.
    #[must_use]
    pub fn inform_ack(&self) -> Message {
        let mut reply = self.base(Some(MessageType::Ack));
        reply.set_ciaddr(self.req.ciaddr);
        self.add_config(&mut reply, None);
        reply
    }

    /// DHCPNAK saying `why` (option 56).
    #[must_use]
    pub fn nak(&self, why: &str) -> Message {
        let mut m = self.base(Some(MessageType::Nak));
        m.opts_mut().insert(DhcpOption::Message(why.to_owned()));
        if self.req.relayed() {
            // RFC 2131 4.3.2: so the relay broadcasts it on the client's segment.
            m.set_flags(m.flags().set_broadcast());
        }
        m
    }

    /// BOOTREPLY (RFC 951) giving `ip`: no DHCP-only options.
    #[must_use]
    pub fn bootreply(&self, ip: Ipv4Addr) -> Message {
        let mut reply = self.base(None);
        reply.set_yiaddr(ip).set_ciaddr(self.req.ciaddr);
        self.add_config(&mut reply, None);
        reply
    }

    /// What BOOTP (which has no NAK) gets when the grant behind `reply` is
    /// refused: the same BOOTREPLY with `yiaddr`, `siaddr` and the file
    /// cleared. Sending the address the cluster just refused would create a
    /// conflict, while an empty reply is ignored by BOOTP clients, which then
    /// retry.
    #[must_use]
    pub fn bootp_refusal(reply: &Message) -> Message {
        let mut nak = reply.clone();
        nak.set_yiaddr(Ipv4Addr::UNSPECIFIED)
            .set_siaddr(Ipv4Addr::UNSPECIFIED)
            .clear_fname();
        nak
    }

    /// A BOOTREPLY echoing the request's identity fields (xid, flags, giaddr,
    /// chaddr), with option 53 and 54 when `kind` is given, and the options
    /// a server must copy back: client identifier (RFC 6842) and relay agent
    /// information (RFC 3046).
    fn base(&self, kind: Option<MessageType>) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let req = self.req;
        let mut m = Message::new_with_id(req.xid, z, z, z, req.giaddr, &req.mac.0);
        m.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_flags(req.flags);
        if let Some(kind) = kind {
            m.opts_mut().insert(DhcpOption::MessageType(kind));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(self.server_id));
        }
        for o in [req.client_id, req.relay_info].into_iter().flatten() {
            m.opts_mut().insert(o.clone());
        }
        m
    }

    /// The subnet's parameters, lease times (unless `lease` is `None`) and
    /// boot information, trimmed to what the client can receive.
    fn add_config(&self, reply: &mut Message, lease: Option<u32>) {
        let s = self.subnet;
        let opts = reply.opts_mut();
        if let Some(t) = lease {
            opts.insert(DhcpOption::AddressLeaseTime(t));
            opts.insert(DhcpOption::Renewal(t / 2));
            opts.insert(DhcpOption::Rebinding((u64::from(t) * 7 / 8) as u32));
        }
        opts.insert(DhcpOption::SubnetMask(s.cidr.netmask()));
        if let Some(r) = s.router {
            opts.insert(DhcpOption::Router(vec![r]));
        }
        if !s.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(s.dns.clone()));
        }
        if let Some(d) = &s.domain {
            opts.insert(DhcpOption::DomainName(d.clone()));
        }
        // For INFORM and BOOTP the reservation is looked up without the
        // free check: it only names the host and its profile here.
        let res = self
            .config
            .reservation_for(self.req.mac)
            .filter(|r| s.cidr.contains(&r.ip));
        if let Some(h) = res.and_then(|r| r.hostname.clone()) {
            opts.insert(DhcpOption::Hostname(h));
        }
        reply.set_siaddr(s.next_server.unwrap_or(self.server_id));
        self.add_boot(reply, res);

        let max = self.req.max_len;
        if !fit(reply, max, self.req.params) {
            tracing::debug!(target: "tandem::packet::dhcp", mac = %self.req.mac, max, "reply exceeds the client's maximum size");
        }
    }

    /// Boot file from the reservation's profile or the subnet's (see
    /// [`boot_file`]), iPXE's no-pxedhcp when the client is iPXE, and the
    /// vendor class `HTTPClient` echoed to a UEFI HTTP boot client (its
    /// firmware ignores offers without it).
    fn add_boot(&self, reply: &mut Message, res: Option<&Reservation>) {
        let req = self.req;
        if req.ipxe {
            reply.opts_mut().insert(ipxe_no_pxedhcp());
        }
        let reserved = res.and_then(|r| r.profile.as_deref());
        let Some(name) = reserved.or(self.subnet.profile.as_deref()) else {
            return;
        };
        let Some(profile) = self.config.profile(name) else {
            tracing::debug!(target: "tandem::packet::dhcp", profile = name, "boot profile not found");
            return;
        };
        let base = http::base_url(self.server_id.into(), self.http_port);
        let Some(boot) = boot_file(profile, req, &base, reserved.is_some()) else {
            return;
        };
        if boot.http_client {
            reply
                .opts_mut()
                .insert(DhcpOption::ClassIdentifier(HTTP_CLIENT_CLASS.to_vec()));
        }
        let file = boot.file;
        if file.len() <= MAX_FILE_FIELD {
            reply.set_fname_str(&file);
        } else {
            reply
                .opts_mut()
                .insert(DhcpOption::BootfileName(file.into_bytes()));
        }
    }
}

/// The vendor class (option 60) of UEFI HTTP boot clients, and of the
/// servers that answer them.
pub const HTTP_CLIENT_CLASS: &[u8] = b"HTTPClient";

/// The boot file for one client, and whether it is an HTTP boot answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    /// For the `file` field (or option 67 when longer).
    pub file: String,
    /// Echo option 60 `HTTPClient` (UEFI HTTP boot).
    pub http_client: bool,
}

/// Which file of `profile` this client boots; `base` is the HTTP boot
/// server's URL (`http://VIP[:port]`), `reserved` says the profile is the
/// client's reservation's.
///
/// - iPXE (user class): `ipxe_script` if set; else, if the profile has a
///   kernel, the rendered script: `/boot/MAC.ipxe` when reserved, else
///   `/boot/profile/NAME.ipxe`; else nothing. Never a NBP, which iPXE would
///   chain-load again.
/// - UEFI HTTP boot (vendor class `HTTPClient`, or arch 16 x64 / 19 ARM64):
///   the URL of `uefi_x64` / `uefi_arm64`.
/// - By architecture (RFC 4578 / IANA processor architecture types), by TFTP:
///   0 → `bios`; 7 (x64 UEFI) and 9 (EFI BC, which every real firmware using
///   it is x86-64) → `uefi_x64`; 11 → `uefi_arm64`.
/// - 6 (IA-32 UEFI) and 15 (IA-32 HTTP) get nothing: a 32-bit UEFI firmware
///   cannot execute an x86-64 EFI image, so handing it `uefi_x64` would fail
///   at boot in a way that is harder to diagnose than "no boot file".
/// - No option 93: `bios` for a `PXEClient` vendor class or a BOOTP client,
///   else nothing (an ordinary OS asking for an address).
#[must_use]
pub fn boot_file(
    profile: &BootProfile,
    req: &Request<'_>,
    base: &str,
    reserved: bool,
) -> Option<BootFile> {
    let plain = |f: Option<&String>| {
        f.map(|f| BootFile {
            file: f.clone(),
            http_client: false,
        })
    };
    if req.ipxe {
        if profile.ipxe_script.is_some() {
            return plain(profile.ipxe_script.as_ref());
        }
        profile.kernel.as_ref()?;
        let path = if reserved {
            http::reservation_script_path(req.mac)
        } else {
            http::profile_script_path(&profile.name)
        };
        return Some(BootFile {
            file: format!("{base}{path}"),
            http_client: false,
        });
    }
    if req.http_client || matches!(req.arch, Some(16 | 19)) {
        let f = match req.arch? {
            16 => profile.uefi_x64.as_deref(),
            19 => profile.uefi_arm64.as_deref(),
            _ => None,
        }?;
        return Some(BootFile {
            file: http::artifact_url(base, f),
            http_client: true,
        });
    }
    let legacy_default = req.kind.is_none() || req.pxe_client;
    match req.arch.or(legacy_default.then_some(0))? {
        0 => plain(profile.bios.as_ref()),
        7 | 9 => plain(profile.uefi_x64.as_ref()),
        11 => plain(profile.uefi_arm64.as_ref()),
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
    use dhcproto::v4::MessageType;

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
