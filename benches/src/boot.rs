//! `tandem-bench boot`: booting a fleet, tandem (3 nodes, the file put with
//! `tandem artifact put`) against dnsmasq (DHCP + TFTP) + nginx (HTTP,
//! `sendfile on`), in one lab and one run, in three parts:
//!
//! - **storm**: N clients (default 200), each in its own namespace with its
//!   own MAC, do DHCP (busybox udhcpc) and then fetch one 32 MiB file, once
//!   by TFTP (curl, `blksize` 1468, lock-step: curl asks for no
//!   `windowsize`, and dnsmasq could not do it) and once by HTTP (curl).
//!   dnsmasq runs with `--dhcp-lease-max` and `--tftp-max` far above N.
//! - **window**: 50 clients fetch the file by TFTP with atftp asking for
//!   `windowsize` 16 and `blksize` 1468, from tandem and from tftpd-hpa
//!   (which ignores the option and runs lock-step); tandem also with the same
//!   client asking for no window, to show what the window alone buys. Then
//!   the same three rounds with the bench's own client (`tandem-bench
//!   tftp-get`, [`crate::tftpget`]): all 50 transfers from one process, which
//!   costs less CPU than the server it loads. 50 atftp processes cost about
//!   as much as tandem serving them, so on two cores their rows measure the
//!   clients as much as the server (`--window-clients` picks either).
//! - **http**: 50 clients fetch it over HTTP with curl from tandem and from
//!   nginx, and the servers' CPU per GiB served (utime + stime of every
//!   process in the server's namespaces, from `/proc/PID/stat`, sampled
//!   through the round: [`CpuTracker`]).
//!
//! ```text
//!            <prefix>-sw  br0
//!   ┌──────┬──────┬──────┬──────────────────┬──── ... ────┐
//!   n1     n2     n3     n4                 c1            cN
//!   tandem cluster (VIP) dnsmasq + nginx,   udhcpc, curl, atftp
//!                        then tftpd-hpa (VIP)
//! ```
//!
//! Only the system under test is connected to the bridge (the other one's
//! switch ports are down), and every client's neighbour cache is flushed
//! when the VIP changes hands. Clients are real programs, one process per
//! client at a time: on two cores that is heavy, so every round reports
//! the CPU the clients used next to the servers' (the clients' from
//! `getrusage(RUSAGE_CHILDREN)`), to show which side a figure belongs to.
//!
//! The per-client time runs from starting the client's first program (its
//! DHCP client in the storm) to the exit of its last; the wall time from
//! starting the first client to the exit of the last. Storm downloads go to
//! `/dev/null` with their byte count checked (200 × 32 MiB do not fit in
//! tmpfs beside everything else), and the first [`STORM_VERIFIED`] clients
//! of each storm round write to tmpfs and have their sha256 checked; in the
//! other two parts every download is checked.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lab::{describe_output, Lab, LabProcess, INTERFACE, VIP};
use serde_json::json;

use crate::servers::start_tftpd_hpa;
use crate::tftp::{make_world_readable, pseudo_random};
use crate::{
    cluster, interrupt, json_num, require_tools, tail, wait_for, warn_host_services, Bench, TempDir,
};

/// The served file's name.
const FILE: &str = "boot.bin";
/// tandem's cluster, and the namespace of the peers (dnsmasq, nginx, tftpd-hpa).
const TANDEM_NODES: [usize; 3] = [1, 2, 3];
const PEER_NODE: usize = 4;
/// The pool every DHCP server hands out, in the lab's 10.99.0.0/16 (clear
/// of node, VIP and static client addresses), far larger than any client count.
const POOL_START: &str = "10.99.16.1";
const POOL_END: &str = "10.99.31.254";
const POOL_SIZE: usize = 16 * 256 - 2;
/// Storm clients whose download is kept and checked (the rest count bytes).
pub const STORM_VERIFIED: usize = 2;
/// How often the driver looks at its clients.
const POLL: Duration = Duration::from_millis(10);
/// How long the tandem cluster may take to serve again before a round.
const AGREE: Duration = Duration::from_secs(30);
/// Runs of one client program (DHCP or fetch) before the round fails.
const MAX_ATTEMPTS: usize = 4;
/// What tandem logs when a leader stops serving (`tandem::transition`).
const STEP_DOWN: &str = "stepping down";

/// The servers of a round: their namespaces (for CPU) and tandem's logs
/// (for step-downs; empty for the peers).
struct Target {
    ns: Vec<String>,
    logs: Vec<PathBuf>,
}

/// Lines containing `needle` appended to `path` after byte `from`.
fn count_since(path: &Path, from: u64, needle: &str) -> usize {
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[from..])
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// The length of each of `target`'s logs, to count step-downs from.
fn log_marks(target: &Target) -> Vec<u64> {
    target
        .logs
        .iter()
        .map(|l| std::fs::metadata(l).map_or(0, |m| m.len()))
        .collect()
}

/// Step-downs logged since `marks` ([`log_marks`]); `None` for the peers.
fn stepdowns(target: &Target, marks: &[u64]) -> Option<usize> {
    (!target.logs.is_empty()).then(|| {
        target
            .logs
            .iter()
            .zip(marks)
            .map(|(l, &from)| count_since(l, from, STEP_DOWN))
            .sum()
    })
}

/// The TFTP clients of the window part.
#[derive(Clone, Copy, Debug)]
pub struct WindowClients {
    /// atftp, one process per transfer.
    pub atftp: bool,
    /// The bench's own (`tandem-bench tftp-get`), one process for all
    /// transfers, cheaper than the server it loads.
    pub bench: bool,
}

/// Knobs of the boot bench.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// Clients of the storm.
    pub storm_clients: usize,
    /// Clients of the window and HTTP parts.
    pub clients: usize,
    pub size_mib: usize,
    pub blksize: u16,
    pub windowsize: u16,
    pub storm: bool,
    pub window: bool,
    pub http: bool,
    pub window_clients: WindowClients,
    /// Give up on a round after this long.
    pub timeout: Duration,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            storm_clients: 200,
            clients: 50,
            size_mib: 32,
            blksize: 1468,
            windowsize: 16,
            storm: true,
            window: true,
            http: true,
            window_clients: WindowClients {
                atftp: true,
                bench: true,
            },
            timeout: Duration::from_secs(300),
        }
    }
}

/// One timed round against one server.
#[derive(Clone, Debug)]
struct Round {
    wall: Duration,
    /// Each client's time, start of its first program to exit of its last.
    per_client: Vec<Duration>,
    /// Each client's DHCP time (storm only).
    dhcp: Vec<Duration>,
    bytes: u64,
    /// CPU of every process in the server's namespaces during the round.
    server_cpu: Duration,
    /// CPU of the client programs (reaped children of this driver).
    client_cpu: Duration,
    /// Client programs that failed and were run again.
    retries: usize,
    /// tandem: how often a node stepped down during the round.
    stepdowns: Option<usize>,
    /// Why the round did not complete (the figures cover the clients that
    /// finished), or why it was skipped.
    failed: Option<String>,
}

/// Both storm rounds skipped or failed for the same reason.
fn pair(why: String) -> (Round, Round) {
    (Round::skipped(why.clone()), Round::skipped(why))
}

impl Round {
    fn skipped(why: String) -> Round {
        Round {
            wall: Duration::ZERO,
            per_client: Vec::new(),
            dhcp: Vec::new(),
            bytes: 0,
            server_cpu: Duration::ZERO,
            client_cpu: Duration::ZERO,
            retries: 0,
            stepdowns: None,
            failed: Some(why),
        }
    }

    #[allow(clippy::cast_precision_loss, reason = "a few GiB at most")]
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / f64::from(1u32 << 20) / self.wall.as_secs_f64()
    }

    #[allow(clippy::cast_precision_loss, reason = "a few GiB at most")]
    fn server_ms_per_gib(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1000.0 / (self.bytes as f64 / f64::from(1u32 << 30))
    }

    fn json(&self) -> serde_json::Value {
        let mut v = json!({
            "wall_s": json_num(Some(self.wall.as_secs_f64()), 3),
            "p50_s": json_num(Some(percentile(&self.per_client, 50).as_secs_f64()), 3),
            "p99_s": json_num(Some(percentile(&self.per_client, 99).as_secs_f64()), 3),
            "mib_s": json_num(Some(self.mib_s()), 1),
            "server_cpu_s": json_num(Some(self.server_cpu.as_secs_f64()), 2),
            "client_cpu_s": json_num(Some(self.client_cpu.as_secs_f64()), 2),
            "server_cpu_ms_per_gib": json_num(Some(self.server_ms_per_gib()), 0),
            "retries": self.retries,
            "failed": self.failed,
        });
        if let Some(n) = self.stepdowns {
            v["stepdowns"] = json!(n);
        }
        if !self.dhcp.is_empty() {
            v["dhcp_p50_s"] = json_num(Some(percentile(&self.dhcp, 50).as_secs_f64()), 3);
            v["dhcp_p99_s"] = json_num(Some(percentile(&self.dhcp, 99).as_secs_f64()), 3);
        }
        v
    }
}

/// The `p`th percentile (nearest rank) of `xs`; zero when empty.
#[must_use]
fn percentile(xs: &[Duration], p: usize) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    let mut v = xs.to_vec();
    v.sort();
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
    v[rank - 1]
}

/// What one client runs: optionally DHCP first, then one fetch.
struct ClientPlan {
    dhcp: bool,
    program: &'static str,
    args: Vec<String>,
    /// Where the fetch writes (checked afterwards), or `None` for /dev/null
    /// with curl's byte count checked.
    keep: Option<PathBuf>,
}

/// A client's progress.
enum Step {
    Dhcp(LabProcess),
    Fetch(LabProcess),
    Done,
}

/// Runs the selected parts and returns one JSON object per part.
pub fn run(opts: &BootOptions) -> Result<Vec<serde_json::Value>> {
    ensure!(
        opts.storm_clients > 0 && opts.clients > 0 && opts.size_mib > 0,
        "client counts and size must be positive"
    );
    ensure!(
        opts.storm_clients < POOL_SIZE && opts.clients < POOL_SIZE,
        "at most {} clients fit the pool",
        POOL_SIZE - 1
    );
    ensure!(opts.storm || opts.window || opts.http, "no part selected");
    require_tools(&[
        "curl",
        "atftp",
        "busybox",
        "dnsmasq",
        "nginx",
        "in.tftpd",
        "sha256sum",
        "ip",
    ])?;
    warn_host_services(&["dnsmasq", "nginx", "in.tftpd"]);

    let n_clients = if opts.storm {
        opts.storm_clients.max(opts.clients)
    } else {
        opts.clients
    };
    let tandem_bin = lab::tandem_bin();
    ensure!(
        tandem_bin.exists(),
        "tandem binary {} does not exist: build it with `cargo build --release -p tandem` or set TANDEM_BIN",
        tandem_bin.display()
    );
    let lab = Lab::builder()
        .nodes(PEER_NODE)
        .clients(n_clients)
        .tandem_bin(&tandem_bin)
        .build()?;
    let bench = Bench { lab, tandem_bin };
    println!(
        "=== lab {}: tandem in n1-n3, dnsmasq + nginx then tftpd-hpa in n4, {n_clients} client namespaces",
        bench.lab.prefix()
    );
    let ctx = Ctx::new(&bench, opts)?;
    // Without an address the clients of the window and HTTP parts could not
    // speak; the storm gives them leases, otherwise they get static ones.
    if !opts.storm {
        for j in 1..=opts.clients {
            bench
                .lab
                .add_client_ip(j, &format!("10.99.{}.{}/16", 3 + j / 250, 1 + j % 250))?;
        }
    }

    println!("=== tandem: a 3-node cluster, {FILE} put with `tandem artifact put`");
    activate(&bench, &TANDEM_NODES)?;
    let leader = cluster::form(&bench, &TANDEM_NODES, &tandem_service())?;
    put_artifact(&bench, leader, &ctx.source)?;
    let tandem = Target {
        ns: TANDEM_NODES.iter().map(|&i| bench.lab.node_ns(i)).collect(),
        logs: TANDEM_NODES
            .iter()
            .map(|&i| bench.lab.node_log_path(i))
            .collect(),
    };
    let tandem = ctx.side(&tandem, "tandem", true);
    cluster::stop(&bench, &TANDEM_NODES);
    let tandem = tandem?;

    println!("=== dnsmasq (DHCP, TFTP) + nginx (HTTP), then tftpd-hpa");
    bench.give_vip(PEER_NODE)?;
    activate(&bench, &[PEER_NODE])?;
    let peers = ctx.peers(&Target {
        ns: vec![bench.lab.node_ns(PEER_NODE)],
        logs: Vec::new(),
    })?;
    drop(ctx);
    drop(bench);

    let mut out = Vec::new();
    if let (Some(t), Some(p)) = (&tandem.storm, &peers.storm) {
        out.push(report_storm(opts, t, p));
    }
    if opts.window {
        out.push(report_window(opts, &tandem, &peers));
    }
    if let (Some(t), Some(p)) = (&tandem.http, &peers.http) {
        out.push(report_http(opts, t, p));
    }
    Ok(out)
}

/// What one system measured, per part.
#[derive(Default)]
struct Side {
    /// TFTP then HTTP.
    storm: Option<(Round, Round)>,
    window: Option<Round>,
    /// tandem only: the window part's client asking for no window.
    lockstep: Option<Round>,
    /// The same two with the bench's own client (`tftp-get`).
    window_bench: Option<Round>,
    lockstep_bench: Option<Round>,
    http: Option<Round>,
}

/// The lab, the file and the places downloads go, for every round.
struct Ctx<'a> {
    bench: &'a Bench,
    opts: &'a BootOptions,
    /// The file, outside every server's directory (`artifact put` reads it).
    source: PathBuf,
    sha256: String,
    size: u64,
    /// The peers' served directory (dnsmasq's TFTP root, nginx's root, tftpd-hpa's).
    peer_root: PathBuf,
    downloads: TempDir,
}

impl<'a> Ctx<'a> {
    fn new(bench: &'a Bench, opts: &'a BootOptions) -> Result<Ctx<'a>> {
        let source = bench.lab.root().join(FILE);
        println!("=== a {} MiB file ({FILE})", opts.size_mib);
        std::fs::write(&source, pseudo_random(opts.size_mib << 20))
            .with_context(|| format!("writing {}", source.display()))?;
        let peer_root = bench.lab.node_dir(PEER_NODE).join("srv");
        std::fs::create_dir_all(&peer_root)
            .with_context(|| format!("creating {}", peer_root.display()))?;
        let served = peer_root.join(FILE);
        std::fs::copy(&source, &served)
            .with_context(|| format!("copying to {}", served.display()))?;
        make_world_readable(&served)?;
        let sha256 = lab::sha256_file(&source)?;
        ensure!(
            lab::sha256_file(&served)? == sha256,
            "the copies of {FILE} differ"
        );
        let downloads = bench.downloads_dir("boot");
        std::fs::create_dir_all(&downloads.0)
            .with_context(|| format!("creating {}", downloads.0.display()))?;
        Ok(Ctx {
            bench,
            opts,
            source,
            sha256,
            size: (opts.size_mib as u64) << 20,
            peer_root,
            downloads,
        })
    }

    /// tandem's rounds: every selected part against the cluster.
    fn side(&self, target: &Target, name: &str, tandem: bool) -> Result<Side> {
        let o = self.opts;
        let mut side = Side::default();
        if o.storm {
            side.storm = Some(self.part(target, || self.storm(target, name), pair)?);
        }
        if o.http {
            side.http = Some(self.part(target, || self.http(target, name), Round::skipped)?);
        }
        if o.window && tandem && o.window_clients.atftp {
            side.window =
                Some(self.part(target, || self.window(target, name, true), Round::skipped)?);
            side.lockstep = Some(self.part(
                target,
                || self.window(target, &format!("{name} (no window)"), false),
                Round::skipped,
            )?);
        }
        if o.window && tandem && o.window_clients.bench {
            side.window_bench = Some(self.part(
                target,
                || self.window_bench(target, name, true),
                Round::skipped,
            )?);
            side.lockstep_bench = Some(self.part(
                target,
                || self.window_bench(target, &format!("{name} (no window)"), false),
                Round::skipped,
            )?);
        }
        Ok(side)
    }

    /// Runs one part. For tandem it first waits (up to [`AGREE`]) for a
    /// serving leader: one that never came back after a failed round would
    /// only time out every later one. A part that cannot run or fails is
    /// recorded (`fail(why)`) and the bench goes on; an interrupt ends it.
    fn part<T>(
        &self,
        target: &Target,
        f: impl FnOnce() -> Result<T>,
        fail: impl Fn(String) -> T,
    ) -> Result<T> {
        if !target.logs.is_empty() {
            if let Err(e) = cluster::wait_leader_serving(self.bench, &TANDEM_NODES, AGREE) {
                let why = format!("skipped: no serving leader: {e:#}");
                eprintln!("    {}", why.lines().next().unwrap_or_default());
                return Ok(fail(why));
            }
        }
        match f() {
            Ok(r) => Ok(r),
            Err(e) => {
                interrupt::check()?;
                let why = format!("failed: {e:#}");
                eprintln!("    {why}");
                Ok(fail(why))
            }
        }
    }

    /// dnsmasq + nginx for the storm and HTTP parts, then tftpd-hpa for the
    /// window part.
    fn peers(&self, target: &Target) -> Result<Side> {
        let bench = self.bench;
        let ns = &target.ns[0];
        let dir = bench.lab.node_dir(PEER_NODE);
        let mut side = Side::default();
        if self.opts.storm || self.opts.http {
            let nginx = start_nginx(bench, &dir, &self.peer_root)?;
            let mut dnsmasq = None;
            if self.opts.storm {
                let log = dir.join("dnsmasq.log");
                let p = bench.spawn(ns, "dnsmasq", &dnsmasq_args(&dir, &self.peer_root), &log)?;
                bench.wait_udp_bound(ns, 69, &p, &log, Duration::from_secs(20))?;
                dnsmasq = Some(p);
                side.storm =
                    Some(self.part(target, || self.storm(target, "dnsmasq + nginx"), pair)?);
            }
            if self.opts.http {
                side.http =
                    Some(self.part(target, || self.http(target, "nginx"), Round::skipped)?);
            }
            if let Some(p) = dnsmasq {
                p.kill_and_wait();
            }
            nginx.kill_and_wait();
        }
        if self.opts.window {
            let hpa = start_tftpd_hpa(bench, PEER_NODE, &self.peer_root)?;
            let mut r = Ok(());
            if self.opts.window_clients.atftp {
                match self.part(
                    target,
                    || self.window(target, "tftpd-hpa", true),
                    Round::skipped,
                ) {
                    Ok(x) => side.window = Some(x),
                    Err(e) => r = Err(e),
                }
            }
            if self.opts.window_clients.bench && r.is_ok() {
                match self.part(
                    target,
                    || self.window_bench(target, "tftpd-hpa", true),
                    Round::skipped,
                ) {
                    Ok(x) => side.window_bench = Some(x),
                    Err(e) => r = Err(e),
                }
            }
            hpa.kill_and_wait();
            r?;
        }
        Ok(side)
    }

    /// The storm: DHCP then TFTP, DHCP then HTTP, each with a warm-up first.
    fn storm(&self, target: &Target, name: &str) -> Result<(Round, Round)> {
        let n = self.opts.storm_clients;
        let mut rounds = Vec::new();
        for proto in ["tftp", "http"] {
            let plan = |j: usize| {
                let keep = (j <= STORM_VERIFIED).then(|| self.download(j));
                let out = keep
                    .as_ref()
                    .map_or_else(|| "/dev/null".to_owned(), |p| p.display().to_string());
                let mut args = vec!["-sS".to_owned(), "-w".into(), "%{size_download}\\n".into()];
                if proto == "tftp" {
                    args.extend(["--tftp-blksize".into(), self.opts.blksize.to_string()]);
                }
                args.extend([
                    "--max-time".into(),
                    self.opts.timeout.as_secs().to_string(),
                    "-o".into(),
                    out,
                    format!("{proto}://{VIP}/{FILE}"),
                ]);
                ClientPlan {
                    dhcp: true,
                    program: "curl",
                    args,
                    keep,
                }
            };
            if rounds.iter().any(|r: &Round| r.failed.is_some()) && !target.logs.is_empty() {
                if let Err(e) = cluster::wait_leader_serving(self.bench, &TANDEM_NODES, AGREE) {
                    rounds.push(Round::skipped(format!("skipped: no serving leader: {e:#}")));
                    continue;
                }
            }
            self.warm_up(&plan, name, proto)?;
            let r = self.round(target, n, &plan)?;
            println!(
                "    {name}: storm {proto}: {n} clients (DHCP + {} MiB) in {:.2} s",
                self.opts.size_mib,
                r.wall.as_secs_f64()
            );
            rounds.push(r);
        }
        let http = rounds.pop().expect("two rounds");
        let tftp = rounds.pop().expect("two rounds");
        Ok((tftp, http))
    }

    /// The window part: atftp with (or without) `windowsize`.
    fn window(&self, target: &Target, name: &str, windowed: bool) -> Result<Round> {
        let plan = |j: usize| {
            let keep = self.download(j);
            let mut args = vec![
                "--option".to_owned(),
                format!("blksize {}", self.opts.blksize),
            ];
            if windowed {
                args.extend([
                    "--option".into(),
                    format!("windowsize {}", self.opts.windowsize),
                ]);
            }
            args.extend([
                "-g".into(),
                "-r".into(),
                FILE.into(),
                "-l".into(),
                keep.display().to_string(),
                VIP.to_string(),
            ]);
            ClientPlan {
                dhcp: false,
                program: "atftp",
                args,
                keep: Some(keep),
            }
        };
        self.warm_up(&plan, name, "tftp")?;
        let r = self.round(target, self.opts.clients, &plan)?;
        println!(
            "    {name}: {} atftp clients in {:.2} s",
            self.opts.clients,
            r.wall.as_secs_f64()
        );
        Ok(r)
    }

    /// The window part with the bench's own client (`tandem-bench
    /// tftp-get`): one process in client 1's namespace runs every transfer,
    /// after one transfer alone as the warm-up.
    fn window_bench(&self, target: &Target, name: &str, windowed: bool) -> Result<Round> {
        let warm = self
            .bench_client_round(
                &Target {
                    ns: Vec::new(),
                    logs: Vec::new(),
                },
                1,
                windowed,
            )
            .with_context(|| format!("{name}: warm-up bench-client fetch"))?;
        if let Some(why) = warm.failed {
            bail!("{name}: warm-up bench-client fetch: {why}");
        }
        println!(
            "    {name}: warm-up (bench client): one transfer alone took {:.2} s",
            warm.wall.as_secs_f64()
        );
        let r = self.bench_client_round(target, self.opts.clients, windowed)?;
        println!(
            "    {name}: {} transfers from one bench-client process in {:.2} s",
            self.opts.clients,
            r.wall.as_secs_f64()
        );
        Ok(r)
    }

    /// One `tftp-get` process fetching `n` copies at once. Per-client times
    /// are the client's own (RRQ to the final ACK); the wall time runs from
    /// spawning the process to its exit.
    fn bench_client_round(&self, target: &Target, n: usize, windowed: bool) -> Result<Round> {
        let bench = self.bench;
        let log = self.log(1);
        let plans: Vec<ClientPlan> = (1..=n)
            .map(|j| ClientPlan {
                dhcp: false,
                program: "tandem-bench",
                args: Vec::new(),
                keep: Some(self.download(j)),
            })
            .collect();
        for path in plans.iter().filter_map(|p| p.keep.as_ref()).chain([&log]) {
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        let exe = std::env::current_exe().context("finding the tandem-bench binary")?;
        let exe = exe.to_str().context("binary path is not UTF-8")?.to_owned();
        let mut args = vec![
            "tftp-get".to_owned(),
            "--server".into(),
            format!("{VIP}:69"),
            "--file".into(),
            FILE.into(),
            "--count".into(),
            n.to_string(),
            "--blksize".into(),
            self.opts.blksize.to_string(),
            "--dir".into(),
            self.downloads.0.display().to_string(),
            "--timeout-secs".into(),
            self.opts.timeout.as_secs().to_string(),
        ];
        if windowed {
            args.extend(["--windowsize".into(), self.opts.windowsize.to_string()]);
        }
        let mut server = CpuTracker::new(&target.ns);
        let marks = log_marks(target);
        let client0 = children_cpu();
        let start = Instant::now();
        let p = bench.spawn(&bench.lab.client_ns(1), &exe, &args, &log)?;
        let deadline = start + self.opts.timeout + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = p.try_status() {
                break Some(st);
            }
            server.sample_every(SAMPLE);
            if let Err(e) = interrupt::check() {
                p.kill_and_wait();
                return Err(e);
            }
            if Instant::now() >= deadline {
                p.kill_and_wait();
                break None;
            }
            std::thread::sleep(POLL);
        };
        let wall = start.elapsed();
        let client_cpu = children_cpu().saturating_sub(client0);
        server.sample();
        let server_cpu = server.used();
        let report = std::fs::read_to_string(&log).unwrap_or_default();
        let ok = crate::tftpget::parse_report(&report);
        let mut finished = vec![false; n];
        let mut per_client = Vec::with_capacity(n);
        for &(j, d, bytes) in &ok {
            ensure!(
                (1..=n).contains(&j) && bytes == self.size,
                "bench client: transfer {j} reported {bytes} bytes, want {}",
                self.size
            );
            finished[j - 1] = true;
            per_client.push(d);
        }
        let failed = match status {
            Some(st) if st.success() && ok.len() == n => None,
            Some(st) => Some(format!("bench client exited ({st}): {}", tail(&log, 3))),
            None => Some(format!(
                "bench client still running after {:?}",
                self.opts.timeout
            )),
        };
        self.check(&plans, &finished)?;
        if let Some(why) = &failed {
            eprintln!("    round failed: {why}");
        }
        Ok(Round {
            wall,
            bytes: self.size * per_client.len() as u64,
            per_client,
            dhcp: Vec::new(),
            failed,
            server_cpu,
            client_cpu,
            retries: 0,
            stepdowns: stepdowns(target, &marks),
        })
    }

    /// The HTTP part: curl into tmpfs.
    fn http(&self, target: &Target, name: &str) -> Result<Round> {
        let plan = |j: usize| {
            let keep = self.download(j);
            ClientPlan {
                dhcp: false,
                program: "curl",
                args: vec![
                    "-sS".to_owned(),
                    "-w".into(),
                    "%{size_download}\\n".into(),
                    "--max-time".into(),
                    self.opts.timeout.as_secs().to_string(),
                    "-o".into(),
                    keep.display().to_string(),
                    format!("http://{VIP}/{FILE}"),
                ],
                keep: Some(keep),
            }
        };
        self.warm_up(&plan, name, "http")?;
        let r = self.round(target, self.opts.clients, &plan)?;
        println!(
            "    {name}: http: {} curl clients in {:.2} s",
            self.opts.clients,
            r.wall.as_secs_f64()
        );
        Ok(r)
    }

    fn download(&self, j: usize) -> PathBuf {
        self.downloads.0.join(format!("c{j}.bin"))
    }

    fn log(&self, j: usize) -> PathBuf {
        self.downloads.0.join(format!("c{j}.log"))
    }

    /// One client alone, untimed: proves the server serves and warms the
    /// page cache for every server alike.
    fn warm_up(&self, plan: &dyn Fn(usize) -> ClientPlan, name: &str, proto: &str) -> Result<()> {
        let r = self
            .round(
                &Target {
                    ns: Vec::new(),
                    logs: Vec::new(),
                },
                1,
                plan,
            )
            .with_context(|| format!("{name}: warm-up {proto} fetch"))?;
        if let Some(why) = r.failed {
            bail!("{name}: warm-up {proto} fetch: {why}");
        }
        println!(
            "    {name}: warm-up {proto}: one client alone took {:.2} s",
            r.wall.as_secs_f64()
        );
        Ok(())
    }

    /// Runs clients 1..=n at once, each per `plan`, and checks every result.
    #[allow(
        clippy::too_many_lines,
        reason = "one client state machine with its timing and CPU accounting"
    )]
    fn round(
        &self,
        target: &Target,
        n: usize,
        plan: &dyn Fn(usize) -> ClientPlan,
    ) -> Result<Round> {
        let bench = self.bench;
        let script = bench.lab.udhcpc_script()?;
        let script = script.to_str().context("lab path is not UTF-8")?.to_owned();
        let plans: Vec<ClientPlan> = (1..=n).map(plan).collect();
        for (j, p) in (1..=n).zip(&plans) {
            for path in p.keep.iter().chain(std::iter::once(&self.log(j))) {
                if path.exists() {
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing {}", path.display()))?;
                }
            }
        }
        let mut server = CpuTracker::new(&target.ns);
        let marks = log_marks(target);
        let client0 = children_cpu();
        let start = Instant::now();
        let spawn = |k: usize, dhcp: bool| -> Result<LabProcess> {
            let j = k + 1;
            let ns = bench.lab.client_ns(j);
            if dhcp {
                // Retries like a boot ROM's: discover up to 5 times, 2 s apart,
                // then start over after 1 s, until the round's timeout.
                let args = [
                    "udhcpc", "-f", "-q", "-i", INTERFACE, "-t", "5", "-T", "2", "-A", "1", "-s",
                    &script,
                ];
                bench.spawn(&ns, "busybox", &args, &self.log(j))
            } else {
                bench.spawn(&ns, plans[k].program, &plans[k].args, &self.log(j))
            }
        };
        let mut steps = Vec::with_capacity(n);
        let mut began = Vec::with_capacity(n);
        let mut dhcp_done = vec![None; n];
        let mut done = vec![None; n];
        let mut retries = 0usize;
        let mut failed: Option<String> = None;
        let mut attempts = vec![1usize; n];
        for (k, p) in plans.iter().enumerate() {
            began.push(Instant::now());
            steps.push(if p.dhcp {
                Step::Dhcp(spawn(k, true)?)
            } else {
                Step::Fetch(spawn(k, false)?)
            });
        }
        let deadline = start + self.opts.timeout;
        loop {
            let mut pending = 0;
            for (k, step) in steps.iter_mut().enumerate() {
                let j = k + 1;
                let now = Instant::now();
                let (p, dhcp) = match step {
                    Step::Done => continue,
                    Step::Dhcp(p) => (p.clone(), true),
                    Step::Fetch(p) => (p.clone(), false),
                };
                pending += 1;
                let Some(st) = p.try_status() else {
                    continue;
                };
                if st.success() {
                    if dhcp {
                        dhcp_done[k] = Some(now - began[k]);
                        *step = Step::Fetch(spawn(k, false)?);
                    } else {
                        done[k] = Some(now - began[k]);
                        *step = Step::Done;
                        pending -= 1;
                    }
                    continue;
                }
                // A failed fetch is retried at once, as boot clients do; the
                // retries are counted in the figures.
                let what = if dhcp { "udhcpc" } else { plans[k].program };
                if attempts[k] >= MAX_ATTEMPTS {
                    failed.get_or_insert_with(|| {
                        format!(
                            "client {j}: {what} failed {MAX_ATTEMPTS} times, last ({st}): {}",
                            tail(&self.log(j), 2)
                        )
                    });
                    *step = Step::Done;
                    pending -= 1;
                    continue;
                }
                attempts[k] += 1;
                retries += 1;
                if retries <= 3 {
                    eprintln!(
                        "    client {j}: {what} failed ({st}), retrying: {}",
                        tail(&self.log(j), 1)
                    );
                }
                *step = if dhcp {
                    Step::Dhcp(spawn(k, true)?)
                } else {
                    Step::Fetch(spawn(k, false)?)
                };
            }
            if pending == 0 {
                break;
            }
            server.sample_every(SAMPLE);
            interrupt::check()?;
            if Instant::now() >= deadline {
                failed.get_or_insert_with(|| {
                    format!(
                        "{pending} of {n} clients still running after {:?}",
                        self.opts.timeout
                    )
                });
                for step in &mut steps {
                    if let Step::Dhcp(p) | Step::Fetch(p) = step {
                        p.kill_and_wait();
                    }
                    *step = Step::Done;
                }
                break;
            }
            std::thread::sleep(POLL);
        }
        let wall = start.elapsed();
        let client_cpu = children_cpu().saturating_sub(client0);
        server.sample();
        let server_cpu = server.used();
        let stepdowns = stepdowns(target, &marks);
        let finished: Vec<bool> = done.iter().map(Option::is_some).collect();
        self.check(&plans, &finished)?;
        if let Some(why) = &failed {
            eprintln!("    round failed: {why}");
        }
        let per_client: Vec<Duration> = done.into_iter().flatten().collect();
        Ok(Round {
            wall,
            bytes: self.size * per_client.len() as u64,
            per_client,
            dhcp: dhcp_done.into_iter().flatten().collect(),
            failed,
            server_cpu,
            client_cpu,
            retries,
            stepdowns,
        })
    }

    /// Every kept download has the file's sha256 (one `sha256sum` for all)
    /// and is deleted; every other reported the file's size.
    fn check(&self, plans: &[ClientPlan], finished: &[bool]) -> Result<()> {
        for (k, p) in plans.iter().enumerate() {
            let j = k + 1;
            if p.keep.is_none() && finished[k] {
                let log = std::fs::read_to_string(self.log(j)).unwrap_or_default();
                let got = log.lines().last().unwrap_or("").trim();
                ensure!(
                    got == self.size.to_string(),
                    "client {j} fetched {got:?} bytes, want {}: {}",
                    self.size,
                    tail(&self.log(j), 5)
                );
            }
        }
        let kept: Vec<&PathBuf> = plans
            .iter()
            .zip(finished)
            .filter(|(_, &f)| f)
            .filter_map(|(p, _)| p.keep.as_ref())
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        let out = Command::new("sha256sum")
            .args(&kept)
            .output()
            .context("running sha256sum")?;
        ensure!(out.status.success(), "sha256sum: {}", describe_output(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let sums: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        ensure!(
            sums.len() == kept.len(),
            "sha256sum listed {} of {} downloads",
            sums.len(),
            kept.len()
        );
        for (path, sum) in kept.iter().zip(&sums) {
            ensure!(
                *sum == self.sha256,
                "{} has sha256 {sum}, want {}",
                path.display(),
                self.sha256
            );
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        }
        interrupt::check()?;
        Ok(())
    }
}

/// Connects `nodes` to the bridge (and no other server), then flushes every
/// client's neighbour cache so that the VIP is resolved afresh.
fn activate(bench: &Bench, nodes: &[usize]) -> Result<()> {
    for i in 1..=bench.lab.node_count() {
        bench.lab.set_node_connected(i, nodes.contains(&i))?;
    }
    for j in 1..=bench.lab.client_count() {
        bench.ip(
            &bench.lab.client_ns(j),
            &["neigh", "flush", "dev", INTERFACE],
        )?;
    }
    Ok(())
}

/// tandem's service config: the pool the peers hand out too, no profile.
fn tandem_service() -> String {
    format!(
        "# tandem-bench boot: the same pool as dnsmasq.\n\
         [[subnet]]\n\
         cidr = \"10.99.0.0/16\"\n\
         pools = [\"{POOL_START}-{POOL_END}\"]\n\
         router = \"10.99.0.1\"\n\
         lease_time = 600\n"
    )
}

/// `tandem artifact put FILE --name boot.bin` on the leader, then waits
/// until all three nodes hold it (a follower fetches it over HTTP).
fn put_artifact(bench: &Bench, leader: usize, source: &Path) -> Result<()> {
    let src = source.to_str().context("lab path is not UTF-8")?;
    let t = Instant::now();
    let out = bench
        .lab
        .tandem(leader, &["artifact", "put", src, "--name", FILE])?;
    ensure!(
        out.status.success(),
        "tandem artifact put: {}",
        describe_output(&out)
    );
    let put = t.elapsed();
    wait_for(
        Duration::from_secs(60),
        "every node to hold the artifact",
        || {
            let out = bench.lab.tandem(leader, &["artifact", "list", "--json"])?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            Ok(v.as_array().is_some_and(|l| {
                l.iter().any(|a| {
                    a["name"].as_str() == Some(FILE)
                        && a["holders"]
                            .as_array()
                            .is_some_and(|h| h.len() == TANDEM_NODES.len())
                })
            }))
        },
    )?;
    println!(
        "    artifact put took {:.2} s; held by all {} nodes after {:.2} s",
        put.as_secs_f64(),
        TANDEM_NODES.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// dnsmasq as DHCP and TFTP server on the VIP, its limits far above the
/// client count, as root (so that its TFTP root needs no permission games).
fn dnsmasq_args(dir: &Path, root: &Path) -> Vec<String> {
    vec![
        "--keep-in-foreground".into(),
        "--no-daemon".into(),
        "--port=0".into(),
        format!("--interface={INTERFACE}"),
        "--bind-interfaces".into(),
        format!("--dhcp-range={POOL_START},{POOL_END},255.255.0.0,600"),
        "--dhcp-option=option:router,10.99.0.1".into(),
        format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()),
        format!("--dhcp-lease-max={}", POOL_SIZE + 1),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        "--quiet-dhcp".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--pid-file=".into(),
        "--user=root".into(),
        "--enable-tftp".into(),
        format!("--tftp-root={}", root.display()),
        format!("--tftp-max={}", POOL_SIZE + 1),
    ]
}

/// nginx's whole config: the VIP on port 80, `sendfile on`, no access log.
fn nginx_config(dir: &Path, root: &Path) -> String {
    let d = dir.display();
    format!(
        "# tandem-bench boot: nginx serving the boot file.\n\
         daemon off;\n\
         master_process on;\n\
         user root;\n\
         worker_processes 2;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   keepalive_timeout 30;\n\
         \x20   default_type application/octet-stream;\n\
         \x20   client_body_temp_path {d}/nginx-tmp/body;\n\
         \x20   proxy_temp_path {d}/nginx-tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/nginx-tmp/fastcgi;\n\
         \x20   server {{\n\
         \x20       listen {VIP}:80;\n\
         \x20       root {};\n\
         \x20   }}\n\
         }}\n",
        root.display()
    )
}

fn start_nginx(bench: &Bench, dir: &Path, root: &Path) -> Result<LabProcess> {
    let conf = dir.join("nginx.conf");
    std::fs::create_dir_all(dir.join("nginx-tmp"))?;
    std::fs::write(&conf, nginx_config(dir, root))
        .with_context(|| format!("writing {}", conf.display()))?;
    let ns = bench.lab.node_ns(PEER_NODE);
    let log = dir.join("nginx.log");
    let conf_s = conf.display().to_string();
    let p = bench.spawn(
        &ns,
        "nginx",
        &[
            "-c",
            &conf_s,
            "-e",
            &format!("{}/nginx-error.log", dir.display()),
        ],
        &log,
    )?;
    wait_for(Duration::from_secs(20), "nginx to listen on VIP:80", || {
        if let Some(st) = p.try_status() {
            bail!(
                "nginx exited ({st}): {}{}",
                tail(&log, 10),
                tail(&dir.join("nginx-error.log"), 10)
            );
        }
        let out = bench
            .lab
            .exec_ok(&ns, "ss", &["-Hltn"], Duration::from_secs(10))?;
        Ok(out.contains(&format!("{VIP}:80")))
    })?;
    Ok(p)
}

/// The CPU used by every process of some namespaces over a round: each
/// process's utime + stime, sampled at the start, every [`SAMPLE`] and at
/// the end, summed over last-seen minus first-seen (0 for processes born
/// during the round). Sampling, not the parents' `cutime`, because
/// tftpd-hpa's per-transfer children are never waited for and so never
/// show up in their parent's figures; such a child's last moments before
/// its exit (under one [`SAMPLE`]) are missed.
struct CpuTracker<'a> {
    nss: &'a [String],
    first: HashMap<i32, u64>,
    last: HashMap<i32, u64>,
    sampled: Instant,
}

/// How often [`CpuTracker`] looks (one `ip netns pids` per namespace).
const SAMPLE: Duration = Duration::from_millis(250);

impl<'a> CpuTracker<'a> {
    fn new(nss: &'a [String]) -> Self {
        let mut t = CpuTracker {
            nss,
            first: HashMap::new(),
            last: HashMap::new(),
            sampled: Instant::now(),
        };
        t.sample();
        t.first = t.last.clone();
        t
    }

    fn sample_every(&mut self, every: Duration) {
        if self.sampled.elapsed() >= every {
            self.sample();
        }
    }

    fn sample(&mut self) {
        for ns in self.nss {
            for pid in lab::netns::namespace_pids(ns) {
                if let Some(t) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| stat_cpu_ticks(&s))
                {
                    self.last.insert(pid, t);
                }
            }
        }
        self.sampled = Instant::now();
    }

    fn used(&self) -> Duration {
        let ticks: u64 = self
            .last
            .iter()
            .map(|(pid, &t)| t.saturating_sub(self.first.get(pid).copied().unwrap_or(0)))
            .sum();
        #[allow(clippy::cast_precision_loss, reason = "CPU ticks of one round")]
        Duration::from_secs_f64(ticks as f64 / clock_tick())
    }
}

/// utime + stime from a `/proc/PID/stat` line.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: count fields
    // after the last ')'; they start with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), at 11 and 12 here.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_tick() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        #[allow(clippy::cast_precision_loss, reason = "ticks per second, about 100")]
        let t = t as f64;
        t
    } else {
        100.0
    }
}

/// CPU of every child process this driver reaped so far (the clients).
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass; all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), 0)
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn row(out: &mut String, name: &str, r: &Round) {
    let _ = writeln!(
        out,
        "{name:<26} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>9.2} {:>9.2} {:>9.0} {:>7} {:>7}",
        r.wall.as_secs_f64(),
        percentile(&r.per_client, 50).as_secs_f64(),
        percentile(&r.per_client, 99).as_secs_f64(),
        r.mib_s(),
        r.server_cpu.as_secs_f64(),
        r.client_cpu.as_secs_f64(),
        r.server_ms_per_gib(),
        r.retries,
        r.stepdowns
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
    );
    if let Some(why) = &r.failed {
        let _ = writeln!(out, "  ^ {}", why.lines().next().unwrap_or_default());
    }
}

fn header(out: &mut String) {
    let _ = writeln!(
        out,
        "{:<26} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "server",
        "wall s",
        "p50 s",
        "p99 s",
        "MiB/s",
        "srv cpu",
        "cli cpu",
        "ms/GiB",
        "retries",
        "stepdn"
    );
    let _ = writeln!(
        out,
        "  (cpu in s: srv = every process of the server's namespaces, cli = the clients; \
         ms/GiB = server CPU per GiB served; stepdn = tandem leader step-downs)"
    );
}

fn report_storm(opts: &BootOptions, t: &(Round, Round), p: &(Round, Round)) -> serde_json::Value {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nSTORM: {} clients, each DHCP (udhcpc) then {} MiB (curl; TFTP blksize {}, lock-step)",
        opts.storm_clients, opts.size_mib, opts.blksize
    );
    header(&mut s);
    row(&mut s, "tandem 3-node  TFTP", &t.0);
    row(&mut s, "dnsmasq        TFTP", &p.0);
    row(&mut s, "tandem 3-node  HTTP", &t.1);
    row(&mut s, "nginx          HTTP", &p.1);
    let _ = writeln!(
        s,
        "DHCP p50/p99 s: tandem {:.3}/{:.3}, dnsmasq {:.3}/{:.3} (TFTP round)",
        percentile(&t.0.dhcp, 50).as_secs_f64(),
        percentile(&t.0.dhcp, 99).as_secs_f64(),
        percentile(&p.0.dhcp, 50).as_secs_f64(),
        percentile(&p.0.dhcp, 99).as_secs_f64(),
    );
    let (rt, rh) = (ratio(&p.0, &t.0), ratio(&p.1, &t.1));
    let _ = writeln!(
        s,
        "ratio (peer wall / tandem wall; > 1: tandem faster): TFTP {rt:.3}, HTTP {rh:.3}"
    );
    print!("{s}");
    json!({
        "bench": "boot-storm",
        "clients": opts.storm_clients,
        "size_mib": opts.size_mib,
        "blksize": opts.blksize,
        "tandem_tftp": t.0.json(),
        "dnsmasq_tftp": p.0.json(),
        "tandem_http": t.1.json(),
        "nginx_http": p.1.json(),
        "ratio_tftp": json_num(Some(rt), 3),
        "ratio_http": json_num(Some(rh), 3),
    })
}

fn report_window(opts: &BootOptions, tandem: &Side, peers: &Side) -> serde_json::Value {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nTFTP WINDOW: {} clients, {} MiB each, blksize {}, asking for windowsize {}",
        opts.clients, opts.size_mib, opts.blksize, opts.windowsize
    );
    let _ = writeln!(
        s,
        "  atftp = one atftp process per transfer; bench = one `tandem-bench tftp-get` \
         process for all transfers (poll + recvmmsg)"
    );
    header(&mut s);
    let mut v = json!({
        "bench": "boot-tftp-window",
        "clients": opts.clients,
        "size_mib": opts.size_mib,
        "blksize": opts.blksize,
        "windowsize": opts.windowsize,
    });
    let clients = [
        ("atftp", &tandem.window, &tandem.lockstep, &peers.window, ""),
        (
            "bench",
            &tandem.window_bench,
            &tandem.lockstep_bench,
            &peers.window_bench,
            "bench_client",
        ),
    ];
    for (client, t, l, h, key) in clients {
        let Some(t) = t else { continue };
        row(
            &mut s,
            &format!("{client}: tandem window {}", opts.windowsize),
            t,
        );
        if let Some(l) = l {
            row(&mut s, &format!("{client}: tandem no window"), l);
        }
        let mut fig = json!({
            "tandem": t.json(),
            "tandem_no_window": l.as_ref().map(Round::json),
        });
        if let Some(h) = h {
            row(&mut s, &format!("{client}: tftpd-hpa lock-step"), h);
            let r = ratio(h, t);
            let _ = writeln!(
                s,
                "  {client}: ratio (tftpd-hpa wall / tandem wall): {r:.3}"
            );
            fig["tftpd_hpa"] = h.json();
            fig["ratio"] = json_num(Some(r), 3);
        }
        // The atftp figures keep their old top-level keys.
        if key.is_empty() {
            for (k, x) in fig.as_object().into_iter().flatten() {
                v[k] = x.clone();
            }
        } else {
            v[key] = fig;
        }
    }
    print!("{s}");
    v
}

fn report_http(opts: &BootOptions, t: &Round, n: &Round) -> serde_json::Value {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nHTTP: {} curl clients, {} MiB each (CPU: all processes of the server's namespaces)",
        opts.clients, opts.size_mib
    );
    header(&mut s);
    row(&mut s, "tandem 3-node", t);
    row(&mut s, "nginx (sendfile on)", n);
    let r = ratio(n, t);
    let _ = writeln!(
        s,
        "ratio (nginx wall / tandem wall): {r:.3}; CPU per GiB tandem/nginx: {:.2}",
        t.server_ms_per_gib() / n.server_ms_per_gib()
    );
    print!("{s}");
    json!({
        "bench": "boot-http",
        "clients": opts.clients,
        "size_mib": opts.size_mib,
        "tandem": t.json(),
        "nginx": n.json(),
        "ratio": json_num(Some(r), 3),
        "cpu_per_gib_ratio": json_num(Some(t.server_ms_per_gib() / n.server_ms_per_gib()), 2),
    })
}

/// `a`'s wall time over `b`'s.
fn ratio(a: &Round, b: &Round) -> f64 {
    a.wall.as_secs_f64() / b.wall.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let xs: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&xs, 50), Duration::from_millis(100));
        assert_eq!(percentile(&xs, 99), Duration::from_millis(198));
        assert_eq!(percentile(&xs, 100), Duration::from_millis(200));
        assert_eq!(percentile(&xs[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[test]
    fn reads_cpu_from_proc_stat_with_odd_names() {
        let line =
            "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 10 5 20 0 1 0 100 1000 10";
        assert_eq!(stat_cpu_ticks(line), Some(250 + 75));
        assert_eq!(stat_cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn configs_raise_the_peers_limits_above_the_storm() {
        let d = dnsmasq_args(Path::new("/x"), Path::new("/srv")).join(" ");
        assert!(d.contains("--tftp-max=4095"), "{d}");
        assert!(d.contains("--dhcp-lease-max=4095"), "{d}");
        assert!(d.contains("--enable-tftp --tftp-root=/srv"), "{d}");
        assert!(POOL_SIZE > BootOptions::default().storm_clients);
        let n = nginx_config(Path::new("/x"), Path::new("/srv"));
        assert!(
            n.contains("sendfile on;") && n.contains("listen 10.99.0.10:80;"),
            "{n}"
        );
        assert!(tandem_service().contains("pools = [\"10.99.16.1-10.99.31.254\"]"));
    }
}
