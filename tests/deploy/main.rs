//! The operator's deploy files (`deploy/`): the Prometheus alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and
//! every `tandem_*` name the rules and the Grafana dashboard use is one the
//! daemon exports. (That each dashboard query returns data from a real
//! Prometheus scraping a lab is the cluster test `prometheus`.)
//!
//! The systemd unit (`deploy/systemd/tandem.service`) passes `systemd-analyze
//! verify` with its `ExecStart` pointed at the built binary, and declares
//! notify, the watchdog, the hardening and the journald settings the daemon
//! relies on. (That the daemon speaks the notify protocol, and runs with the
//! unit's capabilities only, is the node test `systemd`.)

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

/// `systemd-analyze verify` of `unit_text` saved as `tandem.service` in a
/// fresh directory: its exit status and everything it printed.
fn systemd_verify(unit_text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "tandem-unit-{}-{}",
        std::process::id(),
        unit_text.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("tandem.service");
    std::fs::write(&unit, unit_text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs (package systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The shipped unit with `ExecStart` pointed at the built binary (verify
/// checks that the command exists).
fn unit_with_built_binary() -> String {
    let text = std::fs::read_to_string(deploy_dir().join("systemd/tandem.service")).unwrap();
    let bin = tandem_tests::tandem_bin();
    assert!(text.contains("ExecStart=/usr/bin/tandem "), "{text}");
    text.replace(
        "ExecStart=/usr/bin/tandem ",
        &format!("ExecStart={} ", bin.display()),
    )
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    let unit = unit_with_built_binary();
    let (ok, text) = systemd_verify(&unit);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    // The check bites: verify only warns (exit 0) on an unknown key, and
    // fails on a missing binary.
    let (ok, text) = systemd_verify(&unit.replace("WatchdogSec=", "WatchDogSec="));
    assert!(ok && text.contains("Unknown key"), "{text}");
    let (ok, _) = systemd_verify(&unit.replace("ExecStart=/", "ExecStart=/nonexistent/"));
    assert!(!ok);
}

/// `Key=value` lines of a unit or config file (last one wins).
fn keys(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn unit_is_notify_with_a_watchdog_hardened_and_keeps_its_log() {
    let unit = keys(&std::fs::read_to_string(deploy_dir().join("systemd/tandem.service")).unwrap());
    for (k, v) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/tandem"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        // A failover's lines are never rate-limited away.
        ("LogRateLimitIntervalSec", "0"),
    ] {
        assert_eq!(unit.get(k).map(String::as_str), Some(v), "{k}");
    }
    let wd = unit.get("WatchdogSec").expect("WatchdogSec");
    let secs: u64 = wd
        .trim_end_matches('s')
        .parse()
        .expect("WatchdogSec in seconds");
    assert!((2..=30).contains(&secs), "WatchdogSec={wd}");
    // Capabilities instead of full root: nothing that amounts to root.
    let caps = unit.get("CapabilityBoundingSet").expect("a bounding set");
    for must in [
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_NET_BIND_SERVICE",
        "CAP_BPF",
    ] {
        assert!(caps.contains(must), "{caps}");
    }
    for never in [
        "CAP_SYS_ADMIN",
        "CAP_DAC_OVERRIDE",
        "CAP_SYS_PTRACE",
        "CAP_SYS_MODULE",
    ] {
        assert!(!caps.contains(never), "{caps}");
    }
    let journald = keys(
        &std::fs::read_to_string(deploy_dir().join("systemd/journald.conf.d/tandem.conf")).unwrap(),
    );
    assert_eq!(
        journald.get("Storage").map(String::as_str),
        Some("persistent")
    );
    assert!(journald.contains_key("SystemMaxUse"));
}
