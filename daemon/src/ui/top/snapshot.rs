//! What the screen shows, as plain values: [`Snapshot`], built by
//! [`Snapshot::build`] from what the pollers last saw of each member
//! ([`NodeView`]) and the merged event list. Pure: no I/O and no clock but
//! the one passed in, so tests build snapshots by hand.

use std::collections::BTreeMap;

use super::prom::{self, Sample};
use crate::api::dto::{ArtifactDto, StatusDto};

/// One member as its poller last saw it.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    /// The API base URL the poller asks (`https://host:port`).
    pub api: String,
    /// The node's own status, from the last answer that arrived.
    pub status: Option<StatusDto>,
    /// Why the last attempt failed; `None` when it succeeded.
    pub error: Option<String>,
    /// A note that does not make the node unreachable (a route refused, say).
    pub note: Option<String>,
    /// Rates between this node's last two scrapes.
    pub rates: Option<Rates>,
    /// The last scrape.
    pub metrics: Vec<Sample>,
    pub artifacts: Option<Vec<ArtifactDto>>,
}

impl NodeView {
    fn reachable(&self) -> bool {
        self.error.is_none() && self.status.is_some()
    }
}

/// Per-second rates (one node's, or a cluster's sum).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub dhcp_in: f64,
    pub dhcp_out: f64,
    pub tftp_transfers: f64,
    pub tftp_bytes: f64,
    pub http_requests: f64,
}

impl std::ops::AddAssign for Rates {
    fn add_assign(&mut self, o: Rates) {
        self.dhcp_in += o.dhcp_in;
        self.dhcp_out += o.dhcp_out;
        self.tftp_transfers += o.tftp_transfers;
        self.tftp_bytes += o.tftp_bytes;
        self.http_requests += o.http_requests;
    }
}

/// The counters the rates come from, read from one scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub dhcp_in: f64,
    pub dhcp_out: f64,
    pub tftp_transfers: f64,
    pub tftp_bytes: f64,
    pub http_requests: f64,
}

impl Counters {
    #[must_use]
    pub fn read(m: &[Sample]) -> Counters {
        Counters {
            dhcp_in: prom::sum(m, "tandem_dhcp_packets_total", &[("direction", "in")]),
            dhcp_out: prom::sum(m, "tandem_dhcp_packets_total", &[("direction", "out")]),
            tftp_transfers: prom::sum(m, "tandem_tftp_transfers_total", &[]),
            tftp_bytes: prom::sum(m, "tandem_tftp_bytes_total", &[]),
            http_requests: prom::sum(m, "tandem_http_requests_total", &[]),
        }
    }

    /// The rates from `prev` to `self`, `secs` apart. A counter that went
    /// down (the node restarted) counts from zero.
    #[must_use]
    pub fn rates_since(&self, prev: &Counters, secs: f64) -> Rates {
        let r = |now: f64, before: f64| {
            if secs <= 0.0 {
                0.0
            } else if now >= before {
                (now - before) / secs
            } else {
                now / secs
            }
        };
        Rates {
            dhcp_in: r(self.dhcp_in, prev.dhcp_in),
            dhcp_out: r(self.dhcp_out, prev.dhcp_out),
            tftp_transfers: r(self.tftp_transfers, prev.tftp_transfers),
            tftp_bytes: r(self.tftp_bytes, prev.tftp_bytes),
            http_requests: r(self.http_requests, prev.http_requests),
        }
    }
}

/// One row of the nodes table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRow {
    pub id: Option<u64>,
    /// `host:port` of its API.
    pub addr: String,
    pub reachable: bool,
    /// Its own answer; `None` while unreachable.
    pub role: Option<String>,
    pub term: Option<u64>,
    pub last_log: Option<u64>,
    pub applied: Option<u64>,
    /// From the leader's status.
    pub lag: Option<u64>,
    /// Milliseconds since it last acked a heartbeat (from the leader's status).
    pub heartbeat_ms: Option<u64>,
    pub serving: Option<bool>,
    pub vip_held: Option<bool>,
    /// Why it is unreachable, or a note.
    pub problem: Option<String>,
}

/// Leases of one subnet (`tandem_dhcp_leases{subnet,state}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetRow {
    pub subnet: String,
    /// Bound and declined addresses.
    pub used: u64,
    pub free: u64,
}

/// One `tandem_xdp_packets_total` proto, summed over the reachable nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpRow {
    pub proto: String,
    pub pass: u64,
    pub drop: u64,
    pub ratelimited: u64,
}

/// One event of the merged list, labelled with the node that recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub at_ms: u64,
    pub node: u64,
    pub kind: String,
    pub message: String,
}

/// Everything one frame shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Unix milliseconds of the frame.
    pub now_ms: u64,
    pub nodes: Vec<NodeRow>,
    /// The leader a reachable node reports as itself, with its term.
    pub leader: Option<(u64, u64)>,
    pub subnets: Vec<SubnetRow>,
    /// Summed over the reachable nodes; `None` before two scrapes.
    pub rates: Option<Rates>,
    pub tftp_active: u64,
    pub xdp: Vec<XdpRow>,
    pub artifacts: Vec<ArtifactDto>,
    /// Oldest first.
    pub events: Vec<EventRow>,
}

/// A count from a gauge or counter value (never negative, never NaN).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "exported counts are whole and non-negative; out-of-range values saturate"
)]
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// `https://10.0.0.11:7481` → `10.0.0.11:7481`.
#[must_use]
pub fn host_port(api: &str) -> &str {
    api.trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
}

impl Snapshot {
    /// The frame for `views` (one per member polled) and `events`.
    #[must_use]
    pub fn build(views: &[NodeView], events: &[EventRow], now_ms: u64) -> Snapshot {
        let reachable: Vec<&NodeView> = views.iter().filter(|v| v.reachable()).collect();
        // The leader: a reachable node that says it leads, the highest term first.
        let leader_view = reachable
            .iter()
            .filter_map(|v| v.status.as_ref().map(|s| (v, s)))
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term);
        let leader = leader_view.map(|(_, s)| (s.node_id, s.term));
        let leader_status = leader_view.map(|(_, s)| s);
        // Ids of members not reached now: from member lists, the answers
        // of reachable nodes winning over older ones (an id does not change
        // while its node is down).
        let mut ids: BTreeMap<String, u64> = BTreeMap::new();
        let stale = views.iter().filter(|v| !v.reachable());
        for v in stale.chain(reachable.iter().copied()) {
            for m in v.status.iter().flat_map(|s| &s.members) {
                ids.insert(host_port(&m.api).to_owned(), m.id);
            }
        }
        let mut nodes: Vec<NodeRow> = views
            .iter()
            .map(|v| {
                let addr = host_port(&v.api).to_owned();
                let own = v.status.as_ref().filter(|_| v.reachable());
                let id = own.map(|s| s.node_id).or_else(|| ids.get(&addr).copied());
                let from_leader = leader_status
                    .and_then(|l| id.and_then(|i| l.members.iter().find(|m| m.id == i)));
                NodeRow {
                    id,
                    addr,
                    reachable: own.is_some(),
                    role: own.map(|s| s.role.clone()),
                    term: own.map(|s| s.term),
                    last_log: own.and_then(|s| s.last_log_index),
                    applied: own.and_then(|s| s.applied_index),
                    lag: from_leader.and_then(|m| m.lag_entries),
                    heartbeat_ms: from_leader.and_then(|m| m.silence_ms),
                    serving: own.map(|s| s.serving),
                    vip_held: own.map(|s| s.vip_held),
                    problem: v.error.clone().or_else(|| v.note.clone()),
                }
            })
            .collect();
        nodes.sort_by(|a, b| (a.id.is_none(), a.id, &a.addr).cmp(&(b.id.is_none(), b.id, &b.addr)));
        // Replicated gauges: the leader's scrape, else any reachable node's.
        let gauges = leader_view
            .map(|(v, _)| *v)
            .or_else(|| reachable.first().copied())
            .map_or(&[][..], |v| v.metrics.as_slice());
        let subnets = subnet_rows(gauges);
        let (rates, tftp_active, xdp) = traffic(&reachable);
        let artifacts = leader_view
            .and_then(|(v, _)| v.artifacts.clone())
            .or_else(|| reachable.iter().find_map(|v| v.artifacts.clone()))
            .unwrap_or_default();
        Snapshot {
            now_ms,
            nodes,
            leader,
            subnets,
            rates,
            tftp_active,
            xdp,
            artifacts,
            events: events.to_vec(),
        }
    }
}

/// Leases per subnet from `tandem_dhcp_leases{subnet,state}`: bound and
/// declined are used, free is free.
fn subnet_rows(gauges: &[Sample]) -> Vec<SubnetRow> {
    let mut subnets: BTreeMap<String, SubnetRow> = BTreeMap::new();
    for s in gauges.iter().filter(|s| s.name == "tandem_dhcp_leases") {
        let (Some(net), Some(state)) = (s.label("subnet"), s.label("state")) else {
            continue;
        };
        let row = subnets.entry(net.to_owned()).or_insert_with(|| SubnetRow {
            subnet: net.to_owned(),
            used: 0,
            free: 0,
        });
        match state {
            "free" => row.free += count(s.value),
            _ => row.used += count(s.value),
        }
    }
    subnets.into_values().collect()
}

/// Rates, TFTP transfers in progress and XDP verdicts, summed over `nodes`.
fn traffic(nodes: &[&NodeView]) -> (Option<Rates>, u64, Vec<XdpRow>) {
    let mut rates: Option<Rates> = None;
    let mut tftp_active = 0;
    let mut xdp: BTreeMap<String, XdpRow> = BTreeMap::new();
    for v in nodes {
        if let Some(r) = v.rates {
            *rates.get_or_insert_with(Rates::default) += r;
        }
        tftp_active += count(prom::sum(&v.metrics, "tandem_tftp_active", &[]));
        for s in v
            .metrics
            .iter()
            .filter(|s| s.name == "tandem_xdp_packets_total")
        {
            let (Some(proto), Some(verdict)) = (s.label("proto"), s.label("verdict")) else {
                continue;
            };
            let row = xdp.entry(proto.to_owned()).or_insert_with(|| XdpRow {
                proto: proto.to_owned(),
                pass: 0,
                drop: 0,
                ratelimited: 0,
            });
            let n = count(s.value);
            match verdict {
                "pass" => row.pass += n,
                "drop" => row.drop += n,
                _ => row.ratelimited += n,
            }
        }
    }
    (rates, tftp_active, xdp.into_values().collect())
}

/// The merged event list of all members: deduplicated, ordered by time
/// (then node), the newest [`EventLog::KEEP`] kept.
#[derive(Debug, Default)]
pub struct EventLog {
    /// (`at_ms`, node, `boot_ms`, seq) → row; the key orders and deduplicates.
    events: BTreeMap<(u64, u64, u64, u64), EventRow>,
}

impl EventLog {
    pub const KEEP: usize = 500;

    /// Adds events node `node` recorded in its run that began at `boot_ms`.
    pub fn add(&mut self, node: u64, boot_ms: u64, evs: &[crate::api::dto::EventDto]) {
        for e in evs {
            self.events.insert(
                (e.at_ms, node, boot_ms, e.seq),
                EventRow {
                    at_ms: e.at_ms,
                    node,
                    kind: e.kind.clone(),
                    message: e.message.clone(),
                },
            );
        }
        while self.events.len() > Self::KEEP {
            self.events.pop_first();
        }
    }

    #[must_use]
    pub fn rows(&self) -> Vec<EventRow> {
        self.events.values().cloned().collect()
    }
}
