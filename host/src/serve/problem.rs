//! API errors as RFC 9457 problem documents (`application/problem+json`).
//! Every message says what was wrong and what to do; none carries another
//! tenant's data or a host path.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the API.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    /// A short, stable kind (`not-found`, `invalid-params`, ...), sent as
    /// the problem's `type` (`urn:toolhost:problem:<kind>`).
    pub kind: &'static str,
    /// What was wrong and what to do.
    pub detail: String,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
    /// Extra members (for example the list of parameter errors).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind,
            detail: detail.into(),
            retry_after: None,
            extra: Default::default(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// The one answer for "no such object" and "not yours": the two must
    /// be indistinguishable.
    pub fn not_found(what: &str, id: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!(
                "no {what} `{}` visible to this token; check the id, and that the token belongs to the tenant that created it",
                crate::text::clip_bytes(id.escape_debug().to_string(), 200)
            ),
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// A service the engine needs (Temporal, the blob store) failed; the
    /// detail says which, never a credential.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem {
            retry_after: Some(5),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
        }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!("API internal error: {err}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; it is logged on the server, retry later or tell its operator",
        )
    }

    pub fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:toolhost:problem:{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(map) = body.as_object_mut() {
            map.extend(self.extra);
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"toolhost\""),
            );
        }
        response
    }
}

/// `Result` of a handler.
pub type ApiResult<T> = Result<T, Problem>;
