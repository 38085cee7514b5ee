//! XDP steering on real traffic: the counters move, and with the role map
//! set to drop no DHCP answer comes back (the follower's guard, DESIGN.md
//! section 9), until the map says leader again.
//!
//! The daemon has no command to flip the map (only leadership does), so the
//! test flips it with bpftool: the program attached to the node's eth1 names
//! its maps, and the one called [`MAP_ROLE`] holds one `u32` at key 0.

use std::time::Duration;

use serde_json::Value;
use tandem_ebpf_common::{MAP_ROLE, ROLE_DROP, ROLE_LEADER};
use tandem_tests::clients::{lease_vars, udhcpc, udhcpc_lease};
use tandem_tests::metrics::{counter, wait_counter_above};
use tandem_tests::{describe_output, lab, phase, Lab};

use super::{in_pool, node_lab, service_toml, DHCP_TIMEOUT};

const XDP_PACKETS: &str = "tandem_xdp_packets_total";
/// The daemon exports the XDP counters once per second.
const EXPORT_WAIT: Duration = Duration::from_secs(5);

fn dhcp(verdict: &'static str) -> [(&'static str, &'static str); 2] {
    [("proto", "dhcp"), ("verdict", verdict)]
}

fn bpftool_json(lab: &Lab, args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = lab
        .exec_ok(&lab.node_ns(1), "bpftool", &full, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("bpftool {args:?}: {e:#}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool {args:?} printed {out:?}: {e}"))
}

/// Every `"id"` number below `v` (bpftool nests XDP attachments differently
/// by mode and version: `{"id": N}` or `{"multi_attachments": [{"id": N}]}`).
fn ids(v: &Value, out: &mut Vec<u64>) {
    match v {
        Value::Object(m) => {
            if let Some(id) = m.get("id").and_then(Value::as_u64) {
                out.push(id);
            }
            m.values().for_each(|c| ids(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| ids(c, out)),
        _ => {}
    }
}

/// The id of the role map of the XDP program on node 1's eth1.
fn role_map_id(lab: &Lab) -> u64 {
    let net = bpftool_json(lab, &["net", "show", "dev", lab::INTERFACE]);
    let mut progs = Vec::new();
    for entry in net.as_array().into_iter().flatten() {
        ids(&entry["xdp"], &mut progs);
    }
    assert_eq!(
        progs.len(),
        1,
        "expected one XDP program on eth1, bpftool net show says {net}"
    );
    let prog = bpftool_json(lab, &["prog", "show", "id", &progs[0].to_string()]);
    let map_ids: Vec<u64> = prog["map_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    // bpftool shows object names cut to 15 characters (BPF_OBJ_NAME_LEN - 1).
    let wanted = &MAP_ROLE[..MAP_ROLE.len().min(15)];
    let found: Vec<u64> = map_ids
        .iter()
        .copied()
        .filter(|id| {
            bpftool_json(lab, &["map", "show", "id", &id.to_string()])["name"].as_str()
                == Some(wanted)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "no single map named {wanted} among {map_ids:?} of program {prog}"
    );
    found[0]
}

fn le_bytes(v: u32) -> Vec<String> {
    v.to_le_bytes().iter().map(u8::to_string).collect()
}

/// Writes `role` into the role map (key 0) and reads it back.
fn set_role(lab: &Lab, map: u64, role: u32) {
    let id = map.to_string();
    let mut args = vec![
        "map", "update", "id", &id, "key", "0", "0", "0", "0", "value",
    ];
    let value = le_bytes(role);
    args.extend(value.iter().map(String::as_str));
    lab.exec_ok(&lab.node_ns(1), "bpftool", &args, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("bpftool {args:?}: {e:#}"));
    let got = bpftool_json(
        lab,
        &["map", "lookup", "id", &id, "key", "0", "0", "0", "0"],
    );
    let bytes: Vec<String> = got["value"]
        .as_array()
        .unwrap_or_else(|| panic!("map lookup printed {got}"))
        .iter()
        .map(|b| {
            b.as_str()
                .and_then(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .or_else(|| b.as_u64().and_then(|n| u8::try_from(n).ok()))
                .unwrap_or_else(|| panic!("map value byte {b}"))
                .to_string()
        })
        .collect();
    assert_eq!(
        bytes, value,
        "role map {map} holds {got} after writing {role}"
    );
}

#[test]
fn xdp_counters_move_on_real_dhcp() {
    let lab = node_lab(1, |_| service_toml(&[]));
    let pass_before = counter(&lab, 1, XDP_PACKETS, &dhcp("pass"));

    phase("a DHCP exchange passes through XDP");
    let lease = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("udhcpc lease");
    assert!(in_pool(lease.lease.ip), "{:?}", lease.lease);

    phase("the pass counter counts at least DISCOVER and REQUEST");
    let pass = wait_counter_above(
        &lab,
        1,
        XDP_PACKETS,
        &dhcp("pass"),
        pass_before + 1.0,
        EXPORT_WAIT,
    );
    println!("xdp dhcp pass {pass_before} -> {pass}");
}

#[test]
fn xdp_role_drop_silences_dhcp_until_leader_again() {
    let lab = node_lab(2, |_| service_toml(&[]));
    let map = role_map_id(&lab);
    println!("role map id {map}");

    phase("baseline: with the map as the daemon set it, a client gets a lease");
    udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("udhcpc lease before the flip");

    phase("role map -> drop: no DHCP answer comes back");
    set_role(&lab, map, ROLE_DROP);
    let drop_before = counter(&lab, 1, XDP_PACKETS, &dhcp("drop"));
    // Three DISCOVERs a second apart, then give up (-n).
    let out = udhcpc(&lab, 2, &["-t", "3", "-T", "1"], DHCP_TIMEOUT).expect("running udhcpc");
    let vars = lease_vars(&String::from_utf8_lossy(&out.stdout));
    assert!(
        !out.status.success() && !vars.contains_key("ip"),
        "a client got an answer while the role map said drop: {}",
        describe_output(&out)
    );
    let dropped = wait_counter_above(
        &lab,
        1,
        XDP_PACKETS,
        &dhcp("drop"),
        drop_before + 2.0,
        EXPORT_WAIT,
    );
    println!("xdp dhcp drop {drop_before} -> {dropped}");

    phase("role map -> leader: leases come back");
    set_role(&lab, map, ROLE_LEADER);
    let lease = udhcpc_lease(&lab, 2, &[], DHCP_TIMEOUT).expect("udhcpc lease after the flip back");
    assert!(in_pool(lease.lease.ip), "{:?}", lease.lease);
}
