//! # Layout
//! The bodies of the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`), here so
//! that the same code runs under libFuzzer and in `cargo test`
//! (`daemon/tests/fuzz_regressions.rs` feeds every file of `fuzz/corpus/*/`
//! and `fuzz/regressions/*/` through them). Not an API: hidden from the
//! docs, and nothing in the daemon calls it.
//!
//! Each function takes arbitrary bytes, drives one parser (and what sits
//! right behind it) exactly as the daemon does, and panics when an invariant
//! fails; a malformed input that is refused cleanly is not a failure.
//!
//! - [`dhcp`]: [`dhcp_decode_handle`], the DHCP decode, parse and decision
//!   against a fixed config and lease table, checked against a reference.
//! - [`tftp`]: [`tftp_packet`] (parse, round trip, negotiation) and
//!   [`tftp_session`] (the send window driven by packets and timeouts).
//! - [`raft`]: [`raft_frame`], the peer frame decoder and the snapshot
//!   decoder (bounded decompression).
//! - [`config`]: [`node_config`] and [`service_config`], the two parsers with
//!   their validation.
//!
//! One layer above everything it tests (see `daemon/tests/layering.rs`).

mod config;
mod dhcp;
mod raft;
mod tftp;

pub use config::{node_config, service_config};
pub use dhcp::dhcp_decode_handle;
pub use raft::raft_frame;
pub use tftp::{tftp_packet, tftp_session};

/// A target's body: arbitrary bytes in, a panic when an invariant fails.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("dhcp_decode_handle", dhcp_decode_handle),
    ("tftp_packet", tftp_packet),
    ("tftp_session", tftp_session),
    ("raft_frame", raft_frame),
    ("node_config", node_config),
    ("service_config", service_config),
];
