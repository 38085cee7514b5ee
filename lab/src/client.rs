//! Real clients run in client namespaces: busybox `udhcpc` for DHCP and
//! `curl` for TFTP, plus a file checksum helper to compare transfers.
//!
//! busybox udhcpc configures nothing by itself: it calls a script with the
//! event in `$1` and the lease in the environment. Ours adds the address (so
//! that the client can then speak TFTP/HTTP from it) and prints the lease as
//! `lease.<var>=<value>` lines, which [`DhcpLease::parse`] reads back.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{describe_output, Lab, INTERFACE, VIP};

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# Written by the tandem lab. busybox udhcpc calls it with the event in $1
# and the lease in the environment; it configures the address and reports
# the lease on stdout, one `lease.<var>=<value>` line per variable.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-16}" dev "$interface"
    echo "lease.event=$1"
    echo "lease.ip=$ip"
    echo "lease.mask=$mask"
    echo "lease.router=$router"
    echo "lease.dns=$dns"
    echo "lease.domain=$domain"
    echo "lease.lease=$lease"
    echo "lease.serverid=$serverid"
    echo "lease.siaddr=$siaddr"
    echo "lease.boot_file=$boot_file"
    ;;
esac
exit 0
"#;

/// What a DHCP client was given, as busybox udhcpc reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpLease {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Lease time in seconds (option 51).
    pub lease_secs: Option<u32>,
    /// Server identifier (option 54).
    pub server_id: Option<Ipv4Addr>,
    /// `siaddr`, the next server; udhcpc omits it when it is 0.0.0.0.
    pub siaddr: Option<Ipv4Addr>,
    pub boot_file: Option<String>,
}

impl DhcpLease {
    /// Reads the `lease.<var>=<value>` lines our udhcpc script prints; the
    /// last bound/renew event wins.
    pub fn parse(output: &str) -> Result<DhcpLease> {
        let mut vars = std::collections::HashMap::new();
        for line in output.lines() {
            if let Some((k, v)) = line.strip_prefix("lease.").and_then(|l| l.split_once('=')) {
                vars.insert(k, v.trim());
            }
        }
        let get = |k: &str| vars.get(k).copied().filter(|v| !v.is_empty());
        let ip = get("ip").context("udhcpc reported no lease")?;
        let opt_ip = |k: &str| -> Result<Option<Ipv4Addr>> {
            get(k)
                .map(|v| v.parse().with_context(|| format!("lease.{k}={v:?}")))
                .transpose()
        };
        Ok(DhcpLease {
            ip: ip.parse().with_context(|| format!("lease.ip={ip:?}"))?,
            prefix_len: get("mask")
                .map_or(Ok(crate::PREFIX_LEN), str::parse)
                .context("lease.mask")?,
            router: opt_ip("router")?,
            dns: get("dns")
                .unwrap_or_default()
                .split_whitespace()
                .map(|d| d.parse().with_context(|| format!("lease.dns entry {d:?}")))
                .collect::<Result<_>>()?,
            domain: get("domain").map(str::to_owned),
            lease_secs: get("lease")
                .map(str::parse)
                .transpose()
                .context("lease.lease")?,
            server_id: opt_ip("serverid")?,
            siaddr: opt_ip("siaddr")?,
            boot_file: get("boot_file").map(str::to_owned),
        })
    }
}

impl Lab {
    /// The udhcpc script (written under the temp root on first use).
    pub fn udhcpc_script(&self) -> Result<PathBuf> {
        let path = self.root.join("udhcpc.script");
        if !path.exists() {
            std::fs::write(&path, UDHCPC_SCRIPT)
                .with_context(|| format!("writing {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(path)
    }

    /// Runs `busybox udhcpc -f -q -n -i eth1 -t 5 -s <script> EXTRA..` in
    /// client `j`'s namespace: one DHCP exchange, then exit. The client keeps
    /// the address it got. Fails if no lease came (or after `timeout`).
    pub fn dhcp_lease(
        &self,
        j: usize,
        extra_args: &[&str],
        timeout: Duration,
    ) -> Result<DhcpLease> {
        let script = self.udhcpc_script()?;
        let script = script.to_str().context("temp root path is not UTF-8")?;
        let mut args = vec![
            "udhcpc", "-f", "-q", "-n", "-i", INTERFACE, "-t", "5", "-s", script,
        ];
        args.extend_from_slice(extra_args);
        let ns = self.client_ns(j);
        let out = self.exec_in(&ns, "busybox", &args, timeout)?;
        if !out.status.success() {
            bail!("udhcpc in {ns} got no lease: {}", describe_output(&out));
        }
        DhcpLease::parse(&String::from_utf8_lossy(&out.stdout))
            .with_context(|| format!("udhcpc in {ns}: {}", describe_output(&out)))
    }

    /// Fetches `tftp://<VIP>/<file>` with curl from client `j` (which needs an
    /// address: a lease or [`Lab::add_client_ip`]) into `dest`.
    pub fn tftp_get(&self, j: usize, file: &str, dest: &Path, timeout: Duration) -> Result<()> {
        let url = format!("tftp://{VIP}/{file}");
        let dest_s = dest.to_str().context("destination path is not UTF-8")?;
        self.exec_ok(
            &self.client_ns(j),
            "curl",
            &["-sS", "-o", dest_s, &url],
            timeout,
        )
        .with_context(|| format!("fetching {url}"))?;
        Ok(())
    }
}

/// The sha256 of a file, as lowercase hex (via coreutils `sha256sum`).
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    if !out.status.success() {
        bail!(
            "sha256sum {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .context("sha256sum printed nothing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_script_prints() {
        let out = "udhcpc: started\nlease.event=bound\nlease.ip=10.99.1.7\nlease.mask=16\nlease.router=10.99.0.1\n\
                   lease.dns=10.99.0.1 10.99.0.2\nlease.domain=lab.tandem\nlease.lease=600\n\
                   lease.serverid=10.99.0.10\nlease.siaddr=\nlease.boot_file=undionly.kpxe\n";
        let lease = DhcpLease::parse(out).unwrap();
        assert_eq!(lease.ip, Ipv4Addr::new(10, 99, 1, 7));
        assert_eq!(lease.prefix_len, 16);
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!(
            lease.dns,
            [Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)]
        );
        assert_eq!(lease.domain.as_deref(), Some("lab.tandem"));
        assert_eq!(lease.lease_secs, Some(600));
        assert_eq!(lease.server_id, Some(VIP));
        assert_eq!(lease.siaddr, None);
        assert_eq!(lease.boot_file.as_deref(), Some("undionly.kpxe"));
    }

    #[test]
    fn no_lease_and_garbage_are_errors() {
        assert!(DhcpLease::parse("udhcpc: no lease, failing\n").is_err());
        assert!(DhcpLease::parse("lease.ip=10.99.1.300\n").is_err());
    }
}
