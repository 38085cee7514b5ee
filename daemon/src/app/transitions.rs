//! The leadership transition of DESIGN.md section 2, driven by the epoch
//! loop in [`super`]:
//!
//! ```text
//!   becomes leader ──▶ 1 apply to commit index (Cluster::ensure_applied)
//!                      2 XDP role map := leader
//!                      3 VIP add + gratuitous ARPs
//!                      4 DHCP + TFTP responders, ARP duty, HTTP boot start
//!                      5 status: serving
//!   loses leadership / lease / shutdown ──▶ the same steps in reverse
//! ```
//! Every step is logged with term and index and checked; the whole transition
//! is timed into `tandem_transition_seconds{direction}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::server::ServiceStatus;
use crate::config::NodeConfig;
use crate::consensus::{Cluster, EnsureError, Leadership};
use crate::metrics::{self, DirectionLabel};
use crate::services::artifacts::ArtifactLookup;
use crate::services::dhcp::server::{self as dhcp, DhcpConfig};
use crate::services::http::{self, HttpConfig};
use crate::services::tftp::{self, TftpConfig};
use crate::services::vip::Vip;
use crate::steering::{Role, Steering};

/// Step 1's bound: without a quorum it would wait for ever and hold up
/// shutdown; the epoch loop tries again on the next lease check.
const STEP1_WITHIN: Duration = Duration::from_secs(1);

/// The responders of one term of leadership.
pub(super) struct Serving {
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// Drives the node's service side from leadership.
pub(super) struct Transitions {
    pub(super) cfg: NodeConfig,
    pub(super) vip: Vip,
    pub(super) steering: Option<Steering>,
    pub(super) serving: Option<Serving>,
    pub(super) status: watch::Sender<ServiceStatus>,
    pub(super) warnings: Vec<String>,
}

impl Transitions {
    pub(super) fn publish(&self) {
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
    pub(super) async fn become_leader(&mut self, cluster: &Cluster, l: &Leadership) {
        let t = Instant::now();
        let (term, index) = (l.term, cluster.last_log_index());
        tracing::info!(target: "tandem::transition", term, index, "becoming leader");
        // 1. Serve no stale view: wait until everything committed so far is applied here.
        // Bounded: without a quorum this would wait for ever and hold up shutdown;
        // the loop tries again on the next lease check.
        match cluster.ensure_applied(STEP1_WITHIN).await {
            Ok(applied) => {
                tracing::info!(target: "tandem::transition", term, index = applied, "step 1: applied to commit index");
            }
            Err(EnsureError::Timeout(_)) => {
                tracing::warn!(target: "tandem::transition", term, index, "step 1 timed out: no quorum confirmed leadership");
                return;
            }
            Err(e) => {
                tracing::warn!(target: "tandem::transition", term, index, error = %e, "step 1 failed");
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
            http_port: self.cfg.service.http_port,
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
        let tcfg = TftpConfig::new(self.cfg.artifact_dir.clone());
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
        // Last: HTTP boot.
        tasks.push(("http", self.spawn_http(cluster, serve_cancel.clone())));
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

    /// The HTTP boot server on VIP:`http_port`. Until the artifact store's
    /// index is wired in, the artifacts are the files in `artifact_dir`, as
    /// for TFTP.
    fn spawn_http(&self, cluster: &Cluster, cancel: CancellationToken) -> JoinHandle<()> {
        let cfg = HttpConfig {
            addr: std::net::SocketAddr::from((self.cfg.vip_addr(), self.cfg.service.http_port)),
            limits: http::Limits::default(),
        };
        let arts: Arc<dyn ArtifactLookup> = Arc::new(http::DirLookup::new(&self.cfg.artifact_dir));
        let cl = cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = http::serve(cfg, cl, arts, cancel).await {
                tracing::error!(target: "tandem::transition", error = %e, "HTTP boot responder failed");
            }
        })
    }

    /// The reverse: stop responders, XDP drop, remove the VIP.
    pub(super) async fn step_down(&mut self, cluster: &Cluster, why: &str) {
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
            // In reverse order of start: HTTP boot first.
            for (name, h) in s.tasks.into_iter().rev() {
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
                    tracing::info!(target: "tandem::transition", term, index, "XDP role = drop");
                }
                Err(e) => {
                    tracing::error!(target: "tandem::transition", term, index, error = %e, "XDP role flip failed");
                }
            }
        }
        match self.vip.remove() {
            Ok(()) => tracing::info!(target: "tandem::transition", term, index, "VIP removed"),
            Err(e) => {
                tracing::error!(target: "tandem::transition", term, index, error = %e, "VIP removal failed");
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
