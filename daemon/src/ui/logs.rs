//! `tandem logs --merge FILE...`: several nodes' logs as one story
//! (DESIGN.md section 6).
//!
//! Each file is one node's log, in time order, in any of these shapes (mixed
//! freely, line by line):
//! - the daemon's text lines: `TIME LEVEL target: message node_id=.. term=.. index=..`;
//! - its JSON lines (`--log-format json`), or tracing-subscriber's JSON shape
//!   (fields under `"fields"`);
//! - `journalctl -o short-iso` / `short-iso-precise` (the daemon's line after
//!   `host ident[pid]:`) and `journalctl -o json` (the line in `MESSAGE`).
//!
//! The files are stream-merged: one pending line per file in a heap, so
//! memory stays bounded by the number of files, not their length. Lines are
//! ordered by timestamp, ties by term, then index, then file order. A line
//! with no timestamp (a panic message, a backtrace, the lab's `===` markers)
//! stays right after the line before it in its file. Each output line is
//! prefixed by its node: the line's `node_id`, else a label of the file.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

/// One parsed log line.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Nanoseconds since the Unix epoch (UTC).
    pub at: i128,
    pub term: Option<u64>,
    pub index: Option<u64>,
    pub node: Option<u64>,
    /// The line as printed: text lines as they were, JSON rendered as text.
    pub text: String,
}

/// Parses one line; `None` for a line without a timestamp (it belongs to
/// the line before it).
#[must_use]
pub fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim_end_matches(['\r', '\n']);
    let t = line.trim_start();
    if t.starts_with('{') {
        let v: Value = serde_json::from_str(t).ok()?;
        return parse_json(&v);
    }
    let (first, rest) = t.split_once(' ')?;
    let at = parse_rfc3339(first)?;
    if let Some(inner) = journal_message(rest) {
        // short-iso: the daemon's own line, with its finer timestamp, if it parses.
        if let Some(e) = parse_line(inner) {
            return Some(e);
        }
        return Some(text_entry(at, inner));
    }
    Some(text_entry(at, t))
}

/// `host ident[pid]: message` (journalctl short formats) → `message`.
fn journal_message(rest: &str) -> Option<&str> {
    let rest = rest.trim_start();
    let (host, rest) = rest.split_once(' ')?;
    let (ident, msg) = rest.split_once(": ")?;
    let ok_ident = !ident.contains(' ') && (ident.ends_with(']') || !ident.contains('='));
    // Our own text lines have a LEVEL word here, not a host.
    let level = matches!(host, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR" | "");
    (ok_ident && !level).then_some(msg)
}

/// An entry for a text line: `key=N` fields read from its words.
fn text_entry(at: i128, line: &str) -> Entry {
    let num = |key: &str| {
        line.split(' ')
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    Entry {
        at,
        term: num("term"),
        index: num("index"),
        node: num("node_id"),
        text: line.to_owned(),
    }
}

fn parse_json(v: &Value) -> Option<Entry> {
    // journalctl -o json: the daemon's line is MESSAGE.
    if let Some(msg) = v.get("MESSAGE").and_then(Value::as_str) {
        if let Some(e) = parse_line(msg) {
            return Some(e);
        }
        let micros: i128 = v.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
        return Some(text_entry(micros * 1000, msg));
    }
    let ts = v.get("timestamp")?.as_str()?;
    let at = parse_rfc3339(ts)?;
    let fields = v.get("fields");
    let get = |k: &str| v.get(k).or_else(|| fields.and_then(|f| f.get(k)));
    let num = |k: &str| {
        get(k).and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        })
    };
    let level = get("level").and_then(Value::as_str).unwrap_or("");
    let target = get("target").and_then(Value::as_str).unwrap_or("");
    let message = get("message").and_then(Value::as_str).unwrap_or("");
    let (term, index, node) = (num("term"), num("index"), num("node_id"));
    let mut text = format!("{ts} {level:>5} {target}: {message}");
    if let Some(n) = node {
        let _ = write!(text, " node_id={n}");
    }
    if let Some(t) = term {
        let _ = write!(text, " term={t}");
    }
    if let Some(i) = index {
        let _ = write!(text, " index={i}");
    }
    let skip = [
        "timestamp",
        "level",
        "target",
        "message",
        "node_id",
        "term",
        "index",
        "fields",
        "span",
        "spans",
    ];
    let mut rest: Vec<(&String, &Value)> = Vec::new();
    for obj in [v.as_object(), fields.and_then(Value::as_object)]
        .into_iter()
        .flatten()
    {
        rest.extend(obj.iter().filter(|(k, _)| !skip.contains(&k.as_str())));
    }
    for (k, x) in rest {
        match x {
            Value::String(s) => {
                let _ = write!(text, " {k}={s}");
            }
            other => {
                let _ = write!(text, " {k}={other}");
            }
        }
    }
    Some(Entry {
        at,
        term,
        index,
        node,
        text,
    })
}

/// RFC 3339 (`2026-12-02T05:50:00.123456Z`, `+01:00`, journalctl's `+0000`,
/// a space for the `T`) to nanoseconds since the epoch, UTC.
#[must_use]
// y, mo, d, h, mi: the fields as RFC 3339 names them.
#[allow(clippy::many_single_char_names)]
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| -> Option<i64> {
        let part = s.get(from..from + n)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (h, mi, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let mut scaled = String::from(&frac[..frac.len().min(9)]);
        while scaled.len() < 9 {
            scaled.push('0');
        }
        nanos = scaled.parse().ok()?;
    }
    let offset_secs: i64 = match s.get(i..)? {
        "Z" | "z" | "" => 0,
        tz => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = tz[1..].replace(':', "");
            if !(hm.len() == 4 || hm.len() == 2) || !hm.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let oh: i64 = hm[..2].parse().ok()?;
            let om: i64 = if hm.len() == 4 {
                hm[2..].parse().ok()?
            } else {
                0
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Sort key of a line in the merge: time, term, index, then file order.
type Key = (i128, u64, u64, usize);

/// How far a line may come before the one above it in the same file
/// without a warning. Threads stamp a line's time before they write it, so
/// lines of one busy daemon can land a little out of order; the merge keeps
/// them as close to their place as a stream allows.
const WRITE_SKEW_NS: i128 = 50_000_000;

fn key(e: &Entry, file: usize) -> Key {
    (e.at, e.term.unwrap_or(0), e.index.unwrap_or(0), file)
}

/// One input: its label and reader, and its next timestamped line.
struct Input<R> {
    label: String,
    lines: io::Lines<R>,
    head: Option<Entry>,
    /// Lines that came before the one before them (the merge assumes each
    /// file is in time order; counted to warn).
    out_of_order: u64,
}

/// What a merge saw: lines written and, per input, lines out of time order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub lines: u64,
    pub out_of_order: Vec<(String, u64)>,
}

/// Merges `inputs` (label, reader) into `out`, as the module docs say.
pub fn merge<R: BufRead>(inputs: Vec<(String, R)>, out: &mut impl Write) -> io::Result<MergeStats> {
    let width = inputs
        .iter()
        .map(|(l, _)| l.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let mut ins: Vec<Input<R>> = inputs
        .into_iter()
        .map(|(label, r)| Input {
            label,
            lines: r.lines(),
            head: None,
            out_of_order: 0,
        })
        .collect();
    let mut stats = MergeStats::default();
    let mut heap = BinaryHeap::new();
    for (i, input) in ins.iter_mut().enumerate() {
        // Lines before a file's first timestamped line open the story.
        let label = input.label.clone();
        if let Some(e) = advance(input, out, &label, width, &mut stats)? {
            heap.push(Reverse((key(&e, i), i)));
            input.head = Some(e);
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let input = &mut ins[i];
        let e = input.head.take().expect("a file in the heap has a head");
        let label = e
            .node
            .map_or_else(|| input.label.clone(), |n| format!("node {n}"));
        writeln!(out, "{label:<width$} | {}", e.text)?;
        stats.lines += 1;
        // Its continuation lines follow it, under the same label.
        if let Some(next) = advance(input, out, &label, width, &mut stats)? {
            if next.at + WRITE_SKEW_NS < e.at {
                input.out_of_order += 1;
            }
            heap.push(Reverse((key(&next, i), i)));
            input.head = Some(next);
        }
    }
    stats.out_of_order = ins
        .into_iter()
        .filter(|i| i.out_of_order > 0)
        .map(|i| (i.label, i.out_of_order))
        .collect();
    Ok(stats)
}

/// Reads `input` up to its next timestamped line, writing the lines
/// without one (they belong to the line before) under `label`.
fn advance<R: BufRead>(
    input: &mut Input<R>,
    out: &mut impl Write,
    label: &str,
    width: usize,
    stats: &mut MergeStats,
) -> io::Result<Option<Entry>> {
    for line in input.lines.by_ref() {
        let line = match line {
            Ok(l) => l,
            // A binary or truncated line does not end the story.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
            Err(e) => return Err(e),
        };
        if let Some(e) = parse_line(&line) {
            return Ok(Some(e));
        }
        if !line.trim().is_empty() {
            writeln!(out, "{label:<width$} | {line}")?;
            stats.lines += 1;
        }
    }
    Ok(None)
}

/// Labels for files without `node_id` in their lines: the file name, or
/// with its parent directory when two files share a name (`n1/daemon.log`).
#[must_use]
pub fn labels(paths: &[PathBuf]) -> Vec<String> {
    let name = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let names: Vec<String> = paths.iter().map(|p| name(p)).collect();
    paths
        .iter()
        .zip(&names)
        .map(|(p, n)| {
            if names.iter().filter(|m| *m == n).count() == 1 {
                return n.clone();
            }
            match p.parent().and_then(Path::file_name) {
                Some(dir) => format!("{}/{n}", dir.to_string_lossy()),
                None => p.display().to_string(),
            }
        })
        .collect()
}

/// `tandem logs --merge FILE...`.
#[must_use]
pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut inputs = Vec::new();
    for (p, label) in files.iter().zip(labels(files)) {
        match std::fs::File::open(p) {
            Ok(f) => inputs.push((label, io::BufReader::new(f))),
            Err(e) => {
                eprintln!("tandem: cannot read {}: {e}", p.display());
                return ExitCode::from(1);
            }
        }
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match merge(inputs, &mut out).and_then(|s| out.flush().map(|()| s)) {
        Ok(stats) => {
            for (label, n) in stats.out_of_order {
                eprintln!(
                    "tandem: {label}: {n} line(s) earlier than the line before them; the merge \
                     expects each file in time order (sort it first)"
                );
            }
            ExitCode::SUCCESS
        }
        // A closed pipe (`| head`) is not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: logs --merge: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_in_the_shapes_logs_use() {
        let z = parse_rfc3339("2026-12-02T05:50:00.123456Z").unwrap();
        assert_eq!(z, 1_796_190_600_123_456_000);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-12-02T06:50:00.123456+01:00"), Some(z));
        assert_eq!(
            parse_rfc3339("2026-12-02T05:50:00+0000"),
            Some(z - 123_456_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-02 05:50:00.1234567891Z"),
            Some(z - 123_456_000 + 123_456_789)
        );
        for bad in [
            "2026-12-02",
            "2026-13-02T05:50:00Z",
            "2026-12-02T05:50:00.Z",
            "2026-12-02T05:50:00X",
            "2026-12-02T05:50:00+1",
            "=== lab: starting",
            "2026-1a-02T05:50:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn text_json_and_journal_lines_parse_to_the_same_entry() {
        let text = "2026-12-02T05:50:00.000001Z  INFO tandem::raft: leader changed node_id=2 term=7 index=42 leader=Some(2)";
        let e = parse_line(text).unwrap();
        assert_eq!((e.term, e.index, e.node), (Some(7), Some(42), Some(2)));
        assert_eq!(e.text, text);
        let json = r#"{"timestamp":"2026-12-02T05:50:00.000001Z","level":"INFO","target":"tandem::raft","message":"leader changed","node_id":2,"term":7,"index":42,"leader":"Some(2)"}"#;
        let j = parse_line(json).unwrap();
        assert_eq!(j, e, "JSON renders as the text line");
        // tracing-subscriber's own JSON shape: fields nested.
        let nested = r#"{"timestamp":"2026-12-02T05:50:00.000001Z","level":"INFO","fields":{"message":"leader changed","term":7,"index":42},"target":"tandem::raft"}"#;
        let n = parse_line(nested).unwrap();
        assert_eq!(
            (n.at, n.term, n.index, n.node),
            (e.at, Some(7), Some(42), None)
        );
        // journalctl -o short-iso-precise, and -o json.
        let short = format!("2026-12-02T05:50:00.000001+0000 node2 tandem[812]: {text}");
        assert_eq!(parse_line(&short).unwrap(), e);
        let journal = serde_json::json!({"__REALTIME_TIMESTAMP": "1796190600000001", "MESSAGE": text, "_HOSTNAME": "node2"});
        assert_eq!(parse_line(&journal.to_string()).unwrap(), e);
        // A journal line whose message is not the daemon's keeps journald's time.
        let other = parse_line("2026-12-02T05:50:01+0000 node2 systemd[1]: Started tandem.service")
            .unwrap();
        assert_eq!(other.text, "Started tandem.service");
        assert_eq!(other.at, e.at - 1000 + 1_000_000_000);
        // No timestamp: a continuation.
        assert_eq!(parse_line("thread 'raft' panicked at src/x.rs:1:1:"), None);
        assert_eq!(parse_line("=== lab: starting node 1"), None);
        assert_eq!(parse_line("{not json"), None);
    }

    fn merged(files: &[&str]) -> (Vec<String>, MergeStats) {
        let inputs = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    format!("f{}", i + 1),
                    io::Cursor::new(f.as_bytes().to_vec()),
                )
            })
            .collect();
        let mut out = Vec::new();
        let stats = merge(inputs, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_owned).collect(), stats)
    }

    #[test]
    fn merge_orders_by_time_then_term_then_index_and_keeps_continuations() {
        let a = "\
=== lab: starting node 1
2026-12-02T05:50:00.000100Z  INFO tandem::transition: stepping down node_id=1 term=3 index=10
2026-12-02T05:50:00.000300Z ERROR tandem::raft: stopped node_id=1 term=3 index=10
  caused by: disk full
";
        let b = r#"{"timestamp":"2026-12-02T05:50:00.000050Z","level":"INFO","target":"tandem::raft","message":"x","node_id":2,"term":3,"index":9}
{"timestamp":"2026-12-02T05:50:00.000200Z","level":"INFO","target":"tandem::raft","message":"leader changed","node_id":2,"term":4,"index":11}
{"timestamp":"2026-12-02T05:50:00.000200Z","level":"INFO","target":"tandem::transition","message":"becoming leader","node_id":2,"term":4,"index":12}
"#;
        // Same instant as b's two lines, lower term: first of the three.
        let c = "2026-12-02T05:50:00.000200Z  INFO tandem::raft: leader changed term=3 index=11\n";
        let (lines, stats) = merged(&[a, b, c]);
        let want = [
            "f1      | === lab: starting node 1",
            "node 2  | 2026-12-02T05:50:00.000050Z  INFO tandem::raft: x node_id=2 term=3 index=9",
            "node 1  | 2026-12-02T05:50:00.000100Z  INFO tandem::transition: stepping down node_id=1 term=3 index=10",
            "f3      | 2026-12-02T05:50:00.000200Z  INFO tandem::raft: leader changed term=3 index=11",
            "node 2  | 2026-12-02T05:50:00.000200Z  INFO tandem::raft: leader changed node_id=2 term=4 index=11",
            "node 2  | 2026-12-02T05:50:00.000200Z  INFO tandem::transition: becoming leader node_id=2 term=4 index=12",
            "node 1  | 2026-12-02T05:50:00.000300Z ERROR tandem::raft: stopped node_id=1 term=3 index=10",
            "node 1  |   caused by: disk full",
        ];
        assert_eq!(lines, want);
        assert_eq!(stats.lines, 8);
        assert!(stats.out_of_order.is_empty());
    }

    #[test]
    fn a_file_out_of_time_order_is_reported() {
        let a = "2026-12-02T05:50:02Z  INFO t: b\n2026-12-02T05:50:01Z  INFO t: a\n";
        let (lines, stats) = merged(&[a, ""]);
        assert_eq!(lines.len(), 2);
        assert_eq!(stats.out_of_order, vec![("f1".to_owned(), 1)]);
    }

    #[test]
    fn labels_name_files_apart() {
        let ps = [
            PathBuf::from("/tmp/lab/n1/daemon.log"),
            PathBuf::from("/tmp/lab/n2/daemon.log"),
            PathBuf::from("/tmp/other.json"),
        ];
        assert_eq!(
            labels(&ps),
            ["n1/daemon.log", "n2/daemon.log", "other.json"]
        );
    }
}
