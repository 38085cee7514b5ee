//! systemd `Type=notify` (`sd_notify(3)`), driven by the epoch loop:
//!
//! ```text
//!   READY=1     once per process: Raft is up and the node serves, follows a
//!               leader, or is a fresh leader awaiting its service config (or,
//!               for a node that starts by joining, once the join completed)
//!   STATUS=...  on every change of the one-line state ([`state_line`])
//!   WATCHDOG=1  every WATCHDOG_USEC/2, from a task on the Raft runtime, and
//!               only while Raft's core answers a round trip ([`spawn_watchdog`])
//!   STOPPING=1  when shutdown starts
//! ```
//!
//! A hand-written sender rather than the `sd-notify` crate: the protocol is
//! one datagram per message to the socket named by `NOTIFY_SOCKET` (a path,
//! or `@name` for an abstract one), which is these few lines, and
//! `WATCHDOG_USEC`/`WATCHDOG_PID` are read as `sd_watchdog_enabled(3)` does
//! ([`watchdog_period`]). The node test `systemd` checks it against a real
//! socket.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::consensus::{Cluster, Leadership};

/// How long a leader may wait for its first quorum ack before its state
/// line says fenced: a few heartbeats (and twice the leader lease).
fn fenced_after() -> Duration {
    crate::consensus::scaled(2 * crate::consensus::LEADER_LEASE_MS)
}

/// Where notifications go: `None` when not started by systemd (no `NOTIFY_SOCKET`).
#[derive(Clone)]
pub(super) struct Sender(Option<Arc<(UnixDatagram, SocketAddr)>>);

impl Sender {
    fn from_env() -> Sender {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Sender(None);
        };
        let p = path.to_string_lossy();
        let addr = if let Some(name) = p.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        } else {
            SocketAddr::from_pathname(&*p)
        };
        match (UnixDatagram::unbound(), addr) {
            (Ok(sock), Ok(addr)) => Sender(Some(Arc::new((sock, addr)))),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, socket = %p, "NOTIFY_SOCKET unusable: systemd is not told about this node");
                Sender(None)
            }
        }
    }

    /// Sends one datagram of `KEY=value` lines.
    pub(super) fn send(&self, msg: &str) {
        let Some(s) = &self.0 else { return };
        if let Err(e) = s.0.send_to_addr(msg.as_bytes(), &s.1) {
            tracing::warn!(error = %e, msg, "sd_notify message not sent");
        }
    }
}

/// The process's notifier: it outlives the epochs (READY=1 is sent once).
pub(super) struct Notifier {
    tx: Sender,
    ready: bool,
    status: String,
    watchdog: Option<Duration>,
    /// Since when this node leads without the leader lease (term, start).
    unleased: Option<(u64, Instant)>,
}

impl Notifier {
    pub(super) fn from_env() -> Notifier {
        let watchdog = watchdog_period(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier {
            tx: Sender::from_env(),
            ready: false,
            status: String::new(),
            watchdog,
            unleased: None,
        }
    }

    /// Sends `STATUS=line` if it changed, with `READY=1` the first time
    /// `ready` holds.
    pub(super) fn update(&mut self, line: &str, ready: bool) {
        let first_ready = ready && !self.ready;
        if line == self.status && !first_ready {
            return;
        }
        tracing::info!(target: "tandem::transition", state = line, "node state");
        line.clone_into(&mut self.status);
        if first_ready {
            self.ready = true;
            self.tx.send(&format!("READY=1\nSTATUS={line}"));
        } else {
            self.tx.send(&format!("STATUS={line}"));
        }
    }

    /// Whether a leader of `term` without the lease has been so for longer
    /// than [`fenced_after`] (a fresh leader waits for its first quorum ack).
    pub(super) fn fenced(&mut self, term: u64, leads_unleased: bool) -> bool {
        if !leads_unleased {
            self.unleased = None;
            return false;
        }
        let (t, since) = *self.unleased.get_or_insert((term, Instant::now()));
        if t != term {
            self.unleased = Some((term, Instant::now()));
            return false;
        }
        since.elapsed() >= fenced_after()
    }

    /// Shutdown has begun.
    pub(super) fn stopping(&mut self, why: &str) {
        self.status = format!("stopping: {why}");
        self.tx.send(&format!("STOPPING=1\nSTATUS={}", self.status));
    }

    /// Feeds the watchdog from `cluster`'s Raft runtime until `cancel`, if
    /// systemd asked for one.
    pub(super) fn watch(&self, cluster: &Cluster, cancel: CancellationToken) {
        if let Some(period) = self.watchdog {
            spawn_watchdog(cluster, self.tx.clone(), period, cancel);
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as
/// `sd_watchdog_enabled(3)` reads it. `None` (no watchdog) when it is unset,
/// not a number, 0 or infinity, or when `WATCHDOG_PID` is set and is not `me`
/// (the variables were meant for another process, e.g. our parent).
fn watchdog_period(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 || usec == u64::MAX {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every `period` from a task on the Raft runtime, after
/// checking that Raft's core answers a round trip ([`Cluster::core_answers`])
/// within half a period. So a Raft thread that is blocked (the task shares
/// its one worker thread), a core loop that stopped answering, or a core that
/// stopped on a fatal error starves the watchdog, and systemd restarts the
/// process after `WatchdogSec`.
fn spawn_watchdog(cluster: &Cluster, tx: Sender, period: Duration, cancel: CancellationToken) {
    let cl = cluster.clone();
    cluster.runtime().spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fed = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Some(cause) = cl.fatal() {
                tracing::error!(target: "tandem::raft", ?cause, "Raft stopped: the systemd watchdog is no longer fed");
                return;
            }
            let alive = cl.core_answers(period / 2).await;
            if alive {
                tx.send("WATCHDOG=1");
                if !fed {
                    tracing::warn!(target: "tandem::raft", "Raft core answers again: watchdog fed");
                }
            } else if fed {
                tracing::error!(target: "tandem::raft", ms = (period / 2).as_millis(), "Raft core did not answer in time: watchdog not fed (systemd restarts the node if this lasts)");
            }
            fed = alive;
        }
    });
}

/// What the epoch loop knows of the node, for [`state_line`].
// Independent facts; the line tells their combinations apart.
#[allow(clippy::struct_excessive_bools)]
pub(super) struct NodeState<'a> {
    pub(super) id: u64,
    pub(super) leadership: &'a Leadership,
    /// Leading with a fresh leader lease.
    pub(super) lease: bool,
    /// Leading without the lease for longer than a new leader needs to win
    /// its first quorum ack (so an election does not show as fenced).
    pub(super) fenced: bool,
    pub(super) serving: bool,
    /// The cluster has a service config (`tandem apply`).
    pub(super) configured: bool,
    /// The API address this node is joining, while it is not yet a member.
    pub(super) joining: Option<&'a str>,
}

/// The node's state as one line for `STATUS=`, and whether it counts as
/// started for `READY=1`: serving, following a leader, or a fresh leader
/// that waits for its service config.
pub(super) fn state_line(s: &NodeState) -> (String, bool) {
    let l = s.leadership;
    let t = l.term;
    if let Some(addr) = s.joining {
        return (format!("joining the cluster at {addr}, term {t}"), false);
    }
    if l.is_leader {
        return if s.serving {
            (format!("leader, serving, term {t}"), true)
        } else if !s.lease && s.fenced {
            (format!("fenced: no quorum, term {t}"), false)
        } else if !s.lease {
            (
                format!("leader, not serving yet: waiting for a quorum, term {t}"),
                false,
            )
        } else if !s.configured {
            (
                format!("leader, not serving: no service config (tandem apply), term {t}"),
                true,
            )
        } else {
            (format!("leader, not serving yet, term {t}"), false)
        };
    }
    match l.leader {
        Some(id) if id != s.id => (format!("follower of {id}, term {t}"), true),
        _ => (
            format!("no leader known: electing, or no quorum, term {t}"),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_period_is_read_as_sd_watchdog_enabled_does() {
        assert_eq!(
            watchdog_period(Some("5000000"), None, 7),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            watchdog_period(Some("1000000"), Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        // Meant for another process, unset, zero, infinity, garbage.
        assert_eq!(watchdog_period(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some(&u64::MAX.to_string()), None, 7), None);
        assert_eq!(watchdog_period(Some("5s"), None, 7), None);
        assert_eq!(watchdog_period(Some("1000000"), Some("x"), 7), None);
    }

    #[allow(clippy::fn_params_excessive_bools)]
    fn line(
        is_leader: bool,
        leader: Option<u64>,
        lease: bool,
        serving: bool,
        configured: bool,
    ) -> (String, bool) {
        let l = Leadership {
            is_leader,
            term: 7,
            leader,
        };
        state_line(&NodeState {
            id: 1,
            leadership: &l,
            lease,
            fenced: !lease,
            serving,
            configured,
            joining: None,
        })
    }

    #[test]
    fn state_lines_say_role_serving_and_term() {
        assert_eq!(
            line(true, Some(1), true, true, true),
            ("leader, serving, term 7".into(), true)
        );
        assert_eq!(
            line(false, Some(2), false, false, true),
            ("follower of 2, term 7".into(), true)
        );
        assert_eq!(
            line(true, Some(1), false, false, true),
            ("fenced: no quorum, term 7".into(), false)
        );
        assert_eq!(
            line(false, None, false, false, true),
            (
                "no leader known: electing, or no quorum, term 7".into(),
                false
            )
        );
        let (fresh, ready) = line(true, Some(1), true, false, false);
        assert!(fresh.contains("no service config") && ready, "{fresh}");
        assert_eq!(
            line(true, Some(1), true, false, true),
            ("leader, not serving yet, term 7".into(), false)
        );
        let l = Leadership::default();
        let joining = state_line(&NodeState {
            id: 3,
            leadership: &l,
            lease: false,
            fenced: false,
            serving: false,
            configured: false,
            joining: Some("10.0.0.11:7481"),
        });
        assert_eq!(
            joining,
            (
                "joining the cluster at 10.0.0.11:7481, term 0".into(),
                false
            )
        );
    }

    #[test]
    fn messages_reach_a_real_datagram_socket_ready_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut n = Notifier {
            tx: Sender(Some(Arc::new((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )))),
            ready: false,
            status: String::new(),
            watchdog: None,
            unleased: None,
        };
        let mut buf = [0u8; 256];
        let mut recv = || {
            let k = rx.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..k]).into_owned()
        };
        n.update("fenced: no quorum, term 1", false);
        assert_eq!(recv(), "STATUS=fenced: no quorum, term 1");
        n.update("fenced: no quorum, term 1", false); // unchanged: nothing sent
        n.update("leader, serving, term 2", true);
        assert_eq!(recv(), "READY=1\nSTATUS=leader, serving, term 2");
        n.update("follower of 2, term 3", true);
        assert_eq!(recv(), "STATUS=follower of 2, term 3");
        n.stopping("shutdown");
        assert_eq!(recv(), "STOPPING=1\nSTATUS=stopping: shutdown");
    }
}
