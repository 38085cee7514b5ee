//! Small helpers shared by the subcommands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// Where cargo puts build output (`CARGO_TARGET_DIR`, else `<root>/target`).
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t))
}

/// `cargo`, run from the workspace root. `CARGO` is the cargo that runs
/// xtask, so nested builds use the same toolchain.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with inherited stdio; a non-zero exit is an error naming `what`.
pub fn run_cmd(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

/// `cargo build --release -p tandem`; returns the binary's path.
pub fn build_tandem() -> Result<PathBuf> {
    println!("=== cargo build --release -p tandem");
    run_cmd(
        cargo().args(["build", "--release", "-p", "tandem"]),
        "cargo build --release -p tandem",
    )?;
    let bin = target_dir().join("release").join("tandem");
    ensure!(
        bin.exists(),
        "the build succeeded but {} is missing",
        bin.display()
    );
    Ok(bin)
}

/// Namespaces, apt and the tests all need root.
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (network namespaces, apt); run it as root");
    }
    Ok(())
}

/// `command -v NAME`: the first executable `NAME` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
