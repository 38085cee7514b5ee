//! `tandem-bench dhcp|tftp`: see the library's `//! # Layout` for what each
//! bench measures. The last line of output is one JSON object.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tandem_bench::dhcp::DhcpOptions;
use tandem_bench::servers::DhcpServer;
use tandem_bench::tftp::TftpOptions;

#[derive(Parser)]
#[command(about = "Benchmarks tandem against Kea, dnsmasq and tftpd-hpa in a namespace lab (needs root)")]
struct Cli {
    #[command(subcommand)]
    bench: BenchCmd,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// DHCP exchanges/s at < 1 % loss: tandem, kea-dhcp4 (persist off/on), dnsmasq.
    Dhcp {
        /// Seconds per perfdhcp trial.
        #[arg(long, default_value_t = 10)]
        period: u64,
        /// Trials per server after the probe.
        #[arg(long, default_value_t = 7)]
        max_trials: usize,
        /// Servers to run, comma-separated: tandem, kea, kea-persist, dnsmasq.
        #[arg(long, value_delimiter = ',', default_value = "tandem,kea,kea-persist,dnsmasq")]
        servers: Vec<String>,
    },
    /// Wall time for N concurrent TFTP clients to fetch one file: tandem vs tftpd-hpa.
    Tftp {
        #[arg(long, default_value_t = 50)]
        clients: usize,
        #[arg(long, default_value_t = 32)]
        size_mib: usize,
        /// Timed rounds per server (the fastest is reported).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<serde_json::Value> {
    tandem_bench::interrupt::install()?;
    match cli.bench {
        BenchCmd::Dhcp { period, max_trials, servers } => {
            let servers = servers.iter().map(|s| DhcpServer::from_name(s)).collect::<Result<Vec<_>>>()?;
            let opts = DhcpOptions { period: Duration::from_secs(period), max_trials, servers, ..DhcpOptions::default() };
            tandem_bench::dhcp::run(&opts)
        }
        BenchCmd::Tftp { clients, size_mib, rounds } => {
            let opts = TftpOptions { clients, size_mib, rounds, ..TftpOptions::default() };
            tandem_bench::tftp::run(&opts)
        }
    }
}
