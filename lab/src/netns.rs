//! Thin wrappers around `ip netns` and `ip link`, plus the sweepers that
//! remove labs whose owner is gone.
//!
//! Everything shells out to iproute2 on purpose: the commands are what an
//! operator would type, so a failing step can be replayed by hand from the
//! error message.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs `ip ARGS` and fails with the command line and ip's stderr.
pub(crate) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The names of all network namespaces (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running `ip netns list`")?;
    if !out.status.success() {
        bail!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Lines look like `name` or `name (id: 3)`; the name never holds spaces.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// PIDs of every process whose network namespace is `ns`.
#[must_use]
pub fn namespace_pids(ns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILLs every process inside `ns` and waits (up to 5 s) until none is left.
///
/// The processes are not our children, so we cannot reap them; their parent
/// (or init) does. We only wait until `ip netns pids` stops listing them.
pub fn kill_namespace_processes(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = namespace_pids(ns);
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                eprintln!("lab: processes {pids:?} in {ns} survived SIGKILL for 5 s");
            }
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions. A PID listed a
            // moment ago could in theory be reused, but only by a process that
            // also lives in `ns`, and everything in `ns` is ours to kill.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `ip netns del NS`. Deleting a namespace destroys its interfaces, and with
/// them the peer end of every veth that crossed into it.
pub fn delete_namespace(ns: &str) -> Result<()> {
    ip(&["netns", "del", ns])
}

/// The temp root of the lab with this prefix; node dirs live below it.
#[must_use]
pub fn temp_root(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tandem-lab-{prefix}"))
}

/// Whether `TANDEM_KEEP_LAB=1` asks to keep temp roots (logs, data) after a lab goes.
#[must_use]
pub fn keep_lab_files() -> bool {
    std::env::var("TANDEM_KEEP_LAB").is_ok_and(|v| v == "1")
}

/// Deletes every namespace whose name starts with `pattern` (e.g. `"tl-"`),
/// after killing the processes inside it, and removes the matching temp roots
/// (unless `TANDEM_KEEP_LAB=1`). Returns the namespaces it deleted.
///
/// This is the sweeper behind `cargo xtask lab down`; a live [`crate::Lab`]
/// cleans up after itself in `Drop`.
pub fn cleanup_stale(pattern: &str) -> Result<Vec<String>> {
    // An empty pattern would match every namespace on the machine, including
    // ones that are not ours at all.
    if pattern.is_empty() {
        bail!("cleanup_stale needs a non-empty namespace prefix");
    }
    let doomed: Vec<String> = list_namespaces()?
        .into_iter()
        .filter(|n| n.starts_with(pattern))
        .collect();
    remove_labs(&doomed)
}

/// Deletes the namespaces of test labs (prefix `t<pid>-<n>`, see
/// [`crate::unique_prefix`]) whose owning process no longer exists: labs left
/// behind by a test binary that was killed or aborted before `Drop` ran.
/// Labs of live processes are left alone, so parallel test runs are safe.
pub fn cleanup_orphans() -> Result<Vec<String>> {
    let doomed: Vec<String> = list_namespaces()?
        .into_iter()
        .filter(|n| owner_pid(n).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .collect();
    remove_labs(&doomed)
}

/// The PID encoded in a test lab's namespace name `t<pid>-<counter>-<role>`.
fn owner_pid(ns: &str) -> Option<u32> {
    let mut parts = ns.strip_prefix('t')?.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    parts.next()?;
    Some(pid)
}

fn remove_labs(doomed: &[String]) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    let mut prefixes = Vec::new();
    for ns in doomed {
        kill_namespace_processes(ns);
        if let Err(e) = delete_namespace(ns) {
            errors.push(format!("{e:#}"));
        }
        // Namespace names are `<prefix>-<role>`, and the role has no '-'.
        if let Some((prefix, _)) = ns.rsplit_once('-') {
            if !prefixes.iter().any(|p| p == prefix) {
                prefixes.push(prefix.to_owned());
            }
        }
    }
    if !keep_lab_files() {
        for prefix in &prefixes {
            let root = temp_root(prefix);
            if root.exists() {
                if let Err(e) = std::fs::remove_dir_all(&root) {
                    errors.push(format!("removing {}: {e}", root.display()));
                }
            }
        }
    }
    if !errors.is_empty() {
        bail!("cleanup left something behind:\n  {}", errors.join("\n  "));
    }
    Ok(doomed.to_vec())
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_only_matches_test_lab_names() {
        assert_eq!(owner_pid("t4242-0-n1"), Some(4242));
        assert_eq!(owner_pid("t4242-17-sw"), Some(4242));
        // xtask labs and foreign namespaces carry no owner.
        assert_eq!(owner_pid("tl-n1"), None);
        assert_eq!(owner_pid("t4242-n1"), None);
        assert_eq!(owner_pid("t4242-0"), None);
        assert_eq!(owner_pid("docker-1-2"), None);
    }
}
