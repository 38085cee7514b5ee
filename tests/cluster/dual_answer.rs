//! No two servers answer (DESIGN.md section 9, "the failure users fear
//! most"), checked on the wire across a partition of the leader: a capture
//! on the lab's bridge sees every DHCP reply any node puts on the segment
//! while two probes ask every 50 ms (perfdhcp as a relay, unicast to the
//! VIP, and broadcast DISCOVERs that reach every node). No request may be
//! answered by two servers, and once the new leader has answered, the old
//! one never answers again.
//!
//! While it is cut off, the old leader's replies could not reach the bridge
//! anyway, so the test also asks the old leader itself: its count of DHCP
//! packets sent must not move after it reported `serving: false`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tandem_tests::cluster::{
    describe_statuses, reports_serving, wait_agreed_leader, wait_one_serving_among, AGREE_TIMEOUT,
};
use tandem_tests::metrics::{counter, wait_counter_above};
use tandem_tests::wire::{
    start_broadcast_probe, start_perfdhcp, stop_perfdhcp, Capture, DhcpReply,
};
use tandem_tests::{lab, phase, status, wait_until, Lab};

use super::{others, serving_cluster, FAILOVER_TIMEOUT, RELAY};

/// One probe every 50 ms from each prober.
const PROBE_RATE: u32 = 20;
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// perfdhcp's distinct clients: well inside the lab pool of 200.
const PROBE_CLIENTS: u32 = 50;
/// How long the leader stays cut off, and how long probing goes on after
/// the heal.
const PARTITION: Duration = Duration::from_secs(3);
const AFTER_HEAL: Duration = Duration::from_secs(2);
/// How long a cut-off leader may keep serving (leader lease 100 ms, plus
/// the fencing check, on a loaded machine).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every DHCP packet node `i` has sent, all types.
fn sent(lab: &Lab, i: usize) -> f64 {
    counter(lab, i, "tandem_dhcp_packets_total", &[("direction", "out")])
}

/// The wall clock in seconds, as tcpdump stamps packets.
fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[test]
#[allow(
    clippy::float_cmp,
    reason = "packet counters are integers, exact in an f64; equality is the claim"
)]
fn partition_no_two_servers_answer() {
    let (lab, old) = serving_cluster(2);
    let majority = others(&[old]);
    lab.add_client_ip(1, &format!("{RELAY}/{}", lab::PREFIX_LEN))
        .expect("giving client 1 the relay address");

    phase("capture DHCP on the bridge; probe every 50 ms (relayed and broadcast)");
    let capture = Capture::start(
        &lab,
        &lab.switch_ns(),
        lab::BRIDGE,
        "udp port 67 or udp port 68",
        "bridge",
    )
    .expect("starting tcpdump on the bridge");
    let perf_log = lab.root().join("perfdhcp-probe.log");
    let perf = start_perfdhcp(&lab, 1, RELAY, PROBE_RATE, PROBE_CLIENTS, None, &perf_log)
        .expect("starting perfdhcp");
    let probe_log = lab.root().join("broadcast-probe.log");
    // Enough DISCOVERs for the whole test; killed when the test is done.
    let probe = start_broadcast_probe(&lab, 2, 2000, PROBE_INTERVAL, &probe_log)
        .expect("starting the broadcast probe");
    let answering = wait_counter_above(
        &lab,
        old,
        "tandem_dhcp_packets_total",
        &[("direction", "out")],
        0.0,
        Duration::from_secs(15),
    );
    std::thread::sleep(Duration::from_secs(1));
    println!("node {old} answers the probes ({answering} replies so far)");

    phase(&format!("cut the leader, node {old}, off the bridge"));
    lab.set_node_connected(old, false)
        .expect("cutting the leader's link");
    let cut_at = Instant::now();
    let silent = wait_until(SILENCE_TIMEOUT, || reports_serving(&lab, old, false));
    let fenced_after = cut_at.elapsed();
    assert!(
        silent,
        "node {old} still serves {fenced_after:?} after the cut:\n{}",
        describe_statuses(&lab, &[old])
    );
    let at_fence = sent(&lab, old);
    println!("node {old} reports serving=false {fenced_after:?} after the cut; it had sent {at_fence} DHCP packets");

    let (new, took) = wait_one_serving_among(&lab, &majority, FAILOVER_TIMEOUT);
    println!("node {new} serves {took:?} after the old leader went silent");
    std::thread::sleep(PARTITION.saturating_sub(cut_at.elapsed()));
    let before_heal = sent(&lab, old);
    assert!(
        reports_serving(&lab, old, false),
        "the cut-off node serves again:\n{}",
        describe_statuses(&lab, &[old])
    );

    phase("heal; keep probing for 2 s");
    lab.set_node_connected(old, true)
        .expect("healing the leader's link");
    // Capture times are wall-clock seconds; so is this.
    let healed_at = unix_now_f64();
    let leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    assert_eq!(
        leader,
        new,
        "the heal moved leadership:\n{}",
        describe_statuses(&lab, &[1, 2, 3])
    );
    std::thread::sleep(AFTER_HEAL);
    let after_heal = sent(&lab, old);
    let v = status(&lab, old).expect("status of the old leader");
    println!("the old leader after the heal: {v}");

    let report = stop_perfdhcp(&perf, &perf_log).expect("stopping perfdhcp");
    probe.kill_and_wait();
    std::thread::sleep(Duration::from_millis(500));
    let (replies, summary) = capture.stop().expect("stopping tcpdump");
    println!("tcpdump: {summary}");
    let drops: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("sent packets") || l.starts_with("received packets"))
        .collect();
    println!("perfdhcp: {drops:?}");

    phase("the old leader sent nothing after it stopped serving");
    println!(
        "node {old}: DHCP packets sent at the fencing point {at_fence}, before the heal \
         {before_heal}, 2 s after the heal {after_heal}"
    );
    assert_eq!(
        before_heal, at_fence,
        "node {old} sent DHCP packets while cut off and not serving"
    );
    assert_eq!(
        after_heal, at_fence,
        "node {old} sent DHCP packets as a follower after the heal"
    );

    check_bridge(&lab, &replies, old, new, healed_at);
}

/// The bridge capture: every reply came from a lab node; the old and the
/// new leader each answered, the bystander follower never; broadcast probes
/// were answered after the heal; no xid was answered by two nodes; and the
/// old leader never answered at or after the new leader's first reply.
fn check_bridge(lab: &Lab, replies: &[DhcpReply], old: usize, new: usize, healed_at: f64) {
    let macs: BTreeMap<String, usize> = (1..=3).map(|i| (lab.node_mac(i), i)).collect();
    phase("on the bridge: who answered what, and when");
    let by_node = |i: usize| -> Vec<&DhcpReply> {
        replies
            .iter()
            .filter(|r| macs.get(&r.src_mac) == Some(&i))
            .collect()
    };
    for i in 1..=3 {
        let r = by_node(i);
        println!(
            "node {i} ({}): {} replies{}",
            lab.node_mac(i),
            r.len(),
            match (r.first(), r.last()) {
                (Some(a), Some(b)) => format!(", from {:.3} to {:.3}", a.time, b.time),
                _ => String::new(),
            }
        );
    }
    let strangers: Vec<&DhcpReply> = replies
        .iter()
        .filter(|r| !macs.contains_key(&r.src_mac))
        .collect();
    assert!(
        strangers.is_empty(),
        "DHCP replies from no lab node: {:?}",
        strangers.iter().take(5).collect::<Vec<_>>()
    );
    let (old_replies, new_replies) = (by_node(old), by_node(new));
    assert!(
        !old_replies.is_empty() && !new_replies.is_empty(),
        "the probes were not answered by both leaders in turn (old node {old}: {}, new node {new}: {}): \
         the capture cannot show who answered",
        old_replies.len(),
        new_replies.len()
    );
    let bystander = others(&[old, new])[0];
    assert!(
        by_node(bystander).is_empty(),
        "node {bystander}, a follower throughout, answered: {:?}",
        by_node(bystander).iter().take(5).collect::<Vec<_>>()
    );

    // After the heal the broadcast DISCOVERs reach the old leader again
    // (only its XDP and fencing keep it quiet); they must have been answered,
    // by the new leader, or the check above proves nothing for them.
    let probe_mac = lab.client_mac(2);
    let broadcast_after_heal = new_replies
        .iter()
        .filter(|r| r.chaddr == probe_mac && r.time > healed_at)
        .count();
    println!("node {new} answered {broadcast_after_heal} broadcast DISCOVERs after the heal");
    assert!(
        broadcast_after_heal > 0,
        "no broadcast DISCOVER of client 2 was answered after the heal"
    );

    let mut answerers: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
    for r in replies {
        answerers.entry(r.xid).or_default().insert(&r.src_mac);
    }
    let doubly: Vec<_> = answerers.iter().filter(|(_, m)| m.len() > 1).collect();
    println!(
        "{} replies to {} distinct xids; answered by two servers: {}",
        replies.len(),
        answerers.len(),
        doubly.len()
    );
    assert!(
        doubly.is_empty(),
        "{} requests were answered by two servers: {:?}",
        doubly.len(),
        doubly.iter().take(10).collect::<Vec<_>>()
    );

    let new_first = new_replies[0].time;
    let late: Vec<&&DhcpReply> = old_replies.iter().filter(|r| r.time >= new_first).collect();
    println!(
        "old leader's last reply {:.3}, new leader's first {new_first:.3} ({:.3} s apart)",
        old_replies.last().expect("checked non-empty").time,
        new_first - old_replies.last().expect("checked non-empty").time
    );
    assert!(
        late.is_empty(),
        "node {old} answered {} times after node {new}'s first reply at {new_first:.3}: {:?}",
        late.len(),
        late.iter().take(5).collect::<Vec<_>>()
    );
}
