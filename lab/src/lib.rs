//! # Layout
//! A network-namespace lab for tandem's demo, integration tests and
//! benchmarks (DESIGN.md section 7). One [`Lab`] value owns one topology:
//!
//! ```text
//!                 <prefix>-sw  (switch namespace)
//!          ┌──────────────── br0 (STP off) ────────────────┐
//!         n1           n2   ...                   c1      c2   ...   (veth ends)
//!          │            │                          │       │
//!   <prefix>-n1   <prefix>-n2              <prefix>-c1  <prefix>-c2
//!   eth1 10.99.0.11  eth1 10.99.0.12         eth1 (no address: DHCP client)
//!   tandem daemon    tandem daemon            udhcpc, dhclient, curl, perfdhcp
//! ```
//!
//! The VIP is [`VIP_CIDR`]. Interface names never carry the prefix (each veth
//! end is created directly inside its own namespace), so they stay short and
//! labs with different prefixes never collide.
//!
//! - this file: [`Lab`], [`LabSpec`], [`LabBuilder`], building and `Drop`,
//!   generic helpers ([`wait_until`], [`tandem_bin`]).
//! - [`node`]: per-node dirs, `node.toml`, starting/killing `tandem daemon`,
//!   and running the `tandem` CLI against a node.
//! - [`client`]: real clients in client namespaces: [`Lab::dhcp_lease`]
//!   (busybox udhcpc), [`Lab::tftp_get`] (curl), [`sha256_file`].
//! - [`process`]: [`LabProcess`] (long-running, killed on drop) and
//!   [`exec_in`] (one-shot with a timeout).
//! - [`netns`]: `ip` wrappers and the sweepers [`cleanup_stale`] (for
//!   `cargo xtask lab down`) and [`cleanup_orphans`] (labs of dead test runs).
//!
//! Invariant: everything a `Lab` creates (namespaces, processes, its temp
//! root) is recorded the moment it exists, so `Drop` removes it even when
//! building fails half-way or a test panics.

pub mod client;
pub mod netns;
pub mod node;
pub mod process;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

pub use client::{sha256_file, DhcpLease};
pub use netns::{cleanup_orphans, cleanup_stale, keep_lab_files, list_namespaces, temp_root};
pub use process::{describe_output, exec_in, LabProcess};

use netns::ip;

/// The lab's floating service address, with its prefix length.
pub const VIP_CIDR: &str = "10.99.0.10/16";
/// The lab's floating service address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
/// Prefix length of every lab address (10.99.0.0/16).
pub const PREFIX_LEN: u8 = 16;
/// The lab-facing interface inside every node and client namespace.
pub const INTERFACE: &str = "eth1";
/// The bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// Raft peer port (DESIGN.md section 8).
pub const RAFT_PORT: u16 = 7480;
/// Admin API port (DESIGN.md section 8).
pub const API_PORT: u16 = 7481;
/// A service config (the `tandem apply` format) that fits the lab's address
/// plan: pool 10.99.1.1-10.99.1.200, router and DNS 10.99.0.1, domain
/// `lab.tandem`, and a boot profile `pxe`. Used by the demo and the tests.
pub const SERVICE_TOML: &str = r#"# The lab's service config (lab::SERVICE_TOML), applied with `tandem apply`.
[[subnet]]
cidr = "10.99.0.0/16"
pools = ["10.99.1.1-10.99.1.200"]
router = "10.99.0.1"
dns = ["10.99.0.1"]
domain = "lab.tandem"
lease_time = 600
profile = "pxe"

[[profile]]
name = "pxe"
bios = "undionly.kpxe"
uefi_x64 = "ipxe.efi"
ipxe_script = "http://10.99.0.10/boot.ipxe"
"#;
/// The prefix of labs made by `cargo xtask lab up`.
pub const XTASK_PREFIX: &str = "tl";

/// Node addresses are 10.99.0.(10+i), so at most this many nodes fit in 10.99.0.0/24
/// below the broadcast-looking .255.
const MAX_NODES: usize = 200;
/// Client MACs encode the index in 16 bits.
const MAX_CLIENTS: usize = 0xffff;

/// What to build. Nodes and clients are numbered from 1.
#[derive(Clone, Debug, Default)]
pub struct LabSpec {
    pub nodes: usize,
    pub clients: usize,
    /// Name prefix of namespaces and the temp root; `None` picks a fresh
    /// [`unique_prefix`], which is what tests want.
    pub prefix: Option<String>,
}

/// A fresh prefix `t<pid>-<n>`: unique among live processes, and the PID lets
/// [`cleanup_orphans`] recognise labs whose test process died without `Drop`.
#[must_use]
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Builder for [`Lab`]: `Lab::builder().nodes(3).clients(1).build()?`.
#[derive(Debug, Default)]
pub struct LabBuilder {
    spec: LabSpec,
    client_ips: Vec<(usize, String)>,
    tandem_bin: Option<PathBuf>,
}

impl LabBuilder {
    #[must_use]
    pub fn nodes(mut self, n: usize) -> Self {
        self.spec.nodes = n;
        self
    }

    #[must_use]
    pub fn clients(mut self, m: usize) -> Self {
        self.spec.clients = m;
        self
    }

    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.spec.prefix = Some(prefix.into());
        self
    }

    /// Gives client `j` a static address (e.g. `"10.99.2.1/16"`), for clients
    /// that act as a relay (perfdhcp) or need no DHCP. Adds clients up to `j`.
    #[must_use]
    pub fn client_with_ip(mut self, j: usize, cidr: impl Into<String>) -> Self {
        self.spec.clients = self.spec.clients.max(j);
        self.client_ips.push((j, cidr.into()));
        self
    }

    /// The `tandem` binary for [`Lab::tandem`] before any node was started;
    /// defaults to [`tandem_bin`].
    #[must_use]
    pub fn tandem_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.tandem_bin = Some(path.into());
        self
    }

    pub fn build(self) -> Result<Lab> {
        let lab = Lab::new(self.spec)?;
        if let Some(bin) = self.tandem_bin {
            *lab.bin() = bin;
        }
        for (j, cidr) in &self.client_ips {
            lab.add_client_ip(*j, cidr)?;
        }
        Ok(lab)
    }
}

/// One lab topology. Dropping it kills its processes, deletes its namespaces
/// and removes its temp root (kept if `TANDEM_KEEP_LAB=1`).
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    root: PathBuf,
    nodes: usize,
    clients: usize,
    /// Namespaces in creation order; deleted in reverse.
    namespaces: Vec<String>,
    /// Every process started through this lab, running or not.
    processes: Mutex<Vec<LabProcess>>,
    /// The current daemon of each node (index 1..=nodes).
    daemons: Mutex<Vec<Option<LabProcess>>>,
    /// The `tandem` binary: last one given to `start_node`, else the builder's, else [`tandem_bin`].
    tandem_bin: Mutex<PathBuf>,
    /// Set by [`Lab::persist`]: `Drop` then leaves everything in place.
    persistent: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Drop must work after a panicking test; no guarded value here can be
    // left half-updated by a panic, so a poisoned lock is still sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lab {
    #[must_use]
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// Builds the topology described by `spec`. On any error, whatever was
    /// already created is removed again before the error is returned.
    pub fn new(spec: LabSpec) -> Result<Lab> {
        let prefix = spec.prefix.unwrap_or_else(unique_prefix);
        validate_prefix(&prefix)?;
        ensure!(
            spec.nodes <= MAX_NODES,
            "at most {MAX_NODES} nodes fit the lab's address plan"
        );
        ensure!(spec.clients <= MAX_CLIENTS, "at most {MAX_CLIENTS} clients");
        // SAFETY: geteuid has no preconditions.
        ensure!(
            unsafe { libc::geteuid() } == 0,
            "the lab needs root (network namespaces)"
        );

        let taken: Vec<String> = list_namespaces()?
            .into_iter()
            .filter(|n| {
                n.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .collect();
        ensure!(
            taken.is_empty(),
            "namespaces {taken:?} already exist for lab prefix {prefix:?}; remove them first \
             (`cargo xtask lab down` for the xtask lab)"
        );

        let root = temp_root(&prefix);
        if root.exists() {
            // Left over from an earlier lab with this prefix (TANDEM_KEEP_LAB=1,
            // or a crash); its files must not leak into this run.
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("removing old {}", root.display()))?;
        }
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;

        let mut lab = Lab {
            prefix,
            root,
            nodes: spec.nodes,
            clients: spec.clients,
            namespaces: Vec::new(),
            processes: Mutex::new(Vec::new()),
            daemons: Mutex::new(vec![None; spec.nodes + 1]),
            tandem_bin: Mutex::new(tandem_bin()),
            persistent: false,
        };
        // On error `lab` is dropped here, which removes the partial topology.
        lab.create()
            .with_context(|| format!("building lab {}", lab.prefix))?;
        Ok(lab)
    }

    fn create(&mut self) -> Result<()> {
        let sw = self.switch_ns();
        self.add_ns(&sw)?;
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", BRIDGE, "up"])?;

        for i in 1..=self.nodes {
            let ns = self.node_ns(i);
            self.add_ns(&ns)?;
            self.add_port(&ns, &format!("n{i}"), &node_mac(i))?;
            let cidr = format!("{}/{PREFIX_LEN}", self.node_ip(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", INTERFACE])?;
            let dir = self.node_dir(i);
            for sub in ["data", "artifacts"] {
                std::fs::create_dir_all(dir.join(sub))
                    .with_context(|| format!("creating {}", dir.join(sub).display()))?;
            }
        }
        for j in 1..=self.clients {
            let ns = self.client_ns(j);
            self.add_ns(&ns)?;
            self.add_port(&ns, &format!("c{j}"), &client_mac(j))?;
        }
        Ok(())
    }

    /// Creates namespace `ns` (recording it at once) with `lo` up.
    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// A veth from the bridge (end `port` in the switch) to `eth1` in `ns`.
    /// Both ends are created directly in their namespaces, so the names never
    /// meet in the host namespace and need no prefix.
    fn add_port(&self, ns: &str, port: &str, mac: &str) -> Result<()> {
        let sw = self.switch_ns();
        ip(&[
            "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", INTERFACE, "address",
            mac, "netns", ns,
        ])?;
        ip(&["-n", &sw, "link", "set", port, "master", BRIDGE, "up"])?;
        ip(&["-n", ns, "link", "set", INTERFACE, "up"])
    }

    /// Leaves the topology (and any processes) in place when the value goes
    /// away; `cargo xtask lab up` uses this. Remove it with [`cleanup_stale`].
    pub fn persist(mut self) {
        self.persistent = true;
    }

    // ----- names and addresses -----

    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The temp root: node dirs and client files live below it.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    #[must_use]
    pub fn client_count(&self) -> usize {
        self.clients
    }

    /// Every namespace this lab created, switch first.
    #[must_use]
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    #[must_use]
    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    #[must_use]
    pub fn node_ns(&self, i: usize) -> String {
        self.check_node(i);
        format!("{}-n{i}", self.prefix)
    }

    #[must_use]
    pub fn client_ns(&self, j: usize) -> String {
        assert!(
            (1..=self.clients).contains(&j),
            "client {j} is not in this lab (1..={})",
            self.clients
        );
        format!("{}-c{j}", self.prefix)
    }

    /// Node `i`'s own address, 10.99.0.(10+i).
    #[must_use]
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.check_node(i);
        Ipv4Addr::new(10, 99, 0, 10 + i as u8)
    }

    /// Node `i`'s MAC on `eth1`.
    #[must_use]
    pub fn node_mac(&self, i: usize) -> String {
        self.check_node(i);
        node_mac(i)
    }

    /// Client `j`'s MAC on `eth1`: fixed, so tests can write reservations.
    #[must_use]
    pub fn client_mac(&self, j: usize) -> String {
        let _ = self.client_ns(j);
        client_mac(j)
    }

    fn check_node(&self, i: usize) {
        assert!(
            (1..=self.nodes).contains(&i),
            "node {i} is not in this lab (1..={})",
            self.nodes
        );
    }

    // ----- topology changes -----

    /// Adds a static address (e.g. `"10.99.2.1/16"`) to client `j`'s `eth1`.
    pub fn add_client_ip(&self, j: usize, cidr: &str) -> Result<()> {
        ip(&[
            "-n",
            &self.client_ns(j),
            "addr",
            "add",
            cidr,
            "dev",
            INTERFACE,
        ])
    }

    /// Cuts (`false`) or restores (`true`) node `i`'s link to the bridge, by
    /// setting its switch port down or up: a clean network partition.
    pub fn set_node_connected(&self, i: usize, connected: bool) -> Result<()> {
        self.check_node(i);
        let state = if connected { "up" } else { "down" };
        ip(&[
            "-n",
            &self.switch_ns(),
            "link",
            "set",
            &format!("n{i}"),
            state,
        ])
    }

    // ----- processes -----

    /// Starts `program args..` in `ns`, stdout and stderr appended to `log`.
    /// The lab SIGKILLs it on drop.
    pub fn spawn_in<S: AsRef<std::ffi::OsStr>>(
        &self,
        ns: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        log: &Path,
    ) -> Result<LabProcess> {
        self.ensure_own_ns(ns)?;
        let p = process::spawn_in(ns, program, args, log)?;
        lock(&self.processes).push(p.clone());
        Ok(p)
    }

    /// Runs a command in `ns` to completion; kills it and fails after `timeout`.
    pub fn exec_in<S: AsRef<std::ffi::OsStr>>(
        &self,
        ns: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        timeout: Duration,
    ) -> Result<Output> {
        self.ensure_own_ns(ns)?;
        process::exec_in(ns, program, args, timeout)
    }

    /// Like [`Lab::exec_in`], but a non-zero exit is an error too; returns stdout.
    pub fn exec_ok<S: AsRef<std::ffi::OsStr>>(
        &self,
        ns: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        timeout: Duration,
    ) -> Result<String> {
        let shown = program.as_ref().to_string_lossy().into_owned();
        let out = self.exec_in(ns, program, args, timeout)?;
        if !out.status.success() {
            bail!("`{shown}` in {ns} failed: {}", describe_output(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Refuses namespaces of other labs: a test must never reach into another
    /// test's (or the host's) network by a typo.
    fn ensure_own_ns(&self, ns: &str) -> Result<()> {
        ensure!(
            self.namespaces.iter().any(|n| n == ns),
            "namespace {ns:?} does not belong to lab {}",
            self.prefix
        );
        Ok(())
    }

    fn bin(&self) -> MutexGuard<'_, PathBuf> {
        lock(&self.tandem_bin)
    }

    /// Prints the tail of every node's `daemon.log` (to stderr, which the test
    /// harness captures and shows for failing tests). `Drop` calls it when a
    /// test panics.
    pub fn dump_logs(&self) {
        eprintln!(
            "=== lab {}: logs under {}",
            self.prefix,
            self.root.display()
        );
        for i in 1..=self.nodes {
            let path = self.node_log_path(i);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                    eprintln!(
                        "=== node {i}: last {} of {} lines of {}",
                        tail.len(),
                        lines.len(),
                        path.display()
                    );
                    for line in tail {
                        eprintln!("n{i}| {line}");
                    }
                }
                Err(e) => eprintln!("=== node {i}: no log at {} ({e})", path.display()),
            }
        }
    }
}

/// How much of each daemon log [`Lab::dump_logs`] prints.
const LOG_TAIL_LINES: usize = 80;

impl Drop for Lab {
    fn drop(&mut self) {
        if self.persistent {
            return;
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        for p in lock(&self.processes).drain(..) {
            p.kill_and_wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Anything that got into the namespace without going through us
            // (a daemon's helper, a client started by hand) goes too.
            netns::kill_namespace_processes(ns);
            if let Err(e) = netns::delete_namespace(ns) {
                eprintln!("lab {}: {e:#}", self.prefix);
            }
        }
        if keep_lab_files() {
            eprintln!(
                "lab {}: TANDEM_KEEP_LAB=1, kept {}",
                self.prefix,
                self.root.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("lab {}: removing {}: {e}", self.prefix, self.root.display());
            }
        }
    }
}

fn validate_prefix(prefix: &str) -> Result<()> {
    // Names end up in /run/netns, in /tmp paths and in shell commands that
    // users copy; keep them boring. No '-' at the end: `<prefix>-<role>` is
    // split at the last '-' by the sweepers.
    ensure!(
        !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !prefix.starts_with('-')
            && !prefix.ends_with('-'),
        "lab prefix {prefix:?} must be 1-32 characters of a-z, 0-9 and inner '-'"
    );
    Ok(())
}

fn node_mac(i: usize) -> String {
    format!("02:99:0e:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff)
}

fn client_mac(j: usize) -> String {
    format!("02:99:cc:00:{:02x}:{:02x}", (j >> 8) & 0xff, j & 0xff)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns
/// whether it held. The condition is checked once more at the deadline, so a
/// zero timeout still checks once.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(deadline - now));
    }
}

/// The workspace root (the lab crate lives one level below it).
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// The `tandem` binary tests use: `$TANDEM_BIN` (set by `cargo xtask test`),
/// else `target/release/tandem` of this workspace (honouring `CARGO_TARGET_DIR`).
#[must_use]
pub fn tandem_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TANDEM_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || workspace_root().join("target"),
        |t| workspace_root().join(t),
    );
    target.join("release").join("tandem")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_valid() {
        let (a, b) = (unique_prefix(), unique_prefix());
        assert_ne!(a, b);
        validate_prefix(&a).unwrap();
        validate_prefix(XTASK_PREFIX).unwrap();
        for bad in ["", "-x", "x-", "Tl", "a b", "a/b", &"x".repeat(33)] {
            assert!(validate_prefix(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn macs_encode_the_index() {
        assert_eq!(node_mac(1), "02:99:0e:00:00:01");
        assert_eq!(client_mac(0x1234), "02:99:cc:00:12:34");
    }

    #[test]
    fn wait_until_reports_timeout_and_success() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(120), || false));
        assert!(start.elapsed() >= Duration::from_millis(120));
    }
}
