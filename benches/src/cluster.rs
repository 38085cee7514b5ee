//! tandem as a cluster of several nodes in one lab: forming it the way an
//! operator does (every node starts as a cluster of one, the others `tandem
//! cluster join` the first), and reading who leads from every node's
//! `tandem status --json`.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use lab::{describe_output, API_PORT};
use serde_json::Value;

use crate::{tail, wait_for, Bench};

/// How long a fresh node may take to serve as a cluster of one.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes may take to agree on a leader after a join, a
/// restart or a heal.
pub const AGREE_TIMEOUT: Duration = Duration::from_secs(30);

/// `tandem status --json` of node `i`.
pub fn status(bench: &Bench, i: usize) -> Result<Value> {
    let out = bench.lab.tandem(i, &["status", "--json"])?;
    ensure!(
        out.status.success(),
        "tandem status --json on node {i}: {}",
        describe_output(&out)
    );
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("tandem status --json on node {i} printed no JSON"))
}

/// The leader all of `nodes` agree on right now: every one names the same
/// leader, which is one of them and says "leader" while the others say
/// "follower", and each lists all of `nodes` as voting members. `None`
/// while they do not agree or one does not answer.
#[must_use]
pub fn agreed_leader(bench: &Bench, nodes: &[usize]) -> Option<usize> {
    let views: Vec<Value> = nodes
        .iter()
        .map(|&i| status(bench, i).ok())
        .collect::<Option<_>>()?;
    lab::node::agreed_leader(&views, nodes)
}

/// Waits until `nodes` agree on a leader (see [`agreed_leader`]) and it
/// reports serving; returns it.
pub fn wait_leader_serving(bench: &Bench, nodes: &[usize], timeout: Duration) -> Result<usize> {
    let mut found = None;
    let waited = wait_for(timeout, "the nodes to agree on one serving leader", || {
        found = agreed_leader(bench, nodes)
            .filter(|&l| status(bench, l).is_ok_and(|v| v["serving"].as_bool() == Some(true)));
        Ok(found.is_some())
    });
    match (waited, found) {
        (Ok(()), Some(l)) => Ok(l),
        (Err(e), _) => Err(e.context(describe(bench, nodes))),
        (Ok(()), None) => unreachable!("wait_for returns Ok only once found is set"),
    }
}

/// Every node's status, one line each, for error messages.
#[must_use]
pub fn describe(bench: &Bench, nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|&i| match status(bench, i) {
            Ok(v) => format!("node {i}: {v}"),
            Err(e) => format!("node {i}: {e:#}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts tandem on every one of `nodes` with an empty data dir, joins the
/// others to the first, waits until all of them agree on a leader, applies
/// `service_toml` and waits until the leader serves. Returns the leader.
pub fn form(bench: &Bench, nodes: &[usize], service_toml: &str) -> Result<usize> {
    let (&first, rest) = nodes.split_first().context("a cluster needs a node")?;
    for &i in nodes {
        let data = bench.lab.node_data_dir(i);
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {}", data.display()))?;
        }
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        bench.lab.start_node(i, &bench.tandem_bin)?;
    }
    for &i in nodes {
        wait_serving_alone(bench, i)?;
    }
    let seed = format!("{}:{API_PORT}", bench.lab.node_ip(first));
    for &i in rest {
        let out = bench.lab.join(i, first)?;
        ensure!(
            out.status.success(),
            "tandem cluster join {seed} on node {i}: {}",
            describe_output(&out)
        );
    }
    // Nothing serves before a service config exists: agree first, apply, then serve.
    wait_for(AGREE_TIMEOUT, "the nodes to agree on one leader", || {
        Ok(agreed_leader(bench, nodes).is_some())
    })
    .map_err(|e| e.context(describe(bench, nodes)))?;
    let service = bench.lab.node_dir(first).join("service.toml");
    std::fs::write(&service, service_toml)
        .with_context(|| format!("writing {}", service.display()))?;
    let service = service.to_str().context("lab path is not UTF-8")?;
    // Any member takes the write: a follower's CLI follows the redirect to the leader.
    let out = bench.lab.tandem(first, &["apply", service])?;
    ensure!(
        out.status.success(),
        "tandem apply on node {first}: {}",
        describe_output(&out)
    );
    wait_leader_serving(bench, nodes, AGREE_TIMEOUT)
}

/// Waits until node `i`, just started, leads (as a cluster of one).
fn wait_serving_alone(bench: &Bench, i: usize) -> Result<()> {
    let log = bench.lab.node_log_path(i);
    wait_for(
        START_TIMEOUT,
        &format!("node {i} to lead a cluster of one"),
        || {
            if let Some(p) = bench.lab.node_process(i) {
                if let Some(st) = p.try_status() {
                    bail!(
                        "tandem on node {i} exited ({st}); log {}:\n{}",
                        log.display(),
                        tail(&log, 30)
                    );
                }
            }
            // The API is not up for the first moments: not an error yet. A
            // fresh node leads its cluster of one but serves only once a
            // service config is applied.
            Ok(status(bench, i).is_ok_and(|v| v["role"].as_str() == Some("leader")))
        },
    )
}

/// Stops tandem on every one of `nodes` (SIGTERM; SIGKILL if it lingers).
pub fn stop(bench: &Bench, nodes: &[usize]) {
    for &i in nodes {
        bench.stop_tandem(i);
    }
}
