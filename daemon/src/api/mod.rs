//! # Layout
//! The admin HTTPS API (DESIGN.md sections 4 and 10) on `api.listen` (7481/tcp).
//!
//! - `dto`: the JSON shapes; `--json` output of the CLI is exactly these.
//! - `auth`: the bearer-token layer over the whole router (deny by default,
//!   an allowlist of open routes).
//! - `server`: axum routes over the running node, served over TLS with the
//!   node certificate (hyper, one task per connection, bounded).
//! - `artifacts`: the artifact routes (uploads, blobs for peers, holders).
//! - `events`: `GET /v1/events?since=SEQ`, the node's event ring (bounded, rate-limited).
//! - `leases`: the lease routes (list, show, release) and the reservation
//!   routes (list, add, remove).
//! - `reply`: the JSON error answer every handler and the auth layer send.
//! - `enroll`: the joiner's half of a join (CA pin, CSR, enrollment).
//! - `client`: a small blocking HTTPS client the CLI (and TUI) and
//!   node-to-node calls use, verifying the cluster CA.
//!
//! Routes: `GET /v1/status`, `GET /v1/config` (export),
//! `PUT /v1/config` (apply), `GET /metrics` (Prometheus text).
//! Leases: `GET /v1/leases`, `GET /v1/leases/{mac_or_ip}`,
//! `POST /v1/leases/{ip}/release` (leader). Reservations:
//! `GET /v1/reservations`, `POST /v1/reservations` and
//! `DELETE /v1/reservations/{mac}` (leader).
//! Cluster: `POST /v1/cluster/members` and `DELETE /v1/cluster/members/{id}`
//! (leader), `POST /v1/cluster/handover` (leader), `POST /v1/cluster/join` and
//! `POST /v1/cluster/leave` (the node itself), `POST /v1/cluster/tokens`
//! (leader: a join token), `GET /v1/cluster/ca` and `POST /v1/cluster/enroll`
//! (open: a joiner pins the CA, then trades its token for a certificate).
//! Artifacts: `GET /v1/artifacts`, `PUT|DELETE /v1/artifacts/{name}` (leader),
//! `GET /v1/blobs/{sha256}` (with Range), `POST /v1/holders` (leader).
//! Events: `GET /v1/events?since=SEQ` (admin token).
//! Writes on a follower answer 421 with the leader's API address.

pub mod artifacts;
pub mod auth;
pub mod client;
pub mod dto;
pub mod enroll;
mod events;
pub mod leases;
mod reply;
pub mod server;
