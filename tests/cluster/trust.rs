//! Trust (DESIGN.md section 10, issue 8): nobody without credentials can
//! change the cluster, joining needs a valid one-time token that pins the
//! right CA, and a removed node's certificate is refused from then on.
//!
//! The stranger is client 1 on the service LAN, with a static address and
//! only what any machine there has: curl, openssl, bash, and the tandem
//! binary with no token. Refusals are read on both sides: the HTTP status
//! and JSON error the stranger gets, the `tandem_*_total` counters on the
//! node, and the cluster's config and membership afterwards.

use std::fmt::Write as _;
use std::path::Path;

use std::time::Duration;

use serde_json::Value;
use tandem_tests::cluster::{
    api_addr, describe_statuses, three_node_cluster, wait_agreed_leader, AGREE_TIMEOUT,
};
use tandem_tests::metrics::counter;
use tandem_tests::{describe_output, lab, phase, start_lab, status, wait_until, Lab};

use super::serving_cluster;

/// The stranger's static address on the service LAN.
const STRANGER_CIDR: &str = "10.99.2.66/16";
const REFUSED: &str = "tandem_raft_tls_refused_total";

/// `curl -k` (the stranger does not know the CA) from client 1: the status
/// code and the body.
fn curl(
    lab: &Lab,
    method: &str,
    url: &str,
    body: Option<&str>,
    bearer: Option<&str>,
) -> (u16, String) {
    let mut args: Vec<String> = ["-sk", "-o", "-", "-w", "\n%{http_code}", "-X", method]
        .map(String::from)
        .to_vec();
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data".into(),
            b.into(),
        ]);
    }
    if let Some(t) = bearer {
        args.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
    }
    args.push(url.into());
    let out = lab
        .exec_ok(&lab.client_ns(1), "curl", &args, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("curl {method} {url}: {e:#}"));
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (
        code.parse()
            .unwrap_or_else(|_| panic!("curl gave no status: {out:?}")),
        body.to_owned(),
    )
}

/// Runs `openssl s_client` to `addr` in `ns` (with `cert`/`key` if given),
/// reading until the server closes or 5 s pass. Returns (exit code, output).
fn s_client(
    lab: &Lab,
    ns: &str,
    addr: &str,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> (i32, String) {
    let mut cmd = format!(
        "timeout 5 openssl s_client -connect {addr} -tls1_3 -ign_eof -CAfile {}",
        ca.display()
    );
    if let Some((c, k)) = cert {
        let _ = write!(cmd, " -cert {} -key {}", c.display(), k.display());
    }
    cmd.push_str(" </dev/null 2>&1");
    let out = lab
        .exec_in(ns, "sh", &["-c", &cmd], Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("openssl s_client in {ns}: {e:#}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Member ids and the exported config as node `i` sees them.
fn snapshot_of(lab: &Lab, i: usize) -> (Vec<u64>, String) {
    let s = status(lab, i).unwrap_or_else(|e| panic!("status of node {i}: {e:#}"));
    let mut ids: Vec<u64> = s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    ids.sort_unstable();
    let out = lab.tandem(i, &["export"]).expect("tandem export");
    assert!(out.status.success(), "export: {}", describe_output(&out));
    (ids, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn strangers_on_the_service_lan_change_nothing() {
    let (lab, leader) = serving_cluster(1);
    lab.add_client_ip(1, STRANGER_CIDR)
        .expect("stranger's address");
    let before = snapshot_of(&lab, leader);
    assert_eq!(before.0, [1, 2, 3]);
    let base = format!("https://{}", api_addr(&lab, leader));
    stranger_writes(&lab, leader, &base);
    stranger_cli(&lab, leader, &base);
    stranger_raft(&lab, leader);

    phase("config and membership are unchanged on every node");
    for i in 1..=3 {
        assert_eq!(snapshot_of(&lab, i), before, "node {i}");
    }
    assert_eq!(
        wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT),
        leader,
        "leadership moved"
    );
}

/// Raw HTTPS writes (and a lease read) with no token, then a wrong one.
fn stranger_writes(lab: &Lab, leader: usize, base: &str) {
    let unauthorized_before = counter(lab, leader, "tandem_api_unauthorized_total", &[]);

    phase("the stranger writes to the API with no token, then a wrong one: 401 each");
    let evil_config = r#"{"subnets":[],"reservations":[],"profiles":[]}"#;
    let member = r#"{"id":66,"raft":"10.99.2.66:7480","api":"10.99.2.66:7481"}"#;
    let join = r#"{"addr":"10.99.2.66:7481","discard_local_state":true}"#;
    let reservation = r#"{"mac":"02:66:66:66:66:66","ip":"10.99.1.66"}"#;
    let writes: [(&str, &str, Option<&str>); 12] = [
        ("PUT", "/v1/config", Some(evil_config)),
        ("POST", "/v1/cluster/members", Some(member)),
        ("DELETE", "/v1/cluster/members/3", None),
        ("POST", "/v1/cluster/handover", Some("{}")),
        ("POST", "/v1/cluster/join", Some(join)),
        ("GET", "/v1/leases", None),
        ("GET", "/v1/leases/10.99.1.1", None),
        ("POST", "/v1/leases/10.99.1.1/release", None),
        ("GET", "/v1/reservations", None),
        ("POST", "/v1/reservations", Some(reservation)),
        ("DELETE", "/v1/reservations/02:66:66:66:66:66", None),
        ("GET", "/v1/events", None),
    ];
    for (method, path, body) in writes {
        for bearer in [None, Some("0123456789abcdef")] {
            let (code, text) = curl(lab, method, &format!("{base}{path}"), body, bearer);
            println!("{method} {path} (token {bearer:?}): {code} {text}");
            assert_eq!(code, 401, "{method} {path} with {bearer:?}: {text}");
            let e: Value =
                serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
            assert!(
                e["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("admin token")),
                "{text}"
            );
        }
    }
    let (code, _) = curl(lab, "GET", &format!("{base}/v1/status"), None, None);
    assert_eq!(code, 200, "status stays open");
    let (code, text) = curl(
        lab,
        "POST",
        &format!("{base}/v1/cluster/enroll"),
        Some(
            r#"{"id":66,"raft":"10.99.2.66:7480","api":"10.99.2.66:7481","secret":"00","csr_pem":""}"#,
        ),
        None,
    );
    assert_eq!(code, 403, "enrollment without a join token: {text}");
    let unauthorized = counter(lab, leader, "tandem_api_unauthorized_total", &[]);
    assert!(
        unauthorized >= unauthorized_before + 24.0,
        "counted {unauthorized_before} -> {unauthorized}"
    );
}

/// The tandem CLI from the service LAN: it knows the (public) CA, has no token.
fn stranger_cli(lab: &Lab, leader: usize, base: &str) {
    phase("the stranger runs the tandem CLI (it knows the public CA, has no token): refused");
    let evil_toml = lab.root().join("evil.toml");
    let evil = tandem_tests::SERVICE_TOML
        .replace("http://10.99.0.10/boot.ipxe", "http://10.99.2.66/evil.ipxe");
    assert_ne!(
        evil,
        tandem_tests::SERVICE_TOML,
        "the evil config must differ"
    );
    std::fs::write(&evil_toml, evil).expect("writing evil.toml");
    let ca = lab.node_ca_path(leader);
    let bin = tandem_tests::tandem_bin();
    for args in [
        vec!["apply", evil_toml.to_str().expect("utf-8")],
        vec!["cluster", "remove", "3"],
        vec!["cluster", "handover"],
    ] {
        let mut full = vec![
            "--api",
            base,
            "--config",
            "/nonexistent",
            "--ca",
            ca.to_str().expect("utf-8"),
        ];
        full.extend(args.iter().copied());
        let out = lab
            .exec_in(&lab.client_ns(1), &bin, &full, Duration::from_secs(30))
            .expect("running tandem in the client namespace");
        println!("tandem {args:?}: {}", describe_output(&out));
        assert_eq!(
            out.status.code(),
            Some(1),
            "tandem {args:?}: {}",
            describe_output(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("401"),
            "{}",
            describe_output(&out)
        );
    }
}

/// A TLS client without a certificate, then plain bytes, to the Raft port.
fn stranger_raft(lab: &Lab, leader: usize) {
    let ca = lab.node_ca_path(leader);
    phase("the stranger speaks to the Raft port: no further than the TLS handshake");
    let raft = lab.node_raft_addr(leader);
    let refused_before = counter(lab, leader, REFUSED, &[]);
    let (code, out) = s_client(lab, &lab.client_ns(1), &raft, &ca, None);
    println!("openssl s_client without a certificate: exit {code}\n{out}");
    assert!(out.to_lowercase().contains("alert"), "no TLS alert: {out}");
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf '\\x00\\x00\\x00\\x0f{{\"Vote\":null}}' >&3; timeout 3 cat <&3 | od -c | head -5",
        lab.node_ip(leader),
        lab::RAFT_PORT
    );
    let plain = lab
        .exec_in(
            &lab.client_ns(1),
            "bash",
            &["-c", &script],
            Duration::from_secs(10),
        )
        .expect("plain bytes to the Raft port");
    let answer = String::from_utf8_lossy(&plain.stdout);
    println!("plain JSON frame to the Raft port, answer: {answer:?}");
    assert!(
        !answer.contains('{'),
        "the Raft port answered in the clear: {answer}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || counter(
            lab,
            leader,
            REFUSED,
            &[]
        ) >= refused_before + 2.0),
        "refusals not counted: {refused_before} -> {}",
        counter(lab, leader, REFUSED, &[])
    );
}

/// `tandem cluster join <node 1> --token T` on node `i`.
fn join_with(lab: &Lab, i: usize, token: Option<&str>) -> std::process::Output {
    let addr = api_addr(lab, 1);
    let mut args = vec!["cluster", "join", addr.as_str()];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    lab.tandem(i, &args).expect("tandem cluster join")
}

fn assert_refused(out: &std::process::Output, why: &str) {
    let text = describe_output(out);
    println!("refused: {text}");
    assert!(!out.status.success(), "join went through: {text}");
    assert!(text.contains(why), "expected {why:?} in: {text}");
}

#[test]
fn join_needs_a_valid_unused_token_of_the_right_ca() {
    phase("lab up: three nodes, each its own cluster of one");
    let lab = start_lab(3, 0);
    for i in 1..=3 {
        assert!(
            wait_until(Duration::from_secs(20), || tandem_tests::is_leader(&lab, i)),
            "node {i} did not lead its cluster of one: {}",
            describe_statuses(&lab, &[i])
        );
    }

    phase("no token, a malformed one, a wrong secret: refused");
    assert_refused(&join_with(&lab, 2, None), "tandem cluster token");
    assert_refused(
        &join_with(&lab, 2, Some("tdm1.nonsense")),
        "malformed join token",
    );
    let good = lab.join_token(1).expect("a token from node 1");
    let (_, fp) = good.rsplit_once('.').expect("tdm1.secret.fp");
    let wrong_secret = format!("tdm1.{}.{fp}", "0".repeat(32));
    assert_refused(
        &join_with(&lab, 2, Some(&wrong_secret)),
        "unknown or was already used",
    );

    phase("a token of another cluster (node 3's CA) against node 1: CA fingerprint mismatch");
    let other = lab.join_token(3).expect("a token from node 3");
    let (_, other_fp) = other.rsplit_once('.').expect("tdm1.secret.fp");
    assert_ne!(other_fp, fp);
    let (secret, _) = good.rsplit_once('.').expect("tdm1.secret.fp");
    assert_refused(
        &join_with(&lab, 2, Some(&format!("{secret}.{other_fp}"))),
        "CA fingerprint mismatch",
    );

    phase("an expired token: refused");
    let out = lab
        .tandem(1, &["cluster", "token", "--ttl", "1s"])
        .expect("tandem cluster token");
    assert!(out.status.success(), "{}", describe_output(&out));
    let short = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::thread::sleep(Duration::from_millis(2_100));
    assert_refused(&join_with(&lab, 2, Some(&short)), "expired");

    phase("the good token joins node 2; used again for node 3, it is refused");
    let out = join_with(&lab, 2, Some(&good));
    assert!(
        out.status.success(),
        "join with a good token: {}",
        describe_output(&out)
    );
    let leader = wait_agreed_leader(&lab, &[1, 2], AGREE_TIMEOUT);
    println!("leader: node {leader}");
    assert_refused(
        &join_with(&lab, 3, Some(&good)),
        "unknown or was already used",
    );
    let s = status(&lab, 1).expect("status of node 1");
    let ids: Vec<u64> = s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 2, "members after the refusals: {s}");
    // Node 2 took the cluster's CA and admin token: its CLI works unchanged.
    assert_eq!(
        std::fs::read(lab.node_ca_path(2)).expect("node 2's CA"),
        std::fs::read(lab.node_ca_path(1)).expect("node 1's CA")
    );
    let out = lab
        .tandem(2, &["lease", "list", "--json"])
        .expect("lease list on node 2");
    assert!(
        out.status.success(),
        "node 2's CLI: {}",
        describe_output(&out)
    );
}

/// Node `i`'s certificate and key files.
fn node_cert(lab: &Lab, i: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let t = lab.node_data_dir(i).join("tls");
    (t.join("node.pem"), t.join("node.key"))
}

#[test]
fn a_removed_nodes_certificate_is_refused() {
    let lab = three_node_cluster(0);
    let mut leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    if leader == 3 {
        phase("node 3 leads: hand over to node 1 first (a leader cannot remove itself)");
        let out = lab
            .tandem(3, &["cluster", "handover", "1"])
            .expect("tandem cluster handover");
        assert!(out.status.success(), "{}", describe_output(&out));
        leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    }
    let other = if leader == 1 { 2 } else { 1 };
    // The test keeps a copy of node 3's certificate and key.
    let keep = lab.root().join("n3-tls");
    std::fs::create_dir_all(&keep).expect("mkdir");
    let (cert3, key3) = node_cert(&lab, 3);
    std::fs::copy(&cert3, keep.join("node.pem")).expect("copy node 3's certificate");
    std::fs::copy(&key3, keep.join("node.key")).expect("copy node 3's key");
    let (cert3, key3) = (keep.join("node.pem"), keep.join("node.key"));
    let ca = lab.node_ca_path(leader);

    phase("before the removal, node 3's certificate is accepted on the Raft port");
    let (code, out) = s_client(
        &lab,
        &lab.node_ns(3),
        &lab.node_raft_addr(leader),
        &ca,
        Some((&cert3, &key3)),
    );
    assert_eq!(
        code, 124,
        "a member's connection stays open until timeout ends s_client: {out}"
    );
    assert!(!out.to_lowercase().contains("alert"), "{out}");

    phase("tandem cluster remove 3");
    let out = lab
        .tandem(leader, &["cluster", "remove", "3"])
        .expect("tandem cluster remove");
    assert!(out.status.success(), "{}", describe_output(&out));
    let gone = |i: usize| {
        status(&lab, i).is_ok_and(|s| {
            s["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|x| x["id"] != 3))
        })
    };
    assert!(
        wait_until(AGREE_TIMEOUT, || gone(1) && gone(2)),
        "node 3 still listed: {}",
        describe_statuses(&lab, &[1, 2])
    );

    phase("node 3's certificate is refused as revoked by both remaining nodes");
    for peer in [leader, other] {
        let before = counter(&lab, peer, REFUSED, &[]);
        let (code, out) = s_client(
            &lab,
            &lab.node_ns(3),
            &lab.node_raft_addr(peer),
            &ca,
            Some((&cert3, &key3)),
        );
        println!("node 3's certificate to node {peer}: exit {code}\n{out}");
        assert!(
            out.to_lowercase().contains("revoked"),
            "node {peer} did not refuse it as revoked: {out}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || counter(&lab, peer, REFUSED, &[])
                > before),
            "refusal not counted on node {peer}"
        );
    }

    phase("stop node 3 (it may still knock on its old peers), then: a member's certificate is still accepted, and not counted");
    lab.kill_node(3, libc::SIGKILL).expect("killing node 3");
    std::thread::sleep(Duration::from_secs(1));
    let before = counter(&lab, leader, REFUSED, &[]);
    let (cert, key) = node_cert(&lab, other);
    let (code, out) = s_client(
        &lab,
        &lab.node_ns(other),
        &lab.node_raft_addr(leader),
        &ca,
        Some((&cert, &key)),
    );
    assert_eq!(
        code, 124,
        "node {other}'s certificate must still be accepted: {out}"
    );
    assert!(
        (counter(&lab, leader, REFUSED, &[]) - before).abs() < 0.5,
        "a member's connection was counted as refused"
    );

    phase("the two remaining nodes keep one leader");
    let leader = wait_agreed_leader(&lab, &[1, 2], AGREE_TIMEOUT);
    println!("leader: node {leader}");
}
