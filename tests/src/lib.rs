//! # Layout
//! Shared helpers for the integration test binaries, one per area
//! (`tests/<area>/main.rs`, declared as `[[test]]` in tests/Cargo.toml, so
//! each area builds once with its modules). They drive the real `tandem`
//! binary in a [`Lab`] through its CLI contracts (DESIGN.md section 4) only;
//! the `--json` output is read as plain JSON, as a script would.
//!
//! Helpers panic with context instead of returning `Result` (STYLE.md,
//! Tests): a panicking test drops its `Lab`, which prints the daemon logs.
//! Mark the phases of a test with [`phase`].
//!
//! - [`metrics`]: scraping a node's `/metrics` and reading counters.
//! - [`clients`]: udhcpc with raw lease variables, ISC dhclient one-shot.
//! - [`cluster`]: forming a three-node cluster by join, agreeing views,
//!   where the VIP sits, replicated lease tables.
//! - [`qemu`]: PXE-booting QEMU VMs, the kernel and initramfs they load.
//! - [`wire`]: tcpdump captures and the DHCP replies in them (scapy),
//!   perfdhcp as a relay, broadcast DISCOVER probes.

pub mod clients;
pub mod cluster;
pub mod metrics;
pub mod qemu;
pub mod wire;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
pub use lab::{self, describe_output, wait_until, DhcpLease, Lab, LabProcess, SERVICE_TOML};
use serde_json::Value;

/// Prints `=== phase: NAME`, so a failing CI log reads like a story.
pub fn phase(name: &str) {
    println!("=== phase: {name}");
}

/// The `tandem` binary under test (`TANDEM_BIN`, set by `cargo xtask test`,
/// else `target/release/tandem`). Panics with the fix if it is missing.
#[must_use]
pub fn tandem_bin() -> PathBuf {
    let bin = lab::tandem_bin();
    assert!(
        bin.exists(),
        "tandem binary {} is missing: run `cargo xtask test`, or `cargo build --release -p tandem`, \
         or set TANDEM_BIN",
        bin.display()
    );
    bin
}

/// Builds a lab and starts `tandem daemon` on every node with its standard
/// `node.toml`.
#[must_use]
pub fn start_lab(nodes: usize, clients: usize) -> Lab {
    let bin = tandem_bin();
    let lab = Lab::builder()
        .nodes(nodes)
        .clients(clients)
        .tandem_bin(&bin)
        .build()
        .expect("building the lab");
    for i in 1..=nodes {
        lab.start_node(i, &bin)
            .unwrap_or_else(|e| panic!("starting node {i}: {e:#}"));
    }
    lab
}

/// Parses the stdout of a successful `--json` command.
pub fn json(out: &Output) -> Result<Value> {
    ensure!(
        out.status.success(),
        "command failed: {}",
        describe_output(out)
    );
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not JSON: {}", describe_output(out)))
}

/// `tandem status --json` of node `i`.
pub fn status(lab: &Lab, i: usize) -> Result<Value> {
    json(&lab.tandem(i, &["status", "--json"])?)
}

/// Whether node `i` answers and reports `"serving": true`. A node that does
/// not answer is not serving.
#[must_use]
pub fn is_serving(lab: &Lab, i: usize) -> bool {
    status(lab, i).is_ok_and(|s| s.get("serving").and_then(Value::as_bool) == Some(true))
}

/// Whether node `i` answers and reports itself the leader (of its own
/// cluster, for a fresh node: it does not serve before a service config).
#[must_use]
pub fn is_leader(lab: &Lab, i: usize) -> bool {
    status(lab, i).is_ok_and(|s| s.get("role").and_then(Value::as_str) == Some("leader"))
}

/// The nodes that report serving right now.
#[must_use]
pub fn serving_nodes(lab: &Lab) -> Vec<usize> {
    (1..=lab.node_count())
        .filter(|&i| is_serving(lab, i))
        .collect()
}

/// Waits until exactly one node serves and returns it. Panics after `timeout`
/// with what each node reported.
#[must_use]
pub fn wait_single_server(lab: &Lab, timeout: Duration) -> usize {
    let mut last = Vec::new();
    if wait_until(timeout, || {
        last = serving_nodes(lab);
        last.len() == 1
    }) {
        return last[0];
    }
    let views: Vec<String> = (1..=lab.node_count())
        .map(|i| match status(lab, i) {
            Ok(v) => format!("node {i}: {v}"),
            Err(e) => format!("node {i}: {e:#}"),
        })
        .collect();
    panic!(
        "no single serving node after {timeout:?} (serving: {last:?})\n{}",
        views.join("\n")
    );
}

/// Writes `toml` as `<node dir>/service.toml` and runs `tandem apply` on node
/// `i`; panics if it fails. `apply` refuses a profile that names an artifact
/// no node holds, so the profile files it names are put first
/// ([`put_profile_artifacts`]).
pub fn apply(lab: &Lab, i: usize, toml: &str) {
    put_profile_artifacts(lab, i, toml);
    let path = lab.node_dir(i).join("service.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let out = lab
        .tandem(i, &["apply", path.to_str().expect("lab paths are UTF-8")])
        .unwrap_or_else(|e| panic!("tandem apply on node {i}: {e:#}"));
    assert!(
        out.status.success(),
        "tandem apply on node {i} failed: {}",
        describe_output(&out)
    );
}

/// The artifact names of a service config's profiles: the values of its
/// `bios`, `uefi_x64`, `uefi_arm64`, `kernel` and `initrd` lines that are not URLs.
#[must_use]
pub fn profile_files(toml: &str) -> Vec<String> {
    toml.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
            (["bios", "uefi_x64", "uefi_arm64", "kernel", "initrd"].contains(&k.trim())
                && !v.contains("://"))
            .then(|| v.to_owned())
        })
        .collect()
}

/// Puts a small fixture file (its own name and a line of text) under each
/// profile file name of `toml` that node `i` does not list yet.
pub fn put_profile_artifacts(lab: &Lab, i: usize, toml: &str) {
    let listed = json(
        &lab.tandem(i, &["artifact", "list", "--json"])
            .unwrap_or_else(|e| panic!("tandem artifact list on node {i}: {e:#}")),
    )
    .unwrap_or_else(|e| panic!("tandem artifact list --json on node {i}: {e:#}"));
    let have: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    for name in profile_files(toml) {
        if have.contains(&name.as_str()) {
            continue;
        }
        let path = lab.root().join("fixtures").join(&name);
        std::fs::create_dir_all(path.parent().expect("under the lab root"))
            .unwrap_or_else(|e| panic!("creating the fixture dir: {e}"));
        std::fs::write(&path, format!("tandem test fixture {name}\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let p = path.to_str().expect("lab paths are UTF-8");
        let out = lab
            .tandem(i, &["artifact", "put", p, "--name", &name])
            .unwrap_or_else(|e| panic!("tandem artifact put on node {i}: {e:#}"));
        assert!(
            out.status.success(),
            "tandem artifact put {name} on node {i} failed: {}",
            describe_output(&out)
        );
    }
    // `apply` refuses a profile whose files no node holds; the leader's own
    // holder report is a separate commit, so wait until every file has one.
    let files = profile_files(toml);
    let all_held = || {
        lab.tandem(i, &["artifact", "list", "--json"])
            .ok()
            .and_then(|o| json(&o).ok())
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|l| {
                files.iter().all(|f| {
                    l.iter().any(|a| {
                        a["name"].as_str() == Some(f.as_str())
                            && a["holders"].as_array().is_some_and(|h| !h.is_empty())
                    })
                })
            })
    };
    assert!(
        wait_until(Duration::from_secs(10), all_held),
        "profile files {files:?} not held by any node after 10 s"
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;

    fn output(code: i32, stdout: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.into(),
            stderr: b"oops".to_vec(),
        }
    }

    #[test]
    fn json_needs_success_and_json() {
        assert_eq!(
            json(&output(0, r#"{"serving": true}"#)).unwrap()["serving"],
            Value::Bool(true)
        );
        let err = format!(
            "{:#}",
            json(&output(3, r#"{"serving": true}"#)).unwrap_err()
        );
        assert!(err.contains("exit code 3") && err.contains("oops"), "{err}");
        assert!(json(&output(0, "serving: yes")).is_err());
    }

    /// The demo and the tests apply this file; the daemon must accept it.
    #[test]
    fn lab_service_config_is_valid() {
        let cfg = tandem::config::service::parse(SERVICE_TOML).unwrap();
        assert_eq!(cfg.subnets.len(), 1);
        assert_eq!(cfg.subnets[0].pools[0].len(), 200);
        assert!(cfg.profile("pxe").is_some());
        let files: Vec<String> = cfg
            .profiles
            .iter()
            .flat_map(|p| {
                tandem::model::profile_artifacts(p)
                    .into_iter()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(profile_files(SERVICE_TOML), files);
    }
}
