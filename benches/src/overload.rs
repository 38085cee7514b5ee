//! `tandem-bench overload`: do Raft's heartbeats stay on time while the
//! leader is offered far more DHCP than it can commit? A 3-node cluster,
//! perfdhcp (a relay) offering N exchanges/s for S seconds, and the
//! leader's own view of its followers sampled every 100 ms meanwhile.
//!
//! ```text
//!   form cluster ─▶ snapshot counters ─▶ perfdhcp -r N for S s ──────────────▶ snapshot ─▶ figures
//!                                        └ every 100 ms: GET /v1/status on the leader
//!                                          (members[].silence_ms: time since each
//!                                           follower last acked a heartbeat)
//! ```
//!
//! Figures (no assertion: the hard invariant, no leader change under a
//! flood, is asserted by `tests/cluster/flood.rs`):
//! - `follower_silence_ms`: max and p99 over all samples of every
//!   follower's `silence_ms`. With a 15 ms heartbeat a healthy sample is
//!   0–15 ms plus a round trip; the leader lease is 50 ms, the election
//!   timeout 60–110 ms, so a max near those means heartbeats were late.
//! - `quorum_ack_ms`: per sample, the smallest follower silence (in a
//!   3-node cluster one follower's ack makes the quorum): how old the
//!   leader's quorum contact was, which is what its lease is counted from.
//! - `leader_changes`: the largest per-node delta of
//!   `tandem_raft_leader_changes_total` over the window.
//! - `exchanges_per_s`, `loss_percent`: what perfdhcp got done of what it
//!   offered, and `shed`: `tandem_dhcp_shed_total` of all nodes, by reason.
//!
//! The sampled node is the leader; should leadership move, the bench
//! follows the leader the old one names, and counts the change.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lab::{API_PORT, VIP};

use crate::servers::tandem_dhcp_service;
use crate::{cluster, interrupt, json_num, nsenter, perfdhcp, require_tools, Bench};

const NODES: [usize; 3] = [1, 2, 3];
/// How often the leader's status is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Timeout of one API request from the bench (the leader is loaded).
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// perfdhcp's client MACs: far more than the leader commits in the window,
/// so nearly every exchange is a new lease (a commit), as a flood is.
const CLIENTS: u32 = 500_000;

/// Knobs of the overload bench.
#[derive(Clone, Debug)]
pub struct OverloadOptions {
    /// DHCP exchanges/s perfdhcp offers.
    pub rate: u32,
    /// Length of the flood.
    pub duration: Duration,
}

impl Default for OverloadOptions {
    fn default() -> Self {
        OverloadOptions {
            rate: 20_000,
            duration: Duration::from_secs(30),
        }
    }
}

/// Node `i`'s `GET path`, over HTTPS verified against its cluster CA.
fn api_get(bench: &Bench, i: usize, path: &str) -> Result<String> {
    let addr = SocketAddrV4::new(bench.lab.node_ip(i), API_PORT);
    let ca = std::fs::read_to_string(bench.lab.node_ca_path(i))?;
    nsenter::https_get(&bench.lab.node_ns(i), addr, path, &ca, API_TIMEOUT)
}

/// The sum of every sample of `name` whose labels include `label` (or all
/// of them with `None`), in Prometheus text.
fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name) && label.is_none_or(|x| series.contains(x))
        })
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// One status sample: the leader the node names, and, if it leads itself,
/// each follower's silence in ms (`None` where it has never acked).
type Sample = (Option<u64>, Option<Vec<Option<u64>>>);

/// Node `i`'s [`Sample`], from `GET /v1/status`.
fn sample(bench: &Bench, i: usize) -> Option<Sample> {
    let text = api_get(bench, i, "/v1/status").ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let me = v["node_id"].as_u64()?;
    let silences = (v["role"] == "leader").then(|| {
        v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["id"].as_u64() != Some(me))
            .map(|m| m["silence_ms"].as_u64())
            .collect()
    });
    Some((v["leader"].as_u64(), silences))
}

/// The upper bound (`le`) of the first bucket of histogram `name` in
/// Prometheus text that holds the `q` quantile (0..=1) of its samples, and
/// the sample count; `None` without samples.
#[must_use]
pub fn hist_quantile(text: &str, name: &str, q: f64) -> Option<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (le, n) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| (*le, total))
}

/// The `q` quantile (0..=1) of `xs`, nearest rank; `None` if empty.
#[must_use]
pub fn quantile(xs: &[u64], q: f64) -> Option<u64> {
    let mut v = xs.to_vec();
    v.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within a short vector"
    )]
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied()
}

/// Runs the bench and returns the closing JSON object.
#[allow(
    clippy::too_many_lines,
    reason = "one story: form, flood and sample, report"
)]
pub fn run(opts: &OverloadOptions) -> Result<serde_json::Value> {
    require_tools(&["ip", "perfdhcp"])?;
    let bench = Bench::new(NODES.len())?;
    println!(
        "=== lab {}: 3 tandem nodes, perfdhcp in c1 at {}/s for {} s",
        bench.lab.prefix(),
        opts.rate,
        opts.duration.as_secs()
    );
    let leader = cluster::form(&bench, &NODES, &tandem_dhcp_service())?;
    println!("    leader: node {leader}");
    let changes = |i: usize| -> Result<f64> {
        let text = api_get(&bench, i, "/metrics")?;
        Ok(metric_sum(&text, "tandem_raft_leader_changes_total", None))
    };
    let before: Vec<f64> = NODES.iter().map(|&i| changes(i)).collect::<Result<_>>()?;

    let log = bench.lab.root().join("perfdhcp-overload.log");
    let (rate, period) = (opts.rate, opts.duration);
    let vip = VIP.to_string();
    let flood = std::thread::scope(|s| -> Result<_> {
        let perf = s.spawn(|| perfdhcp::run(&bench, rate, CLIENTS, period, &vip, &log));
        let start = Instant::now();
        let mut per_follower: Vec<u64> = Vec::new();
        let mut quorum: Vec<u64> = Vec::new();
        let (mut failed, mut never_acked) = (0usize, 0usize);
        let mut leaders = std::collections::BTreeSet::new();
        // The node sampled: the leader, or whoever it names once it is not.
        let mut cur = leader;
        let mut next = start;
        while start.elapsed() < period {
            interrupt::check()?;
            match sample(&bench, cur) {
                Some((named, silences)) => {
                    leaders.extend(named);
                    if let Some(silences) = silences {
                        never_acked += silences.iter().filter(|s| s.is_none()).count();
                        let acked: Vec<u64> = silences.into_iter().flatten().collect();
                        per_follower.extend(&acked);
                        quorum.extend(acked.iter().min());
                    } else if let Some(l) = named.and_then(|l| usize::try_from(l).ok()) {
                        cur = l;
                    }
                }
                None => failed += 1,
            }
            next += SAMPLE_EVERY;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let report = perf
            .join()
            .map_err(|_| anyhow::anyhow!("the perfdhcp thread panicked"))??;
        Ok((report, per_follower, quorum, failed, never_acked, leaders))
    })?;
    let (report, per_follower, quorum, failed, never_acked, leaders) = flood;
    let after: Vec<f64> = NODES.iter().map(|&i| changes(i)).collect::<Result<_>>()?;
    // Counters of every node: the shed ones count on whoever led.
    let per_node = NODES
        .iter()
        .map(|&i| api_get(&bench, i, "/metrics"))
        .collect::<Result<Vec<_>>>()
        .context("the nodes' metrics")?;
    let metrics = per_node.join("\n");
    let shed = |reason: &str| {
        metric_sum(
            &metrics,
            "tandem_dhcp_shed_total",
            Some(&format!("reason=\"{reason}\"")),
        )
    };
    for (&i, text) in NODES.iter().zip(&per_node) {
        for name in [
            "tandem_raft_runtime_delay_seconds",
            "tandem_raft_append_seconds",
        ] {
            let q = |q| hist_quantile(text, name, q).map(|(le, _)| le * 1e3);
            let n = hist_quantile(text, name, 1.0).map_or(0.0, |(_, n)| n);
            println!(
                "    node {i} {name}: p50 <= {:?} ms, p99 <= {:?} ms, max <= {:?} ms ({n} samples)",
                q(0.5),
                q(0.99),
                q(1.0)
            );
        }
    }
    let shed_json = serde_json::json!({
        "queue_full": shed("queue_full"),
        "unsolicited_request": shed("unsolicited_request"),
        "broadcast": shed("broadcast"),
    });
    drop(bench);
    ensure!(
        !quorum.is_empty(),
        "no status sample of the leader succeeded"
    );

    let leader_changes = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b).max(0.0))
        .fold(0.0, f64::max);
    let max_f = per_follower.iter().copied().max();
    let p99_f = quantile(&per_follower, 0.99);
    let max_q = quorum.iter().copied().max();
    let p99_q = quantile(&quorum, 0.99);
    let secs = period.as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "exchange counts far below 2^52")]
    let done = report.completed() as f64 / secs;

    println!();
    println!(
        "Heartbeats under DHCP overload: perfdhcp offering {rate}/s for {secs:.0} s, leader's status sampled every {} ms",
        SAMPLE_EVERY.as_millis()
    );
    println!(
        "    follower silence (time since a follower last acked): max {max_f:?} ms, p99 {p99_f:?} ms over {} samples",
        per_follower.len()
    );
    println!(
        "    quorum ack age: max {max_q:?} ms, p99 {p99_q:?} ms over {} samples ({failed} samples failed, {never_acked} never-acked)",
        quorum.len()
    );
    println!("    leader changes (max per-node delta): {leader_changes}; leaders named in the samples: {leaders:?}");
    println!(
        "    DHCP: {done:.0} exchanges/s completed of {rate}/s offered; loss {:.1} %; shed {shed_json}",
        report.loss() * 100.0
    );
    println!();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a small non-negative counter delta"
    )]
    Ok(serde_json::json!({
        "bench": "overload",
        "offered_per_s": rate,
        "secs": json_num(Some(secs), 0),
        "sample_ms": SAMPLE_EVERY.as_millis(),
        "samples": quorum.len(),
        "samples_failed": failed,
        "follower_silence_ms": { "max": max_f, "p99": p99_f },
        "quorum_ack_ms": { "max": max_q, "p99": p99_q },
        "leader_changes": leader_changes as u64,
        "exchanges_per_s": json_num(Some(done), 0),
        "loss_percent": json_num(Some(report.loss() * 100.0), 1),
        "shed": shed_json,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let xs: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&xs, 0.99), Some(99));
        assert_eq!(quantile(&xs, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.99), None);
    }

    #[test]
    fn sums_labelled_series() {
        let text = "# TYPE tandem_dhcp_shed_total counter\n\
                    tandem_dhcp_shed_total{reason=\"queue_full\"} 5\n\
                    tandem_dhcp_shed_total{reason=\"broadcast\"} 7\n\
                    tandem_raft_leader_changes_total 2\n";
        let shed = "tandem_dhcp_shed_total";
        assert!((metric_sum(text, shed, Some("reason=\"broadcast\"")) - 7.0).abs() < 1e-9);
        assert!((metric_sum(text, shed, None) - 12.0).abs() < 1e-9);
        assert!((metric_sum(text, "tandem_raft_leader_changes_total", None) - 2.0).abs() < 1e-9);
    }
}
