//! # Layout
//! The `tandem` command line. Exit codes (DESIGN.md section 4): 0 ok,
//! 1 the operation failed, 2 usage error (clap), 3 no quorum or no leader reachable.
//!
//! - this file: the flags ([`Cli`], [`Cmd`]) and the dispatch ([`run_admin`]).
//! - `reach`: which API the CLI talks to, and with what CA and token.
//! - `output`: exit codes and JSON printing.
//! - `status`, `lease`, `service` (apply, export), `cluster`, `artifact`: one
//!   module per command group.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::client::Client;
use crate::api::dto::StatusDto;
use crate::model::Lease;

mod artifact;
mod cluster;
mod lease;
mod output;
pub mod reach;
mod service;
mod status;

pub use artifact::ArtifactCmd;
pub use cluster::ClusterCmd;
pub use lease::LeaseCmd;

pub const DEFAULT_CONFIG: &str = "/etc/tandem/node.toml";

#[derive(Parser, Debug)]
#[command(
    name = "tandem",
    version,
    about = "Highly available DHCP + TFTP + HTTP boot"
)]
pub struct Cli {
    /// Admin API of the node to talk to (default: this node's `api.listen` from
    /// its config, else 127.0.0.1:7481).
    #[arg(long, global = true, env = "TANDEM_API")]
    pub api: Option<String>,
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
    Daemon,
    /// This node's view of the cluster.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Leases.
    Lease {
        #[command(subcommand)]
        cmd: LeaseCmd,
    },
    /// Apply a service config file (subnets, pools, reservations, profiles) declaratively.
    Apply { file: PathBuf },
    /// Print the service config as TOML (round-trips with `apply`).
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
}

/// Runs an admin subcommand (everything but `daemon`).
#[must_use]
pub fn run_admin(cli: &Cli) -> ExitCode {
    let access = || reach::access(&cli.config, cli.ca.as_deref(), cli.token_file.as_deref());
    let base = || reach::api_base(cli.api.as_deref(), &cli.config);
    let client = Client::new(&base(), &access());
    match &cli.cmd {
        Cmd::Daemon => unreachable!("main runs the daemon itself"),
        Cmd::Status { json } => match client.get::<StatusDto>("/v1/status") {
            Ok(s) if *json => {
                output::print_json(&s);
                ExitCode::SUCCESS
            }
            Ok(s) => {
                status::print_status(&s);
                ExitCode::SUCCESS
            }
            Err(e) => output::fail(&e),
        },
        Cmd::Lease {
            cmd: LeaseCmd::List { json },
        } => match client.get::<Vec<Lease>>("/v1/leases") {
            Ok(l) if *json => {
                output::print_json(&l);
                ExitCode::SUCCESS
            }
            Ok(l) => {
                lease::print_leases(&l);
                ExitCode::SUCCESS
            }
            Err(e) => output::fail(&e),
        },
        Cmd::Apply { file } => service::apply(&client, file),
        Cmd::Cluster { cmd } => cluster::run(&client, &|| Client::new(&base(), &access()), cmd),
        Cmd::Artifact { cmd } => artifact::run(&client, cmd),
        Cmd::Export => service::export(&client),
    }
}
