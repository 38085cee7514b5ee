//! Quorum: two of three nodes still serve; a node left alone fences itself
//! (no service, no VIP), and a write against it fails with exit code 3,
//! "no quorum or no leader reachable" (DESIGN.md section 4). `GET
//! /v1/health`, open without a token, answers 200 while the node has its
//! quorum and 503 once it is alone.

use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_tests::clients::{udhcpc, udhcpc_lease};
use tandem_tests::cluster::{
    describe_statuses, reports_serving, vip_count, vip_holders, wait_agreed_leader, wait_leases_on,
    AGREE_TIMEOUT,
};
use tandem_tests::metrics::{scrape, sum};
use tandem_tests::{describe_output, lab, phase, status, wait_until, Lab, SERVICE_TOML};

use super::{in_pool, others, serving_cluster, DHCP_TIMEOUT, REPLICATION_TIMEOUT};

/// How long a leader that lost its quorum may keep serving (lease 50 ms).
const FENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /v1/health` on node `i` with no token, from its own namespace and
/// verified against its CA: the status code and the JSON body.
fn health(lab: &Lab, i: usize) -> (u16, Value) {
    let url = format!("{}/v1/health", lab.node_api(i));
    let ca = lab.node_ca_path(i);
    let args = [
        "-sS",
        "--cacert",
        ca.to_str().expect("UTF-8"),
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        &url,
    ];
    let out = lab
        .exec_ok(&lab.node_ns(i), "curl", &args, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("curl {url}: {e:#}"));
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{url}: {e}: {out}"));
    (
        code.parse().unwrap_or_else(|_| panic!("{url}: {out}")),
        body,
    )
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one story: two of three, then one of three"
)]
fn survivors_and_quorum_loss() {
    let (lab, leader) = serving_cluster(2);
    let followers = others(&[leader]);
    let (f1, f2) = (followers[0], followers[1]);

    phase("GET /v1/health, no token: 200 on the leader and on a follower");
    let (code, h) = health(&lab, leader);
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["node_id"].as_u64(), Some(leader as u64), "{h}");
    assert_eq!(h["role"], "leader", "{h}");
    assert_eq!(h["serving"], true, "{h}");
    assert_eq!(h["quorum"], true, "{h}");
    let (code, h) = health(&lab, f2);
    assert_eq!(
        (code, &h["role"], &h["quorum"]),
        (200, &"follower".into(), &true.into()),
        "{h}"
    );

    phase(&format!("SIGKILL follower {f1}: two of three remain"));
    lab.kill_node(f1, libc::SIGKILL)
        .expect("killing a follower");
    let pair = others(&[f1]);
    assert_eq!(
        wait_agreed_leader(&lab, &pair, AGREE_TIMEOUT),
        leader,
        "losing a follower must not move leadership"
    );
    assert!(
        reports_serving(&lab, leader, true),
        "{}",
        describe_statuses(&lab, &pair)
    );

    phase(&format!(
        "the leader reports node {f1} as dead in status and metrics"
    ));
    let dead = f1.to_string();
    let reported = wait_until(Duration::from_secs(5), || {
        let warned = status(&lab, leader).is_ok_and(|v| {
            v["warnings"].as_array().is_some_and(|ws| {
                ws.iter().any(|w| {
                    w.as_str()
                        .is_some_and(|w| w.starts_with(&format!("node {f1} has not answered")))
                })
            })
        });
        let silence = scrape(&lab, leader)
            .ok()
            .and_then(|t| sum(&t, "tandem_raft_peer_silence_seconds", &[("peer", &dead)]));
        warned && silence.is_some_and(|s| s >= 1.0)
    });
    assert!(
        reported,
        "node {f1} is down but the leader does not say so:\n{}\n{}",
        describe_statuses(&lab, &[leader]),
        scrape(&lab, leader).unwrap_or_default()
    );

    phase("the two survivors serve a new client, and both record the lease");
    let got = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("lease with one node down");
    assert!(in_pool(got.lease.ip), "{:?}", got.lease);
    assert_eq!(got.lease.server_id, Some(lab::VIP), "{:?}", got.lease);
    for i in &pair {
        wait_leases_on(
            &lab,
            *i,
            &[(got.lease.ip, lab.client_mac(1))],
            REPLICATION_TIMEOUT,
        );
    }

    phase(&format!(
        "SIGKILL follower {f2}: the leader, node {leader}, is alone"
    ));
    lab.kill_node(f2, libc::SIGKILL)
        .expect("killing the second follower");
    let killed_at = Instant::now();
    let fenced = wait_until(FENCE_TIMEOUT, || {
        reports_serving(&lab, leader, false) && vip_count(&lab, leader) == 0
    });
    assert!(
        fenced,
        "node {leader} still serves or holds the VIP {:?} after losing its quorum (VIP count {}):\n{}",
        killed_at.elapsed(),
        vip_count(&lab, leader),
        describe_statuses(&lab, &[leader])
    );
    println!(
        "node {leader} fenced itself {:?} after losing its quorum",
        killed_at.elapsed()
    );
    let v = status(&lab, leader).expect("the lone node answers its status");
    println!("the lone node's status: {v}");
    assert_eq!(v["serving"].as_bool(), Some(false), "{v}");
    assert_eq!(v["vip_held"].as_bool(), Some(false), "{v}");
    assert!(
        vip_holders(&lab).is_empty(),
        "nobody may hold the VIP: {:?}",
        vip_holders(&lab)
    );
    let (code, h) = health(&lab, leader);
    println!("the lone node's health: {code} {h}");
    assert_eq!((code, &h["quorum"]), (503, &false.into()), "{h}");
    assert!(
        h["problems"].as_array().is_some_and(|p| !p.is_empty()),
        "{h}"
    );

    phase("a client gets no lease from the lone node");
    let out =
        udhcpc(&lab, 2, &["-t", "3", "-T", "1"], Duration::from_secs(15)).expect("running udhcpc");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !stdout.contains("lease.ip="),
        "a node without quorum handed out a lease: {}",
        describe_output(&out)
    );

    phase("tandem apply against the lone node exits 3 (no quorum)");
    let path = lab.node_dir(leader).join("service.toml");
    std::fs::write(&path, SERVICE_TOML).expect("writing service.toml");
    let started = Instant::now();
    let out = lab
        .tandem(leader, &["apply", path.to_str().expect("UTF-8")])
        .unwrap_or_else(|e| panic!("tandem apply did not finish: {e:#}"));
    println!(
        "tandem apply took {:?}: {}",
        started.elapsed(),
        describe_output(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "tandem apply without quorum: {}",
        describe_output(&out)
    );
}
