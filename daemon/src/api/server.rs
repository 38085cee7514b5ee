use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::auth::Auth;
use super::client::Access;
use super::dto::{
    ApplyDto, CaDto, EnrollDto, EnrolledDto, ErrorDto, HandoverDto, HealthDto, JoinDto,
    MemberAddDto, MemberDto, OkDto, StatusDto, TokenDto, TokenRequestDto,
};
use super::reply::error as err;
use crate::consensus::{
    Cluster, ClusterHandle, MembershipError, NodeInfo, ProposeError, RaftFatal, Role,
};
use crate::metrics;
use crate::model::{Command, CommandResponse, ServiceConfig};
use crate::trust::{ca, token, JoinToken, Material};

/// Connections at once; more are closed at accept.
pub const MAX_CONNS: usize = 64;
/// Time to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to send a request's headers, also between requests on a kept-alive connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A join token lives this long unless `--ttl` says otherwise.
const DEFAULT_TOKEN_TTL: u64 = 3600;

/// What the node reports about its service side (set by the transition driver).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStatus {
    pub serving: bool,
    pub vip_held: bool,
    pub warnings: Vec<String>,
    /// A responder that failed, while the node holds back from serving
    /// because of it (cleared once it serves again): unhealthy.
    pub responder_failed: Option<String>,
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
    /// This node's certificates (and the CA key, to sign joiners).
    pub material: Arc<Material>,
    /// The cluster CA and admin token, for node-to-node calls (leave).
    pub access: Access,
    /// Where enrollment writes the certificates of the cluster this node joins.
    pub data_dir: PathBuf,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        warnings.extend(self.service_lan_warning());
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

    /// The admin API should sit on a management network: warn while it
    /// listens inside the VIP's network or a subnet this cluster serves,
    /// where every booting machine can reach it (the token still guards it).
    fn service_lan_warning(&self) -> Option<String> {
        let Ok(SocketAddr::V4(a)) = self.me.api.parse::<SocketAddr>() else {
            return None;
        };
        let ip = *a.ip();
        let on_vip_net = self
            .vip
            .parse::<ipnet::Ipv4Net>()
            .is_ok_and(|n| n.trunc().contains(&ip));
        let served = self.cluster.read(|s| {
            s.config
                .subnets
                .iter()
                .find(|n| n.cidr.contains(&ip))
                .map(|n| n.cidr)
        });
        match (served, on_vip_net) {
            (Some(net), _) => Some(format!(
                "the admin API listens on {ip}, inside served subnet {net}: every booting machine \
                 can reach it; move api.listen to a management network"
            )),
            (None, true) => Some(format!(
                "the admin API listens on {ip}, on the service LAN of the VIP {}: move api.listen \
                 to a management network",
                self.vip
            )),
            (None, false) => None,
        }
    }

    fn not_leader(&self) -> Response {
        (
            StatusCode::MISDIRECTED_REQUEST,
            Json(ErrorDto {
                error: "not the leader".into(),
                leader_api: self.leader_api(),
                hint: None,
            }),
        )
            .into_response()
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
                    hint: None,
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

/// `GET /v1/health`: 200 or 503, the same [`HealthDto`] either way.
async fn health(AxState(api): AxState<Api>) -> Response {
    let c = &api.cluster;
    let st = c.status();
    let quorum = match st.role {
        Role::Leader => c.holds_lease(),
        Role::Follower | Role::Learner => st.leader.is_some(),
        Role::Candidate | Role::Shutdown => false,
    };
    let h = judge_health(st.id, st.role, quorum, c.fatal(), &api.service.borrow());
    let code = if h.problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}

/// The health verdict: unhealthy (problems listed) without quorum, after a
/// storage error or a panic stopped Raft, or while a failed responder keeps
/// the node out of service. Not serving is no problem in itself: only the
/// leader serves, and a fresh node serves nothing until a config is applied.
fn judge_health(
    node_id: u64,
    role: Role,
    quorum: bool,
    fatal: Option<RaftFatal>,
    svc: &ServiceStatus,
) -> HealthDto {
    let mut problems = Vec::new();
    match fatal {
        Some(RaftFatal::Storage(m)) => problems.push(format!("storage error: {m}")),
        Some(RaftFatal::Panicked) => problems.push("Raft's core task panicked".into()),
        None => {}
    }
    if !quorum {
        problems.push(match role {
            Role::Leader => "leader without quorum contact (fenced)".into(),
            _ => format!("no leader known (role {})", role.as_str()),
        });
    }
    problems.extend(svc.responder_failed.clone());
    HealthDto {
        node_id,
        role: role.as_str().into(),
        serving: svc.serving,
        quorum,
        problems,
    }
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
                hint: None,
            }),
        )
            .into_response(),
        MembershipError::UnknownNode(_) | MembershipError::NoTarget => {
            err(StatusCode::NOT_FOUND, e.to_string())
        }
        MembershipError::IsLeader(_) => err(StatusCode::CONFLICT, e.to_string()),
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
    let Some(tok) = j.token.as_deref() else {
        return err(
            StatusCode::BAD_REQUEST,
            format!(
                "joining needs a join token: run `tandem cluster token` on a member of the \
                 cluster at {addr}, then `tandem cluster join {addr} --token <token>`",
                addr = j.addr
            ),
        );
    };
    let join_token = match JoinToken::parse(tok) {
        Ok(t) => t,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let me = EnrollDto {
        id: api.cluster.id,
        raft: api.me.raft.clone(),
        api: api.me.api.clone(),
        secret: String::new(),
        csr_pem: String::new(),
    };
    let (addr, data_dir) = (j.addr.clone(), api.data_dir.clone());
    let r = tokio::task::spawn_blocking(move || {
        super::enroll::enroll(&addr, &join_token, me, &data_dir)
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(target: "tandem::trust", cluster = %j.addr, error = %e.message, "join refused");
            return err(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY),
                e.message,
            );
        }
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
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
    let access = api.access.clone();
    let r = tokio::task::spawn_blocking(move || {
        super::client::Client::new(&leader, &access)
            .delete::<OkDto>(&format!("/v1/cluster/members/{id}"))
    })
    .await;
    match r {
        Ok(Ok(ok)) => Json(ok).into_response(),
        Ok(Err(e)) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Open: the cluster CA certificate (public), for a joiner to pin.
async fn get_ca(AxState(api): AxState<Api>) -> Json<CaDto> {
    Json(CaDto {
        ca_pem: api.material.ca_pem.clone(),
    })
}

/// Admin, on the leader: a one-time join token, its secret's hash replicated.
async fn new_token(AxState(api): AxState<Api>, Json(req): Json<TokenRequestDto>) -> Response {
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL);
    if ttl == 0 || ttl > token::MAX_TTL.as_secs() {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("ttl_secs {ttl}: give 1 to {}", token::MAX_TTL.as_secs()),
        );
    }
    let t = match ca::fingerprint(&api.material.ca_pem).and_then(|fp| JoinToken::generate(&fp)) {
        Ok(t) => t,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let now = unix_now();
    let expires_at = now + ttl;
    let cmd = Command::AddJoinToken {
        hash: t.secret_hash(),
        expires_at,
        at: now,
    };
    match api.propose(cmd).await {
        Ok(idx) => {
            tracing::info!(target: "tandem::trust", index = idx, expires_at, "join token issued");
            Json(TokenDto {
                token: t.to_string(),
                expires_at,
            })
            .into_response()
        }
        Err(r) => r,
    }
}

/// Open, on the leader: a joiner trades a join token's secret and a CSR for
/// its certificate. The token is checked against this node's view first (no
/// Raft write for a guess), then consumed through Raft, the authority.
async fn enroll(AxState(api): AxState<Api>, Json(e): Json<EnrollDto>) -> Response {
    if !api.cluster.leadership().borrow().is_leader {
        return api.not_leader();
    }
    let refuse = |msg: String| {
        metrics::get().api_unauthorized.inc();
        tracing::warn!(target: "tandem::trust", node = e.id, reason = %msg, "join refused");
        err(StatusCode::FORBIDDEN, msg)
    };
    let hash = token::hash_secret(&e.secret);
    let now = unix_now();
    match api
        .cluster
        .read(|s| s.trust.join_tokens.get(&hash).copied())
    {
        None => {
            return refuse(
                "the join token is unknown or was already used; run `tandem cluster token` on a \
                 member for a new one"
                    .into(),
            )
        }
        Some(exp) if exp <= now => {
            return refuse("the join token has expired; run `tandem cluster token` again".into())
        }
        Some(_) => {}
    }
    let ips: Result<Vec<IpAddr>, _> = [&e.raft, &e.api]
        .iter()
        .map(|a| a.parse::<SocketAddr>().map(|a| a.ip()))
        .collect();
    let Ok(ips) = ips else {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "raft and api must be ip:port",
        );
    };
    if e.id == 0 {
        return err(StatusCode::UNPROCESSABLE_ENTITY, "node id 0 is reserved");
    }
    let Some(ca_key_pem) = api.material.ca_key_pem.clone() else {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node holds no CA key to sign with",
        );
    };
    let cert_pem = match ca::sign_csr(&api.material, &e.csr_pem, e.id, &ips) {
        Ok(c) => c,
        Err(x) => return err(StatusCode::BAD_REQUEST, x.to_string()),
    };
    let cmd = Command::UseJoinToken {
        hash,
        node: e.id,
        at: now,
    };
    match api.cluster.propose(cmd).await {
        Ok(CommandResponse::Ok) => {
            tracing::info!(target: "tandem::trust", node = e.id, raft = %e.raft, "join token used: certificate signed");
            Json(EnrolledDto {
                cert_pem,
                ca_pem: api.material.ca_pem.clone(),
                ca_key_pem,
                admin_token: api.access.token.clone().unwrap_or_default(),
            })
            .into_response()
        }
        Ok(CommandResponse::Rejected { reason }) => refuse(reason),
        Err(ProposeError::NotLeader { .. }) => api.not_leader(),
        Err(ProposeError::Failed(m)) => err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not committed (no quorum?): {m}"),
        ),
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

/// Serves the API over TLS (`tls`, the node certificate) on `listener`
/// until `cancel`, every route behind `auth` (see `api::auth`).
///
/// Bounds: [`MAX_CONNS`] connections, [`HANDSHAKE_TIMEOUT`], [`HEADER_TIMEOUT`]
/// per request head (axum's JSON extractor caps bodies at 2 MiB); accept
/// errors back off from 10 ms to 1 s.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    auth: Auth,
    tls: Arc<rustls::ServerConfig>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let artifacts = super::artifacts::routes(api.cluster.clone(), api.artifacts.clone());
    let events = super::events::routes(api.cluster.id);
    let leases = super::leases::routes(api.cluster.clone());
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/v1/config", get(get_config).put(put_config))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route("/v1/cluster/handover", post(handover))
        .route("/v1/cluster/join", post(join))
        .route("/v1/cluster/leave", post(leave))
        .route("/v1/cluster/tokens", post(new_token))
        .route("/v1/cluster/ca", get(get_ca))
        .route("/v1/cluster/enroll", post(enroll))
        .route("/metrics", get(prometheus))
        .with_state(api)
        .merge(artifacts)
        .merge(events)
        .merge(leases)
        // Last, so that it covers every route above (deny by default).
        .layer(axum::middleware::from_fn_with_state(
            auth,
            super::auth::require_token,
        ));
    tracing::info!(target: "tandem::api", addr = ?listener.local_addr().ok(), "admin API listening (HTTPS)");
    let acceptor = TlsAcceptor::from(tls);
    let conns = Arc::new(tokio::sync::Semaphore::new(MAX_CONNS));
    let mut incoming = crate::net::Acceptor::new(listener, "api");
    while let Some((stream, peer)) = incoming.next(&cancel).await {
        let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
            tracing::debug!(target: "tandem::api", %peer, "connection limit reached; closed");
            continue;
        };
        let (acceptor, app, cancel) = (acceptor.clone(), app.clone(), cancel.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(target: "tandem::api", %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(target: "tandem::api", %peer, error = %e, "connection ended");
                },
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> ServiceStatus {
        ServiceStatus {
            serving: true,
            vip_held: true,
            ..ServiceStatus::default()
        }
    }

    #[test]
    fn a_leader_with_quorum_and_a_follower_that_knows_it_are_healthy() {
        let h = judge_health(1, Role::Leader, true, None, &serving());
        assert_eq!(
            h,
            HealthDto {
                node_id: 1,
                role: "leader".into(),
                serving: true,
                quorum: true,
                problems: vec![],
            }
        );
        let f = judge_health(2, Role::Follower, true, None, &ServiceStatus::default());
        assert!(f.problems.is_empty() && !f.serving, "{f:?}");
    }

    #[test]
    fn no_quorum_storage_errors_and_failed_responders_are_unhealthy() {
        let fenced = judge_health(1, Role::Leader, false, None, &ServiceStatus::default());
        assert_eq!(fenced.problems, ["leader without quorum contact (fenced)"]);
        let lost = judge_health(3, Role::Candidate, false, None, &ServiceStatus::default());
        assert_eq!(lost.problems, ["no leader known (role candidate)"]);
        let disk = RaftFatal::Storage("writing /var/lib/tandem/raft.redb: No space left".into());
        let full = judge_health(
            1,
            Role::Shutdown,
            false,
            Some(disk),
            &ServiceStatus::default(),
        );
        assert_eq!(full.problems.len(), 2, "{full:?}");
        assert!(full.problems[0].starts_with("storage error: writing /var/lib/tandem"));
        let svc = ServiceStatus {
            responder_failed: Some("tftp responder failed: cannot bind".into()),
            ..ServiceStatus::default()
        };
        let h = judge_health(1, Role::Follower, true, None, &svc);
        assert_eq!(h.problems, ["tftp responder failed: cannot bind"]);
    }
}
