//! Helpers for three-node tests: forming a cluster by `tandem cluster join`,
//! reading every node's view (`tandem status --json`, `tandem lease list
//! --json`) and where the VIP really sits (`ip -j addr` in each node
//! namespace, not what the daemon says about itself).
//!
//! Every helper panics with context (what each node reported), so a failing
//! wait explains itself next to the daemon logs the `Lab` prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{json, lab, phase, start_lab, status, wait_until, Lab};

/// How long a fresh node may take to answer its API and serve as a cluster of one.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the nodes may take to agree on a leader after a join, a
/// restart or a heal.
pub const AGREE_TIMEOUT: Duration = Duration::from_secs(20);

/// Node `i`'s API as `host:port`, the form `tandem cluster join` takes.
#[must_use]
pub fn api_addr(lab: &Lab, i: usize) -> String {
    format!("{}:{}", lab.node_ip(i), lab::API_PORT)
}

/// Builds a lab of three nodes and `clients` clients, starts every daemon
/// (each starts as a cluster of one and leads it; none serves before a
/// service config exists), then joins nodes 2 and 3
/// to node 1's cluster, before any service config exists. Returns once all
/// three agree on one leader among three voters.
#[must_use]
pub fn three_node_cluster(clients: usize) -> Lab {
    three_node_cluster_with(clients, "")
}

/// [`three_node_cluster`] with `node_toml` appended to each node's
/// `node.toml` (e.g. `[log]` with `format = "json"`).
#[must_use]
pub fn three_node_cluster_with(clients: usize, node_toml: &str) -> Lab {
    phase("lab up: three nodes, each starts as a cluster of one");
    let lab = if node_toml.is_empty() {
        start_lab(3, clients)
    } else {
        let bin = crate::tandem_bin();
        let lab = Lab::builder()
            .nodes(3)
            .clients(clients)
            .tandem_bin(&bin)
            .build()
            .expect("building the lab");
        for i in 1..=3 {
            lab.write_node_config(i, node_toml)
                .unwrap_or_else(|e| panic!("writing node {i}'s config: {e:#}"));
            lab.start_node(i, &bin)
                .unwrap_or_else(|e| panic!("starting node {i}: {e:#}"));
        }
        lab
    };
    for i in 1..=3 {
        assert!(
            wait_until(START_TIMEOUT, || crate::is_leader(&lab, i)),
            "node {i} never led its cluster of one: {}",
            describe_status(&lab, i)
        );
    }
    for i in [2, 3] {
        phase(&format!(
            "node {i}: tandem cluster join {} --token (from node 1's tandem cluster token)",
            api_addr(&lab, 1)
        ));
        let out = lab
            .join(i, 1)
            .unwrap_or_else(|e| panic!("tandem cluster join on node {i}: {e:#}"));
        assert!(
            out.status.success(),
            "tandem cluster join on node {i} failed: {}",
            crate::describe_output(&out)
        );
        println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    }
    phase("all three agree on one leader");
    let leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    println!("leader: node {leader}");
    lab
}

/// `tandem status --json` of node `i`, or the error, as one line for messages.
#[must_use]
pub fn describe_status(lab: &Lab, i: usize) -> String {
    match status(lab, i) {
        Ok(v) => format!("node {i}: {v}"),
        Err(e) => format!("node {i}: {e:#}"),
    }
}

/// [`describe_status`] of each of `nodes`, one per line.
#[must_use]
pub fn describe_statuses(lab: &Lab, nodes: &[usize]) -> String {
    let mut s = String::new();
    for &i in nodes {
        writeln!(s, "{}", describe_status(lab, i)).expect("writing to a String");
    }
    s
}

/// The leader of `nodes`, once every one of them reports the same `leader`,
/// that leader is one of `nodes`, reports role "leader", and every node
/// lists all of `nodes` as members, none of them a learner. Panics after
/// `timeout` with each node's status.
#[must_use]
pub fn wait_agreed_leader(lab: &Lab, nodes: &[usize], timeout: Duration) -> usize {
    let mut found = None;
    let agreed = wait_until(timeout, || {
        found = agreed_leader(lab, nodes);
        found.is_some()
    });
    if agreed {
        return found.expect("set when agreed");
    }
    panic!(
        "nodes {nodes:?} did not agree on a leader within {timeout:?}:\n{}",
        describe_statuses(lab, nodes)
    );
}

/// The leader all of `nodes` agree on right now, by the rules of
/// [`wait_agreed_leader`]; `None` while they do not agree (or one is down).
#[must_use]
pub fn agreed_leader(lab: &Lab, nodes: &[usize]) -> Option<usize> {
    let views: Vec<Value> = nodes
        .iter()
        .map(|&i| status(lab, i).ok())
        .collect::<Option<_>>()?;
    lab::node::agreed_leader(&views, nodes)
}

/// Whether node `i` answers its status and reports `serving` = `want`.
/// An unreachable node counts as not serving.
#[must_use]
pub fn reports_serving(lab: &Lab, i: usize, want: bool) -> bool {
    let serving = status(lab, i).is_ok_and(|s| s["serving"].as_bool() == Some(true));
    serving == want
}

/// Waits until exactly one of `nodes` reports serving and returns it (with
/// how long that took). Panics after `timeout` with each node's status.
#[must_use]
pub fn wait_one_serving_among(lab: &Lab, nodes: &[usize], timeout: Duration) -> (usize, Duration) {
    let start = Instant::now();
    let mut serving = Vec::new();
    if wait_until(timeout, || {
        serving = nodes
            .iter()
            .copied()
            .filter(|&i| reports_serving(lab, i, true))
            .collect();
        serving.len() == 1
    }) {
        return (serving[0], start.elapsed());
    }
    panic!(
        "not exactly one of nodes {nodes:?} served within {timeout:?} (serving: {serving:?}):\n{}",
        describe_statuses(lab, nodes)
    );
}

/// How many times the VIP is configured in node `i`'s namespace (any
/// device: the daemon puts it on `lo`), read with `ip -j -4 addr show`.
#[must_use]
pub fn vip_count(lab: &Lab, i: usize) -> usize {
    let out = lab
        .exec_ok(
            &lab.node_ns(i),
            "ip",
            &["-j", "-4", "addr", "show"],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("ip addr show in node {i}: {e:#}"));
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j output {out:?}: {e}"));
    let vip = lab::VIP.to_string();
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["local"].as_str() == Some(vip.as_str()))
        .count()
}

/// The nodes that hold the VIP, one entry per address found (so a
/// node holding it twice appears twice).
#[must_use]
pub fn vip_holders(lab: &Lab) -> Vec<usize> {
    (1..=lab.node_count())
        .flat_map(|i| std::iter::repeat_n(i, vip_count(lab, i)))
        .collect()
}

/// `tandem lease list --json` of node `i`, as `ip -> lease`.
#[must_use]
pub fn leases(lab: &Lab, i: usize) -> BTreeMap<Ipv4Addr, Value> {
    let out = lab
        .tandem(i, &["lease", "list", "--json"])
        .unwrap_or_else(|e| panic!("tandem lease list on node {i}: {e:#}"));
    let v = json(&out).unwrap_or_else(|e| panic!("tandem lease list --json on node {i}: {e:#}"));
    v.as_array()
        .unwrap_or_else(|| panic!("node {i}: lease list is not an array: {v}"))
        .iter()
        .map(|l| {
            let ip = l["ip"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("node {i}: lease without an IPv4 ip: {l}"));
            (ip, record(l))
        })
        .collect()
}

/// A lease of `lease list --json` as replicated: without what the
/// answering node's clock makes of it (`expires_in`, `status`), which
/// changes from one second to the next.
#[must_use]
pub fn record(lease: &Value) -> Value {
    let mut l = lease.clone();
    if let Some(o) = l.as_object_mut() {
        o.remove("expires_in");
        o.remove("status");
    }
    l
}

/// The MAC of a lease, lower-case.
#[must_use]
pub fn lease_mac(lease: &Value) -> String {
    lease["mac"]
        .as_str()
        .unwrap_or_else(|| panic!("lease without a mac: {lease}"))
        .to_ascii_lowercase()
}

/// Waits until node `i`'s lease table binds every `(ip, mac)` of `want`
/// (replication is asynchronous on followers) and returns that table.
/// Panics after `timeout` with the last table.
pub fn wait_leases_on(
    lab: &Lab,
    i: usize,
    want: &[(Ipv4Addr, String)],
    timeout: Duration,
) -> BTreeMap<Ipv4Addr, Value> {
    let mut last = BTreeMap::new();
    let has_all = |t: &BTreeMap<Ipv4Addr, Value>| {
        want.iter().all(|(ip, mac)| {
            t.get(ip)
                .is_some_and(|l| lease_mac(l) == mac.to_ascii_lowercase() && l["state"] == "bound")
        })
    };
    if wait_until(timeout, || {
        last = leases(lab, i);
        has_all(&last)
    }) {
        return last;
    }
    panic!("node {i}'s lease table lacks some of {want:?} after {timeout:?}: {last:?}");
}

/// A number field of a lease (`granted_at`, `expires_at`).
#[must_use]
pub fn lease_u64(lease: &Value, k: &str) -> u64 {
    lease[k]
        .as_u64()
        .unwrap_or_else(|| panic!("lease field {k} is not a number: {lease}"))
}
