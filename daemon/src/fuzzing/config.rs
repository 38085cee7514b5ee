//! `node_config` and `service_config`: the two TOML parsers with their
//! validation, on any UTF-8 text (what `read_to_string` lets through).

use crate::config::{service, NodeConfig};

/// `NodeConfig::parse`; what it accepts must hold what `validate` promises.
pub fn node_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = NodeConfig::parse(text) else {
        return;
    };
    assert!(c.node_id >= 1);
    assert!(c.data_dir.is_absolute());
    assert_ne!(c.raft_listen, c.api_listen);
    assert!(!c.raft_listen.ip().is_unspecified() && !c.api_listen.ip().is_unspecified());
    let iface = &c.service.interface;
    assert!(!iface.is_empty() && iface.len() <= 15 && !iface.contains('/'));
    let vip = c.vip_addr();
    assert!(!vip.is_unspecified() && !vip.is_broadcast() && !vip.is_multicast());
    assert!(vip != c.service.vip.network() && vip != c.service.vip.broadcast());
    assert_ne!(c.raft_listen.ip(), std::net::IpAddr::V4(vip));
}

/// `service::parse`; what it accepts validates, and round-trips through
/// `tandem export` (`to_toml`) to the same config.
pub fn service_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = service::parse(text) else {
        return;
    };
    service::validate(&c).expect("parse returned a config that does not validate");
    let exported = service::to_toml(&c);
    let back = service::parse(&exported)
        .unwrap_or_else(|e| panic!("exported config does not parse back: {e}\n{exported}"));
    assert_eq!(back, c, "export round trip changed the config:\n{exported}");
}
