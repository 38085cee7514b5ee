//! The servers under test and exactly how each is configured. Every one
//! serves the same subnet and pool, on the same address (the lab VIP), from
//! its own namespace, and each DHCP server starts with an empty lease
//! database for every trial (so that no trial inherits a fuller pool).
//!
//! | server | DHCP durability | notes |
//! |---|---|---|
//! | tandem | every lease committed through Raft, redb fsync, before the ACK | a cluster of one, or of N with `--nodes N` (a quorum must fsync) |
//! | kea-dhcp4 2.2 | memfile, `persist` false: leases only in memory | Kea's fastest mode (TOOLCHAIN.md baseline) |
//! | kea-dhcp4 2.2 | memfile, `persist` true: appended to a CSV, not fsync'd | |
//! | dnsmasq 2.90 | rewrites its lease file on change, not fsync'd | `--no-ping`, `--dhcp-lease-max` raised (below) |
//! | tftpd-hpa 5.2 | - | `in.tftpd -L -s DIR -a VIP:69`, a fork per transfer |

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use lab::{LabProcess, INTERFACE, VIP};

use crate::{cluster, Bench};

/// The DHCP pool every server hands out: everything in 10.99.0.0/16 from
/// 10.99.16.0 up, i.e. clear of the lab's own addresses (10.99.0.x) and of
/// the relay address 10.99.3.1.
pub const POOL_START: &str = "10.99.16.0";
pub const POOL_END: &str = "10.99.255.254";
/// The subnet, which contains the relay address perfdhcp puts in giaddr.
pub const SUBNET: &str = "10.99.0.0/16";
pub const ROUTER: &str = "10.99.0.1";
/// Lease time in seconds: longer than any trial, so no lease expires in one.
pub const LEASE_SECS: u32 = 600;

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
#[must_use]
pub fn kea_config(persist: bool, lease_file: &Path) -> String {
    let lease_db = if persist {
        // lfc-interval 0: no lease-file cleanup process during the bench.
        serde_json::json!({"type": "memfile", "persist": true, "name": lease_file, "lfc-interval": 0})
    } else {
        serde_json::json!({"type": "memfile", "persist": false, "lfc-interval": 0})
    };
    let config = serde_json::json!({
        "Dhcp4": {
            "interfaces-config": {"interfaces": [format!("{INTERFACE}/{VIP}")], "dhcp-socket-type": "udp"},
            "lease-database": lease_db,
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
/// - `--dhcp-lease-max=100000`: the default of 1,000 leases would refuse
///   clients after the first second of a trial.
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
        format!("--dhcp-range={POOL_START},{POOL_END},255.255.0.0,{LEASE_SECS}"),
        format!("--dhcp-option=option:router,{ROUTER}"),
        format!("--dhcp-leasefile={}", lease_file.display()),
        "--dhcp-lease-max=100000".into(),
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
    Kea { persist: bool },
    Dnsmasq,
}

impl DhcpServer {
    /// Every server, in the order the bench runs them.
    pub const ALL: [DhcpServer; 4] = [
        DhcpServer::Tandem,
        DhcpServer::Kea { persist: false },
        DhcpServer::Kea { persist: true },
        DhcpServer::Dnsmasq,
    ];

    /// Short name, used in file names and `--servers`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DhcpServer::Tandem => "tandem",
            DhcpServer::Kea { persist: false } => "kea",
            DhcpServer::Kea { persist: true } => "kea-persist",
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
            DhcpServer::Kea { persist: false } => "kea-dhcp4 memfile persist=false".into(),
            DhcpServer::Kea { persist: true } => "kea-dhcp4 memfile persist=true".into(),
            DhcpServer::Dnsmasq => "dnsmasq --no-ping".into(),
        }
    }

    pub fn from_name(name: &str) -> Result<DhcpServer> {
        DhcpServer::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| {
                format!("unknown server {name:?}; known: tandem, kea, kea-persist, dnsmasq")
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
                    nodes: nodes.clone(),
                    process: None,
                };
                if let Err(e) = cluster::form(bench, &nodes, &tandem_dhcp_service()) {
                    running.stop(bench);
                    return Err(e);
                }
                Ok(running)
            }
            DhcpServer::Kea { persist } => {
                let lease_file = dir.join("kea-leases4.csv");
                remove_if_exists(&lease_file)?;
                let config = dir.join(format!("{}.json", self.name()));
                write(&config, &kea_config(persist, &lease_file))?;
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
                let p = bench.spawn(&ns, "env", &args, &log)?;
                bench.wait_udp_bound(&ns, 67, &p, &log, BIND_TIMEOUT)?;
                Ok(Running {
                    nodes,
                    process: Some(p),
                })
            }
            DhcpServer::Dnsmasq => {
                let lease_file = dir.join("dnsmasq.leases");
                remove_if_exists(&lease_file)?;
                let log = dir.join("dnsmasq.log");
                let p = bench.spawn(&ns, "dnsmasq", &dnsmasq_args(&lease_file), &log)?;
                bench.wait_udp_bound(&ns, 67, &p, &log, BIND_TIMEOUT)?;
                Ok(Running {
                    nodes,
                    process: Some(p),
                })
            }
        }
    }
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
    nodes: Vec<usize>,
    /// `None` for tandem, whose daemons the lab tracks per node.
    process: Option<LabProcess>,
}

impl Running {
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
        assert!(DhcpServer::from_name("isc-dhcpd").is_err());
    }

    #[test]
    fn placement_keeps_servers_apart() {
        let one = Placement::default();
        assert_eq!(one.nodes(DhcpServer::Tandem), [1]);
        assert_eq!(one.nodes(DhcpServer::Kea { persist: true }), [2]);
        assert_eq!(one.nodes(DhcpServer::Dnsmasq), [3]);
        let three = Placement { tandem_nodes: 3 };
        assert_eq!(three.nodes(DhcpServer::Tandem), [1, 2, 3]);
        assert_eq!(three.nodes(DhcpServer::Kea { persist: false }), [4]);
        assert_eq!(three.nodes(DhcpServer::Dnsmasq), [5]);
        assert_eq!(three.lab_nodes(), 5);
        assert!(DhcpServer::Tandem.label(three).starts_with("tandem 3-node"));
    }

    #[test]
    fn kea_config_binds_the_vip_and_sets_persistence() {
        let v: serde_json::Value =
            serde_json::from_str(&kea_config(true, Path::new("/x/l.csv"))).unwrap();
        let d = &v["Dhcp4"];
        assert_eq!(d["interfaces-config"]["interfaces"][0], "eth1/10.99.0.10");
        assert_eq!(d["lease-database"]["persist"], true);
        assert_eq!(d["lease-database"]["name"], "/x/l.csv");
        assert_eq!(
            d["subnet4"][0]["pools"][0]["pool"],
            "10.99.16.0 - 10.99.255.254"
        );
        let v: serde_json::Value =
            serde_json::from_str(&kea_config(false, Path::new("/x/l.csv"))).unwrap();
        assert_eq!(v["Dhcp4"]["lease-database"]["persist"], false);
        assert!(v["Dhcp4"]["lease-database"].get("name").is_none());
    }

    #[test]
    fn all_servers_get_the_same_pool() {
        let t = tandem_dhcp_service();
        assert!(t.contains("pools = [\"10.99.16.0-10.99.255.254\"]"), "{t}");
        let d = dnsmasq_args(Path::new("/x/leases")).join(" ");
        assert!(
            d.contains("--dhcp-range=10.99.16.0,10.99.255.254,255.255.0.0,600"),
            "{d}"
        );
    }
}
