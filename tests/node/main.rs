//! # Layout
//! Integration tests of a single tandem node (a Raft cluster of one) with
//! real clients in network namespaces; nothing is mocked. Each test builds
//! its own [`Lab`] (unique prefix; its `Drop` kills the processes, deletes
//! the namespaces and, when the test panics, prints the daemon logs).
//!
//! - this file: the shared set-up ([`node_lab`], the service config) and
//!   small readers of `tandem lease list --json` and the daemon log.
//! - [`dhcp`]: udhcpc and dhclient leases with the configured options,
//!   reservations, renewals.
//! - [`tftp`]: tftp-hpa and atftp downloads, traversal and write refusals.
//! - [`durability`]: SIGKILL and restart keep leases; the stale VIP goes.
//! - [`bad_input`]: malformed DHCP packets, invalid node and service configs.
//! - [`xdp`]: steering counters, and the role map silencing DHCP.
//! - [`systemd`]: `READY=1`, `STATUS=`, `WATCHDOG=1` and `STOPPING=1` over a
//!   real `NOTIFY_SOCKET`, with the unit's capabilities only (setpriv).
//! - [`pxe`]: a QEMU VM boots kernel and initrd by iPXE over HTTP from the VIP;
//!   dhclient as a UEFI HTTP boot client gets the binary's URL.

mod bad_input;
mod dhcp;
mod durability;
mod pxe;
mod systemd;
mod tftp;
mod xdp;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tandem_tests::{apply, json, phase, start_lab, wait_single_server, wait_until, Lab};

/// How long a fresh node may take to report serving.
const SERVING_TIMEOUT: Duration = Duration::from_secs(20);
/// One DHCP client run (udhcpc retries 5 times, 3 s apart, at worst).
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);
/// The lease time the service config sets (and the clients must report).
const LEASE_TIME: u32 = 600;
/// The dynamic pool of [`service_toml`].
const POOL: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 99, 1, 1), Ipv4Addr::new(10, 99, 1, 200));

/// A fixed address for one client MAC.
struct Reservation<'a> {
    mac: &'a str,
    ip: Ipv4Addr,
    hostname: &'a str,
}

/// The standard service config of these tests (the `tandem apply` format).
fn service_toml(reservations: &[Reservation]) -> String {
    let mut s = format!(
        r#"[[subnet]]
cidr = "10.99.0.0/16"
pools = ["{}-{}"]
router = "10.99.0.1"
dns = ["10.99.0.1"]
domain = "lab.tandem"
lease_time = {LEASE_TIME}
profile = "default"

[[profile]]
name = "default"
bios = "undionly.kpxe"
uefi_x64 = "ipxe.efi"
ipxe_script = "http://10.99.0.10/boot.ipxe"
"#,
        POOL.0, POOL.1
    );
    for r in reservations {
        write!(
            s,
            "\n[[reservation]]\nmac = \"{}\"\nip = \"{}\"\nhostname = \"{}\"\n",
            r.mac, r.ip, r.hostname
        )
        .expect("writing to a String");
    }
    s
}

/// One node serving the standard service config (plus `reservations`),
/// with `clients` client namespaces.
fn node_lab(clients: usize, reservations: impl FnOnce(&Lab) -> String) -> Lab {
    phase("lab up: one node, start the daemon, wait until it leads (no config: it does not serve)");
    let lab = start_lab(1, clients);
    assert!(
        wait_until(SERVING_TIMEOUT, || tandem_tests::is_leader(&lab, 1)),
        "node 1 never led its cluster of one"
    );
    phase("apply the service config, wait until it serves");
    apply(&lab, 1, &reservations(&lab));
    let serving = wait_single_server(&lab, SERVING_TIMEOUT);
    assert_eq!(serving, 1);
    lab
}

fn in_pool(ip: Ipv4Addr) -> bool {
    (POOL.0..=POOL.1).contains(&ip)
}

/// `tandem lease list --json` of node 1.
fn leases(lab: &Lab) -> Vec<Value> {
    let out = lab
        .tandem(1, &["lease", "list", "--json"])
        .expect("running tandem lease list");
    let v = json(&out).unwrap_or_else(|e| panic!("tandem lease list --json: {e:#}"));
    v.as_array()
        .unwrap_or_else(|| panic!("lease list is not an array: {v}"))
        .iter()
        .map(tandem_tests::cluster::record)
        .collect()
}

/// The lease of `ip` in `tandem lease list --json`; panics with the whole
/// table if there is none.
fn lease_of(lab: &Lab, ip: Ipv4Addr) -> Value {
    let all = leases(lab);
    all.iter()
        .find(|l| l["ip"].as_str() == Some(&ip.to_string()))
        .cloned()
        .unwrap_or_else(|| panic!("no lease for {ip} in `tandem lease list --json`: {all:?}"))
}

fn u64_field(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("lease field {k} is not a number: {v}"))
}

/// Checks what the table says about a lease the client `mac` just got.
fn assert_bound_to(lease: &Value, mac: &str) {
    assert_eq!(
        lease["mac"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some(mac),
        "lease {lease}"
    );
    assert_eq!(lease["state"], "bound", "lease {lease}");
    let (granted, expires) = (
        u64_field(lease, "granted_at"),
        u64_field(lease, "expires_at"),
    );
    assert_eq!(expires - granted, u64::from(LEASE_TIME), "lease {lease}");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Lease times have one-second resolution: before a renewal that must move
/// `granted_at`, let the wall clock pass it.
fn wait_clock_past(t: u64) {
    assert!(
        wait_until(Duration::from_secs(3), || unix_now() > t),
        "clock did not pass {t}"
    );
}

/// Node 1's daemon log (every run appended).
fn daemon_log(lab: &Lab) -> String {
    let path = lab.node_log_path(1);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
