//! # Layout
//! The `tandem` command line (DESIGN.md section 4). Exit codes: 0 ok,
//! 1 the operation failed, 2 usage error, 3 no quorum or no leader reachable.
//! `--json` works on every command: one JSON value on stdout, and failures
//! as `{"error": …, "hint": …}` (see `output`).
//!
//! - this file: the flags ([`Cli`], [`Cmd`]), parsing ([`parse`]) and the
//!   dispatch ([`run_admin`]).
//! - `reach`: which node a call goes to (`--nodes`, leader finding, back-off,
//!   `--timeout`), and with what CA and token.
//! - `output`: exit codes, JSON and text output, errors with hints.
//! - `status`, `lease`, `reservation`, `service` (apply, export), `cluster`,
//!   `artifact`: one module per command group.
//! - `docs`: `tandem completions SHELL` and `tandem man`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::api::client::Client;

mod artifact;
mod cluster;
mod docs;
mod health;
mod image;
mod lease;
mod output;
pub mod reach;
mod reservation;
mod service;
mod status;

pub use artifact::ArtifactCmd;
pub use cluster::ClusterCmd;
pub use lease::LeaseCmd;
pub use reservation::ReservationCmd;

pub const DEFAULT_CONFIG: &str = "/etc/tandem/node.toml";

#[derive(Parser, Debug)]
#[command(
    name = "tandem",
    version,
    about = "Highly available DHCP + TFTP + HTTP boot",
    after_help = "Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 no quorum or no leader reachable."
)]
pub struct Cli {
    /// Admin API of the node to talk to (default: this node's `api.listen` from
    /// its config, else 127.0.0.1:7481).
    #[arg(long, global = true, env = "TANDEM_API")]
    pub api: Option<String>,
    /// API addresses of several members (host:port,...): reads go to the first
    /// that answers, writes to the leader, found by asking them in order.
    /// Retries until --timeout (default 60 s with --nodes). Wins over --api.
    #[arg(
        long,
        global = true,
        env = "TANDEM_NODES",
        value_delimiter = ',',
        value_name = "ADDR,..."
    )]
    pub nodes: Vec<String>,
    /// Bounds the whole call, retries included (e.g. 10s, 500ms); exit 3
    /// when it runs out with no node or no leader. Without it (and without
    /// --nodes) a call is tried once.
    #[arg(long, global = true, value_parser = reach::parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// The longest pause between retries (Fibonacci: 1, 1, 2, 3, 5 ... s).
    #[arg(long, global = true, value_parser = reach::parse_duration, default_value = "30s", value_name = "DURATION")]
    pub backoff_cap: Duration,
    /// Print results as JSON on stdout, and failures as {"error": ..., "hint": ...}.
    #[arg(long, global = true)]
    pub json: bool,
    /// Node config, used to find the local API address, the cluster CA
    /// (`<data_dir>/tls/ca.pem`) and the admin token (`<data_dir>/admin.token`).
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The cluster CA certificate to verify the API against (default: the
    /// node config's `<data_dir>/tls/ca.pem`).
    #[arg(long, global = true, env = "TANDEM_CA")]
    pub ca: Option<PathBuf>,
    /// A file holding the admin token (default: `<data_dir>/admin.token`;
    /// the `TANDEM_TOKEN` environment variable, if set, wins).
    #[arg(long, global = true, env = "TANDEM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the node in the foreground (systemd Type=notify).
    Daemon {
        /// Log lines as `text` or `json` (default: node.toml's `[log] format`, else text).
        #[arg(long, env = "TANDEM_LOG_FORMAT")]
        log_format: Option<crate::config::LogFormat>,
    },
    /// This node's view of the cluster.
    Status,
    /// Exit 0 when this node serves or follows a leader with a quorum; with
    /// --timeout, wait for that (e.g. `tandem --timeout 3m health`).
    Health,
    /// Leases: list, show one, release one.
    Lease {
        #[command(subcommand)]
        cmd: LeaseCmd,
    },
    /// Reservations (MAC -> IP) in the replicated service config.
    Reservation {
        #[command(subcommand)]
        cmd: ReservationCmd,
    },
    /// Apply a service config file (subnets, pools, reservations, profiles) declaratively.
    Apply { file: PathBuf },
    /// Print the service config as TOML (round-trips with `apply`; JSON with --json).
    Export,
    /// Membership and leadership.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Boot files (kernels, initrds, iPXE binaries), stored by sha256 on every node.
    Artifact {
        #[command(subcommand)]
        cmd: ArtifactCmd,
    },
    /// Appliance upgrades: install a bundle into the inactive slot and reboot into it.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Several nodes' logs (text, JSON or journalctl output) as one story, by time, term and index.
    Logs {
        /// The log files, one per node, each in time order.
        #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
        merge: Vec<PathBuf>,
    },
    /// The console: every member's state, leases, rates, XDP, artifacts and
    /// events, each second (members from the node's status, or --nodes).
    Top,
    /// Print a shell completion script, e.g. `source <(tandem completions bash)`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `tandem man | man -l -`.
    Man,
}

/// Parses the command line. A usage error is printed (as JSON with
/// `--json`) and comes back as the exit code to end with: 2, or 0 for
/// `--help` and `--version`.
pub fn parse() -> Result<Cli, ExitCode> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    Cli::try_parse_from(&args).map_err(|e| output::usage_error(&e, output::wants_json(&args)))
}

/// Runs an admin subcommand (everything but `daemon`).
#[must_use]
pub fn run_admin(cli: &Cli) -> ExitCode {
    let out = output::Out { json: cli.json };
    match &cli.cmd {
        Cmd::Completions { shell } => {
            docs::completions(out, *shell, Cli::command());
            return ExitCode::SUCCESS;
        }
        Cmd::Man => return out.finish(docs::man(out, Cli::command())),
        Cmd::Logs { merge } => return crate::ui::logs::run(merge),
        _ => {}
    }
    let access = || reach::access(&cli.config, cli.ca.as_deref(), cli.token_file.as_deref());
    if matches!(cli.cmd, Cmd::Top) {
        let api = reach::api_base(cli.api.as_deref(), &cli.config);
        return crate::ui::top::run(&api, &cli.nodes, access());
    }
    let nodes = if cli.nodes.is_empty() {
        vec![reach::api_base(cli.api.as_deref(), &cli.config)]
    } else {
        cli.nodes.clone()
    };
    if let Some(bad) = nodes.iter().find(|n| n.trim().is_empty()) {
        return out.finish(Err(output::CliError::usage(
            format!("--nodes has an empty address {bad:?}"),
            Some("write --nodes host:port,host:port,..."),
        )));
    }
    let timeout = cli
        .timeout
        .or_else(|| (!cli.nodes.is_empty()).then_some(reach::DEFAULT_NODES_TIMEOUT));
    let r = reach::Reach::new(nodes, access(), timeout, cli.backoff_cap);
    let done = match &cli.cmd {
        Cmd::Daemon { .. } | Cmd::Completions { .. } | Cmd::Man | Cmd::Logs { .. } | Cmd::Top => {
            unreachable!("main runs the daemon; completions, man, logs and top ran above")
        }
        Cmd::Status => status::run(&r, out),
        Cmd::Health => health::run(&r, out),
        Cmd::Lease { cmd } => lease::run(&r, out, cmd),
        Cmd::Reservation { cmd } => reservation::run(&r, out, cmd),
        Cmd::Apply { file } => service::apply(&r, out, file),
        Cmd::Export => service::export(&r, out),
        Cmd::Cluster { cmd } => {
            let first = r.first().to_owned();
            cluster::run(&r, out, &|| Client::new(&first, &access()), cmd)
        }
        Cmd::Artifact { cmd } => artifact::run(&r, out, cmd),
        Cmd::Image { cmd } => image::run(&r, out, cmd),
    };
    out.finish(done)
}
