//! Unplanned failover: the leader dies (SIGKILL) or is cut off the network.
//! Clients keep their addresses across it, and a cut-off leader stops
//! serving and drops the VIP within its leader lease, before the majority
//! has a new leader serving.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tandem_tests::clients::udhcpc_lease;
use tandem_tests::cluster::{
    describe_statuses, lease_mac, lease_u64, reports_serving, vip_count, vip_holders,
    wait_agreed_leader, wait_leases_on, wait_one_serving_among, AGREE_TIMEOUT,
};
use tandem_tests::{lab, phase, status, wait_until};

use super::{
    in_pool, others, serving_cluster, wait_clock_past, DHCP_TIMEOUT, FAILOVER_TIMEOUT,
    REPLICATION_TIMEOUT,
};

#[test]
fn kill_leader_client_keeps_address() {
    let (lab, old) = serving_cluster(2);
    let (mac1, mac2) = (lab.client_mac(1), lab.client_mac(2));

    phase("client 1 gets a lease from the leader");
    let first = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("client 1 lease");
    let ip1 = first.lease.ip;
    assert!(in_pool(ip1), "{ip1} is outside the pool");
    assert_eq!(first.lease.server_id, Some(lab::VIP), "{:?}", first.lease);

    phase("the lease is replicated: every node's own table has it");
    let mut granted = 0;
    for i in 1..=3 {
        let table = wait_leases_on(&lab, i, &[(ip1, mac1.clone())], REPLICATION_TIMEOUT);
        granted = lease_u64(&table[&ip1], "granted_at");
    }

    phase(&format!("SIGKILL the leader, node {old}"));
    lab.kill_node(old, libc::SIGKILL)
        .expect("killing the leader");
    let killed_at = Instant::now();
    let survivors = others(&[old]);
    let (new, took) = wait_one_serving_among(&lab, &survivors, FAILOVER_TIMEOUT);
    println!("node {new} serves {took:?} after the leader's death (target: 1 s)");
    let new_leader = wait_agreed_leader(&lab, &survivors, AGREE_TIMEOUT);
    assert_eq!(
        new_leader,
        new,
        "the serving node is not the agreed leader:\n{}",
        describe_statuses(&lab, &survivors)
    );
    assert_eq!(
        vip_count(&lab, new),
        1,
        "the new leader's eth1 lacks the VIP"
    );
    let other = survivors
        .iter()
        .copied()
        .find(|&i| i != new)
        .expect("two survivors");
    assert_eq!(
        vip_count(&lab, other),
        0,
        "the surviving follower {other} holds the VIP"
    );
    println!("failover measured from the kill: {:?}", killed_at.elapsed());

    phase("client 1 renews (asks for its address again): the new leader gives the same one");
    wait_clock_past(granted);
    let renewed =
        udhcpc_lease(&lab, 1, &["-r", &ip1.to_string()], DHCP_TIMEOUT).expect("client 1 renew");
    assert_eq!(
        renewed.lease.ip, ip1,
        "the new leader changed client 1's address: {:?}",
        renewed.lease
    );
    assert_eq!(
        renewed.lease.server_id,
        Some(lab::VIP),
        "{:?}",
        renewed.lease
    );
    let table = wait_leases_on(&lab, new, &[(ip1, mac1.clone())], REPLICATION_TIMEOUT);
    assert!(
        lease_u64(&table[&ip1], "granted_at") > granted,
        "the renewal did not go through the new leader's log (granted_at {granted} -> {})",
        table[&ip1]
    );

    phase("client 2 gets a new, different address");
    let second = udhcpc_lease(&lab, 2, &[], DHCP_TIMEOUT).expect("client 2 lease");
    let ip2 = second.lease.ip;
    assert!(in_pool(ip2), "{ip2} is outside the pool");
    assert_ne!(ip2, ip1, "client 2 got client 1's address");

    phase("both survivors' tables have both leases");
    let want = [(ip1, mac1), (ip2, mac2)];
    for i in [new, other] {
        let table = wait_leases_on(&lab, i, &want, REPLICATION_TIMEOUT);
        for (ip, mac) in &want {
            assert_eq!(&lease_mac(&table[ip]), mac, "node {i}: {}", table[ip]);
        }
    }
}

/// How long a cut-off leader may keep serving: its leader lease (100 ms)
/// plus the fencing check and the VIP removal, with room for a loaded machine.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn partition_leader_goes_silent_and_rejoins() {
    let (lab, old) = serving_cluster(1);
    let majority = others(&[old]);
    assert_eq!(
        vip_holders(&lab),
        [old],
        "before the cut, only the leader holds the VIP"
    );

    phase(&format!("cut the leader, node {old}, off the bridge"));
    lab.set_node_connected(old, false)
        .expect("cutting the leader's link");
    let cut_at = Instant::now();

    phase("within 2 s the old leader stops serving and drops the VIP (asked inside its namespace)");
    let silent = wait_until(SILENCE_TIMEOUT, || {
        reports_serving(&lab, old, false) && vip_count(&lab, old) == 0
    });
    let silent_after = cut_at.elapsed();
    assert!(
        silent,
        "node {old} still serves or holds the VIP {silent_after:?} after the cut (VIP count {}):\n{}",
        vip_count(&lab, old),
        describe_statuses(&lab, &[old])
    );
    let v = status(&lab, old).expect("the cut-off node still answers locally");
    assert_eq!(v["serving"].as_bool(), Some(false), "{v}");
    assert_eq!(v["vip_held"].as_bool(), Some(false), "{v}");
    println!("node {old} went silent {silent_after:?} after the cut");

    phase("a new leader among the other two serves");
    let (new, took) = wait_one_serving_among(&lab, &majority, FAILOVER_TIMEOUT);
    println!(
        "node {new} serves {took:?} after the old leader went silent ({:?} after the cut)",
        cut_at.elapsed()
    );
    assert_eq!(wait_agreed_leader(&lab, &majority, AGREE_TIMEOUT), new);
    assert_eq!(
        vip_holders(&lab),
        [new],
        "the VIP must sit on the new leader only"
    );
    assert!(
        reports_serving(&lab, old, false) && vip_count(&lab, old) == 0,
        "the cut-off node came back to serving:\n{}",
        describe_statuses(&lab, &[old])
    );

    phase("a client gets a lease from the new leader during the partition");
    let got = udhcpc_lease(&lab, 1, &[], super::DHCP_TIMEOUT).expect("lease during the partition");
    let ip: Ipv4Addr = got.lease.ip;
    assert!(in_pool(ip), "{ip} is outside the pool");
    wait_leases_on(&lab, new, &[(ip, lab.client_mac(1))], REPLICATION_TIMEOUT);

    phase("heal: the old leader becomes a follower of the new leader");
    lab.set_node_connected(old, true)
        .expect("healing the leader's link");
    let leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    assert_eq!(
        leader, new,
        "healing the partition moved leadership away from node {new} (no fail-back, DESIGN.md section 9):\n{}",
        describe_statuses(&lab, &[1, 2, 3])
    );
    let v = status(&lab, old).expect("status of the old leader");
    assert_eq!(v["role"], "follower", "{v}");
    assert_eq!(v["serving"].as_bool(), Some(false), "{v}");
    assert_eq!(v["vip_held"].as_bool(), Some(false), "{v}");
    assert_eq!(
        vip_holders(&lab),
        [new],
        "after the heal the VIP must sit on the leader only"
    );

    phase("the healed node catches up: its own table has the lease granted during the partition");
    let table = wait_leases_on(&lab, old, &[(ip, lab.client_mac(1))], REPLICATION_TIMEOUT);
    assert_eq!(lease_mac(&table[&ip]), lab.client_mac(1));
}
