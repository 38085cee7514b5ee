//! The one shape of an API error answer: a status and a JSON [`ErrorDto`],
//! shared by every handler and the auth layer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::dto::ErrorDto;

/// `code` with `{"error": msg}`.
pub(super) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    error_hint(code, msg, None::<String>)
}

/// `code` with `{"error": msg, "hint": hint}`: what to do about it.
pub(super) fn error_hint(
    code: StatusCode,
    msg: impl Into<String>,
    hint: Option<impl Into<String>>,
) -> Response {
    (
        code,
        Json(ErrorDto {
            error: msg.into(),
            leader_api: None,
            hint: hint.map(Into::into),
        }),
    )
        .into_response()
}
