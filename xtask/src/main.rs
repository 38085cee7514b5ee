//! # Layout
//! `cargo xtask ...` (alias in .cargo/config.toml): orchestration that cargo
//! itself does not own. Builds stay in cargo; xtask only sequences them.
//!
//! - this file: flags, and one function per subcommand.
//! - [`deps`]: `cargo xtask deps`, installs what a fresh Debian 12 lacks.
//! - [`labcmd`]: `cargo xtask lab up|down`, a lab left up for manual work.
//! - [`testcmd`]: `cargo xtask test`, what CI runs (`.ci/run`).
//! - [`demo`]: `cargo xtask demo`, three nodes form a cluster by join, serve a
//!   real client, lose their leader, and the client keeps its address.
//! - [`fuzz`]: `cargo xtask fuzz`, every cargo-fuzz target in turn (fuzz/).
//! - [`image`]: `cargo xtask image`, the flashable appliance image (image/).
//! - `bench` (in this file): builds and runs `tandem-bench dhcp|tftp` (benches/).
//! - [`util`]: running commands, the workspace root, building `tandem`.

mod demo;
mod deps;
mod fuzz;
mod image;
mod labcmd;
mod testcmd;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "tandem's development tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing build and test dependencies (apt packages, rust-src, bpf-linker).
    Deps,
    /// Build or remove a lab of network namespaces that stays up (prefix `tl-`).
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Deps, release build of tandem, then every unit and integration test.
    Test {
        /// Passed to the test harness after `--` (e.g. a test name filter).
        #[arg(last = true)]
        harness_args: Vec<String>,
    },
    /// Three nodes, a real client, a leader killed with SIGKILL and a live failover.
    Demo,
    /// Benchmarks side by side with the peers (not run in CI): `dhcp [--nodes 3]`
    /// (perfdhcp vs kea-dhcp4, dnsmasq), `tftp` (50 clients vs tftpd-hpa),
    /// `failover [--trials N]` (vs keepalived + dnsmasq), `stability [--minutes M]`,
    /// `overload [--rate R]` (Raft heartbeats under a DHCP flood).
    Bench {
        /// `dhcp`, `tftp`, `failover`, `stability`, `boot` or `overload`, then any flags of `tandem-bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Run the cargo-fuzz targets (fuzz/) one at a time under the heavy lock;
    /// prints executions and crashes per target, keeps crash inputs.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Only this target (e.g. `dhcp_decode_handle`).
        #[arg(long)]
        target: Option<String>,
        /// Stop a target after this many executions, if that comes first.
        #[arg(long)]
        runs: Option<u64>,
    },
    /// Build the appliance image: target/image/tandem-VERSION-amd64.img and .img.zst.
    Image {
        /// The image version (os-release IMAGE_VERSION, the file name);
        /// default `<crate version>-g<git describe>`.
        #[arg(long)]
        version: Option<String>,
        /// For image-test only: a build whose daemon exits at start.
        #[arg(long, hide = true)]
        broken: bool,
    },
    /// Build the image, then boot it in QEMU VMs (tests/image): a 3-box
    /// cluster that PXE-boots a fourth VM. Not part of `test` (slow).
    ImageTest {
        /// Passed to the test harness after `--` (e.g. a test name filter).
        #[arg(last = true)]
        harness_args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab and leave it up.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 1)]
        clients: usize,
    },
    /// Remove the xtask lab and labs of test runs that died.
    Down,
}

fn main() -> std::process::ExitCode {
    // Print the error chain ourselves: anyhow's Debug output would add a
    // backtrace whenever RUST_BACKTRACE is set, burying the message.
    match dispatch(Cli::parse().cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Deps => deps::run(),
        Cmd::Lab {
            cmd: LabCmd::Up { nodes, clients },
        } => labcmd::up(nodes, clients),
        Cmd::Lab { cmd: LabCmd::Down } => labcmd::down(),
        Cmd::Test { harness_args } => testcmd::run(&harness_args),
        Cmd::Demo => demo::run(),
        Cmd::Bench { args } => bench(&args),
        Cmd::Fuzz { secs, target, runs } => fuzz::run(secs, runs, target.as_deref()),
        Cmd::Image { version, broken } => {
            image::build(&image::Opts { version, broken }).map(|_| ())
        }
        Cmd::ImageTest { harness_args } => image::test(&harness_args),
    }
}

/// Builds `tandem` and the bench driver in release mode and runs it; the
/// driver prints a table and, as its last line, one JSON object of figures.
fn bench(args: &[String]) -> anyhow::Result<()> {
    util::require_root("cargo xtask bench")?;
    deps::run()?;
    let bin = util::build_tandem()?;
    let status = util::cargo()
        .args(["run", "--quiet", "--release", "-p", "tandem-bench", "--"])
        .args(args)
        .env("TANDEM_BIN", &bin)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "tandem-bench {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}
