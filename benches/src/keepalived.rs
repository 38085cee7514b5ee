//! The classic HA DHCP set-up tandem is measured against: keepalived (VRRP)
//! moves the VIP, and dnsmasq runs on every node with the same pool,
//! answering wherever the VIP lands.
//!
//! ```text
//!   node i: keepalived -n -l -D -G -P -f keepalived.conf  (VRRPv3, unicast to the other nodes)
//!           dnsmasq --bind-dynamic --no-ping ...           (same pool everywhere, own lease file)
//! ```
//!
//! Every node starts BACKUP with `nopreempt` and a distinct priority, so the
//! VIP does not fail back when a lost master returns (tandem does not fail
//! back either: DESIGN.md section 9). `vrrp_version 3` because VRRP version 2 only
//! counts whole seconds and the fast variant advertises every 100 ms. A
//! backup takes over after 3 × `advert_int` plus a priority skew without
//! adverts from the master.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use lab::{LabProcess, INTERFACE, VIP_CIDR};

use crate::servers::dnsmasq_args;
use crate::Bench;

/// The VRRP router id of the lab's one virtual router.
const VRID: u8 = 10;

/// `advert_int` as keepalived reads it: whole seconds, or a decimal
/// fraction (VRRP version 3 counts centiseconds).
#[must_use]
pub fn advert_int(advert: Duration) -> String {
    let cs = advert.as_millis() / 10;
    if cs.is_multiple_of(100) {
        format!("{}", cs / 100)
    } else {
        format!("{}.{:02}", cs / 100, cs % 100)
            .trim_end_matches('0')
            .to_owned()
    }
}

/// The priority of node `i` (1-based): 200, 190, 180, ...
#[must_use]
pub fn priority(i: usize) -> u8 {
    u8::try_from(210usize.saturating_sub(10 * i).max(1)).unwrap_or(1)
}

/// keepalived.conf of node `me` among `peers` (node index → address).
#[must_use]
pub fn config(me: usize, peers: &[(usize, Ipv4Addr)], advert: Duration) -> String {
    let own = peers
        .iter()
        .find(|(i, _)| *i == me)
        .map(|(_, a)| *a)
        .expect("`me` is one of `peers`");
    let others: String =
        peers
            .iter()
            .filter(|(i, _)| *i != me)
            .fold(String::new(), |mut s, (_, a)| {
                let _ = writeln!(s, "        {a}");
                s
            });
    format!(
        "# tandem-bench failover: keepalived + dnsmasq on node {me}.\n\
         global_defs {{\n\
         \x20   router_id tandem_bench_n{me}\n\
         \x20   vrrp_version 3\n\
         }}\n\
         vrrp_instance lab {{\n\
         \x20   state BACKUP\n\
         \x20   nopreempt\n\
         \x20   interface {INTERFACE}\n\
         \x20   virtual_router_id {VRID}\n\
         \x20   priority {prio}\n\
         \x20   advert_int {adv}\n\
         \x20   unicast_src_ip {own}\n\
         \x20   unicast_peer {{\n\
         {others}\
         \x20   }}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {VIP_CIDR} dev {INTERFACE}\n\
         \x20   }}\n\
         }}\n",
        prio = priority(me),
        adv = advert_int(advert),
    )
}

/// dnsmasq for the HA pair: the bench's dnsmasq (same pool and options as
/// in the DHCP bench) but `--bind-dynamic`, so it follows the VIP as
/// keepalived adds and removes it.
#[must_use]
pub fn ha_dnsmasq_args(lease_file: &Path) -> Vec<String> {
    dnsmasq_args(lease_file)
        .into_iter()
        .map(|a| {
            if a == "--bind-interfaces" {
                "--bind-dynamic".to_owned()
            } else {
                a
            }
        })
        .collect()
}

/// keepalived and dnsmasq of one node.
pub struct HaNode {
    pub keepalived: LabProcess,
    pub dnsmasq: LabProcess,
    /// keepalived's pid file of its VRRP child.
    vrrp_pid_file: std::path::PathBuf,
}

impl HaNode {
    /// Starts both on node `i` of `nodes`, with an empty lease file.
    pub fn start(bench: &Bench, i: usize, nodes: &[usize], advert: Duration) -> Result<HaNode> {
        let dir = bench.lab.node_dir(i);
        let ns = bench.lab.node_ns(i);
        let peers: Vec<(usize, Ipv4Addr)> =
            nodes.iter().map(|&n| (n, bench.lab.node_ip(n))).collect();
        let conf = dir.join("keepalived.conf");
        std::fs::write(&conf, config(i, &peers, advert))
            .with_context(|| format!("writing {}", conf.display()))?;
        let lease_file = dir.join("dnsmasq-ha.leases");
        if lease_file.exists() {
            std::fs::remove_file(&lease_file)
                .with_context(|| format!("removing {}", lease_file.display()))?;
        }
        // keepalived refuses to start while the PID in its pid file exists.
        // A SIGKILLed VRRP child can still exist for a moment (it is reaped
        // by whoever adopts it), and the PID may be reused: the files of the
        // instance we killed only mislead the new one.
        for name in ["keepalived.pid", "keepalived-vrrp.pid"] {
            let f = dir.join(name);
            if f.exists() {
                std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
            }
        }
        let dnsmasq = bench.spawn(
            &ns,
            "dnsmasq",
            &ha_dnsmasq_args(&lease_file),
            &dir.join("dnsmasq-ha.log"),
        )?;
        let p = |name: &str| dir.join(name).display().to_string();
        let args = [
            "-n".to_owned(),
            "-l".into(),
            "-D".into(),
            "-G".into(),
            "-P".into(),
            "-f".into(),
            conf.display().to_string(),
            "-p".into(),
            p("keepalived.pid"),
            "-r".into(),
            p("keepalived-vrrp.pid"),
        ];
        let keepalived = match bench.spawn(&ns, "keepalived", &args, &dir.join("keepalived.log")) {
            Ok(k) => k,
            Err(e) => {
                dnsmasq.kill_and_wait();
                return Err(e);
            }
        };
        Ok(HaNode {
            keepalived,
            dnsmasq,
            vrrp_pid_file: dir.join("keepalived-vrrp.pid"),
        })
    }

    /// Both still run.
    #[must_use]
    pub fn running(&self) -> bool {
        self.keepalived.is_running() && self.dnsmasq.is_running()
    }

    /// SIGKILLs both process groups (keepalived's VRRP child is in its
    /// parent's group) and reaps them. keepalived killed this way leaves
    /// the VIP on the interface, as after any crash of it.
    ///
    /// The VRRP child, orphaned by its parent's death, is adopted by the
    /// nearest subreaper; [`become_subreaper`] makes that this process, so
    /// it is reaped here instead of lingering as a zombie under an init
    /// that may not reap.
    pub fn kill(&self) {
        let vrrp_pid = std::fs::read_to_string(&self.vrrp_pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        self.keepalived.kill_and_wait();
        self.dnsmasq.kill_and_wait();
        if let Some(pid) = vrrp_pid {
            reap_orphan(pid, Duration::from_secs(2));
        }
    }
}

/// Makes this process the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`); see [`HaNode::kill`].
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument
    // and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    anyhow::ensure!(
        rc == 0,
        "prctl(PR_SET_CHILD_SUBREAPER): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Reaps `pid` if it is (or becomes, within `timeout`) an exited child of
/// this process. Returns at once when it is not our child (ECHILD): then
/// someone else reaps it, and we must not wait for a PID that is not ours.
fn reap_orphan(pid: i32, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one specific PID with WNOHANG; `status` is a
        // valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if rc != 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last VRRP state node `i`'s keepalived logged ("MASTER", "BACKUP",
/// "FAULT"), from lines like `(lab) Entering MASTER STATE`.
#[must_use]
pub fn last_state(log_text: &str) -> Option<&str> {
    log_text.lines().rev().find_map(|l| {
        let rest = &l[l.find("Entering ")? + "Entering ".len()..];
        let state = rest
            .strip_suffix(" STATE")
            .or_else(|| rest.split_whitespace().next())?;
        Some(state.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_int_is_seconds_or_a_decimal_fraction() {
        assert_eq!(advert_int(Duration::from_secs(1)), "1");
        assert_eq!(advert_int(Duration::from_millis(100)), "0.1");
        assert_eq!(advert_int(Duration::from_millis(250)), "0.25");
        assert_eq!(advert_int(Duration::from_millis(1500)), "1.5");
    }

    #[test]
    fn config_names_the_other_nodes_and_the_vip() {
        let peers = [
            (1, Ipv4Addr::new(10, 99, 0, 11)),
            (2, Ipv4Addr::new(10, 99, 0, 12)),
            (3, Ipv4Addr::new(10, 99, 0, 13)),
        ];
        let c = config(2, &peers, Duration::from_millis(100));
        assert!(c.contains("unicast_src_ip 10.99.0.12\n"), "{c}");
        assert!(
            c.contains("        10.99.0.11\n") && c.contains("        10.99.0.13\n"),
            "{c}"
        );
        assert!(
            !c.contains("        10.99.0.12\n"),
            "a node is not its own peer: {c}"
        );
        assert!(
            c.contains("priority 190")
                && c.contains("advert_int 0.1")
                && c.contains("vrrp_version 3"),
            "{c}"
        );
        assert!(c.contains("10.99.0.10/16 dev eth1"), "{c}");
        assert!(priority(1) > priority(2) && priority(2) > priority(3));
    }

    #[test]
    fn dnsmasq_binds_dynamically() {
        let a = ha_dnsmasq_args(Path::new("/x/l"));
        assert!(
            a.iter().any(|x| x == "--bind-dynamic") && !a.iter().any(|x| x == "--bind-interfaces")
        );
        assert!(a.iter().any(|x| x == "--no-ping"));
    }

    #[test]
    fn reads_the_last_vrrp_state() {
        let log = "Sun Nov 22 (lab) Entering BACKUP STATE (init)\nfoo\nSun Nov 22 (lab) Entering MASTER STATE\nbar\n";
        assert_eq!(last_state(log), Some("MASTER"));
        assert_eq!(
            last_state("(lab) Entering BACKUP STATE (init)\n"),
            Some("BACKUP")
        );
        assert_eq!(last_state("nothing"), None);
    }
}
