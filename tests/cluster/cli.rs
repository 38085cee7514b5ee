//! The admin CLI against a real three-node cluster (DESIGN.md section 4):
//! `lease show|release` on a real udhcpc lease, `reservation add|remove|list`
//! round-tripping through `export` and `apply`, concurrent adds all kept,
//! `--json` output that parses for every command (errors as
//! `{"error", "hint"}`), each exit code (0, 1, 2, 3), and `--nodes` finding
//! the leader when the first node named is dead, with `--timeout` bounding
//! a call that finds no leader.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_tests::clients::udhcpc_lease;
use tandem_tests::cluster::{api_addr, wait_agreed_leader, AGREE_TIMEOUT};
use tandem_tests::{describe_output, phase, tandem_bin, wait_until, Lab};

use super::{others, serving_cluster, DHCP_TIMEOUT, REPLICATION_TIMEOUT};

/// `tandem --json ARGS` on node `i`: its exit code and its stdout as JSON,
/// which must parse whatever the exit code (failures are JSON too).
fn tj(lab: &Lab, i: usize, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = lab
        .tandem(i, &full)
        .unwrap_or_else(|e| panic!("tandem {args:?} on node {i}: {e:#}"));
    parsed(&out, args)
}

fn parsed(out: &Output, args: &[&str]) -> (i32, Value) {
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tandem --json {args:?}: stdout is not JSON ({e}): {}",
            describe_output(out)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// `tandem --json ARGS` that must succeed; its JSON.
fn ok(lab: &Lab, i: usize, args: &[&str]) -> Value {
    let (code, v) = tj(lab, i, args);
    assert_eq!(code, 0, "tandem --json {args:?} on node {i}: {v}");
    v
}

/// A failure's JSON must be exactly `{"error": string, "hint": string|null}`.
fn assert_error_shape(v: &Value) {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(o.len(), 2, "{v}");
    assert!(o["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert!(o["hint"].is_string() || o["hint"].is_null(), "{v}");
}

/// `tandem --json --nodes NODES ARGS` in node `from`'s namespace with its
/// config (for the CA and token); its exit code, JSON and how long it took.
fn via_nodes(lab: &Lab, from: usize, nodes: &[String], args: &[&str]) -> (i32, Value, Duration) {
    let cfg = lab.node_config_path(from);
    let joined = nodes.join(",");
    let mut full = vec![
        "--json",
        "--config",
        cfg.to_str().expect("UTF-8"),
        "--nodes",
        &joined,
    ];
    full.extend_from_slice(args);
    let t = Instant::now();
    let out = lab
        .exec_in(
            &lab.node_ns(from),
            tandem_bin(),
            &full,
            Duration::from_secs(90),
        )
        .unwrap_or_else(|e| panic!("tandem {full:?}: {e:#}"));
    let took = t.elapsed();
    println!("tandem --nodes {joined} {args:?}: {took:?}");
    let (code, v) = parsed(&out, args);
    (code, v, took)
}

fn macs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| r["mac"].as_str().expect("mac").to_owned())
        .collect()
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one story: a lease, then reservations, then every command's --json"
)]
fn leases_reservations_json_and_exit_codes() {
    let (lab, leader) = serving_cluster(1);
    let follower = others(&[leader])[0];

    phase("status --json on every node: exit 0, one leader");
    for i in 1..=3 {
        let s = ok(&lab, i, &["status"]);
        assert_eq!(s["leader"].as_u64(), Some(leader as u64), "{s}");
    }

    phase("a real udhcpc lease; lease show by IP and by MAC on every node");
    let got = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("a lease");
    let ip = got.lease.ip.to_string();
    let mac = lab.client_mac(1).to_ascii_lowercase();
    for i in 1..=3 {
        let mut last = Value::Null;
        let shown = wait_until(REPLICATION_TIMEOUT, || {
            last = tj(&lab, i, &["lease", "show", &ip]).1;
            last["status"] == "bound"
        });
        assert!(shown, "node {i}: lease show {ip}: {last}");
        assert_eq!(
            last["mac"].as_str().map(str::to_ascii_lowercase),
            Some(mac.clone()),
            "{last}"
        );
        assert!(
            last["expires_in"].as_u64().is_some_and(|s| s > 500),
            "{last}"
        );
        let by_mac = ok(&lab, i, &["lease", "show", &mac]);
        assert_eq!(by_mac["ip"], ip.as_str(), "{by_mac}");
    }
    let leases = ok(&lab, follower, &["lease", "list"]);
    assert!(
        leases.as_array().is_some_and(|l| l
            .iter()
            .any(|x| x["ip"] == ip.as_str() && x["status"] == "bound")),
        "{leases}"
    );

    phase(&format!(
        "lease release {ip} on follower {follower}: redirected to the leader"
    ));
    let released = ok(&lab, follower, &["lease", "release", &ip]);
    assert_eq!(released["status"], "expired", "{released}");
    assert_eq!(released["expires_in"], 0, "{released}");
    for i in 1..=3 {
        let mut last = Value::Null;
        let freed = wait_until(REPLICATION_TIMEOUT, || {
            last = tj(&lab, i, &["lease", "show", &ip]).1;
            last["status"] == "expired"
        });
        assert!(freed, "node {i} still shows the released lease: {last}");
    }
    let text = lab
        .tandem(leader, &["lease", "show", &ip])
        .expect("lease show");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("state      expired"), "{text}");

    phase("exit 1: an unknown lease, shown and released, is a 404 with a hint");
    for args in [
        &["lease", "show", "10.99.1.250"][..],
        &["lease", "release", "10.99.1.250"],
    ] {
        let (code, v) = tj(&lab, follower, args);
        assert_eq!(code, 1, "{args:?}: {v}");
        assert_error_shape(&v);
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("no lease for 10.99.1.250"),
            "{v}"
        );
        assert!(v["hint"].is_string(), "{v}");
    }

    phase("reservation add on a follower (written through the leader)");
    let first = ok(
        &lab,
        follower,
        &[
            "reservation",
            "add",
            "52:54:00:aa:00:01",
            "10.99.2.1",
            "--hostname",
            "r1",
            "--profile",
            "pxe",
        ],
    );
    assert_eq!(first["ip"], "10.99.2.1", "{first}");
    assert_eq!(first["hostname"], "r1", "{first}");

    phase("eight concurrent adds from all three nodes: every one is kept");
    let adds: Vec<(String, String)> = (0..8)
        .map(|k| {
            (
                format!("52:54:00:bb:00:{k:02x}"),
                format!("10.99.2.{}", 10 + k),
            )
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = adds
            .iter()
            .enumerate()
            .map(|(k, (m, a))| {
                let lab = &lab;
                s.spawn(move || tj(lab, 1 + k % 3, &["reservation", "add", m, a]))
            })
            .collect();
        for (h, (m, _)) in handles.into_iter().zip(&adds) {
            let (code, v) = h.join().expect("an add thread");
            assert_eq!(code, 0, "add {m}: {v}");
        }
    });
    let mut want: Vec<String> = adds.iter().map(|(m, _)| m.clone()).collect();
    want.push("52:54:00:aa:00:01".into());
    want.sort();
    for i in 1..=3 {
        let mut have = Vec::new();
        let all = wait_until(REPLICATION_TIMEOUT, || {
            have = macs(&ok(&lab, i, &["reservation", "list"]));
            have.sort();
            have == want
        });
        assert!(all, "node {i}: reservations {have:?}, want {want:?}");
    }

    phase("export shows them; apply of the export round-trips");
    let exported = lab.tandem(follower, &["export"]).expect("export");
    assert!(exported.status.success(), "{}", describe_output(&exported));
    let toml = String::from_utf8_lossy(&exported.stdout).into_owned();
    for m in &want {
        assert!(toml.contains(m.as_str()), "export lacks {m}:\n{toml}");
    }
    let as_json = ok(&lab, follower, &["export"]);
    assert_eq!(
        as_json["reservation"].as_array().map(Vec::len),
        Some(want.len()),
        "{as_json}"
    );
    let path = lab.node_dir(leader).join("exported.toml");
    std::fs::write(&path, &toml).expect("writing the export");
    let applied = ok(&lab, leader, &["apply", path.to_str().expect("UTF-8")]);
    assert_eq!(
        applied["reservations"].as_u64(),
        Some(want.len() as u64),
        "{applied}"
    );
    let again = lab.tandem(leader, &["export"]).expect("export");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        toml,
        "export after apply differs"
    );

    phase("exit 1: bad reservations name the field and the fix");
    for (args, field, fix) in [
        (
            &["reservation", "add", "52:54:00:cc:00:01", "192.168.5.5"][..],
            "`ip`",
            "10.99.0.0/16",
        ),
        (
            &["reservation", "add", "52:54:00:cc:00:01", "10.99.2.1"],
            "`ip`",
            "52:54:00:aa:00:01",
        ),
        (
            &["reservation", "add", "52:54:00:aa:00:01", "10.99.2.99"],
            "`mac`",
            "reservation remove",
        ),
        (
            &[
                "reservation",
                "add",
                "52:54:00:cc:00:01",
                "10.99.2.99",
                "--profile",
                "nope",
            ],
            "`profile`",
            "pxe",
        ),
    ] {
        let (code, v) = tj(&lab, follower, args);
        assert_eq!(code, 1, "{args:?}: {v}");
        assert_error_shape(&v);
        assert!(
            v["error"].as_str().unwrap().contains(field),
            "{args:?}: {v}"
        );
        assert!(
            v["hint"].as_str().is_some_and(|h| h.contains(fix)),
            "{args:?}: {v}"
        );
    }

    phase("reservation remove; export no longer has it; a second remove is exit 1");
    let gone = ok(
        &lab,
        follower,
        &["reservation", "remove", "52:54:00:aa:00:01"],
    );
    assert_eq!(gone["ip"], "10.99.2.1", "{gone}");
    let toml = String::from_utf8_lossy(&lab.tandem(leader, &["export"]).expect("export").stdout)
        .into_owned();
    assert!(!toml.contains("52:54:00:aa:00:01"), "{toml}");
    let (code, v) = tj(
        &lab,
        leader,
        &["reservation", "remove", "52:54:00:aa:00:01"],
    );
    assert_eq!(code, 1, "{v}");
    assert_error_shape(&v);

    phase("exit 2: usage errors, as JSON with --json, against the cluster");
    for args in [
        &["lease", "show", "not-a-mac"][..],
        &["frobnicate"],
        &["reservation", "add", "52:54:00:cc:00:02"],
        &["reservation", "add", "52:54:00:cc:00:02", "10.99.2.300"],
        &["cluster", "token", "--ttl", "forever"],
    ] {
        let (code, v) = tj(&lab, follower, args);
        assert_eq!(code, 2, "{args:?}: {v}");
        assert_error_shape(&v);
    }

    phase("--json for every other command parses");
    let fixture = lab.root().join("cli-fixture.bin");
    std::fs::write(&fixture, b"tandem cli fixture\n").expect("fixture");
    let put = ok(
        &lab,
        follower,
        &[
            "artifact",
            "put",
            fixture.to_str().expect("UTF-8"),
            "--name",
            "cli.bin",
        ],
    );
    assert_eq!(put["name"], "cli.bin", "{put}");
    let listed = ok(&lab, follower, &["artifact", "list"]);
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "cli.bin")),
        "{listed}"
    );
    let rm = ok(&lab, follower, &["artifact", "rm", "cli.bin"]);
    assert!(rm["message"].is_string(), "{rm}");
    let token = ok(&lab, follower, &["cluster", "token", "--ttl", "5m"]);
    assert!(
        token["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("tdm1.")),
        "{token}"
    );
    let script = ok(&lab, follower, &["completions", "bash"]);
    assert!(
        script["script"]
            .as_str()
            .is_some_and(|s| s.contains("_tandem")),
        "{script}"
    );
    let page = ok(&lab, follower, &["man"]);
    assert_eq!(page["format"], "roff", "{page}");
    let reserved = ok(&lab, leader, &["reservation", "list"]);
    assert_eq!(
        reserved.as_array().map(Vec::len),
        Some(want.len() - 1),
        "{reserved}"
    );
    let h = ok(
        &lab,
        follower,
        &["cluster", "handover", &follower.to_string()],
    );
    assert!(
        h["message"]
            .as_str()
            .is_some_and(|m| m.contains(&follower.to_string())),
        "{h}"
    );
    assert_eq!(
        wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT),
        follower
    );
}

#[test]
fn nodes_finds_the_leader_past_dead_nodes_and_timeout_exits_3() {
    let (lab, leader) = serving_cluster(0);
    let rest = others(&[leader]);
    let (a, b) = (rest[0], rest[1]);
    // The dead node first, as an operator's list may have it.
    let nodes: Vec<String> = [leader, a, b].iter().map(|&i| api_addr(&lab, i)).collect();

    phase(&format!(
        "SIGKILL the leader, node {leader}, the first node named"
    ));
    lab.kill_node(leader, libc::SIGKILL)
        .expect("killing the leader");

    phase("--nodes dead,alive,alive: a write finds the new leader (riding the election)");
    let (code, v, took) = via_nodes(
        &lab,
        a,
        &nodes,
        &[
            "--backoff-cap",
            "500ms",
            "reservation",
            "add",
            "52:54:00:dd:00:01",
            "10.99.2.50",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ip"], "10.99.2.50", "{v}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    phase("--nodes dead,alive,alive: reads answer from the first live node");
    let (code, v, _) = via_nodes(&lab, a, &nodes, &["status"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["node_id"].as_u64(), Some(a as u64), "{v}");
    let (code, v, _) = via_nodes(&lab, b, &nodes, &["reservation", "list"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(macs(&v), ["52:54:00:dd:00:01"], "{v}");

    phase(&format!(
        "SIGKILL node {a} too: node {b} alone has no quorum; a write exits 3 within --timeout"
    ));
    lab.kill_node(a, libc::SIGKILL)
        .expect("killing a second node");
    let (code, v, took) = via_nodes(
        &lab,
        b,
        &nodes,
        &[
            "--timeout",
            "3s",
            "--backoff-cap",
            "500ms",
            "reservation",
            "add",
            "52:54:00:dd:00:02",
            "10.99.2.51",
        ],
    );
    assert_eq!(code, 3, "{v}");
    assert_error_shape(&v);
    assert!(v["hint"].is_string(), "{v}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(5),
        "--timeout 3s: took {took:?}"
    );

    phase(&format!(
        "SIGKILL node {b}: every node dead; --timeout 2s exits 3 within the bound"
    ));
    lab.kill_node(b, libc::SIGKILL)
        .expect("killing the last node");
    let (code, v, took) = via_nodes(
        &lab,
        b,
        &nodes,
        &["--timeout", "2s", "--backoff-cap", "300ms", "status"],
    );
    assert_eq!(code, 3, "{v}");
    assert_error_shape(&v);
    assert!(
        v["error"].as_str().unwrap().contains("gave up after"),
        "{v}"
    );
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(4),
        "--timeout 2s: took {took:?}"
    );
    phase("without --nodes or --timeout, a dead node is one try: exit 3 at once");
    let t = Instant::now();
    let (code, v) = tj(&lab, b, &["status"]);
    assert_eq!(code, 3, "{v}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
