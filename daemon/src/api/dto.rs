use serde::{Deserialize, Serialize};

/// One member as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberDto {
    pub id: u64,
    pub raft: String,
    pub api: String,
    /// "leader", "follower", "learner" or "unknown".
    pub role: String,
    /// Only on the leader's status: entries this member lags behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_entries: Option<u64>,
    /// Only on the leader's status: milliseconds since this member last acked
    /// a heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_ms: Option<u64>,
}

/// `tandem status --json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusDto {
    pub node_id: u64,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberDto>,
    /// Whether this node holds the VIP now.
    pub vip_held: bool,
    pub vip: String,
    /// Whether the responders (DHCP, TFTP) run on this node.
    pub serving: bool,
    /// Human-readable problems (e.g. XDP not attached, VIP step failed).
    pub warnings: Vec<String>,
}

/// An error body: every non-2xx answer carries one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDto {
    pub error: String,
    /// For writes sent to a follower: the leader's API address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_api: Option<String>,
}

/// Result of `PUT /v1/config`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyDto {
    pub applied_index: u64,
    pub subnets: usize,
    pub reservations: usize,
    pub profiles: usize,
}

/// `POST /v1/cluster/members`: add a node (sent to the leader by a joining node).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberAddDto {
    pub id: u64,
    pub raft: String,
    pub api: String,
}

/// `POST /v1/cluster/join`: ask this node to join the cluster at `addr`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinDto {
    /// API address (`host:port`) of any member of the cluster to join.
    pub addr: String,
    /// Consent to discard this node's own leases and service config.
    #[serde(default)]
    pub discard_local_state: bool,
}

/// `POST /v1/cluster/handover`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HandoverDto {
    #[serde(default)]
    pub to: Option<u64>,
}

/// A plain acknowledgement with a human-readable message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OkDto {
    pub message: String,
}

/// One artifact of `GET /v1/artifacts` (`tandem artifact list --json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArtifactDto {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// Unix seconds when the name was put.
    pub added_at: u64,
    /// Nodes that hold a verified copy.
    pub holders: Vec<u64>,
}
