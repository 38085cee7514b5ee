use serde::{Deserialize, Serialize};

use crate::model::{Lease, LeaseState};

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

/// `GET /v1/health` (open by default, `api.open`): the same body with 200
/// when the node is healthy and 503 when it is not, for a load balancer or
/// a supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthDto {
    pub node_id: u64,
    /// As in [`StatusDto::role`].
    pub role: String,
    /// Whether the responders run on this node (only the leader serves, so
    /// a healthy follower says false).
    pub serving: bool,
    /// A leader: a quorum acked a heartbeat within the leader lease (or it
    /// is the only voter). A follower or learner: it knows a leader.
    pub quorum: bool,
    /// Why the node is not healthy; empty with 200.
    pub problems: Vec<String>,
}

/// An error body: every non-2xx answer carries one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDto {
    pub error: String,
    /// What to do about it, when the server knows (e.g. the fix of a
    /// config error); the CLI shows it as `hint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
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
    /// The join token from `tandem cluster token` on a member (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `GET /v1/cluster/ca` (open): the cluster CA certificate. A joiner checks
/// its sha256 against the fingerprint in its join token before trusting it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaDto {
    pub ca_pem: String,
}

/// `POST /v1/cluster/tokens` (admin): a new one-time join token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TokenRequestDto {
    /// Seconds until the token expires (default 1 h, at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// The answer to [`TokenRequestDto`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenDto {
    /// `tdm1.<secret>.<CA fingerprint>`: what `tandem cluster join --token` takes.
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// `POST /v1/cluster/enroll` (open; authenticated by the join token's
/// secret): a joiner asks the leader to sign its certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollDto {
    pub id: u64,
    /// The joiner's Raft and API addresses: its certificate's SANs.
    pub raft: String,
    pub api: String,
    /// The join token's secret (the leader compares its hash).
    pub secret: String,
    /// PEM of the joiner's CSR (only its public key is used).
    pub csr_pem: String,
}

/// The answer to [`EnrollDto`]: what makes the joiner a member.
#[derive(Clone, Serialize, Deserialize)]
pub struct EnrolledDto {
    pub cert_pem: String,
    pub ca_pem: String,
    /// So that any member can sign later joiners (see `trust`).
    pub ca_key_pem: String,
    /// The cluster's admin token, so that the CLI works on every member.
    pub admin_token: String,
}

impl std::fmt::Debug for EnrolledDto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrolledDto { .. }")
    }
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

/// One event of `GET /v1/events` (see `metrics::events`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDto {
    /// 1, 2, 3 … per process run ([`EventsDto::boot_ms`]).
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// "election", "transition", "vip-conflict", "peer-lost", "peer-found" or "storage".
    pub kind: String,
    pub message: String,
}

/// `GET /v1/events?since=SEQ` (admin): this node's events after `since`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsDto {
    pub node_id: u64,
    /// When this process started recording (unix ms): a change means a
    /// restart, and `seq` began again at 1.
    pub boot_ms: u64,
    /// The last sequence number recorded: the next `since`.
    pub last_seq: u64,
    /// Oldest first; at most the ring's capacity (256).
    pub events: Vec<EventDto>,
}

/// One lease as `GET /v1/leases` and `GET /v1/leases/{mac_or_ip}` answer it
/// (`tandem lease list|show|release --json`): the replicated record and what
/// it means now, by the answering node's clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDto {
    #[serde(flatten)]
    pub lease: Lease,
    /// "bound" (live), "expired" (released, or its time ran out: the record
    /// stays so the client gets the same address back) or "declined".
    pub status: String,
    /// Seconds until `expires_at`; 0 once it has passed.
    pub expires_in: u64,
}

impl LeaseDto {
    #[must_use]
    pub fn at(lease: Lease, now: u64) -> LeaseDto {
        let status = match lease.state {
            LeaseState::Bound if lease.is_active(now) => "bound",
            LeaseState::Bound => "expired",
            LeaseState::Declined => "declined",
        };
        LeaseDto {
            status: status.into(),
            expires_in: lease.expires_at.saturating_sub(now),
            lease,
        }
    }
}
