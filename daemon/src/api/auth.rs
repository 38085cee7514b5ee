//! The bearer-token layer over the whole router (DESIGN.md section 10).
//!
//! Every request needs `Authorization: Bearer <admin token>`, except the
//! open routes: the configured reads (`api.open`, by default `GET
//! /v1/health`, `/v1/status` and `/metrics`) and the two join routes that
//! carry their own proof (`GET /v1/cluster/ca` is public, `POST
//! /v1/cluster/enroll` checks a join token). Deny by default: a route added
//! later is protected unless it is listed here. A missing or wrong token
//! gets 401 with a JSON [`ErrorDto`] before any handler runs, so nothing
//! changes; each is counted in `tandem_api_unauthorized_total`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics;
use crate::trust::token::ct_eq;

/// Routes that are open whatever the config says: the joiner has no admin
/// token yet (the enrollment checks its join token instead).
const JOIN_ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/v1/cluster/ca"),
    (Method::POST, "/v1/cluster/enroll"),
];

/// The layer's state: the admin token and the open `GET` paths.
#[derive(Clone)]
pub struct Auth {
    token: Arc<str>,
    open_gets: Arc<[String]>,
}

impl Auth {
    #[must_use]
    pub fn new(token: &str, open_gets: &[String]) -> Auth {
        Auth {
            token: token.into(),
            open_gets: open_gets.into(),
        }
    }

    fn is_open(&self, method: &Method, path: &str) -> bool {
        JOIN_ROUTES.iter().any(|(m, p)| m == method && *p == path)
            || (*method == Method::GET || *method == Method::HEAD)
                && self.open_gets.iter().any(|p| p == path)
    }
}

fn unauthorized(msg: &str) -> Response {
    metrics::get().api_unauthorized.inc();
    (
        [(header::WWW_AUTHENTICATE, "Bearer")],
        super::reply::error(StatusCode::UNAUTHORIZED, msg),
    )
        .into_response()
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn require_token(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    if auth.is_open(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None => unauthorized(
            "missing admin token: send `Authorization: Bearer <token>` (the tandem CLI reads \
             <data_dir>/admin.token, --token-file or TANDEM_TOKEN)",
        ),
        Some(t) if ct_eq(t.as_bytes(), auth.token.as_bytes()) => next.run(req).await,
        Some(_) => unauthorized("wrong admin token"),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt as _;

    use super::*;
    use crate::api::dto::ErrorDto;

    fn app(hits: &Arc<std::sync::atomic::AtomicU32>) -> Router {
        let h = Arc::clone(hits);
        let write = move || {
            let h = Arc::clone(&h);
            async move {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                "done"
            }
        };
        Router::new()
            .route("/v1/status", get(|| async { "status" }))
            .route("/v1/config", get(|| async { "config" }).put(write.clone()))
            .route("/v1/cluster/enroll", post(|| async { "enroll" }))
            // A route another module adds later: protected by default.
            .route("/v1/artifacts", post(write))
            .layer(axum::middleware::from_fn_with_state(
                Auth::new("s3cret", &["/v1/status".into(), "/metrics".into()]),
                require_token,
            ))
    }

    async fn call(app: &Router, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let mut r = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(r.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn writes_need_the_token_and_open_reads_do_not() {
        let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let app = app(&hits);
        assert_eq!(call(&app, "GET", "/v1/status", None).await.0, 200);
        assert_eq!(call(&app, "POST", "/v1/cluster/enroll", None).await.0, 200);
        // Open only for GET: the same path written needs the token.
        let (code, body) = call(&app, "PUT", "/v1/config", None).await;
        assert_eq!(code, 401);
        let e: ErrorDto = serde_json::from_str(&body).unwrap();
        assert!(e.error.contains("missing admin token"), "{body}");
        let (code, body) = call(&app, "PUT", "/v1/config", Some("s3cre")).await;
        assert_eq!(code, 401);
        assert!(body.contains("wrong admin token"), "{body}");
        assert_eq!(
            call(&app, "POST", "/v1/artifacts", Some("nope")).await.0,
            401
        );
        assert_eq!(call(&app, "GET", "/v1/config", None).await.0, 401);
        // Nothing ran for the refused requests.
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(
            call(&app, "PUT", "/v1/config", Some("s3cret")).await,
            (200, "done".into())
        );
        assert_eq!(
            call(&app, "POST", "/v1/artifacts", Some("s3cret")).await.0,
            200
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
        // An unknown route is refused before it is found missing.
        assert_eq!(call(&app, "DELETE", "/v1/nothing", None).await.0, 401);
    }
}
