//! No lease is lost across leader deaths (issue 3): perfdhcp makes over a
//! thousand leases while the leader is killed (SIGKILL) at random moments, five
//! times. Every ACK captured on the wire must still be bound to the same
//! client on all three nodes, no address may be bound to two clients, and
//! the three lease tables must be identical.
//!
//! Which (MAC, IP) pairs were acknowledged is taken from the wire, not from the
//! daemon: tcpdump in the client namespace captures the replies perfdhcp
//! receives (as a relay, at its own address, port 67).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_tests::cluster::{
    describe_statuses, lease_mac, lease_u64, leases, three_node_cluster, wait_agreed_leader,
    wait_one_serving_among, AGREE_TIMEOUT,
};
use tandem_tests::metrics::wait_counter_above;
use tandem_tests::wire::{start_perfdhcp, stop_perfdhcp, Capture, DhcpReply, DHCPACK};
use tandem_tests::{apply, json, lab, phase, status, wait_until, Lab};

use super::{others, unix_now, FAILOVER_TIMEOUT, RELAY, RELAY_SERVICE};

/// perfdhcp's rate (four-way exchanges per second) and how many different
/// MACs it picks from: about 1,000 distinct MACs after 14 s of service.
const RATE: u32 = 100;
const CLIENTS: u32 = 2000;
/// Distinct acknowledged clients the run must reach (the "1,000 leases").
const WANT_ACKED: usize = 1000;
/// Leader kills.
const KILLS: usize = 5;
/// How long perfdhcp may keep going after the kills to reach [`WANT_ACKED`].
const TOP_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the three tables may take to become identical once load stops.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// xorshift64: random kill moments without a dependency; the seed is
/// printed (and can be set with `TANDEM_TEST_SEED`) so a failing run repeats.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("TANDEM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .subsec_nanos();
                u64::from(nanos) | 1
            });
        println!("random kill moments: TANDEM_TEST_SEED={seed}");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration between `lo` and `hi` (millisecond steps).
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis();
        let span = u64::try_from(span).expect("a span of milliseconds fits u64");
        lo + Duration::from_millis(self.next() % (span + 1))
    }
}

/// The ACKs among `replies`: client MAC -> every address acknowledged to it.
fn acked(replies: &[DhcpReply]) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut by_mac: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for r in replies.iter().filter(|r| r.kind == DHCPACK) {
        by_mac.entry(r.chaddr.clone()).or_default().insert(r.yiaddr);
    }
    by_mac
}

/// Every node's `applied_index` (`None` for a node that does not answer).
fn applied(lab: &Lab) -> Vec<Option<u64>> {
    (1..=3)
        .map(|i| {
            status(lab, i)
                .ok()
                .and_then(|s| s["applied_index"].as_u64())
        })
        .collect()
}

#[test]
fn no_lost_leases_across_leader_kills() {
    let lab = three_node_cluster(1);
    let leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    phase(&format!(
        "apply a service config with a 4,096-address pool (through node {leader})"
    ));
    apply(&lab, leader, RELAY_SERVICE);
    lab.add_client_ip(1, &format!("{RELAY}/{}", lab::PREFIX_LEN))
        .expect("giving client 1 the relay address");

    phase("capture DHCP in the client namespace; start perfdhcp");
    let capture = Capture::start(
        &lab,
        &lab.client_ns(1),
        lab::INTERFACE,
        "udp port 67",
        "acks",
    )
    .expect("starting tcpdump");
    let perf_log = lab.root().join("perfdhcp.log");
    let perf =
        start_perfdhcp(&lab, 1, RELAY, RATE, CLIENTS, None, &perf_log).expect("starting perfdhcp");
    let first_acks = wait_counter_above(
        &lab,
        leader,
        "tandem_dhcp_packets_total",
        &[("type", "ack"), ("direction", "out")],
        0.0,
        Duration::from_secs(15),
    );
    println!("node {leader} is sending ACKs ({first_acks} so far)");

    kill_leaders(&lab, &mut Rng::from_env_or_clock());

    phase(&format!(
        "keep the load on until {WANT_ACKED} distinct clients were acknowledged"
    ));
    let started = Instant::now();
    let mut so_far = 0;
    let reached = wait_until(TOP_UP_TIMEOUT, || {
        // One pass over the capture takes a moment; do not poll harder.
        std::thread::sleep(Duration::from_secs(1));
        so_far = acked(&capture.replies_so_far().expect("reading the live capture")).len();
        so_far >= WANT_ACKED
    });
    println!(
        "{so_far} distinct acknowledged clients after {:?} more",
        started.elapsed()
    );
    let report = stop_perfdhcp(&perf, &perf_log).expect("stopping perfdhcp");
    println!(
        "perfdhcp's report:\n{}",
        report
            .lines()
            .filter(|l| l.contains(':') && !l.contains("delay"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Answers to requests still in flight when perfdhcp stopped.
    std::thread::sleep(Duration::from_secs(1));
    let (replies, summary) = capture.stop().expect("stopping tcpdump");
    println!("tcpdump: {summary}");
    assert!(
        reached,
        "only {so_far} distinct clients were acknowledged within {TOP_UP_TIMEOUT:?} after the kills"
    );

    let by_mac = acked(&replies);
    println!(
        "captured {} DHCP replies, {} ACKs, {} distinct acknowledged clients",
        replies.len(),
        replies.iter().filter(|r| r.kind == DHCPACK).count(),
        by_mac.len()
    );
    assert!(
        by_mac.len() >= WANT_ACKED,
        "the capture holds {} distinct acknowledged clients, fewer than {WANT_ACKED}",
        by_mac.len()
    );
    check_wire(&by_mac);

    phase("wait until the three nodes have applied the same log and hold the same table");
    let tables = wait_converged(&lab);

    phase("every node: each acknowledged (MAC, IP) is bound to that MAC, unexpired");
    let now = unix_now();
    for (i, table) in (1..=3).zip(&tables) {
        check_table(&lab, i, table, &by_mac, now);
    }

    phase("the three lease tables are identical");
    for i in [2, 3] {
        assert_eq!(
            tables[i - 1],
            tables[0],
            "node {i}'s lease table differs from node 1's"
        );
    }
}

/// [`KILLS`] rounds of: a random 1-3 s of load, SIGKILL of the serving
/// leader, a survivor serving within [`FAILOVER_TIMEOUT`], restart of the
/// killed node, and all three agreeing again, on the survivor that took over.
fn kill_leaders(lab: &Lab, rng: &mut Rng) {
    for round in 1..=KILLS {
        let pause = rng.between(Duration::from_secs(1), Duration::from_secs(3));
        std::thread::sleep(pause);
        let (victim, _) = wait_one_serving_among(lab, &[1, 2, 3], FAILOVER_TIMEOUT);
        phase(&format!(
            "kill {round}/{KILLS}: SIGKILL the leader, node {victim}, after {pause:?} of load"
        ));
        lab.kill_node(victim, libc::SIGKILL)
            .unwrap_or_else(|e| panic!("killing node {victim}: {e:#}"));
        let survivors = others(&[victim]);
        let (new, took) = wait_one_serving_among(lab, &survivors, FAILOVER_TIMEOUT);
        println!("node {new} serves {took:?} after the kill");
        lab.restart_node(victim)
            .unwrap_or_else(|e| panic!("restarting node {victim}: {e:#}"));
        let agreed = wait_agreed_leader(lab, &[1, 2, 3], AGREE_TIMEOUT);
        assert_eq!(
            agreed,
            new,
            "the restarted node {victim} did not rejoin as a follower of node {new}:\n{}",
            describe_statuses(lab, &[1, 2, 3])
        );
        println!("node {victim} is back as a follower of node {new}");
    }
}

/// On the wire: each client was acknowledged one address (a second one
/// means the first was not kept), and each address went to one client.
fn check_wire(by_mac: &BTreeMap<String, BTreeSet<Ipv4Addr>>) {
    phase("on the wire: each client was acknowledged one address, each address to one client");
    let moved: Vec<_> = by_mac.iter().filter(|(_, ips)| ips.len() > 1).collect();
    assert!(
        moved.is_empty(),
        "{} clients were acknowledged more than one address (an earlier ACK was not kept): {:?}",
        moved.len(),
        moved.iter().take(10).collect::<Vec<_>>()
    );
    let mut by_ip: BTreeMap<Ipv4Addr, BTreeSet<&str>> = BTreeMap::new();
    for (mac, ips) in by_mac {
        for ip in ips {
            by_ip.entry(*ip).or_default().insert(mac);
        }
    }
    let shared: Vec<_> = by_ip.iter().filter(|(_, macs)| macs.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "{} addresses were acknowledged to two or more clients: {:?}",
        shared.len(),
        shared.iter().take(10).collect::<Vec<_>>()
    );
}

/// Waits until all three nodes report the same `applied_index` and list the
/// same lease table, and returns the tables (nodes 1..=3). Panics after
/// [`CONVERGE_TIMEOUT`] with the first differing entries.
fn wait_converged(lab: &Lab) -> Vec<BTreeMap<Ipv4Addr, Value>> {
    let mut tables: Vec<BTreeMap<Ipv4Addr, Value>> = Vec::new();
    let mut indexes = Vec::new();
    let converged = wait_until(CONVERGE_TIMEOUT, || {
        indexes = applied(lab);
        if indexes[0].is_none() || indexes.iter().any(|x| *x != indexes[0]) {
            return false;
        }
        tables = (1..=3).map(|i| leases(lab, i)).collect();
        tables.iter().all(|t| *t == tables[0])
    });
    let counts: Vec<usize> = tables.iter().map(BTreeMap::len).collect();
    println!("applied indexes {indexes:?}, lease counts {counts:?}");
    if converged {
        return tables;
    }
    let ips: BTreeSet<&Ipv4Addr> = tables.iter().flat_map(BTreeMap::keys).collect();
    let diff: Vec<String> = ips
        .into_iter()
        .filter(|ip| tables.iter().any(|t| t.get(ip) != tables[0].get(ip)))
        .take(10)
        .map(|ip| {
            let per: Vec<String> = tables
                .iter()
                .map(|t| t.get(ip).map_or("-".to_owned(), Value::to_string))
                .collect();
            format!("{ip}: {per:?}")
        })
        .collect();
    panic!(
        "the three nodes did not converge within {CONVERGE_TIMEOUT:?}: applied indexes \
         {indexes:?}, lease counts {counts:?}, first differences:\n{}\n{}",
        diff.join("\n"),
        describe_statuses(lab, &[1, 2, 3])
    );
}

/// Node `i`'s `table` binds every acknowledged (MAC, IP) of `by_mac` to its
/// MAC, unexpired at `now`; lists no address twice; and binds no MAC twice.
fn check_table(
    lab: &Lab,
    i: usize,
    table: &BTreeMap<Ipv4Addr, Value>,
    by_mac: &BTreeMap<String, BTreeSet<Ipv4Addr>>,
    now: u64,
) {
    let mut missing = Vec::new();
    for (mac, ips) in by_mac {
        let ip = ips.first().expect("an ACK has an address");
        match table.get(ip) {
            Some(l)
                if lease_mac(l) == *mac
                    && l["state"] == "bound"
                    && lease_u64(l, "expires_at") > now => {}
            other => missing.push(format!("{mac} -> {ip}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "node {i}: {} of {} acknowledged leases are not bound to their client: {:?}",
        missing.len(),
        by_mac.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );

    // `leases` keys the table by IP, so an address listed twice would have
    // collapsed there: count the raw list too.
    let raw = lab
        .tandem(i, &["lease", "list", "--json"])
        .unwrap_or_else(|e| panic!("lease list on node {i}: {e:#}"));
    let raw = json(&raw).unwrap_or_else(|e| panic!("lease list --json on node {i}: {e:#}"));
    let listed = raw.as_array().map_or(0, Vec::len);
    assert_eq!(
        listed,
        table.len(),
        "node {i} lists some address more than once"
    );

    let mut bound_by_mac: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    for (ip, l) in table.iter().filter(|(_, l)| l["state"] == "bound") {
        bound_by_mac.entry(lease_mac(l)).or_default().push(*ip);
    }
    let doubles: Vec<_> = bound_by_mac.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "node {i}: clients with two bound addresses: {:?}",
        doubles.iter().take(10).collect::<Vec<_>>()
    );
    println!(
        "node {i}: {} leases, {} bound clients, all {} acknowledged clients present",
        table.len(),
        bound_by_mac.len(),
        by_mac.len()
    );
}
