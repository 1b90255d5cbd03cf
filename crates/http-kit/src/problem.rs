use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// Media type of every error response (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error response body (RFC 9457, `application/problem+json`): `type`,
/// `title`, `status`, `detail`, and for validation failures `errors`,
/// mapping each bad field to a message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "urn:api-hammer:problem:invalid-warrior",
    "title": "Invalid warrior",
    "status": 422,
    "detail": "one or more fields have unacceptable values",
    "errors": {"dob": "must be a real calendar date"}
}))]
pub struct Problem {
    /// `about:blank` (the status says it all) or `urn:api-hammer:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// The HTTP status code, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    pub detail: String,
    /// Each bad field (`name`, `fight_skills[1]`, a header or parameter name)
    /// with what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = std::collections::BTreeMap<String, String>, required = false)]
    pub errors: Option<Value>,
}

impl Problem {
    /// A problem whose `type` is `about:blank`: the status says it all.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
        }
    }

    /// A specific problem type, named by a stable slug clients can match on.
    pub fn typed(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:api-hammer:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
        }
    }

    pub fn with_errors(mut self, errors: impl Serialize) -> Self {
        self.errors = serde_json::to_value(errors).ok();
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Seconds a client should wait before retrying a `503`: every cause here
/// (a database or Kafka unreachable, a request over its time limit, a
/// shutdown) is checked again within about a second.
const RETRY_AFTER_SECONDS: HeaderValue = HeaderValue::from_static("1");

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_503_tells_when_to_retry_and_other_problems_do_not() {
        let unavailable = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "database down").into_response();
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
        assert_eq!(unavailable.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let invalid = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "bad dob").into_response();
        assert!(invalid.headers().get(header::RETRY_AFTER).is_none());
    }
}
