//! # Layout
//! The process-wide metrics (DESIGN.md section 5, prefix `tandem_`): a thin
//! facade over [`metrics`] handles, rendered by metrics-exporter-prometheus.
//! A leaf module: anything may count into [`get()`]; the API encodes it at
//! `GET /metrics`. Metrics are plain fields so call sites read as what they count.
//!
//! - [`Metrics`]: one field per metric name, declared once in the `metrics!`
//!   list below (name, HELP, type); [`Metrics::encode`] renders them in that order.
//! - Handles: [`Counter`], [`Gauge`], [`FloatGauge`], [`AbsoluteCounter`],
//!   [`Histogram`]; a [`Family`] is one name with labels, given by a [`Labels`]
//!   struct such as [`PeerLabel`].
//! - [`dhcp_packet`]: the per-packet shorthand, with cached handles.
//! - [`events`]: the bounded ring of operator events (elections,
//!   transitions, VIP conflicts, peers, storage) behind `GET /v1/events`.
//!
//! Every metric name owns its `PrometheusRecorder`; none is installed as the
//! global `metrics` recorder:
//! - [`Family::clear`] must drop a family's series at once (peers that left the
//!   cluster). The exporter forgets series only after an idle timeout, so
//!   `clear` swaps in a fresh recorder; handles taken before it stop exporting.
//! - `/metrics` lists metrics in the declared order; one recorder for all
//!   would list them in hash order, different at every scrape.
//! - Nothing global: a `Metrics` built in a unit test is independent of the
//!   process-wide one, and a dependency's `metrics::counter!` never shows up here.
//!
//! Histogram samples wait in their recorder until it renders them; a
//! background thread drains them every [`UPKEEP_EVERY`], so a node that nobody
//! scrapes does not grow.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

pub mod events;

use metrics::{Key, KeyName, Label, Level, Metadata, Recorder as _, SharedString};
use metrics_exporter_prometheus::formatting::{sanitize_label_key, sanitize_label_value};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// How often histogram samples are drained into their buckets (the
/// exporter's own upkeep interval).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Histogram buckets: 10 µs .. ~3.7 s, the same bounds (bit for bit) as
/// prometheus-client's `exponential_buckets(0.000_01, 2.5, 15)` gave.
fn buckets() -> Vec<f64> {
    (0..15u8)
        .map(|i| 0.000_01 * 2.5_f64.powf(f64::from(i)))
        .collect()
}

/// What the recorder is told about the call site of a registration; the
/// Prometheus exporter ignores it.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A set of label values; its fields are the label names.
pub trait Labels {
    fn labels(&self) -> Vec<Label>;
}

/// `r#type` is the label `type`.
fn label_name(field: &'static str) -> &'static str {
    field.strip_prefix("r#").unwrap_or(field)
}

macro_rules! label_sets {
    ($($name:ident { $($field:ident),+ $(,)? })*) => {$(
        #[derive(Clone, Debug, Hash, PartialEq, Eq)]
        pub struct $name {
            $(pub $field: String,)+
        }

        impl Labels for $name {
            fn labels(&self) -> Vec<Label> {
                vec![$(Label::new(label_name(stringify!($field)), self.$field.clone()),)+]
            }
        }
    )*};
}

label_sets! {
    TypeDir { r#type, direction }
    SubnetState { subnet, state }
    ResultLabel { result }
    CodeLabel { code }
    ProtoVerdict { proto, verdict }
    PeerLabel { peer }
    DirectionLabel { direction }
    ResponderLabel { responder }
    ReasonLabel { reason }
}

/// Where a handle's series is rendered, so that it can be read back as a
/// scrape sees it (no second copy of any value is kept).
struct Series {
    render: PrometheusHandle,
    /// `name{label="value",..}`, as the exporter writes it before the value.
    line: String,
}

impl Series {
    fn new(recorder: &PrometheusRecorder, key: &Key) -> Arc<Series> {
        let mut line = key.name().to_owned();
        let labels: Vec<String> = key
            .labels()
            .map(|l| {
                format!(
                    "{}=\"{}\"",
                    sanitize_label_key(l.key()),
                    sanitize_label_value(l.value())
                )
            })
            .collect();
        if !labels.is_empty() {
            line = format!("{line}{{{}}}", labels.join(","));
        }
        Arc::new(Series {
            render: recorder.handle(),
            line,
        })
    }

    /// The exported value, as text. Renders the whole recorder of the
    /// series' metric name: for tests and diagnostics, not for hot paths.
    fn value(&self) -> Option<String> {
        self.render.render().lines().find_map(|l| {
            let v = l.strip_prefix(self.line.as_str())?.strip_prefix(' ')?;
            Some(v.to_owned())
        })
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A fresh recorder for the metric `name` of `kind`, described by `help`.
fn recorder(name: &'static str, help: &'static str, kind: Kind) -> PrometheusRecorder {
    let builder = PrometheusBuilder::new();
    let builder = match kind {
        Kind::Histogram => builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), &buckets())
            .unwrap_or_else(|_| unreachable!("the bucket list is not empty")),
        Kind::Counter | Kind::Gauge => builder,
    };
    let r = builder.build_recorder();
    let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
    match kind {
        Kind::Counter => r.describe_counter(name, None, help),
        Kind::Gauge => r.describe_gauge(name, None, help),
        Kind::Histogram => r.describe_histogram(name, None, help),
    }
    r
}

/// A handle type: registers its series in a recorder of its kind.
pub trait Metric: Clone {
    /// A fresh recorder for the metric `name` of this type.
    fn recorder(name: &'static str, help: &'static str) -> PrometheusRecorder;
    /// The handle of series `key` in `recorder`.
    fn register(recorder: &PrometheusRecorder, key: &Key) -> Self;
}

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $kind:ident, $inner:ident, $register:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            inner: metrics::$inner,
            series: Arc<Series>,
        }

        impl Metric for $name {
            fn recorder(name: &'static str, help: &'static str) -> PrometheusRecorder {
                recorder(name, help, Kind::$kind)
            }

            fn register(recorder: &PrometheusRecorder, key: &Key) -> Self {
                $name {
                    inner: recorder.$register(key, &METADATA),
                    series: Series::new(recorder, key),
                }
            }
        }

        impl Part for $name {
            /// The unlabelled metric `name`, in a recorder of its own.
            fn new(name: &'static str, help: &'static str) -> Self {
                Self::register(&Self::recorder(name, help), &Key::from_static_name(name))
            }

            fn render(&self) -> String {
                self.series.render.render()
            }

            fn upkeep(&self) {
                self.series.render.run_upkeep();
            }
        }
    };
}

handle!(
    /// A monotonic count.
    Counter, Counter, Counter, register_counter
);
handle!(
    /// An integer that goes up and down.
    Gauge, Gauge, Gauge, register_gauge
);
handle!(
    /// A measurement in `f64` (e.g. seconds).
    FloatGauge, Gauge, Gauge, register_gauge
);
handle!(
    /// A count kept elsewhere, exported as a counter: [`AbsoluteCounter::set`]
    /// stores the source's absolute value. The exporter keeps the largest value
    /// it was given, so the source must only grow (the kernel's XDP counters
    /// map lives as long as the process).
    AbsoluteCounter, Counter, Counter, register_counter
);
handle!(
    /// A distribution over the shared buckets (10 µs .. ~3.7 s).
    Histogram, Histogram, Histogram, register_histogram
);

impl Counter {
    pub fn inc(&self) {
        self.inner.increment(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.inner.increment(n);
    }

    /// The exported count (renders this metric: for tests, not hot paths).
    #[must_use]
    pub fn get(&self) -> u64 {
        self.series
            .value()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Gauge {
    #[allow(clippy::cast_precision_loss)] // indexes, terms and counts stay far below 2^53
    pub fn set(&self, v: i64) {
        self.inner.set(v as f64);
    }

    pub fn inc(&self) {
        self.inner.increment(1.0);
    }

    pub fn dec(&self) {
        self.inner.decrement(1.0);
    }

    /// The exported value (renders this metric: for tests, not hot paths).
    #[must_use]
    pub fn get(&self) -> i64 {
        // Only whole numbers are ever stored, so the cast is exact.
        self.series
            .value()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as i64)
    }
}

impl FloatGauge {
    pub fn set(&self, v: f64) {
        self.inner.set(v);
    }
}

impl AbsoluteCounter {
    /// Exports `v`, the source's count now (negative reads as 0).
    pub fn set(&self, v: i64) {
        self.inner.absolute(u64::try_from(v).unwrap_or(0));
    }

    /// The exported count (renders this metric: for tests, not hot paths).
    #[must_use]
    pub fn get(&self) -> i64 {
        self.series
            .value()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl Histogram {
    pub fn observe(&self, v: f64) {
        self.inner.record(v);
    }
}

/// One metric name with labels: a series per label set seen since the last
/// [`Family::clear`].
pub struct Family<L, M> {
    name: &'static str,
    help: &'static str,
    state: RwLock<FamilyState<L, M>>,
}

struct FamilyState<L, M> {
    recorder: PrometheusRecorder,
    series: HashMap<L, M>,
}

impl<L: Labels + Clone + Eq + Hash, M: Metric> Family<L, M> {
    /// The handle of the series `labels`, created on first use. Callers on a
    /// hot path keep the handle (as [`dhcp_packet`] does) rather than come
    /// back with a label set each time.
    #[must_use]
    pub fn get_or_create(&self, labels: &L) -> M {
        if let Some(m) = self.read().series.get(labels) {
            return m.clone();
        }
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let FamilyState { recorder, series } = &mut *st;
        series
            .entry(labels.clone())
            .or_insert_with(|| M::register(recorder, &Key::from_parts(self.name, labels.labels())))
            .clone()
    }

    /// Drops every series from the output. Handles taken before keep working
    /// but export nothing; `get_or_create` starts new series.
    pub fn clear(&self) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        st.series.clear();
        st.recorder = M::recorder(self.name, self.help);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, FamilyState<L, M>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<L: Labels + Clone + Eq + Hash, M: Metric> Part for Family<L, M> {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            state: RwLock::new(FamilyState {
                recorder: M::recorder(name, help),
                series: HashMap::new(),
            }),
        }
    }

    fn render(&self) -> String {
        self.read().recorder.handle().render()
    }

    fn upkeep(&self) {
        self.read().recorder.handle().run_upkeep();
    }
}

/// What [`Metrics`] does with each of its fields.
trait Part {
    /// The metric `name`, described by `help`, with no series yet if labelled.
    fn new(name: &'static str, help: &'static str) -> Self
    where
        Self: Sized;
    /// The text exposition of this metric name (empty while it has no series).
    fn render(&self) -> String;
    /// Drains histogram samples into buckets.
    fn upkeep(&self);
}

macro_rules! metrics {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = $name:literal, $help:literal;)*) => {
        /// Every metric of the process, in `/metrics` order.
        pub struct Metrics {
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl Metrics {
            /// Every metric name, in `/metrics` order (for checks of
            /// dashboards and alert rules against what is exported).
            pub const NAMES: &[&str] = &[$($name,)*];

            fn new() -> Self {
                Metrics {
                    $($field: <$ty as Part>::new($name, $help),)*
                }
            }

            /// `f` on every field, in declared order, with its metric name.
            fn each(&self, mut f: impl FnMut(&'static str, &dyn Part)) {
                $(f($name, &self.$field);)*
            }
        }
    };
}

metrics! {
    // Raft
    raft_term: Gauge = "tandem_raft_term", "Current Raft term.";
    raft_is_leader: Gauge = "tandem_raft_is_leader", "1 if this node is the Raft leader.";
    raft_last_log_index: Gauge = "tandem_raft_last_log_index", "Last log index.";
    raft_applied_index: Gauge = "tandem_raft_applied_index", "Last applied index.";
    raft_leader_changes: Counter = "tandem_raft_leader_changes_total", "Leader changes seen.";
    raft_commit_seconds: Histogram = "tandem_raft_commit_seconds", "Propose-to-applied latency.";
    raft_peer_lag: Family<PeerLabel, Gauge> =
        "tandem_raft_peer_lag_entries", "Entries a peer lags behind (on the leader).";
    raft_peer_silence: Family<PeerLabel, FloatGauge> =
        "tandem_raft_peer_silence_seconds", "Time since a peer last acked a heartbeat (on the leader).";
    raft_append_seconds: Histogram =
        "tandem_raft_append_seconds", "Time to write and fsync one batch of log entries.";
    raft_runtime_delay_seconds: Histogram =
        "tandem_raft_runtime_delay_seconds", "How late a 5 ms timer on the Raft thread fires (scheduling stalls).";
    raft_tls_refused: Counter =
        "tandem_raft_tls_refused_total", "Raft connections refused at the TLS handshake (no or a bad certificate).";
    api_unauthorized: Counter =
        "tandem_api_unauthorized_total", "Admin API requests refused for a missing or wrong bearer token.";
    // DHCP
    dhcp_packets: Family<TypeDir, Counter> =
        "tandem_dhcp_packets_total", "DHCP packets by message type and direction.";
    dhcp_leases: Family<SubnetState, Gauge> = "tandem_dhcp_leases", "Leases by subnet and state.";
    dhcp_decision_seconds: Histogram = "tandem_dhcp_decision_seconds", "Time to decide a DHCP reply.";
    dhcp_malformed: Counter = "tandem_dhcp_malformed_total", "Malformed DHCP packets dropped.";
    dhcp_shed: Family<ReasonLabel, Counter> =
        "tandem_dhcp_shed_total", "DHCP requests left unanswered by a flood guard, by reason.";
    // TFTP / HTTP
    tftp_transfers: Family<ResultLabel, Counter> = "tandem_tftp_transfers_total", "TFTP transfers by result.";
    tftp_bytes: Counter = "tandem_tftp_bytes_total", "TFTP payload bytes sent.";
    tftp_active: Gauge = "tandem_tftp_active", "TFTP transfers in progress.";
    tftp_denied: Counter =
        "tandem_tftp_denied_total", "TFTP requests refused for escaping the artifact directory.";
    http_requests: Family<CodeLabel, Counter> = "tandem_http_requests_total", "HTTP boot requests by status code.";
    // Artifacts
    artifacts_held: Gauge = "tandem_artifacts_held", "Blobs this node holds verified.";
    artifact_fetch_bytes: Counter =
        "tandem_artifact_fetch_bytes_total", "Blob bytes fetched from other nodes.";
    artifact_fetch_resumed: Counter =
        "tandem_artifact_fetch_resumed_total", "Blob fetches resumed with Range from a partial file.";
    artifact_corrupt: Counter =
        "tandem_artifact_corrupt_total", "Blobs found corrupt and discarded.";
    // XDP
    xdp_packets: Family<ProtoVerdict, AbsoluteCounter> = "tandem_xdp_packets_total",
        "XDP verdicts by protocol and verdict; absolute values read from the kernel counters map.";
    // VIP / failover
    vip_held: Gauge = "tandem_vip_held", "1 while this node holds the VIP.";
    vip_garp_sent: Counter = "tandem_vip_garp_sent_total", "Gratuitous ARPs sent.";
    vip_conflicts: Counter = "tandem_vip_conflicts_total",
        "ARP frames from another MAC that answer for, claim or probe for our VIP.";
    serving: Gauge = "tandem_serving", "1 while the responders run.";
    config_applied: Gauge = "tandem_config_applied",
        "1 once a service config is applied (a leader without one serves nothing, by design).";
    responder_failures: Family<ResponderLabel, Counter> = "tandem_responder_failures_total",
        "Responders (dhcp, tftp, vip-arp, http) that failed, exited or panicked while serving.";
    storage_errors: Counter = "tandem_storage_errors_total",
        "Fatal storage errors (disk full, I/O error) that stopped Raft on this node.";
    transition_seconds: Family<DirectionLabel, Histogram> =
        "tandem_transition_seconds", "Duration of leadership transitions.";
}

impl Metrics {
    /// Prometheus text exposition (format 0.0.4) of everything.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut s = String::new();
        self.each(|_, part| s.push_str(&part.render()));
        s
    }

    fn upkeep(&self) {
        self.each(|_, part| part.upkeep());
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        spawn_upkeep();
        Metrics::new()
    })
}

/// Drains histogram samples every [`UPKEEP_EVERY`] for the process's life.
fn spawn_upkeep() {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(|| loop {
            std::thread::sleep(UPKEEP_EVERY);
            get().upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "tandem::metrics", error = %e, "no metrics upkeep thread: histogram samples wait for the next scrape");
    }
}

/// Shorthand: count one DHCP packet. The counter handles of the label pairs
/// seen so far are cached, so the hot path neither allocates label strings
/// nor takes the family's lock (this ran twice per packet at thousands/s).
pub fn dhcp_packet(kind: &'static str, direction: &'static str) {
    type Cache = RwLock<Vec<(&'static str, &'static str, Counter)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let hit = |cached: &[(&str, &str, Counter)]| {
        cached
            .iter()
            .find(|(k, d, _)| *k == kind && *d == direction)
            .map(|(_, _, c)| c.inc())
            .is_some()
    };
    if hit(&cache.read().unwrap_or_else(PoisonError::into_inner)) {
        return;
    }
    let mut cached = cache.write().unwrap_or_else(PoisonError::into_inner);
    if hit(&cached) {
        return;
    }
    let c = get().dhcp_packets.get_or_create(&TypeDir {
        r#type: kind.to_owned(),
        direction: direction.to_owned(),
    });
    c.inc();
    cached.push((kind, direction, c));
}

#[cfg(test)]
mod tests;
