//! `cargo xtask deps`: makes a fresh Debian 12 machine able to build and test
//! tandem. Every check is cheap (dpkg-query, PATH lookups), so on a ready
//! machine this is a silent no-op and safe to run before every test run.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{find_on_path, require_root, run_cmd};

/// What the tests, the demo and the eBPF build use (see TOOLCHAIN.md).
const APT_PACKAGES: &[&str] = &[
    // Static, so the PXE test copies it into its initramfs as it is; it
    // replaces `busybox` and has the same applets (udhcpc).
    "busybox-static",
    "isc-dhcp-client",
    "tftp-hpa",
    "atftp",
    "curl",
    "kea-dhcp4-server",
    "kea-admin",
    "dnsmasq",
    "tftpd-hpa",
    "iproute2",
    "iputils-arping",
    "tcpdump",
    "python3-scapy",
    "bpftool",
    "ethtool",
    "nftables",
    "llvm-22-dev",
    // promtool: a daemon unit test checks the /metrics text with `promtool check metrics`.
    "prometheus",
    // Real PXE boots (tests/node/pxe.rs): QEMU with its iPXE NIC ROMs, the
    // iPXE binaries operators (and the demo) load with `tandem artifact put`,
    // and the cloud kernel (LZ4,
    // twice as fast to boot under TCG as the generic one).
    "qemu-system-x86",
    "ipxe-qemu",
    "ipxe",
    "linux-image-cloud-amd64",
    // UEFI PXE boots without an iPXE ROM (tests/node/pxe.rs): OVMF's own
    // PXE client loads ipxe.efi.
    "ovmf",
    // Benchmarks only: nginx is the HTTP boot throughput baseline.
    "nginx-light",
    // Benchmarks only: the keepalived + dnsmasq failover baseline and CPU load.
    "keepalived",
    "stress-ng",
];

/// Servers that package scripts may start; they must not hold ports 67/69 on
/// the host, where they would answer our tests' clients or anybody's.
const SERVER_COMMS: &[&str] = &[
    "dnsmasq",
    "in.tftpd",
    "atftpd",
    "kea-dhcp4",
    "kea-dhcp6",
    "kea-dhcp-ddns",
    "kea-ctrl-agent",
    "keepalived",
    // Installed for promtool; its server has no business running here either.
    "prometheus",
    "nginx",
];

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub fn run() -> Result<()> {
    apt(APT_PACKAGES)?;
    rust_src()?;
    bpf_linker()
}

/// Installs those of `packages` that dpkg does not list as installed,
/// without letting their scripts start any server.
pub fn apt(packages: &[&'static str]) -> Result<()> {
    let missing = missing_apt_packages(packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    require_root("installing apt packages")?;
    println!("=== deps: installing {}", missing.join(" "));

    // policy-rc.d exiting 101 tells invoke-rc.d "not allowed", so package
    // scripts do not start the servers they install.
    let made_policy = !Path::new(POLICY_RC_D).exists();
    if made_policy {
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# Written by cargo xtask deps: keep apt from starting daemons.\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
    }
    let before = host_servers();
    let result = install(packages, &missing);
    // Whatever the policy missed (no systemd here, a package that starts its
    // server directly): stop every server that appeared during the install.
    for (pid, comm) in host_servers().difference(&before) {
        println!("=== deps: stopping {comm} (pid {pid}) started by the package install");
        // SAFETY: kill(2) has no memory-safety preconditions; the PID was
        // just read from /proc and names a server the install started.
        unsafe {
            libc::kill(*pid, libc::SIGTERM);
        }
    }
    if made_policy {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    result
}

fn install(packages: &[&'static str], missing: &[&str]) -> Result<()> {
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run_cmd(&mut apt(&["update", "-qq"]), "apt-get update")?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(missing);
    run_cmd(&mut install, "apt-get install").context(
        "if a package is unknown: llvm-22-dev comes from bookworm-security, so check that \
         deb.debian.org/debian-security is in the apt sources",
    )?;
    let still = missing_apt_packages(packages)?;
    if !still.is_empty() {
        bail!(
            "apt-get finished but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// The packages of `packages` that dpkg does not list as installed.
fn missing_apt_packages(packages: &[&'static str]) -> Result<Vec<&'static str>> {
    // dpkg-query exits 1 when it knows nothing of some package; the lines it
    // does print are still right, so only its stdout counts.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(packages)
        .output()
        .context("running dpkg-query (is this Debian?)")?;
    let installed: HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(" install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    Ok(packages
        .iter()
        .copied()
        .filter(|p| !installed.contains(*p))
        .collect())
}

/// (pid, comm) of every [`SERVER_COMMS`] process in the host's network
/// namespace. Servers that tests run inside lab namespaces are not ours to stop.
fn host_servers() -> HashSet<(i32, String)> {
    let host_net = std::fs::read_link("/proc/1/ns/net").ok();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm"))
                .ok()?
                .trim()
                .to_owned();
            if !SERVER_COMMS.contains(&comm.as_str()) {
                return None;
            }
            let net = std::fs::read_link(e.path().join("ns/net")).ok();
            (net == host_net).then_some((pid, comm))
        })
        .collect()
}

/// The eBPF crate builds with `-Z build-std=core` on nightly, which needs rust-src.
fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    let listed = String::from_utf8_lossy(&out.stdout);
    if out.status.success()
        && listed
            .lines()
            .any(|l| l.trim() == "rust-src" || l.starts_with("rust-src-"))
    {
        return Ok(());
    }
    if out.status.success() {
        println!("=== deps: rustup component add rust-src --toolchain nightly");
        run_cmd(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add",
        )
    } else {
        // No nightly toolchain at all.
        println!("=== deps: rustup toolchain install nightly (with rust-src)");
        run_cmd(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
            "rustup toolchain install nightly",
        )
    }
}

/// bpf-linker 0.13 links the eBPF object; built against Debian's LLVM 22
/// (TOOLCHAIN.md, recipe 1).
fn bpf_linker() -> Result<()> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|h| h.join("bin").join("bpf-linker"));
    if find_on_path("bpf-linker").is_some() || cargo_bin.is_some_and(|p| p.exists()) {
        return Ok(());
    }
    println!(
        "=== deps: cargo install bpf-linker (LLVM 22 from /usr/lib/llvm-22; takes a few minutes)"
    );
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        "cargo install bpf-linker",
    )
}
