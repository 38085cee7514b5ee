//! # Layout
//! `tandem-bench`: tandem against the usual open-source servers, in one
//! namespace lab per run, with the same address (the lab VIP 10.99.0.10),
//! the same client namespace and the same client tools for every server.
//!
//! ```text
//!            <prefix>-sw  br0
//!   ┌──────────┬──────────┬──────────┬───────────┐
//!   n1         n2         n3                    c1 10.99.3.1/16
//!   tandem     kea /      dnsmasq                perfdhcp (a relay, giaddr 10.99.3.1)
//!   (VIP)      tftpd-hpa  (VIP)                  or 50 × curl tftp://
//!              (VIP)
//! ```
//!
//! In the throughput benches only the server under test is connected to
//! the bridge ([`Bench::activate`]; a tandem cluster is several namespaces),
//! so the VIP is never claimed twice and a server that is not under test
//! cannot answer. The failover and stability benches run each HA system on
//! the same three node namespaces, one system after the other.
//!
//! - this file: [`Bench`] (the lab plus the helpers every bench needs),
//!   tool checks, readiness waits, and the closing JSON line.
//! - [`interrupt`]: SIGINT/SIGTERM set a flag; every wait checks it, so a
//!   Ctrl-C unwinds through `Drop` and the lab is torn down.
//! - [`perfdhcp`]: running perfdhcp and parsing its report (pure parser).
//! - [`search`]: the search for the highest rate with < 1 % lost exchanges
//!   (pure, driven by a closure that runs one trial).
//! - [`servers`]: how each server under test is configured and started.
//! - [`cluster`]: tandem as a cluster of several nodes (formation by join,
//!   who leads).
//! - [`keepalived`]: the keepalived + dnsmasq HA set-up tandem's failover
//!   is compared with.
//! - [`nsenter`]: sockets inside a lab namespace, made in-process.
//! - [`probe`]: a DHCP probe that timestamps every reply (failover,
//!   stability); [`capture`]: tcpdump on the client's switch port and a
//!   pcap reader (who answered each transaction).
//! - [`tftpget`]: the bench's own TFTP client, many windowed transfers from
//!   one process (`tandem-bench tftp-get`), cheaper than the server it loads.
//! - [`dhcp`], [`tftp`], [`failover`], [`stability`], [`boot`], [`overload`]:
//!   the benches.

pub mod boot;
pub mod capture;
pub mod cluster;
pub mod dhcp;
pub mod failover;
pub mod interrupt;
pub mod keepalived;
pub mod nsenter;
pub mod overload;
pub mod perfdhcp;
pub mod probe;
pub mod search;
pub mod servers;
pub mod stability;
pub mod tftp;
pub mod tftpget;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lab::{describe_output, Lab, LabProcess, INTERFACE, VIP, VIP_CIDR};

/// The static address of the load-generating client. perfdhcp uses it as
/// its relay address (giaddr), so it must lie in the served subnet
/// ([`servers::SUBNET`], 10.96.0.0/12) but outside the pool
/// (10.100.0.0-10.111.255.254).
pub const CLIENT_ADDR: &str = "10.99.3.1";
/// [`CLIENT_ADDR`] with the lab's prefix length.
pub const CLIENT_CIDR: &str = "10.99.3.1/16";
/// The one client namespace of every bench.
pub const CLIENT: usize = 1;

/// A lab built for a bench plus the bits of state the benches share.
pub struct Bench {
    pub lab: Lab,
    /// The `tandem` binary.
    pub tandem_bin: PathBuf,
}

impl Bench {
    /// Builds a lab with `nodes` server namespaces and one client namespace
    /// holding [`CLIENT_CIDR`].
    pub fn new(nodes: usize) -> Result<Bench> {
        check_root()?;
        let tandem_bin = lab::tandem_bin();
        ensure!(
            tandem_bin.exists(),
            "tandem binary {} does not exist: build it with `cargo build --release -p tandem` or set TANDEM_BIN",
            tandem_bin.display()
        );
        let lab = Lab::builder()
            .nodes(nodes)
            .client_with_ip(CLIENT, CLIENT_CIDR)
            .tandem_bin(&tandem_bin)
            .build()?;
        Ok(Bench { lab, tandem_bin })
    }

    #[must_use]
    pub fn client_ns(&self) -> String {
        self.lab.client_ns(CLIENT)
    }

    /// Connects server namespace `node` to the bridge and disconnects every
    /// other one, then flushes the client's neighbour cache so that the VIP
    /// is resolved afresh to the active server's MAC.
    pub fn activate(&self, node: usize) -> Result<()> {
        self.activate_nodes(&[node])
    }

    /// Like [`Bench::activate`] for a set of nodes (a tandem cluster).
    pub fn activate_nodes(&self, nodes: &[usize]) -> Result<()> {
        for i in 1..=self.lab.node_count() {
            self.lab.set_node_connected(i, nodes.contains(&i))?;
        }
        self.ip(&self.client_ns(), &["neigh", "flush", "dev", INTERFACE])
    }

    /// Gives server namespace `node` the VIP as its only address, for the
    /// servers that do not manage the VIP themselves (everything but tandem):
    /// they then bind, answer and identify themselves as 10.99.0.10 exactly
    /// as tandem does.
    pub fn give_vip(&self, node: usize) -> Result<()> {
        let ns = self.lab.node_ns(node);
        self.ip(&ns, &["-4", "addr", "flush", "dev", INTERFACE])?;
        self.ip(&ns, &["addr", "add", VIP_CIDR, "dev", INTERFACE])
    }

    /// `ip ARGS..` inside `ns`; a failure is an error.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<()> {
        self.lab.exec_ok(ns, "ip", args, Duration::from_secs(10))?;
        Ok(())
    }

    /// Starts `program args..` in `ns` with its output appended to `log`;
    /// the lab kills it on drop.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        ns: &str,
        program: &str,
        args: &[S],
        log: &Path,
    ) -> Result<LabProcess> {
        self.lab.spawn_in(ns, program, args, log)
    }

    /// Waits until something in `ns` has a UDP socket bound to `port` on the
    /// VIP or the wildcard address (what `ss -Hlun` lists), failing early if
    /// `process` exits.
    pub fn wait_udp_bound(
        &self,
        ns: &str,
        port: u16,
        process: &LabProcess,
        log: &Path,
        timeout: Duration,
    ) -> Result<()> {
        let vip = format!("{VIP}:{port}");
        let any = format!("0.0.0.0:{port}");
        let any_dev = format!("0.0.0.0%{INTERFACE}:{port}");
        wait_for(timeout, "the server to bind its UDP port", || {
            if let Some(status) = process.try_status() {
                bail!(
                    "the server exited ({status}) before binding port {port}; log {}:\n{}",
                    log.display(),
                    tail(log, 20)
                );
            }
            let out = self
                .lab
                .exec_ok(ns, "ss", &["-Hlun"], Duration::from_secs(10))?;
            Ok(out
                .lines()
                .filter_map(|l| l.split_whitespace().nth(3))
                .any(|local| local == vip || local == any || local == any_dev))
        })
    }

    /// A scratch directory for the clients' downloads, on tmpfs
    /// (`/dev/shm`) when there is one so disk speed does not enter the
    /// figures, under the lab root otherwise; removed on drop.
    #[must_use]
    pub fn downloads_dir(&self, bench: &str) -> TempDir {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            self.lab.root().to_path_buf()
        };
        TempDir(base.join(format!("tandem-bench-{bench}-{}", self.lab.prefix())))
    }

    /// `tandem status --json` of `node`.
    fn tandem_status(&self, node: usize) -> Result<serde_json::Value> {
        let out = self.lab.tandem(node, &["status", "--json"])?;
        ensure!(
            out.status.success(),
            "tandem status --json: {}",
            describe_output(&out)
        );
        serde_json::from_slice(&out.stdout).context("tandem status --json printed no JSON")
    }

    /// Starts tandem on `node` with an empty data dir, waits until it leads
    /// its cluster of one, applies the service config `service_toml`, and
    /// waits until it serves.
    pub fn start_tandem(&self, node: usize, service_toml: &str) -> Result<()> {
        let data = self.lab.node_data_dir(node);
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {}", data.display()))?;
        }
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let service = self.lab.node_dir(node).join("service.toml");
        std::fs::write(&service, service_toml)
            .with_context(|| format!("writing {}", service.display()))?;

        let p = self.lab.start_node(node, &self.tandem_bin)?;
        let log = self.lab.node_log_path(node);
        // A fresh node leads its cluster of one but serves only once a
        // service config is applied: wait for "leader", apply, then wait
        // for "serving".
        let field = |key: &'static str| -> Result<serde_json::Value> {
            let v = self.tandem_status(node)?;
            Ok(v.get(key).cloned().unwrap_or_default())
        };
        let wait = |what: &str, done: &dyn Fn() -> Result<bool>| {
            wait_for(Duration::from_secs(60), what, || {
                if let Some(status) = p.try_status() {
                    bail!(
                        "tandem exited ({status}) before {what}; log {}:\n{}",
                        log.display(),
                        tail(&log, 30)
                    );
                }
                // The API is not up for the first moments: not an error yet.
                Ok(done().unwrap_or(false))
            })
        };
        wait("tandem to lead its cluster of one", &|| {
            Ok(field("role")? == "leader")
        })?;
        let service = service.to_str().context("lab path is not UTF-8")?;
        let out = self.lab.tandem(node, &["apply", service])?;
        ensure!(
            out.status.success(),
            "tandem apply failed: {}",
            describe_output(&out)
        );
        wait("tandem to report \"serving\": true", &|| {
            Ok(field("serving")? == true)
        })?;
        Ok(())
    }

    /// Stops tandem on `node` (SIGTERM, SIGKILL if it lingers) if it runs.
    pub fn stop_tandem(&self, node: usize) {
        if self.lab.is_node_running(node) && self.lab.kill_node(node, libc::SIGTERM).is_err() {
            if let Some(p) = self.lab.node_process(node) {
                p.kill_and_wait();
            }
        }
    }
}

/// Polls `cond` every 50 ms until it returns `Ok(true)`, an error, the
/// timeout, or an interrupt (the last two are errors naming `what`).
pub fn wait_for(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        interrupt::check()?;
        if cond()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `p` to exit, checking for interrupts; kills it and fails after
/// `timeout`.
pub fn wait_exit(
    p: &LabProcess,
    timeout: Duration,
    what: &str,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = p.try_status() {
            return Ok(status);
        }
        if let Err(e) = interrupt::check() {
            p.kill_and_wait();
            return Err(e);
        }
        if Instant::now() >= deadline {
            p.kill_and_wait();
            bail!("{what} did not finish within {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `n` lines of a log file, for error messages.
#[must_use]
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn check_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benches need root (network namespaces)"
    );
    Ok(())
}

/// Fails unless every program is on PATH (they come from apt; `cargo xtask
/// deps` installs them).
pub fn require_tools(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    ensure!(
        missing.is_empty(),
        "missing programs {missing:?}: install them with `cargo xtask deps`"
    );
    Ok(())
}

/// Whether `tool` is a file in a directory of PATH.
#[must_use]
pub fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(tool).is_file())
}

/// Warns about copies of `names` running in the host's network namespace
/// (e.g. a distribution service that apt started). They cannot answer in
/// the lab's namespaces, but they take CPU from a 2-core machine.
pub fn warn_host_services(names: &[&str]) {
    let Ok(own_net) = std::fs::read_link("/proc/self/ns/net") else {
        return;
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if names.contains(&comm)
            && std::fs::read_link(entry.path().join("ns/net")).is_ok_and(|n| n == own_net)
        {
            eprintln!("warning: {comm} (pid {pid}) runs in the host namespace; stop it for quieter figures");
        }
    }
}

/// Rounds `x` to `digits` significant decimal digits (for rates that read
/// well in a table and in perfdhcp's command line).
#[must_use]
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 0.0;
    }
    let scale = 10f64.powi(digits - 1 - x.log10().floor() as i32);
    (x * scale).round() / scale
}

/// A number for the closing JSON line: `null` when there is no figure.
#[must_use]
pub fn json_num(x: Option<f64>, decimals: i32) -> serde_json::Value {
    let scale = 10f64.powi(decimals);
    x.filter(|v| v.is_finite())
        .map_or(serde_json::Value::Null, |v| {
            serde_json::json!((v * scale).round() / scale)
        })
}

/// Removes a directory tree on drop (the downloads on tmpfs).
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("removing {}: {e}", self.0.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_significant_digits() {
        assert!((round_sig(1234.0, 2) - 1200.0).abs() < 1e-9);
        assert!((round_sig(56.7, 2) - 57.0).abs() < 1e-9);
        assert!((round_sig(0.0123, 2) - 0.012).abs() < 1e-12);
        assert!(round_sig(0.0, 2).abs() < f64::EPSILON);
        assert!(round_sig(f64::NAN, 2).abs() < f64::EPSILON);
    }

    #[test]
    fn json_numbers_round_and_null() {
        assert_eq!(json_num(Some(1.23456), 2), serde_json::json!(1.23));
        assert_eq!(json_num(None, 2), serde_json::Value::Null);
        assert_eq!(json_num(Some(f64::INFINITY), 2), serde_json::Value::Null);
    }
}
