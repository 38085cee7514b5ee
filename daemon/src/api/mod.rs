//! # Layout
//! The admin HTTP API (DESIGN.md section 4) on `api.listen` (7481/tcp).
//!
//! - `dto`: the JSON shapes; `--json` output of the CLI is exactly these.
//! - `server`: axum routes over the running node.
//! - `artifacts`: the artifact routes (uploads, blobs for peers, holders).
//! - `client`: a small blocking client the CLI (and TUI) use.
//!
//! Routes: `GET /v1/status`, `GET /v1/leases`, `GET /v1/config` (export),
//! `PUT /v1/config` (apply), `GET /metrics` (Prometheus text).
//! Cluster: `POST /v1/cluster/members` and `DELETE /v1/cluster/members/{id}`
//! (leader), `POST /v1/cluster/handover` (leader), `POST /v1/cluster/join` and
//! `POST /v1/cluster/leave` (the node itself).
//! Artifacts: `GET /v1/artifacts`, `PUT|DELETE /v1/artifacts/{name}` (leader),
//! `GET /v1/blobs/{sha256}` (with Range), `POST /v1/holders` (leader).
//! Writes on a follower answer 421 with the leader's API address.

pub mod artifacts;
pub mod client;
pub mod dto;
pub mod server;
