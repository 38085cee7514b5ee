//! Bad input: malformed DHCP packets are counted, logged and survived; an
//! invalid `node.toml` stops the daemon at once with the field named; an
//! invalid service config is refused and changes nothing.

use std::time::{Duration, Instant};

use tandem_tests::clients::udhcpc_lease;
use tandem_tests::metrics::{counter, wait_counter_above};
use tandem_tests::{describe_output, is_serving, lab, phase, tandem_bin, Lab};

use super::{daemon_log, in_pool, node_lab, service_toml, DHCP_TIMEOUT};

/// The scapy script that sends the malformed packets.
const MALFORMED_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/malformed_dhcp.py");

#[test]
fn malformed_dhcp_is_counted_logged_and_survived() {
    let lab = node_lab(1, |_| service_toml(&[]));
    let before = counter(&lab, 1, "tandem_dhcp_malformed_total", &[]);
    let log_len = daemon_log(&lab).len();

    phase("send malformed DHCP packets from the client (scapy)");
    // scapy imports only under the system python (TOOLCHAIN.md).
    let sent = lab
        .exec_ok(
            &lab.client_ns(1),
            "/usr/bin/python3",
            &[MALFORMED_SCRIPT, lab::INTERFACE],
            Duration::from_secs(60),
        )
        .expect("running malformed_dhcp.py");
    let sent: u32 = sent
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("malformed_dhcp.py printed {sent:?}: {e}"));
    println!("sent {sent} malformed packets");
    assert!(sent >= 10, "the script sent only {sent} packets");

    phase("the server counted and logged them");
    let after = wait_counter_above(
        &lab,
        1,
        "tandem_dhcp_malformed_total",
        &[],
        before + 9.0,
        Duration::from_secs(10),
    );
    println!("tandem_dhcp_malformed_total {before} -> {after}");
    let new_log = daemon_log(&lab)[log_len..].to_owned();
    assert!(
        new_log.contains("malformed"),
        "no \"malformed\" line in the daemon log since the attack:\n{new_log}"
    );

    phase("the daemon still runs and serves a real client");
    assert!(
        lab.is_node_running(1),
        "the daemon died: {:?}",
        lab.node_process(1).and_then(|p| p.try_status())
    );
    assert!(is_serving(&lab, 1), "node 1 no longer reports serving");
    let lease =
        udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("udhcpc lease after the malformed packets");
    assert!(in_pool(lease.lease.ip), "{:?}", lease.lease);
}

#[test]
fn invalid_vip_in_node_config_stops_the_daemon_naming_the_field() {
    let bin = tandem_bin();
    let lab = Lab::builder()
        .nodes(1)
        .clients(0)
        .tandem_bin(&bin)
        .build()
        .expect("building the lab");
    let text = lab.node_config_toml(1);
    assert!(
        text.contains(lab::VIP_CIDR),
        "the standard node.toml has no VIP to break:\n{text}"
    );
    lab.write_node_config_raw(1, &text.replace(lab::VIP_CIDR, "10.99.0.300/16"))
        .expect("writing node.toml");

    phase("start the daemon with vip = \"10.99.0.300/16\"");
    let started = Instant::now();
    let p = lab.start_node(1, &bin).expect("spawning the daemon");
    let status = p.wait_timeout(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "the daemon still runs 5 s after starting with an invalid VIP:\n{}",
            daemon_log(&lab)
        )
    });
    println!("exited with {status:?} after {:?}", started.elapsed());
    assert!(
        !status.success(),
        "the daemon exited successfully with an invalid VIP"
    );
    let log = daemon_log(&lab);
    assert!(
        log.contains("service.vip"),
        "the error does not name service.vip:\n{log}"
    );

    phase("it touched nothing: no VIP on any device");
    let addrs = lab
        .exec_ok(
            &lab.node_ns(1),
            "ip",
            &["-4", "addr", "show"],
            Duration::from_secs(5),
        )
        .expect("ip addr show");
    assert!(
        !addrs.contains(&lab::VIP.to_string()),
        "a VIP appeared: {addrs}"
    );
}

#[test]
fn apply_with_pool_outside_subnet_is_refused_and_changes_nothing() {
    let lab = node_lab(0, |_| service_toml(&[]));
    let export = |lab: &Lab| {
        let out = lab.tandem(1, &["export"]).expect("running tandem export");
        assert!(
            out.status.success(),
            "tandem export: {}",
            describe_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = export(&lab);
    assert!(
        before.contains("10.99.1.1"),
        "the applied config is not exported:\n{before}"
    );

    phase("apply a subnet whose pool lies outside it");
    let bad = service_toml(&[]).replace("10.99.1.1-10.99.1.200", "10.98.1.1-10.98.1.200");
    assert_ne!(bad, service_toml(&[]));
    let path = lab.node_dir(1).join("bad-service.toml");
    std::fs::write(&path, bad).expect("writing the bad service config");
    let out = lab
        .tandem(1, &["apply", path.to_str().expect("UTF-8")])
        .expect("running tandem apply");
    println!("tandem apply said: {}", describe_output(&out));
    assert_eq!(
        out.status.code(),
        Some(1),
        "tandem apply: {}",
        describe_output(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("subnet[0].pools[0]"),
        "the error does not name the field: {}",
        describe_output(&out)
    );

    phase("the exported config is unchanged");
    assert_eq!(export(&lab), before);
}
