//! Clients survive an unplanned failover (issue 3, acceptance): the leader
//! dies (SIGKILL) while real clients talk to the VIP.
//!
//! - A TFTP download cut by the failover ends in a client timeout; the
//!   client retries against the VIP, now held by the new leader, and gets
//!   the whole file, byte for byte.
//! - Relayed DHCP (perfdhcp as a relay, unicast to the VIP) keeps being
//!   answered after the VIP moves: perfdhcp completes far more exchanges
//!   than the old leader could have answered, and the new leader's lease
//!   table holds leases it granted after the kill.
//!
//! Every claim is about behaviour (who served, what the client got), not
//! about how fast the failover was; the times are printed for the log only.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tandem_tests::cluster::{
    describe_statuses, lease_u64, leases, three_node_cluster, vip_count, wait_agreed_leader,
    wait_one_serving_among, AGREE_TIMEOUT,
};
use tandem_tests::lab::sha256_file;
use tandem_tests::metrics::{counter, scrape, sum, wait_counter_above};
use tandem_tests::{apply, describe_output, lab, phase, wait_until, Lab, LabProcess};

use super::{others, serving_cluster, unix_now, FAILOVER_TIMEOUT, RELAY, RELAY_SERVICE};
use tandem_tests::wire::start_perfdhcp;

/// The client's static address: TFTP needs one, and perfdhcp relays from it
/// (giaddr). In the served subnet 10.99.0.0/16, outside every pool.
const CLIENT_ADDR: Ipv4Addr = RELAY;

fn client_cidr() -> String {
    format!("{CLIENT_ADDR}/{}", lab::PREFIX_LEN)
}

/// Among the live `survivors`, only `new` holds the VIP. (The killed
/// node's namespace keeps the address it had: nothing removed it.)
fn assert_vip_on(lab: &Lab, new: usize, survivors: &[usize]) {
    for &i in survivors {
        let want = usize::from(i == new);
        assert_eq!(
            vip_count(lab, i),
            want,
            "node {i} holds the VIP {} times; node {new} leads:\n{}",
            vip_count(lab, i),
            describe_statuses(lab, survivors)
        );
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}

// ----- TFTP -----

/// The boot file: 24 MiB of random bytes, 49,152 lock-step 512-byte blocks,
/// so a download lasts seconds and the kill lands in the middle of it.
const FILE_SIZE: u64 = 24 << 20;
const FILE_NAME: &str = "big.img";
/// The leader is killed once the client has written this much of the file.
const KILL_AT_BYTES: u64 = 2 << 20;
/// How long the first download may take to reach [`KILL_AT_BYTES`].
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// curl gives up on a transfer slower than 1 byte/s for this long
/// (`--speed-limit 1 --speed-time N`): the client's timeout, as a PXE
/// ROM's TFTP timeout. curl averages its speed over the last few seconds,
/// so a cut transfer ends some 5-9 s after the last block.
const STALL_SECS: u32 = 3;
/// How long the cut download may take to give up (its stall timeout plus
/// room for a loaded machine).
const GIVE_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// Downloads after the cut one, as a PXE loader's retries, one second apart.
const RETRIES: usize = 5;
/// One whole download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// curl's exit code for "operation timed out" (`CURLE_OPERATION_TIMEDOUT`).
const CURL_TIMED_OUT: i32 = 28;

/// curl's arguments for one download of [`FILE_NAME`] from the VIP into `dest`.
fn curl_args(dest: &Path) -> Vec<String> {
    vec![
        "-sS".into(),
        "--speed-limit".into(),
        "1".into(),
        "--speed-time".into(),
        STALL_SECS.to_string(),
        "-o".into(),
        path_str(dest).into(),
        format!("tftp://{}/{FILE_NAME}", lab::VIP),
    ]
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// A gauge (or any series) of node `i`, 0 if absent.
fn gauge(lab: &Lab, i: usize, name: &str) -> f64 {
    let text = scrape(lab, i).unwrap_or_else(|e| panic!("node {i} metrics: {e:#}"));
    sum(&text, name, &[]).unwrap_or(0.0)
}

fn tftp_ok(lab: &Lab, i: usize) -> f64 {
    counter(lab, i, "tandem_tftp_transfers_total", &[("result", "ok")])
}

/// Writes [`FILE_NAME`], [`FILE_SIZE`] random bytes, into every node's
/// artifact dir; returns its sha256.
fn put_boot_file(lab: &Lab) -> String {
    phase(&format!(
        "put {FILE_NAME} ({} MiB of random bytes) into every node's artifact dir",
        FILE_SIZE >> 20
    ));
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom")
        .and_then(|f| f.take(FILE_SIZE).read_to_end(&mut bytes))
        .expect("reading /dev/urandom");
    for i in 1..=3 {
        let path = lab.node_artifact_dir(i).join(FILE_NAME);
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    drop(bytes);
    sha256_file(&lab.node_artifact_dir(1).join(FILE_NAME)).expect("sha256 of the file")
}

/// Starts curl's download of [`FILE_NAME`] in client 1, in the background,
/// and returns once it has [`KILL_AT_BYTES`] and still runs, served by
/// node `old` (its `tandem_tftp_active` gauge says so). Returns the curl
/// process, its destination and its log.
fn start_download_until_mid(lab: &Lab, old: usize) -> (LabProcess, PathBuf, PathBuf) {
    phase(&format!(
        "client 1 starts downloading tftp://{}/{FILE_NAME} (curl, 512-byte lock-step blocks)",
        lab::VIP
    ));
    let first_dest = lab.root().join("first.img");
    let first_log = lab.root().join("first.curl.log");
    let first = lab
        .spawn_in(
            &lab.client_ns(1),
            "curl",
            &curl_args(&first_dest),
            &first_log,
        )
        .expect("starting curl");
    let started = Instant::now();
    assert!(
        wait_until(START_TIMEOUT, || file_len(&first_dest) >= KILL_AT_BYTES
            || !first.is_running()),
        "the download wrote {} bytes in {START_TIMEOUT:?}: {}",
        file_len(&first_dest),
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );
    let active = gauge(lab, old, "tandem_tftp_active");
    let got = file_len(&first_dest);
    assert!(
        first.is_running() && got < FILE_SIZE,
        "the download ended before the kill ({got} of {FILE_SIZE} bytes after {:?}, status {:?}); \
         the file is too small to be cut: {}",
        started.elapsed(),
        first.try_status(),
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );
    assert!(
        active >= 1.0,
        "the leader, node {old}, reports {active} TFTP transfers in progress while client 1 downloads"
    );
    println!(
        "client 1 has {got} of {FILE_SIZE} bytes after {:?}, served by node {old}",
        started.elapsed()
    );
    (first, first_dest, first_log)
}

/// Downloads [`FILE_NAME`] in client 1 up to [`RETRIES`] times, one second
/// apart, until one completes; returns where it went. Panics with every
/// attempt's output if none does.
fn retry_until_complete(lab: &Lab, killed_at: Instant, survivors: &[usize]) -> PathBuf {
    let mut attempts = Vec::new();
    let mut done = None;
    for attempt in 1..=RETRIES {
        let dest = lab.root().join(format!("retry{attempt}.img"));
        let out = lab
            .exec_in(
                &lab.client_ns(1),
                "curl",
                &curl_args(&dest),
                DOWNLOAD_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("retry {attempt}: {e:#}"));
        let summary = format!(
            "retry {attempt} ({:?} after the kill): {} bytes, {}",
            killed_at.elapsed(),
            file_len(&dest),
            describe_output(&out)
        );
        println!("{summary}");
        attempts.push(summary);
        if out.status.success() {
            done = Some(dest);
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let Some(dest) = done else {
        panic!(
            "no retry completed:\n{}\n{}",
            attempts.join("\n"),
            describe_statuses(lab, survivors)
        );
    };
    dest
}

#[test]
fn tftp_download_cut_by_failover_times_out_then_retry_succeeds() {
    let (lab, old) = serving_cluster(1);
    lab.add_client_ip(1, &client_cidr())
        .expect("giving client 1 its address");

    let want = put_boot_file(&lab);
    let survivors = others(&[old]);
    let ok_before: Vec<f64> = survivors.iter().map(|&i| tftp_ok(&lab, i)).collect();

    let (first, first_dest, first_log) = start_download_until_mid(&lab, old);

    phase(&format!("SIGKILL the leader, node {old}, mid-transfer"));
    lab.kill_node(old, libc::SIGKILL)
        .expect("killing the leader");
    let killed_at = Instant::now();
    let cut_at = file_len(&first_dest);

    phase("the cut download ends in a client timeout, with part of the file");
    let status = first
        .wait_timeout(GIVE_UP_TIMEOUT)
        .unwrap_or_else(|| panic!("curl still runs {GIVE_UP_TIMEOUT:?} after the kill"));
    let log = std::fs::read_to_string(&first_log).unwrap_or_default();
    println!(
        "the first download exited ({status}) {:?} after the kill, with {} of {FILE_SIZE} bytes \
         ({cut_at} at the kill): {}",
        killed_at.elapsed(),
        file_len(&first_dest),
        log.trim()
    );
    assert_eq!(
        status.code(),
        Some(CURL_TIMED_OUT),
        "the cut download did not end in a timeout: {log}"
    );
    assert!(
        file_len(&first_dest) < FILE_SIZE,
        "the cut download has the whole size"
    );

    phase("client 1 retries, as a PXE loader does, until a download completes");
    let dest = retry_until_complete(&lab, killed_at, &survivors);
    assert_eq!(
        sha256_file(&dest).expect("sha256 of the download"),
        want,
        "the retried download differs from the file ({} of {FILE_SIZE} bytes)",
        file_len(&dest)
    );

    phase("the new leader served it: it holds the VIP and counted one complete transfer");
    let (new, _) = wait_one_serving_among(&lab, &survivors, FAILOVER_TIMEOUT);
    assert_vip_on(&lab, new, &survivors);
    let ok = wait_counter_above(
        &lab,
        new,
        "tandem_tftp_transfers_total",
        &[("result", "ok")],
        ok_before[survivors
            .iter()
            .position(|&i| i == new)
            .expect("a survivor")],
        Duration::from_secs(5),
    );
    println!("node {new} counts {ok} complete TFTP transfers");
    for (k, &i) in survivors.iter().enumerate() {
        let now = tftp_ok(&lab, i);
        let want_more = if i == new { 1.0 } else { 0.0 };
        assert!(
            (now - ok_before[k] - want_more).abs() < 0.5,
            "node {i}'s complete TFTP transfers went {} -> {now} (node {new} leads)",
            ok_before[k]
        );
    }
}

// ----- relayed DHCP -----

/// perfdhcp's rate (four-way exchanges per second), how many client MACs
/// it picks from, and how long it runs (`-p`, whole seconds).
const PERF_RATE: u32 = 50;
const PERF_CLIENTS: u32 = 1000;
const PERF_SECS: u64 = 12;
/// How long into the run the leader dies.
const KILL_AFTER: Duration = Duration::from_secs(4);
/// How long perfdhcp may take to exit after its period (it waits out its
/// drop time, then prints its report).
const PERF_EXIT_SLACK: Duration = Duration::from_secs(20);
/// Exchanges that must complete beyond what the old leader could have
/// answered before it died: 2 s of load at [`PERF_RATE`], out of the ~8 s
/// that follow the kill.
const MIN_AFTER_KILL: u64 = 2 * PERF_RATE as u64;

/// perfdhcp's final report, the parts these tests read.
#[derive(Debug, Default)]
struct PerfReport {
    discovers_sent: u64,
    offers_received: u64,
    acks_received: u64,
    acks_rejected: u64,
}

impl PerfReport {
    /// Exchanges that ended in a usable ACK.
    fn completed(&self) -> u64 {
        self.acks_received.saturating_sub(self.acks_rejected)
    }
}

/// Reads the `***Statistics for: DISCOVER-OFFER***` and `REQUEST-ACK`
/// blocks of perfdhcp's report (benches/src/perfdhcp.rs parses the same
/// text). No DISCOVER-OFFER block means perfdhcp ran no test.
fn parse_perfdhcp(text: &str) -> Result<PerfReport> {
    let mut r = PerfReport::default();
    let mut block = "";
    let mut saw_discover = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("***Statistics for: DISCOVER-OFFER") {
            block = "do";
            saw_discover = true;
        } else if line.starts_with("***Statistics for: REQUEST-ACK") {
            block = "ra";
        } else if line.starts_with("***") {
            block = "";
        } else if let Some((key, value)) = line.split_once(':') {
            let field = match (block, key) {
                ("do", "sent packets") => &mut r.discovers_sent,
                ("do", "received packets") => &mut r.offers_received,
                ("ra", "received packets") => &mut r.acks_received,
                ("ra", "rejected leases") => &mut r.acks_rejected,
                _ => continue,
            };
            *field = value
                .trim()
                .parse()
                .with_context(|| format!("{key}: {value:?}"))?;
        }
    }
    if !saw_discover {
        bail!("perfdhcp printed no DISCOVER-OFFER statistics");
    }
    Ok(r)
}

/// Starts perfdhcp in client 1 as a relay from [`CLIENT_ADDR`] for
/// [`PERF_SECS`] seconds. Returns it and its log.
fn start_relay_perfdhcp(lab: &Lab) -> (LabProcess, PathBuf) {
    phase(&format!(
        "perfdhcp in client 1 relays from {CLIENT_ADDR} to {}: {PERF_RATE}/s for {PERF_SECS} s",
        lab::VIP
    ));
    let log = lab.root().join("perfdhcp.log");
    let perf = start_perfdhcp(
        lab,
        1,
        CLIENT_ADDR,
        PERF_RATE,
        PERF_CLIENTS,
        Some(PERF_SECS),
        &log,
    )
    .expect("starting perfdhcp");
    (perf, log)
}

/// Node `new`'s own lease table has grown past `before` (the old leader's
/// count at the kill) and holds leases granted after `kill_second`.
fn check_leases_after_kill(lab: &Lab, new: usize, before: usize, kill_second: u64) {
    phase("the new leader's lease table holds leases granted after the kill");
    let table = leases(lab, new);
    let after: Vec<_> = table
        .iter()
        .filter(|(_, l)| lease_u64(l, "granted_at") > kill_second)
        .collect();
    println!(
        "node {new}: {} leases ({before} at the kill), {} granted after \
         second {kill_second}",
        table.len(),
        after.len()
    );
    assert!(
        table.len() > before,
        "node {new}'s lease table did not grow after the kill: {} leases, {before} before",
        table.len()
    );
    assert!(
        after.len() as u64 >= MIN_AFTER_KILL / 2,
        "node {new}'s table holds only {} leases granted after the kill (second {kill_second})",
        after.len()
    );
}

#[test]
fn relayed_dhcp_keeps_flowing_after_the_vip_moves() {
    let lab = three_node_cluster(1);
    let old = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    phase(&format!(
        "apply a service config with a 4,096-address pool (through node {old}, the leader)"
    ));
    apply(&lab, old, RELAY_SERVICE);
    lab.add_client_ip(1, &client_cidr())
        .expect("giving client 1 the relay address");

    let (perf, log) = start_relay_perfdhcp(&lab);
    let started = Instant::now();
    let acks = ("type", "ack");
    let out = ("direction", "out");
    let first_acks = wait_counter_above(
        &lab,
        old,
        "tandem_dhcp_packets_total",
        &[acks, out],
        0.0,
        KILL_AFTER,
    );
    println!(
        "node {old} answers relayed requests ({first_acks} ACKs after {:?})",
        started.elapsed()
    );
    std::thread::sleep(KILL_AFTER.saturating_sub(started.elapsed()));
    // A counter of packets: a whole number, far below 2^52.
    #[allow(clippy::cast_sign_loss, reason = "a counter is never negative")]
    let acks_before_kill = counter(&lab, old, "tandem_dhcp_packets_total", &[acks, out]) as u64;
    let leases_before_kill = leases(&lab, old).len();
    assert!(
        perf.is_running(),
        "perfdhcp exited before the kill: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    phase(&format!(
        "SIGKILL the leader, node {old}, {:?} into the run ({acks_before_kill} ACKs sent, \
         {leases_before_kill} leases)",
        started.elapsed()
    ));
    // Whole seconds: a lease granted at or after this second may be the
    // old leader's last; one granted later can only be the new leader's.
    let kill_second = unix_now();
    lab.kill_node(old, libc::SIGKILL)
        .expect("killing the leader");
    let run_at_kill = started.elapsed();
    let survivors = others(&[old]);
    let (new, took) = wait_one_serving_among(&lab, &survivors, FAILOVER_TIMEOUT);
    println!("node {new} serves {took:?} after the kill");

    phase("perfdhcp runs to the end of its period against the VIP");
    let status = perf
        .wait_timeout(Duration::from_secs(PERF_SECS) + PERF_EXIT_SLACK)
        .unwrap_or_else(|| panic!("perfdhcp did not exit after its {PERF_SECS} s period"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let report = parse_perfdhcp(&text)
        .unwrap_or_else(|e| panic!("perfdhcp ({status}): {e:#}; its output:\n{text}"));
    println!("perfdhcp ({status}): {report:?}");

    phase("exchanges completed after the failover");
    // Before it died, the old leader could at most answer every exchange
    // started by then (perfdhcp starts PERF_RATE a second), plus one
    // second of slack; and it had sent `acks_before_kill` ACKs.
    let by_old_at_most = (u64::from(PERF_RATE) * (run_at_kill.as_secs() + 1)).max(acks_before_kill);
    assert!(
        report.completed() >= by_old_at_most + MIN_AFTER_KILL,
        "perfdhcp completed {} exchanges; the old leader could have answered up to {by_old_at_most} \
         before its death ({:?} into the run), so fewer than {MIN_AFTER_KILL} completed after it: {report:?}",
        report.completed(),
        run_at_kill
    );
    let new_acks = counter(&lab, new, "tandem_dhcp_packets_total", &[acks, out]);
    println!("node {new} sent {new_acks} ACKs after the failover");
    #[allow(clippy::cast_precision_loss, reason = "a small constant")]
    let min_after = MIN_AFTER_KILL as f64;
    assert!(
        new_acks >= min_after,
        "the new leader, node {new}, sent only {new_acks} ACKs"
    );

    check_leases_after_kill(&lab, new, leases_before_kill, kill_second);
    assert_vip_on(&lab, new, &survivors);
}

#[cfg(test)]
mod parse_tests {
    use super::parse_perfdhcp;

    #[test]
    fn perfdhcp_report_halves() {
        let text = "Rate: 45.2 4-way exchanges/second, expected rate: 50\n\
                    ***Statistics for: DISCOVER-OFFER***\nsent packets: 600\nreceived packets: 560\n\
                    drops: 40\nrejected leases: 0\n\n\
                    ***Statistics for: REQUEST-ACK***\nsent packets: 560\nreceived packets: 550\n\
                    drops: 10\nrejected leases: 2\nmin delay: 0.1 ms\n";
        let r = parse_perfdhcp(text).unwrap();
        assert_eq!((r.discovers_sent, r.offers_received), (600, 560));
        assert_eq!(r.completed(), 548);
        assert!(parse_perfdhcp("perfdhcp: bind failed\n").is_err());
    }
}
