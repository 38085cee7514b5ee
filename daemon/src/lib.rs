//! # Layout
//! `tandem` is one binary; this library is all of it but `main`.
//!
//! Dependencies point one way: `model → config → trust → store → consensus →
//! {services, steering} → api → {ui, app}`, with `net` beside `model` at the
//! bottom. `metrics` is a leaf usable anywhere. No two files import each other, directly or round a loop;
//! `daemon/tests/layering.rs` checks both from the source.
//!
//! - [`model`]: leases, MACs, service config, Raft commands. No I/O.
//! - [`net`]: socket plumbing every TCP listener shares (accept with back-off).
//! - [`config`]: the node file (`node.toml`) and validation of service config.
//! - [`trust`]: the cluster CA, node certificates, admin and join tokens,
//!   and the rustls configs of Raft (mutual TLS) and the API.
//! - [`store`]: redb only: Raft log, vote and state machine in one file,
//!   generic over the Raft type config.
//! - [`consensus`]: openraft (with `store`, the only user): type config,
//!   network, membership; a closed face ([`consensus::Cluster`]'s verbs,
//!   [`consensus::ClusterStatus`]) and [`consensus::ClusterHandle`] for services.
//! - [`services`]: DHCP, TFTP and the VIP; they reach the cluster via `ClusterHandle`.
//! - [`steering`]: aya only: loads the XDP program and flips its role map.
//! - [`api`]: the admin HTTP API, its client and DTOs.
//! - [`ui`]: the CLI and the console TUI (`tandem top`), built on `api::client` only.
//! - [`app`]: the composition root: wires everything and owns shutdown.
//! - `fuzzing` (hidden): the fuzz targets' bodies, for `fuzz/` and its
//!   regression test; above every layer, used by none.

pub mod api;
pub mod app;
pub mod config;
pub mod consensus;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod model;
pub mod net;
pub mod services;
pub mod steering;
pub mod store;
pub mod trust;
pub mod ui;
