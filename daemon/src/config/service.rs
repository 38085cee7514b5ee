//! Validation of the replicated service config (`tandem apply FILE`).
//! The TOML shape is [`ServiceConfig`] itself, so `export` round-trips.

use std::collections::{HashMap, HashSet};

use super::{field_err, ConfigError};
use crate::model::ServiceConfig;

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
"#;

    #[test]
    fn round_trips_through_export() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.subnets[0].lease_time, 600);
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
        ] {
            let bad = GOOD.replace(from, to);
            assert_ne!(bad, GOOD, "replacement of {from} did not apply");
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.contains(field), "{field} not named in: {e}");
        }
    }
}
