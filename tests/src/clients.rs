//! Real DHCP clients beyond what the lab offers: busybox udhcpc with the
//! raw `lease.<var>` lines kept (the lab's [`DhcpLease::parse`] fills in a
//! default prefix length, so it cannot show that option 1 was missing), and
//! ISC dhclient run one-shot.
//!
//! dhclient daemonizes once it is bound, so [`dhclient`] waits for the
//! foreground part to exit, then kills the background process by the PID in
//! its pid file (without a RELEASE: SIGTERM does not release), leaving the
//! lease file in place. A second call for the same client then starts from
//! that lease file and does an INIT-REBOOT (`reason=REBOOT`): the renew path
//! of a rebooted machine.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::{describe_output, DhcpLease, Lab};

/// Runs `busybox udhcpc -f -q -n -i eth1 -s <lab script> ARGS..` in client
/// `j` and returns its output whatever the exit status; the caller passes
/// the retry options (`-t N -T SECS`) and reads the result with [`lease_vars`].
pub fn udhcpc(lab: &Lab, j: usize, args: &[&str], timeout: Duration) -> Result<Output> {
    let script = lab.udhcpc_script()?;
    let script = script.to_str().context("temp root path is not UTF-8")?;
    let mut full = vec![
        "udhcpc",
        "-f",
        "-q",
        "-n",
        "-i",
        lab::INTERFACE,
        "-s",
        script,
    ];
    full.extend_from_slice(args);
    lab.exec_in(&lab.client_ns(j), "busybox", &full, timeout)
}

/// A lease as a client reported it: parsed, plus the raw variables.
#[derive(Clone, Debug)]
pub struct ClientLease {
    pub lease: DhcpLease,
    /// The client's own variable names and values (udhcpc: `mask`, `router`..;
    /// dhclient: `reason`, `new_subnet_mask`..).
    pub vars: BTreeMap<String, String>,
}

/// The `lease.<var>=<value>` lines of the lab's udhcpc script; the last
/// value of each variable wins (the last bound/renew event).
#[must_use]
pub fn lease_vars(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("lease.")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// One udhcpc exchange (`-t 5`, plus `args`) that must produce a lease.
pub fn udhcpc_lease(lab: &Lab, j: usize, args: &[&str], timeout: Duration) -> Result<ClientLease> {
    let mut full = vec!["-t", "5"];
    full.extend_from_slice(args);
    let out = udhcpc(lab, j, &full, timeout)?;
    ensure!(
        out.status.success(),
        "udhcpc in client {j} got no lease: {}",
        describe_output(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lease = DhcpLease::parse(&stdout)
        .with_context(|| format!("udhcpc in client {j}: {}", describe_output(&out)))?;
    Ok(ClientLease {
        lease,
        vars: lease_vars(&stdout),
    })
}

/// dhclient's `-sf` script. It configures the address (so the client can
/// speak from it) and appends the lease to the dump file, one block per
/// event, each opened by `reason=`.
const DHCLIENT_SCRIPT: &str = r#"#!/bin/sh
# Written by the tandem tests. dhclient runs it with $reason and the lease in
# new_* variables; it configures eth1 and appends the lease to DUMP.
case "$reason" in
PREINIT)
    ip link set dev "$interface" up
    ;;
BOUND|RENEW|REBIND|REBOOT)
    ip -4 addr flush dev "$interface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    {
        echo "reason=$reason"
        echo "new_ip_address=$new_ip_address"
        echo "new_subnet_mask=$new_subnet_mask"
        echo "new_routers=$new_routers"
        echo "new_domain_name_servers=$new_domain_name_servers"
        echo "new_domain_name=$new_domain_name"
        echo "new_dhcp_lease_time=$new_dhcp_lease_time"
        echo "new_dhcp_server_identifier=$new_dhcp_server_identifier"
        echo "new_filename=$new_filename"
        echo "new_vendor_class_identifier=$new_vendor_class_identifier"
    } >> "DUMP"
    ;;
esac
exit 0
"#;

/// dhclient's `-cf` config: the options a PXE-less Linux host asks for, and
/// a bounded wait so `-1` gives up in time.
const DHCLIENT_CONF: &str = "timeout 20;\n\
    request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, dhcp-lease-time;\n";

/// How long dhclient has to exit after SIGTERM.
const DHCLIENT_STOP: Duration = Duration::from_secs(5);

fn client_file(lab: &Lab, j: usize, suffix: &str) -> PathBuf {
    lab.root().join(format!("c{j}-dhclient.{suffix}"))
}

/// Runs `dhclient -1 -v -cf C -lf L -pf P -sf S eth1` in client `j` (files
/// under the lab root, shared by calls for the same client), kills the
/// daemonized dhclient by PID, and returns the lease of the last event.
pub fn dhclient(lab: &Lab, j: usize, timeout: Duration) -> Result<ClientLease> {
    dhclient_with(lab, j, "", timeout)
}

/// [`dhclient`] with `extra` appended to its config (e.g. `send` lines for
/// option 60 and 93, to pose as a UEFI HTTP boot client).
pub fn dhclient_with(lab: &Lab, j: usize, extra: &str, timeout: Duration) -> Result<ClientLease> {
    let (script, conf, leases, pid, dump) = (
        client_file(lab, j, "sh"),
        client_file(lab, j, "conf"),
        client_file(lab, j, "leases"),
        client_file(lab, j, "pid"),
        client_file(lab, j, "dump"),
    );
    let dump_s = dump.to_str().context("temp root path is not UTF-8")?;
    std::fs::write(&script, DHCLIENT_SCRIPT.replace("DUMP", dump_s))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(&conf, format!("{DHCLIENT_CONF}{extra}"))?;
    // Only this run's events count.
    let _ = std::fs::remove_file(&dump);
    let path = |p: &PathBuf| p.to_str().expect("lab paths are UTF-8").to_owned();
    let args = [
        "-1".to_owned(),
        "-v".to_owned(),
        "-cf".to_owned(),
        path(&conf),
        "-lf".to_owned(),
        path(&leases),
        "-pf".to_owned(),
        path(&pid),
        "-sf".to_owned(),
        path(&script),
        lab::INTERFACE.to_owned(),
    ];
    let out = lab.exec_in(&lab.client_ns(j), "dhclient", &args, timeout)?;
    // Stop the background dhclient before judging the result: it must not
    // outlive this call (it would renew, or hold the pid file for the next run).
    let stopped = stop_dhclient(&pid);
    ensure!(
        out.status.success(),
        "dhclient in client {j} got no lease: {}",
        describe_output(&out)
    );
    stopped?;
    let text = std::fs::read_to_string(&dump).with_context(|| {
        format!(
            "dhclient reported success but its script wrote no lease: {}",
            describe_output(&out)
        )
    })?;
    parse_dhclient_dump(&text)
        .with_context(|| format!("dhclient lease dump {}:\n{text}", dump.display()))
}

/// SIGTERMs the dhclient whose PID is in `pid_file` and waits until it is gone.
fn stop_dhclient(pid_file: &PathBuf) -> Result<()> {
    // The daemonized child writes the pid file after the parent has
    // exited, so it can exist and still be empty for a moment.
    let mut text = String::new();
    crate::wait_until(DHCLIENT_STOP, || match std::fs::read_to_string(pid_file) {
        Ok(t) => {
            text = t;
            !text.trim().is_empty()
        }
        Err(_) => true,
    });
    if !pid_file.exists() {
        // No pid file: dhclient never daemonized (it failed), nothing runs.
        return Ok(());
    }
    let pid: u32 = text
        .trim()
        .parse()
        .with_context(|| format!("pid file {} holds {text:?}", pid_file.display()))?;
    let _ = std::fs::remove_file(pid_file);
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    // Only signal what is really a dhclient: the pid file may be stale.
    let comm = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
    if comm.trim() != "dhclient" {
        return Ok(());
    }
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM {pid} failed");
    let gone = crate::wait_until(DHCLIENT_STOP, || {
        // Gone, or a zombie waiting for init to reap it.
        std::fs::read_to_string(proc_dir.join("stat")).map_or(true, |s| s.contains(") Z "))
    });
    if !gone {
        bail!("dhclient (pid {pid}) still runs {DHCLIENT_STOP:?} after SIGTERM");
    }
    Ok(())
}

/// The last event block of the dhclient script's dump, as a [`ClientLease`].
/// A missing subnet mask is an error, not a default: it is one of the
/// options under test.
pub fn parse_dhclient_dump(text: &str) -> Result<ClientLease> {
    let start = text.rfind("reason=").context("no event in the dump")?;
    let vars: BTreeMap<String, String> = text[start..]
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect();
    let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let ip = |k: &str| -> Result<Option<Ipv4Addr>> {
        get(k)
            .map(|v| v.parse().with_context(|| format!("{k}={v:?}")))
            .transpose()
    };
    let mask: Ipv4Addr = ip("new_subnet_mask")?.context("no subnet mask (option 1)")?;
    let bits = u32::from(mask);
    ensure!(
        bits.leading_ones() + bits.trailing_zeros() == 32,
        "subnet mask {mask} is not contiguous"
    );
    let lease = DhcpLease {
        ip: ip("new_ip_address")?.context("no new_ip_address")?,
        prefix_len: bits.leading_ones() as u8,
        // dhclient lists several routers separated by spaces; the first is the default route.
        router: get("new_routers")
            .and_then(|r| r.split_whitespace().next())
            .map(|r| r.parse().with_context(|| format!("new_routers={r:?}")))
            .transpose()?,
        dns: get("new_domain_name_servers")
            .unwrap_or_default()
            .split_whitespace()
            .map(|d| d.parse().with_context(|| format!("DNS server {d:?}")))
            .collect::<Result<_>>()?,
        domain: get("new_domain_name").map(str::to_owned),
        lease_secs: get("new_dhcp_lease_time")
            .map(str::parse)
            .transpose()
            .context("new_dhcp_lease_time")?,
        server_id: ip("new_dhcp_server_identifier")?,
        siaddr: None,
        boot_file: get("new_filename").map(str::to_owned),
    };
    Ok(ClientLease { lease, vars })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhclient_dump_last_event_wins() {
        let text = "reason=BOUND\nnew_ip_address=10.99.1.1\nnew_subnet_mask=255.255.0.0\nnew_routers=10.99.0.1\n\
                    new_domain_name_servers=10.99.0.1\nnew_domain_name=lab.tandem\nnew_dhcp_lease_time=600\n\
                    new_dhcp_server_identifier=10.99.0.10\nnew_filename=\n\
                    reason=REBOOT\nnew_ip_address=10.99.1.2\nnew_subnet_mask=255.255.255.0\nnew_routers=\n\
                    new_domain_name_servers=\nnew_domain_name=\nnew_dhcp_lease_time=300\n\
                    new_dhcp_server_identifier=\nnew_filename=\n";
        let l = parse_dhclient_dump(text).unwrap();
        assert_eq!(l.vars["reason"], "REBOOT");
        assert_eq!(l.lease.ip, Ipv4Addr::new(10, 99, 1, 2));
        assert_eq!(l.lease.prefix_len, 24);
        assert_eq!(l.lease.router, None);
        assert_eq!(l.lease.lease_secs, Some(300));
        let first = parse_dhclient_dump(&text[..text.find("reason=REBOOT").unwrap()]).unwrap();
        assert_eq!(first.lease.prefix_len, 16);
        assert_eq!(first.lease.dns, [Ipv4Addr::new(10, 99, 0, 1)]);
    }

    #[test]
    fn dhclient_dump_needs_a_mask() {
        assert!(
            parse_dhclient_dump("reason=BOUND\nnew_ip_address=10.99.1.1\nnew_subnet_mask=\n")
                .is_err()
        );
        assert!(parse_dhclient_dump(
            "reason=BOUND\nnew_ip_address=10.99.1.1\nnew_subnet_mask=255.0.255.0\n"
        )
        .is_err());
        assert!(parse_dhclient_dump("nothing\n").is_err());
    }

    #[test]
    fn udhcpc_vars_last_wins() {
        let v = lease_vars("noise\nlease.ip=10.99.1.1\nlease.mask=16\nlease.ip=10.99.1.2\n");
        assert_eq!(v["ip"], "10.99.1.2");
        assert_eq!(v["mask"], "16");
    }
}
