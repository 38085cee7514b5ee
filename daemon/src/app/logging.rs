//! The daemon's log lines (DESIGN.md section 6), to stderr (journald under
//! systemd), in one of two shapes with the same fields:
//!
//! ```text
//! text: 2026-12-02T05:50:00.123456Z  INFO tandem::raft: leader changed node_id=2 term=7 index=42 leader=Some(2)
//! json: {"timestamp":"2026-12-02T05:50:00.123456Z","level":"INFO","target":"tandem::raft",
//!        "message":"leader changed","node_id":2,"term":7,"index":42,"leader":"Some(2)"}
//! ```
//!
//! Every line carries `node_id`, and `term` and `index` once Raft has
//! started in this process: the event's own `term`/`index` if it has them
//! (a transition step names the index it reached), else this node's current
//! term and last log index ([`consensus::position`]). So every consensus,
//! membership, transition and lease line lines up across nodes, openraft's
//! own warnings included, and `tandem logs --merge` can order them.
//!
//! One formatter for both shapes, not tracing-subscriber's `json` feature:
//! that formatter writes only the fields an event has, and the stamp above is
//! the point; `serde_json` (already a dependency) writes the objects.
//!
//! Targets: consensus lines are `tandem::raft`, `tandem::consensus`,
//! `tandem::transition`, `tandem::vip` (and openraft's); per-packet debug is
//! `tandem::packet::{dhcp,tftp,http}`, so `TANDEM_LOG=info,tandem::packet=debug`
//! shows packets without touching the rest.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;
use crate::consensus;

/// Installs the process's subscriber: `TANDEM_LOG` (an `EnvFilter`) or
/// `info` with openraft's per-heartbeat chatter quieted, in `format`.
pub fn init(format: LogFormat, node_id: u64) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("info,{}", consensus::QUIET_OPENRAFT_LOG))
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .event_format(LineFormat { format, node_id })
        .init();
}

/// Formats one event as a text or JSON line (module docs).
pub struct LineFormat {
    pub format: LogFormat,
    pub node_id: u64,
}

/// One recorded field value, keeping numbers and booleans typed for JSON.
enum Val {
    /// A `&str` field: quoted in text.
    Str(String),
    /// A `?` or `%` field, already rendered.
    Shown(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
}

#[derive(Default)]
struct Fields {
    message: String,
    term: Option<u64>,
    index: Option<u64>,
    rest: Vec<(&'static str, Val)>,
}

impl Fields {
    fn put(&mut self, field: &Field, v: Val) {
        let name = field.name();
        if name == "message" {
            self.message = match v {
                Val::Str(s) | Val::Shown(s) => s,
                other => render_text(&other),
            };
            return;
        }
        if name.starts_with("log.") {
            return; // tracing-log's copies of the metadata
        }
        let num = match &v {
            Val::U64(n) => Some(*n),
            Val::I64(n) => u64::try_from(*n).ok(),
            Val::Str(s) | Val::Shown(s) => s.parse().ok(),
            _ => None,
        };
        match (name, num) {
            ("term", Some(n)) => self.term = Some(n),
            ("index", Some(n)) => self.index = Some(n),
            _ => self.rest.push((name, v)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Val::Shown(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Val::Str(value.to_owned()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Val::U64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Val::I64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Val::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Val::Bool(value));
    }
}

fn render_text(v: &Val) -> String {
    match v {
        Val::Str(s) => format!("{s:?}"),
        Val::Shown(s) => s.clone(),
        Val::U64(n) => n.to_string(),
        Val::I64(n) => n.to_string(),
        Val::F64(n) => n.to_string(),
        Val::Bool(b) => b.to_string(),
    }
}

fn to_json(v: Val) -> serde_json::Value {
    match v {
        Val::Str(s) | Val::Shown(s) => s.into(),
        Val::U64(n) => n.into(),
        Val::I64(n) => n.into(),
        Val::F64(n) => n.into(),
        Val::Bool(b) => b.into(),
    }
}

impl LineFormat {
    /// The line for an event with these fields, at `timestamp`, given this
    /// node's Raft `position` (None before Raft started). Without the newline.
    fn line(
        &self,
        timestamp: &str,
        meta: &tracing::Metadata<'_>,
        mut f: Fields,
        position: Option<(u64, u64)>,
    ) -> String {
        let term = f.term.or(position.map(|p| p.0));
        let index = f.index.or(position.map(|p| p.1));
        match self.format {
            LogFormat::Text => {
                let mut s = format!(
                    "{timestamp} {:>5} {}: {} node_id={}",
                    meta.level(),
                    meta.target(),
                    f.message,
                    self.node_id
                );
                if let Some(t) = term {
                    let _ = write!(s, " term={t}");
                }
                if let Some(i) = index {
                    let _ = write!(s, " index={i}");
                }
                for (k, v) in &f.rest {
                    let _ = write!(s, " {k}={}", render_text(v));
                }
                s
            }
            LogFormat::Json => {
                let mut m = serde_json::Map::new();
                m.insert("timestamp".into(), timestamp.into());
                m.insert("level".into(), meta.level().as_str().into());
                m.insert("target".into(), meta.target().into());
                m.insert("message".into(), std::mem::take(&mut f.message).into());
                m.insert("node_id".into(), self.node_id.into());
                if let Some(t) = term {
                    m.insert("term".into(), t.into());
                }
                if let Some(i) = index {
                    m.insert("index".into(), i.into());
                }
                for (k, v) in f.rest {
                    m.entry(k).or_insert_with(|| to_json(v));
                }
                serde_json::Value::Object(m).to_string()
            }
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        writeln!(
            w,
            "{}",
            self.line(&ts, event.metadata(), f, consensus::position())
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` under a subscriber with [`LineFormat`]; returns what it wrote.
    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .event_format(LineFormat { format, node_id: 3 })
            .finish();
        tracing::subscriber::with_default(sub, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_carry_node_term_index_and_typed_fields() {
        let out = capture(LogFormat::Json, || {
            tracing::info!(target: "tandem::transition", term = 7_u64, index = 42_u64, seconds = 0.5, why = "shutdown", ok = true, "stepping down");
        });
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["target"], "tandem::transition");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "stepping down");
        assert_eq!(v["node_id"], 3);
        assert_eq!(v["term"], 7);
        assert_eq!(v["index"], 42);
        assert_eq!(v["seconds"], 0.5);
        assert_eq!(v["why"], "shutdown");
        assert_eq!(v["ok"], true);
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 27, "{ts}");
    }

    #[test]
    fn text_lines_put_message_then_node_term_index() {
        let out = capture(LogFormat::Text, || {
            tracing::warn!(target: "tandem::raft", term = 9_u64, index = 3_u64, peer = 2_u64, error = %"refused", "peer lost");
        });
        let line = out.trim();
        assert!(
            line.ends_with(
                " WARN tandem::raft: peer lost node_id=3 term=9 index=3 peer=2 error=refused"
            ),
            "{line}"
        );
    }

    #[test]
    fn lines_without_their_own_term_get_the_nodes_position() {
        let f = LineFormat {
            format: LogFormat::Text,
            node_id: 1,
        };
        let meta = tracing::Metadata::new(
            "x",
            "tandem::raft",
            tracing::Level::INFO,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS)),
            tracing::metadata::Kind::EVENT,
        );
        let fields = || Fields {
            message: "leader changed".into(),
            ..Fields::default()
        };
        assert_eq!(
            f.line("T", &meta, fields(), Some((5, 80))),
            "T  INFO tandem::raft: leader changed node_id=1 term=5 index=80"
        );
        // Before Raft started: no stamp, no made-up zeros.
        assert_eq!(
            f.line("T", &meta, fields(), None),
            "T  INFO tandem::raft: leader changed node_id=1"
        );
        // The event's own index wins over the position.
        let mut own = fields();
        own.index = Some(77);
        assert_eq!(
            f.line("T", &meta, own, Some((5, 80))),
            "T  INFO tandem::raft: leader changed node_id=1 term=5 index=77"
        );
    }

    struct Cs;
    impl tracing::callsite::Callsite for Cs {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("not registered")
        }
    }
    static CS: Cs = Cs;
}
