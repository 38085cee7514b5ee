//! `cargo xtask test`: what CI runs. Deps, one release build of `tandem`,
//! then every test of the workspace against that binary. Cargo's own
//! `test result:` lines go straight to stdout for CI to read.

use anyhow::{ensure, Result};

use crate::util::{build_tandem, cargo, require_root};

/// Integration tests each build a lab and run daemons; on 2 cores more than
/// two at once turns timing assertions (failover within 1 s) into noise.
const TEST_THREADS: &str = "--test-threads=2";

pub fn run(harness_args: &[String]) -> Result<()> {
    require_root("cargo xtask test")?;
    crate::deps::run()?;
    let orphans = lab::cleanup_orphans()?;
    if !orphans.is_empty() {
        println!(
            "=== removed namespaces of dead test runs: {}",
            orphans.join(" ")
        );
    }
    let bin = build_tandem()?;

    println!(
        "=== cargo test --release --workspace (TANDEM_BIN={})",
        bin.display()
    );
    let mut cmd = cargo();
    // --no-fail-fast: every test binary runs and prints its summary, so one
    // failing area does not hide the state of the others. Doc-tests are left
    // out (there are none), so the run ends on real test summaries.
    cmd.args([
        "test",
        "--release",
        "--workspace",
        "--lib",
        "--bins",
        "--tests",
        "--no-fail-fast",
        "--",
        TEST_THREADS,
    ])
    .args(harness_args)
    .env("TANDEM_BIN", &bin)
    .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut totals = Totals::default();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    // One plain closing line over every test binary.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    ensure!(
        status.success() && totals.failed == 0,
        "tests failed ({status}); see the `test result:` lines and failures above"
    );
    ensure!(totals.passed > 0, "no test ran");
    Ok(())
}

/// Sums libtest's `test result: ok. N passed; M failed; K ignored; ...` lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut w = part.split_whitespace();
            if let (Some(n), Some(what)) = (w.next(), w.next()) {
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_libtest_summaries() {
        let mut t = Totals::default();
        t.add("test result: ok. 85 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 14.89s");
        t.add("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 12 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (88, 2, 1));
    }
}
