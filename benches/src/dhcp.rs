//! `tandem-bench dhcp`: four-way DHCP exchanges per second at < 1 % loss,
//! for tandem, kea-dhcp4 (memfile, persist off and on) and dnsmasq, in one
//! lab, one after another, all on 10.99.0.10. With `--nodes N` tandem runs
//! as an N-node cluster (every lease waits for a quorum's fsync) while Kea
//! and dnsmasq stay single servers: the comparison is what HA costs.
//!
//! Per server: a short probe at a high rate (what the server completes under
//! overload is a first guess of its capacity), then [`find_max_rate`] from
//! there. Every probe and trial starts the server afresh with an empty lease
//! database (a tandem cluster is formed anew), runs `perfdhcp -4 -l 10.99.3.1 -r RATE -R 100000 -p PERIOD
//! 10.99.0.10` in the client namespace, and stops the server. The figure is
//! perfdhcp's completed exchanges per second in the best passing trial.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use lab::VIP;

use crate::perfdhcp::{self, Report};
use crate::search::{find_max_rate, Search, Trial, MAX_LOSS, MIN_RATE};
use crate::servers::{DhcpServer, Placement};
use crate::{
    interrupt, json_num, require_tools, round_sig, wait_for, warn_host_services, Bench, CLIENT_ADDR,
};

/// Knobs of the DHCP bench (the defaults keep it under ten minutes).
#[derive(Clone, Debug)]
pub struct DhcpOptions {
    /// Length of one trial (`perfdhcp -p`).
    pub period: Duration,
    /// Length of the probe that picks each search's first rate.
    pub probe_period: Duration,
    /// The probe's offered rate: above every server's capacity here (Kea
    /// loses 41 % at 12,000/s on this machine).
    pub probe_rate: u32,
    /// Trials per server after the probe.
    pub max_trials: usize,
    pub servers: Vec<DhcpServer>,
    /// Where the servers run (how many nodes tandem's cluster has).
    pub placement: Placement,
    /// Skip the probe and the search: one trial at this rate per server
    /// (for profiling a server under a known load).
    pub rate: Option<u32>,
}

impl Default for DhcpOptions {
    fn default() -> Self {
        DhcpOptions {
            period: Duration::from_secs(10),
            probe_period: Duration::from_secs(5),
            probe_rate: 12_000,
            max_trials: 7,
            servers: DhcpServer::ALL.to_vec(),
            placement: Placement::default(),
            rate: None,
        }
    }
}

/// One server's outcome: its search, or why it has none.
struct Outcome {
    server: DhcpServer,
    search: Result<Search>,
}

/// Runs the bench, prints the per-trial lines and the table, and returns
/// the closing JSON object. Fails (after printing) if any server failed.
pub fn run(opts: &DhcpOptions) -> Result<serde_json::Value> {
    let mut tools = vec!["perfdhcp", "ip", "ss"];
    for s in &opts.servers {
        tools.extend_from_slice(s.programs());
    }
    require_tools(&tools)?;
    warn_host_services(&["kea-dhcp4", "dnsmasq", "dhcpd"]);

    let started = Instant::now();
    let p = opts.placement;
    let bench = Bench::new(p.lab_nodes())?;
    let names = |s: DhcpServer| {
        p.nodes(s)
            .iter()
            .map(|n| format!("n{n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "=== lab {}: tandem in {}, kea in {}, dnsmasq in {}, perfdhcp in c1 ({CLIENT_ADDR})",
        bench.lab.prefix(),
        names(DhcpServer::Tandem),
        names(DhcpServer::Kea { persist: false }),
        names(DhcpServer::Dnsmasq)
    );
    for server in [DhcpServer::Kea { persist: false }, DhcpServer::Dnsmasq] {
        for node in p.nodes(server) {
            bench.give_vip(node)?;
        }
    }

    let mut outcomes = Vec::new();
    for &server in &opts.servers {
        println!("=== {}", server.label(p));
        let search = bench_server(&bench, server, opts);
        // Ctrl-C ends the whole bench, not just this server.
        interrupt::check()?;
        if let Err(e) = &search {
            eprintln!("    {} failed: {e:#}", server.name());
        }
        outcomes.push(Outcome { server, search });
    }
    let elapsed = started.elapsed();
    drop(bench);

    print_table(&outcomes, opts, elapsed);
    let json = summary_json(&outcomes, opts);
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.search.is_err())
        .map(|o| o.server.name())
        .collect();
    if !failed.is_empty() {
        println!("{json}");
        bail!("the bench failed for {failed:?}");
    }
    Ok(json)
}

/// Probe, then search, for one server.
fn bench_server(bench: &Bench, server: DhcpServer, opts: &DhcpOptions) -> Result<Search> {
    bench.activate_nodes(&opts.placement.nodes(server))?;
    if let Some(rate) = opts.rate {
        let t = trial(bench, server, opts, rate, opts.period, "trial")?;
        return Ok(Search { trials: vec![t] });
    }
    let probe = trial(
        bench,
        server,
        opts,
        opts.probe_rate,
        opts.probe_period,
        "probe",
    )?;
    #[allow(
        clippy::cast_sign_loss,
        reason = "round_sig returns a non-negative value"
    )]
    let start = (round_sig(probe.achieved, 2) as u32).max(MIN_RATE);
    println!(
        "    probe at {}/s completed {:.0}/s: searching from {start}/s",
        opts.probe_rate, probe.achieved
    );
    find_max_rate(start, opts.max_trials, |rate| {
        trial(bench, server, opts, rate, opts.period, "trial")
    })
}

/// One trial: a fresh server, a readiness check, perfdhcp, stop.
fn trial(
    bench: &Bench,
    server: DhcpServer,
    opts: &DhcpOptions,
    rate: u32,
    period: Duration,
    kind: &str,
) -> Result<Trial> {
    let running = server.start(bench, opts.placement)?;
    let mut overflow = None;
    let result = wait_ready(bench, server).and_then(|()| {
        let log = bench
            .lab
            .root()
            .join(format!("perfdhcp-{}-{kind}-{rate}.log", server.name()));
        let before = client_queue_overflows(bench);
        let r = perfdhcp::run(bench, rate, period, &VIP.to_string(), &log);
        if let (Ok(b), Ok(a)) = (before, client_queue_overflows(bench)) {
            overflow = Some(a.saturating_sub(b));
        }
        r
    });
    running.stop(bench);
    let report = result?;
    let t = Trial {
        offered: rate,
        achieved: report.rate,
        loss: report.loss(),
    };
    print_trial(kind, &t, &report, overflow);
    Ok(t)
}

/// Datagrams the kernel dropped because perfdhcp's receive queue was full
/// (`Udp: RcvbufErrors` in the client namespace). perfdhcp plays 100,000
/// clients on one socket, so a reply lost here is lost by the measuring
/// tool, not by the server; the bench reports it beside the loss.
fn client_queue_overflows(bench: &Bench) -> Result<u64> {
    let snmp = bench.lab.exec_ok(
        &bench.client_ns(),
        "cat",
        &["/proc/net/snmp"],
        Duration::from_secs(5),
    )?;
    rcvbuf_errors(&snmp).context("no Udp RcvbufErrors in /proc/net/snmp")
}

/// `RcvbufErrors` from the two `Udp:` lines (names, then values) of `/proc/net/snmp`.
fn rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Waits until the server completes an exchange: the port being bound, or
/// tandem saying it serves, does not yet prove that the subnet config is in
/// effect. One second at 10/s with one client MAC; `-W` lets the last
/// answers in. (`-n 1` does not work for this: perfdhcp stops once the
/// DISCOVER is answered, before it sends the REQUEST.)
fn wait_ready(bench: &Bench, server: DhcpServer) -> Result<()> {
    let log = bench
        .lab
        .root()
        .join(format!("perfdhcp-{}-ready.log", server.name()));
    let args = [
        "-4",
        "-l",
        CLIENT_ADDR,
        "-r",
        "10",
        "-p",
        "1",
        "-R",
        "1",
        "-W",
        "500000",
        &VIP.to_string(),
    ]
    .map(str::to_owned);
    wait_for(
        Duration::from_secs(30),
        "one complete DHCP exchange",
        || {
            if log.exists() {
                std::fs::remove_file(&log)?;
            }
            let p = bench.spawn(&bench.client_ns(), "perfdhcp", &args, &log)?;
            crate::wait_exit(&p, Duration::from_secs(15), "perfdhcp readiness check")?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(perfdhcp::parse(&text).is_ok_and(|r: Report| r.completed() >= 1))
        },
    )
}

fn print_trial(kind: &str, t: &Trial, r: &Report, overflow: Option<u64>) {
    println!(
        "    {kind} -r {:>6}: {:>8.1} exchanges/s, loss {:>6.2} % (DISCOVER {} sent / OFFER {} / ACK {}, NAK {}; \
         {} replies overflowed perfdhcp's queue) {}",
        t.offered,
        t.achieved,
        t.loss * 100.0,
        r.discover_offer.sent,
        r.discover_offer.received,
        r.request_ack.received,
        r.request_ack.rejected,
        overflow.map_or("?".into(), |o| o.to_string()),
        if t.passed() { "pass" } else { "FAIL" }
    );
}

fn best(outcomes: &[Outcome], server: DhcpServer) -> Option<Trial> {
    outcomes
        .iter()
        .find(|o| o.server == server)
        .and_then(|o| o.search.as_ref().ok())
        .and_then(Search::best)
}

fn print_table(outcomes: &[Outcome], opts: &DhcpOptions, elapsed: Duration) {
    println!();
    println!(
        "DHCP: completed 4-way exchanges/s at the highest offered rate losing < {:.0} % ({} s perfdhcp trials, \
         -R 100000, relay {CLIENT_ADDR} -> {VIP}; bench took {:.0} s)",
        MAX_LOSS * 100.0,
        opts.period.as_secs(),
        elapsed.as_secs_f64()
    );
    println!(
        "{:<40} {:>12} {:>10} {:>8} {:>7}",
        "server", "exchanges/s", "offered/s", "loss", "trials"
    );
    for o in outcomes {
        match (&o.search, best(outcomes, o.server)) {
            (Ok(s), Some(b)) => println!(
                "{:<40} {:>12.1} {:>10} {:>7.2}% {:>7}",
                o.server.label(opts.placement),
                b.achieved,
                b.offered,
                b.loss * 100.0,
                s.trials.len()
            ),
            (Ok(s), None) => println!(
                "{:<40} {:>12} {:>10} {:>8} {:>7}",
                o.server.label(opts.placement),
                "none",
                "-",
                "-",
                s.trials.len()
            ),
            (Err(_), _) => println!("{:<40} {:>12}", o.server.label(opts.placement), "error"),
        }
    }
    if let (Some(t), Some(k)) = (
        best(outcomes, DhcpServer::Tandem),
        best(outcomes, DhcpServer::Kea { persist: false }),
    ) {
        println!(
            "tandem / kea (persist=false): {:.3}",
            t.achieved / k.achieved
        );
    }
    println!();
}

fn summary_json(outcomes: &[Outcome], opts: &DhcpOptions) -> serde_json::Value {
    let rate = |s| best(outcomes, s).map(|t| t.achieved);
    let tandem = rate(DhcpServer::Tandem);
    let kea = rate(DhcpServer::Kea { persist: false });
    let ratio = tandem
        .zip(kea)
        .filter(|(_, k)| *k > 0.0)
        .map(|(t, k)| t / k);
    serde_json::json!({
        "bench": "dhcp",
        "tandem_per_s": json_num(tandem, 1),
        "kea_per_s": json_num(kea, 1),
        "kea_persist_per_s": json_num(rate(DhcpServer::Kea { persist: true }), 1),
        "dnsmasq_per_s": json_num(rate(DhcpServer::Dnsmasq), 1),
        "ratio_vs_kea": json_num(ratio, 3),
        "max_loss": MAX_LOSS,
        "period_s": opts.period.as_secs(),
        "tandem_nodes": opts.placement.tandem_nodes,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_rcvbuf_errors_from_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10 0 7 12 7 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        assert_eq!(super::rcvbuf_errors(snmp), Some(7));
        assert_eq!(super::rcvbuf_errors("Ip: a\nIp: 1\n"), None);
    }
}
