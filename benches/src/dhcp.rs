//! `tandem-bench dhcp`: four-way DHCP exchanges per second at < 1 % loss,
//! for tandem, kea-dhcp4 (memfile, persist off and on; single- and
//! multi-threaded) and dnsmasq, in one lab, one after another, all on
//! 10.99.0.10. With `--nodes N` tandem runs as an N-node cluster (every
//! lease waits for a quorum's fsync) while Kea and dnsmasq stay single
//! servers: the comparison is what HA costs.
//!
//! Every server runs under two loads ([`Load`]): new clients (each
//! exchange a client the server has never seen, so each ACK is a new
//! lease) and renew-heavy (150 clients cycled, so almost every ACK re-grants
//! a lease the server holds). dnsmasq shows why both matter: it rewrites
//! (and fsyncs) its whole lease file on every change, so its cost grows with
//! the leases.
//!
//! Per server and load: a short probe at a high rate (what the server
//! completes under overload is a first guess of its capacity), then
//! [`find_max_rate`] from there. Every probe and trial starts the server
//! afresh with an empty lease database (a tandem cluster is formed anew),
//! runs `perfdhcp -4 -l 10.99.3.1 -r RATE -R CLIENTS -p PERIOD 10.99.0.10`
//! in the client namespace, and stops the server. The figure is perfdhcp's
//! completed exchanges per second in the best passing trial.
//!
//! No figure may be capped by the pool: the pool ([`POOL_SIZE`]) is larger
//! than either client count, each server holds at most one address per
//! client (its lease or its pending offer), and a trial whose server still
//! says it ran out of addresses fails the bench ([`Exhausted`]).

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use lab::VIP;

use crate::perfdhcp::{self, Report};
use crate::search::{find_max_rate, Search, Trial, MAX_LOSS, MIN_RATE};
use crate::servers::{
    DhcpServer, Placement, Running, DNSMASQ_LEASE_MAX, POOL_END, POOL_SIZE, POOL_START, SUBNET,
};
use crate::{
    interrupt, json_num, require_tools, round_sig, wait_for, warn_host_services, Bench, CLIENT_ADDR,
};

/// perfdhcp's client count (`-R`) under [`Load::New`]. perfdhcp draws MACs
/// in sequence, so every exchange of a trial is a new client as long as
/// `rate × period` stays below this: 50,000/s for 10 s, several times what
/// any server reaches here. A trial that would wrap is refused.
pub const NEW_CLIENTS: u32 = 500_000;
/// perfdhcp's client count under [`Load::Renew`], as in the figures of
/// issue 3.
pub const RENEW_CLIENTS: u32 = 150;
// Each server holds at most one address per client, so a pool larger than
// the client count cannot run out (and dnsmasq's lease cap is above the
// pool, see `servers`).
const _: () = assert!(NEW_CLIENTS < POOL_SIZE && RENEW_CLIENTS < POOL_SIZE);

/// What perfdhcp's clients do in a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// [`NEW_CLIENTS`] clients: every ACK is a new lease.
    New,
    /// [`RENEW_CLIENTS`] clients cycled: after the first 150 exchanges,
    /// every DISCOVER comes from a client that holds a lease.
    Renew,
}

impl Load {
    /// Both loads, in the order the bench runs them.
    pub const ALL: [Load; 2] = [Load::New, Load::Renew];

    /// Short name, used in file names and `--loads`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Load::New => "new",
            Load::Renew => "renew",
        }
    }

    pub fn from_name(name: &str) -> Result<Load> {
        Load::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .with_context(|| format!("unknown load {name:?}; known: new, renew"))
    }

    /// perfdhcp's `-R`.
    #[must_use]
    pub fn clients(self) -> u32 {
        match self {
            Load::New => NEW_CLIENTS,
            Load::Renew => RENEW_CLIENTS,
        }
    }

    /// What the table and the per-server headers show.
    #[must_use]
    pub fn label(self) -> String {
        match self {
            Load::New => format!("new clients (-R {})", self.clients()),
            Load::Renew => format!("renew-heavy (-R {})", self.clients()),
        }
    }

    /// Appended to a server's JSON key: the new-client figures keep the
    /// keys they always had (`tandem_per_s`), the renew-heavy ones get
    /// `_renew` (`tandem_renew_per_s`).
    #[must_use]
    pub fn json_suffix(self) -> &'static str {
        match self {
            Load::New => "",
            Load::Renew => "_renew",
        }
    }
}

/// A trial in which the server said it had no address left (see
/// [`crate::servers::exhaustion_line`]): its figure would measure the pool,
/// not the server, so the bench fails.
#[derive(Debug)]
pub struct Exhausted {
    pub server: DhcpServer,
    pub load: Load,
    pub rate: u32,
    /// The server's own log line.
    pub line: String,
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ran out of addresses at {}/s under {} (pool {POOL_SIZE} addresses): {}",
            self.server.name(),
            self.rate,
            self.load.label(),
            self.line.trim()
        )
    }
}

impl std::error::Error for Exhausted {}

/// Knobs of the DHCP bench (the defaults take about 20 minutes: five
/// servers, two loads each).
#[derive(Clone, Debug)]
pub struct DhcpOptions {
    /// Length of one trial (`perfdhcp -p`).
    pub period: Duration,
    /// Length of the probe that picks each search's first rate.
    pub probe_period: Duration,
    /// The probe's offered rate: around or above every server's capacity
    /// here (Kea loses 41 % at 12,000/s on this machine).
    pub probe_rate: u32,
    /// Trials per server and load after the probe.
    pub max_trials: usize,
    pub servers: Vec<DhcpServer>,
    pub loads: Vec<Load>,
    /// Where the servers run (how many nodes tandem's cluster has).
    pub placement: Placement,
    /// Skip the probe and the search: one trial at this rate per server
    /// and load (for profiling a server under a known load).
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
            loads: Load::ALL.to_vec(),
            placement: Placement::default(),
            rate: None,
        }
    }
}

/// One server's outcome under one load: its search, or why it has none.
struct Outcome {
    server: DhcpServer,
    load: Load,
    search: Result<Search>,
}

/// Runs the bench, prints the per-trial lines and the table, and returns
/// the closing JSON object. Fails (after printing) if any server failed,
/// and says so first if a trial ran out of addresses.
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
        names(DhcpServer::KEA),
        names(DhcpServer::Dnsmasq)
    );
    println!("=== {}", pool_header(&opts.loads));
    for server in [DhcpServer::KEA, DhcpServer::Dnsmasq] {
        for node in p.nodes(server) {
            bench.give_vip(node)?;
        }
    }

    let mut outcomes = Vec::new();
    for &server in &opts.servers {
        for &load in &opts.loads {
            println!("=== {}, {}", server.label(p), load.label());
            let search = bench_server(&bench, server, load, opts);
            // Ctrl-C ends the whole bench, not just this server.
            interrupt::check()?;
            if let Err(e) = &search {
                eprintln!("    {} ({}) failed: {e:#}", server.name(), load.name());
            }
            outcomes.push(Outcome {
                server,
                load,
                search,
            });
        }
    }
    let elapsed = started.elapsed();
    drop(bench);

    print_table(&outcomes, opts, elapsed);
    let json = summary_json(&outcomes, opts);
    let exhausted: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.search.as_ref().err()?.downcast_ref::<Exhausted>())
        .map(ToString::to_string)
        .collect();
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.search.is_err())
        .map(|o| format!("{} ({})", o.server.name(), o.load.name()))
        .collect();
    if !failed.is_empty() {
        println!("{json}");
        if !exhausted.is_empty() {
            bail!(
                "a trial ran out of addresses, so its figures would measure the pool, not the \
                 server; grow the pool or shrink the client count:\n  {}",
                exhausted.join("\n  ")
            );
        }
        bail!("the bench failed for {failed:?}");
    }
    Ok(json)
}

/// The header line that says what no trial may exhaust.
fn pool_header(loads: &[Load]) -> String {
    let clients: Vec<String> = loads
        .iter()
        .map(|l| format!("{} {}", l.clients(), l.name()))
        .collect();
    format!(
        "subnet {SUBNET} (relayed from {CLIENT_ADDR}), pool {POOL_START}-{POOL_END}: \
         {POOL_SIZE} addresses; clients: {}; dnsmasq --dhcp-lease-max={DNSMASQ_LEASE_MAX}",
        clients.join(", ")
    )
}

/// Probe, then search, for one server under one load.
fn bench_server(
    bench: &Bench,
    server: DhcpServer,
    load: Load,
    opts: &DhcpOptions,
) -> Result<Search> {
    bench.activate_nodes(&opts.placement.nodes(server))?;
    if let Some(rate) = opts.rate {
        let t = trial(bench, server, load, opts, rate, opts.period, "trial")?;
        return Ok(Search { trials: vec![t] });
    }
    let probe = trial(
        bench,
        server,
        load,
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
        trial(bench, server, load, opts, rate, opts.period, "trial")
    })
}

/// Refuses a new-client trial in which perfdhcp would run through all its
/// clients and start over: its later exchanges would be renewals, and the
/// figure no longer that of new clients.
fn check_clients(load: Load, rate: u32, period: Duration) -> Result<()> {
    let exchanges = u64::from(rate) * period.as_secs().max(1);
    ensure!(
        load != Load::New || exchanges <= u64::from(load.clients()),
        "a {} s trial at {rate}/s sends {exchanges} exchanges, more than the {} new clients \
         (raise NEW_CLIENTS, below the pool of {POOL_SIZE}, or shorten the period)",
        period.as_secs(),
        load.clients()
    );
    Ok(())
}

/// What one perfdhcp run measured.
struct Measured {
    report: Report,
    /// Replies lost in perfdhcp's own receive queue.
    overflow: Option<u64>,
    /// Requests lost in the server's receive queue (every node's, for a
    /// tandem cluster).
    server_overflow: Option<u64>,
    cpu: Option<Cpu>,
}

/// One trial: a fresh server, a readiness check, perfdhcp, a look at the
/// server's log for exhaustion, stop.
fn trial(
    bench: &Bench,
    server: DhcpServer,
    load: Load,
    opts: &DhcpOptions,
    rate: u32,
    period: Duration,
    kind: &str,
) -> Result<Trial> {
    check_clients(load, rate, period)?;
    let running = server.start(bench, opts.placement)?;
    let result = wait_ready(bench, server).and_then(|()| {
        let log = bench.lab.root().join(format!(
            "perfdhcp-{}-{}-{kind}-{rate}.log",
            server.name(),
            load.name()
        ));
        measure(bench, &running, load.clients(), rate, period, &log)
    });
    let exhausted = running.exhaustion();
    running.stop(bench);
    if let Some(line) = exhausted {
        return Err(Exhausted {
            server,
            load,
            rate,
            line,
        }
        .into());
    }
    let m = result?;
    let t = Trial {
        offered: rate,
        achieved: m.report.rate,
        loss: m.report.loss(),
    };
    print_trial(kind, &t, &m);
    Ok(t)
}

/// Runs perfdhcp once and, around it, counts what the client's queue
/// dropped and what CPU the server and perfdhcp used.
fn measure(
    bench: &Bench,
    running: &Running,
    clients: u32,
    rate: u32,
    period: Duration,
    log: &std::path::Path,
) -> Result<Measured> {
    let pids = running.pids(bench);
    let client_ns = [bench.client_ns()];
    let server_ns: Vec<String> = running
        .nodes()
        .iter()
        .map(|&i| bench.lab.node_ns(i))
        .collect();
    // The `cat`s that read the queue counters are children too: read them
    // outside the window in which perfdhcp's CPU is taken.
    let queue_before = total_queue_overflows(bench, &client_ns);
    let server_queue_before = total_queue_overflows(bench, &server_ns);
    let server_before = processes_cpu_secs(&pids);
    let children_before = children_cpu_secs();
    let machine_before = machine_busy_secs();
    let t0 = Instant::now();
    let report = perfdhcp::run(bench, rate, clients, period, &VIP.to_string(), log);
    let wall = t0.elapsed().as_secs_f64();
    // perfdhcp is the only child reaped in between.
    let children_after = children_cpu_secs();
    let machine_after = machine_busy_secs();
    let server_after = processes_cpu_secs(&pids);
    let queue_after = total_queue_overflows(bench, &client_ns);
    let server_queue_after = total_queue_overflows(bench, &server_ns);
    let since = |b: Option<u64>, a: Option<u64>| Some(a?.saturating_sub(b?));
    let overflow = since(queue_before, queue_after);
    let server_overflow = since(server_queue_before, server_queue_after);
    let cpu = match (server_before, server_after, machine_before, machine_after) {
        (Some(sb), Some(sa), Some(mb), Some(ma)) if wall > 0.0 => Some(Cpu {
            server: (sa - sb) / wall,
            perfdhcp: (children_after - children_before) / wall,
            softirq: (ma.softirq - mb.softirq) / wall,
            machine: (ma.busy - mb.busy) / wall,
        }),
        _ => None,
    };
    Ok(Measured {
        report: report?,
        overflow,
        server_overflow,
        cpu,
    })
}

/// Cores busy, on average, while perfdhcp ran (this machine has 2, and
/// both programs share them): a server near 1.0 single-threaded, or the
/// machine near 2.0, is CPU-bound. Whatever else ran on the machine in the
/// meantime (`others`) took CPU from both.
#[derive(Clone, Copy, Debug)]
struct Cpu {
    server: f64,
    perfdhcp: f64,
    /// Every core's softirq time: mostly the kernel moving the bench's
    /// packets through the veths and the bridge, charged to no process.
    softirq: f64,
    /// Every process on the host and the kernel, the above included.
    machine: f64,
}

impl Cpu {
    /// Cores that went to none of the above (other work on the host).
    fn others(self) -> f64 {
        (self.machine - self.server - self.perfdhcp - self.softirq).max(0.0)
    }
}

/// Busy and softirq CPU seconds of the whole host, every core
/// (`/proc/stat` is not namespaced).
fn machine_busy_secs() -> Option<Busy> {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if tck <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    #[allow(clippy::cast_precision_loss, reason = "tick counts are far below 2^52")]
    let secs = |t: u64| t as f64 / tck as f64;
    busy_ticks(&stat).map(|b| Busy {
        busy: secs(b.busy),
        softirq: secs(b.softirq),
    })
}

/// Host CPU time from `/proc/stat`, in ticks or seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Busy<T = f64> {
    /// Everything but idle and iowait.
    busy: T,
    softirq: T,
}

/// [`Busy`] ticks from the first (`cpu`, all cores) line of `/proc/stat`:
/// user nice system idle iowait irq softirq steal (guest time is already
/// inside user).
fn busy_ticks(stat: &str) -> Option<Busy<u64>> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let &[user, nice, system, _idle, _iowait, irq, softirq, steal] = v.as_slice() else {
        return None;
    };
    Some(Busy {
        busy: user + nice + system + irq + softirq + steal,
        softirq,
    })
}

/// CPU seconds (user + system) the bench's reaped children have used.
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru);
        ru
    };
    #[allow(
        clippy::cast_precision_loss,
        reason = "CPU seconds of one run are far below 2^52"
    )]
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// CPU seconds (user + system, every thread) the processes `pids` have
/// used so far; `None` if one of them cannot be read.
fn processes_cpu_secs(pids: &[u32]) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if tck <= 0 || pids.is_empty() {
        return None;
    }
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ticks += stat_cpu_ticks(&stat)?;
    }
    #[allow(clippy::cast_precision_loss, reason = "tick counts are far below 2^52")]
    Some(ticks as f64 / tck as f64)
}

/// utime + stime (fields 14 and 15, in clock ticks) of a `/proc/PID/stat`
/// line. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from its closing parenthesis.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Datagrams the kernel dropped in `ns` because a UDP receive queue was
/// full (`Udp: RcvbufErrors`). In the client namespace that is perfdhcp's
/// one socket for every client: a reply lost there is lost by the measuring
/// tool, not by the server. In a server's namespace it is the server's
/// socket: requests that came while it was busy elsewhere (dnsmasq, for
/// one, rewrites and fsyncs its lease file in its only thread). The bench
/// reports both beside the loss.
fn queue_overflows(bench: &Bench, ns: &str) -> Result<u64> {
    let snmp = bench
        .lab
        .exec_ok(ns, "cat", &["/proc/net/snmp"], Duration::from_secs(5))?;
    rcvbuf_errors(&snmp).context("no Udp RcvbufErrors in /proc/net/snmp")
}

/// [`queue_overflows`] summed over `namespaces`; `None` if one cannot be read.
fn total_queue_overflows(bench: &Bench, namespaces: &[String]) -> Option<u64> {
    namespaces
        .iter()
        .map(|ns| queue_overflows(bench, ns).ok())
        .sum()
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

fn print_trial(kind: &str, t: &Trial, m: &Measured) {
    let r = &m.report;
    println!(
        "    {kind} -r {:>6}: {:>8.1} exchanges/s, loss {:>6.2} % (DISCOVER {} sent / OFFER {} / ACK {}, rejected {}; \
         queue overflows: perfdhcp {}, server {}; cores: server {}, perfdhcp {}, softirq {}, others {}) {}",
        t.offered,
        t.achieved,
        t.loss * 100.0,
        r.discover_offer.sent,
        r.discover_offer.received,
        r.request_ack.received,
        r.request_ack.rejected,
        m.overflow.map_or("?".into(), |o| o.to_string()),
        m.server_overflow.map_or("?".into(), |o| o.to_string()),
        m.cpu.map_or("?".into(), |c| format!("{:.2}", c.server)),
        m.cpu.map_or("?".into(), |c| format!("{:.2}", c.perfdhcp)),
        m.cpu.map_or("?".into(), |c| format!("{:.2}", c.softirq)),
        m.cpu.map_or("?".into(), |c| format!("{:.2}", c.others())),
        if t.passed() { "pass" } else { "FAIL" }
    );
}

fn best(outcomes: &[Outcome], server: DhcpServer, load: Load) -> Option<Trial> {
    outcomes
        .iter()
        .find(|o| o.server == server && o.load == load)
        .and_then(|o| o.search.as_ref().ok())
        .and_then(Search::best)
}

fn print_table(outcomes: &[Outcome], opts: &DhcpOptions, elapsed: Duration) {
    println!();
    println!(
        "DHCP: completed 4-way exchanges/s at the highest offered rate losing < {:.0} % ({} s perfdhcp trials, \
         relay {CLIENT_ADDR} -> {VIP}, pool {POOL_SIZE} addresses; bench took {:.0} s)",
        MAX_LOSS * 100.0,
        opts.period.as_secs(),
        elapsed.as_secs_f64()
    );
    println!(
        "{:<42} {:<24} {:>12} {:>10} {:>8} {:>7}",
        "server", "clients", "exchanges/s", "offered/s", "loss", "trials"
    );
    for o in outcomes {
        let label = o.server.label(opts.placement);
        let load = o.load.label();
        match (&o.search, best(outcomes, o.server, o.load)) {
            (Ok(s), Some(b)) => println!(
                "{label:<42} {load:<24} {:>12.1} {:>10} {:>7.2}% {:>7}",
                b.achieved,
                b.offered,
                b.loss * 100.0,
                s.trials.len()
            ),
            (Ok(s), None) => println!(
                "{label:<42} {load:<24} {:>12} {:>10} {:>8} {:>7}",
                "none",
                "-",
                "-",
                s.trials.len()
            ),
            (Err(_), _) => println!("{label:<42} {load:<24} {:>12}", "error"),
        }
    }
    for kea in [DhcpServer::KEA, DhcpServer::KEA_MT] {
        for load in Load::ALL {
            if let (Some(t), Some(k)) = (
                best(outcomes, DhcpServer::Tandem, load),
                best(outcomes, kea, load),
            ) {
                println!(
                    "tandem / {} ({}): {:.3}",
                    kea.name(),
                    load.name(),
                    t.achieved / k.achieved
                );
            }
        }
    }
    println!();
}

/// A server's JSON key stem: its name with `_` for `-` (`kea_persist`).
fn json_key(server: DhcpServer) -> String {
    server.name().replace('-', "_")
}

/// The closing JSON line. The new-client figures keep the keys scripts
/// already read (`tandem_per_s`, `kea_per_s`, `kea_persist_per_s`,
/// `dnsmasq_per_s`, `ratio_vs_kea`); `kea_mt_per_s` and every renew-heavy
/// figure (`*_renew_per_s`, `ratio_vs_kea_renew`, ...) are new, as are
/// `pool_size`, `clients` (the new-client count) and `renew_clients`.
/// Every key is present; a server or load not run is `null`.
fn summary_json(outcomes: &[Outcome], opts: &DhcpOptions) -> serde_json::Value {
    let rate = |s, l| best(outcomes, s, l).map(|t| t.achieved);
    let mut json = serde_json::json!({"bench": "dhcp"});
    let obj = json.as_object_mut().expect("a json! object");
    for load in Load::ALL {
        let suffix = load.json_suffix();
        for server in DhcpServer::ALL {
            obj.insert(
                format!("{}{suffix}_per_s", json_key(server)),
                json_num(rate(server, load), 1),
            );
        }
        for kea in [DhcpServer::KEA, DhcpServer::KEA_MT] {
            let ratio = rate(DhcpServer::Tandem, load)
                .zip(rate(kea, load))
                .filter(|(_, k)| *k > 0.0)
                .map(|(t, k)| t / k);
            let stem = if kea == DhcpServer::KEA {
                String::new()
            } else {
                format!("_{}", json_key(kea).trim_start_matches("kea_"))
            };
            obj.insert(format!("ratio_vs_kea{stem}{suffix}"), json_num(ratio, 3));
        }
    }
    obj.insert("max_loss".into(), MAX_LOSS.into());
    obj.insert("period_s".into(), opts.period.as_secs().into());
    obj.insert("tandem_nodes".into(), opts.placement.tandem_nodes.into());
    obj.insert("pool_size".into(), POOL_SIZE.into());
    obj.insert("clients".into(), NEW_CLIENTS.into());
    obj.insert("renew_clients".into(), RENEW_CLIENTS.into());
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rcvbuf_errors_from_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10 0 7 12 7 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        assert_eq!(rcvbuf_errors(snmp), Some(7));
        assert_eq!(rcvbuf_errors("Ip: a\nIp: 1\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_from_proc_stat() {
        // A real /proc/PID/stat line of kea-dhcp4 (utime 1234, stime 56),
        // and one whose command name holds a space and a parenthesis.
        let kea = "16032 (kea-dhcp4) S 1 16032 16032 0 -1 4194560 3089 0 0 0 1234 56 0 0 20 0 1 0 \
                   1791 99999744 3460 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat_cpu_ticks(kea), Some(1290));
        let odd = "7 (a) b) R 1 7 7 0 -1 0 0 0 0 0 10 5 0 0";
        assert_eq!(stat_cpu_ticks(odd), Some(15));
        assert_eq!(stat_cpu_ticks("7 (x) R 1"), None);
        // This process has used some CPU, and its stat parses.
        let me = processes_cpu_secs(&[std::process::id()]).unwrap();
        assert!(me >= 0.0);
        assert_eq!(processes_cpu_secs(&[]), None);
    }

    #[test]
    fn reads_busy_ticks_from_proc_stat() {
        let stat = "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 50 2 10 500 3 0 1 1 0 0\nintr 1\n";
        assert_eq!(
            busy_ticks(stat),
            Some(Busy {
                busy: 131,
                softirq: 2
            })
        );
        assert_eq!(busy_ticks("cpu0 1 2 3\n"), None);
        assert_eq!(busy_ticks("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert!(machine_busy_secs().is_some_and(|b| b.busy > 0.0 && b.softirq >= 0.0));
        let c = Cpu {
            server: 0.5,
            perfdhcp: 0.4,
            softirq: 0.3,
            machine: 1.9,
        };
        assert!((c.others() - 0.7).abs() < 1e-9);
    }

    #[test]
    fn loads_parse_back_and_fit_the_pool() {
        for l in Load::ALL {
            assert_eq!(Load::from_name(l.name()).unwrap(), l);
            assert!(l.clients() < POOL_SIZE);
        }
        assert!(Load::from_name("release").is_err());
        assert_eq!(Load::Renew.clients(), 150);
        assert_eq!(Load::New.label(), "new clients (-R 500000)");
    }

    #[test]
    fn new_client_trials_may_not_wrap_the_clients() {
        let ten = Duration::from_secs(10);
        check_clients(Load::New, 50_000, ten).unwrap();
        let e = check_clients(Load::New, 50_001, ten)
            .unwrap_err()
            .to_string();
        assert!(e.contains("500010 exchanges"), "{e}");
        // The renew-heavy load wraps on purpose.
        check_clients(Load::Renew, 50_001, ten).unwrap();
        // The probe: 12,000/s for 5 s.
        check_clients(Load::New, 12_000, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn the_header_names_pool_and_clients() {
        let h = pool_header(&Load::ALL);
        assert!(
            h.contains("pool 10.100.0.0-10.111.255.254: 786431 addresses"),
            "{h}"
        );
        assert!(h.contains("clients: 500000 new, 150 renew"), "{h}");
        assert!(h.contains("--dhcp-lease-max=1000000"), "{h}");
    }

    fn outcome(server: DhcpServer, load: Load, achieved: f64) -> Outcome {
        Outcome {
            server,
            load,
            search: Ok(Search {
                trials: vec![Trial {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    offered: achieved as u32,
                    achieved,
                    loss: 0.0,
                }],
            }),
        }
    }

    #[test]
    fn json_keeps_the_old_keys_and_adds_the_variants() {
        let outcomes = vec![
            outcome(DhcpServer::Tandem, Load::New, 9000.0),
            outcome(DhcpServer::KEA, Load::New, 6000.0),
            outcome(DhcpServer::KEA_MT, Load::New, 7500.0),
            outcome(DhcpServer::Tandem, Load::Renew, 8000.0),
            outcome(DhcpServer::KEA, Load::Renew, 4000.0),
            outcome(DhcpServer::Dnsmasq, Load::Renew, 1500.0),
            Outcome {
                server: DhcpServer::Dnsmasq,
                load: Load::New,
                search: Err(anyhow::anyhow!("boom")),
            },
        ];
        let j = summary_json(&outcomes, &DhcpOptions::default());
        assert_eq!(j["bench"], "dhcp");
        assert_eq!(j["tandem_per_s"], 9000.0);
        assert_eq!(j["kea_per_s"], 6000.0);
        assert_eq!(j["kea_mt_per_s"], 7500.0);
        assert_eq!(j["kea_persist_per_s"], serde_json::Value::Null);
        assert_eq!(j["dnsmasq_per_s"], serde_json::Value::Null);
        assert_eq!(j["ratio_vs_kea"], 1.5);
        assert_eq!(j["ratio_vs_kea_mt"], 1.2);
        assert_eq!(j["tandem_renew_per_s"], 8000.0);
        assert_eq!(j["kea_renew_per_s"], 4000.0);
        assert_eq!(j["dnsmasq_renew_per_s"], 1500.0);
        assert_eq!(j["kea_mt_renew_per_s"], serde_json::Value::Null);
        assert_eq!(j["ratio_vs_kea_renew"], 2.0);
        assert_eq!(j["ratio_vs_kea_mt_renew"], serde_json::Value::Null);
        assert_eq!(j["pool_size"], 786_431);
        assert_eq!(j["clients"], 500_000);
        assert_eq!(j["renew_clients"], 150);
        assert_eq!(j["period_s"], 10);
        assert_eq!(j["tandem_nodes"], 1);
        // Every server has both keys, run or not.
        for s in DhcpServer::ALL {
            for l in Load::ALL {
                let k = format!("{}{}_per_s", json_key(s), l.json_suffix());
                assert!(j.get(&k).is_some(), "missing {k}");
            }
        }
    }

    #[test]
    fn an_exhausted_trial_is_told_apart_from_other_failures() {
        let e: anyhow::Error = Exhausted {
            server: DhcpServer::Tandem,
            load: Load::New,
            rate: 9000,
            line: "WARN tandem::dhcp: pool exhausted: no free address to offer\n".into(),
        }
        .into();
        let x = e.downcast_ref::<Exhausted>().unwrap();
        assert_eq!(
            x.to_string(),
            "tandem ran out of addresses at 9000/s under new clients (-R 500000) (pool 786431 \
             addresses): WARN tandem::dhcp: pool exhausted: no free address to offer"
        );
        assert!(anyhow::anyhow!("perfdhcp crashed")
            .downcast_ref::<Exhausted>()
            .is_none());
    }
}
