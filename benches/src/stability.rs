//! `tandem-bench stability`: a 3-node tandem cluster on a machine whose
//! CPUs are saturated on purpose, probed every 20 ms for N minutes. A
//! healthy cluster keeps its leader (no spurious elections from late
//! heartbeats) and answers every probe.
//!
//! ```text
//!   form cluster ─▶ probe answered ─▶ snapshot metrics ─▶ load on ─▶ N minutes ─▶ snapshot ─▶ load off
//!                                     (window starts)      (status polled every second)  (window ends)
//! ```
//!
//! The load is `stress-ng --cpu 2` in every node namespace (two busy
//! workers per node, six on this 2-core machine), or two shell busy loops
//! per node when stress-ng is missing. Every load process bounds itself
//! (`--timeout`, `timeout`) and the lab kills it on drop anyway.
//!
//! Figures:
//! - `leader_changes`: the largest per-node delta of
//!   `tandem_raft_leader_changes_total` over the window. Every node counts
//!   each new leader it learns of, so one change is seen once by each node:
//!   summing the nodes would count it three times.
//! - `term_changes`: how far the highest term moved (elections, including
//!   ones the same node won again).
//! - `unanswered`: probes sent in the window that never got a reply.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lab::{LabProcess, API_PORT, VIP};

use crate::probe::Probe;
use crate::servers::tandem_dhcp_service;
use crate::{cluster, interrupt, json_num, nsenter, on_path, require_tools, Bench, CLIENT_ADDR};

const NODES: [usize; 3] = [1, 2, 3];
/// The probe's spacing.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How often every node's status is read during the window.
const POLL: Duration = Duration::from_secs(1);
/// A reply later than this after the window is not waited for.
const REPLY_GRACE: Duration = Duration::from_secs(2);
/// Timeout of one API request from the bench (the nodes are starved).
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Knobs of the stability bench.
#[derive(Clone, Debug)]
pub struct StabilityOptions {
    /// Length of the loaded window.
    pub duration: Duration,
    /// CPU workers per node namespace.
    pub workers_per_node: usize,
}

impl Default for StabilityOptions {
    fn default() -> Self {
        StabilityOptions {
            duration: Duration::from_secs(600),
            workers_per_node: 2,
        }
    }
}

/// The value of an unlabelled sample `name` in Prometheus text output.
#[must_use]
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut parts = l.split_whitespace();
        if parts.next()? == name {
            parts.next()?.parse().ok()
        } else {
            None
        }
    })
}

/// (leader changes counter, term) of node `i`, read from its `/metrics`.
fn raft_counters(bench: &Bench, i: usize) -> Result<(f64, f64)> {
    let addr = SocketAddrV4::new(bench.lab.node_ip(i), API_PORT);
    let ca = std::fs::read_to_string(bench.lab.node_ca_path(i))?;
    let text = nsenter::https_get(&bench.lab.node_ns(i), addr, "/metrics", &ca, API_TIMEOUT)?;
    let changes = metric(&text, "tandem_raft_leader_changes_total")
        .context("no tandem_raft_leader_changes_total")?;
    let term = metric(&text, "tandem_raft_term").context("no tandem_raft_term")?;
    Ok((changes, term))
}

/// Node `i`'s view of the leader, from `GET /v1/status`.
fn polled_leader(bench: &Bench, i: usize) -> Option<u64> {
    let addr = SocketAddrV4::new(bench.lab.node_ip(i), API_PORT);
    let ca = std::fs::read_to_string(bench.lab.node_ca_path(i)).ok()?;
    let text =
        nsenter::https_get(&bench.lab.node_ns(i), addr, "/v1/status", &ca, API_TIMEOUT).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["leader"].as_u64()
}

/// The CPU load: its processes and what it is, for the report.
struct Load {
    processes: Vec<LabProcess>,
    what: String,
}

impl Drop for Load {
    /// Stops the load, also on an early return: SIGTERM, so stress-ng (or
    /// `timeout`) ends and reaps its own workers rather than orphaning
    /// them; SIGKILL to the group if one lingers.
    fn drop(&mut self) {
        for p in &self.processes {
            let _ = p.signal(libc::SIGTERM);
        }
        for p in &self.processes {
            if p.wait_timeout(Duration::from_secs(10)).is_none() {
                p.kill_and_wait();
            }
        }
    }
}

/// Starts the CPU load in every node namespace; each process also ends by
/// itself after `secs`.
fn start_load(bench: &Bench, workers: usize, secs: u64) -> Result<Load> {
    let stress = on_path("stress-ng");
    let mut processes = Vec::new();
    for i in NODES {
        let ns = bench.lab.node_ns(i);
        let log = bench.lab.node_dir(i).join("load.log");
        if stress {
            let args = [
                "--cpu".to_owned(),
                workers.to_string(),
                "--timeout".into(),
                format!("{secs}s"),
                "--quiet".into(),
            ];
            processes.push(bench.spawn(&ns, "stress-ng", &args, &log)?);
        } else {
            for _ in 0..workers {
                let args = [
                    secs.to_string(),
                    "sh".into(),
                    "-c".into(),
                    "while :; do :; done".into(),
                ];
                processes.push(bench.spawn(&ns, "timeout", &args, &log)?);
            }
        }
    }
    let what = if stress {
        format!("stress-ng --cpu {workers} per node")
    } else {
        format!("{workers} sh busy loops per node")
    };
    Ok(Load { processes, what })
}

/// Runs the bench and returns the closing JSON object.
pub fn run(opts: &StabilityOptions) -> Result<serde_json::Value> {
    require_tools(&["ip", "timeout", "sh"])?;
    let bench = Bench::new(NODES.len())?;
    println!(
        "=== lab {}: 3 tandem nodes, probe in c1 every {} ms",
        bench.lab.prefix(),
        PROBE_INTERVAL.as_millis()
    );
    let leader = cluster::form(&bench, &NODES, &tandem_dhcp_service())?;
    println!("    leader: node {leader}");

    let client: Ipv4Addr = CLIENT_ADDR.parse()?;
    let probe = Probe::start(
        &bench.client_ns(),
        client,
        VIP,
        PROBE_INTERVAL,
        opts.duration + Duration::from_secs(120),
    )?;
    crate::wait_for(Duration::from_secs(30), "the probe to be answered", || {
        Ok(probe.healthy(10, Duration::from_millis(200)))
    })?;

    let before: Vec<(f64, f64)> = NODES
        .iter()
        .map(|&i| raft_counters(&bench, i))
        .collect::<Result<_>>()?;
    let secs = opts.duration.as_secs().max(1);
    // The load outlives the window by a little, so the window is loaded throughout.
    let load = start_load(&bench, opts.workers_per_node, secs + 15)?;
    println!(
        "=== load: {}; {:.1} minutes",
        load.what,
        opts.duration.as_secs_f64() / 60.0
    );
    let first_seq = probe.snapshot().sent.len();
    let start = Instant::now();
    let mut leaders_seen: BTreeSet<u64> = BTreeSet::new();
    let mut last_report = start;
    let mut polls_failed = 0usize;
    while start.elapsed() < opts.duration {
        interrupt::check()?;
        for i in NODES {
            match polled_leader(&bench, i) {
                Some(l) => {
                    leaders_seen.insert(l);
                }
                None => polls_failed += 1,
            }
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let log = probe.snapshot();
            let window = log.sent.len() - first_seq;
            println!(
                "    {:>4.0} s: {} probes sent, leaders seen {:?}",
                start.elapsed().as_secs_f64(),
                window,
                leaders_seen
            );
        }
        std::thread::sleep(POLL.saturating_sub(Duration::from_millis(1)));
    }
    let last_seq = probe.snapshot().sent.len();
    // Evidence that the load did saturate the machine: the 1-minute load
    // average should be well above the core count.
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let after: Vec<(f64, f64)> = NODES
        .iter()
        .map(|&i| raft_counters(&bench, i))
        .collect::<Result<_>>()?;
    let log = probe.finish(REPLY_GRACE);
    let load_what = load.what.clone();
    drop(load);
    drop(bench);

    let leader_changes = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.0 - b.0).max(0.0))
        .fold(0.0, f64::max);
    let term_before = before.iter().map(|x| x.1).fold(0.0, f64::max);
    let term_after = after.iter().map(|x| x.1).fold(0.0, f64::max);
    let mut answered = vec![false; last_seq - first_seq];
    for r in &log.replies {
        let s = r.seq as usize;
        if (first_seq..last_seq).contains(&s) {
            answered[s - first_seq] = true;
        }
    }
    let probes = answered.len();
    let unanswered = answered.iter().filter(|a| !**a).count();

    println!();
    println!(
        "Stability under CPU saturation ({load_what}), {:.1} min, probe every {} ms",
        opts.duration.as_secs_f64() / 60.0,
        PROBE_INTERVAL.as_millis()
    );
    println!("    leader changes (max per-node delta of tandem_raft_leader_changes_total): {leader_changes}");
    println!("    term: {term_before} → {term_after}; leaders seen by polling: {leaders_seen:?} ({polls_failed} status polls failed)");
    println!("    probes: {probes}, unanswered: {unanswered}");
    println!(
        "    /proc/loadavg at the end of the window: {}",
        loadavg.trim()
    );
    println!();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "small non-negative counter deltas"
    )]
    Ok(serde_json::json!({
        "bench": "stability",
        "minutes": json_num(Some(opts.duration.as_secs_f64() / 60.0), 2),
        "leader_changes": leader_changes as u64,
        "term_changes": (term_after - term_before).max(0.0) as u64,
        "probes": probes,
        "unanswered": unanswered,
        "probe_interval_ms": PROBE_INTERVAL.as_millis(),
        "load": load_what,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_samples_only() {
        let text = "# HELP tandem_raft_term x\n# TYPE tandem_raft_term gauge\ntandem_raft_term 7\n\
                    tandem_raft_leader_changes_total 3\ntandem_raft_leader_changes_total_created 1.7e9\n\
                    tandem_dhcp_packets_total{type=\"offer\"} 9\n";
        assert_eq!(metric(text, "tandem_raft_term"), Some(7.0));
        assert_eq!(metric(text, "tandem_raft_leader_changes_total"), Some(3.0));
        assert_eq!(metric(text, "tandem_dhcp_packets_total"), None);
        assert_eq!(metric(text, "tandem_missing"), None);
    }
}
