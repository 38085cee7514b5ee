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
    // failing area does not hide the state of the others.
    cmd.args([
        "test",
        "--release",
        "--workspace",
        "--no-fail-fast",
        "--",
        TEST_THREADS,
    ])
    .args(harness_args)
    .env("TANDEM_BIN", &bin);
    let status = cmd.status()?;
    ensure!(
        status.success(),
        "tests failed ({status}); see the `test result:` lines and failures above"
    );
    Ok(())
}
