//! The lease and reservation routes of the admin API
//! (`tandem lease …`, `tandem reservation …`).
//!
//! - `GET /v1/leases`: every lease record, as [`LeaseDto`] (this node's view).
//! - `GET /v1/leases/{mac_or_ip}`: one lease, by address or by MAC (its
//!   newest record); 404 if there is none.
//! - `POST /v1/leases/{ip}/release`: ends the lease now, through Raft
//!   (`Command::Release`, as a DHCPRELEASE does); leader only (421 with the
//!   leader's address elsewhere), 404 for an address nobody holds.
//! - `GET /v1/reservations`: the service config's reservations.
//! - `POST /v1/reservations`: adds one ([`Reservation`] as the body);
//!   checked as `apply` checks a file (422 naming the field and the fix),
//!   then proposed as `Command::AddReservation`, an edit the state machine
//!   makes on the list, so two adds at once both survive (409 if one of them
//!   clashes with the other). Leader only.
//! - `DELETE /v1/reservations/{mac}`: removes one; leader only; 404 if the
//!   MAC has none.
//!
//! Who may call: admin-token holders only (leases are personal data; the
//! auth layer denies every route not listed as open). Input: a path segment
//! or a reservation of at most [`MAX_BODY`] bytes (413 above). How fast: as
//! fast as Raft commits, one proposal per request, within the API's
//! connection cap; the reservation list is capped by the state machine.

use std::net::Ipv4Addr;

use axum::extract::{DefaultBodyLimit, Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use super::dto::{ErrorDto, LeaseDto};
use super::reply::error_hint;
use crate::consensus::{Cluster, ClusterHandle, ProposeError};
use crate::model::{Command, CommandResponse, Lease, Mac, Reservation, State};

/// The largest reservation body: a MAC, an IP, a 253-byte host name and a
/// profile name fit many times over.
pub const MAX_BODY: usize = 4096;

/// The lease and reservation routes, with their state (merged into the
/// API's router).
pub(super) fn routes(cluster: Cluster) -> Router {
    Router::new()
        .route("/v1/leases", get(list))
        .route("/v1/leases/{key}", get(show))
        .route("/v1/leases/{ip}/release", post(release))
        .route("/v1/reservations", get(reservations).post(add_reservation))
        .route("/v1/reservations/{mac}", delete(remove_reservation))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(cluster)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn not_leader(cluster: &Cluster) -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        Json(ErrorDto {
            error: "not the leader".into(),
            leader_api: cluster.leader_api(),
            hint: None,
        }),
    )
        .into_response()
}

/// A refusal phrased "field `F`: problem; fix: what to do" (a config error,
/// or the state machine's reason) as an error and its hint.
fn refusal(code: StatusCode, reason: &str) -> Response {
    match reason.split_once("; fix: ") {
        Some((e, fix)) => error_hint(code, e, Some(fix)),
        None => error_hint(code, reason, None::<String>),
    }
}

/// Proposes `cmd`; a refusal of the state machine answers `rejected`.
async fn propose(cluster: &Cluster, cmd: Command, rejected: StatusCode) -> Result<(), Response> {
    match cluster.propose(cmd).await {
        Ok(CommandResponse::Ok) => Ok(()),
        Ok(CommandResponse::Rejected { reason }) => Err(refusal(rejected, &reason)),
        Err(ProposeError::NotLeader { .. }) => Err(not_leader(cluster)),
        Err(ProposeError::Failed(m)) => Err(error_hint(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not committed (no quorum?): {m}"),
            Some("a majority of the nodes must run and reach each other; `tandem status` on each"),
        )),
    }
}

/// What a lease key names: an address, or a client by its MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseKey {
    Ip(Ipv4Addr),
    Mac(Mac),
}

impl std::str::FromStr for LeaseKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse() {
            return Ok(LeaseKey::Ip(ip));
        }
        s.parse().map(LeaseKey::Mac).map_err(|_| {
            format!(
                "{s:?} is neither an IPv4 address nor a MAC (e.g. 10.0.0.50 or 52:54:00:12:34:56)"
            )
        })
    }
}

impl LeaseKey {
    /// The lease record this key names: the address's, or the MAC's newest
    /// (bound, live or expired; else the newest declined one).
    #[must_use]
    pub fn find(self, s: &State) -> Option<Lease> {
        match self {
            LeaseKey::Ip(ip) => s.lease_of_ip(ip).cloned(),
            LeaseKey::Mac(mac) => s.lease_of_mac(mac).cloned().or_else(|| {
                s.leases
                    .values()
                    .filter(|l| l.mac == mac)
                    .max_by_key(|l| l.granted_at)
                    .cloned()
            }),
        }
    }
}

fn bad_key(key: &str, what: &str) -> Response {
    error_hint(
        StatusCode::BAD_REQUEST,
        format!("{key:?} is not {what}"),
        Some("write an IPv4 address such as 10.0.0.50 or a MAC such as 52:54:00:12:34:56"),
    )
}

fn no_lease(key: &str) -> Response {
    error_hint(
        StatusCode::NOT_FOUND,
        format!("no lease for {key}"),
        Some("`tandem lease list` shows the leases the cluster holds"),
    )
}

async fn list(AxState(cluster): AxState<Cluster>) -> Json<Vec<LeaseDto>> {
    let now = now();
    Json(cluster.read(|s| {
        s.leases
            .values()
            .map(|l| LeaseDto::at(l.clone(), now))
            .collect()
    }))
}

async fn show(AxState(cluster): AxState<Cluster>, Path(key): Path<String>) -> Response {
    let Ok(k) = key.parse::<LeaseKey>() else {
        return bad_key(&key, "an IPv4 address or a MAC");
    };
    match cluster.read(|s| k.find(s)) {
        Some(l) => Json(LeaseDto::at(l, now())).into_response(),
        None => no_lease(&key),
    }
}

async fn release(AxState(cluster): AxState<Cluster>, Path(ip): Path<String>) -> Response {
    let Ok(addr) = ip.parse::<Ipv4Addr>() else {
        return bad_key(&ip, "an IPv4 address");
    };
    // The leader's view decides what exists (a follower may lag).
    if !cluster.leadership().borrow().is_leader {
        return not_leader(&cluster);
    }
    match cluster.read(|s| s.lease_of_ip(addr).cloned()) {
        None => return no_lease(&ip),
        Some(l) if l.state != crate::model::LeaseState::Bound => {
            return error_hint(
                StatusCode::CONFLICT,
                format!("{addr} is quarantined (declined by {}), not leased", l.mac),
                Some("a declined address frees itself when its quarantine ends"),
            )
        }
        Some(_) => {}
    }
    let at = now();
    if let Err(r) = propose(
        &cluster,
        Command::Release { ip: addr, at },
        StatusCode::NOT_FOUND,
    )
    .await
    {
        return r;
    }
    tracing::info!(target: "tandem::raft", index = cluster.view().applied_index().unwrap_or(0), ip = %addr, "lease released by the admin");
    match cluster.read(|s| s.lease_of_ip(addr).cloned()) {
        Some(l) => Json(LeaseDto::at(l, at)).into_response(),
        None => no_lease(&ip),
    }
}

async fn reservations(AxState(cluster): AxState<Cluster>) -> Json<Vec<Reservation>> {
    Json(cluster.read(|s| s.config.reservations.clone()))
}

async fn add_reservation(
    AxState(cluster): AxState<Cluster>,
    Json(r): Json<Reservation>,
) -> Response {
    if !cluster.leadership().borrow().is_leader {
        return not_leader(&cluster);
    }
    let checked = cluster.read(|s| crate::config::service::validate_reservation(&s.config, &r));
    if let Err(e) = checked {
        return refusal(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
    }
    let cmd = Command::AddReservation {
        reservation: r.clone(),
    };
    if let Err(resp) = propose(&cluster, cmd, StatusCode::CONFLICT).await {
        return resp;
    }
    tracing::info!(target: "tandem::raft", index = cluster.view().applied_index().unwrap_or(0), mac = %r.mac, ip = %r.ip, "reservation added");
    Json(r).into_response()
}

async fn remove_reservation(
    AxState(cluster): AxState<Cluster>,
    Path(mac): Path<String>,
) -> Response {
    let Ok(m) = mac.parse::<Mac>() else {
        return error_hint(
            StatusCode::BAD_REQUEST,
            format!("{mac:?} is not a MAC"),
            Some("write it as 52:54:00:12:34:56"),
        );
    };
    if !cluster.leadership().borrow().is_leader {
        return not_leader(&cluster);
    }
    let Some(r) = cluster.read(|s| s.config.reservation_for(m).cloned()) else {
        return error_hint(
            StatusCode::NOT_FOUND,
            format!("{m} has no reservation"),
            Some("`tandem reservation list` shows the reserved MACs"),
        );
    };
    if let Err(resp) = propose(
        &cluster,
        Command::RemoveReservation { mac: m },
        StatusCode::NOT_FOUND,
    )
    .await
    {
        return resp;
    }
    tracing::info!(target: "tandem::raft", index = cluster.view().applied_index().unwrap_or(0), mac = %m, "reservation removed");
    Json(r).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_key_is_an_address_or_a_mac() {
        assert_eq!(
            "10.0.0.5".parse::<LeaseKey>(),
            Ok(LeaseKey::Ip(Ipv4Addr::new(10, 0, 0, 5)))
        );
        assert_eq!(
            "52:54:00:12:34:56".parse::<LeaseKey>(),
            Ok(LeaseKey::Mac(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])))
        );
        let e = "10.0.0.256".parse::<LeaseKey>().unwrap_err();
        assert!(e.contains("neither"), "{e}");
    }
}
