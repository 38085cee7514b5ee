//! Cold restart: SIGKILL of all three nodes loses no lease. After the
//! restart a leader is elected, the VIP sits on it alone (the dead leader's
//! stale VIP is removed), every node's table holds every lease, and a
//! client's renewal keeps its address.

use std::net::Ipv4Addr;

use tandem_tests::clients::udhcpc_lease;
use tandem_tests::cluster::{
    describe_statuses, lease_u64, vip_holders, wait_agreed_leader, wait_leases_on,
    wait_one_serving_among, AGREE_TIMEOUT,
};
use tandem_tests::{lab, phase, wait_until};

use super::{in_pool, serving_cluster, wait_clock_past, DHCP_TIMEOUT, REPLICATION_TIMEOUT};

#[test]
fn cold_restart_keeps_leases() {
    let (lab, leader) = serving_cluster(3);

    phase("three clients get leases");
    let mut want: Vec<(Ipv4Addr, String)> = Vec::new();
    for j in 1..=3 {
        let got = udhcpc_lease(&lab, j, &[], DHCP_TIMEOUT)
            .unwrap_or_else(|e| panic!("client {j}: {e:#}"));
        assert!(in_pool(got.lease.ip), "client {j}: {:?}", got.lease);
        assert!(
            want.iter().all(|(ip, _)| *ip != got.lease.ip),
            "client {j} got a taken address: {:?}",
            got.lease
        );
        want.push((got.lease.ip, lab.client_mac(j)));
    }
    let before: Vec<_> = (1..=3)
        .map(|i| wait_leases_on(&lab, i, &want, REPLICATION_TIMEOUT))
        .collect();

    phase("SIGKILL all three nodes at once");
    // Signal all before waiting for any: a survivor notices a dead leader
    // within milliseconds and would take over the VIP before its own kill.
    for i in 1..=3 {
        lab.signal_node(i, libc::SIGKILL)
            .unwrap_or_else(|e| panic!("killing node {i}: {e:#}"));
    }
    for i in 1..=3 {
        let p = lab.node_process(i).expect("node started");
        assert!(
            p.wait_timeout(std::time::Duration::from_secs(10)).is_some(),
            "node {i} did not die of SIGKILL"
        );
    }
    assert_eq!(
        vip_holders(&lab),
        [leader],
        "precondition: the dead leader left its VIP behind"
    );

    phase("restart all three");
    for i in 1..=3 {
        lab.restart_node(i)
            .unwrap_or_else(|e| panic!("restarting node {i}: {e:#}"));
    }
    let new = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    let (serving, _) = wait_one_serving_among(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    assert_eq!(serving, new, "{}", describe_statuses(&lab, &[1, 2, 3]));
    println!("after the restart node {new} leads (node {leader} led before)");
    assert!(
        wait_until(std::time::Duration::from_secs(5), || vip_holders(&lab)
            == [new]),
        "after the restart the VIP must sit on the leader {new} only: {:?}",
        vip_holders(&lab)
    );

    phase("every node's table still has every lease, unchanged");
    for i in 1..=3 {
        let table = wait_leases_on(&lab, i, &want, REPLICATION_TIMEOUT);
        for (ip, _) in &want {
            assert_eq!(
                table[ip],
                before[i - 1][ip],
                "node {i}: lease of {ip} changed across the restart"
            );
        }
    }

    phase("client 1 renews and keeps its address");
    let (ip1, mac1) = want[0].clone();
    let granted = lease_u64(&before[new - 1][&ip1], "granted_at");
    wait_clock_past(granted);
    let renewed =
        udhcpc_lease(&lab, 1, &["-r", &ip1.to_string()], DHCP_TIMEOUT).expect("client 1 renew");
    assert_eq!(renewed.lease.ip, ip1, "{:?}", renewed.lease);
    assert_eq!(
        renewed.lease.server_id,
        Some(lab::VIP),
        "{:?}",
        renewed.lease
    );
    let table = wait_leases_on(&lab, new, &[(ip1, mac1)], REPLICATION_TIMEOUT);
    assert!(
        lease_u64(&table[&ip1], "granted_at") > granted,
        "renewal not recorded: {}",
        table[&ip1]
    );
}
