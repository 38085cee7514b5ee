//! `tandem cluster`: membership, leadership and join tokens.

use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::Serialize;

use super::output::{CliError, Done, Out};
use super::reach::{Kind, Reach};
use crate::api::client::Client;
use crate::api::dto::{HandoverDto, JoinDto, OkDto, StatusDto, TokenDto, TokenRequestDto};

/// How long `cluster join` waits for the node to become a voter.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

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
        #[arg(long, default_value = "1h", value_parser = crate::trust::token::parse_ttl)]
        ttl: Duration,
    },
    /// Remove this node from its cluster.
    Leave,
    /// Remove NODE (by id) from the cluster.
    Remove { node: u64 },
    /// Hand leadership to NODE (default: the most caught-up follower), e.g. before a reboot.
    Handover { node: Option<u64> },
}

/// What `cluster join --json` prints once the node is a voter.
#[derive(Serialize)]
struct JoinedOut {
    message: String,
    node_id: u64,
    members: usize,
    leader: Option<u64>,
}

/// Runs `tandem cluster CMD`. Join and leave concern the node itself (the
/// first node named); the rest go to the leader. A join then polls
/// `reconnect()` (a fresh client: the node serves with the new cluster's
/// certificate).
pub fn run(r: &Reach, out: Out, reconnect: &dyn Fn() -> Client, cmd: &ClusterCmd) -> Done {
    let ok: OkDto = match cmd {
        ClusterCmd::Token { ttl } => {
            let req = TokenRequestDto {
                ttl_secs: Some(ttl.as_secs()),
            };
            let t: TokenDto = r.call(Kind::Leader, |c| c.post("/v1/cluster/tokens", &req))?;
            // Text: the token alone on stdout, for scripts.
            out.show(&t, |t| println!("{}", t.token));
            if !out.json {
                eprintln!(
                    "tandem: one-time join token, valid for {}s; on the new node: tandem cluster join ADDR --token <token>",
                    ttl.as_secs()
                );
            }
            return Ok(());
        }
        ClusterCmd::Join {
            addr,
            token,
            discard_local_state,
        } => {
            return join(
                r,
                out,
                reconnect,
                addr,
                token.as_deref(),
                *discard_local_state,
            )
        }
        ClusterCmd::Leave => r.call(Kind::Any, |c| {
            c.post("/v1/cluster/leave", &serde_json::json!({}))
        })?,
        ClusterCmd::Remove { node } => {
            let path = format!("/v1/cluster/members/{node}");
            r.call(Kind::Leader, |c| c.delete(&path))?
        }
        ClusterCmd::Handover { node } => r.call(Kind::Leader, |c| {
            c.post("/v1/cluster/handover", &HandoverDto { to: *node })
        })?,
    };
    out.show(&ok, |ok| println!("{}", ok.message));
    Ok(())
}

fn join(
    r: &Reach,
    out: Out,
    reconnect: &dyn Fn() -> Client,
    addr: &str,
    token: Option<&str>,
    discard_local_state: bool,
) -> Done {
    let Some(token) = token else {
        return Err(CliError::failed(
            "joining needs a join token",
            Some(&format!(
                "run `tandem cluster token` on a member of the cluster at {addr}, then \
                 `tandem cluster join {addr} --token <token>`"
            )),
        ));
    };
    if !out.json {
        eprintln!("tandem: this node gives up its own cluster state (leases, service config) and takes the cluster's");
    }
    let req = JoinDto {
        addr: addr.to_owned(),
        discard_local_state,
        token: Some(token.to_owned()),
    };
    let _: OkDto = Client::new(r.first(), r.access()).post("/v1/cluster/join", &req)?;
    // Wait until the node reports itself a voter of the new cluster.
    // It now serves with the new cluster's certificate: trust its CA.
    let deadline = Instant::now() + JOIN_TIMEOUT;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(s) = reconnect().get::<StatusDto>("/v1/status") {
            if s.members.len() > 1
                && s.members
                    .iter()
                    .any(|m| m.id == s.node_id && m.role != "learner")
            {
                let j = JoinedOut {
                    message: format!(
                        "node {} joined: {} members, leader {}",
                        s.node_id,
                        s.members.len(),
                        s.leader.map_or("none".into(), |l| l.to_string())
                    ),
                    node_id: s.node_id,
                    members: s.members.len(),
                    leader: s.leader,
                };
                out.show(&j, |j| println!("{}", j.message));
                return Ok(());
            }
        }
    }
    Err(CliError::failed(
        format!(
            "the node has not become a voter within {} s",
            JOIN_TIMEOUT.as_secs()
        ),
        Some("see `tandem status` on it and its log"),
    ))
}
