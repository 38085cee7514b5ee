//! The `tandem` command line. Exit codes (DESIGN.md section 4): 0 ok,
//! 1 the operation failed, 2 usage error (clap), 3 no quorum or no leader reachable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::client::{Access, Client, ClientError};
use crate::api::dto::{
    ApplyDto, ArtifactDto, HandoverDto, JoinDto, OkDto, StatusDto, TokenDto, TokenRequestDto,
};
use crate::model::{Lease, LeaseState, ServiceConfig};

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
    Daemon {
        /// Log lines as `text` or `json` (default: node.toml's `[log] format`, else text).
        #[arg(long, env = "TANDEM_LOG_FORMAT")]
        log_format: Option<crate::config::LogFormat>,
    },
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
    /// Several nodes' logs (text, JSON or journalctl output) as one story, by time, term and index.
    Logs {
        /// The log files, one per node, each in time order.
        #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
        merge: Vec<PathBuf>,
    },
    /// The console: every member's state, leases, rates, XDP, artifacts and events, each second.
    Top {
        /// Member APIs to watch (host:port,…) instead of those the node reports.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ArtifactCmd {
    /// Upload FILE to the leader; every node then fetches and serves it.
    Put {
        file: PathBuf,
        /// The name clients ask for (default: FILE's file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Every artifact with its size, sha256 and the nodes that hold it.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove the name; every node deletes the bytes no name refers to.
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Make this node (a cluster of one) join the cluster whose member API is ADDR.
    /// The node gives up its own leases and config: the cluster's replace them.
    Join {
        /// API address (host:port) of any member of the cluster to join.
        addr: String,
        /// The one-time join token that `tandem cluster token` printed on a member.
        #[arg(long)]
        token: Option<String>,
        /// Required when this node holds leases or a service config of its own.
        #[arg(long)]
        discard_local_state: bool,
    },
    /// Print a one-time join token (secret + CA fingerprint) for a new node.
    Token {
        /// How long the token stays valid, e.g. 30m, 1h, 2d (at most 7d).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Remove this node from its cluster.
    Leave,
    /// Remove NODE (by id) from the cluster.
    Remove { node: u64 },
    /// Hand leadership to NODE (default: the most caught-up follower), e.g. before a reboot.
    Handover { node: Option<u64> },
}

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    List {
        #[arg(long)]
        json: bool,
    },
}

fn api_base(cli: &Cli) -> String {
    if let Some(a) = &cli.api {
        return a.clone();
    }
    match crate::config::NodeConfig::load(&cli.config) {
        Ok(c) => c.api_listen.to_string(),
        Err(_) => "127.0.0.1:7481".into(),
    }
}

/// What the CLI trusts and presents: `--ca` or the node's CA file, and
/// `TANDEM_TOKEN`, `--token-file` or the node's admin token file.
fn access(cli: &Cli) -> Access {
    let data_dir = crate::config::NodeConfig::load(&cli.config)
        .ok()
        .map(|c| c.data_dir);
    let mut a = data_dir.as_deref().map(Access::local).unwrap_or_default();
    if let Some(ca) = &cli.ca {
        a.ca_pem = std::fs::read_to_string(ca).ok();
        if a.ca_pem.is_none() {
            eprintln!("tandem: cannot read the CA certificate {}", ca.display());
        }
    }
    if let Some(f) = &cli.token_file {
        a.token = crate::trust::token::read_admin_token(f)
            .map_err(|e| eprintln!("tandem: {e}"))
            .ok();
    }
    if let Ok(t) = std::env::var("TANDEM_TOKEN") {
        if !t.trim().is_empty() {
            a.token = Some(t.trim().to_owned());
        }
    }
    a
}

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("tandem: {e}");
    match e {
        ClientError::Unreachable { .. } | ClientError::NoLeader(_) => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
}

/// Runs an admin subcommand (everything but `daemon`).
#[must_use]
pub fn run_admin(cli: &Cli) -> ExitCode {
    let client = Client::new(&api_base(cli), &access(cli));
    match &cli.cmd {
        Cmd::Daemon { .. } => unreachable!("main runs the daemon itself"),
        Cmd::Logs { merge } => super::logs::run(merge),
        Cmd::Status { json } => match client.get::<StatusDto>("/v1/status") {
            Ok(s) if *json => {
                print_json(&s);
                ExitCode::SUCCESS
            }
            Ok(s) => {
                print_status(&s);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Cmd::Lease {
            cmd: LeaseCmd::List { json },
        } => match client.get::<Vec<Lease>>("/v1/leases") {
            Ok(l) if *json => {
                print_json(&l);
                ExitCode::SUCCESS
            }
            Ok(l) => {
                print_leases(&l);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Cmd::Apply { file } => {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("tandem: cannot read {}: {e}", file.display());
                    return ExitCode::from(1);
                }
            };
            let cfg = match crate::config::service::parse(&text) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tandem: {}: {e}", file.display());
                    return ExitCode::from(1);
                }
            };
            match client.put::<_, ApplyDto>("/v1/config", &cfg) {
                Ok(a) => {
                    println!(
                        "applied at index {}: {} subnet(s), {} reservation(s), {} profile(s)",
                        a.applied_index, a.subnets, a.reservations, a.profiles
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Cmd::Cluster { cmd } => cluster(cli, &client, cmd),
        Cmd::Artifact { cmd } => artifact(&client, cmd),
        Cmd::Top { nodes } => super::top::run(&api_base(cli), nodes, access(cli)),
        Cmd::Export => match client.get::<ServiceConfig>("/v1/config") {
            Ok(c) => {
                print!("{}", crate::config::service::to_toml(&c));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn cluster(cli: &Cli, client: &Client, cmd: &ClusterCmd) -> ExitCode {
    let r = match cmd {
        ClusterCmd::Token { ttl } => {
            let ttl = match crate::trust::token::parse_ttl(ttl) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("tandem: --ttl {e}");
                    return ExitCode::from(2);
                }
            };
            let req = TokenRequestDto {
                ttl_secs: Some(ttl.as_secs()),
            };
            return match client.post::<_, TokenDto>("/v1/cluster/tokens", &req) {
                Ok(t) => {
                    // The token alone on stdout, for scripts.
                    println!("{}", t.token);
                    eprintln!(
                        "tandem: one-time join token, valid for {}s; on the new node: tandem cluster join ADDR --token <token>",
                        ttl.as_secs()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            };
        }
        ClusterCmd::Join {
            addr,
            token,
            discard_local_state,
        } => {
            let Some(token) = token else {
                eprintln!(
                    "tandem: joining needs a join token: run `tandem cluster token` on a member of the \
                     cluster at {addr}, then `tandem cluster join {addr} --token <token>`"
                );
                return ExitCode::from(1);
            };
            eprintln!("tandem: this node gives up its own cluster state (leases, service config) and takes the cluster's");
            let r = client.post::<_, OkDto>(
                "/v1/cluster/join",
                &JoinDto {
                    addr: addr.clone(),
                    discard_local_state: *discard_local_state,
                    token: Some(token.clone()),
                },
            );
            if r.is_ok() {
                // Wait until the node reports itself a voter of the new cluster.
                // It now serves with the new cluster's certificate: trust its CA.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    let client = Client::new(&api_base(cli), &access(cli));
                    if let Ok(s) = client.get::<StatusDto>("/v1/status") {
                        if s.members.len() > 1
                            && s.members
                                .iter()
                                .any(|m| m.id == s.node_id && m.role != "learner")
                        {
                            println!(
                                "node {} joined: {} members, leader {}",
                                s.node_id,
                                s.members.len(),
                                s.leader.map_or("none".into(), |l| l.to_string())
                            );
                            return ExitCode::SUCCESS;
                        }
                    }
                }
                eprintln!("tandem: the node has not become a voter within 60 s; see `tandem status` and its log");
                return ExitCode::from(1);
            }
            r
        }
        ClusterCmd::Leave => client.post::<_, OkDto>("/v1/cluster/leave", &serde_json::json!({})),
        ClusterCmd::Remove { node } => {
            client.delete::<OkDto>(&format!("/v1/cluster/members/{node}"))
        }
        ClusterCmd::Handover { node } => {
            client.post::<_, OkDto>("/v1/cluster/handover", &HandoverDto { to: *node })
        }
    };
    match r {
        Ok(ok) => {
            println!("{}", ok.message);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn artifact(client: &Client, cmd: &ArtifactCmd) -> ExitCode {
    match cmd {
        ArtifactCmd::Put { file, name } => {
            let Some(name) = name
                .clone()
                .or_else(|| file.file_name()?.to_str().map(str::to_owned))
            else {
                eprintln!("tandem: {} has no file name; give --name", file.display());
                return ExitCode::from(2);
            };
            if let Err(e) = crate::model::validate_name(&name) {
                eprintln!("tandem: {e}");
                return ExitCode::from(2);
            }
            match client.put_file(&name, file) {
                Ok(a) => {
                    println!("{}  {}  {} bytes", a.name, a.sha256, a.size);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        ArtifactCmd::List { json } => match client.get::<Vec<ArtifactDto>>("/v1/artifacts") {
            Ok(l) if *json => {
                print_json(&l);
                ExitCode::SUCCESS
            }
            Ok(l) => {
                println!("{:<32} {:>12}  {:<64}  HOLDERS", "NAME", "SIZE", "SHA256");
                for a in &l {
                    let h: Vec<String> = a.holders.iter().map(u64::to_string).collect();
                    println!(
                        "{:<32} {:>12}  {}  {}",
                        a.name,
                        a.size,
                        a.sha256,
                        h.join(",")
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        ArtifactCmd::Rm { name } => {
            match client.delete::<OkDto>(&format!("/v1/artifacts/{name}")) {
                Ok(ok) => {
                    println!("{}", ok.message);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn print_status(s: &StatusDto) {
    println!(
        "node {}  role {}  term {}  leader {}",
        s.node_id,
        s.role,
        s.term,
        s.leader.map_or("none".into(), |l| l.to_string())
    );
    println!(
        "log {}  applied {}  vip {} {}  serving {}",
        s.last_log_index.map_or("-".into(), |i| i.to_string()),
        s.applied_index.map_or("-".into(), |i| i.to_string()),
        s.vip,
        if s.vip_held {
            "(held here)"
        } else {
            "(not here)"
        },
        if s.serving { "yes" } else { "no" }
    );
    println!(
        "{:<4} {:<22} {:<22} {:<9} {:>6} {:>9}",
        "ID", "RAFT", "API", "ROLE", "LAG", "LAST ACK"
    );
    for m in &s.members {
        let lag = m.lag_entries.map_or("-".into(), |l| l.to_string());
        let ack = m.silence_ms.map_or("-".into(), |ms| format!("{ms} ms"));
        println!(
            "{:<4} {:<22} {:<22} {:<9} {:>6} {:>9}",
            m.id, m.raft, m.api, m.role, lag, ack
        );
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
}

fn print_leases(ls: &[Lease]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{:<16} {:<18} {:<9} {:>8}  HOSTNAME",
        "IP", "MAC", "STATE", "EXPIRES"
    );
    for l in ls {
        let state = match l.state {
            LeaseState::Bound if l.is_active(now) => "bound",
            LeaseState::Bound => "expired",
            LeaseState::Declined => "declined",
        };
        let left = l.expires_at.saturating_sub(now);
        println!(
            "{:<16} {:<18} {:<9} {:>7}s  {}",
            l.ip,
            l.mac,
            state,
            left,
            l.hostname.as_deref().unwrap_or("")
        );
    }
}
