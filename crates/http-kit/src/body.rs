use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use std::time::Duration;

use crate::Problem;

/// Largest accepted request body (the contract's 64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest a client may take to send a body: a body that stalls is the
/// client's doing, a 408, not the request time limit's 503 ("retry").
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The raw bytes of a JSON request body, after the checks every JSON endpoint
/// shares: `Content-Type` must be JSON (else 415) and the body at most
/// [`MAX_BODY_BYTES`] (else 413). Parsing is left to the domain, which knows
/// which mistakes are 400 and which are 422.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            )
            .with_errors(field_error("Content-Type", "must be application/json")));
        }
        let too_large = || {
            let limit = format!("must be at most {MAX_BODY_BYTES} bytes");
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body {limit}"))
                .with_errors(field_error("body", &limit))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
            return Err(too_large());
        }
        let Ok(read) = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state)).await else {
            let limit = format!("was not received within {} s", BODY_READ_TIMEOUT.as_secs());
            return Err(
                Problem::new(StatusCode::REQUEST_TIMEOUT, format!("request body {limit}"))
                    .with_errors(field_error("body", &limit)),
            );
        };
        match read {
            Ok(bytes) => Ok(Self(bytes)),
            Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => Err(too_large()),
            Err(rejection) => {
                let detail = rejection.body_text();
                Err(Problem::new(StatusCode::BAD_REQUEST, detail.clone()).with_errors(field_error("body", &detail)))
            }
        }
    }
}

/// `errors` naming one field (or header, or `body`), as every problem with
/// a cause the client can fix does.
fn field_error(field: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ field: message })
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json(&with_type("application/json")));
        assert!(is_json(&with_type("Application/JSON; charset=utf-8")));
        assert!(is_json(&with_type("application/merge-patch+json")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_is_a_408() {
        let stalled = axum::body::Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let request = Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, "100")
            .body(stalled)
            .expect("request");
        match JsonBody::from_request(request, &()).await {
            Err(problem) => assert_eq!(problem.status, StatusCode::REQUEST_TIMEOUT.as_u16()),
            Ok(_) => panic!("a body that never came was accepted"),
        }
    }

    #[test]
    fn other_media_types_are_refused() {
        assert!(!is_json(&HeaderMap::new()));
        assert!(!is_json(&with_type("text/plain")));
        assert!(!is_json(&with_type("application/x-www-form-urlencoded")));
        assert!(!is_json(&with_type("application/jsonp")));
    }
}
