//! Durability: a lease survives `kill -9` of the daemon, the restarted node
//! removes the VIP the dead one left behind before serving again, and the
//! client's renewal gets the same address.

use std::net::Ipv4Addr;

use tandem_tests::clients::udhcpc_lease;
use tandem_tests::cluster::vip_count;
use tandem_tests::{lab, phase, wait_single_server};

use super::{
    assert_bound_to, daemon_log, lease_of, node_lab, service_toml, u64_field, wait_clock_past,
    DHCP_TIMEOUT, SERVING_TIMEOUT,
};

#[test]
fn lease_survives_sigkill_and_renews_same_address() {
    let lab = node_lab(1, |_| service_toml(&[]));
    let mac = lab.client_mac(1);

    phase("a client gets a lease");
    let first = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("udhcpc lease");
    let ip: Ipv4Addr = first.lease.ip;
    let before = lease_of(&lab, ip);
    assert_bound_to(&before, &mac);
    assert_eq!(vip_count(&lab, 1), 1, "the serving node holds the VIP once");

    phase("SIGKILL the daemon: nothing gets to clean up");
    let status = lab.kill_node(1, libc::SIGKILL).expect("killing node 1");
    println!("daemon exited: {status:?}");
    assert_eq!(
        vip_count(&lab, 1),
        1,
        "precondition: the dead daemon left its VIP behind"
    );
    phase("nobody answers ARP for the VIP while the daemon is dead (the kernel leaves ARP for it to the daemon)");
    let arp = lab
        .exec_in(
            &lab.client_ns(1),
            "arping",
            &[
                "-c",
                "2",
                "-w",
                "3",
                "-I",
                lab::INTERFACE,
                &lab::VIP.to_string(),
            ],
            std::time::Duration::from_secs(10),
        )
        .expect("run arping");
    let arp_out = String::from_utf8_lossy(&arp.stdout).into_owned();
    assert!(
        arp_out.contains("Received 0 response"),
        "a dead node still answers ARP for the VIP:\n{arp_out}"
    );
    let log_len = daemon_log(&lab).len();

    phase("restart the daemon");
    lab.restart_node(1).expect("restarting node 1");
    assert_eq!(wait_single_server(&lab, SERVING_TIMEOUT), 1);
    let restart_log = daemon_log(&lab)[log_len..].to_owned();
    assert!(
        restart_log.contains("stale VIP"),
        "the restarted daemon did not report removing the stale VIP:\n{restart_log}"
    );
    assert_eq!(
        vip_count(&lab, 1),
        1,
        "serving again: the VIP is on eth1 exactly once"
    );

    phase("the lease is still in the table");
    let after_restart = lease_of(&lab, ip);
    assert_eq!(
        after_restart, before,
        "the lease changed across the restart"
    );

    phase("the client's renewal gets the same address");
    wait_clock_past(u64_field(&before, "granted_at"));
    let renewed = udhcpc_lease(&lab, 1, &["-r", &ip.to_string()], DHCP_TIMEOUT)
        .expect("udhcpc renew after restart");
    assert_eq!(renewed.lease.ip, ip, "{:?}", renewed.lease);
    let after = lease_of(&lab, ip);
    assert_bound_to(&after, &mac);
    assert!(
        u64_field(&after, "granted_at") > u64_field(&before, "granted_at"),
        "before {before}, after {after}"
    );
}

#[test]
fn sigterm_releases_the_vip_and_restart_keeps_the_lease() {
    let lab = node_lab(1, |_| service_toml(&[]));

    phase("a client gets a lease from the serving node");
    let first = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("udhcpc lease");
    assert_eq!(vip_count(&lab, 1), 1, "the serving node holds the VIP once");

    phase("SIGTERM: an orderly shutdown steps down first");
    let status = lab.kill_node(1, libc::SIGTERM).expect("SIGTERM the daemon");
    assert!(
        status.success(),
        "the daemon exits 0 on SIGTERM, got {status}"
    );
    assert_eq!(vip_count(&lab, 1), 0, "shutdown removed the VIP");
    let log = daemon_log(&lab);
    assert!(
        log.contains("VIP removed"),
        "the log records the VIP removal:\n{log}"
    );

    phase("restart: the lease is still there and the client keeps its address");
    lab.restart_node(1).expect("restart the daemon");
    assert_eq!(
        wait_single_server(&lab, SERVING_TIMEOUT),
        1,
        "node 1 serves again"
    );
    assert_bound_to(&lease_of(&lab, first.lease.ip), &lab.client_mac(1));
    let again = udhcpc_lease(&lab, 1, &["-r", &first.lease.ip.to_string()], DHCP_TIMEOUT)
        .expect("udhcpc renew");
    assert_eq!(
        again.lease.ip, first.lease.ip,
        "same address after an orderly restart"
    );
}
