//! The composition root: store → consensus → {steering, services} → api,
//! and the one leadership transition of DESIGN.md section 2.
//!
//! ```text
//!   leadership watch ──▶ becomes leader ──▶ 1 apply to commit index (ensure_linearizable)
//!                                          2 XDP role map := leader
//!                                          3 VIP add + gratuitous ARPs
//!                                          4 DHCP + TFTP responders start
//!                                          5 status: serving
//!                    └─▶ loses leadership / shutdown ──▶ the same steps in reverse
//! ```
//! Every step is logged with term and index and checked; the whole transition
//! is timed into `tandem_transition_seconds{direction}`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use openraft::ReadPolicy;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::client::Client;
use crate::api::dto::{MemberAddDto, OkDto};
use crate::api::server::{self as api_server, Api, ServiceStatus};
use crate::config::NodeConfig;
use crate::consensus::{Cluster, Leadership, LEASE_CHECK_MS};
use crate::metrics::{self, DirectionLabel};
use crate::services::dhcp::server::{self as dhcp, DhcpConfig};
use crate::services::tftp::{self, TftpConfig};
use crate::services::vip::Vip;
use crate::steering::{Role, Steering};
use crate::store::Store;

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
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin API on {addr}: {source}")]
    Api {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The responders of one term of leadership.
struct Serving {
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// Drives the node's service side from leadership.
struct Transitions {
    cfg: NodeConfig,
    vip: Vip,
    steering: Option<Steering>,
    serving: Option<Serving>,
    status: watch::Sender<ServiceStatus>,
    warnings: Vec<String>,
}

impl Transitions {
    fn publish(&self) {
        let st = ServiceStatus {
            serving: self.serving.is_some(),
            vip_held: self.vip.is_present().unwrap_or(false),
            warnings: self.warnings.clone(),
        };
        metrics::get().serving.set(i64::from(st.serving));
        self.status.send_if_modified(|cur| {
            let changed = *cur != st;
            *cur = st;
            changed
        });
    }

    /// Steps 1–5. On any failure the node steps back down, so it never
    /// serves half-way (a VIP without responders, or responders without XDP).
    async fn become_leader(&mut self, cluster: &Cluster, l: &Leadership) {
        let t = Instant::now();
        let (term, index) = (l.term, cluster.last_log_index());
        tracing::info!(target: "tandem::transition", term, index, "becoming leader");
        // 1. Serve no stale view: wait until everything committed so far is applied here.
        // Bounded: without a quorum this would wait for ever and hold up shutdown;
        // the loop tries again on the next lease check.
        let read = tokio::time::timeout(
            Duration::from_secs(1),
            cluster.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await;
        let Ok(read) = read else {
            tracing::warn!(target: "tandem::transition", term, index, "step 1 timed out: no quorum confirmed leadership");
            return;
        };
        match read {
            Ok(read) => {
                tracing::info!(target: "tandem::transition", term, index = read.log_id().index, "step 1: applied to commit index");
            }
            Err(e) => {
                tracing::warn!(target: "tandem::transition", term, index, error = %e, "step 1 failed: not leader after all");
                return;
            }
        }
        // 2. XDP passes service traffic.
        if let Some(s) = self.steering.as_mut() {
            if let Err(e) = s.set_role(Role::Leader) {
                tracing::error!(target: "tandem::transition", term, index, error = %e, "step 2 failed: XDP role map");
                self.step_down(cluster, "xdp failure").await;
                return;
            }
        }
        tracing::info!(target: "tandem::transition", term, index, "step 2: XDP role = leader");
        // 3. VIP and gratuitous ARPs.
        let serve_cancel = CancellationToken::new();
        if let Err(e) = self
            .vip
            .add()
            .and_then(|()| self.vip.announce(serve_cancel.clone()))
        {
            tracing::error!(target: "tandem::transition", term, index, error = %e, "step 3 failed: VIP");
            self.warnings.push(format!("VIP: {e}"));
            self.step_down(cluster, "vip failure").await;
            return;
        }
        tracing::info!(target: "tandem::transition", term, index, vip = %self.vip.addr(), "step 3: VIP added, gratuitous ARP sent");
        // 4. Responders.
        let mut tasks = Vec::new();
        let dcfg = DhcpConfig {
            iface: self.cfg.service.interface.clone(),
            server_id: self.cfg.vip_addr(),
            port: self.cfg.service.dhcp_port,
        };
        let (cl, c) = (cluster.clone(), serve_cancel.clone());
        // On the Raft runtime: see `Cluster::runtime`.
        tasks.push((
            "dhcp",
            cluster.runtime().spawn(async move {
                if let Err(e) = dhcp::serve(dcfg, cl, c).await {
                    tracing::error!(target: "tandem::transition", error = %e, "DHCP responder failed");
                }
            }),
        ));
        let tcfg = TftpConfig {
            root: self.cfg.artifact_dir.clone(),
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
        };
        let taddr = std::net::SocketAddr::from((self.cfg.vip_addr(), self.cfg.service.tftp_port));
        let c = serve_cancel.clone();
        tasks.push((
            "tftp",
            tokio::spawn(async move {
                if let Err(e) = tftp::serve(taddr, tcfg, c).await {
                    tracing::error!(target: "tandem::transition", error = %e, "TFTP responder failed");
                }
            }),
        ));
        let (iface, vip_addr, c) = (
            self.cfg.service.interface.clone(),
            self.cfg.vip_addr(),
            serve_cancel.clone(),
        );
        tasks.push((
            "vip-arp",
            tokio::spawn(async move {
                if let Err(e) = crate::services::vip::arp_duty(iface, vip_addr, c).await {
                    tracing::error!(target: "tandem::vip", error = %e, "ARP duty for the VIP failed");
                }
            }),
        ));
        self.serving = Some(Serving {
            cancel: serve_cancel,
            tasks,
        });
        tracing::info!(target: "tandem::transition", term, index, "step 4: responders started");
        // 5. Report.
        self.publish();
        let secs = t.elapsed().as_secs_f64();
        metrics::get()
            .transition_seconds
            .get_or_create(&DirectionLabel {
                direction: "up".into(),
            })
            .observe(secs);
        tracing::info!(target: "tandem::transition", term, index, seconds = secs, "step 5: serving");
    }

    /// The reverse: stop responders, XDP drop, remove the VIP.
    async fn step_down(&mut self, cluster: &Cluster, why: &str) {
        let t = Instant::now();
        let l = cluster.leadership().borrow().clone();
        let (term, index) = (l.term, cluster.last_log_index());
        tracing::info!(target: "tandem::transition", term, index, why, "stepping down");
        if let Some(s) = self.serving.take() {
            // Cancelling silences them at once (the DHCP loop stops reading and
            // its in-flight commits will not reply). Give the tasks one shared
            // 30 ms to finish, then abort the rest, so fencing (XDP drop, VIP
            // removal) is never held up.
            s.cancel.cancel();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(30);
            for (name, h) in s.tasks {
                let abort = h.abort_handle();
                if tokio::time::timeout_at(deadline, h).await.is_err() {
                    tracing::warn!(target: "tandem::transition", term, index, task = name, "responder did not stop in time; aborted");
                    abort.abort();
                }
            }
        }
        tracing::info!(target: "tandem::transition", term, index, "responders stopped");
        if let Some(s) = self.steering.as_mut() {
            match s.set_role(Role::Follower) {
                Ok(()) => {
                    tracing::info!(target: "tandem::transition", term, index, "XDP role = drop")
                }
                Err(e) => {
                    tracing::error!(target: "tandem::transition", term, index, error = %e, "XDP role flip failed")
                }
            }
        }
        match self.vip.remove() {
            Ok(()) => tracing::info!(target: "tandem::transition", term, index, "VIP removed"),
            Err(e) => {
                tracing::error!(target: "tandem::transition", term, index, error = %e, "VIP removal failed")
            }
        }
        self.publish();
        metrics::get()
            .transition_seconds
            .get_or_create(&DirectionLabel {
                direction: "down".into(),
            })
            .observe(t.elapsed().as_secs_f64());
    }
}

/// How one epoch of the node ended.
enum EpochEnd {
    Shutdown,
    /// Discard this node's state and join the cluster at this API address.
    Join(String),
}

/// Present while this node waits to be added to another cluster; holds that
/// cluster's API address. While it exists, the node never initialises a
/// cluster of its own.
fn join_marker(cfg: &NodeConfig) -> PathBuf {
    cfg.data_dir.join("join-pending")
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
        let s = Steering::attach(&cfg.service.interface, cfg.vip_addr())?;
        tracing::info!(target: "tandem::steering", iface = %cfg.service.interface, mode = ?s.mode(), "XDP steering attached (role = drop)");
        Some(s)
    } else {
        warnings.push("XDP steering disabled by config (service.xdp = false)".into());
        None
    };
    let (status_tx, status_rx) = watch::channel(ServiceStatus::default());
    let mut tr = Transitions {
        cfg: cfg.clone(),
        vip,
        steering,
        serving: None,
        status: status_tx,
        warnings,
    };
    let mut notified = false;
    loop {
        let joining = std::fs::read_to_string(join_marker(&cfg))
            .ok()
            .map(|s| s.trim().to_owned());
        if joining.is_some() {
            // Give up the single-node state: the cluster's replaces it.
            let db = cfg.data_dir.join(crate::store::DB_FILE);
            match std::fs::remove_file(&db) {
                Ok(()) => {
                    tracing::warn!(target: "tandem::raft", path = %db.display(), "discarded this node's own cluster state to join another")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(AppError::Dir { path: db, source }),
            }
        }
        let end = epoch(&cfg, &mut tr, &status_rx, joining, &shutdown, &mut notified).await?;
        match end {
            EpochEnd::Shutdown => break,
            EpochEnd::Join(addr) => {
                let marker = join_marker(&cfg);
                std::fs::write(&marker, &addr).map_err(|source| AppError::Dir {
                    path: marker,
                    source,
                })?;
            }
        }
    }
    tracing::info!(target: "tandem::transition", "stopped");
    Ok(())
}

async fn epoch(
    cfg: &NodeConfig,
    tr: &mut Transitions,
    status_rx: &watch::Receiver<ServiceStatus>,
    joining: Option<String>,
    shutdown: &CancellationToken,
    notified: &mut bool,
) -> Result<EpochEnd, AppError> {
    let store = Store::open(&cfg.data_dir)?;
    let raft_cancel = CancellationToken::new();
    let cluster = Cluster::start(cfg, &store, joining.is_none(), raft_cancel.clone()).await?;

    let (join_tx, mut join_rx) = mpsc::channel(1);
    let api = Api {
        cluster: cluster.clone(),
        service: status_rx.clone(),
        vip: cfg.service.vip.to_string(),
        me: Cluster::me(cfg),
        join: join_tx,
    };
    let api_cancel = CancellationToken::new();
    let api_addr = cfg.api_listen;
    let api_listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .map_err(|source| AppError::Api {
            addr: api_addr,
            source,
        })?;
    let api_task = tokio::spawn(api_server::serve(api_listener, api, api_cancel.clone()));
    if let Some(addr) = joining {
        tokio::spawn(request_membership(
            cfg.clone(),
            cluster.clone(),
            addr,
            raft_cancel.clone(),
        ));
    }
    tr.publish();
    if !*notified {
        notify_ready();
        *notified = true;
    }

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
            // At each election, a node that does not serve holds no VIP.
            if tr.serving.is_none() && tr.vip.is_present().unwrap_or(false) {
                tracing::warn!(target: "tandem::transition", term = l.term, index = cluster.last_log_index(), "releasing a VIP held while not serving");
                if let Err(e) = tr.vip.remove() {
                    tracing::error!(target: "tandem::transition", error = %e, "VIP removal failed");
                }
            }
        }
        let lease = cluster.holds_lease();
        if l.is_leader && lease && tr.serving.is_none() {
            tr.become_leader(&cluster, &l).await;
        } else if tr.serving.is_some() && !l.is_leader {
            tr.step_down(&cluster, "lost leadership").await;
        } else if tr.serving.is_some() && !lease {
            tr.step_down(&cluster, "leader lease expired: no quorum contact")
                .await;
        }
        tokio::select! {
            () = shutdown.cancelled() => break EpochEnd::Shutdown,
            Some(addr) = join_rx.recv() => break EpochEnd::Join(addr),
            r = leadership.changed() => if r.is_err() { break EpochEnd::Shutdown },
            _ = lease_tick.tick() => {}
            _ = metrics_tick.tick() => {
                if let Some(s) = tr.steering.as_ref() {
                    if let Err(e) = s.export_counters() {
                        tracing::debug!(target: "tandem::steering", error = %e, "XDP counters not read");
                    }
                }
            }
        }
    };
    let why = match &end {
        EpochEnd::Shutdown => "shutdown",
        EpochEnd::Join(_) => "joining another cluster",
    };
    tr.step_down(&cluster, why).await;
    if let Err(e) = cluster.raft.shutdown().await {
        tracing::warn!(target: "tandem::raft", error = %e, "raft shutdown");
    }
    raft_cancel.cancel();
    api_cancel.cancel();
    let _ = api_task.await;
    Ok(end)
}

/// Asks the cluster at `addr` (any member's API; followers redirect to the
/// leader) to add this node, until this node sees itself in the membership.
async fn request_membership(
    cfg: NodeConfig,
    cluster: Cluster,
    addr: String,
    cancel: CancellationToken,
) {
    let me = Cluster::me(&cfg);
    let body = MemberAddDto {
        id: cfg.node_id,
        raft: me.raft,
        api: me.api,
    };
    let mut delay = Duration::from_millis(200);
    loop {
        if cluster.is_member() {
            break;
        }
        tracing::info!(target: "tandem::raft", node = cfg.node_id, cluster = %addr, "asking the cluster to add this node");
        let (a, b) = (addr.clone(), body.clone());
        let r = tokio::task::spawn_blocking(move || {
            Client::new(&a).post::<_, OkDto>("/v1/cluster/members", &b)
        })
        .await;
        match r {
            Ok(Ok(ok)) => tracing::info!(target: "tandem::raft", "{}", ok.message),
            Ok(Err(e)) => {
                tracing::warn!(target: "tandem::raft", error = %e, "join request failed; retrying")
            }
            Err(e) => {
                tracing::warn!(target: "tandem::raft", error = %e, "join task failed; retrying")
            }
        }
        if cluster.is_member() {
            break;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    match std::fs::remove_file(join_marker(&cfg)) {
        Ok(()) => tracing::info!(target: "tandem::raft", node = cfg.node_id, "joined the cluster"),
        Err(e) => {
            tracing::error!(target: "tandem::raft", error = %e, "joined, but cannot remove the join marker")
        }
    }
}

/// systemd `Type=notify`: tell the service manager we are up.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "sd_notify socket");
            return;
        }
    };
    let p = path.to_string_lossy();
    let res = if let Some(abstract_name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", &*p)
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "sd_notify READY=1 not sent");
    }
}
