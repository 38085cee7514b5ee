//! `tandem-bench tftp`: N clients (default 50) fetch one file (default
//! 32 MiB) at the same time, from tandem and then from tftpd-hpa, both on
//! 10.99.0.10:69, in one lab. The clients are `curl tftp://` processes in
//! the client namespace with the same options for both servers (`blksize`
//! 1468, no `windowsize`: curl does not ask for it, so both servers run
//! RFC 1350 lock-step with big blocks).
//!
//! The time is the wall clock from starting the first client to the exit of
//! the last. Downloads land on tmpfs (`/dev/shm`) so that the clients' disk
//! writes do not weigh on either server, and every download's sha256 is
//! checked against the served file after the clock stops.
//!
//! Before each timed round, one client fetches the file alone: it proves
//! the server serves and warms the page cache for both servers alike.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lab::{sha256_file, LabProcess, VIP};

use crate::servers::start_tftpd_hpa;
use crate::{interrupt, json_num, require_tools, tail, warn_host_services, Bench};

/// The served file's name.
const FILE: &str = "bench.bin";
/// tandem serves from node 1's artifact dir; tftpd-hpa runs in node 2.
const TANDEM_NODE: usize = 1;
const TFTPD_NODE: usize = 2;

/// Knobs of the TFTP bench.
#[derive(Clone, Debug)]
pub struct TftpOptions {
    pub clients: usize,
    pub size_mib: usize,
    /// The `blksize` every client asks for: 1468 fills a 1500-byte MTU.
    pub blksize: u16,
    /// Timed rounds per server; the table shows the fastest.
    pub rounds: usize,
    /// Give up on a round after this long.
    pub timeout: Duration,
}

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            clients: 50,
            size_mib: 32,
            blksize: 1468,
            rounds: 1,
            timeout: Duration::from_secs(600),
        }
    }
}

/// One timed round: all clients' finish times, from the first start.
struct Round {
    wall: Duration,
    finishes: Vec<Duration>,
}

/// Runs the bench, prints a table, and returns the closing JSON object.
pub fn run(opts: &TftpOptions) -> Result<serde_json::Value> {
    ensure!(
        opts.clients > 0 && opts.size_mib > 0 && opts.rounds > 0,
        "clients, size and rounds must be positive"
    );
    require_tools(&["curl", "in.tftpd", "sha256sum", "ip", "ss"])?;
    warn_host_services(&["in.tftpd"]);

    let bench = Bench::new(2)?;
    println!(
        "=== lab {}: tandem in n1, tftpd-hpa in n2, {} curl clients in c1",
        bench.lab.prefix(),
        opts.clients
    );
    bench.give_vip(TFTPD_NODE)?;

    // The same bytes in both servers' directories.
    let tandem_file = bench.lab.node_artifact_dir(TANDEM_NODE).join(FILE);
    let hpa_root = bench.lab.node_dir(TFTPD_NODE).join("tftpboot");
    std::fs::create_dir_all(&hpa_root)
        .with_context(|| format!("creating {}", hpa_root.display()))?;
    let hpa_file = hpa_root.join(FILE);
    println!("=== a {} MiB file ({FILE})", opts.size_mib);
    let data = pseudo_random(opts.size_mib << 20);
    for path in [&tandem_file, &hpa_file] {
        std::fs::write(path, &data).with_context(|| format!("writing {}", path.display()))?;
    }
    drop(data);
    make_world_readable(&hpa_file)?;
    let want = sha256_file(&tandem_file)?;
    ensure!(
        sha256_file(&hpa_file)? == want,
        "the two copies of {FILE} differ"
    );

    let downloads = bench.downloads_dir("tftp");

    println!("=== tandem");
    bench.activate(TANDEM_NODE)?;
    bench.start_tandem(TANDEM_NODE, lab::SERVICE_TOML)?;
    let tandem = rounds(&bench, opts, &downloads.0.join("tandem"), &want);
    bench.stop_tandem(TANDEM_NODE);
    let tandem = tandem?;

    println!("=== tftpd-hpa");
    bench.activate(TFTPD_NODE)?;
    let hpa = start_tftpd_hpa(&bench, TFTPD_NODE, &hpa_root)?;
    let tftpd = rounds(&bench, opts, &downloads.0.join("tftpd-hpa"), &want);
    hpa.kill_and_wait();
    let tftpd = tftpd?;
    drop(downloads);
    drop(bench);

    let best = |rs: &[Round]| rs.iter().map(|r| r.wall).min().expect("at least one round");
    let (t, h) = (best(&tandem).as_secs_f64(), best(&tftpd).as_secs_f64());
    #[allow(clippy::cast_precision_loss, reason = "a few GiB at most")]
    let mib = (opts.clients * opts.size_mib) as f64;
    println!();
    println!(
        "TFTP: {} concurrent curl clients, {} MiB each, blksize {} ({} round(s) per server, fastest shown)",
        opts.clients, opts.size_mib, opts.blksize, opts.rounds
    );
    println!(
        "{:<12} {:>10} {:>12} {:>14} {:>14}",
        "server", "wall s", "MiB/s total", "first done s", "median done s"
    );
    for (name, rs) in [("tandem", &tandem), ("tftpd-hpa", &tftpd)] {
        let r = rs
            .iter()
            .min_by_key(|r| r.wall)
            .expect("at least one round");
        let mut f = r.finishes.clone();
        f.sort();
        println!(
            "{name:<12} {:>10.2} {:>12.1} {:>14.2} {:>14.2}",
            r.wall.as_secs_f64(),
            mib / r.wall.as_secs_f64(),
            f[0].as_secs_f64(),
            f[f.len() / 2].as_secs_f64()
        );
    }
    println!(
        "ratio (tftpd-hpa time / tandem time; > 1: tandem faster): {:.3}",
        h / t
    );
    println!();
    Ok(serde_json::json!({
        "bench": "tftp",
        "clients": opts.clients,
        "size_mib": opts.size_mib,
        "blksize": opts.blksize,
        "tandem_s": json_num(Some(t), 3),
        "tftpd_hpa_s": json_num(Some(h), 3),
        "ratio": json_num(Some(h / t), 3),
    }))
}

/// A warm-up fetch, then `opts.rounds` timed rounds against whatever serves
/// the VIP now. Each round's downloads are checked and deleted.
fn rounds(bench: &Bench, opts: &TftpOptions, dir: &Path, want: &str) -> Result<Vec<Round>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let warm = fetch_all(bench, 1, opts, dir, Duration::from_secs(120)).context("warm-up fetch")?;
    verify(dir, 1, want)?;
    println!(
        "    warm-up: one client alone took {:.2} s",
        warm.wall.as_secs_f64()
    );
    let mut out = Vec::new();
    for i in 1..=opts.rounds {
        let r = fetch_all(bench, opts.clients, opts, dir, opts.timeout)?;
        verify(dir, opts.clients, want)?;
        println!(
            "    round {i}: {} clients done in {:.2} s, all {} sha256 match",
            opts.clients,
            r.wall.as_secs_f64(),
            opts.clients
        );
        out.push(r);
    }
    Ok(out)
}

fn download_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("c{k}.bin"))
}

/// Starts `n` curl clients at once and waits for all of them; any failure
/// is an error carrying that client's output.
fn fetch_all(
    bench: &Bench,
    n: usize,
    opts: &TftpOptions,
    dir: &Path,
    timeout: Duration,
) -> Result<Round> {
    for k in 1..=n {
        for path in [download_path(dir, k), dir.join(format!("c{k}.log"))] {
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    let url = format!("tftp://{VIP}/{FILE}");
    let ns = bench.client_ns();
    let start = Instant::now();
    let mut clients: Vec<(usize, LabProcess, Option<Duration>)> = Vec::with_capacity(n);
    for k in 1..=n {
        let args = [
            "-sS".to_owned(),
            "--tftp-blksize".into(),
            opts.blksize.to_string(),
            "--max-time".into(),
            timeout.as_secs().to_string(),
            "-o".into(),
            download_path(dir, k).display().to_string(),
            url.clone(),
        ];
        clients.push((
            k,
            bench.spawn(&ns, "curl", &args, &dir.join(format!("c{k}.log")))?,
            None,
        ));
    }
    let deadline = start + timeout;
    loop {
        let now = Instant::now();
        let mut pending = 0;
        for (k, p, done) in &mut clients {
            if done.is_some() {
                continue;
            }
            match p.try_status() {
                Some(status) if status.success() => *done = Some(now - start),
                Some(status) => {
                    let log = dir.join(format!("c{k}.log"));
                    bail!(
                        "client {k}: curl {url} failed ({status}): {}",
                        tail(&log, 5)
                    );
                }
                None => pending += 1,
            }
        }
        if pending == 0 {
            break;
        }
        interrupt::check()?;
        if now >= deadline {
            bail!("{pending} of {n} clients still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let finishes: Vec<Duration> = clients
        .iter()
        .map(|(_, _, d)| d.expect("all done"))
        .collect();
    let wall = finishes.iter().copied().max().unwrap_or_default();
    Ok(Round { wall, finishes })
}

/// Checks the sha256 of downloads 1..=n against `want` (one `sha256sum`
/// for all), then deletes them.
fn verify(dir: &Path, n: usize, want: &str) -> Result<()> {
    let paths: Vec<PathBuf> = (1..=n).map(|k| download_path(dir, k)).collect();
    let out = Command::new("sha256sum")
        .args(&paths)
        .output()
        .context("running sha256sum")?;
    ensure!(
        out.status.success(),
        "sha256sum: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let sums: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ensure!(
        sums.len() == n,
        "sha256sum listed {} of {n} downloads",
        sums.len()
    );
    for (path, sum) in paths.iter().zip(&sums) {
        ensure!(
            *sum == want,
            "{} has sha256 {sum}, want {want}",
            path.display()
        );
    }
    for path in &paths {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    // Let a Ctrl-C during the (untimed) check end the bench here.
    interrupt::check()?;
    Ok(())
}

/// `len` bytes from xorshift64*: incompressible and reproducible, so a
/// dropped or repeated block cannot match by accident.
pub(crate) fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// tftpd-hpa chroots into its directory as root (`-s`) and then drops
/// privileges to the `tftp` user, who must be able to list the directory
/// and read the file.
pub(crate) fn make_world_readable(file: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod 644 {}", file.display()))?;
    let dir = file.parent().context("the served file has a directory")?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_is_reproducible_and_not_constant() {
        let a = pseudo_random(1 << 16);
        assert_eq!(a.len(), 1 << 16);
        assert_eq!(a, pseudo_random(1 << 16));
        let mut counts = [0usize; 256];
        for &b in &a {
            counts[usize::from(b)] += 1;
        }
        // Every byte value shows up, none dominates (a stuck generator would).
        assert!(counts.iter().all(|&c| c > 0 && c < 1024), "{counts:?}");
        assert_eq!(pseudo_random(5), a[..5]);
    }
}
