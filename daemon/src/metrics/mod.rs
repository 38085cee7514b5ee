//! # Layout
//! The process-wide Prometheus registry (DESIGN.md section 5, prefix `tandem_`).
//! A leaf module: anything may count into [`get()`]; the API encodes it at
//! `GET /metrics`. Families are plain fields so call sites read as what they count.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeDir {
    pub r#type: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetState {
    pub subnet: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtoVerdict {
    pub proto: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: String,
}

fn hist_fast() -> Histogram {
    // 10 µs .. ~5 s
    Histogram::new(exponential_buckets(0.000_01, 2.5, 15))
}

/// Every metric of the process. Names are registered without the `tandem_`
/// prefix; the registry adds it.
pub struct Metrics {
    pub registry: Registry,
    // Raft
    pub raft_term: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_last_log_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_leader_changes: Counter,
    pub raft_commit_seconds: Histogram,
    pub raft_peer_lag: Family<PeerLabel, Gauge>,
    pub raft_peer_silence: Family<PeerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    // DHCP
    pub dhcp_packets: Family<TypeDir, Counter>,
    pub dhcp_leases: Family<SubnetState, Gauge>,
    pub dhcp_decision_seconds: Histogram,
    pub dhcp_malformed: Counter,
    // TFTP / HTTP
    pub tftp_transfers: Family<ResultLabel, Counter>,
    pub tftp_bytes: Counter,
    pub tftp_active: Gauge,
    pub tftp_denied: Counter,
    pub http_requests: Family<CodeLabel, Counter>,
    // XDP
    pub xdp_packets: Family<ProtoVerdict, Gauge>,
    // VIP / failover
    pub vip_held: Gauge,
    pub vip_garp_sent: Counter,
    pub vip_conflicts: Counter,
    pub serving: Gauge,
    pub transition_seconds: Family<DirectionLabel, Histogram>,
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("tandem");
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let m = Metrics {
            raft_term: reg!("raft_term", "Current Raft term", Gauge::default()),
            raft_is_leader: reg!("raft_is_leader", "1 if this node is the Raft leader", Gauge::default()),
            raft_last_log_index: reg!("raft_last_log_index", "Last log index", Gauge::default()),
            raft_applied_index: reg!("raft_applied_index", "Last applied index", Gauge::default()),
            raft_leader_changes: reg!("raft_leader_changes", "Leader changes seen", Counter::default()),
            raft_commit_seconds: reg!("raft_commit_seconds", "Propose-to-applied latency", hist_fast()),
            raft_peer_lag: reg!("raft_peer_lag_entries", "Entries a peer lags behind (on the leader)", Family::default()),
            raft_peer_silence: reg!("raft_peer_silence_seconds", "Time since a peer last acked a heartbeat (on the leader)", Family::default()),
            dhcp_packets: reg!("dhcp_packets", "DHCP packets by message type and direction", Family::default()),
            dhcp_leases: reg!("dhcp_leases", "Leases by subnet and state", Family::default()),
            dhcp_decision_seconds: reg!("dhcp_decision_seconds", "Time to decide a DHCP reply", hist_fast()),
            dhcp_malformed: reg!("dhcp_malformed", "Malformed DHCP packets dropped", Counter::default()),
            tftp_transfers: reg!("tftp_transfers", "TFTP transfers by result", Family::default()),
            tftp_bytes: reg!("tftp_bytes", "TFTP payload bytes sent", Counter::default()),
            tftp_active: reg!("tftp_active", "TFTP transfers in progress", Gauge::default()),
            tftp_denied: reg!("tftp_denied", "TFTP requests refused for escaping the artifact directory", Counter::default()),
            http_requests: reg!("http_requests", "HTTP boot requests by status code", Family::default()),
            xdp_packets: reg!("xdp_packets_total", "XDP verdicts by protocol and verdict; absolute values read from the kernel counters map (a counter, exported as a gauge because the kernel owns the count)", Family::default()),
            vip_held: reg!("vip_held", "1 while this node holds the VIP", Gauge::default()),
            vip_garp_sent: reg!("vip_garp_sent", "Gratuitous ARPs sent", Counter::default()),
            vip_conflicts: reg!("vip_conflicts", "ARP frames from another MAC claiming our VIP", Counter::default()),
            serving: reg!("serving", "1 while the responders run", Gauge::default()),
            transition_seconds: reg!(
                "transition_seconds",
                "Duration of leadership transitions",
                Family::<DirectionLabel, Histogram>::new_with_constructor(hist_fast as fn() -> Histogram)
            ),
            registry: Registry::default(),
        };
        Metrics { registry: r, ..m }
    }

    /// Prometheus text exposition of everything.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Shorthand: count one DHCP packet. The counter handles of the label pairs
/// seen so far are cached, so the hot path neither allocates label strings
/// nor takes the family's lock (this ran twice per packet at thousands/s).
pub fn dhcp_packet(kind: &'static str, direction: &'static str) {
    type Cache = std::sync::RwLock<Vec<(&'static str, &'static str, Counter)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let hit = cache
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(k, d, _)| *k == kind && *d == direction)
        .map(|(_, _, c)| c.clone());
    let counter = hit.unwrap_or_else(|| {
        let c = get()
            .dhcp_packets
            .get_or_create(&TypeDir {
                r#type: kind.to_owned(),
                direction: direction.to_owned(),
            })
            .clone();
        cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((kind, direction, c.clone()));
        c
    });
    counter.inc();
}

#[cfg(test)]
mod tests {
    #[test]
    fn cached_packet_counters_are_the_exported_ones() {
        super::dhcp_packet("inform", "in");
        super::dhcp_packet("inform", "in");
        let text = super::get().encode();
        assert!(
            text.lines()
                .any(|l| l == r#"tandem_dhcp_packets_total{type="inform",direction="in"} 2"#),
            "{text}"
        );
    }
}
