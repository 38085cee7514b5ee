//! The servers under test and exactly how each is configured. Every one
//! serves the same subnet and pool, on the same address (the lab VIP), from
//! its own namespace, and each DHCP server starts with an empty lease
//! database for every trial (so that no trial inherits a fuller pool).
//!
//! | server | DHCP durability | notes |
//! |---|---|---|
//! | tandem | every lease committed through Raft, redb fsync, before the ACK | a cluster of one, or of N with `--nodes N` (a quorum must fsync) |
//! | kea-dhcp4 2.2 | memfile, `persist` false: leases only in memory | Kea's fastest mode (TOOLCHAIN.md baseline); single-threaded |
//! | kea-dhcp4 2.2 | the same, multi-threaded ([`KEA_THREADS`] threads) | `kea-mt` |
//! | kea-dhcp4 2.2 | memfile, `persist` true: appended to a CSV, not fsync'd | single-threaded |
//! | dnsmasq 2.90 | rewrites its whole lease file and fsyncs it after each batch of changes, in its only thread (strace: 551 fsyncs for 4,497 requests at 800/s, `-R 150`) | `--no-ping`, `--dhcp-lease-max` raised (below) |
//! | tftpd-hpa 5.2 | - | `in.tftpd -L -s DIR -a VIP:69`, a fork per transfer |
//!
//! A trial must never run out of addresses, or it measures the pool instead
//! of the server: [`POOL_SIZE`] is far above any client count the bench
//! uses, and [`exhaustion_line`] recognises each server's own complaint
//! when it has nothing left to give.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use lab::{LabProcess, INTERFACE, VIP};

use crate::{cluster, Bench};

/// The subnet every server serves: perfdhcp relays from [`crate::CLIENT_ADDR`]
/// (giaddr 10.99.3.1), and every server picks the subnet that holds giaddr,
/// so the subnet must hold the lab's 10.99.0.0/16. A /12 does, and it gives
/// the pool room for a million clients (a relayed subnet can be that big).
///
/// Why these addresses are safe: all of 10.96.0.0/12 is RFC 1918 space; the
/// lab's namespaces hang off a bridge in their own namespace with no link to
/// the host, so nothing in it is ever routed; and the pool
/// ([`POOL_START`]-[`POOL_END`]) lies outside the lab's own 10.99.0.0/16,
/// so no lease ever names a lab address. The leased addresses exist only in
/// DHCP replies: perfdhcp configures none of them on any interface, and the
/// replies go to giaddr, which is on the lab link, so no route is needed.
pub const SUBNET: &str = "10.96.0.0/12";
/// [`SUBNET`]'s mask, for dnsmasq's `--dhcp-range`.
pub const NETMASK: &str = "255.240.0.0";
/// The pool: 10.100.0.0 up to the last address below [`SUBNET`]'s broadcast.
pub const POOL_START: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 0);
pub const POOL_END: Ipv4Addr = Ipv4Addr::new(10, 111, 255, 254);
/// Addresses in the pool (786,431).
pub const POOL_SIZE: u32 =
    u32::from_be_bytes(POOL_END.octets()) - u32::from_be_bytes(POOL_START.octets()) + 1;
pub const ROUTER: &str = "10.99.0.1";
/// Lease time in seconds: longer than any trial, so no lease expires in one.
pub const LEASE_SECS: u32 = 600;
/// dnsmasq's `--dhcp-lease-max`: its default of 1,000 leases would refuse
/// clients within a second; this is above the pool, so the pool, not
/// dnsmasq's cap, is the first limit (and the pool is above every client
/// count, see `dhcp::Load`).
pub const DNSMASQ_LEASE_MAX: u32 = 1_000_000;
const _: () = assert!(DNSMASQ_LEASE_MAX > POOL_SIZE);
/// Kea's worker threads in the multi-threaded variant: one per core of
/// this 2-core machine (perfdhcp shares them).
pub const KEA_THREADS: u32 = 2;

/// How long a server may take to bind its port after it starts.
const BIND_TIMEOUT: Duration = Duration::from_secs(20);

/// tandem's service config for the DHCP bench (the `tandem apply` format).
#[must_use]
pub fn tandem_dhcp_service() -> String {
    format!(
        "# tandem-bench dhcp: the same subnet and pool as Kea and dnsmasq get.\n\
         [[subnet]]\n\
         cidr = \"{SUBNET}\"\n\
         pools = [\"{POOL_START}-{POOL_END}\"]\n\
         router = \"{ROUTER}\"\n\
         lease_time = {LEASE_SECS}\n"
    )
}

/// kea-dhcp4's config. It binds a UDP socket to the VIP only
/// (`dhcp-socket-type: udp` is enough for relayed traffic, which is all
/// perfdhcp sends) and logs warnings only, as tandem logs little per packet.
/// `multi_threaded`: [`KEA_THREADS`] worker threads and Kea's default queue
/// of 64 packets; otherwise multi-threading is off explicitly (Kea 2.2's
/// default, but Kea 2.4 turned it on by default).
#[must_use]
pub fn kea_config(persist: bool, multi_threaded: bool, lease_file: &Path) -> String {
    let lease_db = if persist {
        // lfc-interval 0: no lease-file cleanup process during the bench.
        serde_json::json!({"type": "memfile", "persist": true, "name": lease_file, "lfc-interval": 0})
    } else {
        serde_json::json!({"type": "memfile", "persist": false, "lfc-interval": 0})
    };
    let threading = if multi_threaded {
        serde_json::json!({"enable-multi-threading": true, "thread-pool-size": KEA_THREADS, "packet-queue-size": 64})
    } else {
        serde_json::json!({"enable-multi-threading": false})
    };
    let config = serde_json::json!({
        "Dhcp4": {
            "interfaces-config": {"interfaces": [format!("{INTERFACE}/{VIP}")], "dhcp-socket-type": "udp"},
            "lease-database": lease_db,
            "multi-threading": threading,
            "valid-lifetime": LEASE_SECS,
            "subnet4": [{
                "id": 1,
                "subnet": SUBNET,
                "pools": [{"pool": format!("{POOL_START} - {POOL_END}")}],
                "option-data": [{"name": "routers", "data": ROUTER}]
            }],
            "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "WARN"}]
        }
    });
    serde_json::to_string_pretty(&config).expect("a json! value serialises")
}

/// dnsmasq's command line: DHCP only (`--port=0` turns DNS off), our pool,
/// a lease file in the node dir. Two departures from its defaults, both
/// needed for perfdhcp to measure anything:
/// - `--no-ping`: dnsmasq 2.90 answers a DISCOVER for a new address only
///   after an ICMP check, and drops the DISCOVERs that arrive meanwhile,
///   expecting the client to retry; perfdhcp never retries, so with the
///   default every exchange is lost (measured: 1 OFFER in 5 s at 200/s).
/// - `--dhcp-lease-max` ([`DNSMASQ_LEASE_MAX`]): above the pool, so that
///   dnsmasq's own cap never refuses a client before the pool would.
///
/// `--quiet-dhcp` keeps it from logging every packet (Kea logs warnings only).
#[must_use]
pub fn dnsmasq_args(lease_file: &Path) -> Vec<String> {
    vec![
        "--keep-in-foreground".into(),
        "--no-daemon".into(),
        "--port=0".into(),
        format!("--interface={INTERFACE}"),
        "--bind-interfaces".into(),
        format!("--dhcp-range={POOL_START},{POOL_END},{NETMASK},{LEASE_SECS}"),
        format!("--dhcp-option=option:router,{ROUTER}"),
        format!("--dhcp-leasefile={}", lease_file.display()),
        format!("--dhcp-lease-max={DNSMASQ_LEASE_MAX}"),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        "--quiet-dhcp".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        // No pid file in /run, where a distribution dnsmasq keeps its own.
        "--pid-file=".into(),
    ]
}

/// One of the DHCP servers under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpServer {
    Tandem,
    Kea { persist: bool, multi_threaded: bool },
    Dnsmasq,
}

impl DhcpServer {
    /// Kea's fastest mode, the one tandem is compared with.
    pub const KEA: DhcpServer = DhcpServer::Kea {
        persist: false,
        multi_threaded: false,
    };
    /// [`DhcpServer::KEA`] with [`KEA_THREADS`] worker threads.
    pub const KEA_MT: DhcpServer = DhcpServer::Kea {
        persist: false,
        multi_threaded: true,
    };
    pub const KEA_PERSIST: DhcpServer = DhcpServer::Kea {
        persist: true,
        multi_threaded: false,
    };

    /// Every server, in the order the bench runs them.
    pub const ALL: [DhcpServer; 5] = [
        DhcpServer::Tandem,
        DhcpServer::KEA,
        DhcpServer::KEA_MT,
        DhcpServer::KEA_PERSIST,
        DhcpServer::Dnsmasq,
    ];

    /// Short name, used in file names and `--servers`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DhcpServer::Tandem => "tandem",
            DhcpServer::Kea {
                persist: false,
                multi_threaded: false,
            } => "kea",
            DhcpServer::Kea {
                persist: false,
                multi_threaded: true,
            } => "kea-mt",
            DhcpServer::Kea {
                persist: true,
                multi_threaded: false,
            } => "kea-persist",
            DhcpServer::Kea {
                persist: true,
                multi_threaded: true,
            } => "kea-persist-mt",
            DhcpServer::Dnsmasq => "dnsmasq",
        }
    }

    /// What the table shows (tandem's label names its cluster size).
    #[must_use]
    pub fn label(self, placement: Placement) -> String {
        match self {
            DhcpServer::Tandem if placement.tandem_nodes > 1 => {
                format!(
                    "tandem {}-node (Raft + fsync per lease)",
                    placement.tandem_nodes
                )
            }
            DhcpServer::Tandem => "tandem (Raft + fsync per lease)".into(),
            DhcpServer::Kea {
                persist,
                multi_threaded,
            } => format!(
                "kea-dhcp4 memfile persist={persist}{}",
                if multi_threaded {
                    format!(", {KEA_THREADS} threads")
                } else {
                    String::new()
                }
            ),
            DhcpServer::Dnsmasq => "dnsmasq --no-ping".into(),
        }
    }

    pub fn from_name(name: &str) -> Result<DhcpServer> {
        DhcpServer::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| {
                let known: Vec<&str> = DhcpServer::ALL.iter().map(|s| s.name()).collect();
                format!("unknown server {name:?}; known: {}", known.join(", "))
            })
    }

    /// The programs it needs on PATH (tandem's binary is checked apart).
    #[must_use]
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            DhcpServer::Tandem => &[],
            DhcpServer::Kea { .. } => &["kea-dhcp4", "env"],
            DhcpServer::Dnsmasq => &["dnsmasq"],
        }
    }

    /// Starts the server with an empty lease database and waits until it
    /// listens (tandem: until it serves and has the config applied).
    pub fn start(self, bench: &Bench, placement: Placement) -> Result<Running> {
        let nodes = placement.nodes(self);
        let node = nodes[0];
        let dir = bench.lab.node_dir(node);
        let ns = bench.lab.node_ns(node);
        match self {
            DhcpServer::Tandem => {
                // A cluster of one forms the same way: start, serve, apply.
                let running = Running {
                    server: self,
                    nodes: nodes.clone(),
                    process: None,
                    logs: log_marks(nodes.iter().map(|&i| bench.lab.node_log_path(i))),
                };
                if let Err(e) = cluster::form(bench, &nodes, &tandem_dhcp_service()) {
                    running.stop(bench);
                    return Err(e);
                }
                Ok(running)
            }
            DhcpServer::Kea {
                persist,
                multi_threaded,
            } => {
                let lease_file = dir.join("kea-leases4.csv");
                remove_if_exists(&lease_file)?;
                let config = dir.join(format!("{}.json", self.name()));
                write(&config, &kea_config(persist, multi_threaded, &lease_file))?;
                let log = dir.join(format!("{}.log", self.name()));
                // Kea keeps its pid file and logger lock file in /run/kea by
                // default, where a distribution Kea would collide with ours.
                let dir_s = dir.display().to_string();
                let args = [
                    format!("KEA_PIDFILE_DIR={dir_s}"),
                    format!("KEA_LOCKFILE_DIR={dir_s}"),
                    "kea-dhcp4".into(),
                    "-c".into(),
                    config.display().to_string(),
                ];
                let logs = log_marks([log.clone()]);
                let p = bench.spawn(&ns, "env", &args, &log)?;
                let running = Running {
                    server: self,
                    nodes,
                    process: Some(p.clone()),
                    logs,
                };
                bench.wait_udp_bound(&ns, 67, &p, &log, BIND_TIMEOUT)?;
                // Kea reads its threading config before it opens sockets.
                let said = running.log_text();
                if !kea_threading_as_configured(&said, multi_threaded) {
                    running.stop(bench);
                    anyhow::bail!(
                        "kea-dhcp4 did not report multi-threading {} (DHCP4_MULTI_THREADING_INFO); log {}:\n{said}",
                        if multi_threaded { "enabled" } else { "disabled" },
                        log.display()
                    );
                }
                Ok(running)
            }
            DhcpServer::Dnsmasq => {
                let lease_file = dir.join("dnsmasq.leases");
                remove_if_exists(&lease_file)?;
                let log = dir.join("dnsmasq.log");
                let logs = log_marks([log.clone()]);
                let p = bench.spawn(&ns, "dnsmasq", &dnsmasq_args(&lease_file), &log)?;
                let running = Running {
                    server: self,
                    nodes,
                    process: Some(p.clone()),
                    logs,
                };
                bench.wait_udp_bound(&ns, 67, &p, &log, BIND_TIMEOUT)?;
                Ok(running)
            }
        }
    }
}

/// The first line of `log` (a server's output during one trial) in which
/// `server` says it had no address left to give: the pool ran out, or
/// dnsmasq's lease cap did. Each server's own words, as they log them at
/// the levels the bench runs them with (captured on these machines with a
/// 1,024-address pool and more clients than that):
///
/// - tandem: `WARN tandem::dhcp: pool exhausted: no free address to offer`
///   (warn level, so in the default log; once a minute per subnet, and a
///   trial's daemon is fresh, so its first exhaustion is always logged);
/// - kea-dhcp4: `WARN ALLOC_ENGINE_V4_ALLOC_FAIL` (also `_SUBNET`,
///   `_CLASSES`), one per DISCOVER it cannot serve;
/// - dnsmasq: `no address available` (pool) or `no leases left`
///   (`--dhcp-lease-max`); logged even with `--quiet-dhcp`, which only
///   silences successful exchanges.
///
/// perfdhcp cannot tell: an unanswered DISCOVER and a NAK both show up as
/// plain drops in its report, the same as a server too slow to answer.
#[must_use]
pub fn exhaustion_line(server: DhcpServer, log: &str) -> Option<&str> {
    let markers: &[&str] = match server {
        DhcpServer::Tandem => &["pool exhausted"],
        DhcpServer::Kea { .. } => &["ALLOC_ENGINE_V4_ALLOC_FAIL"],
        DhcpServer::Dnsmasq => &["no address available", "no leases left"],
    };
    log.lines().find(|l| markers.iter().any(|m| l.contains(m)))
}

/// Whether Kea's start-up line `DHCP4_MULTI_THREADING_INFO enabled: yes|no`
/// says what the config asked for.
fn kea_threading_as_configured(log: &str, multi_threaded: bool) -> bool {
    let want = if multi_threaded {
        "enabled: yes"
    } else {
        "enabled: no"
    };
    log.lines()
        .any(|l| l.contains("DHCP4_MULTI_THREADING_INFO") && l.contains(want))
}

/// Where each server runs in the DHCP bench's lab: tandem on nodes
/// `1..=tandem_nodes` (a cluster when more than one), Kea (both modes) on
/// the next node, dnsmasq on the one after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub tandem_nodes: usize,
}

impl Default for Placement {
    fn default() -> Self {
        Placement { tandem_nodes: 1 }
    }
}

impl Placement {
    /// Server namespaces the lab needs.
    #[must_use]
    pub fn lab_nodes(self) -> usize {
        self.tandem_nodes + 2
    }

    /// The lab nodes (server namespaces) `server` runs in.
    #[must_use]
    pub fn nodes(self, server: DhcpServer) -> Vec<usize> {
        match server {
            DhcpServer::Tandem => (1..=self.tandem_nodes).collect(),
            DhcpServer::Kea { .. } => vec![self.tandem_nodes + 1],
            DhcpServer::Dnsmasq => vec![self.tandem_nodes + 2],
        }
    }
}

/// A started server; [`Running::stop`] ends it (the lab's `Drop` would too).
pub struct Running {
    server: DhcpServer,
    nodes: Vec<usize>,
    /// `None` for tandem, whose daemons the lab tracks per node.
    process: Option<LabProcess>,
    /// The server's log files and their lengths before it started: what it
    /// says during this trial starts there (the logs are appended to).
    logs: Vec<(PathBuf, u64)>,
}

/// Each log file with its current length (0 if it does not exist yet).
fn log_marks(logs: impl IntoIterator<Item = PathBuf>) -> Vec<(PathBuf, u64)> {
    logs.into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len());
            (p, len)
        })
        .collect()
}

impl Running {
    /// Everything the server has logged since it was started for this trial
    /// (every node's log, for a tandem cluster).
    #[must_use]
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        for (path, from) in &self.logs {
            if let Ok(bytes) = std::fs::read(path) {
                let from = usize::try_from(*from)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                text.push_str(&String::from_utf8_lossy(&bytes[from..]));
            }
        }
        text
    }

    /// The line in which the server said it ran out of addresses during
    /// this trial, if it did (see [`exhaustion_line`]).
    #[must_use]
    pub fn exhaustion(&self) -> Option<String> {
        exhaustion_line(self.server, &self.log_text()).map(str::to_owned)
    }

    /// The lab nodes it runs in.
    #[must_use]
    pub fn nodes(&self) -> &[usize] {
        &self.nodes
    }

    /// The server's processes (one per tandem node), for CPU accounting.
    #[must_use]
    pub fn pids(&self, bench: &Bench) -> Vec<u32> {
        match &self.process {
            Some(p) => vec![p.pid()],
            None => self
                .nodes
                .iter()
                .filter_map(|&i| bench.lab.node_process(i))
                .map(|p| p.pid())
                .collect(),
        }
    }

    pub fn stop(self, bench: &Bench) {
        match self.process {
            Some(p) => {
                p.kill_and_wait();
            }
            None => cluster::stop(bench, &self.nodes),
        }
    }
}

/// Starts tftpd-hpa in the foreground (`-L`) on VIP:69 in `node`'s
/// namespace, serving (and chrooted to, `-s`) `root`. It drops privileges to
/// the `tftp` user, so `root` and its files must be world-readable.
pub fn start_tftpd_hpa(bench: &Bench, node: usize, root: &Path) -> Result<LabProcess> {
    let ns = bench.lab.node_ns(node);
    let log = bench.lab.node_dir(node).join("tftpd-hpa.log");
    let args = [
        "-L".to_owned(),
        "-u".into(),
        "tftp".into(),
        "-s".into(),
        root.display().to_string(),
        "-a".into(),
        format!("{VIP}:69"),
    ];
    let p = bench.spawn(&ns, "in.tftpd", &args, &log)?;
    bench.wait_udp_bound(&ns, 69, &p, &log, BIND_TIMEOUT)?;
    Ok(p)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_has_a_distinct_name_that_parses_back() {
        for s in DhcpServer::ALL {
            assert_eq!(DhcpServer::from_name(s.name()).unwrap(), s);
        }
        let err = DhcpServer::from_name("isc-dhcpd").unwrap_err().to_string();
        assert!(err.contains("kea-mt"), "{err}");
    }

    #[test]
    fn placement_keeps_servers_apart() {
        let one = Placement::default();
        assert_eq!(one.nodes(DhcpServer::Tandem), [1]);
        assert_eq!(one.nodes(DhcpServer::KEA_PERSIST), [2]);
        assert_eq!(one.nodes(DhcpServer::KEA_MT), [2]);
        assert_eq!(one.nodes(DhcpServer::Dnsmasq), [3]);
        let three = Placement { tandem_nodes: 3 };
        assert_eq!(three.nodes(DhcpServer::Tandem), [1, 2, 3]);
        assert_eq!(three.nodes(DhcpServer::KEA), [4]);
        assert_eq!(three.nodes(DhcpServer::Dnsmasq), [5]);
        assert_eq!(three.lab_nodes(), 5);
        assert!(DhcpServer::Tandem.label(three).starts_with("tandem 3-node"));
        assert_eq!(
            DhcpServer::KEA_MT.label(one),
            "kea-dhcp4 memfile persist=false, 2 threads"
        );
    }

    #[test]
    fn kea_config_binds_the_vip_and_sets_persistence_and_threads() {
        let v: serde_json::Value =
            serde_json::from_str(&kea_config(true, false, Path::new("/x/l.csv"))).unwrap();
        let d = &v["Dhcp4"];
        assert_eq!(d["interfaces-config"]["interfaces"][0], "eth1/10.99.0.10");
        assert_eq!(d["lease-database"]["persist"], true);
        assert_eq!(d["lease-database"]["name"], "/x/l.csv");
        assert_eq!(d["subnet4"][0]["subnet"], "10.96.0.0/12");
        assert_eq!(
            d["subnet4"][0]["pools"][0]["pool"],
            "10.100.0.0 - 10.111.255.254"
        );
        assert_eq!(
            d["multi-threading"],
            serde_json::json!({"enable-multi-threading": false})
        );
        let v: serde_json::Value =
            serde_json::from_str(&kea_config(false, true, Path::new("/x/l.csv"))).unwrap();
        let d = &v["Dhcp4"];
        assert_eq!(d["lease-database"]["persist"], false);
        assert!(d["lease-database"].get("name").is_none());
        assert_eq!(d["multi-threading"]["enable-multi-threading"], true);
        assert_eq!(d["multi-threading"]["thread-pool-size"], 2);
        assert_eq!(d["multi-threading"]["packet-queue-size"], 64);
    }

    #[test]
    fn all_servers_get_the_same_pool() {
        let t = tandem_dhcp_service();
        assert!(t.contains("cidr = \"10.96.0.0/12\""), "{t}");
        assert!(t.contains("pools = [\"10.100.0.0-10.111.255.254\"]"), "{t}");
        let d = dnsmasq_args(Path::new("/x/leases")).join(" ");
        assert!(
            d.contains("--dhcp-range=10.100.0.0,10.111.255.254,255.240.0.0,600"),
            "{d}"
        );
        assert!(d.contains("--dhcp-lease-max=1000000"), "{d}");
    }

    /// `a.b.c.d/len` as (network, mask).
    fn parse_cidr(cidr: &str) -> (u32, u32) {
        let (ip, len) = cidr.split_once('/').unwrap();
        let ip: Ipv4Addr = ip.parse().unwrap();
        let len: u32 = len.parse().unwrap();
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        (u32::from(ip) & mask, mask)
    }

    #[test]
    fn the_pool_lies_in_the_relayed_subnet_and_outside_the_lab() {
        let (net, mask) = parse_cidr(SUBNET);
        assert_eq!(u32::from(NETMASK.parse::<Ipv4Addr>().unwrap()), mask);
        let inside = |ip: Ipv4Addr| u32::from(ip) & mask == net;
        // The subnet holds giaddr (the relay), the router and the VIP...
        for ip in [crate::CLIENT_ADDR, ROUTER, &VIP.to_string()] {
            assert!(inside(ip.parse().unwrap()), "{ip} not in {SUBNET}");
        }
        // ...and the pool, without the network and broadcast addresses.
        let (start, end) = (u32::from(POOL_START), u32::from(POOL_END));
        assert!(inside(POOL_START) && inside(POOL_END));
        assert!(start > net && end < (net | !mask));
        // No pool address is a lab address (10.99.0.0/16).
        let (lab, lab_mask) = parse_cidr("10.99.0.0/16");
        assert!(start > (lab | !lab_mask) || end < lab);
        // 10.96.0.0/12 is private (10.0.0.0/8).
        assert_eq!(net >> 24, 10);
        assert_eq!(POOL_SIZE, end - start + 1);
        assert_eq!(POOL_SIZE, 786_431);
    }

    /// Lines captured from each server on these machines with a 1,024-address
    /// pool and more clients than that, and lines from normal trials.
    #[test]
    fn recognises_each_servers_exhaustion_and_nothing_else() {
        let tandem = "2026-12-01T19:54:11.301895Z  WARN tandem::dhcp: pool exhausted: no free address to offer subnet=10.96.0.0/12 pool_size=1024 leases=1024";
        let kea = "2026-12-01 19:45:32.010 WARN  [kea-dhcp4.alloc-engine/16032.140333439042048] ALLOC_ENGINE_V4_ALLOC_FAIL [hwtype=1 00:0c:01:02:07:04], cid=[01:00:0c:01:02:07:04], tid=0x400: failed to allocate an IPv4 address after 1024 attempt(s)";
        let dnsmasq_pool =
            "dnsmasq-dhcp: DHCPDISCOVER(eth1) 00:0c:01:02:07:06 no address available";
        let dnsmasq_cap =
            "dnsmasq-dhcp: DHCPNAK(eth1) 10.103.109.163 00:0c:01:02:04:f8 no leases left";
        let normal = "=== lab: starting node 1\n\
            2026-12-01 19:45:20.765 WARN  [kea-dhcp4.dhcp4/16032.140333439042048] DHCP4_MULTI_THREADING_INFO enabled: no, number of threads: 0, queue size: 0\n\
            dnsmasq-dhcp: DHCP, IP range 10.100.0.0 -- 10.111.255.254, lease time 10m\n\
            dnsmasq-dhcp: DHCPNAK(eth1) 10.100.2.0 00:0c:01:02:04:7b address in use\n";

        let with = |line: &str| format!("{normal}{line}\nafter\n");
        assert_eq!(
            exhaustion_line(DhcpServer::Tandem, &with(tandem)),
            Some(tandem)
        );
        assert_eq!(exhaustion_line(DhcpServer::KEA_MT, &with(kea)), Some(kea));
        for line in [dnsmasq_pool, dnsmasq_cap] {
            assert_eq!(
                exhaustion_line(DhcpServer::Dnsmasq, &with(line)),
                Some(line)
            );
        }
        for s in DhcpServer::ALL {
            assert_eq!(exhaustion_line(s, normal), None, "{s:?}");
        }
    }

    #[test]
    fn reads_keas_threading_line() {
        let off = "2026-12-01 19:45:20.765 WARN  [kea-dhcp4.dhcp4/1.2] DHCP4_MULTI_THREADING_INFO enabled: no, number of threads: 0, queue size: 0";
        let on = "2026-12-01 19:45:20.765 WARN  [kea-dhcp4.dhcp4/1.2] DHCP4_MULTI_THREADING_INFO enabled: yes, number of threads: 2, queue size: 64";
        assert!(kea_threading_as_configured(off, false));
        assert!(!kea_threading_as_configured(off, true));
        assert!(kea_threading_as_configured(on, true));
        assert!(!kea_threading_as_configured(on, false));
        assert!(!kea_threading_as_configured("DHCP4_STARTING", false));
    }
}
