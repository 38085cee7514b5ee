//! `tandem-bench failover`: how long DHCP is gone when the node serving it
//! dies (SIGKILL) or is cut off the switch, for tandem (3-node Raft
//! cluster) and for keepalived + dnsmasq (VRRP, `advert_int` 1 s and 0.1 s),
//! one after the other on the same three node namespaces.
//!
//! ```text
//!  trial:  healthy? ──▶ t0 fault t1 ──▶ probe: first reply to a request ──▶ heal ──▶ next
//!          (3 nodes up,                 sent after t1; time = reply − t0    (restart the
//!           one server,                                                     killed node /
//!           probe answered)                                                 reconnect)
//! ```
//!
//! The probe ([`crate::probe`]) sends a DISCOVER every 10 ms from the client
//! namespace to the VIP. Only requests sent after the fault completed (`t1`)
//! count, so an answer from the old server to an earlier request can never
//! pass for the new one; the time is taken from when the fault started
//! (`t0`), so the figure errs long, not short. A tcpdump capture on the
//! client's switch port records who (which MAC) answered each xid: it
//! checks that the first answer after a fault came from another node, and
//! counts transactions answered by two different nodes (target: 0).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use lab::{INTERFACE, VIP, VIP_CIDR};

use crate::capture::{answerers, dual_answered, parse_mac, Capture};
use crate::keepalived::{last_state, HaNode};
use crate::probe::Probe;
use crate::servers::tandem_dhcp_service;
use crate::{
    cluster, interrupt, json_num, require_tools, wait_for, warn_host_services, Bench, CLIENT,
    CLIENT_ADDR,
};

/// The three server namespaces every system runs in.
const NODES: [usize; 3] = [1, 2, 3];
/// The probe's spacing.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Before a fault, this many consecutive probes must have been answered.
const HEALTHY_PROBES: usize = 20;
/// A probe older than this without an answer counts as unanswered when
/// judging health (a reply takes well under a millisecond here).
const PROBE_GRACE: Duration = Duration::from_millis(200);
/// How long a system may take to be healthy again after a heal.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Knobs of the failover bench.
#[derive(Clone, Debug)]
pub struct FailoverOptions {
    /// Trials per fault and system.
    pub trials: usize,
    /// Also measure keepalived + dnsmasq (skipped anyway if not installed).
    pub keepalived: bool,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            trials: 20,
            keepalived: true,
        }
    }
}

/// The two faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the serving node's process(es).
    Sigkill,
    /// The serving node's switch port goes down.
    LinkCut,
}

impl Fault {
    pub const ALL: [Fault; 2] = [Fault::Sigkill, Fault::LinkCut];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Fault::Sigkill => "sigkill",
            Fault::LinkCut => "link_cut",
        }
    }
}

/// One system's trials of one fault.
#[derive(Clone, Debug)]
pub struct Series {
    pub fault: Fault,
    /// Fault → first reply, per trial; `None` when no reply came in time.
    pub times: Vec<Option<Duration>>,
    /// xids answered by two or more MACs during the series.
    pub dual_answered: usize,
    /// Trials whose first reply after the fault came from the old server's MAC.
    pub from_old: usize,
}

impl Series {
    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .times
            .iter()
            .flatten()
            .map(Duration::as_secs_f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    #[must_use]
    pub fn percentile(&self, p: f64) -> Option<f64> {
        percentile(&self.sorted(), p)
    }

    #[must_use]
    pub fn failed(&self) -> usize {
        self.times.iter().filter(|t| t.is_none()).count()
    }
}

/// The nearest-rank percentile `p` (0-100] of ascending `sorted`.
#[must_use]
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "small counts"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// A highly available DHCP service under test, on [`NODES`].
trait HaSystem {
    fn label(&self) -> String;
    /// How long after a fault a reply may take before the trial fails.
    fn recovery_timeout(&self) -> Duration;
    /// Waits until every node runs, exactly one serves, and the probe gets
    /// answers; returns the serving node.
    fn wait_healthy(&mut self, bench: &Bench, probe: &Probe) -> Result<usize>;
    /// SIGKILLs whatever serves DHCP on `node`.
    fn kill(&mut self, bench: &Bench, node: usize) -> Result<()>;
    /// Brings `node` back after [`HaSystem::kill`].
    fn restart(&mut self, bench: &Bench, node: usize) -> Result<()>;
    /// Stops everything and leaves no VIP behind.
    fn stop(&mut self, bench: &Bench) -> Result<()>;
}

/// Waits until the probe's last [`HEALTHY_PROBES`] requests were answered.
fn wait_probe_healthy(probe: &Probe) -> Result<()> {
    wait_for(HEAL_TIMEOUT, "the probe to be answered again", || {
        Ok(probe.healthy(HEALTHY_PROBES, PROBE_GRACE))
    })
}

struct Tandem;

impl HaSystem for Tandem {
    fn label(&self) -> String {
        "tandem (3-node Raft)".into()
    }

    fn recovery_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn wait_healthy(&mut self, bench: &Bench, probe: &Probe) -> Result<usize> {
        let leader = cluster::wait_leader_serving(bench, &NODES, HEAL_TIMEOUT)?;
        wait_probe_healthy(probe)?;
        Ok(leader)
    }

    fn kill(&mut self, bench: &Bench, node: usize) -> Result<()> {
        bench.lab.signal_node(node, libc::SIGKILL)
    }

    fn restart(&mut self, bench: &Bench, node: usize) -> Result<()> {
        if let Some(p) = bench.lab.node_process(node) {
            p.kill_and_wait();
        }
        // Same data dir: it rejoins as a follower by itself.
        bench.lab.start_node(node, &bench.tandem_bin)?;
        Ok(())
    }

    fn stop(&mut self, bench: &Bench) -> Result<()> {
        cluster::stop(bench, &NODES);
        remove_vips(bench)
    }
}

struct Keepalived {
    advert: Duration,
    /// Index = node; 0 unused.
    nodes: Vec<Option<HaNode>>,
}

impl Keepalived {
    fn start(bench: &Bench, advert: Duration) -> Result<Keepalived> {
        let mut k = Keepalived {
            advert,
            nodes: (0..=NODES.len()).map(|_| None).collect(),
        };
        for i in NODES {
            k.nodes[i] = Some(HaNode::start(bench, i, &NODES, advert)?);
        }
        Ok(k)
    }

    fn state(bench: &Bench, i: usize) -> Option<String> {
        let text = std::fs::read_to_string(bench.lab.node_dir(i).join("keepalived.log")).ok()?;
        last_state(&text).map(str::to_owned)
    }
}

impl HaSystem for Keepalived {
    fn label(&self) -> String {
        format!(
            "keepalived+dnsmasq advert_int {}",
            crate::keepalived::advert_int(self.advert)
        )
    }

    fn recovery_timeout(&self) -> Duration {
        self.advert * 10 + Duration::from_secs(10)
    }

    fn wait_healthy(&mut self, bench: &Bench, probe: &Probe) -> Result<usize> {
        let mut master = None;
        let r = wait_for(
            HEAL_TIMEOUT,
            "one keepalived MASTER holding the VIP, the others BACKUP",
            || {
                for i in NODES {
                    let node = self.nodes[i].as_ref().expect("started");
                    if !node.running() {
                        bail!(
                            "keepalived or dnsmasq on node {i} exited; see {}",
                            bench.lab.node_dir(i).display()
                        );
                    }
                }
                let holders: Vec<usize> = NODES
                    .iter()
                    .copied()
                    .filter(|&i| holds_vip(bench, i))
                    .collect();
                let states: Vec<Option<String>> =
                    NODES.iter().map(|&i| Keepalived::state(bench, i)).collect();
                master = match holders.as_slice() {
                    [h] if NODES.iter().zip(&states).all(|(&i, s)| {
                        s.as_deref() == Some(if i == *h { "MASTER" } else { "BACKUP" })
                    }) =>
                    {
                        Some(*h)
                    }
                    _ => None,
                };
                Ok(master.is_some())
            },
        );
        r?;
        wait_probe_healthy(probe)?;
        Ok(master.expect("set when the wait succeeded"))
    }

    fn kill(&mut self, _bench: &Bench, node: usize) -> Result<()> {
        match &self.nodes[node] {
            Some(n) => {
                n.kill();
                Ok(())
            }
            None => bail!("node {node} runs no keepalived"),
        }
    }

    fn restart(&mut self, bench: &Bench, node: usize) -> Result<()> {
        if let Some(n) = self.nodes[node].take() {
            n.kill();
        }
        // A SIGKILLed keepalived leaves the VIP behind; the node's restart
        // (a reboot, a unit restart with ExecStartPre cleanup) removes it.
        remove_vip(bench, node)?;
        self.nodes[node] = Some(HaNode::start(bench, node, &NODES, self.advert)?);
        Ok(())
    }

    fn stop(&mut self, bench: &Bench) -> Result<()> {
        for n in self.nodes.iter_mut().filter_map(Option::take) {
            n.kill();
        }
        remove_vips(bench)
    }
}

/// Whether node `i`'s `eth1` holds the VIP (asked inside its namespace).
fn holds_vip(bench: &Bench, i: usize) -> bool {
    bench
        .lab
        .exec_ok(
            &bench.lab.node_ns(i),
            "ip",
            &["-4", "-o", "addr", "show", "dev", INTERFACE],
            Duration::from_secs(5),
        )
        .is_ok_and(|out| out.contains(&format!(" {VIP}/")))
}

fn remove_vip(bench: &Bench, i: usize) -> Result<()> {
    if holds_vip(bench, i) {
        bench.ip(
            &bench.lab.node_ns(i),
            &["addr", "del", VIP_CIDR, "dev", INTERFACE],
        )?;
    }
    Ok(())
}

fn remove_vips(bench: &Bench) -> Result<()> {
    for i in NODES {
        remove_vip(bench, i)?;
    }
    Ok(())
}

/// Runs `trials` trials of `fault` against `sys`.
fn series(
    bench: &Bench,
    sys: &mut dyn HaSystem,
    probe: &Probe,
    fault: Fault,
    trials: usize,
    tag: &str,
) -> Result<Series> {
    println!("=== {}: {} × {}", sys.label(), trials, fault.name());
    let capture = Capture::start(bench, CLIENT, &format!("failover-{tag}-{}", fault.name()))?;
    // (old server's node, xid of the first reply after the fault)
    let mut firsts: Vec<(usize, u32)> = Vec::new();
    let mut times = Vec::new();
    for k in 1..=trials {
        let old = sys.wait_healthy(bench, probe)?;
        let t0 = Instant::now();
        match fault {
            Fault::Sigkill => sys.kill(bench, old)?,
            Fault::LinkCut => bench.lab.set_node_connected(old, false)?,
        }
        let t1 = Instant::now();
        let deadline = t1 + sys.recovery_timeout();
        let mut first = None;
        while Instant::now() < deadline {
            if let Err(e) = interrupt::check() {
                heal(bench, sys, fault, old)?;
                return Err(e);
            }
            first = probe.first_reply_after(t1);
            if first.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let time = first.map(|r| r.at - t0);
        match first {
            Some(r) => {
                let xid = probe.snapshot().xid(r.seq);
                firsts.push((old, xid));
                println!(
                    "    trial {k:>2}/{trials}: node {old} {} ({:.1} ms to apply) → first reply {:.3} s after the fault",
                    fault.name(),
                    (t1 - t0).as_secs_f64() * 1e3,
                    (r.at - t0).as_secs_f64()
                );
            }
            None => println!(
                "    trial {k:>2}/{trials}: node {old} {} → NO reply within {:?}",
                fault.name(),
                sys.recovery_timeout()
            ),
        }
        times.push(time);
        heal(bench, sys, fault, old)?;
    }
    // Let the last heal's transition show up in the capture too.
    sys.wait_healthy(bench, probe)?;
    let wire = capture.finish()?;
    let by_xid = answerers(&wire);
    let macs: std::collections::BTreeSet<[u8; 6]> = wire.iter().map(|r| r.src_mac).collect();
    println!(
        "    capture: {} replies on the client's port, from {} MAC(s)",
        wire.len(),
        macs.len()
    );
    // The checks below read the capture; an empty one would pass them vacuously.
    anyhow::ensure!(
        !wire.is_empty() || firsts.is_empty(),
        "the capture on the client's port holds no DHCP reply"
    );
    let mut from_old = 0;
    for (old, xid) in &firsts {
        let mac = parse_mac(&bench.lab.node_mac(*old))?;
        if by_xid.get(xid).is_some_and(|macs| macs.contains(&mac)) {
            from_old += 1;
        }
    }
    let s = Series {
        fault,
        times,
        dual_answered: dual_answered(&wire),
        from_old,
    };
    let ms = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.0} ms", v * 1e3));
    println!(
        "    {}: p50 {} p90 {} max {}; failed {}; xids answered by two MACs: {}; first replies from the old node: {}",
        fault.name(),
        ms(s.percentile(50.0)),
        ms(s.percentile(90.0)),
        ms(s.percentile(100.0)),
        s.failed(),
        s.dual_answered,
        s.from_old
    );
    Ok(s)
}

fn heal(bench: &Bench, sys: &mut dyn HaSystem, fault: Fault, node: usize) -> Result<()> {
    match fault {
        Fault::Sigkill => sys.restart(bench, node),
        Fault::LinkCut => bench.lab.set_node_connected(node, true),
    }
}

/// Both faults against one system, with one probe for both.
fn measure(bench: &Bench, sys: &mut dyn HaSystem, trials: usize, tag: &str) -> Result<Vec<Series>> {
    bench.ip(&bench.client_ns(), &["neigh", "flush", "dev", INTERFACE])?;
    // Bound on the probe's traffic whatever happens: generous per trial.
    let bound = Duration::from_secs(120) * u32::try_from(2 * trials + 2).unwrap_or(u32::MAX);
    let client: Ipv4Addr = CLIENT_ADDR.parse()?;
    let probe = Probe::start(&bench.client_ns(), client, VIP, PROBE_INTERVAL, bound)?;
    let mut out = Vec::new();
    for fault in Fault::ALL {
        out.push(series(bench, sys, &probe, fault, trials, tag)?);
    }
    let log = probe.finish(Duration::from_millis(500));
    println!(
        "    probe: {} requests, {} answered",
        log.sent.len(),
        log.answered()
    );
    Ok(out)
}

/// Runs the bench; returns one JSON object per fault (`sigkill`, `link_cut`).
pub fn run(opts: &FailoverOptions) -> Result<Vec<serde_json::Value>> {
    anyhow::ensure!(opts.trials > 0, "--trials must be positive");
    require_tools(&["ip", "tcpdump", "dnsmasq"])?;
    warn_host_services(&["dnsmasq", "keepalived"]);
    let have_keepalived = crate::on_path("keepalived");
    if opts.keepalived && !have_keepalived {
        println!(
            "keepalived is not installed: the keepalived + dnsmasq comparison is SKIPPED \
             (add `keepalived` to the apt packages of `cargo xtask deps`)"
        );
    }

    if opts.keepalived && have_keepalived {
        crate::keepalived::become_subreaper()?;
    }
    let bench = Bench::new(NODES.len())?;
    println!(
        "=== lab {}: nodes n1-n3, probe in c1 ({CLIENT_ADDR} → {VIP}:67, one DISCOVER every {} ms)",
        bench.lab.prefix(),
        PROBE_INTERVAL.as_millis()
    );

    println!("=== tandem: forming a 3-node cluster");
    let leader = cluster::form(&bench, &NODES, &tandem_dhcp_service())?;
    println!("    leader: node {leader}");
    let mut tandem = Tandem;
    let t = measure(&bench, &mut tandem, opts.trials, "tandem");
    tandem.stop(&bench)?;
    let t = t?;

    let mut ka: Vec<(&str, Vec<Series>)> = Vec::new();
    if opts.keepalived && have_keepalived {
        for (tag, advert) in [
            ("1s", Duration::from_secs(1)),
            ("100ms", Duration::from_millis(100)),
        ] {
            println!(
                "=== keepalived + dnsmasq, advert_int {}",
                crate::keepalived::advert_int(advert)
            );
            let mut sys = Keepalived::start(&bench, advert)?;
            let r = measure(&bench, &mut sys, opts.trials, &format!("keepalived-{tag}"));
            sys.stop(&bench)?;
            ka.push((tag, r?));
        }
    }
    drop(bench);

    print_table(&t, &ka, opts.trials);
    Ok(Fault::ALL
        .iter()
        .enumerate()
        .map(|(n, &f)| summary_json(&t[n], &ka, n, f, opts.trials))
        .collect())
}

fn print_table(t: &[Series], ka: &[(&str, Vec<Series>)], trials: usize) {
    println!();
    println!(
        "Failover: fault → first DHCP reply from the new server ({trials} trials per row, probe every {} ms)",
        PROBE_INTERVAL.as_millis()
    );
    println!(
        "{:<30} {:<9} {:>8} {:>8} {:>8} {:>7} {:>6}",
        "system", "fault", "p50 s", "p90 s", "max s", "failed", "dual"
    );
    let row = |name: &str, s: &Series| {
        let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.3}"));
        println!(
            "{name:<30} {:<9} {:>8} {:>8} {:>8} {:>7} {:>6}",
            s.fault.name(),
            f(s.percentile(50.0)),
            f(s.percentile(90.0)),
            f(s.percentile(100.0)),
            s.failed(),
            s.dual_answered
        );
    };
    for s in t {
        row("tandem", s);
    }
    for (tag, series) in ka {
        for s in series {
            row(&format!("keepalived+dnsmasq {tag}"), s);
        }
    }
    println!();
}

fn summary_json(
    t: &Series,
    ka: &[(&str, Vec<Series>)],
    n: usize,
    fault: Fault,
    trials: usize,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "bench": "failover",
        "fault": fault.name(),
        "trials": trials,
        "p50_s": json_num(t.percentile(50.0), 3),
        "p90_s": json_num(t.percentile(90.0), 3),
        "max_s": json_num(t.percentile(100.0), 3),
        "dual_answered_xids": t.dual_answered,
        "failed_trials": t.failed(),
        "first_reply_from_old_node": t.from_old,
        "probe_interval_ms": PROBE_INTERVAL.as_millis(),
    });
    let obj = v.as_object_mut().expect("a json! object");
    for tag in ["1s", "100ms"] {
        let s = ka.iter().find(|(x, _)| *x == tag).map(|(_, s)| &s[n]);
        obj.insert(
            format!("keepalived_{tag}_p50_s"),
            json_num(s.and_then(|s| s.percentile(50.0)), 3),
        );
        obj.insert(
            format!("keepalived_{tag}_p90_s"),
            json_num(s.and_then(|s| s.percentile(90.0)), 3),
        );
        obj.insert(
            format!("keepalived_{tag}_max_s"),
            json_num(s.and_then(|s| s.percentile(100.0)), 3),
        );
        obj.insert(
            format!("keepalived_{tag}_failed_trials"),
            s.map_or(serde_json::Value::Null, |s| s.failed().into()),
        );
        obj.insert(
            format!("keepalived_{tag}_dual_answered_xids"),
            s.map_or(serde_json::Value::Null, |s| s.dual_answered.into()),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 90.0), Some(18.0));
        assert_eq!(percentile(&v, 100.0), Some(20.0));
        assert_eq!(percentile(&[0.4], 90.0), Some(0.4));
        assert_eq!(percentile(&[], 50.0), None);
        let five = [0.1, 0.2, 0.3, 0.4, 0.5];
        assert_eq!(percentile(&five, 50.0), Some(0.3));
        assert_eq!(percentile(&five, 90.0), Some(0.5));
    }

    #[test]
    fn failed_trials_are_counted_not_averaged() {
        let s = Series {
            fault: Fault::Sigkill,
            times: vec![
                Some(Duration::from_millis(300)),
                None,
                Some(Duration::from_millis(100)),
            ],
            dual_answered: 0,
            from_old: 0,
        };
        assert_eq!(s.failed(), 1);
        assert_eq!(s.percentile(100.0), Some(0.3));
        assert_eq!(s.percentile(50.0), Some(0.1));
    }
}
