//! Builds the XDP program (`ebpf/xdp`) and leaves the object at
//! `$OUT_DIR/tandem-xdp`, where `steering` embeds it with
//! `aya::include_bytes_aligned!`.
//!
//! aya-build runs `rustup run nightly cargo build --target bpfel-unknown-none
//! -Z build-std=core --release` with BTF rustflags, into a target dir under
//! `$OUT_DIR` (so it never waits on the outer cargo's lock). The outer build
//! stays on stable. The eBPF crate is excluded from the workspace, so the
//! inner cargo must start inside its directory to find it as its own root.
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (for machines without nightly or
//! bpf-linker, e.g. a quick `cargo clippy`). Then an empty object is embedded
//! and `Steering::attach` fails with `SteeringError::NotBuilt`.

use std::path::PathBuf;
use std::{env, fs};

use anyhow::Context as _;

/// The eBPF crate's package and binary name; also the file name in `OUT_DIR`.
const EBPF_PACKAGE: &str = "tandem-xdp";

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_root = manifest_dir.join("..").join("ebpf");
    let xdp_dir = ebpf_root
        .join("xdp")
        .canonicalize()
        .context("locating ebpf/xdp")?;
    let common_dir = ebpf_root
        .join("common")
        .canonicalize()
        .context("locating ebpf/common")?;
    // aya-build watches the program's directory; the shared types live beside it.
    println!("cargo:rerun-if-changed={}", common_dir.display());

    let xdp_dir_str = xdp_dir.to_str().context("ebpf/xdp path is not UTF-8")?;
    env::set_current_dir(&xdp_dir).context("entering ebpf/xdp")?;
    // aya-build turns every stderr line of the inner cargo into a
    // `cargo:warning`, which cargo then replays on every later build. Quiet
    // drops the progress lines; compiler diagnostics still arrive (as JSON)
    // and errors still print.
    env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: xdp_dir_str,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the XDP program (needs `rustup toolchain install nightly --component rust-src` and bpf-linker; AYA_BUILD_SKIP=1 to skip)")?;

    let object =
        PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?).join(EBPF_PACKAGE);
    if !object.exists() {
        // Only reachable with AYA_BUILD_SKIP (aya-build already warned).
        fs::write(&object, []).context("writing the empty placeholder object")?;
    }
    Ok(())
}
