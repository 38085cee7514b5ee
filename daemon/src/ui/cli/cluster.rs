//! `tandem cluster`: membership, leadership and join tokens.

use std::process::ExitCode;

use clap::Subcommand;

use super::output::fail;
use crate::api::client::Client;
use crate::api::dto::{HandoverDto, JoinDto, OkDto, StatusDto, TokenDto, TokenRequestDto};

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

/// Runs `tandem cluster CMD` through `client`; a join then polls `reconnect()`
/// (a fresh client: the node serves with the new cluster's certificate).
pub fn run(client: &Client, reconnect: &dyn Fn() -> Client, cmd: &ClusterCmd) -> ExitCode {
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
                    let client = reconnect();
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
