//! Starvation (issue 8, point 4): a flood of more than 5,000 DISCOVERs/s
//! from random MACs, plus SELECTING REQUESTs that no OFFER preceded, for
//! 30 s, sent by `tandem-flood` (prebuilt frames on a raw socket) from
//! client 1. Half of each flood comes from random Ethernet sources (what
//! per-MAC limits cannot catch, so the daemon's guards must), half from
//! client 1's own MAC with random client MACs inside (what XDP limits).
//!
//! During it: client 2, a real udhcpc, gets a lease within 3 s; client 3's
//! running udhcpc renews; afterwards the cluster has had no leader change
//! and the leader's XDP counted the flood as `ratelimited`.
//!
//! Every flood frame is a broadcast, so the lab's bridge copies it to all
//! six ports, Raft's TCP included. With 8,000 frames/s (6,000 DISCOVERs)
//! on this 2-core machine, shared with other work, one run of two saw the
//! real client's three REQUESTs go unanswered for 3 s (no NAK and no failed
//! commit logged; the OFFER came). The rates here are the minimum
//! with a margin.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_tests::clients::udhcpc;
use tandem_tests::cluster::agreed_leader;
use tandem_tests::metrics::counter;
use tandem_tests::metrics::{scrape, sum};
use tandem_tests::{describe_output, lab, phase, wait_until, DhcpLease, Lab, LabProcess};

use super::{in_pool, serving_cluster, POOL};

const FLOOD_SECS: u64 = 30;
/// Per flooder process; two send DISCOVERs (5,200/s together: the issue's
/// 5,000 and a margin), two REQUESTs (1,000/s together); see the module docs.
const DISCOVER_RATE: u64 = 2_600;
const REQUEST_RATE: u64 = 500;
/// What the issue asks a real client to wait at most, mid-flood.
const LEASE_WITHIN: Duration = Duration::from_secs(3);

fn flooder(lab: &Lab, kind: &str, rate: u64, src: &str) -> (LabProcess, std::path::PathBuf) {
    let log = lab.root().join(format!("flood-{kind}-{src}.log"));
    let args = [
        lab::INTERFACE.to_owned(),
        kind.to_owned(),
        rate.to_string(),
        FLOOD_SECS.to_string(),
        src.to_owned(),
        lab::VIP.to_string(),
        POOL.0.to_string(),
        POOL.1.to_string(),
    ];
    let p = lab
        .spawn_in(
            &lab.client_ns(1),
            env!("CARGO_BIN_EXE_tandem-flood"),
            &args,
            &log,
        )
        .unwrap_or_else(|e| panic!("starting the {kind}/{src} flooder: {e:#}"));
    (p, log)
}

/// `sent=N failed=F secs=S rate=R` of a finished flooder: (sent, rate).
fn flood_result(log: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |k: &str| -> f64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in flooder output: {text}"))
    };
    (field("sent="), field("rate="))
}

fn leader_changes(lab: &Lab) -> f64 {
    (1..=3)
        .map(|i| counter(lab, i, "tandem_raft_leader_changes_total", &[]))
        .sum()
}

/// A long-running udhcpc in client `j`, bound; its log.
fn running_udhcpc(lab: &Lab, j: usize) -> (LabProcess, std::path::PathBuf) {
    let script = lab.udhcpc_script().expect("udhcpc script");
    let log = lab.root().join(format!("c{j}-udhcpc-running.log"));
    let args = [
        "udhcpc",
        "-f",
        "-i",
        lab::INTERFACE,
        "-t",
        "5",
        "-s",
        script.to_str().expect("UTF-8"),
    ];
    let p = lab
        .spawn_in(&lab.client_ns(j), "busybox", &args, &log)
        .expect("starting udhcpc");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || read()
            .contains("lease.event=bound")),
        "udhcpc in client {j} never bound:\n{}",
        read()
    );
    (p, log)
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one story: before, during, after the flood"
)]
fn a_dhcp_flood_starves_no_client_and_moves_no_leader() {
    let (lab, leader) = serving_cluster(3);

    phase("client 3 holds a lease before the flood (a running udhcpc)");
    let (renewer, renew_log) = running_udhcpc(&lab, 3);
    let changes_before = leader_changes(&lab);
    let xdp = |verdict: &str| {
        counter(
            &lab,
            leader,
            "tandem_xdp_packets_total",
            &[("proto", "dhcp"), ("verdict", verdict)],
        )
    };
    let limited_before = xdp("ratelimited");

    phase("flood from client 1: 2 x 2,600 DISCOVERs/s + 2 x 500 REQUESTs/s for 30 s");
    let started = Instant::now();
    let floods = [
        flooder(&lab, "discover", DISCOVER_RATE, "random"),
        flooder(&lab, "discover", DISCOVER_RATE, "own"),
        flooder(&lab, "request", REQUEST_RATE, "random"),
        flooder(&lab, "request", REQUEST_RATE, "own"),
    ];
    // Let the flood fill what it can of the pool first.
    std::thread::sleep(Duration::from_secs(5));

    for round in 1..=2 {
        phase(&format!(
            "mid-flood, round {round}: client 2 (udhcpc) gets a lease within 3 s"
        ));
        let t = Instant::now();
        let out = udhcpc(&lab, 2, &["-t", "5", "-T", "1"], Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("running udhcpc in client 2: {e:#}"));
        let took = t.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stage = Stage::of(&stderr);
        let lease = out
            .status
            .success()
            .then(|| DhcpLease::parse(&String::from_utf8_lossy(&out.stdout)).ok())
            .flatten();
        let Some(lease) = lease.filter(|_| took <= LEASE_WITHIN) else {
            panic!(
                "client 2 got no lease within {LEASE_WITHIN:?} mid-flood (took {took:?}): {stage}\n\
                 leader {leader}: {}\n{}",
                leader_dhcp_story(&lab, leader),
                describe_output(&out)
            );
        };
        println!("client 2: {} in {took:?} ({stage})", lease.ip);
        assert!(in_pool(lease.ip), "{lease:?}");

        phase(&format!(
            "mid-flood, round {round}: client 3 renews its lease (SIGUSR1)"
        ));
        let renews = |log: &Path| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("lease.event=renew")
                .count()
        };
        let before = renews(&renew_log);
        assert!(
            renewer.signal(libc::SIGUSR1).expect("signal udhcpc"),
            "udhcpc exited"
        );
        assert!(
            wait_until(Duration::from_secs(10), || renews(&renew_log) > before),
            "client 3 did not renew during the flood:\n{}",
            std::fs::read_to_string(&renew_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(
        started.elapsed() < Duration::from_secs(FLOOD_SECS),
        "the checks ran after the flood had ended"
    );

    phase("the flood ends; what it achieved");
    let mut own_sent = 0.0;
    let mut discover_rate = 0.0;
    for (p, log) in &floods {
        assert!(
            p.wait_timeout(Duration::from_secs(FLOOD_SECS + 30))
                .is_some(),
            "a flooder did not stop"
        );
        let (sent, rate) = flood_result(log);
        println!("{}: sent {sent} frames, {rate:.0}/s", log.display());
        let name = log.to_string_lossy();
        if name.contains("-own") {
            own_sent += sent;
        }
        if name.contains("discover") {
            discover_rate += rate;
        }
    }
    assert!(
        discover_rate >= 5_000.0,
        "only {discover_rate:.0} DISCOVERs/s were sent"
    );

    phase("after: no leader change, the leader unchanged, XDP counted the flood");
    let changes = leader_changes(&lab) - changes_before;
    assert!(
        changes.abs() < 0.5,
        "tandem_raft_leader_changes_total moved by {changes} during the flood"
    );
    assert_eq!(agreed_leader(&lab, &[1, 2, 3]), Some(leader));
    // XDP counters are exported once a second.
    let limited = wait_counter(|| xdp("ratelimited") - limited_before, own_sent * 0.5);
    println!(
        "XDP ratelimited {limited} of {own_sent} frames from client 1's own MAC; passed {}; leader: {}",
        xdp("pass"),
        leader_dhcp_story(&lab, leader),
    );
    renewer.kill_and_wait();
}

/// Where a udhcpc run got to, from its own log lines (`broadcasting
/// discover`, `broadcasting select for IP`, `received DHCP NAK`, `lease of
/// IP obtained`):
/// a failure names the stage the client was stuck in.
#[derive(Debug, Default)]
struct Stage {
    discovers: usize,
    /// One per OFFER the client took (udhcpc selects the first OFFER for its xid).
    selects: usize,
    naks: usize,
    bound: bool,
}

impl Stage {
    fn of(log: &str) -> Stage {
        let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        Stage {
            discovers: count("discover"),
            selects: count("select for"),
            naks: count("NAK"),
            bound: count("obtained") > 0,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Stage {
            discovers,
            selects,
            naks,
            bound,
        } = self;
        let at = if *bound {
            "bound"
        } else if *selects == 0 {
            "stuck in SELECTING: no OFFER answered its DISCOVERs"
        } else if *naks > 0 {
            "NAKed in REQUESTING"
        } else {
            "stuck in REQUESTING: an OFFER came, its REQUESTs got neither ACK nor NAK"
        };
        write!(
            f,
            "{at} ({discovers} DISCOVERs, {selects} REQUESTs, {naks} NAKs)"
        )
    }
}

/// What the leader's DHCP side and its kernel say about the flood: sheds per
/// reason, packets in by type, UDP receive-queue overflows in its namespace.
fn leader_dhcp_story(lab: &Lab, leader: usize) -> String {
    let text = scrape(lab, leader).unwrap_or_default();
    let get = |name: &str, labels: &[(&str, &str)]| sum(&text, name, labels).unwrap_or(0.0);
    let snmp = lab
        .exec_in(
            &lab.node_ns(leader),
            "cat",
            &["/proc/net/snmp"],
            Duration::from_secs(5),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let link = |ns: &str| {
        lab.exec_in(
            ns,
            "ip",
            &["-s", "link", "show", lab::INTERFACE],
            Duration::from_secs(5),
        )
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
    };
    let mac2 = lab.client_mac(2);
    let c2: Vec<String> = tandem_tests::cluster::leases(lab, leader)
        .iter()
        .filter(|(_, l)| tandem_tests::cluster::lease_mac(l) == mac2)
        .map(|(ip, _)| ip.to_string())
        .collect();
    format!(
        "client 2's leases on the leader: {c2:?}\nleader link: {}\nclient 2 link: {}\n{}",
        link(&lab.node_ns(leader)),
        link(&lab.client_ns(2)),
        format_counts(get, &udp),
    )
}

fn format_counts(get: impl Fn(&str, &[(&str, &str)]) -> f64, udp: &[&str]) -> String {
    format!(
        "shed queue_full={} unsolicited_request={} broadcast={}; in discover={} request={}; out offer={} ack={} nak={}; xdp pass={} ratelimited={}; {}",
        get("tandem_dhcp_shed_total", &[("reason", "queue_full")]),
        get("tandem_dhcp_shed_total", &[("reason", "unsolicited_request")]),
        get("tandem_dhcp_shed_total", &[("reason", "broadcast")]),
        get("tandem_dhcp_packets_total", &[("type", "discover"), ("direction", "in")]),
        get("tandem_dhcp_packets_total", &[("type", "request"), ("direction", "in")]),
        get("tandem_dhcp_packets_total", &[("type", "offer"), ("direction", "out")]),
        get("tandem_dhcp_packets_total", &[("type", "ack"), ("direction", "out")]),
        get("tandem_dhcp_packets_total", &[("type", "nak"), ("direction", "out")]),
        get("tandem_xdp_packets_total", &[("proto", "dhcp"), ("verdict", "pass")]),
        get("tandem_xdp_packets_total", &[("proto", "dhcp"), ("verdict", "ratelimited")]),
        udp.join(" / "),
    )
}

/// Polls `value` for up to 3 s until it reaches `want`; returns the last value.
fn wait_counter(mut value: impl FnMut() -> f64, want: f64) -> f64 {
    let mut last = value();
    let ok = wait_until(Duration::from_secs(3), || {
        last = value();
        last >= want
    });
    assert!(
        ok,
        "XDP counted {last} frames as ratelimited, want at least {want}"
    );
    last
}
