//! Planned handover (DESIGN.md section 2): `tandem cluster handover` moves
//! leadership while a client renews in a loop, and no client attempt fails
//! (the client's own retransmissions allowed: `udhcpc -t 5 -T 1`).

use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_tests::clients::udhcpc_lease;
use tandem_tests::cluster::{
    agreed_leader, describe_statuses, vip_holders, wait_agreed_leader, AGREE_TIMEOUT,
};
use tandem_tests::metrics::counter;
use tandem_tests::{describe_output, phase, wait_until, Lab};

use super::{in_pool, serving_cluster, DHCP_TIMEOUT};

/// Sequential client exchanges in the loop.
const ATTEMPTS: usize = 20;
/// Attempts that complete before the handover starts.
const BEFORE_HANDOVER: usize = 5;

/// One client exchange of the loop: when it ran and what it got.
struct Attempt {
    started: Instant,
    ended: Instant,
    result: Result<std::net::Ipv4Addr, String>,
}

/// DHCP replies of `kind` (`ack`, `nak`) each node has sent, nodes 1..=3.
fn replies(lab: &Lab, kind: &str) -> Vec<f64> {
    (1..=3)
        .map(|i| {
            counter(
                lab,
                i,
                "tandem_dhcp_packets_total",
                &[("type", kind), ("direction", "out")],
            )
        })
        .collect()
}

/// Runs [`ATTEMPTS`] sequential `udhcpc -t 5 -T 1 -r IP` in client 1,
/// counting finished attempts in `done`.
fn client_loop(lab: &Lab, ip: &str, done: &AtomicUsize) -> Vec<Attempt> {
    let mut attempts = Vec::with_capacity(ATTEMPTS);
    for _ in 0..ATTEMPTS {
        let started = Instant::now();
        let result = udhcpc_lease(lab, 1, &["-T", "1", "-r", ip], DHCP_TIMEOUT)
            .map(|l| l.lease.ip)
            .map_err(|e| format!("{e:#}"));
        attempts.push(Attempt {
            started,
            ended: Instant::now(),
            result,
        });
        done.fetch_add(1, Ordering::SeqCst);
    }
    attempts
}

/// The handover command and when the cluster agreed on its outcome.
struct Handover {
    out: Output,
    started: Instant,
    ended: Instant,
    /// The new leader, when all three agreed on it, and how many client
    /// attempts were done then; `None` if leadership never moved.
    moved: Option<(usize, Instant, usize)>,
}

/// Once [`BEFORE_HANDOVER`] client attempts are `done`, runs `tandem
/// cluster handover` on the leader `old` and waits until all three nodes
/// agree on another leader.
fn hand_over(lab: &Lab, old: usize, done: &AtomicUsize) -> Handover {
    let reached = wait_until(Duration::from_secs(60), || {
        done.load(Ordering::SeqCst) >= BEFORE_HANDOVER
    });
    assert!(
        reached,
        "the client loop did not get through {BEFORE_HANDOVER} attempts in 60 s"
    );
    phase(&format!(
        "tandem cluster handover on node {old}, the leader"
    ));
    let started = Instant::now();
    let out = lab
        .tandem(old, &["cluster", "handover"])
        .expect("running tandem cluster handover");
    let ended = Instant::now();
    println!(
        "handover took {:?} (client attempts done then: {}): {}",
        ended - started,
        done.load(Ordering::SeqCst),
        describe_output(&out)
    );
    // The command may return before the cluster settles: the moment all
    // three agree on another leader is what splits the loop in two.
    let mut new = None;
    let settled = wait_until(AGREE_TIMEOUT, || {
        new = agreed_leader(lab, &[1, 2, 3]).filter(|&l| l != old);
        new.is_some()
    });
    let moved = settled.then(|| {
        (
            new.expect("set when settled"),
            Instant::now(),
            done.load(Ordering::SeqCst),
        )
    });
    Handover {
        out,
        started,
        ended,
        moved,
    }
}

#[test]
fn handover_under_client_loop_loses_no_request() {
    let (lab, old) = serving_cluster(1);

    phase("client 1 gets its address");
    let first = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("client 1 lease");
    let ip = first.lease.ip;
    assert!(in_pool(ip), "{ip} is outside the pool");
    let ip_s = ip.to_string();

    phase(&format!("client loop: {ATTEMPTS} sequential `udhcpc -t 5 -T 1 -r {ip}`; handover after {BEFORE_HANDOVER}"));
    let (acks_before, naks_before) = (replies(&lab, "ack"), replies(&lab, "nak"));
    let done = AtomicUsize::new(0);
    let (attempts, handover) = std::thread::scope(|s| {
        let client = s.spawn(|| client_loop(&lab, &ip_s, &done));
        let handover = hand_over(&lab, old, &done);
        (client.join().expect("client loop thread"), handover)
    });
    let Handover {
        out,
        started: h_start,
        ended: h_end,
        moved,
    } = handover;
    assert!(
        out.status.success(),
        "tandem cluster handover failed: {}",
        describe_output(&out)
    );
    let Some((new, moved_at, done_when_moved)) = moved else {
        panic!(
            "leadership did not move within {AGREE_TIMEOUT:?} of the handover:\n{}",
            describe_statuses(&lab, &[1, 2, 3])
        );
    };
    println!("all nodes agreed on node {new} {:?} after the handover command returned ({done_when_moved} attempts done)", moved_at - h_end);

    phase("every client attempt got its address");
    let slowest = attempts
        .iter()
        .map(|a| a.ended - a.started)
        .max()
        .expect("ATTEMPTS > 0");
    println!("slowest client attempt: {slowest:?} (a retransmission costs 1 s)");
    let failures: Vec<String> = attempts
        .iter()
        .enumerate()
        .filter_map(|(n, a)| match &a.result {
            Ok(got) if *got == ip => None,
            Ok(got) => Some(format!("attempt {n}: got {got}, not {ip}")),
            Err(e) => Some(format!("attempt {n} ({:?} long): {e}", a.ended - a.started)),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {ATTEMPTS} client attempts failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The loop must really have straddled the handover, or it proved nothing.
    let before = attempts.iter().filter(|a| a.ended <= h_start).count();
    let after = attempts.iter().filter(|a| a.started >= moved_at).count();
    println!(
        "attempts wholly before the handover: {before}, started after the move: {after}, in between: {}",
        ATTEMPTS - before - after
    );
    assert!(
        before >= BEFORE_HANDOVER && after >= 1,
        "the client loop did not straddle the handover ({before} before, {after} after the move)"
    );

    phase("the new leader alone holds the VIP and answered the later attempts; nobody NAKed");
    assert_eq!(
        wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT),
        new,
        "leadership moved again"
    );
    assert_eq!(
        vip_holders(&lab),
        [new],
        "the VIP must sit on the new leader only"
    );
    let (acks, naks) = (replies(&lab, "ack"), replies(&lab, "nak"));
    let new_acks = acks[new - 1] - acks_before[new - 1];
    assert!(
        new_acks >= f64::from(u32::try_from(after).expect("at most ATTEMPTS")),
        "node {new} sent {new_acks} ACKs, but {after} attempts started after it led (ACKs before {acks_before:?}, after {acks:?})"
    );
    assert_eq!(
        naks, naks_before,
        "a node NAKed a client asking for its own address during the handover"
    );
}
