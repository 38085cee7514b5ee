use std::io::Write as _;
use std::process::{Command, Stdio};

use super::*;

#[test]
fn cached_packet_counters_are_the_exported_ones() {
    super::dhcp_packet("inform", "in");
    super::dhcp_packet("inform", "in");
    let text = super::get().encode();
    assert!(
        text.lines()
            .any(|l| l == r#"tandem_dhcp_packets_total{type="inform",direction="in"} 2"#),
        "{text}"
    );
}

/// A registry of its own (not [`get()`], which other tests count into) with
/// one known series in every metric.
fn touched() -> Metrics {
    let m = Metrics::new();
    let peer = |p: &str| PeerLabel { peer: p.into() };
    m.raft_term.set(3);
    m.raft_is_leader.set(1);
    m.raft_last_log_index.set(42);
    m.raft_applied_index.set(41);
    m.raft_leader_changes.inc();
    m.raft_commit_seconds.observe(0.002);
    m.raft_peer_lag.get_or_create(&peer("2")).set(5);
    m.raft_peer_silence.get_or_create(&peer("2")).set(0.25);
    m.dhcp_packets
        .get_or_create(&TypeDir {
            r#type: "discover".into(),
            direction: "in".into(),
        })
        .inc();
    m.dhcp_leases
        .get_or_create(&SubnetState {
            subnet: "10.0.0.0/24".into(),
            state: "bound".into(),
        })
        .set(7);
    m.dhcp_decision_seconds.observe(0.000_02);
    m.dhcp_malformed.inc();
    m.dhcp_shed
        .get_or_create(&ReasonLabel {
            reason: "queue_full".into(),
        })
        .inc();
    m.tftp_transfers
        .get_or_create(&ResultLabel {
            result: "ok".into(),
        })
        .inc();
    m.tftp_bytes.inc_by(512);
    m.tftp_active.inc();
    m.tftp_active.inc();
    m.tftp_active.dec();
    m.tftp_denied.inc();
    m.http_requests
        .get_or_create(&CodeLabel { code: "200".into() })
        .inc();
    m.xdp_packets
        .get_or_create(&ProtoVerdict {
            proto: "dhcp".into(),
            verdict: "drop".into(),
        })
        .set(4);
    m.vip_held.set(1);
    m.vip_garp_sent.inc();
    m.vip_conflicts.inc();
    m.serving.set(1);
    m.transition_seconds
        .get_or_create(&DirectionLabel {
            direction: "up".into(),
        })
        .observe(0.5);
    m.responder_failures
        .get_or_create(&ResponderLabel {
            responder: "tftp".into(),
        })
        .inc();
    m.storage_errors.inc();
    m
}

#[test]
fn exposition_passes_promtool_and_keeps_names() {
    let m = touched();
    let text = m.encode();

    let mut names = Vec::new();
    m.each(|name, _| names.push(name));
    for name in &names {
        let kind = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
            .unwrap_or_else(|| panic!("{name} is not exported:\n{text}"));
        let want = if name.ends_with("_total") {
            "counter"
        } else if name.ends_with("_seconds") && *name != "tandem_raft_peer_silence_seconds" {
            "histogram"
        } else {
            "gauge"
        };
        assert_eq!(kind, want, "{name}");
    }
    // In declared order.
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(order, names);

    for line in [
        "# HELP tandem_raft_term Current Raft term.",
        "tandem_raft_term 3",
        "tandem_raft_leader_changes_total 1",
        r#"tandem_raft_peer_lag_entries{peer="2"} 5"#,
        r#"tandem_raft_peer_silence_seconds{peer="2"} 0.25"#,
        r#"tandem_dhcp_packets_total{type="discover",direction="in"} 1"#,
        r#"tandem_dhcp_leases{subnet="10.0.0.0/24",state="bound"} 7"#,
        r#"tandem_dhcp_decision_seconds_bucket{le="0.00001"} 0"#,
        r#"tandem_dhcp_decision_seconds_bucket{le="0.000025"} 1"#,
        r#"tandem_dhcp_decision_seconds_bucket{le="3.7252902984619145"} 1"#,
        r#"tandem_dhcp_decision_seconds_bucket{le="+Inf"} 1"#,
        "tandem_dhcp_decision_seconds_count 1",
        r#"tandem_raft_commit_seconds_bucket{le="0.00244140625"} 1"#,
        r#"tandem_raft_commit_seconds_bucket{le="0.0009765625"} 0"#,
        "tandem_tftp_bytes_total 512",
        "tandem_tftp_active 1",
        r#"tandem_tftp_transfers_total{result="ok"} 1"#,
        r#"tandem_http_requests_total{code="200"} 1"#,
        "# TYPE tandem_xdp_packets_total counter",
        r#"tandem_xdp_packets_total{proto="dhcp",verdict="drop"} 4"#,
        r#"tandem_transition_seconds_bucket{direction="up",le="0.5960464477539063"} 1"#,
        r#"tandem_transition_seconds_sum{direction="up"} 0.5"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    // 15 bounds and +Inf, as before.
    let buckets = text
        .lines()
        .filter(|l| l.starts_with("tandem_dhcp_decision_seconds_bucket{"))
        .count();
    assert_eq!(buckets, 16, "{text}");

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install the Debian package `prometheus` \
                 (`cargo xtask deps` does)"
            )
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\nstdout: {}\nstderr: {}\ninput:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn handles_read_back_what_is_exported() {
    let m = touched();
    assert_eq!(m.tftp_bytes.get(), 512);
    assert_eq!(m.tftp_active.get(), 1);
    assert_eq!(m.raft_last_log_index.get(), 42);
    let ok = m.tftp_transfers.get_or_create(&ResultLabel {
        result: "ok".into(),
    });
    ok.inc();
    assert_eq!(ok.get(), 2);
    assert_eq!(
        m.tftp_transfers
            .get_or_create(&ResultLabel {
                result: "timeout".into()
            })
            .get(),
        0
    );
    let drop = m.xdp_packets.get_or_create(&ProtoVerdict {
        proto: "dhcp".into(),
        verdict: "drop".into(),
    });
    drop.set(9);
    assert_eq!(drop.get(), 9);
    assert!(m
        .encode()
        .lines()
        .any(|l| l == r#"tandem_xdp_packets_total{proto="dhcp",verdict="drop"} 9"#));
}

#[test]
fn clear_removes_series_from_the_output() {
    let m = Metrics::new();
    let peer = |p: &str| PeerLabel { peer: p.into() };
    let gone = m.raft_peer_lag.get_or_create(&peer("2"));
    gone.set(5);
    m.raft_peer_lag.get_or_create(&peer("3")).set(6);
    m.raft_peer_silence.get_or_create(&peer("2")).set(1.5);
    let text = m.encode();
    assert!(
        text.contains(r#"tandem_raft_peer_lag_entries{peer="2"} 5"#),
        "{text}"
    );

    m.raft_peer_lag.clear();
    m.raft_peer_silence.clear();
    let text = m.encode();
    assert!(!text.contains("tandem_raft_peer_lag_entries"), "{text}");
    assert!(!text.contains("tandem_raft_peer_silence_seconds"), "{text}");

    // A handle from before the clear exports nothing; the peer still there
    // comes back alone, as the health task re-creates it.
    gone.set(7);
    m.raft_peer_lag.get_or_create(&peer("3")).set(8);
    let text = m.encode();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tandem_raft_peer_lag_entries"))
        .collect();
    assert_eq!(lines, [r#"tandem_raft_peer_lag_entries{peer="3"} 8"#]);
}

#[test]
fn upkeep_keeps_histogram_counts() {
    let m = Metrics::new();
    for _ in 0..3 {
        m.dhcp_decision_seconds.observe(0.001);
    }
    m.upkeep();
    m.dhcp_decision_seconds.observe(0.001);
    let text = m.encode();
    assert!(
        text.lines()
            .any(|l| l == "tandem_dhcp_decision_seconds_count 4"),
        "{text}"
    );
}
