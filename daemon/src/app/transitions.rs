//! The leadership transition of DESIGN.md section 2, driven by the epoch
//! loop in [`super`]:
//!
//! ```text
//!   leads, lease fresh ──▶ gate: a service config is applied, no hold-back
//!                          (else: not serving, the reason in status)
//!   becomes leader ──▶ 1 apply to commit index (Cluster::ensure_applied)
//!                      2 XDP role map := leader
//!                      3 ARP probe for the VIP; no conflict: VIP add + gratuitous ARPs
//!                      4 DHCP + TFTP responders (TFTP bound in 3), ARP duty, HTTP boot start
//!                      5 status: serving
//!   loses leadership / lease / shutdown ──▶ the same steps in reverse
//!   a responder ends (error, exit, panic) ──▶ step down, hold back, hand over
//!   the probe finds another host on the VIP ──▶ step down, hold back
//! ```
//! Every step is logged with term and index and checked; the whole transition
//! is timed into `tandem_transition_seconds{direction}`.
//!
//! # Supervision
//! Every responder task of a term (DHCP, TFTP, ARP duty, HTTP boot) is
//! watched by the epoch loop ([`Serving::exited`]). One that returns, fails
//! or panics while the node serves takes the node out of serving at once:
//! step down (responders stopped, XDP drop, VIP removed), count it in
//! `tandem_responder_failures_total{responder}`, put the cause in status, and
//! hold back from serving for a back-off ([`RESPONDER_HOLD`], doubling up to
//! [`RESPONDER_HOLD_MAX`]) while handing leadership to another voter, which
//! serves within the failover targets. A node that cannot serve (say its TFTP
//! port is taken by another process) so lets the others lead instead of
//! winning every election and failing again. A node alone in its cluster has
//! no one to hand to: it retries when the hold ends.
//!
//! # Fresh nodes
//! A leader serves only once its cluster has a service config (`tandem
//! apply`): a fresh node, a cluster of one with an empty data dir, takes no
//! VIP and answers no client, whatever its node.toml says; it probes for the
//! VIP now and then ([`UNCONFIGURED_PROBE_EVERY`]) only to report in status
//! that another host holds it. A configured leader still probes before it
//! adds the VIP, so a stray node that got a config anyway does not take a
//! VIP that a running cluster holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::server::ServiceStatus;
use crate::config::NodeConfig;
use crate::consensus::{Cluster, EnsureError, Leadership};
use crate::metrics::{self, DirectionLabel, ResponderLabel};
use crate::model::ServiceConfig;
use crate::services::artifacts::{ArtifactLookup, Artifacts};
use crate::services::dhcp::server::{self as dhcp, DhcpConfig};
use crate::services::http;
use crate::services::tftp::{self, TftpConfig};
use crate::services::vip::{Conflict, Vip};
use crate::steering::{Role, Steering};

/// Step 1's bound: without a quorum it would wait for ever and hold up
/// shutdown; the epoch loop tries again on the next lease check.
const STEP1_WITHIN: Duration = Duration::from_secs(1);
/// How long a node whose responder failed holds back from serving, at first;
/// each further failure doubles it, up to [`RESPONDER_HOLD_MAX`].
pub(super) const RESPONDER_HOLD: Duration = Duration::from_secs(10);
pub(super) const RESPONDER_HOLD_MAX: Duration = Duration::from_secs(300);
/// How long a leader that found the VIP taken waits before probing again;
/// doubling up to [`CONFLICT_HOLD_MAX`].
const CONFLICT_HOLD: Duration = Duration::from_secs(2);
const CONFLICT_HOLD_MAX: Duration = Duration::from_secs(60);
/// Serving this long without a failure resets the back-offs.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often a leader without a service config probes the VIP (to report
/// another holder in status; it never takes the VIP).
pub(super) const UNCONFIGURED_PROBE_EVERY: Duration = Duration::from_secs(30);
/// A held-back leader hands leadership over at most this often.
const HANDOVER_EVERY: Duration = Duration::from_secs(1);
/// Conflict reports from ARP duty that may wait for the epoch loop.
const CONFLICT_QUEUE: usize = 16;

/// What a responder task returns: `Err` carries the cause for status.
type Task = JoinHandle<Result<(), String>>;

/// The responders of one term of leadership.
pub(super) struct Serving {
    cancel: CancellationToken,
    tasks: Vec<(&'static str, Task)>,
    since: Instant,
}

impl Serving {
    /// Resolves when one responder ends (returns, fails or panics), with its
    /// name and the cause; pending for ever while none does.
    ///
    /// cancel-safety: cancel-safe; a task that finished is only taken out of
    /// the list when this resolves.
    pub(super) async fn exited(&mut self) -> (&'static str, String) {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let (res, i, _) = futures::future::select_all(self.tasks.iter_mut().map(|(_, h)| h)).await;
        let (name, _) = self.tasks.remove(i);
        let cause = match res {
            Ok(Ok(())) => "exited while serving".to_owned(),
            Ok(Err(e)) => e,
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(&e.into_panic())),
            Err(e) => e.to_string(),
        };
        (name, cause)
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A doubling back-off: `hold` starts (or extends) it, `held` tells whether
/// it runs.
pub(super) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    until: Option<Instant>,
}

impl Backoff {
    pub(super) fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
            until: None,
        }
    }

    /// Starts a hold of the current length and doubles the next; returns it.
    pub(super) fn hold(&mut self) -> Duration {
        let d = self.next;
        self.until = Some(Instant::now() + d);
        self.next = (d * 2).min(self.max);
        d
    }

    pub(super) fn held(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() < u)
    }

    pub(super) fn reset(&mut self) {
        self.next = self.first;
        self.until = None;
    }
}

/// Keys of [`Transitions::problems`]: one current message each.
const P_CONFIG: &str = "config";
const P_CONFLICT: &str = "vip-conflict";
const P_RESPONDER: &str = "responder";
const P_VIP: &str = "vip";

/// Drives the node's service side from leadership.
pub(super) struct Transitions {
    pub(super) cfg: NodeConfig,
    pub(super) vip: Vip,
    pub(super) steering: Option<Steering>,
    pub(super) serving: Option<Serving>,
    pub(super) status: watch::Sender<ServiceStatus>,
    /// Start-up warnings (they hold for the process's life).
    pub(super) warnings: Vec<String>,
    /// This epoch's artifact store, which HTTP boot serves from.
    pub(super) artifacts: Option<Artifacts>,
    /// Current problems by kind (`P_*`), replaced as they change.
    problems: BTreeMap<&'static str, String>,
    responder_hold: Backoff,
    conflict_hold: Backoff,
    last_handover: Option<Instant>,
    last_unconfigured_probe: Option<Instant>,
    conflict_tx: mpsc::Sender<Conflict>,
    pub(super) conflict_rx: mpsc::Receiver<Conflict>,
}

impl Transitions {
    pub(super) fn new(
        cfg: NodeConfig,
        vip: Vip,
        steering: Option<Steering>,
        status: watch::Sender<ServiceStatus>,
        warnings: Vec<String>,
    ) -> Transitions {
        let (conflict_tx, conflict_rx) = mpsc::channel(CONFLICT_QUEUE);
        Transitions {
            cfg,
            vip,
            steering,
            serving: None,
            status,
            warnings,
            artifacts: None,
            problems: BTreeMap::new(),
            responder_hold: Backoff::new(RESPONDER_HOLD, RESPONDER_HOLD_MAX),
            conflict_hold: Backoff::new(CONFLICT_HOLD, CONFLICT_HOLD_MAX),
            last_handover: None,
            last_unconfigured_probe: None,
            conflict_tx,
            conflict_rx,
        }
    }

    pub(super) fn publish(&self) {
        let mut warnings = self.warnings.clone();
        warnings.extend(self.problems.values().cloned());
        let st = ServiceStatus {
            serving: self.serving.is_some(),
            vip_held: self.vip.is_present().unwrap_or(false),
            warnings,
            responder_failed: self.problems.get(P_RESPONDER).cloned(),
        };
        metrics::get().serving.set(i64::from(st.serving));
        self.status.send_if_modified(|cur| {
            let changed = *cur != st;
            *cur = st;
            changed
        });
    }

    /// Sets (or, with `None`, clears) the current problem of one kind and
    /// republishes the status if it changed.
    pub(super) fn problem(&mut self, key: &'static str, msg: Option<String>) {
        let changed = match msg {
            Some(m) => self.problems.insert(key, m.clone()).as_ref() != Some(&m),
            None => self.problems.remove(key).is_some(),
        };
        if changed {
            self.publish();
        }
    }

    /// A conflict ARP duty saw while serving: the leader keeps the VIP (it
    /// defended it with a gratuitous ARP) and reports.
    pub(super) fn conflict_seen(&mut self, c: Conflict) {
        self.problem(
            P_CONFLICT,
            Some(format!(
                "VIP conflict while serving: {c}; re-announced {} (tandem_vip_conflicts_total)",
                self.vip.addr()
            )),
        );
    }

    /// Called while this node leads with a fresh lease and does not serve:
    /// serves unless a gate holds it back (module docs).
    pub(super) async fn try_lead(&mut self, cluster: &Cluster, l: &Leadership) {
        if self.responder_hold.held() {
            self.hand_over(cluster).await;
            return;
        }
        if self.conflict_hold.held() {
            return;
        }
        let configured = cluster
            .view()
            .read(|s| s.config != ServiceConfig::default());
        if !configured {
            self.problem(
                P_CONFIG,
                Some(
                    "no service config applied: not serving and not taking the VIP (tandem apply)"
                        .into(),
                ),
            );
            if self
                .last_unconfigured_probe
                .is_none_or(|t| t.elapsed() >= UNCONFIGURED_PROBE_EVERY)
            {
                self.last_unconfigured_probe = Some(Instant::now());
                match self.vip.probe().await {
                    Ok(Some(c)) => {
                        metrics::get().vip_conflicts.inc();
                        tracing::warn!(target: "tandem::vip", vip = %self.vip.addr(), other = %c.mac, "VIP conflict: {c} (this node has no service config and does not take it)");
                        metrics::events::record(
                            metrics::events::Kind::VipConflict,
                            format!("{}: {c} (not taken: no service config)", self.vip.addr()),
                        );
                        self.problem(
                            P_CONFLICT,
                            Some(format!(
                                "VIP conflict: {c} ({} is in use on this LAN)",
                                self.vip.addr()
                            )),
                        );
                    }
                    Ok(None) => self.problem(P_CONFLICT, None),
                    Err(e) => {
                        tracing::warn!(target: "tandem::vip", error = %e, "VIP probe failed");
                    }
                }
            }
            return;
        }
        self.problem(P_CONFIG, None);
        self.become_leader(cluster, l).await;
    }

    /// Hands leadership to another voter, at most once per [`HANDOVER_EVERY`].
    async fn hand_over(&mut self, cluster: &Cluster) {
        if self
            .last_handover
            .is_some_and(|t| t.elapsed() < HANDOVER_EVERY)
        {
            return;
        }
        self.last_handover = Some(Instant::now());
        match cluster.handover(None).await {
            Ok(to) => {
                tracing::warn!(target: "tandem::transition", to, "held back from serving: handed leadership over");
            }
            Err(e) => {
                tracing::debug!(target: "tandem::transition", error = %e, "no handover while held back");
            }
        }
    }

    /// A responder ended while serving: out of serving at once, hold back,
    /// hand over (module docs, "Supervision").
    pub(super) async fn responder_failed(
        &mut self,
        cluster: &Cluster,
        name: &'static str,
        cause: &str,
    ) {
        let l = cluster.leadership().borrow().clone();
        tracing::error!(target: "tandem::transition", term = l.term, index = cluster.last_log_index(), responder = name, cause, "responder failed: leaving service");
        metrics::get()
            .responder_failures
            .get_or_create(&ResponderLabel {
                responder: name.into(),
            })
            .inc();
        if self
            .serving
            .as_ref()
            .is_some_and(|s| s.since.elapsed() >= STABLE_AFTER)
        {
            self.responder_hold.reset();
        }
        let hold = self.responder_hold.hold();
        self.problem(
            P_RESPONDER,
            Some(format!(
                "{name} responder failed: {cause}; stepped down, not serving for {}s",
                hold.as_secs()
            )),
        );
        self.step_down(cluster, "responder failed").await;
        self.hand_over(cluster).await;
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
        // 3. Probe, then the VIP and gratuitous ARPs.
        let serve_cancel = CancellationToken::new();
        let Some(bound) = self.claim_vip(cluster, (term, index), &serve_cancel).await else {
            return;
        };
        // 4. Responders (the TFTP and HTTP sockets are bound in step 3).
        let tasks = self.start_responders(cluster, bound, &serve_cancel);
        self.serving = Some(Serving {
            cancel: serve_cancel,
            tasks,
            since: Instant::now(),
        });
        tracing::info!(target: "tandem::transition", term, index, "step 4: responders started");
        // 5. Report.
        self.problem(P_RESPONDER, None);
        self.publish();
        let secs = t.elapsed().as_secs_f64();
        metrics::get()
            .transition_seconds
            .get_or_create(&DirectionLabel {
                direction: "up".into(),
            })
            .observe(secs);
        tracing::info!(target: "tandem::transition", term, index, seconds = secs, "step 5: serving");
        metrics::events::record(
            metrics::events::Kind::Transition,
            format!(
                "serving, up in {:.1} ms (term {term}, index {index})",
                secs * 1e3
            ),
        );
    }

    /// Step 3: probe, add the VIP, bind TFTP and HTTP on it, announce.
    /// `None` when the node did not take the VIP (it stepped down and
    /// reported why).
    async fn claim_vip(
        &mut self,
        cluster: &Cluster,
        (term, index): (u64, u64),
        cancel: &CancellationToken,
    ) -> Option<Bound> {
        let probed = Instant::now();
        // On the Raft runtime, whose raised priority keeps the probe's
        // 35 ms window from stretching when the box is busy (measured: 91 ms
        // on the main runtime with other builds saturating both cores).
        let (iface, net) = (self.cfg.service.interface.clone(), self.cfg.service.vip);
        let probe = cluster
            .runtime()
            .spawn(async move { Vip::new(&iface, net).probe().await })
            .await
            .unwrap_or_else(|e| {
                Err(crate::services::vip::VipError::Link {
                    iface: self.cfg.service.interface.clone(),
                    source: std::io::Error::other(format!("probe task: {e}")),
                })
            });
        match probe {
            Ok(None) => {
                self.conflict_hold.reset();
                self.problem(P_CONFLICT, None);
                tracing::info!(target: "tandem::transition", term, index, vip = %self.vip.addr(), ms = probed.elapsed().as_millis(), "step 3: ARP probe: no other host has the VIP");
            }
            Ok(Some(c)) => {
                metrics::get().vip_conflicts.inc();
                let hold = self.conflict_hold.hold();
                tracing::error!(target: "tandem::transition", term, index, vip = %self.vip.addr(), other = %c.mac, kind = ?c.kind, "step 3: VIP conflict: {c}; not taking the VIP, probing again in {}s", hold.as_secs());
                metrics::events::record(
                    metrics::events::Kind::VipConflict,
                    format!("{}: {c}; not serving (term {term})", self.vip.addr()),
                );
                self.problem(
                    P_CONFLICT,
                    Some(format!(
                        "VIP conflict: {c}; not serving, probing {} again in {}s",
                        self.vip.addr(),
                        hold.as_secs()
                    )),
                );
                self.step_down(cluster, "VIP in use by another host").await;
                return None;
            }
            Err(e) => {
                tracing::error!(target: "tandem::transition", term, index, error = %e, "step 3 failed: ARP probe");
                self.problem(P_VIP, Some(format!("VIP: {e}")));
                self.step_down(cluster, "vip failure").await;
                return None;
            }
        }
        if let Err(e) = self.vip.add() {
            tracing::error!(target: "tandem::transition", term, index, error = %e, "step 3 failed: VIP");
            self.problem(P_VIP, Some(format!("VIP: {e}")));
            self.step_down(cluster, "vip failure").await;
            return None;
        }
        // TFTP's and HTTP's sockets are bound now, before any gratuitous
        // ARP: a port taken by another process stops the transition before
        // the LAN is pointed at this node or it reports serving, and a
        // client that follows the ARP at once finds both ports open (an HTTP
        // connection that met a closed port in between was refused).
        let vip = self.cfg.vip_addr();
        let taddr = std::net::SocketAddr::from((vip, self.cfg.service.tftp_port));
        let haddr = std::net::SocketAddr::from((vip, self.cfg.service.http_port));
        let bound = match bind_udp(taddr) {
            Err(e) => Err(("tftp", format!("cannot bind {taddr}: {e}"))),
            Ok(tftp) => match bind_tcp(haddr) {
                Err(e) => Err(("http", format!("cannot bind {haddr}: {e}"))),
                Ok(http) => Ok(Bound { tftp, http }),
            },
        };
        let bound = match bound {
            Ok(b) => b,
            Err((name, cause)) => {
                // Counted and held back like a responder that died.
                self.serving = Some(Serving {
                    cancel: cancel.clone(),
                    tasks: Vec::new(),
                    since: Instant::now(),
                });
                self.responder_failed(cluster, name, &cause).await;
                return None;
            }
        };
        if let Err(e) = self.vip.announce(cancel.clone()) {
            tracing::error!(target: "tandem::transition", term, index, error = %e, "step 3 failed: VIP");
            self.problem(P_VIP, Some(format!("VIP: {e}")));
            self.step_down(cluster, "vip failure").await;
            return None;
        }
        self.problem(P_VIP, None);
        tracing::info!(target: "tandem::transition", term, index, vip = %self.vip.addr(), "step 3: VIP added, gratuitous ARP sent");
        Some(bound)
    }

    /// Step 4: the responder tasks of this term, each watched by the epoch
    /// loop ([`Serving::exited`]).
    fn start_responders(
        &self,
        cluster: &Cluster,
        bound: Bound,
        cancel: &CancellationToken,
    ) -> Vec<(&'static str, Task)> {
        let mut tasks: Vec<(&'static str, Task)> = Vec::new();
        let dcfg = DhcpConfig {
            iface: self.cfg.service.interface.clone(),
            server_id: self.cfg.vip_addr(),
            port: self.cfg.service.dhcp_port,
            http_port: self.cfg.service.http_port,
        };
        let (cl, c) = (cluster.clone(), cancel.clone());
        // On its own thread at normal priority: see `dhcp_runtime`.
        tasks.push((
            "dhcp",
            dhcp_runtime()
                .spawn(async move { dhcp::serve(dcfg, cl, c).await.map_err(|e| e.to_string()) }),
        ));
        let tcfg = TftpConfig::new(self.cfg.artifact_dir.clone());
        let c = cancel.clone();
        tasks.push((
            "tftp",
            tokio::spawn(async move {
                tftp::serve_bound(bound.tftp, tcfg, c)
                    .await
                    .map_err(|e| e.to_string())
            }),
        ));
        let (iface, vip_addr, report, c) = (
            self.cfg.service.interface.clone(),
            self.cfg.vip_addr(),
            self.conflict_tx.clone(),
            cancel.clone(),
        );
        tasks.push((
            "vip-arp",
            tokio::spawn(async move {
                crate::services::vip::arp_duty(iface, vip_addr, report, c)
                    .await
                    .map_err(|e| e.to_string())
            }),
        ));
        // Last: HTTP boot.
        tasks.push(("http", self.spawn_http(cluster, bound.http, cancel.clone())));
        tasks
    }

    /// The HTTP boot server on VIP:`http_port`, serving the artifacts this
    /// node holds verified (the store's lookup).
    fn spawn_http(
        &self,
        cluster: &Cluster,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
    ) -> Task {
        let Some(arts) = self.artifacts.clone() else {
            return tokio::spawn(async { Err("no artifact store open".to_owned()) });
        };
        let arts: Arc<dyn ArtifactLookup> = Arc::new(arts);
        let cl = cluster.clone();
        tokio::spawn(async move {
            http::serve_listener(listener, http::Limits::default(), cl, arts, cancel).await;
            Ok(())
        })
    }

    /// The reverse: stop responders, XDP drop, remove the VIP.
    pub(super) async fn step_down(&mut self, cluster: &Cluster, why: &str) {
        let t = Instant::now();
        let l = cluster.leadership().borrow().clone();
        let (term, index) = (l.term, cluster.last_log_index());
        tracing::info!(target: "tandem::transition", term, index, why, "stepping down");
        let was_serving = self.serving.is_some();
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
        let secs = t.elapsed().as_secs_f64();
        metrics::get()
            .transition_seconds
            .get_or_create(&DirectionLabel {
                direction: "down".into(),
            })
            .observe(secs);
        if was_serving {
            metrics::events::record(
                metrics::events::Kind::Transition,
                format!(
                    "stopped serving ({why}), down in {:.1} ms (term {term}, index {index})",
                    secs * 1e3
                ),
            );
        }
    }
}

/// The sockets step 3 binds on the VIP for step 4's responders.
struct Bound {
    tftp: tokio::net::UdpSocket,
    http: tokio::net::TcpListener,
}

/// Binds and listens on a TCP port for a tokio responder now, with
/// `SO_REUSEADDR` (as `TcpListener::bind` sets it), so a port whose last
/// connections linger in TIME_WAIT after a step-down can be bound again.
fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

/// Binds a UDP socket for a tokio responder now (not inside its task), so a
/// failure is seen before the node reports serving.
fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(35));
        assert!(!b.held());
        assert_eq!(b.hold(), Duration::from_secs(10));
        assert!(b.held());
        assert_eq!(b.hold(), Duration::from_secs(20));
        assert_eq!(b.hold(), Duration::from_secs(35));
        assert_eq!(b.hold(), Duration::from_secs(35));
        b.reset();
        assert!(!b.held());
        assert_eq!(b.hold(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_panicking_or_failing_responder_is_reported_by_name() {
        let mut s = Serving {
            cancel: CancellationToken::new(),
            tasks: vec![
                (
                    "quiet",
                    tokio::spawn(async {
                        std::future::pending::<()>().await;
                        Ok(())
                    }),
                ),
                (
                    "tftp",
                    tokio::spawn(async { Err("cannot bind 10.0.0.1:69: in use".to_owned()) }),
                ),
            ],
            since: Instant::now(),
        };
        assert_eq!(
            s.exited().await,
            ("tftp", "cannot bind 10.0.0.1:69: in use".to_owned())
        );
        s.tasks.push((
            "dhcp",
            tokio::spawn(async {
                let v: Vec<u8> = Vec::new();
                #[allow(clippy::indexing_slicing)]
                let _ = v[3];
                Ok(())
            }),
        ));
        let (name, cause) = s.exited().await;
        assert_eq!(name, "dhcp");
        assert!(
            cause.starts_with("panicked: index out of bounds"),
            "{cause}"
        );
        assert_eq!(s.tasks.len(), 1, "the quiet task is still watched");
    }
}

/// The DHCP responder's runtime: one thread at the default priority, apart
/// from the Raft thread. Under a flood the responder is busy all the time;
/// on the Raft thread it delayed heartbeats (the thread's 5 ms timer fired
/// up to 38 ms late), and at the Raft threads' raised priority it kept the
/// followers' Raft threads off the CPU on a shared box. Here every Raft
/// thread preempts it.
fn dhcp_runtime() -> tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dhcp")
            .enable_all()
            .build()
            .expect("cannot start the DHCP runtime")
    })
    .handle()
    .clone()
}
