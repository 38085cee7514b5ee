//! Node helpers: each node's dir under the lab's temp root, its `node.toml`
//! (DESIGN.md section 3), its `tandem daemon` process, and the `tandem` CLI
//! aimed at its API.
//!
//! ```text
//! <root>/n<i>/node.toml      written by write_node_config
//!            /daemon.log     stdout+stderr of every run of the daemon, appended
//!            /data/          data_dir (redb, tls/ca.pem, admin.token)
//!            /artifacts/     artifact_dir
//! ```

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::spawn_with_env;
use crate::{lock, Lab, LabProcess, API_PORT, INTERFACE, RAFT_PORT, VIP_CIDR};

/// How long [`Lab::kill_node`] waits for the daemon to exit after the signal.
/// Generous: a clean shutdown walks the leadership transition in reverse.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `tandem` CLI call may take; it retries with back-off itself.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

impl Lab {
    /// `<root>/n<i>`: node `i`'s config, log, data and artifacts.
    #[must_use]
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.check_node(i);
        self.root.join(format!("n{i}"))
    }

    #[must_use]
    pub fn node_config_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("node.toml")
    }

    #[must_use]
    pub fn node_log_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("daemon.log")
    }

    #[must_use]
    pub fn node_data_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("data")
    }

    #[must_use]
    pub fn node_artifact_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("artifacts")
    }

    /// Node `i`'s admin API, e.g. `https://10.99.0.11:7481`.
    #[must_use]
    pub fn node_api(&self, i: usize) -> String {
        format!("https://{}:{API_PORT}", self.node_ip(i))
    }

    /// The cluster CA certificate node `i` holds (`<data>/tls/ca.pem`): what
    /// `curl --cacert` needs to talk to its API.
    #[must_use]
    pub fn node_ca_path(&self, i: usize) -> PathBuf {
        self.node_data_dir(i).join("tls").join("ca.pem")
    }

    /// Node `i`'s admin token file (`<data>/admin.token`).
    #[must_use]
    pub fn node_token_path(&self, i: usize) -> PathBuf {
        self.node_data_dir(i).join("admin.token")
    }

    /// Node `i`'s Raft address, e.g. `10.99.0.11:7480`.
    #[must_use]
    pub fn node_raft_addr(&self, i: usize) -> String {
        format!("{}:{RAFT_PORT}", self.node_ip(i))
    }

    /// The standard `node.toml` of node `i`, as text.
    #[must_use]
    pub fn node_config_toml(&self, i: usize) -> String {
        let ip = self.node_ip(i);
        // Debug formatting of a path string gives a quoted, escaped TOML basic
        // string for the plain ASCII paths the lab makes.
        format!(
            "node_id = {i}\n\
             data_dir = {data:?}\n\
             artifact_dir = {artifacts:?}\n\
             \n\
             [cluster]\n\
             listen = \"{ip}:{RAFT_PORT}\"\n\
             \n\
             [api]\n\
             listen = \"{ip}:{API_PORT}\"\n\
             \n\
             [service]\n\
             interface = \"{INTERFACE}\"\n\
             vip = \"{VIP_CIDR}\"\n",
            data = self.node_data_dir(i).display().to_string(),
            artifacts = self.node_artifact_dir(i).display().to_string(),
        )
    }

    /// Writes node `i`'s `node.toml`: the standard config, then `extra`
    /// verbatim. `extra` lands after the `[service]` table, so it should open
    /// with its own `[table]` header; to change a standard key, build the text
    /// from [`Lab::node_config_toml`] and use [`Lab::write_node_config_raw`].
    pub fn write_node_config(&self, i: usize, extra: &str) -> Result<PathBuf> {
        let mut text = self.node_config_toml(i);
        if !extra.is_empty() {
            text.push('\n');
            text.push_str(extra);
            if !extra.ends_with('\n') {
                text.push('\n');
            }
        }
        self.write_node_config_raw(i, &text)
    }

    /// Writes `text` as node `i`'s `node.toml`.
    pub fn write_node_config_raw(&self, i: usize, text: &str) -> Result<PathBuf> {
        let path = self.node_config_path(i);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Starts `tandem daemon --config <dir>/node.toml` in node `i`'s namespace,
    /// with stdout and stderr appended to `<dir>/daemon.log`. Writes the
    /// standard config first if there is none. Remembers `tandem_bin` for
    /// [`Lab::restart_node`] and [`Lab::tandem`].
    pub fn start_node(&self, i: usize, tandem_bin: &Path) -> Result<LabProcess> {
        self.start_node_with(i, tandem_bin, &[], &[])
    }

    /// [`Lab::start_node`], with `env` added to the daemon's environment and
    /// the command run through `wrapper` (e.g. `["setpriv", ...]`, which
    /// execs it: the PID stays the daemon's).
    pub fn start_node_with(
        &self,
        i: usize,
        tandem_bin: &Path,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Result<LabProcess> {
        let mut daemons = lock(&self.daemons);
        if let Some(p) = &daemons[i] {
            if p.is_running() {
                bail!("node {i} is already running (pid {})", p.pid());
            }
        }
        if !tandem_bin.exists() {
            bail!(
                "tandem binary {} does not exist; build it with `cargo build --release -p tandem` \
                 or set TANDEM_BIN",
                tandem_bin.display()
            );
        }
        let config = self.node_config_path(i);
        if !config.exists() {
            self.write_node_config(i, "")?;
        }
        *self.bin() = tandem_bin.to_path_buf();

        let log = self.node_log_path(i);
        // A marker line makes restarts visible when reading the merged log.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        writeln!(
            f,
            "=== lab: starting node {i}: {} daemon --config {}",
            tandem_bin.display(),
            config.display()
        )?;
        drop(f);

        let backtrace = std::env::var("RUST_BACKTRACE").unwrap_or_else(|_| "1".into());
        let mut args: Vec<&OsStr> = wrapper.iter().skip(1).map(OsStr::new).collect();
        if !wrapper.is_empty() {
            args.push(tandem_bin.as_os_str());
        }
        args.extend([
            OsStr::new("daemon"),
            OsStr::new("--config"),
            config.as_os_str(),
        ]);
        let program = wrapper.first().map_or(tandem_bin.as_os_str(), OsStr::new);
        let mut envs = vec![("RUST_BACKTRACE", backtrace.as_str())];
        envs.extend_from_slice(env);
        let p = spawn_with_env(&self.node_ns(i), program, &args, &log, &envs)?;
        lock(&self.processes).push(p.clone());
        daemons[i] = Some(p.clone());
        Ok(p)
    }

    /// Node `i`'s current daemon process, if it was started (it may have exited).
    #[must_use]
    pub fn node_process(&self, i: usize) -> Option<LabProcess> {
        self.check_node(i);
        lock(&self.daemons)[i].clone()
    }

    #[must_use]
    pub fn is_node_running(&self, i: usize) -> bool {
        self.node_process(i).is_some_and(|p| p.is_running())
    }

    /// Sends `sig` to node `i`'s daemon without waiting (e.g. SIGSTOP/SIGCONT
    /// to freeze a node). Fails if the node is not running.
    pub fn signal_node(&self, i: usize, sig: i32) -> Result<()> {
        let p = self
            .node_process(i)
            .with_context(|| format!("node {i} was never started"))?;
        if !p.signal(sig)? {
            bail!("node {i} is not running (exited: {:?})", p.try_status());
        }
        Ok(())
    }

    /// Sends `sig` to node `i`'s daemon and waits (up to 10 s) for it to
    /// exit. Fails if it was not running or does not exit in time.
    pub fn kill_node(&self, i: usize, sig: i32) -> Result<ExitStatus> {
        self.signal_node(i, sig)?;
        let p = self.node_process(i).expect("signal_node checked it");
        p.wait_timeout(STOP_TIMEOUT).with_context(|| {
            format!(
                "node {i} (pid {}) did not exit within {STOP_TIMEOUT:?} of signal {sig}",
                p.pid()
            )
        })
    }

    /// Stops node `i` (SIGTERM, then SIGKILL if it does not exit in time) if
    /// it runs, and starts it again with the same binary and config.
    pub fn restart_node(&self, i: usize) -> Result<LabProcess> {
        if self.is_node_running(i) && self.kill_node(i, libc::SIGTERM).is_err() {
            self.node_process(i)
                .expect("it was running")
                .kill_and_wait();
        }
        let bin = self.bin().clone();
        self.start_node(i, &bin)
    }

    /// Runs the `tandem` CLI in node `i`'s namespace against node `i`'s API:
    /// `tandem --api https://10.99.0.(10+i):7481 --config <dir>/node.toml
    /// ARGS..`, with a 30 s timeout. Through the node config the CLI finds
    /// the node's CA and admin token, as on a real member.
    pub fn tandem(&self, i: usize, args: &[&str]) -> Result<Output> {
        let bin = self.bin().clone();
        let api = self.node_api(i);
        let config = self.node_config_path(i);
        let config = config.to_str().context("lab paths are UTF-8")?;
        let mut full: Vec<&str> = vec!["--api", &api, "--config", config];
        full.extend_from_slice(args);
        self.exec_in(&self.node_ns(i), &bin, &full, CLI_TIMEOUT)
    }

    /// A one-time join token from node `i`: `tandem cluster token`'s stdout.
    pub fn join_token(&self, i: usize) -> Result<String> {
        let out = self.tandem(i, &["cluster", "token"])?;
        if !out.status.success() {
            bail!(
                "tandem cluster token on node {i}: {}",
                crate::describe_output(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Makes node `i` join node `seed`'s cluster, as an operator does: a join
    /// token from `seed`, then `tandem cluster join <seed API> --token T` on
    /// node `i`. Returns the join command's output.
    pub fn join(&self, i: usize, seed: usize) -> Result<Output> {
        let token = self.join_token(seed)?;
        let addr = format!("{}:{API_PORT}", self.node_ip(seed));
        self.tandem(i, &["cluster", "join", &addr, "--token", &token])
    }
}

/// The leader that the `tandem status --json` outputs `views` of `nodes`
/// (in the same order) agree on: every one names the same leader, which is
/// one of `nodes` and says "leader" while the others say "follower", and
/// each lists all of `nodes` as voting members. `None` while they do not.
#[must_use]
pub fn agreed_leader(views: &[serde_json::Value], nodes: &[usize]) -> Option<usize> {
    let leader = usize::try_from(views.first()?["leader"].as_u64()?).ok()?;
    if views.len() != nodes.len() || !nodes.contains(&leader) {
        return None;
    }
    for (v, &i) in views.iter().zip(nodes) {
        if v["leader"].as_u64() != Some(leader as u64) {
            return None;
        }
        if v["role"] != if i == leader { "leader" } else { "follower" } {
            return None;
        }
        let members = v["members"].as_array()?;
        for &m in nodes {
            let member = members
                .iter()
                .find(|x| x["id"].as_u64() == Some(m as u64))?;
            if member["role"] == "learner" {
                return None;
            }
        }
    }
    Some(leader)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn view(leader: u64, role: &str, learner: Option<u64>) -> serde_json::Value {
        let members: Vec<_> = (1..=3)
            .map(|id| json!({"id": id, "role": if Some(id) == learner { "learner" } else { "follower" }}))
            .collect();
        json!({"leader": leader, "role": role, "members": members})
    }

    #[test]
    fn agreement_needs_one_leader_its_followers_and_no_learners() {
        let nodes = [1, 2, 3];
        let good = [
            view(2, "follower", None),
            view(2, "leader", None),
            view(2, "follower", None),
        ];
        assert_eq!(super::agreed_leader(&good, &nodes), Some(2));

        let split = [
            view(2, "follower", None),
            view(2, "leader", None),
            view(3, "leader", None),
        ];
        assert_eq!(super::agreed_leader(&split, &nodes), None);

        let learner = [
            view(2, "follower", Some(3)),
            view(2, "leader", None),
            view(2, "follower", None),
        ];
        assert_eq!(super::agreed_leader(&learner, &nodes), None);

        let outsider = [
            view(4, "follower", None),
            view(4, "follower", None),
            view(4, "follower", None),
        ];
        assert_eq!(super::agreed_leader(&outsider, &nodes), None);
    }
}
