//! `cargo xtask fuzz [--secs N] [--runs R] [--target T]`: builds the
//! cargo-fuzz crate (`fuzz/`, nightly, libFuzzer) and runs each target in
//! turn for `N` seconds (or `R` executions, if that comes first), one at a
//! time under the shared heavy lock and `nice`, then prints executions and
//! crashes per target.
//!
//! Each run starts from the committed seeds (`fuzz/corpus/<t>/`, read only)
//! and grows a work corpus under `fuzz/target/corpus/<t>/`, which later runs
//! resume from. A crash input is copied to `fuzz/regressions/<t>/`, where
//! `daemon/tests/fuzz_regressions.rs` replays it in `cargo xtask test`
//! until the bug is fixed (and after, so it stays fixed).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::util::{find_on_path, run_cmd, workspace_root};

/// The shared lock every heavy run (namespaces, QEMU, benchmarks, fuzzing) holds.
const HEAVY_LOCK: &str = "/tmp/heavy.lock";

/// libFuzzer flags common to every target:
/// - no sanitizer is needed for memory safety (the code is safe Rust), but a
///   single allocation over 256 MiB is a crash: bounded input must stay
///   bounded (a zstd bomb, a length prefix believed);
/// - an input that takes over 10 s is a hang;
/// - inputs up to 64 KiB: more than any datagram or config file seed.
const LIBFUZZER_FLAGS: &[&str] = &[
    "-malloc_limit_mb=256",
    "-rss_limit_mb=2048",
    "-timeout=10",
    "-max_len=65536",
    "-print_final_stats=1",
];

/// What one target's run did.
struct Outcome {
    target: String,
    secs: u64,
    execs: u64,
    crashes: Vec<PathBuf>,
}

pub fn run(secs: u64, runs: Option<u64>, only: Option<&str>) -> Result<()> {
    let fuzz = workspace_root().join("fuzz");
    let mut targets = targets(&fuzz)?;
    if let Some(t) = only {
        ensure!(
            targets.iter().any(|x| x == t),
            "no fuzz target {t}; the targets are {}",
            targets.join(", ")
        );
        targets.retain(|x| x == t);
    }
    ensure_cargo_fuzz()?;
    let target_dir = fuzz.join("target");
    println!("=== cargo +nightly fuzz build (no sanitizer, debug assertions on)");
    run_cmd(
        nightly_cargo(&fuzz, &target_dir).args(["fuzz", "build", "-s", "none", "-a"]),
        "cargo +nightly fuzz build",
    )?;
    let bin_dir = target_dir.join("x86_64-unknown-linux-gnu").join("release");
    let mut outcomes = Vec::new();
    for t in &targets {
        println!("=== fuzz {t} for {secs} s (under {HEAVY_LOCK}, nice 19)");
        outcomes.push(run_target(&fuzz, &bin_dir, t, secs, runs)?);
    }
    println!();
    println!(
        "{:<20} {:>8} {:>14} {:>10} {:>8}",
        "target", "secs", "executions", "exec/s", "crashes"
    );
    for o in &outcomes {
        println!(
            "{:<20} {:>8} {:>14} {:>10} {:>8}",
            o.target,
            o.secs,
            o.execs,
            o.execs / o.secs.max(1),
            o.crashes.len()
        );
    }
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.crashes.is_empty()).collect();
    if !crashed.is_empty() {
        for o in &crashed {
            for c in &o.crashes {
                println!("crash input of {}: {}", o.target, c.display());
            }
        }
        bail!(
            "{} target(s) crashed; the inputs are kept under fuzz/regressions/ (fix, then `cargo xtask test`)",
            crashed.len()
        );
    }
    Ok(())
}

/// The targets: one file each in `fuzz/fuzz_targets/`.
fn targets(fuzz: &Path) -> Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "rs") {
            if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                out.push(stem.to_owned());
            }
        }
    }
    out.sort();
    ensure!(!out.is_empty(), "no fuzz targets in {}", dir.display());
    Ok(out)
}

/// `cargo +nightly …` in `fuzz/`: the rustup proxy (not `$CARGO`, which is
/// the stable cargo running xtask), the eBPF build skipped (the targets do
/// not load XDP), and its own target dir.
fn nightly_cargo(fuzz: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .current_dir(fuzz)
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("AYA_BUILD_SKIP", "1")
        .env("CARGO_TARGET_DIR", target_dir);
    cmd
}

/// Installs cargo-fuzz if it is missing (`cargo install cargo-fuzz --locked`).
fn ensure_cargo_fuzz() -> Result<()> {
    if find_on_path("cargo-fuzz").is_some() {
        return Ok(());
    }
    println!("=== cargo install cargo-fuzz --locked");
    run_cmd(
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
        "cargo install cargo-fuzz",
    )
}

fn run_target(
    fuzz: &Path,
    bin_dir: &Path,
    target: &str,
    secs: u64,
    runs: Option<u64>,
) -> Result<Outcome> {
    let work = fuzz.join("target").join("corpus").join(target);
    let seeds = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    for d in [&work, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let before = artifact_names(&artifacts)?;
    let bin = bin_dir.join(target);
    let mut prefix = artifacts.as_os_str().to_owned();
    prefix.push("/");
    let mut artifact_flag = std::ffi::OsString::from("-artifact_prefix=");
    artifact_flag.push(&prefix);
    // libFuzzer reports on stderr; a file lets a long run be followed (tail -f).
    let log_path = fuzz.join("target").join(format!("{target}.log"));
    let log_file = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    println!("    log: {}", log_path.display());
    let status = Command::new("flock")
        .args([HEAVY_LOCK, "nice", "-n", "19"])
        .arg(&bin)
        .args(LIBFUZZER_FLAGS)
        .arg(format!("-max_total_time={secs}"))
        .args(runs.map(|r| format!("-runs={r}")))
        .arg(artifact_flag)
        .arg(&work)
        .arg(&seeds)
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
    let (execs, run_secs) = final_stats(&log);
    let mut crashes = Vec::new();
    for name in artifact_names(&artifacts)? {
        if before.contains(&name) {
            continue;
        }
        let dir = fuzz.join("regressions").join(target);
        std::fs::create_dir_all(&dir)?;
        let kept = dir.join(&name);
        std::fs::copy(artifacts.join(&name), &kept)
            .with_context(|| format!("keeping {}", kept.display()))?;
        crashes.push(kept);
    }
    if !status.success() || !crashes.is_empty() {
        // The panic message and the crash's stack are at the end.
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for l in tail.iter().rev() {
            eprintln!("    {l}");
        }
        ensure!(
            !crashes.is_empty(),
            "{target} failed ({status}) without leaving a crash input"
        );
    }
    println!(
        "    {target}: {execs} executions in {run_secs} s, {} crash(es)",
        crashes.len()
    );
    Ok(Outcome {
        target: target.to_owned(),
        secs: run_secs,
        execs,
        crashes,
    })
}

fn artifact_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        if let Some(n) = e?.file_name().to_str() {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// Executions and seconds from libFuzzer's `-print_final_stats` block
/// (`stat::number_of_executed_units: N`) and its `Done N runs in S
/// second(s)` line; the last `#N` status line when it crashed before either.
fn final_stats(log: &str) -> (u64, u64) {
    let mut execs = None;
    let mut secs = 0;
    let mut last_status = 0;
    for line in log.lines() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            execs = n.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("Done ") {
            let mut w = rest.split_whitespace();
            if let (Some(n), Some(_runs), Some(_in), Some(s)) =
                (w.next(), w.next(), w.next(), w.next())
            {
                execs = execs.or(n.parse().ok());
                secs = s.parse().unwrap_or(secs);
            }
        } else if let Some(rest) = line.strip_prefix('#') {
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                last_status = n;
            }
        }
    }
    (execs.unwrap_or(last_status), secs)
}

#[cfg(test)]
mod tests {
    use super::final_stats;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #4194304\tpulse  cov: 10 ft: 11 corp: 1/1b lim: 4096 exec/s: 1398101 rss: 31Mb\n\
                   Done 12345678 runs in 61 second(s)\n\
                   stat::number_of_executed_units: 12345679\n\
                   stat::average_exec_per_sec:     202388\n";
        assert_eq!(final_stats(log), (12_345_679, 61));
        let crashed =
            "#1000\tNEW cov: 3\n#2000\tREDUCE cov: 4\n==1== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(final_stats(crashed), (2000, 0));
    }
}
