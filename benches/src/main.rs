//! `tandem-bench dhcp|tftp|failover|stability|boot|overload`: see the library's
//! `//! # Layout` for what each bench measures. The output ends with the
//! figures as JSON, one object per line (failover: one per fault).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tandem_bench::boot::{BootOptions, WindowClients};
use tandem_bench::dhcp::{DhcpOptions, Load};
use tandem_bench::failover::FailoverOptions;
use tandem_bench::overload::OverloadOptions;
use tandem_bench::servers::{DhcpServer, Placement};
use tandem_bench::stability::StabilityOptions;
use tandem_bench::tftp::TftpOptions;

#[derive(Parser)]
#[command(
    about = "Benchmarks tandem against Kea, dnsmasq and tftpd-hpa in a namespace lab (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    bench: BenchCmd,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// DHCP exchanges/s at < 1 % loss: tandem, kea-dhcp4 (persist off/on,
    /// 1 or 2 threads), dnsmasq; new clients and renew-heavy.
    Dhcp {
        /// Seconds per perfdhcp trial.
        #[arg(long, default_value_t = 10)]
        period: u64,
        /// Trials per server and load after the probe.
        #[arg(long, default_value_t = 7)]
        max_trials: usize,
        /// Servers to run, comma-separated: tandem, kea, kea-mt, kea-persist, dnsmasq.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "tandem,kea,kea-mt,kea-persist,dnsmasq"
        )]
        servers: Vec<String>,
        /// Loads to run each server under, comma-separated: new (500,000
        /// clients, each exchange a new lease), renew (150 clients, `-R 150`).
        #[arg(long, value_delimiter = ',', default_value = "new,renew")]
        loads: Vec<String>,
        /// tandem's cluster size (Kea and dnsmasq always run alone).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=50))]
        nodes: u16,
        /// Skip the search: one trial per server and load at this many exchanges/s.
        #[arg(long)]
        rate: Option<u32>,
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
    /// Fault → first DHCP reply from the new server (SIGKILL, link cut):
    /// tandem 3-node vs keepalived + dnsmasq (advert 1 s and 0.1 s).
    Failover {
        /// Trials per fault and system.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Measure tandem only.
        #[arg(long)]
        no_keepalived: bool,
    },
    /// Leader changes and unanswered probes of a 3-node cluster on saturated CPUs.
    Stability {
        /// Length of the loaded window, in minutes (fractions allowed).
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// CPU-burning workers per node namespace.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Booting a fleet: a DHCP + TFTP/HTTP storm, TFTP windowsize and HTTP
    /// throughput with server CPU per GiB: tandem 3-node vs dnsmasq + nginx
    /// and tftpd-hpa.
    Boot {
        /// Clients of the storm (each DHCP, then one fetch).
        #[arg(long, default_value_t = 200)]
        storm_clients: usize,
        /// Clients of the windowsize and HTTP parts.
        #[arg(long, default_value_t = 50)]
        clients: usize,
        #[arg(long, default_value_t = 32)]
        size_mib: usize,
        /// The `windowsize` the TFTP clients ask for (tandem answers at most 64).
        #[arg(long, default_value_t = 16)]
        windowsize: u16,
        /// Parts to run, comma-separated: storm, window, http.
        #[arg(long, value_delimiter = ',', default_value = "storm,window,http")]
        parts: Vec<String>,
        /// TFTP clients of the window part, comma-separated: atftp (one
        /// process per transfer), bench (`tftp-get`: one process for all).
        #[arg(long, value_delimiter = ',', default_value = "atftp,bench")]
        window_clients: Vec<String>,
    },
    /// The bench's own TFTP client: COUNT downloads at once from one
    /// process (what `boot`'s window part runs inside a client namespace).
    TftpGet(TftpGetArgs),
    /// Raft heartbeats of a 3-node cluster while perfdhcp offers far more
    /// DHCP than the leader commits: follower ack ages, leader changes.
    Overload {
        /// Exchanges/s perfdhcp offers (relayed).
        #[arg(long, default_value_t = 20_000)]
        rate: u32,
        /// Length of the flood, in seconds.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(lines) => {
            for json in lines {
                println!("{json}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args)]
struct TftpGetArgs {
    /// The server's address and port.
    #[arg(long)]
    server: std::net::SocketAddrV4,
    #[arg(long)]
    file: String,
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[arg(long, default_value_t = 1468)]
    blksize: u16,
    /// Ask for this window; without it, RFC 1350 lock-step.
    #[arg(long)]
    windowsize: Option<u16>,
    /// Transfer J writes DIR/cJ.bin.
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

/// Runs `tftp-get`: one line per transfer, an error if any failed.
fn tftp_get(a: TftpGetArgs) -> Result<Vec<serde_json::Value>> {
    let count = a.count;
    let results = tandem_bench::tftpget::run(&tandem_bench::tftpget::GetOptions {
        server: a.server,
        file: a.file,
        count,
        blksize: a.blksize,
        windowsize: a.windowsize,
        dir: a.dir,
        timeout: Duration::from_secs(a.timeout_secs),
    })?;
    let mut failed = 0;
    for (j, r) in (1..).zip(&results) {
        match r {
            Ok((d, bytes)) => println!("transfer {j} ok {:.6} {bytes}", d.as_secs_f64()),
            Err(why) => {
                failed += 1;
                println!("transfer {j} failed: {why}");
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {count} transfers failed");
    Ok(Vec::new())
}

/// Every name of a comma-separated flag is one of `known`.
fn check_names(names: &[String], what: &str, known: &[&str]) -> Result<()> {
    for n in names {
        anyhow::ensure!(
            known.contains(&n.as_str()),
            "unknown {what} {n:?}: one of {}",
            known.join(", ")
        );
    }
    Ok(())
}

/// The window part's clients from `--window-clients`.
fn window_clients(names: &[String]) -> Result<WindowClients> {
    check_names(names, "window client", &["atftp", "bench"])?;
    let has = |c: &str| names.iter().any(|x| x == c);
    Ok(WindowClients {
        atftp: has("atftp"),
        bench: has("bench"),
    })
}

fn run(cli: Cli) -> Result<Vec<serde_json::Value>> {
    tandem_bench::interrupt::install()?;
    match cli.bench {
        BenchCmd::Dhcp {
            period,
            max_trials,
            servers,
            loads,
            nodes,
            rate,
        } => {
            let servers = servers
                .iter()
                .map(|s| DhcpServer::from_name(s))
                .collect::<Result<Vec<_>>>()?;
            let loads = loads
                .iter()
                .map(|l| Load::from_name(l))
                .collect::<Result<Vec<_>>>()?;
            let opts = DhcpOptions {
                period: Duration::from_secs(period),
                max_trials,
                servers,
                loads,
                placement: Placement {
                    tandem_nodes: usize::from(nodes),
                },
                rate,
                ..DhcpOptions::default()
            };
            tandem_bench::dhcp::run(&opts).map(|j| vec![j])
        }
        BenchCmd::Tftp {
            clients,
            size_mib,
            rounds,
        } => {
            let opts = TftpOptions {
                clients,
                size_mib,
                rounds,
                ..TftpOptions::default()
            };
            tandem_bench::tftp::run(&opts).map(|j| vec![j])
        }
        BenchCmd::Failover {
            trials,
            no_keepalived,
        } => tandem_bench::failover::run(&FailoverOptions {
            trials,
            keepalived: !no_keepalived,
        }),
        BenchCmd::Stability { minutes, workers } => {
            anyhow::ensure!(
                minutes > 0.0 && minutes <= 24.0 * 60.0,
                "--minutes must be in (0, 1440]"
            );
            let opts = StabilityOptions {
                duration: Duration::from_secs_f64(minutes * 60.0),
                workers_per_node: workers,
            };
            tandem_bench::stability::run(&opts).map(|j| vec![j])
        }
        BenchCmd::Boot {
            storm_clients,
            clients,
            size_mib,
            windowsize,
            parts,
            window_clients: names,
        } => {
            check_names(&parts, "part", &["storm", "window", "http"])?;
            let has = |p: &str| parts.iter().any(|x| x == p);
            tandem_bench::boot::run(&BootOptions {
                storm_clients,
                clients,
                size_mib,
                windowsize,
                storm: has("storm"),
                window: has("window"),
                http: has("http"),
                window_clients: window_clients(&names)?,
                ..BootOptions::default()
            })
        }
        BenchCmd::TftpGet(a) => tftp_get(a),
        BenchCmd::Overload { rate, secs } => {
            anyhow::ensure!(
                (1..=600).contains(&secs) && (1..=100_000).contains(&rate),
                "--secs must be in 1..=600 and --rate in 1..=100000"
            );
            tandem_bench::overload::run(&OverloadOptions {
                rate,
                duration: Duration::from_secs(secs),
            })
            .map(|j| vec![j])
        }
    }
}
