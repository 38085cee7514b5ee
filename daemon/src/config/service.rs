//! Validation of the replicated service config (`tandem apply FILE`).
//! The TOML shape is [`ServiceConfig`] itself, so `export` round-trips.

use std::collections::{HashMap, HashSet};

use super::{field_err, ConfigError};
use crate::model::{BootProfile, Reservation, ServiceConfig};

/// Parses a service config file's text and validates it.
pub fn parse(text: &str) -> Result<ServiceConfig, ConfigError> {
    let c: ServiceConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: "service config".into(),
        message: e.to_string(),
    })?;
    validate(&c)?;
    Ok(c)
}

/// Prints a config back as TOML (`tandem export`).
#[must_use]
pub fn to_toml(c: &ServiceConfig) -> String {
    toml::to_string_pretty(c).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

/// Checks what serde cannot: ranges inside their subnet, no overlaps, unique
/// reservations, profiles that exist.
pub fn validate(c: &ServiceConfig) -> Result<(), ConfigError> {
    let profiles: HashSet<&str> = c.profiles.iter().map(|p| p.name.as_str()).collect();
    if profiles.len() != c.profiles.len() {
        return Err(field_err(
            "profile.name",
            "duplicate profile name",
            "give every [[profile]] its own name",
        ));
    }
    for (i, p) in c.profiles.iter().enumerate() {
        validate_profile(i, p)?;
    }
    for (i, s) in c.subnets.iter().enumerate() {
        let f = |x: &str| format!("subnet[{i}].{x}");
        if s.cidr.prefix_len() > 30 {
            return Err(field_err(
                f("cidr"),
                format!("{} has no room for clients", s.cidr),
                "use a prefix of /30 or shorter",
            ));
        }
        if s.cidr != s.cidr.trunc() {
            return Err(field_err(
                f("cidr"),
                format!("{} has host bits set", s.cidr),
                format!("write the network address, {}", s.cidr.trunc()),
            ));
        }
        for (j, p) in s.pools.iter().enumerate() {
            if p.is_empty() {
                return Err(field_err(
                    format!("subnet[{i}].pools[{j}]"),
                    format!("{p} is reversed"),
                    "write START-END with START <= END",
                ));
            }
            if !s.cidr.contains(&p.start) || !s.cidr.contains(&p.end) {
                return Err(field_err(
                    format!("subnet[{i}].pools[{j}]"),
                    format!("{p} is not inside {}", s.cidr),
                    "keep pools inside their subnet's cidr",
                ));
            }
            if p.contains(s.cidr.network()) || p.contains(s.cidr.broadcast()) {
                return Err(field_err(
                    format!("subnet[{i}].pools[{j}]"),
                    format!("{p} includes the network or broadcast address"),
                    "start after the network address and end before the broadcast address",
                ));
            }
            for (k, q) in s.pools.iter().enumerate().skip(j + 1) {
                if p.start <= q.end && q.start <= p.end {
                    return Err(field_err(
                        format!("subnet[{i}].pools[{k}]"),
                        format!("{q} overlaps {p}"),
                        "make pools disjoint",
                    ));
                }
            }
        }
        if s.lease_time < 60 {
            return Err(field_err(
                f("lease_time"),
                format!("{} s is too short", s.lease_time),
                "use at least 60 (default 600)",
            ));
        }
        if let Some(r) = s.router {
            if !s.cidr.contains(&r) {
                return Err(field_err(
                    f("router"),
                    format!("{r} is not in {}", s.cidr),
                    "give a router on the subnet",
                ));
            }
        }
        if let Some(p) = &s.profile {
            if !profiles.contains(p.as_str()) {
                return Err(field_err(
                    f("profile"),
                    format!("no profile named {p:?}"),
                    "add a [[profile]] with that name",
                ));
            }
        }
    }
    for (i, s) in c.subnets.iter().enumerate() {
        for t in c.subnets.iter().skip(i + 1) {
            if s.cidr.contains(&t.cidr.network()) || t.cidr.contains(&s.cidr.network()) {
                return Err(field_err(
                    format!("subnet[{i}].cidr"),
                    format!("{} overlaps {}", s.cidr, t.cidr),
                    "make subnets disjoint",
                ));
            }
        }
    }
    let mut macs = HashSet::new();
    let mut ips = HashMap::new();
    for (i, r) in c.reservations.iter().enumerate() {
        let f = |x: &str| format!("reservation[{i}].{x}");
        if !macs.insert(r.mac) {
            return Err(field_err(
                f("mac"),
                format!("{} is reserved twice", r.mac),
                "keep one reservation per MAC",
            ));
        }
        if let Some(other) = ips.insert(r.ip, r.mac) {
            return Err(field_err(
                f("ip"),
                format!("{} is also reserved for {other}", r.ip),
                "give each reservation its own address",
            ));
        }
        if c.subnet_for(r.ip).is_none() {
            return Err(field_err(
                f("ip"),
                format!("{} is in no subnet", r.ip),
                "add a [[subnet]] that contains it",
            ));
        }
        if let Some(p) = &r.profile {
            if !profiles.contains(p.as_str()) {
                return Err(field_err(
                    f("profile"),
                    format!("no profile named {p:?}"),
                    "add a [[profile]] with that name",
                ));
            }
        }
    }
    Ok(())
}

/// The longest host name DHCP option 12 and DNS carry.
const MAX_HOSTNAME: usize = 253;

/// Checks one reservation that `tandem reservation add` would add to `c`,
/// as [`validate`] checks a whole file, naming the command's own fields
/// (`mac`, `ip`, `hostname`, `profile`) and the fix. Adding the very same
/// reservation again is fine (a retried add).
pub fn validate_reservation(c: &ServiceConfig, r: &Reservation) -> Result<(), ConfigError> {
    if let Some(cur) = c.reservation_for(r.mac) {
        if cur != r {
            return Err(field_err(
                "mac",
                format!("{} is reserved already (ip {})", r.mac, cur.ip),
                format!("`tandem reservation remove {}` first", r.mac),
            ));
        }
    }
    if let Some(other) = c.reservation_of_ip(r.ip).filter(|o| o.mac != r.mac) {
        return Err(field_err(
            "ip",
            format!("{} is reserved for {} already", r.ip, other.mac),
            format!(
                "give another address, or `tandem reservation remove {}` first",
                other.mac
            ),
        ));
    }
    let Some(subnet) = c.subnet_for(r.ip) else {
        let nets: Vec<String> = c.subnets.iter().map(|s| s.cidr.to_string()).collect();
        return Err(field_err(
            "ip",
            format!("{} is in no subnet of the service config", r.ip),
            if nets.is_empty() {
                "the config has no [[subnet]] yet: `tandem apply` one first".to_owned()
            } else {
                format!("pick an address inside {}", nets.join(" or "))
            },
        ));
    };
    if r.ip == subnet.cidr.network() || r.ip == subnet.cidr.broadcast() {
        return Err(field_err(
            "ip",
            format!(
                "{} is the network or broadcast address of {}",
                r.ip, subnet.cidr
            ),
            "pick a host address",
        ));
    }
    if let Some(h) = &r.hostname {
        let ok = !h.is_empty()
            && h.len() <= MAX_HOSTNAME
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(field_err(
                "hostname",
                format!("{h:?} is not a host name"),
                format!("use letters, digits, '-' and '.', at most {MAX_HOSTNAME} characters"),
            ));
        }
    }
    if let Some(p) = &r.profile {
        if c.profile(p).is_none() {
            let names: Vec<&str> = c.profiles.iter().map(|p| p.name.as_str()).collect();
            return Err(field_err(
                "profile",
                format!("no profile named {p:?}"),
                if names.is_empty() {
                    "the config has no [[profile]]: leave --profile out, or `tandem apply` one"
                        .to_owned()
                } else {
                    format!("name one of {}", names.join(", "))
                },
            ));
        }
    }
    Ok(())
}

/// The longest kernel command line x86 Linux takes (`COMMAND_LINE_SIZE`).
const MAX_CMDLINE: usize = 2048;

/// A profile's names go into URLs and its command line into an iPXE script
/// line: each must be one line, and names one word.
fn validate_profile(i: usize, p: &BootProfile) -> Result<(), ConfigError> {
    let f = |x: &str| format!("profile[{i}].{x}");
    let name_ok = !p.name.is_empty()
        && p.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(field_err(
            f("name"),
            format!("{:?} is not a plain name", p.name),
            "use letters, digits, '-', '_' and '.' (it appears in /boot/profile/NAME.ipxe)",
        ));
    }
    let files = [
        ("bios", &p.bios),
        ("uefi_x64", &p.uefi_x64),
        ("uefi_arm64", &p.uefi_arm64),
        ("ipxe_script", &p.ipxe_script),
        ("kernel", &p.kernel),
        ("initrd", &p.initrd),
    ];
    for (field, v) in files {
        let Some(v) = v else { continue };
        let url = v.contains("://");
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(field_err(
                f(field),
                format!("{v:?} is empty or has spaces or control characters"),
                "give an artifact name such as \"vmlinuz\" or a URL",
            ));
        }
        if url
            && !(v.starts_with("http://") || v.starts_with("https://") || v.starts_with("tftp://"))
        {
            return Err(field_err(
                f(field),
                format!("{v:?} is not an http, https or tftp URL"),
                "write http://HOST/PATH, or an artifact name",
            ));
        }
        if !url && (v.starts_with('/') || v.split('/').any(|s| s.is_empty() || s == "..")) {
            return Err(field_err(
                f(field),
                format!("{v:?} is not an artifact name"),
                "name the artifact as `tandem artifact list` shows it, without '/' or '..' segments",
            ));
        }
    }
    if let Some(c) = &p.cmdline {
        if c.chars().any(char::is_control) || c.len() > MAX_CMDLINE {
            return Err(field_err(
                f("cmdline"),
                "has a control character (a newline?) or is too long",
                format!("write one line of at most {MAX_CMDLINE} characters"),
            ));
        }
    }
    if p.kernel.is_none() && (p.initrd.is_some() || p.cmdline.is_some()) {
        return Err(field_err(
            f("kernel"),
            "missing, but initrd or cmdline is set",
            "set kernel = \"ARTIFACT\" (or remove initrd and cmdline)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
bootp = "reservations-only"
[[subnet]]
cidr = "10.99.0.0/16"
pools = ["10.99.1.1-10.99.1.200"]
router = "10.99.0.1"
dns = ["10.99.0.1"]
domain = "lab.tandem"
profile = "default"

[[reservation]]
mac = "52:54:00:00:00:01"
ip = "10.99.2.1"
hostname = "fixed"

[[profile]]
name = "default"
bios = "undionly.kpxe"
uefi_x64 = "ipxe.efi"
ipxe_script = "http://10.99.0.10/boot.ipxe"

[[profile]]
name = "linux"
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "console=ttyS0 quiet"
"#;

    #[test]
    fn round_trips_through_export() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.subnets[0].lease_time, 600);
        assert_eq!(c.profiles[1].kernel.as_deref(), Some("vmlinuz"));
        assert_eq!(
            c.profiles[1].cmdline.as_deref(),
            Some("console=ttyS0 quiet")
        );
        let again = parse(&to_toml(&c)).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn errors_name_the_field() {
        for (from, to, field) in [
            (
                "10.99.1.1-10.99.1.200",
                "10.98.1.1-10.98.1.200",
                "subnet[0].pools[0]",
            ),
            (
                "ip = \"10.99.2.1\"",
                "ip = \"192.168.0.1\"",
                "reservation[0].ip",
            ),
            (
                "profile = \"default\"\n\n",
                "profile = \"nope\"\n\n",
                "subnet[0].profile",
            ),
            (
                "router = \"10.99.0.1\"",
                "router = \"10.1.0.1\"",
                "subnet[0].router",
            ),
            ("domain =", "domian =", "domian"),
            (
                "kernel = \"vmlinuz\"",
                "kernel = \"../vmlinuz\"",
                "profile[1].kernel",
            ),
            (
                "kernel = \"vmlinuz\"",
                "kernel = \"ftp://x/vmlinuz\"",
                "profile[1].kernel",
            ),
            ("initrd.img", "initrd img", "profile[1].initrd"),
            ("kernel = \"vmlinuz\"", "", "profile[1].kernel"),
            ("quiet\"", "quiet\\nshell\"", "profile[1].cmdline"),
            ("name = \"linux\"", "name = \"li nux\"", "profile[1].name"),
            (
                "uefi_x64 = \"ipxe.efi\"",
                "uefi_x64 = \"/ipxe.efi\"",
                "profile[0].uefi_x64",
            ),
        ] {
            let bad = GOOD.replace(from, to);
            assert_ne!(bad, GOOD, "replacement of {from} did not apply");
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.contains(field), "{field} not named in: {e}");
        }
    }

    #[test]
    fn a_new_reservation_is_checked_against_the_config_naming_its_field() {
        let c = parse(GOOD).unwrap();
        let r = |mac: &str, ip: &str, host: Option<&str>, profile: Option<&str>| Reservation {
            mac: mac.parse().unwrap(),
            ip: ip.parse().unwrap(),
            hostname: host.map(str::to_owned),
            profile: profile.map(str::to_owned),
        };
        validate_reservation(
            &c,
            &r("52:54:00:00:00:02", "10.99.2.2", Some("n2"), Some("linux")),
        )
        .unwrap();
        // The very reservation the config holds: a retried add.
        validate_reservation(&c, &c.reservations[0]).unwrap();
        for (bad, field, fix) in [
            (
                r("52:54:00:00:00:01", "10.99.2.9", None, None),
                "`mac`",
                "reservation remove 52:54:00:00:00:01",
            ),
            (
                r("52:54:00:00:00:02", "10.99.2.1", None, None),
                "`ip`",
                "reservation remove 52:54:00:00:00:01",
            ),
            (
                r("52:54:00:00:00:02", "10.98.0.5", None, None),
                "`ip`",
                "inside 10.99.0.0/16",
            ),
            (
                r("52:54:00:00:00:02", "10.99.255.255", None, None),
                "`ip`",
                "host address",
            ),
            (
                r("52:54:00:00:00:02", "10.99.2.2", Some("a b"), None),
                "`hostname`",
                "letters",
            ),
            (
                r("52:54:00:00:00:02", "10.99.2.2", None, Some("nope")),
                "`profile`",
                "default, linux",
            ),
        ] {
            let e = validate_reservation(&c, &bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("field {field}")) && e.contains(fix),
                "{e}"
            );
        }
    }
}
