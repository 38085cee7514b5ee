use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mac::Mac;

/// The replicated service configuration: what `tandem apply FILE` sets as a
/// whole and `tandem export` prints back. The TOML file and this type have
/// the same shape, so an operator's file round-trips through the cluster.
/// `config::service::validate` checks it before it is proposed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// What to do with BOOTP clients (no DHCP message type).
    #[serde(default)]
    pub bootp: BootpPolicy,
    #[serde(default, rename = "subnet")]
    pub subnets: Vec<Subnet>,
    #[serde(default, rename = "reservation")]
    pub reservations: Vec<Reservation>,
    #[serde(default, rename = "profile")]
    pub profiles: Vec<BootProfile>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootpPolicy {
    /// BOOTP clients get an address only from a reservation (ISC dhcpd's default).
    #[default]
    ReservationsOnly,
    /// BOOTP clients may also get a pool address, bound for the subnet's lease time.
    Dynamic,
}

/// One IPv4 subnet that the server hands addresses out of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// The subnet, e.g. `10.99.0.0/16`. Requests are matched to it by giaddr
    /// (relayed) or by the service interface's own address (direct).
    pub cidr: Ipv4Net,
    /// Dynamic ranges, written `"10.99.1.1-10.99.1.200"`.
    #[serde(default)]
    pub pools: Vec<PoolRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Lease time in seconds; T1 is half of it and T2 seven eighths.
    #[serde(default = "default_lease_time")]
    pub lease_time: u32,
    /// `siaddr`: the TFTP server clients should use. Defaults to the VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_server: Option<Ipv4Addr>,
    /// Boot profile for clients without a reservation that names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

fn default_lease_time() -> u32 {
    600
}

/// An inclusive range of addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl PoolRange {
    #[must_use]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    /// Number of addresses in the range (0 if reversed).
    #[must_use]
    pub fn len(&self) -> u64 {
        let (s, e) = (u32::from(self.start), u32::from(self.end));
        if e < s {
            0
        } else {
            u64::from(e - s) + 1
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for PoolRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for PoolRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once('-').ok_or_else(|| {
            format!("pool range {s:?} must be written START-END, e.g. 10.99.1.1-10.99.1.200")
        })?;
        let start = a
            .trim()
            .parse()
            .map_err(|e| format!("pool range {s:?}: start: {e}"))?;
        let end = b
            .trim()
            .parse()
            .map_err(|e| format!("pool range {s:?}: end: {e}"))?;
        Ok(PoolRange { start, end })
    }
}

impl Serialize for PoolRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PoolRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A fixed address for one MAC. The same client always gets `ip`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Boot profile name; overrides the subnet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// Which file a PXE client boots, by its architecture (option 93), and the
/// iPXE script URL for clients that already run iPXE (user-class "iPXE"),
/// so that they never chain-load `undionly.kpxe` again.
///
/// With `kernel` set, the HTTP boot server renders an iPXE script for the
/// profile (`/boot/profile/NAME.ipxe`, and `/boot/MAC.ipxe` for a
/// reservation naming it), and iPXE clients are pointed at it unless
/// `ipxe_script` names another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootProfile {
    pub name: String,
    /// Legacy BIOS (arch 0), e.g. `undionly.kpxe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios: Option<String>,
    /// x86-64 UEFI (arch 7 and 9), e.g. `ipxe.efi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi_x64: Option<String>,
    /// ARM64 UEFI (arch 11), e.g. `ipxe-arm64.efi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi_arm64: Option<String>,
    /// Boot file name (a URL) for clients whose user-class is "iPXE".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipxe_script: Option<String>,
    /// The kernel the rendered script boots: an artifact name (fetched from
    /// the VIP over HTTP) or an `http://` / `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The initrd loaded with it, named like `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The kernel command line, one line (e.g. `console=ttyS0 quiet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

impl ServiceConfig {
    /// The subnet that holds `ip`, if any.
    #[must_use]
    pub fn subnet_for(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.cidr.contains(&ip))
    }

    #[must_use]
    pub fn reservation_for(&self, mac: Mac) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.mac == mac)
    }

    #[must_use]
    pub fn reservation_of_ip(&self, ip: Ipv4Addr) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.ip == ip)
    }

    #[must_use]
    pub fn profile(&self, name: &str) -> Option<&BootProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }
}
