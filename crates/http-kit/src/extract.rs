//! `Path` and `Query` extractors whose rejections are problem+json like every
//! other error (axum's own answer in text/plain).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::Problem;

/// Path parameters. A segment that cannot be decoded (invalid UTF-8 after
/// percent-decoding, say) names no resource: `404`, as an unknown id does.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status().is_client_error() => Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("no such resource: {}", rejection.body_text()),
            )),
            Err(rejection) => Err(Problem::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// Query parameters. A query string that does not decode into `T` (a
/// repeated parameter, say) is a `400`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                let detail = rejection.body_text();
                let field = named_field(&detail).unwrap_or("query").to_owned();
                Err(Problem::typed(
                    StatusCode::BAD_REQUEST,
                    "malformed-query",
                    "Malformed query string",
                    detail.clone(),
                )
                .with_errors(std::collections::BTreeMap::from([(field, detail)])))
            }
        }
    }
}

/// The parameter a query-string error names (serde says "duplicate field
/// `t`"), so `errors` can point at it like every other field error.
fn named_field(detail: &str) -> Option<&str> {
    let (_, rest) = detail.split_once("field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::PROBLEM_JSON;

    #[derive(serde::Deserialize)]
    struct Params {
        #[allow(dead_code)]
        t: Option<String>,
    }

    fn app() -> Router {
        Router::new()
            .route("/item/{id}", get(|Path(id): Path<String>| async move { id }))
            .route("/search", get(|Query(_): Query<Params>| async { "ok" }))
    }

    async fn call(uri: &str) -> axum::response::Response {
        let request = Request::get(uri).body(Body::empty()).expect("request");
        app().oneshot(request).await.into_response()
    }

    #[tokio::test]
    async fn undecodable_path_segment_is_a_404_problem() {
        let response = call("/item/%FF").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
        assert_eq!(call("/item/abc").await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn repeated_query_parameter_is_a_400_problem() {
        let response = call("/search?t=a&t=b").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert!(problem["errors"]["t"].is_string(), "the parameter is named: {problem}");
        assert_eq!(call("/search?t=a").await.status(), StatusCode::OK);
    }
}
