//! `GET /v1/events?since=SEQ`: this node's events after `SEQ` (all with no
//! `since`), from the ring in `metrics::events`, for `tandem top`.
//!
//! - Who may call: admin-token holders (not in `api.open`: the deny-by-default
//!   auth layer covers it); the messages name peers, addresses and causes.
//! - Input: the one query parameter `since`, a decimal u64; anything else is
//!   refused with 400 before the ring is read.
//! - Answer size: at most the ring's 256 events of at most 240 bytes each.
//! - How fast: [`MAX_PER_SEC`] answers a second for the whole node, beyond
//!   that 429 (`tandem top` asks once a second); each answer copies the ring
//!   under a lock held for microseconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::dto::{EventDto, EventsDto};
use super::reply::error as err;
use crate::metrics::events::{self, Ring};

/// Answers per second, for the node as a whole.
pub const MAX_PER_SEC: u32 = 50;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Since {
    since: Option<u64>,
}

/// A fixed one-second window: cheap, and enough to keep a loop of callers
/// from turning the ring's lock into a hot spot.
struct Limiter {
    window: Mutex<(Instant, u32)>,
}

impl Limiter {
    fn new() -> Limiter {
        Limiter {
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    fn allow(&self, now: Instant) -> bool {
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 <= MAX_PER_SEC
    }
}

#[derive(Clone)]
struct State {
    node_id: u64,
    ring: &'static Ring,
    limiter: std::sync::Arc<Limiter>,
}

/// The events route, with its state (merged into the API's router).
pub(super) fn routes(node_id: u64) -> Router {
    Router::new()
        .route("/v1/events", get(list))
        .with_state(State {
            node_id,
            ring: events::ring(),
            limiter: std::sync::Arc::new(Limiter::new()),
        })
}

async fn list(
    AxState(st): AxState<State>,
    q: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return err(
            StatusCode::BAD_REQUEST,
            "give at most one query parameter, since=SEQ (a sequence number from last_seq)",
        );
    };
    if !st.limiter.allow(Instant::now()) {
        return err(
            StatusCode::TOO_MANY_REQUESTS,
            format!("at most {MAX_PER_SEC} event reads a second; ask again in a second"),
        );
    }
    Json(answer(st.node_id, st.ring, q.since.unwrap_or(0))).into_response()
}

fn answer(node_id: u64, ring: &Ring, since: u64) -> EventsDto {
    let (evs, last_seq) = ring.since(since);
    EventsDto {
        node_id,
        boot_ms: ring.boot_ms,
        last_seq,
        events: evs
            .into_iter()
            .map(|e| EventDto {
                seq: e.seq,
                at_ms: e.at_ms,
                kind: e.kind.as_str().into(),
                message: e.message,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;
    use crate::metrics::events::Kind;

    async fn get(app: &Router, uri: &str) -> (u16, String) {
        let req = axum::http::Request::get(uri).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn answers_events_after_since_refuses_bad_input_and_floods() {
        let ring: &'static Ring = Box::leak(Box::default());
        ring.record(Kind::Election, "leader: node 2 (term 3)");
        ring.record(Kind::Transition, "serving after 12 ms");
        let app = Router::new()
            .route("/v1/events", get_route())
            .with_state(State {
                node_id: 7,
                ring,
                limiter: std::sync::Arc::new(Limiter::new()),
            });
        let (code, body) = get(&app, "/v1/events").await;
        assert_eq!(code, 200, "{body}");
        let all: EventsDto = serde_json::from_str(&body).unwrap();
        assert_eq!((all.node_id, all.last_seq, all.events.len()), (7, 2, 2));
        assert_eq!(all.events[0].kind, "election");
        let (_, body) = get(&app, "/v1/events?since=1").await;
        let tail: EventsDto = serde_json::from_str(&body).unwrap();
        assert_eq!(tail.events.len(), 1);
        assert_eq!(tail.events[0].message, "serving after 12 ms");
        for bad in [
            "/v1/events?since=-1",
            "/v1/events?since=x",
            "/v1/events?all=1",
        ] {
            let (code, body) = get(&app, bad).await;
            assert_eq!(code, 400, "{bad}: {body}");
            assert!(body.contains("since=SEQ"), "{body}");
        }
        let mut codes = Vec::new();
        for _ in 0..MAX_PER_SEC + 5 {
            codes.push(get(&app, "/v1/events?since=2").await.0);
        }
        assert!(codes.contains(&429), "no flood refusal in {codes:?}");
    }

    fn get_route() -> axum::routing::MethodRouter<State> {
        axum::routing::get(list)
    }
}
