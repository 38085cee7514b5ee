//! The operator's deploy files (`deploy/`): the Prometheus alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and
//! every `tandem_*` name the rules and the Grafana dashboard use is one the
//! daemon exports. (That each dashboard query returns data from a real
//! Prometheus scraping a lab is the cluster test `prometheus`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy_dir().join("prometheus"))
        .output()
        .expect("promtool runs (package prometheus; cargo xtask test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every `tandem_…` word in `text`, with a histogram's `_bucket`, `_sum`
/// and `_count` suffix taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tandem_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if base.ends_with("_seconds") {
                    name = base;
                }
            }
        }
        out.insert(name.to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool(&["check", "rules", "tandem-alerts.yml"]);
    assert!(check.contains("SUCCESS"), "{check}");
    let test = promtool(&["test", "rules", "tandem-alerts.test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
}

#[test]
fn every_alert_has_a_unit_test_that_fires_it() {
    let rules = std::fs::read_to_string(deploy_dir().join("prometheus/tandem-alerts.yml")).unwrap();
    let tests =
        std::fs::read_to_string(deploy_dir().join("prometheus/tandem-alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for a in alerts {
        // A firing case is written as a block (`alertname: X` on its own line,
        // then exp_alerts with entries); the inline `{…, exp_alerts: []}` rows
        // are the healthy cases.
        assert!(
            tests.contains(&format!(
                "        alertname: {a}\n        exp_alerts:\n          - "
            )),
            "alert {a} has no promtool unit test in which it fires"
        );
    }
}

#[test]
fn rules_and_dashboard_use_only_exported_metric_names() {
    let exported: BTreeSet<&str> = tandem::metrics::Metrics::NAMES.iter().copied().collect();
    for file in ["prometheus/tandem-alerts.yml", "grafana/tandem.json"] {
        let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 8, "{file}: {used:?}");
        for name in &used {
            assert!(
                exported.contains(name.as_str()),
                "{file} uses {name}, which the daemon does not export"
            );
        }
    }
}

#[test]
fn dashboard_is_grafana_json_with_a_prometheus_query_per_panel() {
    let text = std::fs::read_to_string(deploy_dir().join("grafana/tandem.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| e.contains("tandem_")),
                "{t}"
            );
        }
    }
}
