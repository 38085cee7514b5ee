use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::dto::{
    ApplyDto, ErrorDto, HandoverDto, JoinDto, MemberAddDto, MemberDto, OkDto, StatusDto,
};
use crate::consensus::{Cluster, ClusterHandle, MembershipError, NodeInfo, ProposeError};
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
    /// This node as the cluster records it.
    pub me: NodeInfo,
    /// Asks the app to discard this node's state and join the cluster at the
    /// given API address.
    pub join: mpsc::Sender<String>,
    /// The artifact store (routes in `api::artifacts`).
    pub artifacts: crate::services::artifacts::Artifacts,
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (
        code,
        Json(ErrorDto {
            error: msg.into(),
            leader_api: None,
        }),
    )
        .into_response()
}

impl Api {
    fn status(&self) -> StatusDto {
        let c = self.cluster.status();
        let svc = self.service.borrow().clone();
        let members = c
            .members
            .into_iter()
            .map(|m| MemberDto {
                id: m.id,
                raft: m.info.raft,
                api: m.info.api,
                role: m.role.as_str().into(),
                lag_entries: m.lag_entries,
                silence_ms: m
                    .silence
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect();
        // The service side's warnings first, then the cluster's.
        let mut warnings = svc.warnings;
        warnings.extend(c.warnings);
        StatusDto {
            node_id: c.id,
            role: c.role.as_str().into(),
            term: c.term,
            leader: c.leader,
            last_log_index: c.last_log_index,
            applied_index: c.applied_index,
            members,
            vip_held: svc.vip_held,
            vip: self.vip.clone(),
            serving: svc.serving,
            warnings,
        }
    }

    fn leader_api(&self) -> Option<String> {
        self.cluster.leader_api()
    }

    async fn propose(&self, cmd: Command) -> Result<u64, Response> {
        match self.cluster.propose(cmd).await {
            Ok(CommandResponse::Ok) => Ok(self.cluster.view().applied_index().unwrap_or(0)),
            Ok(CommandResponse::Rejected { reason }) => Err(err(StatusCode::CONFLICT, reason)),
            Err(ProposeError::NotLeader { .. }) => Err((
                StatusCode::MISDIRECTED_REQUEST,
                Json(ErrorDto {
                    error: "not the leader".into(),
                    leader_api: self.leader_api(),
                }),
            )
                .into_response()),
            Err(ProposeError::Failed(m)) => Err(err(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not committed (no quorum?): {m}"),
            )),
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
    if let Some(m) = api.cluster.read(|s| missing_artifact(s, &cfg)) {
        return err(StatusCode::UNPROCESSABLE_ENTITY, m);
    }
    let dto = ApplyDto {
        applied_index: 0,
        subnets: cfg.subnets.len(),
        reservations: cfg.reservations.len(),
        profiles: cfg.profiles.len(),
    };
    match api.propose(Command::SetConfig { config: cfg }).await {
        Ok(idx) => {
            tracing::info!(target: "tandem::raft", index = idx, "service config applied");
            Json(ApplyDto {
                applied_index: idx,
                ..dto
            })
            .into_response()
        }
        Err(r) => r,
    }
}

/// The first profile file that names an artifact no node holds, as the
/// refusal `apply` answers with.
fn missing_artifact(s: &crate::model::State, cfg: &ServiceConfig) -> Option<String> {
    cfg.profiles.iter().find_map(|p| {
        crate::model::profile_artifacts(p)
            .into_iter()
            .find(|n| s.holders_of(n).is_none_or(std::collections::BTreeSet::is_empty))
            .map(|n| {
                format!(
                    "profile {:?} names artifact {n:?}, which no node holds; `tandem artifact put FILE --name {n}` first",
                    p.name
                )
            })
    })
}

fn membership_err(api: &Api, e: MembershipError) -> Response {
    match e {
        MembershipError::NotLeader { .. } => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(ErrorDto {
                error: "not the leader".into(),
                leader_api: api.leader_api(),
            }),
        )
            .into_response(),
        MembershipError::UnknownNode(_) | MembershipError::NoTarget => {
            err(StatusCode::NOT_FOUND, e.to_string())
        }
        MembershipError::Raft(m) => err(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

async fn add_member(AxState(api): AxState<Api>, Json(m): Json<MemberAddDto>) -> Response {
    let info = NodeInfo {
        raft: m.raft,
        api: m.api,
    };
    match api.cluster.add_member(m.id, info).await {
        Ok(()) => Json(OkDto {
            message: format!("node {} is a voter", m.id),
        })
        .into_response(),
        Err(e) => membership_err(&api, e),
    }
}

async fn remove_member(AxState(api): AxState<Api>, Path(id): Path<u64>) -> Response {
    match api.cluster.remove_member(id).await {
        Ok(()) => Json(OkDto {
            message: format!("node {id} removed"),
        })
        .into_response(),
        Err(e) => membership_err(&api, e),
    }
}

async fn handover(AxState(api): AxState<Api>, Json(h): Json<HandoverDto>) -> Response {
    match api.cluster.handover(h.to).await {
        Ok(to) => Json(OkDto {
            message: format!("leadership handed to node {to}"),
        })
        .into_response(),
        Err(e) => membership_err(&api, e),
    }
}

/// Local: this node discards its own state and joins another cluster.
async fn join(AxState(api): AxState<Api>, Json(j): Json<JoinDto>) -> Response {
    let (leases, subnets) = api
        .cluster
        .read(|s| (s.leases.len(), s.config.subnets.len()));
    if (leases > 0 || subnets > 0) && !j.discard_local_state {
        return err(
            StatusCode::CONFLICT,
            format!(
                "this node holds {leases} lease(s) and {subnets} subnet(s) of its own; joining discards them                  (the cluster's state replaces them). Re-run with --discard-local-state to go ahead"
            ),
        );
    }
    if api.cluster.voters().len() > 1 {
        return err(
            StatusCode::CONFLICT,
            "this node is already in a cluster of several nodes; `tandem cluster leave` first",
        );
    }
    if api.join.send(j.addr.clone()).await.is_err() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    Json(OkDto {
        message: format!(
            "node {} discards its single-node state and joins the cluster at {}",
            api.cluster.id, j.addr
        ),
    })
    .into_response()
}

/// Local: ask the leader to remove this node.
async fn leave(AxState(api): AxState<Api>) -> Response {
    let Some(leader) = api.leader_api() else {
        return err(StatusCode::SERVICE_UNAVAILABLE, "no leader known");
    };
    let id = api.cluster.id;
    let r = tokio::task::spawn_blocking(move || {
        super::client::Client::new(&leader).delete::<OkDto>(&format!("/v1/cluster/members/{id}"))
    })
    .await;
    match r {
        Ok(Ok(ok)) => Json(ok).into_response(),
        Ok(Err(e)) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn prometheus(AxState(api): AxState<Api>) -> Response {
    let _ = &api;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::get().encode(),
    )
        .into_response()
}

/// Serves the API on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let artifacts = super::artifacts::routes(api.cluster.clone(), api.artifacts.clone());
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/leases", get(leases))
        .route("/v1/config", get(get_config).put(put_config))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route("/v1/cluster/handover", post(handover))
        .route("/v1/cluster/join", post(join))
        .route("/v1/cluster/leave", post(leave))
        .route("/metrics", get(prometheus))
        .with_state(api)
        .merge(artifacts);
    tracing::info!(target: "tandem::api", addr = ?listener.local_addr().ok(), "admin API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
