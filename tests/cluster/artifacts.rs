//! The replicated artifact store (issue 7, point 1): `tandem artifact put`
//! on one node, and every node fetches, verifies, serves and collects the
//! bytes by sha256. Real daemons, real TCP, real TFTP (curl), nothing mocked.
//!
//! - a 64 MiB put is held on all three nodes within seconds, with matching
//!   bytes under each node's `artifact_dir`; TFTP serves a put file by name;
//!   `artifact rm` removes the name everywhere and the blobs are collected;
//! - a follower killed mid-fetch (its blob traffic throttled with htb on
//!   its switch port) resumes with Range after a restart (its log names the
//!   offset, and it fetches only the rest), and ends verified;
//! - a corrupted copy is found by the periodic verify pass and fetched again;
//! - the daemon's RSS stays flat during a 1 GiB put.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_tests::cluster::{three_node_cluster, wait_agreed_leader, AGREE_TIMEOUT};
use tandem_tests::lab::sha256_file;
use tandem_tests::metrics::counter;
use tandem_tests::{describe_output, json, lab, phase, tandem_bin, wait_until, Lab};

use super::others;

const BIG: u64 = 64 << 20;
/// How long all nodes may take to hold a 64 MiB artifact (unthrottled).
const HELD_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte count as the metrics render it (exact below 2^53).
fn as_f64(bytes: u64) -> f64 {
    f64::from(u32::try_from(bytes).expect("test sizes fit u32"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}

/// Writes `size` random bytes to `<lab root>/name`; returns the path and sha256.
fn random_file(lab: &Lab, name: &str, size: u64) -> (PathBuf, String) {
    let path = lab.root().join(name);
    let mut out = std::fs::File::create(&path).expect("creating the source file");
    let mut chunk = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut chunk))
        .expect("reading /dev/urandom");
    let mut left = size;
    let mut n: u64 = 0;
    while left > 0 {
        // Every MiB differs (its first bytes count), so no two blocks repeat.
        chunk[..8].copy_from_slice(&n.to_le_bytes());
        let k = usize::try_from(left.min(chunk.len() as u64)).expect("fits");
        out.write_all(&chunk[..k]).expect("writing the source file");
        left -= k as u64;
        n += 1;
    }
    drop(out);
    let sha = sha256_file(&path).expect("sha256 of the source");
    (path, sha)
}

fn put(lab: &Lab, i: usize, file: &Path, name: &str) {
    let out = lab
        .tandem(i, &["artifact", "put", path_str(file), "--name", name])
        .unwrap_or_else(|e| panic!("tandem artifact put on node {i}: {e:#}"));
    assert!(
        out.status.success(),
        "tandem artifact put on node {i} failed: {}",
        describe_output(&out)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

/// `tandem artifact list --json` of node `i`, or `None` if it does not answer.
fn list(lab: &Lab, i: usize) -> Option<Vec<Value>> {
    let out = lab.tandem(i, &["artifact", "list", "--json"]).ok()?;
    json(&out).ok()?.as_array().cloned()
}

/// The holders node `i` lists for `name`, sorted; `None` if it lists no such name.
fn holders(lab: &Lab, i: usize, name: &str) -> Option<Vec<u64>> {
    let l = list(lab, i)?;
    let a = l.iter().find(|a| a["name"] == name)?;
    let mut h: Vec<u64> = a["holders"]
        .as_array()?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    h.sort_unstable();
    Some(h)
}

fn wait_held_everywhere(lab: &Lab, name: &str, nodes: &[u64], timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let ok = wait_until(timeout, || {
        (1..=3).all(|i| holders(lab, i, name).as_deref() == Some(nodes))
    });
    assert!(
        ok,
        "{name} not held by {nodes:?} on all nodes within {timeout:?}: {:?}",
        (1..=3).map(|i| holders(lab, i, name)).collect::<Vec<_>>()
    );
    t0.elapsed()
}

fn node_log(lab: &Lab, i: usize) -> String {
    std::fs::read_to_string(lab.node_log_path(i)).unwrap_or_default()
}

fn blob_path(lab: &Lab, i: usize, sha: &str) -> PathBuf {
    lab.node_data_dir(i).join("blobs").join(sha)
}

#[test]
fn put_replicates_to_every_node_tftp_serves_it_and_rm_collects_it() {
    let lab = three_node_cluster(1);
    let leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    let follower = others(&[leader])[0];
    let (file, sha) = random_file(&lab, "big.img", BIG);

    phase(&format!(
        "tandem artifact put (64 MiB) on node {follower}, a follower: the CLI sends it to the leader"
    ));
    put(&lab, follower, &file, "images/big.img");
    let took = wait_held_everywhere(&lab, "images/big.img", &[1, 2, 3], HELD_TIMEOUT);
    println!(
        "held on all three nodes {:.2} s after the put returned",
        took.as_secs_f64()
    );

    phase("every node serves the same bytes under the name");
    for i in 1..=3 {
        let served = lab.node_artifact_dir(i).join("images/big.img");
        assert_eq!(
            sha256_file(&served).unwrap_or_else(|e| panic!("node {i}: {e:#}")),
            sha,
            "node {i}'s {}",
            served.display()
        );
        if i != leader {
            let fetched = counter(&lab, i, "tandem_artifact_fetch_bytes_total", &[]);
            assert!(fetched >= as_f64(BIG), "node {i} fetched {fetched} bytes");
        }
    }

    phase("TFTP serves a put artifact by name (curl tftp://VIP/boot/hello.bin)");
    let (small, small_sha) = random_file(&lab, "hello.bin", 300 << 10);
    put(&lab, leader, &small, "boot/hello.bin");
    // Nobody serves before a service config is applied (a fresh cluster).
    tandem_tests::apply(&lab, leader, lab::SERVICE_TOML);
    assert_eq!(
        tandem_tests::wait_single_server(&lab, Duration::from_secs(20)),
        leader
    );
    lab.add_client_ip(1, &format!("10.99.3.1/{}", lab::PREFIX_LEN))
        .expect("client address");
    let dest = lab.root().join("hello.tftp");
    let out = lab
        .exec_in(
            &lab.client_ns(1),
            "curl",
            &[
                "-sS",
                "--tftp-blksize",
                "1468",
                "-o",
                path_str(&dest),
                &format!("tftp://{}/boot/hello.bin", lab::VIP),
            ],
            Duration::from_secs(60),
        )
        .expect("running curl");
    assert!(out.status.success(), "curl: {}", describe_output(&out));
    assert_eq!(sha256_file(&dest).expect("sha256"), small_sha);

    phase("tandem artifact rm: the name goes on every node, and the blob is collected");
    let out = lab
        .tandem(follower, &["artifact", "rm", "images/big.img"])
        .expect("tandem artifact rm");
    assert!(out.status.success(), "rm: {}", describe_output(&out));
    let gone = wait_until(Duration::from_secs(15), || {
        (1..=3).all(|i| {
            holders(&lab, i, "images/big.img").is_none()
                && !blob_path(&lab, i, &sha).exists()
                && !lab.node_artifact_dir(i).join("images/big.img").exists()
        })
    });
    assert!(
        gone,
        "after rm: lists {:?}, blobs present {:?}",
        (1..=3)
            .map(|i| holders(&lab, i, "images/big.img"))
            .collect::<Vec<_>>(),
        (1..=3)
            .map(|i| blob_path(&lab, i, &sha).exists())
            .collect::<Vec<_>>()
    );
    // The other artifact is untouched.
    for i in 1..=3 {
        assert_eq!(
            holders(&lab, i, "boot/hello.bin").as_deref(),
            Some(&[1, 2, 3][..])
        );
    }
}

/// Runs `tc ARGS` in the switch namespace.
fn tc(lab: &Lab, args: &[&str]) {
    let out = lab
        .exec_in(&lab.switch_ns(), "tc", args, Duration::from_secs(10))
        .expect("running tc");
    assert!(
        out.status.success(),
        "tc {args:?}: {}",
        describe_output(&out)
    );
}

/// Throttles API traffic (source port 7481: blob bodies) toward `node` to
/// 100 Mbit/s with htb + u32 on its switch port; Raft traffic stays fast.
fn throttle_api_toward(lab: &Lab, node: usize) {
    phase(&format!(
        "throttle API traffic toward node {node} to 100 Mbit/s (htb + u32 on its switch port)"
    ));
    let port = format!("n{node}");
    tc(
        lab,
        &[
            "qdisc", "add", "dev", &port, "root", "handle", "1:", "htb", "default", "10",
        ],
    );
    tc(
        lab,
        &[
            "class", "add", "dev", &port, "parent", "1:", "classid", "1:10", "htb", "rate",
            "10gbit",
        ],
    );
    tc(
        lab,
        &[
            "class", "add", "dev", &port, "parent", "1:", "classid", "1:20", "htb", "rate",
            "100mbit", "ceil", "100mbit",
        ],
    );
    tc(
        lab,
        &[
            "filter", "add", "dev", &port, "parent", "1:", "protocol", "ip", "u32", "match", "ip",
            "sport", "7481", "0xffff", "flowid", "1:20",
        ],
    );
}

/// The `offset=N` of the last "resuming blob fetch" line in `log`.
fn resume_offset(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .rfind(|l| l.contains("resuming blob fetch with Range"))?;
    let rest = &line[line.find("offset=")? + "offset=".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_follower_killed_mid_fetch_resumes_and_a_corrupt_copy_is_fetched_again() {
    let lab = three_node_cluster(0);
    let leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    let o = others(&[leader]);
    let (slow, other) = (o[0], o[1]);

    throttle_api_toward(&lab, slow);

    let (file, sha) = random_file(&lab, "big.img", BIG);
    phase(&format!(
        "put 64 MiB on node {leader}; kill node {slow} mid-fetch"
    ));
    put(&lab, leader, &file, "big.img");
    let partial = lab.node_data_dir(slow).join("blobs/.partial").join(&sha);
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    assert!(
        wait_until(Duration::from_secs(30), || len(&partial) >= 8 << 20),
        "node {slow} never got 8 MiB into its fetch (partial: {} bytes)",
        len(&partial)
    );
    lab.kill_node(slow, libc::SIGKILL).expect("SIGKILL");
    let cut = len(&partial);
    println!("killed node {slow} with {cut} of {BIG} bytes fetched");
    assert!(cut < BIG, "the fetch finished before the kill");

    phase(&format!(
        "restart node {slow}: it resumes with Range and ends verified"
    ));
    lab.start_node(slow, &tandem_bin()).expect("restart");
    wait_held_everywhere(&lab, "big.img", &[1, 2, 3], Duration::from_secs(60));
    let served = lab.node_artifact_dir(slow).join("big.img");
    assert_eq!(sha256_file(&served).expect("sha256"), sha);
    let offset = resume_offset(&node_log(&lab, slow))
        .unwrap_or_else(|| panic!("node {slow} logged no resume:\n{}", node_log(&lab, slow)));
    println!("node {slow} resumed at offset {offset}");
    assert!(
        offset >= cut,
        "resumed at {offset}, but {cut} bytes were on disk"
    );
    // Since the restart it fetched only the rest.
    let fetched = counter(&lab, slow, "tandem_artifact_fetch_bytes_total", &[]);
    assert!(
        (fetched - as_f64(BIG - offset)).abs() < 0.5,
        "fetched {fetched} bytes after the restart, {} were missing",
        BIG - offset
    );

    phase(&format!(
        "node {other}: artifact_verify_secs = 2; corrupt its blob in place"
    ));
    let cfg = format!("artifact_verify_secs = 2\n{}", lab.node_config_toml(other));
    lab.write_node_config_raw(other, &cfg).expect("node config");
    lab.restart_node(other).expect("restart");
    wait_held_everywhere(&lab, "big.img", &[1, 2, 3], Duration::from_secs(30));
    let mark = node_log(&lab, other).len();
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(blob_path(&lab, other, &sha))
            .expect("opening the blob");
        f.seek(SeekFrom::Start(1 << 20)).expect("seek");
        f.write_all(&[0xAA; 4096]).expect("corrupting");
    }
    // Found corrupt, discarded, then fetched and verified again, in that order.
    let refetched = || {
        let log = node_log(&lab, other);
        let since = log.get(mark..).unwrap_or("");
        since
            .find("corrupt blob discarded")
            .is_some_and(|at| since[at..].contains("blob fetched and verified"))
    };
    assert!(
        wait_until(Duration::from_secs(60), refetched),
        "node {other} did not find the corruption and fetch the blob again:\n{}",
        node_log(&lab, other).get(mark..).unwrap_or("")
    );
    wait_held_everywhere(&lab, "big.img", &[1, 2, 3], Duration::from_secs(30));
    assert_eq!(
        sha256_file(&lab.node_artifact_dir(other).join("big.img")).expect("sha256"),
        sha,
        "node {other} serves the fetched-again bytes"
    );
}

/// `VmRSS` of `pid` in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[test]
fn rss_stays_flat_during_a_1_gib_put() {
    const SIZE: u64 = 1 << 30;
    let lab = tandem_tests::start_lab(1, 0);
    assert!(
        wait_until(Duration::from_secs(20), || tandem_tests::is_leader(&lab, 1)),
        "node 1 never led its cluster of one"
    );
    let pid = lab.node_process(1).expect("node 1 runs").pid();
    let (file, sha) = random_file(&lab, "huge.img", SIZE);
    let before = rss(pid);
    phase(&format!(
        "put 1 GiB; daemon RSS before: {} MiB",
        before >> 20
    ));
    let bin = tandem_bin();
    let api = lab.node_api(1);
    let f = path_str(&file).to_owned();
    let config = lab.node_config_path(1);
    let config = path_str(&config).to_owned();
    let (peak, out) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            lab.exec_in(
                &lab.node_ns(1),
                &bin,
                &[
                    "--api", &api, "--config", &config, "artifact", "put", &f, "--name", "huge.img",
                ],
                Duration::from_secs(600),
            )
        });
        let mut peak = before;
        while !h.is_finished() {
            peak = peak.max(rss(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        (peak, h.join().expect("put thread"))
    });
    let out = out.expect("running tandem artifact put");
    assert!(out.status.success(), "put: {}", describe_output(&out));
    let grew = peak.saturating_sub(before);
    println!(
        "RSS before {} MiB, peak {} MiB during the put: grew {} MiB",
        before >> 20,
        peak >> 20,
        grew >> 20
    );
    assert!(
        grew < 64 << 20,
        "RSS grew {} MiB during a 1 GiB put",
        grew >> 20
    );
    assert_eq!(
        sha256_file(&lab.node_artifact_dir(1).join("huge.img")).expect("sha256"),
        sha
    );
    let _ = std::fs::remove_file(&file);
}
