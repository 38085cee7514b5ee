//! # Layout
//! The composition root: store → consensus → {steering, services} → api,
//! wired in epochs, with shutdown owned here.
//!
//! - this file: [`run`] (start-up, the epoch loop, shutdown) and one
//!   [`epoch`]: open the store, start Raft and the API, then follow
//!   leadership with the transition driver until shutdown or a join.
//! - `transitions`: the leadership transition of DESIGN.md section 2
//!   (become leader in five checked steps; step down in reverse).
//! - `notify`: systemd's `READY=1`, `STATUS=`, `WATCHDOG=1` and `STOPPING=1`.
//! - `logging`: the log line formats (text, JSON), each line stamped with
//!   node id, term and index.
//! - `gauges`: gauges read from the replicated state (pool use, config applied).
//!
//! ```text
//!   run ─▶ stale VIP removed, XDP attached ─▶ epoch ─▶ epoch ─▶ …
//!   epoch: trust material ─▶ Store::open ─▶ Cluster::start ─▶ API ─▶ [join] ─▶ loop {
//!            leading with a fresh lease? ─▶ Transitions::try_lead (gates, then become_leader)
//!            lost leadership / lease?    ─▶ Transitions::step_down
//!            a responder ended?          ─▶ Transitions::responder_failed
//!            Raft stopped on its own?    ─▶ end the epoch with AppError::Storage }
//!          ─▶ step down, Cluster::shutdown, API stop
//! ```
//!
//! # Failures that stop the node
//! A storage error (disk full, I/O error) stops openraft's core for good;
//! the loop sees it ([`Cluster::fatal`]), steps down, counts it in
//! `tandem_storage_errors_total`, shows it in `tandem status` while it shuts
//! down, and [`run`] returns [`AppError::Storage`], which names the database
//! file (a panic of Raft's core: [`AppError::RaftPanicked`]): `main` logs it
//! and exits 1, so systemd restarts the node (once
//! space is freed, it recovers from what it had committed). No DHCP ACK is
//! sent for a lease that was not committed: an ACK waits for the commit and
//! apply, which a stopped core never reports. A panic while applying a
//! committed entry aborts the process (`store::state_machine`), so no
//! poisoned lock outlives it.

mod gauges;
pub mod logging;
mod notify;
mod transitions;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::auth::Auth;
use crate::api::client::{Access, ApiTransport, Client};
use crate::api::dto::{MemberAddDto, OkDto};
use crate::api::server::{self as api_server, Api, ServiceStatus};
use crate::config::NodeConfig;
use crate::consensus::{self, Cluster, JoinMarker, NodeStore, RaftFatal, LEASE_CHECK_MS};
use crate::metrics;
use crate::services::artifacts::{self, ArtifactConfig, Artifacts};
use crate::services::vip::Vip;
use crate::steering::Steering;
use transitions::Transitions;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("consensus: {0}")]
    Consensus(#[from] crate::consensus::ConsensusError),
    #[error("VIP: {0}")]
    Vip(#[from] crate::services::vip::VipError),
    #[error("XDP steering: {0}")]
    Steering(#[from] crate::steering::SteeringError),
    #[error("trust: {0}")]
    Trust(#[from] crate::trust::TrustError),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Raft stopped on a storage error: the node cannot go on.
    #[error("storage failed on {path}: {cause}; stopped (free space or fix the disk, then restart: committed state is kept)")]
    Storage { path: PathBuf, cause: String },
    #[error("the Raft core panicked; stopped (restart the node: committed state is kept)")]
    RaftPanicked,
    #[error("admin API on {addr}: {source}")]
    Api {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How one epoch of the node ended.
enum EpochEnd {
    Shutdown,
    /// Raft stopped on its own ([`Cluster::fatal`]).
    Fatal(RaftFatal),
    /// Discard this node's state and join the cluster at this API address.
    Join(String),
}

/// What woke the epoch loop (besides the ends of the epoch).
enum Event {
    Tick,
    Metrics,
    Exited(&'static str, String),
    Conflict(crate::services::vip::Conflict),
}

/// Runs the node until `shutdown` fires (SIGTERM/SIGINT in `main`).
///
/// The node runs in epochs: store → Raft → API → transition loop. `tandem
/// cluster join` ends an epoch; the next one starts from an empty store and
/// asks the other cluster's leader to add this node.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken) -> Result<(), AppError> {
    for dir in [&cfg.data_dir, &cfg.artifact_dir] {
        std::fs::create_dir_all(dir).map_err(|source| AppError::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    // A stale VIP must never survive a restart.
    let vip = Vip::new(&cfg.service.interface, cfg.service.vip);
    if vip.is_present()? {
        tracing::warn!(target: "tandem::transition", vip = %vip.addr(), "removing a stale VIP left from an earlier run");
    }
    vip.remove()?;
    vip.prepare_interface()?;
    let mut warnings = Vec::new();
    let steering = if cfg.service.xdp {
        let settings = crate::steering::Settings {
            http_port: cfg.service.http_port,
            limits: cfg.limits,
        };
        let s = Steering::attach(&cfg.service.interface, cfg.vip_addr(), &settings)?;
        tracing::info!(target: "tandem::steering", iface = %cfg.service.interface, mode = ?s.mode(), "XDP steering attached (role = drop)");
        Some(s)
    } else {
        warnings.push("XDP steering disabled by config (service.xdp = false)".into());
        None
    };
    let (status_tx, status_rx) = watch::channel(ServiceStatus::default());
    let mut tr = Transitions::new(cfg.clone(), vip, steering, status_tx, warnings);
    let mut notifier = notify::Notifier::from_env();
    loop {
        let joining = JoinMarker::new(&cfg.data_dir).pending();
        // Give up the single-node state: the cluster's replaces it.
        if joining.is_some() && NodeStore::discard(&cfg.data_dir)? {
            tracing::warn!(target: "tandem::raft", data_dir = %cfg.data_dir.display(), "discarded this node's own cluster state to join another");
        }
        let end = epoch(&cfg, &mut tr, &status_rx, joining, &shutdown, &mut notifier).await?;
        match end {
            EpochEnd::Shutdown => break,
            EpochEnd::Fatal(RaftFatal::Storage(cause)) => {
                return Err(AppError::Storage {
                    path: cfg.data_dir.join(crate::store::DB_FILE),
                    cause,
                });
            }
            EpochEnd::Fatal(RaftFatal::Panicked) => return Err(AppError::RaftPanicked),
            EpochEnd::Join(addr) => {
                let marker = JoinMarker::new(&cfg.data_dir);
                marker.write(&addr).map_err(|source| AppError::Dir {
                    path: marker.path().to_owned(),
                    source,
                })?;
            }
        }
    }
    tracing::info!(target: "tandem::transition", "stopped");
    Ok(())
}

/// This node's certificates and admin token. A fresh data dir founds a
/// cluster: its CA and admin token are made here; a joiner's were written by
/// its enrollment before this epoch. Warns when the API sits on the service LAN.
fn trust_material(
    cfg: &NodeConfig,
) -> Result<(std::sync::Arc<crate::trust::Material>, String), AppError> {
    let ips = [
        cfg.raft_listen.ip(),
        cfg.api_listen.ip(),
        std::net::IpAddr::from([127, 0, 0, 1]),
    ];
    let material = crate::trust::ca::ensure(&cfg.data_dir, cfg.node_id, &ips)?;
    let admin_token = crate::trust::token::ensure_admin_token(&cfg.data_dir)?;
    if let std::net::IpAddr::V4(a) = cfg.api_listen.ip() {
        if cfg.service.vip.trunc().contains(&a) {
            tracing::warn!(target: "tandem::api", addr = %cfg.api_listen, vip = %cfg.service.vip, "the admin API listens on the service LAN, where every booting machine can reach it; move api.listen to a management network");
        }
    }
    Ok((std::sync::Arc::new(material), admin_token))
}

/// Binds `api.listen` and serves the API over TLS with the node certificate.
async fn start_api(
    cfg: &NodeConfig,
    api: Api,
    auth: Auth,
    material: &crate::trust::Material,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, AppError> {
    let tls = crate::trust::tls::api_server(material)?;
    let addr = cfg.api_listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Api { addr, source })?;
    Ok(tokio::spawn(api_server::serve(
        listener, api, auth, tls, cancel,
    )))
}

async fn epoch(
    cfg: &NodeConfig,
    tr: &mut Transitions,
    status_rx: &watch::Receiver<ServiceStatus>,
    joining: Option<String>,
    shutdown: &CancellationToken,
    notifier: &mut notify::Notifier,
) -> Result<EpochEnd, AppError> {
    let (material, admin_token) = trust_material(cfg)?;
    let store = NodeStore::open(&cfg.data_dir)?;
    let raft_cancel = CancellationToken::new();
    let cluster = Cluster::start(
        cfg,
        &store,
        &material,
        joining.is_none(),
        raft_cancel.clone(),
    )
    .await?;
    let access = Access {
        ca_pem: Some(material.ca_pem.clone()),
        token: Some(admin_token.clone()),
        insecure: false,
    };
    // Stopped before Raft is, so a core shut down on purpose is not reported as hung.
    let watchdog_cancel = raft_cancel.child_token();
    notifier.watch(&cluster, watchdog_cancel.clone());
    let arts = start_artifacts(cfg, &store, &cluster, &access, &raft_cancel)?;
    tokio::spawn(gauges::run(store.view(), raft_cancel.clone()));
    tr.artifacts = Some(arts.clone());
    let (join_tx, mut join_rx) = mpsc::channel(1);
    let api = Api {
        cluster: cluster.clone(),
        service: status_rx.clone(),
        vip: cfg.service.vip.to_string(),
        me: Cluster::me(cfg),
        join: join_tx,
        artifacts: arts,
        material: std::sync::Arc::clone(&material),
        access: access.clone(),
        data_dir: cfg.data_dir.clone(),
    };
    let auth = Auth::new(&admin_token, &cfg.api_open);
    let api_cancel = CancellationToken::new();
    let api_task = start_api(cfg, api, auth, &material, api_cancel.clone()).await?;
    if let Some(addr) = joining.clone() {
        tokio::spawn(consensus::join(
            cluster.clone(),
            JoinMarker::new(&cfg.data_dir),
            addr,
            join_request(cfg, access),
            raft_cancel.clone(),
        ));
    }
    tr.publish();

    let mut leadership = cluster.leadership();
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
    let mut lease_tick = tokio::time::interval(Duration::from_millis(LEASE_CHECK_MS));
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_term = None;
    let end = loop {
        // Serve only while leading with a fresh leader lease (see LEADER_LEASE_MS).
        let l = leadership.borrow_and_update().clone();
        if last_term != Some(l.term) {
            last_term = Some(l.term);
            tr.release_stray_vip(l.term, cluster.last_log_index());
        }
        if let Some(cause) = cluster.fatal() {
            break EpochEnd::Fatal(cause);
        }
        let lease = cluster.holds_lease();
        if l.is_leader && lease && tr.serving.is_none() {
            tr.try_lead(&cluster, &l).await;
            // Leadership prefers completeness: once per won term.
            tokio::spawn(artifacts::prefer_complete(cluster.clone(), l.term));
        } else if tr.serving.is_some() && !l.is_leader {
            tr.step_down(&cluster, "lost leadership").await;
        } else if tr.serving.is_some() && !lease {
            tr.step_down(&cluster, "leader lease expired: no quorum contact")
                .await;
        }
        notify_state(
            notifier,
            &cluster,
            &l,
            tr.serving.is_some(),
            joining.as_deref(),
        );
        let serving = tr.serving.as_mut();
        let ev = tokio::select! {
            () = shutdown.cancelled() => break EpochEnd::Shutdown,
            Some(addr) = join_rx.recv() => break EpochEnd::Join(addr),
            // Closed: Raft's core is gone; `fatal` above tells why next round.
            r = leadership.changed() => if r.is_err() {
                match cluster.fatal() {
                    Some(cause) => break EpochEnd::Fatal(cause),
                    None => break EpochEnd::Shutdown,
                }
            } else { Event::Tick },
            (name, cause) = async move {
                match serving {
                    Some(s) => s.exited().await,
                    None => std::future::pending().await,
                }
            } => Event::Exited(name, cause),
            Some(c) = tr.conflict_rx.recv() => Event::Conflict(c),
            _ = lease_tick.tick() => Event::Tick,
            _ = metrics_tick.tick() => Event::Metrics,
        };
        tr.handle(&cluster, ev).await;
    };
    let why = match &end {
        EpochEnd::Shutdown => {
            notifier.stopping("shutdown");
            "shutdown"
        }
        EpochEnd::Fatal(RaftFatal::Storage(cause)) => {
            tr.storage_failed(cfg, cause);
            "storage failure"
        }
        EpochEnd::Fatal(RaftFatal::Panicked) => "the Raft core panicked",
        EpochEnd::Join(_) => "joining another cluster",
    };
    tr.step_down(&cluster, why).await;
    watchdog_cancel.cancel();
    cluster.shutdown().await;
    raft_cancel.cancel();
    api_cancel.cancel();
    let _ = api_task.await;
    Ok(end)
}

/// Tells systemd the node's state line, and that it has started once it
/// serves, follows a leader or waits for its first service config.
fn notify_state(
    notifier: &mut notify::Notifier,
    cluster: &Cluster,
    l: &consensus::Leadership,
    serving: bool,
    joining: Option<&str>,
) {
    let lease = l.is_leader && cluster.holds_lease();
    let state = notify::NodeState {
        id: cluster.id,
        leadership: l,
        lease,
        fenced: notifier.fenced(l.term, l.is_leader && !lease),
        serving,
        // Read only where it decides the line: a leader with a lease that does not serve.
        configured: !(l.is_leader && lease && !serving)
            || cluster
                .view()
                .read(|s| s.config != crate::model::ServiceConfig::default()),
        joining: joining.filter(|_| !cluster.is_member()),
    };
    let (line, ready) = notify::state_line(&state);
    notifier.update(&line, ready);
}

impl Transitions {
    /// At each election, a node that does not serve holds no VIP.
    fn release_stray_vip(&self, term: u64, index: u64) {
        if self.serving.is_none() && self.vip.is_present().unwrap_or(false) {
            tracing::warn!(target: "tandem::transition", term, index, "releasing a VIP held while not serving");
            if let Err(e) = self.vip.remove() {
                tracing::error!(target: "tandem::transition", error = %e, "VIP removal failed");
            }
        }
    }

    /// What the epoch loop does with one [`Event`].
    async fn handle(&mut self, cluster: &Cluster, ev: Event) {
        match ev {
            Event::Tick => {}
            Event::Exited(name, cause) => self.responder_failed(cluster, name, &cause).await,
            Event::Conflict(c) => self.conflict_seen(c),
            Event::Metrics => {
                if let Some(s) = self.steering.as_ref() {
                    if let Err(e) = s.export_counters() {
                        tracing::debug!(target: "tandem::steering", error = %e, "XDP counters not read");
                    }
                }
            }
        }
    }

    /// Raft stopped on a storage error: count, log and show it (status) for
    /// as long as the node is still up to show it.
    fn storage_failed(&mut self, cfg: &NodeConfig, cause: &str) {
        metrics::get().storage_errors.inc();
        let db = cfg.data_dir.join(crate::store::DB_FILE);
        tracing::error!(target: "tandem::raft", db = %db.display(), cause, "Raft stopped on a storage error");
        metrics::events::record(
            metrics::events::Kind::Storage,
            format!("Raft stopped on a storage error: {cause}"),
        );
        self.problem(
            "storage",
            Some(format!(
                "storage failed on {}: {cause}; stopping",
                db.display()
            )),
        );
    }
}

/// Opens the artifact store and starts its replication task (every node,
/// until `cancel`; its peers are reached through the admin API).
fn start_artifacts(
    cfg: &NodeConfig,
    store: &NodeStore,
    cluster: &Cluster,
    access: &Access,
    cancel: &CancellationToken,
) -> Result<Artifacts, AppError> {
    let limits = ArtifactConfig {
        max_bytes: cfg.artifact_max_bytes,
        verify_every: cfg.artifact_verify_every,
    };
    let arts = Artifacts::open(
        &cfg.data_dir,
        &cfg.artifact_dir,
        cfg.node_id,
        limits,
        store.view(),
    )
    .map_err(|source| AppError::Dir {
        path: cfg.data_dir.join("blobs"),
        source,
    })?;
    tokio::spawn(artifacts::run(
        arts.clone(),
        cluster.clone(),
        ApiTransport {
            access: access.clone(),
        },
        cancel.clone(),
    ));
    Ok(arts)
}

/// How a joining node asks a cluster to add it: `POST /v1/cluster/members`
/// on any member's admin API (followers redirect to the leader). Consensus
/// runs the retry loop ([`consensus::join`]); the transport is the API's.
fn join_request(
    cfg: &NodeConfig,
    access: Access,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
{
    let me = Cluster::me(cfg);
    let body = MemberAddDto {
        id: cfg.node_id,
        raft: me.raft,
        api: me.api,
    };
    move |addr: String| {
        let body = body.clone();
        let access = access.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                Client::new(&addr, &access).post::<_, OkDto>("/v1/cluster/members", &body)
            })
            .await
            .map_err(|e| format!("join task failed: {e}"))?
            .map(|ok| ok.message)
            .map_err(|e| e.to_string())
        })
    }
}
