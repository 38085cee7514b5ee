//! A real Prometheus (Debian's `prometheus`) scrapes all three nodes of a
//! lab over HTTPS with the cluster CA, loads `deploy/prometheus/
//! tandem-alerts.yml`, and answers the queries an operator's dashboard and
//! alerts rely on:
//! - each node's `/metrics` passes `promtool check metrics`;
//! - `sum(tandem_raft_is_leader)` is 1, and `tandem_dhcp_leases` agrees
//!   with `tandem lease list`;
//! - every query of `deploy/grafana/tandem.json` returns data;
//! - after a failover, `tandem_raft_leader_changes_total` has risen and
//!   `tandem_transition_seconds` has samples on the new leader;
//! - with two of three nodes killed, `TandemNoLeader` fires.
//!
//! Prometheus runs in client namespace 1 and listens on that namespace's
//! loopback; the test queries it there with curl.

use std::time::Duration;

use serde_json::Value;
use tandem_tests::clients::udhcpc_lease;
use tandem_tests::cluster::wait_one_serving_among;
use tandem_tests::{lab, phase, wait_until, Lab};

use super::{others, serving_cluster, DHCP_TIMEOUT, FAILOVER_TIMEOUT};

const PROM: &str = "http://127.0.0.1:9090";
/// Scrapes and rule evaluations run every second, so every wait below is a
/// few intervals; the bound is generous for a loaded 2-core machine.
const PROM_WAIT: Duration = Duration::from_secs(30);

fn deploy_file(rel: &str) -> std::path::PathBuf {
    lab::workspace_root().join("deploy").join(rel)
}

/// Writes the scrape config and starts Prometheus in client namespace 1.
fn start_prometheus(lab: &Lab) {
    let dir = lab.root().join("prometheus");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let targets: Vec<String> = (1..=3)
        .map(|i| format!("'{}:{}'", lab.node_ip(i), lab::API_PORT))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: tandem\n    scheme: https\n    scrape_timeout: 900ms\n\
         \x20   tls_config:\n      ca_file: {ca}\n\
         \x20   static_configs:\n      - targets: [{targets}]\n",
        rules = deploy_file("prometheus/tandem-alerts.yml").display(),
        ca = lab.node_ca_path(1).display(),
        targets = targets.join(", "),
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(&path)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check config: {}",
        lab::describe_output(&out)
    );
    let args = [
        format!("--config.file={}", path.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        "--web.listen-address=127.0.0.1:9090".to_owned(),
        "--log.level=warn".to_owned(),
    ];
    lab.spawn_in(
        &lab.client_ns(1),
        "prometheus",
        &args,
        &dir.join("prometheus.log"),
    )
    .expect("starting prometheus");
}

/// An instant query; the `result` array of its data.
fn query(lab: &Lab, q: &str) -> Vec<Value> {
    let out = lab.exec_in(
        &lab.client_ns(1),
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("{PROM}/api/v1/query"),
            "--data-urlencode",
            &format!("query={q}"),
        ],
        Duration::from_secs(10),
    );
    let Ok(out) = out else { return Vec::new() };
    let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
        return Vec::new();
    };
    assert_ne!(v["status"], "error", "query {q:?} is refused: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The single value of a query that returns one sample (NaN if none).
fn scalar(lab: &Lab, q: &str) -> f64 {
    query(lab, q)
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Waits until `q` yields exactly `want`.
fn wait_value(lab: &Lab, q: &str, want: f64) {
    let mut last = f64::NAN;
    let ok = wait_until(PROM_WAIT, || {
        last = scalar(lab, q);
        (last - want).abs() < 1e-9
    });
    assert!(ok, "{q} is {last}, not {want}, after {PROM_WAIT:?}");
}

fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy_file("grafana/tandem.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// Each node's live `/metrics` passes `promtool check metrics`.
fn every_metrics_page_passes_promtool(lab: &Lab) {
    phase("each node's /metrics passes promtool check metrics");
    for i in 1..=3 {
        let text = lab
            .exec_ok(
                &lab.client_ns(1),
                "curl",
                &[
                    "-sS",
                    "--cacert",
                    lab.node_ca_path(1).to_str().unwrap(),
                    &format!("{}/metrics", lab.node_api(i)),
                ],
                Duration::from_secs(10),
            )
            .expect("GET /metrics");
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "node {i}: promtool check metrics: {}",
            lab::describe_output(&out)
        );
    }
}

#[test]
fn a_real_prometheus_scrapes_the_cluster_and_the_alerts_fire() {
    let (lab, leader) = serving_cluster(1);
    // Prometheus and curl need an address of their own on the LAN.
    lab.add_client_ip(1, &format!("10.99.4.1/{}", lab::PREFIX_LEN))
        .expect("client address");

    every_metrics_page_passes_promtool(&lab);

    phase("a client leases, and fetches a file over HTTP from the VIP (so every panel has data)");
    udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("client 1 lease");
    // Any answer counts (404 too): it moves tandem_http_requests_total.
    let _ = lab.exec_in(
        &lab.client_ns(1),
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            &format!("http://{}/nothing", lab::VIP),
        ],
        Duration::from_secs(10),
    );

    phase("Prometheus scrapes all three nodes");
    start_prometheus(&lab);
    wait_value(&lab, "sum(up{job=\"tandem\"})", 3.0);

    phase("one leader, and the lease gauge agrees with `tandem lease list`");
    wait_value(&lab, "sum(tandem_raft_is_leader)", 1.0);
    let listed = lab
        .tandem(leader, &["lease", "list", "--json"])
        .expect("lease list");
    let leases = tandem_tests::json(&listed).expect("lease list --json");
    let n = leases.as_array().map_or(0, Vec::len);
    assert!(n >= 1, "{leases}");
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    for i in 1..=3 {
        wait_value(
            &lab,
            &format!(
                "sum(tandem_dhcp_leases{{state=\"bound\",instance=\"{}:{}\"}})",
                lab.node_ip(i),
                lab::API_PORT
            ),
            n,
        );
    }

    phase("every dashboard query returns data");
    for (panel, q) in dashboard_queries() {
        let ok = wait_until(PROM_WAIT, || !query(&lab, &q).is_empty());
        assert!(ok, "panel {panel:?}: query {q} returns no data");
    }

    phase(&format!(
        "SIGKILL the leader (node {leader}); the new one shows in the metrics"
    ));
    let survivors = others(&[leader]);
    let changes_before: Vec<f64> = survivors
        .iter()
        .map(|&i| {
            scalar(
                &lab,
                &format!(
                    "tandem_raft_leader_changes_total{{instance=\"{}:{}\"}}",
                    lab.node_ip(i),
                    lab::API_PORT
                ),
            )
        })
        .collect();
    lab.kill_node(leader, libc::SIGKILL).expect("kill leader");
    let (new, _) = wait_one_serving_among(&lab, &survivors, FAILOVER_TIMEOUT);
    let inst = |i: usize| format!("{}:{}", lab.node_ip(i), lab::API_PORT);
    for (k, &i) in survivors.iter().enumerate() {
        let q = format!(
            "tandem_raft_leader_changes_total{{instance=\"{}\"}}",
            inst(i)
        );
        let mut now = f64::NAN;
        let risen = wait_until(PROM_WAIT, || {
            now = scalar(&lab, &q);
            now > changes_before[k]
        });
        assert!(
            risen,
            "node {i}: {q} stayed at {now} (was {})",
            changes_before[k]
        );
    }
    let q = format!(
        "sum(tandem_transition_seconds_count{{direction=\"up\",instance=\"{}\"}})",
        inst(new)
    );
    assert!(
        wait_until(PROM_WAIT, || scalar(&lab, &q) >= 1.0),
        "{q} has no samples on the new leader"
    );
    wait_value(&lab, "sum(tandem_raft_is_leader)", 1.0);

    phase("kill a second node: no quorum, and TandemNoLeader fires");
    lab.kill_node(new, libc::SIGKILL)
        .expect("kill the new leader");
    let firing = "ALERTS{alertname=\"TandemNoLeader\",alertstate=\"firing\"}";
    let ok = wait_until(PROM_WAIT, || !query(&lab, firing).is_empty());
    assert!(
        ok,
        "TandemNoLeader did not fire; pending: {:?}; is_leader: {:?}",
        query(&lab, "ALERTS"),
        query(&lab, "tandem_raft_is_leader")
    );
}
