//! PXE boots that survive a failover (issue 7, point 5): a QEMU VM (TCG,
//! QEMU's iPXE NIC ROM) in the three-node lab chains the script rendered
//! for its reservation and loads the Debian cloud kernel and a busybox
//! initramfs, once over HTTP and once over TFTP. Each test boots the VM once
//! clean, then again with the leader `SIGKILLed` while the VM fetches the
//! kernel, and checks both print the marker, timing each from QEMU's start.
//!
//! The VM's link is throttled to [`VM_LINK_RATE`], so the kernel takes
//! about 2 s by either protocol and the kill lands in the middle of it.
//!
//! What each client does when the leader dies, seen with tcpdump on the
//! VM's tap (times from the SIGKILL, measured on an unthrottled link; the
//! throttle only lets the dead node's queued bytes trickle in a little
//! longer), and what makes it retry at once instead of after its own timer:
//!
//! - **The script** retries a failed `kernel` or `initrd` fetch, the first
//!   time at once and then once a second, a bounded number of times
//!   (`daemon/src/services/http/script.rs`). Before, one failed fetch ended
//!   the script and the firmware went on to its next boot device.
//! - **HTTP.** iPXE reads the kernel on one keep-alive connection and sends
//!   only ACKs. The dead node's kernel still owns the socket: it sends what
//!   was queued, then FIN (+0 ms), and iPXE fails the fetch on the short
//!   read ("Input/output error", +35 ms). Its immediate retry still goes to
//!   the dead node's MAC (iPXE's ARP entries never age), whose kernel still
//!   has the VIP on `lo` and refuses it with RST ("Connection reset",
//!   +38 ms). The new leader's gratuitous ARP follows (+115 ms), so the
//!   retry after the one-second pause reaches it (+1.04 s) and the kernel
//!   comes from the new leader. Nothing had to change on the server side;
//!   the pause is why the script does not loop without one.
//! - **TFTP.** iPXE resends its last ACK on its retransmission timer (here
//!   +0.19 s, then 0.7, 1.7, 3.8, 7.8 s), to the transfer's port on the VIP.
//!   By then the new leader holds the VIP (gratuitous ARP at +0.10 s), and
//!   the ACK finds no socket there. The daemon's ERROR 5 answerer
//!   (`daemon/src/services/tftp/unknown_tid.rs`) was never started on a
//!   leader: the transition binds VIP:69 itself and served it without the
//!   answerer, so only the kernel's ICMP port unreachable went back, which
//!   iPXE ignores, and the boot waited out iPXE's TFTP timeout (+16.9 s
//!   measured, as issue 7 reported). With the answerer started
//!   (`tftp::serve_bound`), the first resent ACK gets ERROR 5 from that very
//!   port (+0.19 s), iPXE fails the fetch ("Operation not supported"), and
//!   the script's immediate retry sends a new RRQ to the new leader
//!   (+0.21 s).
//!
//! The profile's kernel and initrd are `tftp://VIP/NAME` URLs for the TFTP
//! boot (the rendered script leaves URLs alone); the test puts the files as
//! artifacts itself and waits until all three nodes hold them, since `apply`
//! checks artifact names only.
//!
//! The target of the issue is a killed boot within 2 s of a clean one; the
//! tests print both times and the difference, and assert a loose bound
//! ([`MAX_EXTRA`]) that still catches a client waiting out its timer.

use std::time::Duration;

use serde_json::Value;
use tandem_tests::cluster::{three_node_cluster, wait_agreed_leader, wait_one_serving_among};
use tandem_tests::metrics::counter;
use tandem_tests::qemu::{
    boot_service_toml, build_initramfs, cloud_kernel, put_artifacts, vm_tap, Firmware, Vm,
};
use tandem_tests::{apply, json, lab, phase, wait_until, Lab, LabProcess};

use super::{others, AGREE_TIMEOUT, FAILOVER_TIMEOUT};

/// The VM's NIC: its reservation names the profile with the kernel.
const VM_MAC: &str = "52:54:00:99:00:02";
const VM_IP: &str = "10.99.4.2";
/// How much longer than the clean boot the killed one may take. The issue's
/// target is 2 s; this bound is loose for a loaded 2-core machine, and
/// still far below a client waiting out its TFTP timer (~17 s).
const MAX_EXTRA: Duration = Duration::from_secs(5);
/// How long all three nodes may take to hold the boot files.
const REPLICATE_TIMEOUT: Duration = Duration::from_secs(30);
/// The VM's link, as fast as a 50 Mbit/s LAN: the kernel (~14 MB) takes
/// ~2.3 s over HTTP, like over TFTP (lock-step, ~2 s here), so the kill
/// lands mid-kernel on both; unthrottled, HTTP moves it in ~0.5 s.
const VM_LINK_RATE: &str = "50mbit";

/// The two boots of each test are timed against each other: the tests of
/// this module take turns, so the other's VM does not skew them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Http,
    Tftp,
}

impl Transport {
    /// How the profile names a boot file.
    fn file(self, name: &str) -> String {
        match self {
            Transport::Http => name.to_owned(),
            Transport::Tftp => format!("tftp://{}/{name}", lab::VIP),
        }
    }
}

/// How long after the kernel's first byte the leader dies.
const KILL_AFTER: Duration = Duration::from_millis(500);

fn service_toml(t: Transport) -> String {
    boot_service_toml(VM_MAC, VM_IP, &t.file("vmlinuz"), &t.file("initrd.img"))
}

/// Whether every one of `nodes` is listed as a holder of each of `names`.
fn all_hold(lab: &Lab, via: usize, names: &[&str], nodes: usize) -> bool {
    let Some(list) = lab
        .tandem(via, &["artifact", "list", "--json"])
        .ok()
        .and_then(|o| json(&o).ok())
    else {
        return false;
    };
    names.iter().all(|n| {
        list.as_array().into_iter().flatten().any(|a| {
            a["name"].as_str() == Some(n) && a["holders"].as_array().map_or(0, Vec::len) >= nodes
        })
    })
}

/// The leader's count of what shows the kernel is on its way: HTTP 200s
/// (the script, then the kernel) or TFTP payload bytes.
fn progress(lab: &Lab, i: usize, t: Transport) -> f64 {
    match t {
        Transport::Http => counter(lab, i, "tandem_http_requests_total", &[("code", "200")]),
        Transport::Tftp => counter(lab, i, "tandem_tftp_bytes_total", &[]),
    }
}

/// A three-node cluster serving `t`'s profile, every node holding the
/// kernel and initramfs, and the VM's tap (throttled, with the RA
/// answerer). Returns the lab, the leader and the RA answerer.
fn boot_lab(t: Transport) -> (Lab, usize, LabProcess) {
    let lab = three_node_cluster(0);
    let leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);

    phase(&format!(
        "kernel and busybox initramfs as artifacts (through node {leader}); all three hold them"
    ));
    let kernel = cloud_kernel();
    let initrd = build_initramfs(lab.root());
    put_artifacts(
        &lab,
        leader,
        &[("vmlinuz", &kernel), ("initrd.img", &initrd)],
    );
    assert!(
        wait_until(REPLICATE_TIMEOUT, || all_hold(
            &lab,
            leader,
            &["vmlinuz", "initrd.img"],
            3
        )),
        "not every node holds the boot files after {REPLICATE_TIMEOUT:?}"
    );
    apply(&lab, leader, &service_toml(t));
    let (serving, _) = wait_one_serving_among(&lab, &[1, 2, 3], FAILOVER_TIMEOUT);
    assert_eq!(serving, leader, "the leader does not serve after apply");
    let ra = vm_tap(&lab, "vm0");
    lab.exec_ok(
        &lab.switch_ns(),
        "tc",
        &[
            "qdisc",
            "add",
            "dev",
            "vm0",
            "root",
            "tbf",
            "rate",
            VM_LINK_RATE,
            "burst",
            "64kb",
            "latency",
            "400ms",
        ],
        Duration::from_secs(5),
    )
    .expect("tc tbf on the VM's tap");

    (lab, leader, ra)
}

fn boot_through_failover(t: Transport) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (lab, _, _ra) = boot_lab(t);

    phase(&format!("clean boot over {t:?}"));
    let vm = Vm::start(&lab, "clean", "vm0", VM_MAC, Firmware::BiosIpxeRom);
    let clean = vm.wait_marker();
    println!("=== clean boot over {t:?}: {:.2} s", clean.as_secs_f64());

    phase(&format!(
        "boot again over {t:?}; SIGKILL the leader {KILL_AFTER:?} into the kernel"
    ));
    // A loaded machine may have moved the leader since: kill the one serving.
    let (leader, _) = wait_one_serving_among(&lab, &[1, 2, 3], FAILOVER_TIMEOUT);
    // HTTP: the script is one 200 and the kernel the next; TFTP: the kernel
    // is the first file over TFTP (the script comes over HTTP).
    let base = progress(&lab, leader, t);
    let started_before = match t {
        Transport::Http => base + 1.0,
        Transport::Tftp => base,
    };
    let vm = Vm::start(&lab, "killed", "vm0", VM_MAC, Firmware::BiosIpxeRom);
    assert!(
        wait_until(Duration::from_secs(30), || progress(&lab, leader, t)
            > started_before),
        "the VM never started fetching the kernel from node {leader}:\n{}",
        vm.serial_text()
    );
    let kernel_at = vm.started.elapsed();
    std::thread::sleep(KILL_AFTER);
    lab.kill_node(leader, libc::SIGKILL)
        .expect("killing the leader");
    let killed_at = vm.started.elapsed();
    let survivors = others(&[leader]);
    let (new, took) = wait_one_serving_among(&lab, &survivors, FAILOVER_TIMEOUT);
    println!(
        "=== kernel fetch seen at {:.2} s, leader killed at {:.2} s (VM time); node {new} serves {:.2} s after the kill",
        kernel_at.as_secs_f64(),
        killed_at.as_secs_f64(),
        took.as_secs_f64()
    );
    let killed = vm.wait_marker();
    let log = vm.serial_text();
    let extra = killed.as_secs_f64() - clean.as_secs_f64();
    println!(
        "=== boot over {t:?} with the leader killed: {:.2} s (clean {:.2} s, {extra:+.2} s; target +2 s)",
        killed.as_secs_f64(),
        clean.as_secs_f64()
    );
    println!("=== serial console of the killed boot:\n{log}");

    assert_refetched(&lab, new, t, &log);
    assert!(
        killed <= clean + MAX_EXTRA,
        "the boot with the leader killed took {killed:?}, more than {MAX_EXTRA:?} over the clean {clean:?}"
    );
    let status: Value = tandem_tests::status(&lab, new).expect("the new leader's status");
    assert_eq!(status["serving"], Value::Bool(true), "{status}");
}

#[test]
fn http_boot_survives_leader_killed_mid_kernel() {
    boot_through_failover(Transport::Http);
}

#[test]
fn tftp_boot_survives_leader_killed_mid_kernel() {
    boot_through_failover(Transport::Tftp);
}

/// The killed boot fetched the kernel twice, and the new leader `new` served
/// the kernel and the initrd (TFTP: after its ERROR 5 ended the lost transfer).
fn assert_refetched(lab: &Lab, new: usize, t: Transport, log: &str) {
    phase("the kernel was cut and fetched again from the new leader");
    let kernel_url = match t {
        Transport::Http => format!("http://{}/vmlinuz", lab::VIP),
        Transport::Tftp => t.file("vmlinuz"),
    };
    assert!(
        log.matches(&kernel_url).count() >= 2,
        "iPXE fetched {kernel_url} only once: the kill did not cut it:\n{log}"
    );
    match t {
        Transport::Http => {
            // The kernel again, and the initrd.
            let ok = counter(lab, new, "tandem_http_requests_total", &[("code", "200")]);
            assert!(
                ok >= 2.0,
                "node {new} answered {ok} 200s, not the kernel and the initrd"
            );
        }
        Transport::Tftp => {
            let ok = counter(lab, new, "tandem_tftp_transfers_total", &[("result", "ok")]);
            let errors = counter(
                lab,
                new,
                "tandem_tftp_transfers_total",
                &[("result", "unknown_tid")],
            );
            println!("=== node {new}: {ok} TFTP transfers, {errors} ERROR 5 for the lost one");
            assert!(
                ok >= 2.0,
                "node {new} sent {ok} files by TFTP, not the kernel and the initrd"
            );
            assert!(
                errors >= 1.0,
                "node {new} never answered the lost transfer's ACK with ERROR 5"
            );
        }
    }
}
