//! Leases with real clients: busybox udhcpc and ISC dhclient get the
//! configured options, a reservation gives its fixed address, and renewals
//! keep the address while moving `granted_at` in the lease table.

use std::net::Ipv4Addr;
use std::time::Duration;

use tandem_tests::clients::{dhclient, udhcpc_lease, ClientLease};
use tandem_tests::{lab, phase, wait_until, DhcpLease};

use super::{
    assert_bound_to, in_pool, lease_of, node_lab, service_toml, u64_field, wait_clock_past,
    Reservation, DHCP_TIMEOUT, LEASE_TIME,
};

/// The options of [`service_toml`], as any client must see them.
fn assert_configured_options(client: &str, got: &DhcpLease) {
    assert_eq!(got.prefix_len, 16, "{client}: subnet mask in {got:?}");
    assert_eq!(
        got.router,
        Some(Ipv4Addr::new(10, 99, 0, 1)),
        "{client}: router in {got:?}"
    );
    assert_eq!(
        got.dns,
        [Ipv4Addr::new(10, 99, 0, 1)],
        "{client}: DNS in {got:?}"
    );
    assert_eq!(
        got.domain.as_deref(),
        Some("lab.tandem"),
        "{client}: domain in {got:?}"
    );
    assert_eq!(
        got.lease_secs,
        Some(LEASE_TIME),
        "{client}: lease time in {got:?}"
    );
    assert_eq!(
        got.server_id,
        Some(lab::VIP),
        "{client}: server id in {got:?}"
    );
}

#[test]
fn udhcpc_gets_configured_options_and_renew_keeps_address() {
    let lab = node_lab(1, |_| service_toml(&[]));
    let mac = lab.client_mac(1);

    phase("udhcpc: first lease");
    let first = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("udhcpc lease");
    println!("udhcpc got {:?}", first.lease);
    // The lab's parser defaults the prefix; the raw variable proves option 1 came.
    assert_eq!(
        first.vars.get("mask").map(String::as_str),
        Some("16"),
        "udhcpc variables {:?}",
        first.vars
    );
    assert_configured_options("udhcpc", &first.lease);
    assert!(
        in_pool(first.lease.ip),
        "{} is outside the pool",
        first.lease.ip
    );
    let before = lease_of(&lab, first.lease.ip);
    assert_bound_to(&before, &mac);

    phase("udhcpc: renew (a running udhcpc, SIGUSR1 = renew now)");
    wait_clock_past(u64_field(&before, "granted_at"));
    let renewed = renew_with_running_udhcpc(&lab, first.lease.ip);
    assert_eq!(
        renewed.ip, first.lease.ip,
        "renew changed the address: {renewed:?}"
    );
    let after = lease_of(&lab, first.lease.ip);
    assert_bound_to(&after, &mac);
    assert!(
        u64_field(&after, "granted_at") > u64_field(&before, "granted_at"),
        "granted_at did not move on renew: before {before}, after {after}"
    );

    phase("udhcpc: a new exchange asking for the same address (-r) gets it");
    wait_clock_past(u64_field(&after, "granted_at"));
    let again = udhcpc_lease(&lab, 1, &["-r", &first.lease.ip.to_string()], DHCP_TIMEOUT)
        .expect("udhcpc -r");
    assert_eq!(again.lease.ip, first.lease.ip);
    let last = lease_of(&lab, first.lease.ip);
    assert!(
        u64_field(&last, "granted_at") > u64_field(&after, "granted_at"),
        "after {after}, then {last}"
    );
}

/// Starts a long-running udhcpc in client 1, waits until it is bound to
/// `ip`, sends SIGUSR1 (busybox: renew now, a unicast REQUEST to the server
/// id) and returns the lease of the `renew` event.
fn renew_with_running_udhcpc(lab: &lab::Lab, ip: Ipv4Addr) -> DhcpLease {
    let script = lab.udhcpc_script().expect("udhcpc script");
    let log = lab.root().join("c1-udhcpc-running.log");
    let ip_s = ip.to_string();
    let args = [
        "udhcpc",
        "-f",
        "-i",
        lab::INTERFACE,
        "-t",
        "5",
        "-r",
        &ip_s,
        "-s",
        script.to_str().expect("UTF-8"),
    ];
    let p = lab
        .spawn_in(&lab.client_ns(1), "busybox", &args, &log)
        .expect("starting udhcpc");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(DHCP_TIMEOUT, || read().contains("lease.event=bound")),
        "running udhcpc never bound:\n{}",
        read()
    );
    assert!(
        p.signal(libc::SIGUSR1).expect("signalling udhcpc"),
        "udhcpc exited:\n{}",
        read()
    );
    let renewed = wait_until(Duration::from_secs(15), || {
        read().contains("lease.event=renew")
    });
    p.kill_and_wait();
    assert!(renewed, "udhcpc did not renew after SIGUSR1:\n{}", read());
    let text = read();
    let renew_part = &text[text.find("lease.event=renew").expect("checked above")..];
    DhcpLease::parse(renew_part).unwrap_or_else(|e| panic!("renew event: {e:#}\n{text}"))
}

#[test]
fn dhclient_gets_configured_options_and_reboot_keeps_address() {
    let lab = node_lab(1, |_| service_toml(&[]));
    let mac = lab.client_mac(1);

    phase("dhclient: first lease");
    let first: ClientLease = dhclient(&lab, 1, DHCP_TIMEOUT).expect("dhclient lease");
    println!(
        "dhclient got {:?} ({:?})",
        first.lease,
        first.vars.get("reason")
    );
    assert_eq!(
        first.vars.get("reason").map(String::as_str),
        Some("BOUND"),
        "{:?}",
        first.vars
    );
    assert_configured_options("dhclient", &first.lease);
    assert!(
        in_pool(first.lease.ip),
        "{} is outside the pool",
        first.lease.ip
    );
    let before = lease_of(&lab, first.lease.ip);
    assert_bound_to(&before, &mac);

    phase("dhclient: restart from its lease file (INIT-REBOOT)");
    wait_clock_past(u64_field(&before, "granted_at"));
    let second = dhclient(&lab, 1, DHCP_TIMEOUT).expect("dhclient reboot");
    // REBOOT means the server ACKed the remembered address without a new
    // DISCOVER; BOUND here would mean it NAKed and the client started over.
    assert_eq!(
        second.vars.get("reason").map(String::as_str),
        Some("REBOOT"),
        "{:?}",
        second.vars
    );
    assert_eq!(second.lease.ip, first.lease.ip);
    assert_configured_options("dhclient (reboot)", &second.lease);
    let after = lease_of(&lab, first.lease.ip);
    assert_bound_to(&after, &mac);
    assert!(
        u64_field(&after, "granted_at") > u64_field(&before, "granted_at"),
        "granted_at did not move: before {before}, after {after}"
    );
}

#[test]
fn reservation_gives_its_fixed_address() {
    let fixed = Ipv4Addr::new(10, 99, 2, 50);
    let lab = node_lab(2, |lab| {
        service_toml(&[Reservation {
            mac: &lab.client_mac(2),
            ip: fixed,
            hostname: "fixed50",
        }])
    });

    phase("the reserved client gets its address");
    let reserved =
        udhcpc_lease(&lab, 2, &[], DHCP_TIMEOUT).expect("udhcpc lease for the reserved client");
    assert_eq!(reserved.lease.ip, fixed, "{:?}", reserved.lease);
    assert_configured_options("udhcpc (reserved)", &reserved.lease);
    let entry = lease_of(&lab, fixed);
    assert_bound_to(&entry, &lab.client_mac(2));
    assert_eq!(
        entry["hostname"], "fixed50",
        "the reservation's hostname: {entry}"
    );

    phase("another client gets a pool address, not the reserved one");
    let other =
        udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("udhcpc lease for the other client");
    assert!(in_pool(other.lease.ip), "{:?}", other.lease);
    assert_bound_to(&lease_of(&lab, other.lease.ip), &lab.client_mac(1));

    phase("the other client asking for the reserved address does not get it");
    let asked = udhcpc_lease(&lab, 1, &["-r", &fixed.to_string()], DHCP_TIMEOUT)
        .expect("udhcpc -r reserved");
    assert_ne!(
        asked.lease.ip, fixed,
        "a reserved address went to another MAC: {:?}",
        asked.lease
    );
}
