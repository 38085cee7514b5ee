//! A stray node and a broken one cannot hurt a running cluster (issue 8,
//! points 3 and 6):
//!
//! - a fresh node (a cluster of one) started with the production VIP on the
//!   same LAN takes neither the VIP nor any client, even once it has a
//!   service config (its ARP probe finds the cluster's leader); the cluster
//!   keeps serving and reports the probe as a VIP conflict;
//! - a leader whose TFTP port on the VIP is taken by another process does
//!   not claim to serve: it steps down and hands over, another node serves
//!   DHCP and TFTP;
//! - a leader whose `data_dir` fills up exits 1 with the database path in
//!   its log, no ACK goes out for a lease that was not committed (every
//!   captured ACK is in the other nodes' tables), and after space is freed a
//!   restart recovers with no lease lost.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tandem_tests::clients::udhcpc_lease;
use tandem_tests::cluster::{
    api_addr, describe_statuses, lease_mac, leases, vip_count, wait_agreed_leader, wait_leases_on,
    wait_one_serving_among, AGREE_TIMEOUT, START_TIMEOUT,
};
use tandem_tests::metrics::{counter, wait_counter_above};
use tandem_tests::wire::{start_perfdhcp, stop_perfdhcp, Capture, DhcpReply, DHCPACK};
use tandem_tests::{
    apply, describe_output, is_leader, lab, phase, status, tandem_bin, wait_until, Lab,
    SERVICE_TOML,
};

use super::{others, DHCP_TIMEOUT, FAILOVER_TIMEOUT, RELAY, RELAY_SERVICE, REPLICATION_TIMEOUT};

/// Starts nodes `1..=3` of `lab` (each a cluster of one, none serving: no
/// config), joins 2 and 3 to node 1 and returns the agreed leader.
fn form(lab: &Lab) -> usize {
    let bin = tandem_bin();
    for i in 1..=3 {
        lab.start_node(i, &bin)
            .unwrap_or_else(|e| panic!("starting node {i}: {e:#}"));
    }
    for i in 1..=3 {
        assert!(
            wait_until(START_TIMEOUT, || is_leader(lab, i)),
            "node {i} never led its cluster of one:\n{}",
            describe_statuses(lab, &[i])
        );
    }
    for i in [2, 3] {
        phase(&format!(
            "node {i}: tandem cluster join {}",
            api_addr(lab, 1)
        ));
        let out = lab
            .join(i, 1)
            .unwrap_or_else(|e| panic!("tandem cluster join on node {i}: {e:#}"));
        assert!(
            out.status.success(),
            "join on node {i}: {}",
            describe_output(&out)
        );
    }
    wait_agreed_leader(lab, &[1, 2, 3], AGREE_TIMEOUT)
}

/// [`form`], then applies `service` through the leader and returns the
/// node that serves.
fn form_and_serve(lab: &Lab, service: &str) -> usize {
    let leader = form(lab);
    phase(&format!("apply the service config through node {leader}"));
    apply(lab, leader, service);
    let (serving, _) = wait_one_serving_among(lab, &[1, 2, 3], FAILOVER_TIMEOUT);
    serving
}

fn warnings(lab: &Lab, i: usize) -> Vec<String> {
    status(lab, i)
        .ok()
        .and_then(|v| {
            v["warnings"].as_array().map(|w| {
                w.iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn warns(lab: &Lab, i: usize, needle: &str) -> bool {
    warnings(lab, i).iter().any(|w| w.contains(needle))
}

fn log_of(lab: &Lab, i: usize) -> String {
    std::fs::read_to_string(lab.node_log_path(i)).unwrap_or_default()
}

#[test]
fn fresh_node_takes_neither_vip_nor_clients() {
    phase(
        "lab: four nodes on one bridge, all with the same VIP; nodes 1-3 form a cluster and serve",
    );
    let lab = Lab::builder()
        .nodes(4)
        .clients(2)
        .tandem_bin(tandem_bin())
        .build()
        .expect("building the lab");
    let leader = form_and_serve(&lab, SERVICE_TOML);
    let conflicts_before = counter(&lab, leader, "tandem_vip_conflicts_total", &[]);

    phase("start node 4: fresh, its own cluster of one, the production VIP in its node.toml");
    lab.start_node(4, &tandem_bin()).expect("starting node 4");
    assert!(
        wait_until(START_TIMEOUT, || is_leader(&lab, 4)),
        "node 4 never led its cluster of one:\n{}",
        describe_statuses(&lab, &[4])
    );

    phase("node 4 reports the conflict and that it has no config; it holds no VIP");
    assert!(
        wait_until(Duration::from_secs(10), || warns(&lab, 4, "VIP conflict")),
        "node 4 does not report the VIP conflict: {:?}",
        warnings(&lab, 4)
    );
    assert!(
        warns(&lab, 4, "no service config"),
        "{:?}",
        warnings(&lab, 4)
    );
    let v4 = status(&lab, 4).expect("node 4 status");
    assert_eq!(v4["serving"].as_bool(), Some(false), "node 4: {v4}");
    assert_eq!(vip_count(&lab, 4), 0, "node 4 took the VIP");

    phase("the running cluster saw node 4's probe and reports it");
    let after = wait_counter_above(
        &lab,
        leader,
        "tandem_vip_conflicts_total",
        &[],
        conflicts_before,
        Duration::from_secs(10),
    );
    println!("tandem_vip_conflicts_total on node {leader}: {conflicts_before} -> {after}");
    assert!(
        wait_until(Duration::from_secs(5), || warns(
            &lab,
            leader,
            "VIP conflict"
        )),
        "the leader does not report the conflict: {:?}",
        warnings(&lab, leader)
    );

    phase("a client's lease comes from the cluster, not node 4");
    let l1 = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("client 1 lease");
    assert_eq!(l1.lease.server_id, Some(lab::VIP), "{:?}", l1.lease);
    wait_leases_on(
        &lab,
        leader,
        &[(l1.lease.ip, lab.client_mac(1))],
        REPLICATION_TIMEOUT,
    );
    assert!(leases(&lab, 4).is_empty(), "node 4 recorded a lease");

    phase("even with a service config of its own, node 4 does not take the VIP (its probe is answered)");
    let before4 = counter(&lab, 4, "tandem_vip_conflicts_total", &[]);
    apply(&lab, 4, SERVICE_TOML);
    let seen = wait_counter_above(
        &lab,
        4,
        "tandem_vip_conflicts_total",
        &[],
        before4,
        Duration::from_secs(10),
    );
    println!("node 4 saw {} conflicts after its config", seen - before4);
    // Watch it through more than one back-off round (2 s, then 4 s).
    let watch_until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < watch_until {
        assert_eq!(vip_count(&lab, 4), 0, "node 4 took the VIP");
        let v = status(&lab, 4).expect("node 4 status");
        assert_eq!(v["serving"].as_bool(), Some(false), "node 4 serves: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !log_of(&lab, 4).contains("step 5: serving"),
        "node 4's log says it served"
    );
    assert!(warns(&lab, 4, "VIP conflict"), "{:?}", warnings(&lab, 4));

    phase("the cluster keeps serving: client 2 gets a lease from it");
    let l2 = udhcpc_lease(&lab, 2, &[], DHCP_TIMEOUT).expect("client 2 lease");
    assert_eq!(l2.lease.server_id, Some(lab::VIP), "{:?}", l2.lease);
    let (serving, _) = wait_one_serving_among(&lab, &[1, 2, 3], FAILOVER_TIMEOUT);
    wait_leases_on(
        &lab,
        serving,
        &[(l2.lease.ip, lab.client_mac(2))],
        REPLICATION_TIMEOUT,
    );
    assert!(leases(&lab, 4).is_empty(), "node 4 recorded a lease");
    assert_eq!(vip_count(&lab, 4), 0, "node 4 took the VIP");
}

/// A socket bound to VIP:PORT (`udp`, or `tcp` and listening) in a node's
/// namespace, before the VIP exists there (`IP_FREEBIND`), held until killed.
const PORT_HOLDER: &str = "import socket, sys, time\n\
kind = socket.SOCK_DGRAM if sys.argv[2] == 'udp' else socket.SOCK_STREAM\n\
s = socket.socket(socket.AF_INET, kind)\n\
s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND\n\
s.bind((sys.argv[1], int(sys.argv[3])))\n\
if kind == socket.SOCK_STREAM: s.listen(8)\n\
print('bound', flush=True)\n\
time.sleep(3600)\n";

#[test]
fn leader_with_taken_tftp_port_steps_down_and_another_serves() {
    taken_port_steps_down("tftp", "udp", 69);
}

/// HTTP is bound in step 3 with TFTP, before the gratuitous ARP: a taken
/// port stops the transition the same way.
#[test]
fn leader_with_taken_http_port_steps_down_and_another_serves() {
    taken_port_steps_down("http", "tcp", 80);
}

fn taken_port_steps_down(responder: &str, proto: &str, port: u16) {
    let lab = Lab::builder()
        .nodes(3)
        .clients(1)
        .tandem_bin(tandem_bin())
        .build()
        .expect("building the lab");
    for i in 1..=3 {
        std::fs::create_dir_all(lab.node_artifact_dir(i)).expect("artifact dir");
        std::fs::write(
            lab.node_artifact_dir(i).join("boot.bin"),
            vec![7u8; 100_000],
        )
        .expect("writing the TFTP file");
    }
    let bad = form(&lab);

    phase(&format!("another process binds VIP:{port}/{proto} in node {bad}'s namespace (the leader, not serving yet: no config)"));
    let holder_log = lab.root().join("port-holder.log");
    let _holder = lab
        .spawn_in(
            &lab.node_ns(bad),
            "/usr/bin/python3",
            &[
                "-c",
                PORT_HOLDER,
                &lab::VIP.to_string(),
                proto,
                &port.to_string(),
            ],
            &holder_log,
        )
        .expect("starting the port holder");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            &holder_log
        )
        .is_ok_and(|t| t.contains("bound"))),
        "the port holder did not bind: {:?}",
        std::fs::read_to_string(&holder_log)
    );

    phase(&format!(
        "apply the service config: node {bad} cannot serve {responder}, another node serves"
    ));
    let applied = Instant::now();
    apply(&lab, bad, SERVICE_TOML);
    let good = others(&[bad]);
    let (serving, took) = wait_one_serving_among(&lab, &good, FAILOVER_TIMEOUT);
    println!(
        "node {serving} serves {took:?} after the wait began ({:?} after apply)",
        applied.elapsed()
    );
    let failures = counter(
        &lab,
        bad,
        "tandem_responder_failures_total",
        &[("responder", responder)],
    );
    assert!(
        failures >= 1.0,
        "node {bad} counted no {responder} responder failure"
    );
    assert!(
        warns(&lab, bad, &format!("{responder} responder failed")),
        "node {bad}'s status lacks the cause: {:?}",
        warnings(&lab, bad)
    );
    let log = log_of(&lab, bad);
    assert!(
        log.contains("responder failed"),
        "node {bad}'s log lacks the failure"
    );
    assert!(
        !log.contains("step 5: serving"),
        "node {bad} reported serving with its {responder} port taken"
    );
    assert_eq!(vip_count(&lab, bad), 0, "node {bad} still holds the VIP");

    phase(&format!(
        "a client gets DHCP and TFTP from the serving node; node {bad} stays out"
    ));
    let lease = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("client lease");
    assert_eq!(lease.lease.server_id, Some(lab::VIP), "{:?}", lease.lease);
    let dest = lab.root().join("fetched.bin");
    lab.tftp_get(1, "boot.bin", &dest, Duration::from_secs(30))
        .expect("TFTP download from the VIP");
    assert_eq!(std::fs::read(&dest).expect("the download").len(), 100_000);
    // Not winning again and again: still the same server a few seconds on.
    std::thread::sleep(Duration::from_secs(3));
    let (still, _) = wait_one_serving_among(&lab, &[1, 2, 3], FAILOVER_TIMEOUT);
    assert_eq!(
        still,
        serving,
        "service moved:\n{}",
        describe_statuses(&lab, &[1, 2, 3])
    );
    let again = counter(
        &lab,
        bad,
        "tandem_responder_failures_total",
        &[("responder", responder)],
    );
    assert!(
        again <= failures,
        "node {bad} tried to serve again within its hold-back ({failures} -> {again} failures)"
    );
}

/// A tmpfs mounted at a node's data dir, unmounted (lazily: the daemon may
/// still hold the file) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("creating the data dir");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tandem-test",
                path_str(at),
            ])
            .status()
            .expect("running mount");
        assert!(st.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", path_str(&self.0)])
            .status();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}

/// Free bytes on the file system holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail", path_str(p)])
        .output()
        .expect("running df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df printed the free bytes")
}

/// Fills the file system of `dir` with `<dir>/filler` but for `leave`
/// bytes; returns the filler's path.
fn fill_but(dir: &Path, leave: u64) -> PathBuf {
    let filler = dir.join("filler");
    let fill = free_bytes(dir).saturating_sub(leave);
    let st = Command::new("fallocate")
        .args(["-l", &fill.to_string(), path_str(&filler)])
        .status()
        .expect("running fallocate");
    assert!(st.success(), "fallocate {fill} bytes");
    println!("filled {fill} bytes; {} free", free_bytes(dir));
    filler
}

/// The ACKs among `replies`: client MAC -> every address acknowledged to it.
fn acked(replies: &[DhcpReply]) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut by_mac: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for r in replies.iter().filter(|r| r.kind == DHCPACK) {
        by_mac.entry(r.chaddr.clone()).or_default().insert(r.yiaddr);
    }
    by_mac
}

#[test]
fn full_data_dir_stops_the_leader_without_losing_an_acked_lease() {
    let lab = Lab::builder()
        .nodes(3)
        .clients(1)
        .tandem_bin(tandem_bin())
        .build()
        .expect("building the lab");
    phase("node 1's data_dir is a 16 MiB tmpfs");
    let data = lab.node_data_dir(1);
    let tmpfs = Tmpfs::mount(&data, "16m");
    let first = form_and_serve(&lab, RELAY_SERVICE);
    if first != 1 {
        phase("hand leadership to node 1");
        let out = lab
            .tandem(first, &["cluster", "handover", "1"])
            .expect("handover");
        assert!(out.status.success(), "{}", describe_output(&out));
        let (s, _) = wait_one_serving_among(&lab, &[1, 2, 3], FAILOVER_TIMEOUT);
        assert_eq!(s, 1, "node 1 does not serve after the handover");
    }
    lab.add_client_ip(1, &format!("{RELAY}/{}", lab::PREFIX_LEN))
        .expect("giving client 1 the relay address");

    phase("fill node 1's tmpfs but for 1 MiB");
    let filler = fill_but(&data, 1 << 20);
    phase("capture ACKs, run perfdhcp until node 1 stops");
    let capture = Capture::start(
        &lab,
        &lab.client_ns(1),
        lab::INTERFACE,
        "udp port 67",
        "acks",
    )
    .expect("starting tcpdump");
    let perf_log = lab.root().join("perfdhcp.log");
    let perf = start_perfdhcp(&lab, 1, RELAY, 300, 3000, None, &perf_log).expect("perfdhcp");
    let stopped = wait_until(Duration::from_secs(90), || !lab.is_node_running(1));
    let exit = lab.node_process(1).and_then(|p| p.try_status());
    println!("node 1 running: {}, exit: {exit:?}", lab.is_node_running(1));
    assert!(
        stopped,
        "node 1 did not stop on a full disk (free: {})",
        free_bytes(&data)
    );
    let exit = exit.expect("node 1 exited");
    assert_eq!(
        exit.code(),
        Some(1),
        "node 1 must exit 1 on a storage error: {exit:?}"
    );
    let log = log_of(&lab, 1);
    let db = data.join("tandem.redb");
    let line = log
        .lines()
        .find(|l| l.contains("storage failed on"))
        .unwrap_or_else(|| {
            panic!(
                "no clear storage error in node 1's log:\n{}",
                &log[log.len().saturating_sub(4000)..]
            )
        });
    println!("node 1's error: {line}");
    assert!(
        line.contains(path_str(&db)),
        "the error does not name {}: {line}",
        db.display()
    );

    phase("the others take over; keep the load a moment, then stop");
    let (took_over, t) = wait_one_serving_among(&lab, &[2, 3], FAILOVER_TIMEOUT);
    println!("node {took_over} serves {t:?} after the wait began");
    std::thread::sleep(Duration::from_secs(2));
    let _ = stop_perfdhcp(&perf, &perf_log).expect("stopping perfdhcp");
    std::thread::sleep(Duration::from_secs(1));
    let (replies, summary) = capture.stop().expect("stopping tcpdump");
    println!("tcpdump: {summary}");
    let acked = acked(&replies);
    let node1_mac = lab.node_mac(1).to_ascii_lowercase();
    let from_node1 = replies
        .iter()
        .filter(|r| r.kind == DHCPACK && r.src_mac == node1_mac)
        .count();
    println!(
        "{} distinct acknowledged clients; {from_node1} ACKs from node 1 before it stopped",
        acked.len()
    );
    assert!(
        from_node1 > 10,
        "node 1 sent too few ACKs before its disk filled to tell anything"
    );
    let want: Vec<(Ipv4Addr, String)> = acked
        .iter()
        .flat_map(|(mac, ips)| ips.iter().map(move |ip| (*ip, mac.clone())))
        .collect();

    phase("every ACKed lease is in nodes 2 and 3's tables");
    for i in [2, 3] {
        wait_leases_on(&lab, i, &want, REPLICATION_TIMEOUT);
    }

    restart_recovers(&lab, &filler, &want);
    drop(tmpfs);
}

/// Frees the space (removes `filler`), restarts node 1 and checks that it
/// recovers with every lease of `want` and of node 2's table.
fn restart_recovers(lab: &Lab, filler: &Path, want: &[(Ipv4Addr, String)]) {
    phase("free the space, restart node 1: it recovers with no lease lost");
    std::fs::remove_file(filler).expect("removing the filler");
    lab.restart_node(1).expect("restarting node 1");
    assert!(
        wait_until(START_TIMEOUT, || status(lab, 1).is_ok()),
        "node 1 does not answer after its restart"
    );
    let table = wait_leases_on(lab, 1, want, Duration::from_secs(30));
    let t2 = leases(lab, 2);
    for (ip, l) in &t2 {
        assert!(
            table.get(ip).is_some_and(|m| lease_mac(m) == lease_mac(l)),
            "node 1 lacks {ip} after its restart"
        );
    }
    assert!(
        lab.is_node_running(1),
        "node 1 did not stay up after its restart"
    );
}
