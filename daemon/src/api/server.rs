use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::dto::{ApplyDto, ErrorDto, MemberDto, StatusDto};
use crate::consensus::{Cluster, ClusterHandle, ProposeError};
use crate::metrics;
use crate::model::{Command, CommandResponse, Lease, ServiceConfig};

/// What the node reports about its service side (set by the transition driver).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStatus {
    pub serving: bool,
    pub vip_held: bool,
    pub warnings: Vec<String>,
}

#[derive(Clone)]
pub struct Api {
    pub cluster: Cluster,
    pub service: watch::Receiver<ServiceStatus>,
    pub vip: String,
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ErrorDto { error: msg.into(), leader_api: None })).into_response()
}

impl Api {
    fn status(&self) -> StatusDto {
        let m = self.cluster.raft.metrics().borrow_watched().clone();
        let svc = self.service.borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let mem = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = mem.voter_ids().collect();
        let members = mem
            .nodes()
            .map(|(id, n)| MemberDto {
                id: *id,
                raft: n.raft.clone(),
                api: n.api.clone(),
                role: if Some(*id) == m.current_leader {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                }
                .into(),
            })
            .collect();
        StatusDto {
            node_id: m.id,
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            members,
            vip_held: svc.vip_held,
            vip: self.vip.clone(),
            serving: svc.serving,
            warnings: svc.warnings,
        }
    }

    fn leader_api(&self) -> Option<String> {
        let m = self.cluster.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).map(|n| n.api.clone())
    }

    async fn propose(&self, cmd: Command) -> Result<u64, Response> {
        match self.cluster.propose(cmd).await {
            Ok(CommandResponse::Ok) => Ok(self.cluster.view().applied_index().unwrap_or(0)),
            Ok(CommandResponse::Rejected { reason }) => Err(err(StatusCode::CONFLICT, reason)),
            Err(ProposeError::NotLeader { .. }) => Err((
                StatusCode::MISDIRECTED_REQUEST,
                Json(ErrorDto { error: "not the leader".into(), leader_api: self.leader_api() }),
            )
                .into_response()),
            Err(ProposeError::Failed(m)) => Err(err(StatusCode::SERVICE_UNAVAILABLE, format!("not committed (no quorum?): {m}"))),
        }
    }
}

async fn status(AxState(api): AxState<Api>) -> Json<StatusDto> {
    Json(api.status())
}

async fn leases(AxState(api): AxState<Api>) -> Json<Vec<Lease>> {
    Json(api.cluster.read(|s| s.leases.values().cloned().collect()))
}

async fn get_config(AxState(api): AxState<Api>) -> Json<ServiceConfig> {
    Json(api.cluster.read(|s| s.config.clone()))
}

async fn put_config(AxState(api): AxState<Api>, Json(cfg): Json<ServiceConfig>) -> Response {
    if let Err(e) = crate::config::service::validate(&cfg) {
        return err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
    }
    let dto = ApplyDto { applied_index: 0, subnets: cfg.subnets.len(), reservations: cfg.reservations.len(), profiles: cfg.profiles.len() };
    match api.propose(Command::SetConfig { config: cfg }).await {
        Ok(idx) => {
            tracing::info!(target: "tandem::raft", index = idx, "service config applied");
            Json(ApplyDto { applied_index: idx, ..dto }).into_response()
        }
        Err(r) => r,
    }
}

async fn prometheus(AxState(api): AxState<Api>) -> Response {
    let _ = &api;
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics::get().encode(),
    )
        .into_response()
}

/// Serves the API on `listener` until `cancel`.
pub async fn serve(listener: tokio::net::TcpListener, api: Api, cancel: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/leases", get(leases))
        .route("/v1/config", get(get_config).put(put_config))
        .route("/metrics", get(prometheus))
        .with_state(api);
    tracing::info!(target: "tandem::api", addr = ?listener.local_addr().ok(), "admin API listening");
    axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await
}
