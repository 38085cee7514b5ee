//! One poller thread per member: every [`EVERY`] it asks its node for
//! `/v1/status`, `/metrics`, `/v1/events?since=…` and `/v1/artifacts`, each
//! call bounded by [`CALL_TIMEOUT`], and publishes what it saw. The screen
//! never waits for a poller: a dead or cut-off node only makes its own
//! thread slow, and its row says why.
//!
//! [`Pollers`] keeps one poller per member address: the seeds (`--api` or
//! `--nodes`) and, unless `--nodes` fixed the list, every member the
//! reachable nodes report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::prom;
use super::snapshot::{Counters, EventLog, NodeView};
use crate::api::client::{base_url, Access, Client, ClientError};
use crate::api::dto::{ArtifactDto, EventsDto, StatusDto};

/// How often each member is asked.
pub const EVERY: Duration = Duration::from_secs(1);
/// Each call's bound, connecting included: a silent node costs its poller
/// at most this per refresh (after a failed status call the rest are skipped).
pub const CALL_TIMEOUT: Duration = Duration::from_millis(800);

/// What a poller shares with the screen.
#[derive(Default)]
struct Shared {
    view: NodeView,
    /// Events fetched and not yet taken: (node id, `boot_ms`, events).
    events: Vec<(u64, u64, Vec<crate::api::dto::EventDto>)>,
}

struct Poller {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a poller's event reads stand.
#[derive(Default)]
struct Cursor {
    boot_ms: u64,
    last_seq: u64,
}

fn spawn(api: String, access: Access) -> Poller {
    let shared = Arc::new(Mutex::new(Shared {
        view: NodeView {
            api: api.clone(),
            error: Some("not asked yet".into()),
            ..NodeView::default()
        },
        events: Vec::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let (sh, st) = (Arc::clone(&shared), Arc::clone(&stop));
    let name = format!("top {}", super::snapshot::host_port(&api));
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let client = Client::with_timeout(&api, &access, CALL_TIMEOUT);
        let mut cursor = Cursor::default();
        let mut prev: Option<(Instant, Counters)> = None;
        while !st.load(Ordering::Relaxed) {
            let started = Instant::now();
            poll_once(&client, &sh, &mut cursor, &mut prev);
            let next = started + EVERY;
            while !st.load(Ordering::Relaxed) && Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
            }
        }
    });
    if let Err(e) = spawned {
        lock(&shared).view.error = Some(format!("cannot start its poller thread: {e}"));
    }
    Poller { shared, stop }
}

/// A short form of a client error for a table cell or a note.
fn short(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn poll_once(
    client: &Client,
    sh: &Mutex<Shared>,
    cursor: &mut Cursor,
    prev: &mut Option<(Instant, Counters)>,
) {
    let status = match client.get::<StatusDto>("/v1/status") {
        Ok(s) => s,
        Err(e) => {
            let mut g = lock(sh);
            g.view.error = Some(short(&e));
            g.view.rates = None;
            *prev = None;
            return;
        }
    };
    let mut notes = Vec::new();
    let metrics = match client.get_text("/metrics") {
        Ok(t) => prom::parse(&t),
        Err(e) => {
            notes.push(format!("metrics: {}", short(&e)));
            Vec::new()
        }
    };
    let now = Instant::now();
    let counters = Counters::read(&metrics);
    let rates = prev
        .as_ref()
        .map(|(t, c)| counters.rates_since(c, now.duration_since(*t).as_secs_f64()));
    if !metrics.is_empty() {
        *prev = Some((now, counters));
    }
    let events = match client.get::<EventsDto>(&format!("/v1/events?since={}", cursor.last_seq)) {
        // A restart began its numbering again: read it from the start.
        Ok(ev) if ev.boot_ms != cursor.boot_ms && cursor.last_seq > 0 => {
            client.get::<EventsDto>("/v1/events?since=0")
        }
        other => other,
    };
    let events = match events {
        Ok(ev) => {
            cursor.boot_ms = ev.boot_ms;
            cursor.last_seq = ev.last_seq;
            Some(ev)
        }
        Err(e) => {
            notes.push(format!("events: {}", short(&e)));
            None
        }
    };
    let artifacts = match client.get::<Vec<ArtifactDto>>("/v1/artifacts") {
        Ok(a) => Some(a),
        Err(e) => {
            notes.push(format!("artifacts: {}", short(&e)));
            None
        }
    };
    let mut g = lock(sh);
    if let Some(ev) = events {
        if !ev.events.is_empty() {
            g.events.push((ev.node_id, ev.boot_ms, ev.events));
        }
    }
    g.view = NodeView {
        api: std::mem::take(&mut g.view.api),
        status: Some(status),
        error: None,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        rates,
        metrics,
        artifacts,
    };
}

/// The pollers of every member, keyed by API base URL.
pub struct Pollers {
    access: Access,
    seeds: Vec<String>,
    /// `--nodes`: poll exactly the seeds.
    fixed: bool,
    running: BTreeMap<String, Poller>,
    events: EventLog,
}

impl Pollers {
    /// Starts polling `seeds` (`host:port` or URLs).
    #[must_use]
    pub fn new(seeds: &[String], fixed: bool, access: Access) -> Pollers {
        let mut p = Pollers {
            access,
            seeds: seeds.iter().map(|s| base_url(s)).collect(),
            fixed,
            running: BTreeMap::new(),
            events: EventLog::default(),
        };
        p.reconcile(&[]);
        p
    }

    /// Polls the seeds plus (unless fixed) the members `views` report;
    /// stops pollers of members that left.
    fn reconcile(&mut self, views: &[NodeView]) {
        let mut want: Vec<String> = self.seeds.clone();
        if !self.fixed {
            for s in views
                .iter()
                .filter(|v| v.error.is_none())
                .filter_map(|v| v.status.as_ref())
            {
                want.extend(s.members.iter().map(|m| base_url(&m.api)));
            }
        }
        self.running.retain(|api, _| want.contains(api));
        for api in want {
            if !self.running.contains_key(&api) {
                let p = spawn(api.clone(), self.access.clone());
                self.running.insert(api, p);
            }
        }
    }

    /// What every poller saw last, with the events gathered so far; then
    /// follows membership for the next round.
    pub fn take(&mut self) -> (Vec<NodeView>, &EventLog) {
        let mut views = Vec::with_capacity(self.running.len());
        for p in self.running.values() {
            let mut g = lock(&p.shared);
            for (node, boot, evs) in std::mem::take(&mut g.events) {
                self.events.add(node, boot, &evs);
            }
            views.push(g.view.clone());
        }
        self.reconcile(&views);
        (views, &self.events)
    }
}
