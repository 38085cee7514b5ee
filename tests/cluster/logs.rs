//! Logs that line up (issue 9, item 4): three nodes log JSON (`[log] format
//! = "json"` in node.toml) to their files; the leader is stopped (SIGTERM, so
//! it steps down and says so); `tandem logs --merge` of the three files then
//! tells the failover as one story in order: the old leader's step-down, the
//! election seen by a survivor, the new leader's transition to serving, each
//! with term and index. Every consensus line in the JSON carries both.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tandem_tests::cluster::{three_node_cluster_with, wait_agreed_leader, wait_one_serving_among};
use tandem_tests::{apply, describe_output, phase, tandem_bin, Lab, SERVICE_TOML};

use super::{AGREE_TIMEOUT, FAILOVER_TIMEOUT};

/// Targets of consensus, membership and transition lines (DESIGN.md section 6).
const CONSENSUS: [&str; 4] = [
    "tandem::raft",
    "tandem::consensus",
    "tandem::transition",
    "openraft",
];

fn log_paths(lab: &Lab) -> Vec<PathBuf> {
    (1..=3).map(|i| lab.node_log_path(i)).collect()
}

/// One merged line: node label and the line's text.
struct Line {
    node: String,
    text: String,
}

impl Line {
    fn field(&self, key: &str) -> Option<u64> {
        self.text
            .split(' ')
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    }
}

fn merge(lab: &Lab) -> Vec<Line> {
    let mut cmd = Command::new(tandem_bin());
    cmd.args(["logs", "--merge"]).args(log_paths(lab));
    let out = cmd.output().expect("running tandem logs --merge");
    assert!(
        out.status.success(),
        "tandem logs --merge failed: {}",
        describe_output(&out)
    );
    assert!(
        out.stderr.is_empty(),
        "every file was in time order: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (node, text) = l
                .split_once(" | ")
                .unwrap_or_else(|| panic!("merged line without a node prefix: {l:?}"));
            Line {
                node: node.trim().to_owned(),
                text: text.to_owned(),
            }
        })
        .collect()
}

/// The position in `lines` of the first line at or after `from` that is
/// node `node`'s and contains `what` (with `term` at least `min_term`).
fn find(lines: &[Line], from: usize, node: usize, what: &str, min_term: u64) -> usize {
    let label = format!("node {node}");
    let found = lines.iter().enumerate().skip(from).find(|(_, l)| {
        l.node == label && l.text.contains(what) && l.field("term").unwrap_or(0) >= min_term
    });
    if let Some((i, _)) = found {
        return i;
    }
    let tail: Vec<String> = lines
        .iter()
        .skip(from)
        .map(|l| format!("{} | {}", l.node, l.text))
        .collect();
    panic!(
        "no {what:?} from node {node} (term >= {min_term}) after merged line {from}:\n{}",
        tail.join("\n")
    )
}

#[test]
fn merged_json_logs_tell_a_failover_in_order_with_term_and_index() {
    let lab = three_node_cluster_with(0, "[log]\nformat = \"json\"\n");
    let old = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);
    phase(&format!("apply the service config through node {old}"));
    apply(&lab, old, SERVICE_TOML);
    let (serving, _) = wait_one_serving_among(&lab, &[1, 2, 3], FAILOVER_TIMEOUT);
    assert_eq!(serving, old);

    phase(&format!(
        "SIGTERM the leader, node {old}: it steps down, the others elect"
    ));
    let exit = lab
        .kill_node(old, libc::SIGTERM)
        .expect("stopping the leader");
    assert!(exit.success(), "{exit:?}");
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != old).collect();
    let (new, took) = wait_one_serving_among(&lab, &survivors, FAILOVER_TIMEOUT);
    println!("node {new} serves {took:?} after node {old} stopped");

    phase("every consensus line of every node's JSON log has term and index");
    let mut consensus_lines = 0;
    for (i, path) in log_paths(&lab).iter().enumerate() {
        let text = std::fs::read_to_string(path).expect("reading a daemon log");
        for line in text.lines() {
            if line.starts_with("=== lab:") {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("node {}: not a JSON line ({e}): {line}", i + 1));
            assert_eq!(v["node_id"], i + 1, "{line}");
            let target = v["target"].as_str().unwrap_or_default();
            if CONSENSUS.iter().any(|t| target.starts_with(t)) {
                consensus_lines += 1;
                assert!(
                    v["term"].is_u64() && v["index"].is_u64(),
                    "node {}: consensus line without term and index: {line}",
                    i + 1
                );
            }
        }
    }
    println!("{consensus_lines} consensus lines, each with term and index");
    assert!(consensus_lines > 20, "{consensus_lines}");

    phase("tandem logs --merge: the failover as one story, in order");
    let lines = merge(&lab);
    let down = find(&lines, 0, old, "stepping down", 1);
    assert!(
        lines[down].text.contains("why=shutdown"),
        "{}",
        lines[down].text
    );
    let term = lines[down].field("term").expect("the step-down has a term");
    let index = lines[down].field("index").expect("and an index");
    let elected = find(&lines, down, new, "leader changed", term + 1);
    let becoming = find(&lines, elected, new, "becoming leader", term + 1);
    let served = find(&lines, becoming, new, "step 5: serving", term + 1);
    for i in [down, elected, becoming, served] {
        println!("{:>5}: {} | {}", i, lines[i].node, lines[i].text);
    }
    let new_term = lines[served].field("term").expect("term");
    assert!(
        lines[served].field("index").expect("index") >= index,
        "the new leader serves from at least the old leader's last index"
    );
    for l in [elected, becoming] {
        let t = lines[l].field("term").expect("term");
        assert!((term + 1..=new_term).contains(&t), "{}", lines[l].text);
    }
    // The whole story is in time order.
    let times: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.text.split(' ').next())
        .filter(|t| t.ends_with('Z'))
        .collect();
    // Within a file, threads stamp a line before they write it, so lines of
    // one daemon may be a little out of order (`tandem logs` warns past
    // 50 ms, and `merge` above asserts it did not).
    let skewed = times
        .windows(2)
        .find(|w| w[0] > w[1] && !within_skew(w[1], w[0]));
    assert!(
        skewed.is_none(),
        "merged lines out of time order: {skewed:?}"
    );
    // Each node is named by its node_id.
    for n in 1..=3 {
        let label = format!("node {n}");
        assert!(lines.iter().any(|l| l.node == label), "no line of {label}");
    }
}

/// Whether RFC 3339 UTC time `early` is at most 50 ms before `late`, on the
/// same day.
fn within_skew(early: &str, late: &str) -> bool {
    let secs = |t: &str| -> Option<(String, f64)> {
        let (day, time) = t.trim_end_matches('Z').split_once('T')?;
        let mut p = time.split(':');
        let h: f64 = p.next()?.parse().ok()?;
        let m: f64 = p.next()?.parse().ok()?;
        let s: f64 = p.next()?.parse().ok()?;
        Some((day.to_owned(), h * 3600.0 + m * 60.0 + s))
    };
    match (secs(early), secs(late)) {
        (Some((d1, a)), Some((d2, b))) => d1 == d2 && b - a <= 0.05,
        _ => false,
    }
}
